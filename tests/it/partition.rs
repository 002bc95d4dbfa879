//! Partitions between hosts during a rolling upgrade 3.4 -> 3.5: three members, each in a
//! network namespace of its own (`support::netns`), a writer recording acknowledged writes,
//! and the outside sampler (`support::outage`) timing every member's outage and the turn's
//! holder. Each test cuts one member off at a chosen point of a turn (held there by the
//! test-only failpoint), heals it, and then checks: no member stopped while another was
//! down (a member cut off counts as down), no etcd stopped by a member not holding the turn
//! (the cut-off member's own stops included: the sampler starts an outage at every stop),
//! every member's etcd processes counted (so a stop no check would catch still shows), no
//! acknowledged write lost, nothing rejected, every member on 3.5 in the end, and the
//! supervisors idle with the turn free. Without root (network namespaces) they fail.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::rollout::{count_lost, server_version, stage, wait_all_on, Writer};
use crate::support::netns::NsCluster;
use crate::support::outage::{self, Report, Sampler};
use crate::support::{http_post, wait_for, Mode, Release, SUPERVISOR};

const PAUSE_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_PAUSE";

/// A short lease, and a ready timeout that lets a partition outlast a verify.
const OPTS: &[&str] = &[
    "--lock-ttl",
    "3s",
    "--ready-timeout",
    "8s",
    "--health-interval",
    "200ms",
];

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One partition test under way.
struct Run {
    ns: NsCluster,
    t0: Instant,
    sampler: Sampler,
    writer: Writer,
}

/// The JSON record at `key`, read through any member that answers.
fn record(ns: &NsCluster, key: &str) -> Option<serde_json::Value> {
    let body = format!(r#"{{"key":"{}"}}"#, b64(key));
    for m in &ns.cluster.members {
        let Some((200, answer)) = http_post(
            &format!("{}/v3/kv/range", m.client_url()),
            &body,
            Duration::from_millis(500),
        ) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&answer).ok()?;
        let value = v["kvs"][0]["value"].as_str()?;
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        return serde_json::from_slice(&raw).ok();
    }
    None
}

fn progress_state(ns: &NsCluster, name: &str) -> Option<String> {
    record(ns, &format!("/etcd-supervisor/members/{name}"))?["state"]
        .as_str()
        .map(str::to_owned)
}

/// How many `rejected/` keys exist (read through any member).
fn rejections(ns: &NsCluster) -> usize {
    let body = format!(
        r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
        b64("/etcd-supervisor/rejected/"),
        b64("/etcd-supervisor/rejected0")
    );
    ns.cluster
        .members
        .iter()
        .find_map(|m| {
            let (status, answer) = http_post(
                &format!("{}/v3/kv/range", m.client_url()),
                &body,
                Duration::from_secs(1),
            )?;
            (status == 200).then_some(())?;
            let v: serde_json::Value = serde_json::from_str(&answer).ok()?;
            Some(v["count"].as_str().map_or(0, |c| c.parse().unwrap_or(0)))
        })
        .expect("no member answers")
}

/// The member index that leads now.
fn leader(ns: &NsCluster) -> Option<usize> {
    for m in &ns.cluster.members {
        let Some((200, body)) = http_post(
            &format!("{}/v3/maintenance/status", m.client_url()),
            "{}",
            Duration::from_millis(500),
        ) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let lead = v["leader"].as_str()?.to_owned();
        return ns.cluster.members.iter().position(|m| {
            let Some((200, b)) = http_post(
                &format!("{}/v3/maintenance/status", m.client_url()),
                "{}",
                Duration::from_millis(500),
            ) else {
                return false;
            };
            serde_json::from_str::<serde_json::Value>(&b)
                .ok()
                .is_some_and(|s| s["header"]["member_id"].as_str() == Some(&lead))
        });
    }
    None
}

/// Three 3.4 members under supervisors in namespaces, m1 paused in `state` for `pause` by
/// the failpoint, sampler and writer running, 3.5 staged on m1 first and on the others once
/// m1 has reached `state` (so m1 takes the first turn). Fails when not root.
fn paused_in(state: &str, pause: &str) -> Run {
    if !cfg!(feature = "failpoints") {
        panic!("the partition tests need `--features failpoints` (scripts/test enables it)");
    }
    let opts = OPTS.iter().map(|s| s.to_string()).collect();
    let mut ns = NsCluster::new(Release::V3_4, 3, Mode::Supervised(opts));
    ns.cluster.members[0]
        .env
        .push((PAUSE_ENV.into(), format!("{state}:{pause}")));
    ns.start_all();
    let t0 = Instant::now();
    let sampler = Sampler::start(&ns.cluster, ns.hosts.partitions.clone());
    let writer = Writer::start(ns.cluster.client_urls(), "partition");
    stage(&ns.cluster, 0, &Release::V3_5.etcd());
    // Staging includes the vetting and the dress rehearsal (on by default with the
    // companions beside the binaries): generous on a loaded 2-core machine.
    wait_for(Duration::from_secs(180), || {
        (progress_state(&ns, "m1").as_deref() == Some(state)).then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 never reached {state}\n{}", ns.cluster.logs()));
    eprintln!("m1 in {state} at {:?}", t0.elapsed());
    Run {
        ns,
        t0,
        sampler,
        writer,
    }
}

impl Run {
    fn stage_others(&self) {
        for i in 1..3 {
            stage(&self.ns.cluster, i, &Release::V3_5.etcd());
        }
    }

    /// Waits for the rollout to complete after the heal, then checks everything the module
    /// promises; `max_down` is the most members the test itself may have had down at once,
    /// and `pids[i]` the counts of etcd processes member `i` may have run.
    fn completes(
        self,
        healed: Instant,
        max_down: usize,
        pids: [&[usize]; 3],
    ) -> (Report, NsCluster) {
        let Run {
            ns,
            t0,
            sampler,
            writer,
        } = self;
        let version = Release::V3_5.version();
        wait_all_on(&ns.cluster, &version, Duration::from_secs(150));
        let done = healed.elapsed();
        let urls = ns.cluster.client_urls();
        wait_for(Duration::from_secs(30), || {
            let out = Command::new(SUPERVISOR)
                .args(["status", "--json", "--endpoints", &urls.join(",")])
                .output()
                .ok()?;
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let idle = ["m1", "m2", "m3"]
                .iter()
                .all(|n| s["progress"][n]["state"] == "idle");
            (idle && s["turn"]["holder"].is_null() && s["healthy"] == true).then_some(())
        })
        .unwrap_or_else(|_| panic!("not settled\n{}", ns.cluster.logs()));
        std::thread::sleep(Duration::from_millis(300));
        let writes = writer.finish();
        let report = sampler.finish();
        let lost = count_lost(&urls[0], &writes.acked);
        eprintln!(
            "figures: {}; writes acked {}, lost {lost}, longest stall {:?}; rollout complete {:?} after the heal",
            report.summary(t0),
            writes.acked.len(),
            writes.longest_stall,
            done
        );
        assert_eq!(lost, 0, "acknowledged writes lost");
        assert!(writes.acked.len() > 50, "the writer barely ran: {writes:?}");
        let second = report.second_outages();
        assert!(
            second.is_empty(),
            "a member went down while another was down: {second:?}\n{}\n{}",
            report.summary(t0),
            ns.cluster.logs()
        );
        assert!(
            report.max_out <= max_down,
            "{}\n{}",
            report.summary(t0),
            ns.cluster.logs()
        );
        assert!(
            report.longest_gap < outage::MAX_GAP,
            "{}",
            report.summary(t0)
        );
        let names: Vec<String> = ns
            .cluster
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
        for (i, allowed) in pids.iter().enumerate() {
            assert!(
                allowed.contains(&report.pids[i].len()),
                "m{} ran {:?}, expected {allowed:?} processes\n{}",
                i + 1,
                report.pids[i],
                report.summary(t0)
            );
        }
        assert_eq!(rejections(&ns), 0, "{}", ns.cluster.logs());
        for i in 0..3 {
            assert_eq!(server_version(&ns.cluster, i), Some(version.clone()));
        }
        (report, ns)
    }
}

/// The others (never cut off by the test, or cut off while queued): their first 3.4,
/// then 3.5 in a turn of their own, and nothing else.
const ONCE: &[usize] = &[2];

#[test]
fn partition_of_the_holder_while_its_etcd_is_stopped_restores_the_old_version_and_rejects_nothing()
{
    let run = paused_in("swapping", "5s");
    run.ns.hosts.partition(0);
    run.stage_others();
    // Longer than the pause plus a whole verify of the restored old version.
    std::thread::sleep(Duration::from_secs(16));
    run.ns.hosts.heal(0);
    let healed = Instant::now();
    // m1: initial 3.4, 3.4 restored, then 3.5 in a later turn.
    let (_, ns) = run.completes(healed, 1, [&[3], ONCE, ONCE]);
    let log = ns.cluster.members[0].log_text();
    assert!(log.contains("lost the upgrade turn"), "{log}");
    // The restored 3.4 either stays unhealthy while cut off (the member is blamed: "nothing
    // is rejected"), or its verify outlasts the cut and it comes back healthy (requeued from
    // `restoring`); `completes` checked that no version was rejected either way.
    assert!(
        log.contains("nothing is rejected")
            || log.contains("state=\"queued\" previous=\"restoring\""),
        "{log}"
    );
}

#[test]
fn partition_of_the_holder_after_it_started_the_new_version_holds_it_without_a_second_stop() {
    let run = paused_in("verifying", "2s");
    run.ns.hosts.partition(0);
    run.stage_others();
    // Longer than the pause and the whole verify: the rollback's stop is reached cut off.
    std::thread::sleep(Duration::from_secs(14));
    run.ns.hosts.heal(0);
    let healed = Instant::now();
    // m1: 3.4, then the one 3.5 started before the cut, never stopped again.
    let (_, ns) = run.completes(healed, 1, [&[2], ONCE, ONCE]);
    let log = ns.cluster.members[0].log_text();
    assert!(log.contains("state=\"holding\""), "{log}");
}

#[test]
fn partition_of_a_queued_member_while_the_holder_swaps_stops_nobody_else() {
    // Paused long enough for m2's vetting to finish and queue it behind m1's turn.
    let run = paused_in("verifying", "8s");
    run.stage_others();
    // Cut off only once queued (behind m1's turn): the test's name says so.
    wait_for(Duration::from_secs(60), || {
        (progress_state(&run.ns, "m2").as_deref() == Some("queued")).then_some(())
    })
    .unwrap_or_else(|_| panic!("m2 never queued\n{}", run.ns.cluster.logs()));
    run.ns.hosts.partition(1);
    std::thread::sleep(Duration::from_secs(10));
    run.ns.hosts.heal(1);
    let healed = Instant::now();
    // m1's fresh etcd catching up and m2 cut off may overlap: the test's own doing.
    // m1: 3.4, then 3.5 (verified as m2 is cut off, or after the heal).
    run.completes(healed, 2, [&[2], ONCE, ONCE]);
}

#[test]
fn partition_of_the_leader_during_another_members_turn_stops_nobody_else() {
    let run = paused_in("starting", "4s");
    run.stage_others();
    // m1's etcd is stopped: the leader is m2 or m3.
    let lead = wait_for(Duration::from_secs(10), || {
        leader(&run.ns).filter(|&i| i != 0)
    })
    .unwrap_or_else(|_| panic!("no leader among m2, m3\n{}", run.ns.cluster.logs()));
    run.ns.hosts.partition(lead);
    std::thread::sleep(Duration::from_secs(10));
    run.ns.hosts.heal(lead);
    let healed = Instant::now();
    eprintln!("leader cut off: m{}", lead + 1);
    // m1: 3.4, then 3.5 (2). With m1 stopped and the leader cut off, m2 alone has no
    // quorum, so m1's lease may lapse during its pause: its fence before the start then
    // finds the turn gone and it restarts 3.4, taking 3.5 in a later turn (3); or its verify
    // runs out while the leader is cut off and 3.5 is rolled back, then taken again (4).
    // Nothing beyond; the sampler's checks say each stop was made with the turn.
    run.completes(healed, 2, [&[2, 3, 4], ONCE, ONCE]);
}

#[test]
fn partition_healing_after_the_lease_ttl_the_old_holder_fences_itself_and_stops_nothing_again() {
    let run = paused_in("starting", "7s");
    run.ns.hosts.partition(0);
    run.stage_others();
    // Past the 3 s lease, healed while m1 is still paused before starting 3.5.
    std::thread::sleep(Duration::from_secs(5));
    run.ns.hosts.heal(0);
    let healed = Instant::now();
    // m1: initial 3.4, 3.4 again, then 3.5 in a turn of its own.
    let (_, ns) = run.completes(healed, 1, [&[3], ONCE, ONCE]);
    let log = ns.cluster.members[0].log_text();
    // The first thing m1 did after the pause: notice the lost turn, and put 3.4 back.
    let lost = log
        .find("lost the upgrade turn; not switching to the new version")
        .unwrap_or_else(|| panic!("no fence\n{log}"));
    let restored = log[lost..]
        .find("current switched")
        .map(|i| &log[lost + i..])
        .unwrap_or_else(|| panic!("nothing restored\n{log}"));
    assert!(
        restored.lines().next().unwrap_or("").contains("3.4."),
        "{restored}"
    );
}

/// The guard every partition test passes first: without root it fails, saying why (CI
/// runs as root; a developer's run without root must not pass these blind).
#[test]
fn partition_tests_fail_without_root_saying_why() {
    crate::support::netns::require_root_as(true);
    let refused = std::panic::catch_unwind(|| crate::support::netns::require_root_as(false))
        .expect_err("without root the guard must fail the test");
    let why = refused
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| refused.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(why.contains("need root"), "{why}");
}
