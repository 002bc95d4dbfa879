//! Leader last: the leader takes its turn after the followers staged for the same version
//! and hands leadership to a member already on it before its stop, so a rollout costs one
//! leader change; a follower that cannot move holds the leader back only up to the bound.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::rollout::{server_version, stage, wait_all_on, FAST};
use crate::support::outage::{Report, Sampler};
use crate::support::{http_post, wait_for, Cluster, Proc, Release, SUPERVISOR};

/// One member's `/v3/maintenance/status`: (raft term, leader id, its own id).
fn status(url: &str) -> Option<(u64, u64, u64)> {
    let (code, body) = http_post(
        &format!("{url}/v3/maintenance/status"),
        "{}",
        Duration::from_millis(300),
    )?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let num = |v: &serde_json::Value| v.as_str()?.parse::<u64>().ok();
    Some((
        num(&v["raftTerm"])?,
        num(&v["leader"])?,
        num(&v["header"]["member_id"])?,
    ))
}

/// Index of the member every member agrees leads.
fn leader_index(cluster: &Cluster) -> usize {
    wait_for(Duration::from_secs(20), || {
        let all: Vec<(u64, u64, u64)> = cluster
            .client_urls()
            .iter()
            .map(|u| status(u))
            .collect::<Option<_>>()?;
        let leader = all[0].1;
        if leader == 0 || all.iter().any(|s| s.1 != leader) {
            return None;
        }
        all.iter().position(|s| s.2 == leader)
    })
    .expect("the members agree on a leader")
}

/// Samples every member's status every 20 ms: in each round, the leader a majority of the
/// members name (members disagree for a few ms while leadership moves, and the term a
/// status reports is that of the last applied entry, so neither alone orders leaders).
struct LeaderSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Leaders>>,
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Leaders {
    /// The majority's leader, each time it changed (the first included).
    sequence: Vec<u64>,
    /// Lowest and highest raft term reported.
    terms: (u64, u64),
    /// Sampling rounds.
    rounds: u64,
}

impl Leaders {
    /// How many times the leader changed.
    fn changes(&self) -> usize {
        self.sequence.len().saturating_sub(1)
    }
}

impl LeaderSampler {
    fn start(urls: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Leaders {
                terms: (u64::MAX, 0),
                ..Leaders::default()
            };
            let majority = urls.len() / 2 + 1;
            while !flag.load(Ordering::Relaxed) {
                let answers: Vec<(u64, u64, u64)> = urls.iter().filter_map(|u| status(u)).collect();
                seen.rounds += 1;
                for (term, _, _) in &answers {
                    seen.terms = (seen.terms.0.min(*term), seen.terms.1.max(*term));
                }
                let named = |l: u64| answers.iter().filter(|a| a.1 == l).count();
                let agreed = answers
                    .iter()
                    .map(|a| a.1)
                    .find(|l| *l != 0 && named(*l) >= majority);
                if let Some(leader) = agreed {
                    if seen.sequence.last() != Some(&leader) {
                        seen.sequence.push(leader);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Leaders {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("sampler")
    }
}

/// What each supervisor said about leader last, for the test's output.
fn print_leader_last_lines(cluster: &Cluster) {
    let keys = [
        "leader last",
        "vetted",
        "upgrade turn acquired",
        "leadership",
    ];
    for m in &cluster.members {
        for line in m.log_text().lines() {
            if keys.iter().any(|k| line.contains(k)) {
                eprintln!("{line}");
            }
        }
    }
}

/// Supervisor options of these tests: FAST with the given leader-last bound.
fn options(bound: &str) -> Vec<&str> {
    let mut o = FAST.to_vec();
    o.extend(["--leader-last-wait", bound]);
    o
}

/// When member `i` went down for its swap and came back healthy, seen from outside (its
/// etcd process gone, then a new one healthy): exactly one swap.
fn swap_of(report: &Report, i: usize) -> (Instant, Instant) {
    let swaps = report.stops_of(i);
    assert_eq!(
        swaps.len(),
        1,
        "m{} stopped {} times: {swaps:?}",
        i + 1,
        swaps.len()
    );
    assert_eq!(report.pids[i].len(), 2, "m{}: {:?}", i + 1, report.pids[i]);
    (swaps[0].from, swaps[0].until)
}

#[test]
fn the_leader_goes_last_and_a_patch_rollout_changes_leader_once() {
    let cluster = Cluster::start_supervised(Release::V3_5, 3, &options("20s"));
    let leader = leader_index(&cluster);
    let sampler = LeaderSampler::start(cluster.client_urls());
    let outside = Sampler::start(&cluster, Default::default());
    // The leader is staged first, so the queue alone would give it the first turn.
    stage(&cluster, leader, &Release::V3_5Newest.etcd());
    std::thread::scope(|s| {
        for i in (0..3).filter(|i| *i != leader) {
            let cluster = &cluster;
            s.spawn(move || stage(cluster, i, &Release::V3_5Newest.etcd()));
        }
    });
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(50),
    );
    std::thread::sleep(Duration::from_millis(300));
    let leaders = sampler.finish();
    let report = outside.finish();
    print_leader_last_lines(&cluster);
    eprintln!("leader changes: {} ({leaders:?})", leaders.changes());
    assert!(report.second_outages().is_empty(), "{report:?}");

    let (leader_down, _) = swap_of(&report, leader);
    for i in (0..3).filter(|i| *i != leader) {
        let (_, back) = swap_of(&report, i);
        assert!(
            back <= leader_down,
            "m{} was back after the leader m{} went down\n{}",
            i + 1,
            leader + 1,
            cluster.logs()
        );
    }
    let log = cluster.members[leader].log_text();
    assert!(
        log.contains("leaving the turn to the members staged for the same version first"),
        "{log}"
    );
    assert!(
        log.contains("leadership handed to a member on the target before the stop"),
        "{log}"
    );
    assert_eq!(leaders.changes(), 1, "{leaders:?}\n{}", cluster.logs());
    // One election (the transfer): a restarted member did not disrupt the leader either.
    assert_eq!(leaders.terms.1 - leaders.terms.0, 1, "{leaders:?}");
}

/// The supervisor's JSON status.
fn status_json(cluster: &Cluster) -> serde_json::Value {
    let out = Command::new(SUPERVISOR)
        .args([
            "status",
            "--json",
            "--endpoints",
            &cluster.client_urls().join(","),
        ])
        .output()
        .expect("run status");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_follower_that_makes_no_progress_holds_the_leader_back_only_up_to_the_bound() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 3, &options("3s"));
    let leader = leader_index(&cluster);
    let mut followers = (0..3).filter(|i| *i != leader);
    let (stuck, unstaged) = (followers.next().unwrap(), followers.next().unwrap());
    let (stuck_name, unstaged_name) = (format!("m{}", stuck + 1), format!("m{}", unstaged + 1));

    // Someone else holds the turn, so the follower stays queued; then its supervisor
    // freezes (its etcd runs on) with its record saying "queued" for the target.
    let holder = Proc::spawn(
        Command::new(Release::V3_5.etcdctl())
            .arg(format!("--endpoints={}", cluster.client_urls().join(",")))
            .args(["lock", "--ttl=5", "/etcd-supervisor/lock/upgrade"]),
        &cluster.dir().join("etcdctl-lock.log"),
    );
    wait_for(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(cluster.dir().join("etcdctl-lock.log")).ok()?;
        log.contains("/etcd-supervisor/lock/upgrade/").then_some(())
    })
    .expect("etcdctl holds the lock");
    stage(&cluster, stuck, &Release::V3_5Newest.etcd());
    // Queued only after the vetting and the dress rehearsal (on by default with the
    // companions beside the binaries), which take long on a loaded 2-core machine.
    wait_for(Duration::from_secs(120), || {
        (status_json(&cluster)["progress"][&stuck_name]["state"] == "queued").then_some(())
    })
    .unwrap_or_else(|_| panic!("{stuck_name} never queued\n{}", cluster.logs()));
    cluster.members[stuck].proc().signal(Signal::SIGSTOP);

    stage(&cluster, leader, &Release::V3_5Newest.etcd());
    wait_for(Duration::from_secs(30), || {
        cluster.members[leader]
            .log_text()
            .contains("made no progress within the bound")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("the leader never gave up waiting\n{}", cluster.logs()));
    holder.signal(Signal::SIGINT);
    wait_for(Duration::from_secs(30), || {
        (server_version(&cluster, leader) == Some(Release::V3_5Newest.version())).then_some(())
    })
    .unwrap_or_else(|_| panic!("the leader did not upgrade\n{}", cluster.logs()));
    assert_eq!(
        server_version(&cluster, stuck),
        Some(Release::V3_5.version())
    );
    let log = cluster.members[leader].log_text();
    assert!(
        log.contains(&format!("{unstaged_name}: not staged for it")),
        "{log}"
    );
    assert!(log.contains(&format!("gave_up_on={stuck_name}")), "{log}");

    print_leader_last_lines(&cluster);

    // Thawed, the stuck follower finishes too, and so does the one staged last.
    cluster.members[stuck].proc().signal(Signal::SIGCONT);
    stage(&cluster, unstaged, &Release::V3_5Newest.etcd());
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(40),
    );
    drop(holder);
}
