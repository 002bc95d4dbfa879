//! Crash safety of a turn: a supervisor SIGKILLed at each state, SIGTERM mid-turn, and a
//! second member already down. Each ends with every member on a known-good version, the
//! cluster healthy, the turn free, and the rollout complete.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rollout::{assert_one_down_at_a_time, server_version, stage, wait_all_on, FAST};
use crate::support::{http_post, wait_for, Cluster, Release, SUPERVISOR};

const PAUSE_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_PAUSE";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The state `members/<name>` reports, read through any member.
fn progress_state(cluster: &Cluster, name: &str) -> Option<String> {
    let body = format!(
        r#"{{"key":"{}"}}"#,
        b64(&format!("/etcd-supervisor/members/{name}"))
    );
    for m in &cluster.members {
        let Some((200, answer)) = http_post(
            &format!("{}/v3/kv/range", m.client_url()),
            &body,
            Duration::from_secs(1),
        ) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&answer).ok()?;
        let value = v["kvs"][0]["value"].as_str()?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        let record: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        return record["state"].as_str().map(str::to_owned);
    }
    None
}

/// `status --json`, or why it gave no JSON report (its exit code is non-zero while a
/// member is unhealthy, and the report is printed all the same).
fn try_status_json(cluster: &Cluster) -> Result<serde_json::Value, String> {
    let out = Command::new(SUPERVISOR)
        .args([
            "status",
            "--json",
            "--endpoints",
            &cluster.client_urls().join(","),
        ])
        .output()
        .map_err(|e| format!("running status: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "status printed no JSON ({e}; exit {:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `status --json`; a test that reads it fails when there is no report.
fn status_json(cluster: &Cluster) -> serde_json::Value {
    try_status_json(cluster).unwrap_or_else(|e| panic!("{e}"))
}

/// Every member healthy on `version`, every supervisor idle, the turn free.
fn assert_settled(cluster: &Cluster, version: &str) {
    assert_settled_with(cluster, version, &["m1", "m2", "m3"]);
}

/// Every member healthy on `version`, the supervisors of `names` idle (a supervisor that
/// never had anything staged publishes no record), the turn free.
fn assert_settled_with(cluster: &Cluster, version: &str, names: &[&str]) {
    wait_all_on(cluster, version, Duration::from_secs(120));
    for m in &cluster.members {
        m.wait_healthy();
    }
    wait_for(Duration::from_secs(30), || {
        let s = try_status_json(cluster).ok()?;
        let idle = names.iter().all(|n| s["progress"][n]["state"] == "idle");
        (idle && s["turn"]["holder"].is_null() && s["healthy"] == true).then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "not settled: {:?}\n{}",
            try_status_json(cluster),
            cluster.logs()
        )
    });
}

/// A 3.4 cluster under supervisors, 3.5 staged on all three, with m1's supervisor held in
/// `state` (the failpoint) when this returns.
fn paused_in(state: &str) -> Cluster {
    paused_with(state, |cluster| {
        for i in 0..3 {
            stage(cluster, i, &Release::V3_5.etcd());
        }
    })
}

/// A 3.4 cluster under supervisors, `drop` staging what it wants, with m1's supervisor
/// held in `state` (the failpoint) when this returns.
fn paused_with(state: &str, drop: impl FnOnce(&Cluster)) -> Cluster {
    if !cfg!(feature = "failpoints") {
        panic!(
            "the crash tests need the supervisor built with its test-only failpoint: \
             run them with `cargo nextest run --features failpoints` (scripts/test does)"
        );
    }
    let mut cluster = Cluster::new(
        Release::V3_4,
        3,
        // Crash recovery mid-swap, not vetting: no dress rehearsal before the turn (the
        // restore tool pinned beside the first binary would reject a broken binary first).
        crate::support::Mode::Supervised(
            FAST.iter()
                .chain(&["--rehearsal", "never"])
                .map(|s| s.to_string())
                .collect(),
        ),
    );
    cluster.members[0]
        .env
        .push((PAUSE_ENV.into(), format!("{state}:4s")));
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    drop(&cluster);
    wait_for(Duration::from_secs(90), || {
        (progress_state(&cluster, "m1").as_deref() == Some(state)).then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 never reached {state}\n{}", cluster.logs()));
    cluster
}

/// m1's supervisor pauses in `state`; it is SIGKILLed there, restarted, and the rollout
/// must complete with never two members down.
fn killed_in(state: &str) {
    let mut cluster = paused_in(state);
    // The kill must land in the state the test names: state.json says so on disk.
    let on_disk = std::fs::read_to_string(cluster.members[0].state_dir.join("state.json"))
        .expect("state.json");
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).expect("state.json is JSON");
    assert_state_on_disk(&on_disk, state);
    let killed = cluster.members[0].kill();
    drop(killed);
    // Restarted without the failpoint, as systemd would.
    cluster.members[0].env.clear();
    cluster.members[0].start();
    assert_settled(&cluster, &Release::V3_5.version());
    // The supervisors never stopped two members at once. (m1's own outage from the kill
    // is external: no supervisor can order it against a turn already past its checks.)
    assert_one_down_at_a_time(&cluster);
    let log = cluster.members[0].log_text();
    if matches!(state, "starting" | "verifying") {
        assert!(log.contains("resuming an interrupted upgrade"), "{log}");
    }
}

/// state.json names `state`: its phase, or for `rolling-back` a swap phase run backwards.
fn assert_state_on_disk(on_disk: &serde_json::Value, state: &str) {
    if state == "rolling-back" {
        let phase = on_disk["phase"].as_str().unwrap_or_default();
        assert!(
            ["stopping", "swapping", "starting", "verifying"].contains(&phase)
                && on_disk["rollback"] == true,
            "killed in another state: {on_disk}"
        );
    } else {
        assert_eq!(
            on_disk["phase"], state,
            "killed in another state: {on_disk}"
        );
        assert_ne!(on_disk["rollback"], true, "killed rolling back: {on_disk}");
    }
}

/// A version that reports 3.5.16 but exits instead of serving: staged on m1, it fails
/// verification and is rolled back; the supervisor is killed mid-rollback. On restart the
/// rollback is finished (not the forward swap), m1 serves 3.4 again, and 3.5.16 is
/// rejected for the whole cluster.
#[test]
fn supervisor_killed_while_rolling_back() {
    let mut cluster = paused_with("rolling-back", |cluster| {
        let broken = cluster.dir().join("etcd-broken");
        crate::support::write_script(
            &broken,
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'etcd Version: 3.5.16'; exit 0; fi\necho 'broken etcd' >&2\nexit 3\n",
        );
        stage(cluster, 0, &broken);
    });
    let on_disk = std::fs::read_to_string(cluster.members[0].state_dir.join("state.json"))
        .expect("state.json");
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).expect("state.json is JSON");
    assert_state_on_disk(&on_disk, "rolling-back");
    drop(cluster.members[0].kill());
    cluster.members[0].env.clear();
    cluster.members[0].start();
    assert_settled_with(&cluster, &Release::V3_4.version(), &["m1"]);
    let s = status_json(&cluster);
    assert!(
        s["rejected"].to_string().contains("3.5.16"),
        "3.5.16 not rejected after the rollback: {s}\n{}",
        cluster.logs()
    );
    assert_one_down_at_a_time(&cluster);
    assert!(
        cluster.members[0]
            .log_text()
            .contains("resuming an interrupted upgrade"),
        "{}",
        cluster.members[0].log_text()
    );
}

#[test]
fn supervisor_killed_in_preflight() {
    killed_in("preflight");
}

#[test]
fn supervisor_killed_while_swapping() {
    killed_in("swapping");
}

#[test]
fn supervisor_killed_while_queued() {
    killed_in("queued");
}

#[test]
fn supervisor_killed_during_backup() {
    killed_in("backup");
}

#[test]
fn supervisor_killed_while_stopping() {
    killed_in("stopping");
}

#[test]
fn supervisor_killed_while_starting() {
    killed_in("starting");
}

#[test]
fn supervisor_killed_while_verifying() {
    killed_in("verifying");
}

#[test]
fn sigterm_mid_turn_exits_cleanly_and_frees_the_turn() {
    let mut cluster = paused_in("verifying");
    let asked = Instant::now();
    let status = cluster.members[0].stop();
    assert_eq!(status.code(), Some(0), "{}", cluster.members[0].log_text());
    eprintln!(
        "supervisor stopped {:?} after SIGTERM mid-turn",
        asked.elapsed()
    );
    // The turn was released, not left to expire: m1 no longer holds it.
    let s = status_json(&cluster);
    assert_ne!(s["turn"]["holder"], "m1", "{s}");
    assert!(cluster.members[0]
        .log_text()
        .contains("upgrade turn released"));
    cluster.members[0].env.clear();
    cluster.members[0].start();
    assert_settled(&cluster, &Release::V3_5.version());
}

#[test]
fn nothing_stops_while_another_member_is_down() {
    let mut cluster = Cluster::start_supervised(Release::V3_4, 3, FAST);
    assert_eq!(cluster.members[2].stop().code(), Some(0));
    let before: Vec<Vec<i32>> = (0..2)
        .map(|i| cluster.members[i].proc().group_pids())
        .collect();
    for i in 0..2 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    // Both queue and wait, saying why; neither stops its etcd.
    wait_for(Duration::from_secs(30), || {
        (0..2)
            .all(|i| cluster.members[i].log_text().contains("preflight: waiting"))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("no preflight wait logged\n{}", cluster.logs()));
    std::thread::sleep(Duration::from_secs(3));
    for (i, pids) in before.iter().enumerate() {
        assert_eq!(
            &cluster.members[i].proc().group_pids(),
            pids,
            "m{} restarted etcd",
            i + 1
        );
        assert_eq!(server_version(&cluster, i), Some(Release::V3_4.version()));
    }
    assert!(
        cluster.logs().contains("m3 is not healthy"),
        "{}",
        cluster.logs()
    );
    // Once m3 is back, the two go on; m3 follows when staged too.
    cluster.members[2].start();
    cluster.members[2].wait_healthy();
    stage(&cluster, 2, &Release::V3_5.etcd());
    assert_settled(&cluster, &Release::V3_5.version());
}
