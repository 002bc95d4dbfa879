//! Ending etcd's stop once its data is closed: the lock probe against a real member, and
//! rollouts under a writer where every swap ends that way, with no acknowledged write lost
//! and the swapped member's HashKV equal to the others' after every swap.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use etcd_supervisor::process::data_locks::DataLocks;

use crate::rollout::{count_lost, stage, wait_all_on, Writer, FAST};
use crate::support::{http_post, wait_for, wait_for_every, Cluster, Release};

fn status(url: &str) -> Option<serde_json::Value> {
    let (code, body) = http_post(
        &format!("{url}/v3/maintenance/status"),
        "{}",
        Duration::from_secs(2),
    )?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn revision(url: &str) -> Option<i64> {
    status(url)?["header"]["revision"].as_str()?.parse().ok()
}

/// `(hash, compact_revision)` of the member at `url` at `rev`.
fn hash_kv(url: &str, rev: i64) -> Option<(u64, String)> {
    let (code, body) = http_post(
        &format!("{url}/v3/maintenance/hashkv"),
        &format!(r#"{{"revision":"{rev}"}}"#),
        Duration::from_secs(5),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200).then_some(())?;
    let compact = v["compact_revision"].as_str().unwrap_or("0").to_owned();
    Some((v["hash"].as_u64().unwrap_or(0), compact))
}

/// Every member's HashKV at a revision all of them have reached, equal.
pub fn assert_hash_kv_equal(cluster: &Cluster, after: &str) {
    let urls = cluster.client_urls();
    let common = wait_for(Duration::from_secs(20), || {
        urls.iter().map(|u| revision(u)).min().flatten()
    })
    .unwrap_or_else(|_| panic!("no revision from every member ({after})"));
    let hashes: Vec<(u64, String)> = urls
        .iter()
        .map(|u| {
            wait_for(Duration::from_secs(20), || hash_kv(u, common))
                .unwrap_or_else(|_| panic!("no HashKV from {u} at {common} ({after})"))
        })
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV at revision {common} differs after {after}: {hashes:?}\n{}",
        cluster.logs()
    );
}

/// How many swaps member `i` finished, by its supervisor's log.
fn swaps_done(cluster: &Cluster, i: usize) -> usize {
    cluster.members[i]
        .log_text()
        .matches("etcd healthy and caught up")
        .count()
}

/// Stages `to` on every member at once and waits until all run it, checking HashKV after
/// each swap as it completes. Returns the wall time.
pub fn rollout_checking_hashes(cluster: &Cluster, to: Release, timeout: Duration) -> Duration {
    let n = cluster.members.len();
    let mut seen: Vec<usize> = (0..n).map(|i| swaps_done(cluster, i)).collect();
    let t0 = Instant::now();
    for i in 0..n {
        stage(cluster, i, &to.etcd());
    }
    let mut checked = 0;
    while checked < n {
        let i = wait_for_every(timeout, Duration::from_millis(10), || {
            (0..n).find(|&i| swaps_done(cluster, i) > seen[i])
        })
        .unwrap_or_else(|_| {
            panic!(
                "swap {} of {n} did not finish\n{}",
                checked + 1,
                cluster.logs()
            )
        });
        seen[i] += 1;
        checked += 1;
        assert_hash_kv_equal(cluster, &format!("m{}'s swap to {}", i + 1, to.version()));
    }
    wait_all_on(cluster, &to.version(), timeout);
    t0.elapsed()
}

/// The supervisors' log lines of stops for a swap.
pub fn swap_stops(cluster: &Cluster) -> Vec<String> {
    cluster
        .members
        .iter()
        .flat_map(|m| {
            m.log_text()
                .lines()
                .filter(|l| l.contains("etcd stopped for the upgrade"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_stopping_etcd_closes_its_data_long_before_it_exits_and_a_kill_then_loses_nothing() {
    let mut cluster = Cluster::start(Release::V3_5Newest, 3);
    let urls = cluster.client_urls();
    for n in 0..50 {
        let body = format!(r#"{{"key":"{}","value":"dg=="}}"#, b64(&format!("k/{n}")));
        let put = http_post(
            &format!("{}/v3/kv/put", urls[0]),
            &body,
            Duration::from_secs(5),
        );
        assert!(matches!(put, Some((200, _))), "{put:?}");
    }
    let spec = cluster.members[1].spec.clone();
    let locks = DataLocks::new(&spec.data_dir, None);
    let running = locks.probe().expect("probe a running member");
    assert!(running.db_held && running.wal_held, "{running:?}");

    let sent = Instant::now();
    let proc = cluster.member(1).proc();
    proc.signal(Signal::SIGTERM);
    let closed = wait_for_every(Duration::from_secs(20), Duration::from_millis(2), || {
        locks
            .probe()
            .expect("probe")
            .closed()
            .then(|| sent.elapsed())
    })
    .expect("data closed after SIGTERM");
    // 3.5 drains its peer listeners for about a second after closing its data.
    let alive = proc.wait_timeout(Duration::ZERO).is_none();
    assert!(
        alive,
        "etcd exited before its data was seen closed ({closed:?})"
    );
    proc.signal(Signal::SIGKILL);
    let killed = cluster.member(1).kill();
    drop(killed);
    eprintln!("data closed {closed:?} after SIGTERM; killed then");

    cluster.member(1).start();
    cluster.member(1).wait_healthy();
    let count = |url: &str| {
        let body = format!(
            r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
            b64("k/"),
            b64("k0")
        );
        let (_, b) = http_post(&format!("{url}/v3/kv/range"), &body, Duration::from_secs(5))?;
        let v: serde_json::Value = serde_json::from_str(&b).ok()?;
        v["count"].as_str().map(str::to_owned)
    };
    wait_for(Duration::from_secs(20), || {
        (count(&cluster.members[1].client_url()).as_deref() == Some("50")).then_some(())
    })
    .unwrap_or_else(|_| panic!("the killed member lost keys\n{}", cluster.logs()));
    assert_hash_kv_equal(&cluster, "the kill after the data was closed");
}

#[test]
fn patch_rollout_with_the_fast_stop_loses_nothing_and_keeps_hashes_equal() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    let urls = cluster.client_urls();
    let writer = Writer::start(urls.clone(), "fast-stop");
    std::thread::sleep(Duration::from_millis(300));

    let wall = rollout_checking_hashes(&cluster, Release::V3_5Newest, Duration::from_secs(60));
    let report = writer.finish();
    let lost = count_lost(&urls[0], &report.acked);
    eprintln!(
        "patch rollout {wall:?}; writes acked {}, failed attempts {}, longest stall {:?}, lost {lost}",
        report.acked.len(),
        report.failures,
        report.longest_stall
    );
    if std::env::var_os("FAST_STOP_TIMELINE").is_some() {
        let mut lines: Vec<String> = cluster
            .members
            .iter()
            .flat_map(|m| {
                m.log_text()
                    .lines()
                    .filter(|l| l.starts_with("20"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        eprintln!("{}", lines.join("\n"));
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(report.acked.len() > 20, "writer barely ran: {report:?}");
    let stops = swap_stops(&cluster);
    assert_eq!(stops.len(), 3, "{}", cluster.logs());
    // No stop waited out 3.5's peer drain: ended once the data was closed, or etcd won
    // that race and exited by itself first.
    assert!(
        stops.iter().all(|l| quick_clean_stop(l)),
        "a swap's stop waited for etcd's exit: {stops:#?}"
    );
    assert_hash_kv_equal(&cluster, "the rollout");

    // The operator's stop of a supervisor ends the same way, and is still a clean exit.
    let status = cluster.member(0).stop();
    assert_eq!(status.code(), Some(0), "{}", cluster.members[0].log_text());
    let log = cluster.members[0].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("etcd stopped; exiting") && quick_clean_stop(l)),
        "{log}"
    );
}

/// A stop's log line: ended with the data closed, or by etcd's own exit within a second
/// (a stop that waited out the peer drain takes longer); never escalated.
pub fn quick_clean_stop(line: &str) -> bool {
    let took_ms: Option<u64> = line
        .split("took_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    line.contains("ended=\"data_closed\"")
        || (line.contains("ended=\"exited\"") && took_ms.is_some_and(|t| t < 1000))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
