//! Upgrade benchmarks: the swap window of one member (supervised vs a bare stop/start of the
//! same binaries), 3-member rollout wall time with a writer running, the turn's acquire and
//! hand-over latency. (Staging detection is measured by the test
//! `staging::detection_latency_is_well_under_a_second_plus_verification`, which prints it.)

use std::process::Command;
use std::time::{Duration, Instant};

use etcd_supervisor::cluster::lock::{self, LockConfig};
use etcd_supervisor::etcd::{Client, ClientConfig};

use crate::rollout::{stage, wait_all_on, Writer};
use crate::summary;
use crate::support::{self, http_post, wait_for_every, Cluster, Release, SUPERVISOR};

const FAST: &[&str] = &["--lock-ttl", "3s", "--ready-timeout", "30s"];

fn applied(url: &str) -> Option<u64> {
    let (_, body) = http_post(
        &format!("{url}/v3/maintenance/status"),
        "{}",
        Duration::from_secs(1),
    )?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["raftAppliedIndex"].as_str()?.parse().ok()
}

/// SIGTERM of the old member → new binary healthy and caught up with the others.
fn bare_swap(c: &mut Cluster, i: usize, to: Release) -> Duration {
    let url = c.members[i].client_url();
    let others: Vec<String> = (0..c.members.len())
        .filter(|j| *j != i)
        .map(|j| c.members[j].client_url())
        .collect();
    let t0 = Instant::now();
    c.member(i).stop();
    c.member(i).release = to;
    c.member(i).start();
    let every = Duration::from_millis(5);
    wait_for_every(Duration::from_secs(60), every, || {
        support::is_healthy(&format!("{url}/health"))
    })
    .expect("healthy");
    let want = others.iter().filter_map(|u| applied(u)).max().unwrap_or(0);
    wait_for_every(Duration::from_secs(60), every, || {
        (applied(&url)? >= want).then_some(())
    })
    .expect("caught up");
    t0.elapsed()
}

/// The supervisor's own measure of the same window, from its log.
fn supervised_swap(c: &Cluster, i: usize, to: Release) -> Duration {
    let count = |log: &str| log.matches("swap_window_ms=").count();
    let before = count(&c.members[i].log_text());
    stage(c, i, &to.etcd());
    let line = wait_for_every(Duration::from_secs(120), Duration::from_millis(20), || {
        let log = c.members[i].log_text();
        (count(&log) > before).then(|| {
            log.lines()
                .rev()
                .find(|l| l.contains("swap_window_ms="))
                .unwrap_or_default()
                .to_owned()
        })
    })
    .expect("swap done");
    let ms: u64 = line
        .split("swap_window_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("swap_window_ms value");
    Duration::from_millis(ms)
}

/// Per-member swap window, bare vs supervised, two rounds of three members each.
pub fn bench_swap() {
    let (from, to) = (Release::V3_5, Release::V3_5Newest);
    println!(
        "etcd {} -> {}, 3-member cluster, each member in turn, 2 rounds",
        from.version(),
        to.version()
    );
    println!("| case | swaps | median | min | max |\n|---|---|---|---|---|");
    let (mut bare, mut sup) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let mut c = Cluster::start(from, 3);
        for i in 0..3 {
            bare.push(bare_swap(&mut c, i, to));
        }
        drop(c);
        let c = Cluster::start_supervised(from, 3, FAST);
        for i in 0..3 {
            sup.push(supervised_swap(&c, i, to));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mb, ms) = (median(&mut bare.clone()), median(&mut sup.clone()));
    summary("bare: SIGTERM -> new healthy and caught up", bare);
    summary("supervised (incl. switch, start, verify)", sup);
    println!(
        "supervised / bare (medians): {:.3}",
        ms.as_secs_f64() / mb.as_secs_f64()
    );
}

fn all_idle(urls: &[String]) -> bool {
    let out = Command::new(SUPERVISOR)
        .args(["status", "--json", "--endpoints", &urls.join(",")])
        .output();
    let Ok(out) = out else { return false };
    let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    s["turn"]["holder"].is_null()
        && s["progress"]
            .as_object()
            .is_some_and(|p| p.len() == 3 && p.values().all(|m| m["state"] == "idle"))
}

/// Rollout wall time of a 3-member cluster, staged on all at once, with a writer running.
pub fn bench_rollout() {
    println!("| rollout | wall time (staged on all -> all idle on the target) | writes acked | failed attempts | longest stall | lost |\n|---|---|---|---|---|---|");
    let c = Cluster::start_supervised(Release::V3_4, 3, FAST);
    let urls = c.client_urls();
    for (label, to) in [
        ("3.4 -> 3.5 (minor)", Release::V3_5),
        ("3.5 -> newer 3.5 (patch)", Release::V3_5Newest),
    ] {
        let writer = Writer::start(urls.clone(), label);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        for i in 0..3 {
            stage(&c, i, &to.etcd());
        }
        wait_all_on(&c, &to.version(), Duration::from_secs(300));
        wait_for_every(Duration::from_secs(60), Duration::from_millis(20), || {
            all_idle(&urls).then_some(())
        })
        .expect("all idle");
        let wall = t0.elapsed();
        let report = writer.finish();
        let lost = crate::rollout::count_lost(&urls[0], &report.acked);
        println!(
            "| {label} | {:.2} s | {} | {} | {} ms | {lost} |",
            wall.as_secs_f64(),
            report.acked.len(),
            report.failures,
            report.longest_stall.as_millis()
        );
    }
}

/// Uncontended acquire and release-to-next-holder hand-over of the turn.
pub fn bench_turn() {
    const RUNS: usize = 10;
    let c = Cluster::start(Release::V3_5, 3);
    let urls = c.client_urls();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = |m: &str| LockConfig {
        key_prefix: "/etcd-supervisor/".into(),
        ttl: Duration::from_secs(10),
        member: m.into(),
    };
    let client = |rotate: usize| {
        let mut u = urls.clone();
        u.rotate_left(rotate);
        Client::new(ClientConfig::new(u)).expect("client")
    };
    let (mut acquire, mut handover) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let a = client(0);
        for _ in 0..RUNS {
            let t0 = Instant::now();
            let held = lock::acquire(&a, &cfg("a"), std::future::pending())
                .await
                .expect("acquire");
            acquire.push(t0.elapsed());
            held.release().await.expect("release");
        }
        for _ in 0..RUNS {
            let held = lock::acquire(&a, &cfg("a"), std::future::pending())
                .await
                .expect("acquire");
            let b = client(1);
            let cfg_b = cfg("b");
            let waiter = tokio::spawn(async move {
                let t = lock::acquire(&b, &cfg_b, std::future::pending())
                    .await
                    .expect("acquire b");
                (Instant::now(), t)
            });
            loop {
                let q = lock::queue(&a, &cfg("x")).await.expect("queue");
                if q.members.len() == 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let t0 = Instant::now();
            held.release().await.expect("release");
            let (got, t) = waiter.await.expect("waiter");
            handover.push(got - t0);
            t.release().await.expect("release b");
        }
    });
    println!(
        "3-member etcd {} cluster, {RUNS} runs each",
        Release::V3_5.version()
    );
    println!("| case | runs | median | min | max |\n|---|---|---|---|---|");
    summary(
        "uncontended acquire (lease, owner record, lock, read-back)",
        acquire,
    );
    summary("hand-over: release -> next holder confirmed", handover);
}
