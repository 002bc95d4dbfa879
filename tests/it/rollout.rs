//! Rolling upgrades end to end: three members under three supervisors on loopback, the new
//! binary staged on all three at once, a writer and a health monitor running throughout.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::outage::{self, Sampler};
use crate::support::{self, http_get, http_post, wait_for, Cluster, Release, SUPERVISOR};

/// Supervisor options for fast, bounded tests.
pub const FAST: &[&str] = &[
    "--lock-ttl",
    "3s",
    "--ready-timeout",
    "20s",
    "--health-interval",
    "200ms",
];

/// Stages `binary` on member `i` with the real `stage` command.
pub fn stage(cluster: &Cluster, i: usize, binary: &std::path::Path) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(SUPERVISOR)
        .arg("stage")
        .arg(binary)
        .arg("--state-dir")
        .arg(&cluster.members[i].state_dir)
        .output()
        .expect("run stage");
    assert!(
        out.status.success(),
        "stage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server version member `i` reports, if it answers.
pub fn server_version(cluster: &Cluster, i: usize) -> Option<String> {
    let (_, body) = http_get(
        &format!("{}/version", cluster.members[i].client_url()),
        Duration::from_secs(1),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["etcdserver"].as_str().map(str::to_owned)
}

/// Waits until every member runs `version`.
pub fn wait_all_on(cluster: &Cluster, version: &str, timeout: Duration) {
    wait_for(timeout, || {
        (0..cluster.members.len())
            .all(|i| server_version(cluster, i).as_deref() == Some(version))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("not every member reached {version}\n{}", cluster.logs()));
}

/// Puts unique keys through all endpoints, moving on to the next endpoint on any failure.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WriterReport>>,
}

/// What the writer saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Keys whose put was acknowledged.
    pub acked: Vec<String>,
    /// Put attempts.
    pub attempts: u64,
    /// Failed attempts (retried elsewhere).
    pub failures: u64,
    /// Longest time between two acknowledged writes.
    pub longest_stall: Duration,
}

impl Writer {
    /// Starts writing keys `w/<tag>/<n>`.
    pub fn start(urls: Vec<String>, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tag = tag.to_owned();
        let handle = std::thread::spawn(move || {
            let mut report = WriterReport::default();
            let mut endpoint = 0usize;
            let mut last_ack = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let key = format!("w/{tag}/{n}");
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    b64(&key),
                    b64(&n.to_string())
                );
                loop {
                    report.attempts += 1;
                    let url = format!("{}/v3/kv/put", urls[endpoint % urls.len()]);
                    match http_post(&url, &body, Duration::from_secs(2)) {
                        Some((200, _)) => break,
                        _ => {
                            report.failures += 1;
                            endpoint += 1;
                            if flag.load(Ordering::Relaxed) || Instant::now() >= deadline {
                                return report;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                report.longest_stall = report.longest_stall.max(last_ack.elapsed());
                last_ack = Instant::now();
                report.acked.push(key);
                n += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            report
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the writer and returns its report.
    pub fn finish(mut self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("running").join().expect("writer")
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every acknowledged key must be readable afterwards; returns how many are missing.
pub fn count_lost(url: &str, acked: &[String]) -> usize {
    acked
        .iter()
        .filter(|key| {
            let body = format!(r#"{{"key":"{}","count_only":true}}"#, b64(key));
            let answer = http_post(&format!("{url}/v3/kv/range"), &body, Duration::from_secs(5));
            !matches!(answer, Some((200, b)) if holds_one_key(&b))
        })
        .count()
}

/// A `count_only` range answer counts exactly one key (`"count":"1"`; an absent count or
/// `"count":"0"` is a lost key, and an unreadable answer is not proof of anything).
fn holds_one_key(answer: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v["count"].as_str()?.parse::<u64>().ok())
        == Some(1)
}

#[test]
fn count_lost_counts_a_zero_count_as_lost() {
    assert!(holds_one_key(r#"{"header":{},"count":"1"}"#));
    assert!(!holds_one_key(r#"{"header":{},"count":"0"}"#));
    assert!(!holds_one_key(r#"{"header":{}}"#));
    assert!(!holds_one_key("not json"));
}

/// Member pids (supervisor's etcd child) by name, to prove who was never restarted.
fn etcd_pids(cluster: &mut Cluster) -> HashMap<String, Vec<i32>> {
    let mut out = HashMap::new();
    for m in &mut cluster.members {
        let name = m.spec.name.clone();
        let pids = m.proc().group_pids();
        out.insert(name, pids);
    }
    out
}

#[test]
fn rollout_3_4_to_3_5_then_patch_under_load_loses_nothing() {
    let cluster = Cluster::start_supervised(Release::V3_4, 3, FAST);
    let urls = cluster.client_urls();
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = Writer::start(urls.clone(), "rollout");
    std::thread::sleep(Duration::from_millis(500));

    // Minor upgrade: staged on all three at once.
    let t0 = Instant::now();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    wait_all_on(&cluster, &Release::V3_5.version(), Duration::from_secs(180));
    let minor = t0.elapsed();
    wait_for(Duration::from_secs(30), || {
        (support::cluster_version(&cluster).as_deref() == Some("3.5.0")).then_some(())
    })
    .unwrap_or_else(|_| panic!("cluster version never moved to 3.5\n{}", cluster.logs()));
    wait_for(Duration::from_secs(30), || {
        let logs: String = cluster.members.iter().map(|m| m.log_text()).collect();
        logs.contains("cluster version moved").then_some(())
    })
    .expect("a supervisor logged the cluster version move");

    // Patch upgrade.
    let t1 = Instant::now();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(180),
    );
    let patch = t1.elapsed();

    std::thread::sleep(Duration::from_millis(500));
    let report = writer.finish();
    let lost = count_lost(&urls[0], &report.acked);
    eprintln!(
        "rollout: minor {minor:?}, patch {patch:?}; writes acked {}, attempts {}, failed attempts {}, longest stall {:?}, lost {lost}",
        report.acked.len(),
        report.attempts,
        report.failures,
        report.longest_stall
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(report.acked.len() > 100, "writer barely ran: {report:?}");
    // Never two members down, judged from outside: etcd processes and /health.
    let seen = sampler.finish();
    eprintln!("rollout outages: {}", seen.summary(sampled));
    assert!(
        seen.second_outages().is_empty(),
        "a member stopped while another was down: {}",
        seen.summary(sampled)
    );
    assert!(
        seen.max_down <= 1 && seen.max_out <= 1,
        "two members down at once: {}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    assert!(
        seen.longest_gap < outage::MAX_GAP,
        "{}",
        seen.summary(sampled)
    );
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(
        seen.stops_without_the_turn(&names),
        [],
        "{}",
        seen.summary(sampled)
    );
    // Two upgrades of three members each: three etcd processes per member, each swap one
    // outage with the process gone.
    for (i, pids) in seen.pids.iter().enumerate() {
        assert_eq!(
            pids.len(),
            3,
            "m{}: {pids:?}\n{}",
            i + 1,
            seen.summary(sampled)
        );
    }
    let swaps = seen.outages.iter().filter(|o| o.process_gone).count();
    assert_eq!(swaps, 6, "{}\n{}", seen.summary(sampled), cluster.logs());
    for m in &cluster.members {
        m.wait_healthy();
    }
    // Every supervisor is idle again and the turn is free.
    let out = Command::new(SUPERVISOR)
        .args(["status", "--json", "--endpoints", &urls.join(",")])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["turn"]["holder"],
        serde_json::Value::Null,
        "{status}"
    );
    for name in ["m1", "m2", "m3"] {
        assert_eq!(status["progress"][name]["state"], "idle", "{status}");
        assert_eq!(
            status["progress"][name]["running"],
            Release::V3_5Newest.version().as_str(),
            "{status}"
        );
    }
    // Each swap left a backup behind.
    for m in &cluster.members {
        let backups = std::fs::read_dir(m.state_dir.join("backups"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(backups >= 1, "{} has no backup", m.spec.name);
    }
}

#[test]
fn known_bad_target_is_refused_everywhere_before_anything_stops() {
    known_bad_refused(Release::V3_5_1);
}

/// 3.5.0, the first known-bad release the README names, is refused the same way.
#[test]
fn known_bad_3_5_0_is_refused_everywhere_before_anything_stops() {
    known_bad_refused(Release::V3_5_0);
}

/// `release` staged on every member of a 3.4 cluster is refused by each, citing why, and
/// no etcd is restarted.
fn known_bad_refused(release: Release) {
    let mut cluster = Cluster::start_supervised(Release::V3_4, 3, FAST);
    let before = etcd_pids(&mut cluster);
    let version = release.version();
    for i in 0..3 {
        stage(&cluster, i, &release.etcd());
    }
    for m in &cluster.members {
        let reason = m
            .state_dir
            .join(format!("staging/rejected/etcd-{version}.reason"));
        wait_for(Duration::from_secs(30), || reason.exists().then_some(())).unwrap_or_else(|_| {
            panic!("{} did not refuse {version}\n{}", m.spec.name, m.log_text())
        });
        let text = std::fs::read_to_string(&reason).unwrap();
        assert!(
            text.contains("known-bad") || text.contains("13766"),
            "{text}"
        );
    }
    assert_eq!(etcd_pids(&mut cluster), before, "an etcd was restarted");
    for i in 0..3 {
        assert_eq!(server_version(&cluster, i), Some(Release::V3_4.version()));
    }
}

#[test]
fn a_version_that_does_not_serve_is_rolled_back_and_rejected_cluster_wide() {
    // The swap's own line of defence: no dress rehearsal (3.4's etcdctl, pinned beside the
    // first binary, would reject the fake before any stop).
    let mut opts = FAST.to_vec();
    opts.extend(["--rehearsal", "never"]);
    let mut cluster = Cluster::start_supervised(Release::V3_4, 3, &opts);
    let urls = cluster.client_urls();
    // Reports a real target version, but exits instead of serving.
    let fake = cluster.dir().join("etcd-broken");
    support::write_script(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'etcd Version: 3.5.16'; exit 0; fi\necho 'broken etcd' >&2\nexit 3\n",
    );
    let pids = Arc::new(Mutex::new(etcd_pids(&mut cluster)));
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    for i in 0..3 {
        stage(&cluster, i, &fake);
    }
    // Exactly one member tries it, rolls back, and the version is rejected for everyone.
    let key_url = format!("{}/v3/kv/range", urls[0]);
    let body = format!(r#"{{"key":"{}"}}"#, b64("/etcd-supervisor/rejected/3.5.16"));
    wait_for(Duration::from_secs(90), || {
        let (_, b) = http_post(&key_url, &body, Duration::from_secs(2))?;
        b.contains("\"kvs\"").then_some(())
    })
    .unwrap_or_else(|_| panic!("3.5.16 never rejected\n{}", cluster.logs()));
    // The others refuse it once they get their turn (or at once).
    for m in &cluster.members {
        let reason = m.state_dir.join("staging/rejected/etcd-3.5.16.reason");
        wait_for(Duration::from_secs(60), || reason.exists().then_some(()))
            .unwrap_or_else(|_| panic!("{} has no reason file\n{}", m.spec.name, m.log_text()));
    }
    for i in 0..3 {
        assert_eq!(server_version(&cluster, i), Some(Release::V3_4.version()));
        cluster.members[i].wait_healthy();
    }
    let seen = sampler.finish();
    eprintln!("outages: {}", seen.summary(sampled));
    assert!(
        seen.second_outages().is_empty() && seen.max_out <= 1,
        "{}",
        seen.summary(sampled)
    );
    // One stop, by the member that tried, holding the turn.
    assert_eq!(
        seen.outages.iter().filter(|o| o.process_gone).count(),
        1,
        "{}",
        seen.summary(sampled)
    );
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(
        seen.stops_without_the_turn(&names),
        [],
        "{}",
        seen.summary(sampled)
    );
    // Only the member that tried restarted its etcd.
    let after = etcd_pids(&mut cluster);
    let changed = after
        .iter()
        .filter(|(name, p)| pids.lock().unwrap().get(*name) != Some(p))
        .count();
    assert_eq!(changed, 1, "expected one member to have tried: {after:?}");
    let logs = cluster.logs();
    assert!(logs.contains("rejected for the whole cluster"), "{logs}");
}
