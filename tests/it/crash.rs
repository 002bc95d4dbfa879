//! Crash safety of a turn: a supervisor SIGKILLed at each state (by the test, while the
//! driver's failpoint holds it there) and inside the steps (by the supervisor itself at a
//! `failpoints` kill point: a half-written backup, after SIGTERM before etcd exits, a
//! half-done cold copy, `current` switched but nothing started), SIGTERM mid-turn, and a
//! second member already down. Each ends with every member on a known-good version, the
//! cluster healthy, the turn free, and the rollout complete. "Never two down" is judged
//! from outside by the sampler (`support::outage`): no stop while another member is down,
//! no stop without the turn, each test's kill recorded as a window of its own making.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rollout::{server_version, stage, wait_all_on, FAST};
use crate::support::outage::{etcd_pid_of, Sampler};
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

/// The outside sampler's verdict at the end of a crash test: no supervisor's stop while
/// another member was down, none without the turn, never two members stopped at once (the
/// test's own kills aside), and member `i` ran as many etcd processes as `pids[i]` allows.
fn judge(cluster: &Cluster, sampler: Sampler, t0: Instant, pids: [&[usize]; 3]) {
    let killed = sampler.kills().lock().unwrap().clone();
    let mut report = sampler.finish();
    // An etcd the test killed within a sampling period of its start is never sampled; the
    // test read its pid before the kill, so it counts as run.
    for (i, pid) in killed {
        if !report.pids[i].contains(&pid) {
            report.pids[i].push(pid);
        }
    }
    eprintln!("figures: {}", report.summary(t0));
    let second = report.second_outages();
    assert!(
        second.is_empty(),
        "a member stopped while another was down: {second:?}\n{}\n{}",
        report.summary(t0),
        cluster.logs()
    );
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(
        report.stops_without_the_turn(&names),
        [],
        "{}",
        report.summary(t0)
    );
    // The test's own kill may land during another member's stop (a queued member killed
    // while the holder stops): that pair is the test's doing; the supervisors' part is the
    // second-outage check above.
    assert!(report.max_out_but_kills <= 1, "{}", report.summary(t0));
    for (i, allowed) in pids.iter().enumerate() {
        assert!(
            allowed.contains(&report.pids[i].len()),
            "m{} ran {:?}, expected {allowed:?} processes\n{}\n{}",
            i + 1,
            report.pids[i],
            report.summary(t0),
            supervisor_lines(cluster, i)
        );
    }
}

/// Member `i`'s supervisor's own log lines (etcd's JSON lines left out).
fn supervisor_lines(cluster: &Cluster, i: usize) -> String {
    cluster.members[i]
        .log_text()
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGKILLs member `i`'s supervisor (its etcd dies with it), restarts it without
/// failpoints as systemd would, and records the etcd that dies as the test's doing.
fn kill_and_restart(cluster: &mut Cluster, sampler: &Sampler, i: usize) {
    record_kill(cluster, sampler, i);
    drop(cluster.members[i].kill());
    cluster.members[i].env.clear();
    cluster.members[i].start();
}

/// Records member `i`'s etcd process (if one runs) as about to die of the test's doing.
fn record_kill(cluster: &Cluster, sampler: &Sampler, i: usize) {
    if let Some(pid) = etcd_pid_of(&cluster.members[i].spec.data_dir) {
        sampler.kills().lock().unwrap().push((i, pid));
    }
}

/// A 3.4 cluster under supervisors, 3.5 staged on all three, with m1's supervisor held in
/// `state` (the failpoint) when this returns; the sampler runs from before the staging.
fn paused_in(state: &str) -> (Cluster, Sampler, Instant) {
    paused_with(state, |cluster| {
        for i in 0..3 {
            stage(cluster, i, &Release::V3_5.etcd());
        }
    })
}

/// A 3.4 cluster under supervisors, `drop` staging what it wants, with m1's supervisor
/// held in `state` (the failpoint) when this returns; the sampler runs from before `drop`.
fn paused_with(state: &str, drop: impl FnOnce(&Cluster)) -> (Cluster, Sampler, Instant) {
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
    let t0 = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    drop(&cluster);
    wait_for(Duration::from_secs(90), || {
        (progress_state(&cluster, "m1").as_deref() == Some(state)).then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 never reached {state}\n{}", cluster.logs()));
    (cluster, sampler, t0)
}

/// m1's supervisor pauses in `state`; it is SIGKILLed there, restarted, and the rollout
/// must complete with never two members down.
fn killed_in(state: &str) {
    let (mut cluster, sampler, t0) = paused_in(state);
    // The kill must land in the state the test names: state.json says so on disk.
    let on_disk = std::fs::read_to_string(cluster.members[0].state_dir.join("state.json"))
        .expect("state.json");
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).expect("state.json is JSON");
    assert_state_on_disk(&on_disk, state);
    kill_and_restart(&mut cluster, &sampler, 0);
    assert_settled(&cluster, &Release::V3_5.version());
    // m1: 3.4; killed before its stop, 3.4 again after the restart, then 3.5 (3); killed
    // past it, 3.5 (or the restored 3.4, then 3.5) after the restart. m2, m3: 3.4, 3.5.
    // (m1's outage from the kill is the test's: no supervisor can order it against a
    // turn already past its checks, so it is excused, and only it.)
    let m1: &[usize] = match state {
        "preflight" | "queued" | "backup" => &[3],
        _ => &[2, 3],
    };
    judge(&cluster, sampler, t0, [m1, &[2], &[2]]);
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
    let (mut cluster, sampler, t0) = paused_with("rolling-back", |cluster| {
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
    kill_and_restart(&mut cluster, &sampler, 0);
    assert_settled_with(&cluster, &Release::V3_4.version(), &["m1"]);
    let s = status_json(&cluster);
    assert!(
        s["rejected"].to_string().contains("3.5.16"),
        "3.5.16 not rejected after the rollback: {s}\n{}",
        cluster.logs()
    );
    // m1 ran the broken binary (restarted by its run loop, maybe more than once): its
    // count is not fixed. m2 and m3 had nothing staged: never stopped.
    let any: Vec<usize> = (2..20).collect();
    judge(&cluster, sampler, t0, [&any, &[1], &[1]]);
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
    let (mut cluster, sampler, t0) = paused_in("verifying");
    // The stop of m1's etcd by the test's SIGTERM is the test's.
    record_kill(&cluster, &sampler, 0);
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
    // m1: 3.4, 3.5 (stopped by the test's SIGTERM), 3.5 again after the restart.
    judge(&cluster, sampler, t0, [&[3], &[2], &[2]]);
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

/// Failpoint variable of the supervisor's own kill points (`src/failpoint.rs`).
const KILL_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_KILL";

/// m1's supervisor kills itself at `point` inside a step of its first turn (3.5 staged on
/// all three, `opts` added to the fast settings); the test finds it dead with SIGKILL,
/// checks on disk that the kill landed in `phase`, restarts it without failpoints, and the
/// rollout must complete with never two members down (from outside).
fn killed_inside(
    point: &str,
    phase: &str,
    opts: &[&str],
    at_kill: impl FnOnce(&Cluster),
) -> Cluster {
    if !cfg!(feature = "failpoints") {
        panic!("the crash tests need `--features failpoints` (scripts/test enables it)");
    }
    let args = FAST.iter().chain(opts).map(|s| s.to_string()).collect();
    let mut cluster = Cluster::new(Release::V3_4, 3, crate::support::Mode::Supervised(args));
    cluster.members[0].env.push((KILL_ENV.into(), point.into()));
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let t0 = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    // The supervisor dies by its own SIGKILL at the point; bounded by the turn's length.
    let status = cluster.members[0]
        .proc()
        .wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("m1 never reached {point}\n{}", cluster.logs()));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "{}",
        cluster.members[0].log_text()
    );
    let log = cluster.members[0].log_text();
    assert!(
        log.contains(&format!("failpoint: killing the supervisor at {point}")),
        "{log}"
    );
    let on_disk = std::fs::read_to_string(cluster.members[0].state_dir.join("state.json"))
        .expect("state.json");
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).expect("state.json is JSON");
    assert_eq!(
        on_disk["phase"], phase,
        "killed in another state: {on_disk}"
    );
    assert_ne!(on_disk["rollback"], true, "killed rolling back: {on_disk}");
    at_kill(&cluster);
    // An etcd still running (it dies of its parent's death) is the kill's doing; a stop
    // before the kill (after SIGTERM) was m1's own and is judged with its turn.
    record_kill(&cluster, &sampler, 0);
    drop(cluster.members[0].take_proc());
    cluster.members[0].env.clear();
    cluster.members[0].start();
    assert_settled(&cluster, &Release::V3_5.version());
    // m1: 3.4; killed before its etcd was up on 3.5: 3.4 or 3.5 after the restart, and
    // 3.5 at the end (2 or 3). m2, m3: 3.4, 3.5.
    judge(&cluster, sampler, t0, [&[2, 3], &[2], &[2]]);
    cluster
}

#[test]
fn supervisor_killed_mid_backup_write() {
    let backups = |cluster: &Cluster| {
        let dir = cluster.members[0].state_dir.join("backups");
        std::fs::read_dir(&dir)
            .expect("backups dir")
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    // The turn's own backup (not the one taken for the rehearsal): reuse off.
    let cluster = killed_inside(
        "backup-half-written",
        "backup",
        &["--backup-max-age", "0s"],
        |cluster| {
            // Killed mid-write: a temp dir with meta.json and without its commit marker.
            let half = backups(cluster);
            assert!(
                half.iter().any(|d| {
                    d.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                        && d.join("meta.json").exists()
                        && !d.join("SHA256SUMS").exists()
                }),
                "no half-written backup: {half:?}"
            );
        },
    );
    // The half-written backup never counts: every backup in place has its checksums.
    for dir in backups(&cluster) {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with('.') && dir.is_dir() {
            assert!(dir.join("SHA256SUMS").exists(), "{name} has no SHA256SUMS");
        }
    }
}

#[test]
fn supervisor_killed_after_sigterm_before_etcd_exits() {
    killed_inside("etcd-signalled", "stopping", &[], |_| {});
}

#[test]
fn supervisor_killed_mid_cold_copy() {
    killed_inside(
        "cold-copy-half-done",
        "stopping",
        &["--backup", "both"],
        |cluster| {
            let log = cluster.members[0].log_text();
            // The cold copy had begun (etcd stopped) and not finished.
            assert!(!log.contains("backup: data dir copied"), "{log}");
        },
    );
}

#[test]
fn supervisor_killed_between_the_switch_and_the_start() {
    let cluster = killed_inside("switched", "swapping", &[], |cluster| {
        // `current` already names 3.5; nothing started it.
        let current = std::fs::read_link(cluster.members[0].state_dir.join("current"))
            .expect("current symlink");
        assert!(
            current.to_string_lossy().contains(&Release::V3_5.version()),
            "{current:?}"
        );
    });
    assert!(
        cluster.members[0]
            .log_text()
            .contains("resuming an interrupted upgrade"),
        "{}",
        cluster.members[0].log_text()
    );
}
