//! Upgrade benchmarks: the swap window of one member (supervised vs a bare stop/start of the
//! same binaries, both timed from outside; a 3.5 and a 3.6 patch, and the swap into 3.7),
//! rollout wall time for 3 members (patch and minor on 3.5, 3.6 and into 3.7) and 5 members
//! with a writer running (bare by hand beside it, the supervisors' per-phase breakdown, leader
//! changes), a loop of rollouts checking safety each time, the turn's acquire and
//! hand-over latency. (Staging detection is measured by the test
//! `staging::detection_latency_is_well_under_a_second_plus_verification`, which prints it.)

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_supervisor::cluster::lock::{self, LockConfig};
use etcd_supervisor::etcd::{Client, ClientConfig};

use crate::rollout::{stage, wait_all_on, Writer};
use crate::summary;
use crate::support::{wait_for_every, Cluster, Release, SUPERVISOR};

const FAST: &[&str] = &["--lock-ttl", "3s", "--ready-timeout", "30s"];

#[path = "observe.rs"]
pub mod observe;

use observe::{delta, record_state, wait_new_caught_up, LeaderSampler, Observed, POLL};

/// The others' client URLs.
fn others(urls: &[String], i: usize) -> Vec<String> {
    (0..urls.len())
        .filter(|j| *j != i)
        .map(|j| urls[j].clone())
        .collect()
}

/// Bare swap: SIGTERM of the old member (by hand) → new binary healthy and caught up.
fn bare_swap(c: &mut Cluster, i: usize, to: Release) -> Duration {
    let urls = c.client_urls();
    let t0 = Instant::now();
    c.member(i).stop();
    c.member(i).release = to;
    c.member(i).start();
    wait_new_caught_up(&urls[i], &others(&urls, i), &to.version()) - t0
}

/// Supervised swap timed from outside like the bare one: from the member's progress
/// record saying `stopping` (published just before the stop is sent, so this start is
/// if anything early) → the new binary healthy and caught up. Also returns the
/// supervisor's own `swap_window_ms` for that swap.
fn supervised_swap(c: &Cluster, i: usize, to: Release) -> (Duration, Duration) {
    let urls = c.client_urls();
    let name = c.members[i].spec.name.clone();
    let reader = urls[(i + 1) % urls.len()].clone();
    let count = |log: &str| log.matches("swap_window_ms=").count();
    let before = count(&c.members[i].log_text());
    stage(c, i, &to.etcd());
    let t0 = wait_for_every(Duration::from_secs(120), POLL, || {
        let state = record_state(&reader, &name)?;
        matches!(
            state.as_str(),
            "stopping" | "swapping" | "starting" | "verifying"
        )
        .then(Instant::now)
    })
    .expect("swap began");
    let t1 = wait_new_caught_up(&urls[i], &others(&urls, i), &to.version());
    let line = wait_for_every(Duration::from_secs(60), Duration::from_millis(20), || {
        let log = c.members[i].log_text();
        (count(&log) > before).then(|| {
            log.lines()
                .rev()
                .find(|l| l.contains("swap_window_ms="))
                .unwrap_or_default()
                .to_owned()
        })
    })
    .expect("swap logged");
    let ms: u64 = line
        .split("swap_window_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("swap_window_ms value");
    (t1 - t0, Duration::from_millis(ms))
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// The swap cases, one per minor: a patch where two releases of it exist, else the swap
/// into it from the minor before (only one 3.7 release is fetched).
const SWAPS: &[(&str, Release, Release)] = &[
    ("3.5 patch", Release::V3_5, Release::V3_5Newest),
    ("3.6 patch", Release::V3_6_10, Release::V3_6),
    ("3.6 -> 3.7 minor", Release::V3_6, Release::V3_7),
];

/// Per-member swap window, bare vs supervised, timed from outside the same way; two rounds
/// of three members each, interleaved; for each case of [`SWAPS`].
pub fn bench_swap() {
    println!(
        "3-member cluster, each member in turn, 2 rounds per case; from outside: stop sent (bare: our SIGTERM; supervised: its record says stopping) -> new version healthy and caught up, polled every {} ms",
        POLL.as_millis()
    );
    println!("| case | swaps | median | min | max |\n|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (label, from, to) in SWAPS {
        let (mut bare, mut sup, mut own) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2 {
            let mut c = Cluster::start(*from, 3);
            for i in 0..3 {
                bare.push(bare_swap(&mut c, i, *to));
            }
            drop(c);
            let c = Cluster::start_supervised(*from, 3, FAST);
            for i in 0..3 {
                let (outside, inside) = supervised_swap(&c, i, *to);
                sup.push(outside);
                own.push(inside);
            }
        }
        let (mb, ms) = (median(&bare), median(&sup));
        let versions = format!("{} -> {}", from.version(), to.version());
        summary(
            &format!("{label} {versions}, bare: SIGTERM -> new healthy and caught up"),
            bare,
        );
        summary(
            &format!("{label} {versions}, supervised, from outside (same poller)"),
            sup,
        );
        summary(
            &format!("{label} {versions}, supervised, its own swap_window_ms"),
            own,
        );
        ratios.push((
            format!("{label} {versions}"),
            ms.as_secs_f64() / mb.as_secs_f64(),
        ));
    }
    for (label, ratio) in ratios {
        println!("{label}: supervised / bare (medians, both from outside): {ratio:.3}");
    }
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
            .is_some_and(|p| p.len() == urls.len() && p.values().all(|m| m["state"] == "idle"))
}

/// One supervised rollout, staged on all at once under a writer: wall time (staged →
/// all idle on the target), leader changes, phases and stops from the supervisors' metrics.
struct RolloutFigures {
    wall: Duration,
    acked: usize,
    failures: u64,
    stall: Duration,
    lost: usize,
    leader_changes: usize,
    phases: BTreeMap<String, f64>,
    stops: BTreeMap<String, f64>,
}

fn supervised_rollout(
    o: &Observed,
    to: Release,
    label: &str,
    check_hashes: bool,
) -> RolloutFigures {
    let urls = o.cluster.client_urls();
    let writer = Writer::start(urls.clone(), label);
    std::thread::sleep(Duration::from_millis(300));
    let (phases0, stops0) = (o.phases(), o.stops());
    let leaders = LeaderSampler::start(urls.clone());
    let t0 = Instant::now();
    if check_hashes {
        crate::fast_stop::rollout_checking_hashes(&o.cluster, to, Duration::from_secs(120));
    } else {
        for i in 0..urls.len() {
            stage(&o.cluster, i, &to.etcd());
        }
        wait_all_on(&o.cluster, &to.version(), Duration::from_secs(300));
    }
    wait_for_every(Duration::from_secs(60), Duration::from_millis(20), || {
        all_idle(&urls).then_some(())
    })
    .expect("all idle");
    let wall = t0.elapsed();
    print_if_slow(&o.cluster, label, wall);
    let leader_changes = leaders.finish();
    let report = writer.finish();
    let lost = crate::rollout::count_lost(&urls[0], &report.acked);
    if check_hashes {
        crate::fast_stop::assert_hash_kv_equal(&o.cluster, label);
    }
    RolloutFigures {
        wall,
        acked: report.acked.len(),
        failures: report.failures,
        stall: report.longest_stall,
        lost,
        leader_changes,
        phases: delta(&phases0, &o.phases()),
        stops: delta(&stops0, &o.stops()),
    }
}

/// With `BENCH_SLOW_SECS=N`, a rollout slower than N seconds prints the supervisors' own
/// lines (not etcd's), merged by time, to show where it waited.
fn print_if_slow(c: &Cluster, label: &str, wall: Duration) {
    let Some(limit) = std::env::var("BENCH_SLOW_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    else {
        return;
    };
    if wall.as_secs_f64() <= limit {
        return;
    }
    let mut lines: Vec<String> = c
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
    let keep = lines.len().saturating_sub(400);
    println!(
        "\n<details><summary>{label}: {:.2} s, supervisors' log</summary>\n\n```\n{}\n```\n</details>\n",
        wall.as_secs_f64(),
        lines[keep..].join("\n")
    );
}

/// The same rollout by hand on bare etcd: each member in turn, SIGTERM, start the new
/// binary, wait until healthy and caught up; after a minor upgrade, until the cluster
/// version moved (the guides' last step, which the supervisors' last verify also waits for).
fn bare_rollout(n: usize, from: Release, to: Release) -> (Duration, usize) {
    let mut c = Cluster::start(from, n);
    let urls = c.client_urls();
    let writer = Writer::start(urls.clone(), "bare");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for i in 0..n {
        bare_swap(&mut c, i, to);
    }
    let (old, new) = (from.version(), to.version());
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor(&old) != minor(&new) {
        observe::wait_cluster_version(&urls[0], &new);
    }
    let wall = t0.elapsed();
    let report = writer.finish();
    (wall, crate::rollout::count_lost(&urls[0], &report.acked))
}

fn fmt_map(m: &BTreeMap<String, f64>, order: &[&str]) -> String {
    order
        .iter()
        .map(|k| format!("{k} {:.2}", m.get(*k).copied().unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

const PHASE_ORDER: &[&str] = &[
    "turn_wait",
    "preflight",
    "backup",
    "stop",
    "switch",
    "start",
    "catch_up",
];

/// Rollout wall time for 3 and 5 members with a writer running, bare by hand beside it;
/// the per-phase breakdown (seconds summed over members) from the supervisors' metrics,
/// and leader changes seen in the members' status.
pub fn bench_rollout() {
    println!("| rollout | members | wall time (staged on all -> all idle on the target) | bare by hand | writes acked | failed attempts | longest stall | lost | leader changes | stops by ending |\n|---|---|---|---|---|---|---|---|---|---|");
    let mut breakdown = Vec::new();
    for n in [3, 5] {
        // Each chain runs on one supervised cluster, rollout after rollout.
        let chains: &[&[(&str, Release, Release)]] = if n == 3 {
            &[
                &[
                    ("3.4 -> 3.5 minor", Release::V3_4, Release::V3_5),
                    ("3.5 patch", Release::V3_5, Release::V3_5Newest),
                ],
                &[
                    (
                        "3.5 patch (to the newest)",
                        Release::V3_5Newest,
                        Release::V3_5Go,
                    ),
                    ("3.5 -> 3.6 minor", Release::V3_5Go, Release::V3_6),
                ],
                &[
                    ("3.6 patch", Release::V3_6_10, Release::V3_6),
                    ("3.6 -> 3.7 minor", Release::V3_6, Release::V3_7),
                ],
            ]
        } else {
            &[&[("3.5 patch", Release::V3_5, Release::V3_5Newest)]]
        };
        for cases in chains {
            let o = Observed::start(cases[0].1, n, FAST);
            for (label, from, to) in cases.iter() {
                let label = &format!("{label}, {} -> {}", from.version(), to.version());
                let f = supervised_rollout(&o, *to, label, false);
                let (bare, bare_lost) = bare_rollout(n, *from, *to);
                println!(
                "| {label} | {n} | {:.2} s | {:.2} s (lost {bare_lost}) | {} | {} | {} ms | {} | {} | {} |",
                f.wall.as_secs_f64(),
                bare.as_secs_f64(),
                f.acked,
                f.failures,
                f.stall.as_millis(),
                f.lost,
                f.leader_changes,
                fmt_map(&f.stops, &["data_closed", "exited", "escalated"]),
            );
                breakdown.push((format!("{label}, {n} members"), f.phases));
            }
        }
    }
    println!("\nper-phase time, seconds summed over the members (from etcd_supervisor_upgrade_phase_seconds_total)");
    println!(
        "| rollout | {} |\n|---|{}",
        PHASE_ORDER.join(" | "),
        "---|".repeat(PHASE_ORDER.len())
    );
    for (label, p) in breakdown {
        let cells: Vec<String> = PHASE_ORDER
            .iter()
            .map(|k| format!("{:.2}", p.get(*k).copied().unwrap_or(0.0)))
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}

/// How a rollout's cost grows with the database: a 3-member 3.5 patch rollout at 16 MB and
/// 256 MB (`scripts/bench rollout-db`; `BENCH_DB_MB=1024` adds a size where disk and time allow).
pub fn bench_rollout_db() {
    let mut sizes = vec![16u64, 256];
    if let Some(mb) = std::env::var("BENCH_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        sizes.push(mb);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| rollout | db | wall time | writes acked | lost | leader changes | backup s | stop s | start s | catch_up s |\n|---|---|---|---|---|---|---|---|---|---|");
    for mb in sizes {
        let o = Observed::start(Release::V3_5, 3, FAST);
        let url = o.cluster.client_urls()[0].clone();
        let client = Client::new(ClientConfig::new(vec![url])).expect("client");
        let mut next = 0;
        let size = rt.block_on(crate::backup::grow(&client, mb * 1024 * 1024, &mut next));
        let label = "3.5 -> newer 3.5 (patch), 3 members";
        let f = supervised_rollout(&o, Release::V3_5Newest, label, false);
        let phase = |k: &str| f.phases.get(k).copied().unwrap_or(0.0);
        println!(
            "| {label} | {:.0} MB | {:.2} s | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            size as f64 / 1e6,
            f.wall.as_secs_f64(),
            f.acked,
            f.lost,
            f.leader_changes,
            phase("backup"),
            phase("stop"),
            phase("start"),
            phase("catch_up"),
        );
    }
}

/// Loop mode (`scripts/bench loop`; `BENCH_LOOP_RUNS`, default 20): 3-member rollouts
/// 3.4.23 → 3.5.16 → 3.5.30 and 3.5.16 → 3.5.30 under a writer, each on a new cluster,
/// with 0 acknowledged writes lost and HashKV equal after every swap checked each time.
pub fn bench_loop() {
    let runs: usize = std::env::var("BENCH_LOOP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let chains: &[(&str, &[Release])] = &[
        (
            "3.4.23 -> 3.5.16 -> 3.5.30",
            &[Release::V3_4, Release::V3_5, Release::V3_5Newest],
        ),
        ("3.5.16 -> 3.5.30", &[Release::V3_5, Release::V3_5Newest]),
    ];
    for (label, chain) in chains {
        println!("\n{label}, 3 members, {runs} runs, HashKV checked after every swap");
        println!("| run | rollouts (wall) | lost | leader changes | stops by ending |\n|---|---|---|---|---|");
        let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); chain.len() - 1];
        let (mut lost_total, mut changes_total) = (0, 0);
        for run in 1..=runs {
            let o = Observed::start(chain[0], 3, FAST);
            let mut cells = Vec::new();
            let (mut lost, mut changes) = (0, 0);
            let mut stops = BTreeMap::new();
            for (step, to) in chain[1..].iter().enumerate() {
                let f = supervised_rollout(&o, *to, &format!("loop-{run}-{step}"), true);
                walls[step].push(f.wall);
                cells.push(format!("{:.2} s", f.wall.as_secs_f64()));
                lost += f.lost;
                changes += f.leader_changes;
                for (k, v) in f.stops {
                    *stops.entry(k).or_insert(0.0) += v;
                }
            }
            lost_total += lost;
            changes_total += changes;
            println!(
                "| {run} | {} | {lost} | {changes} | {} |",
                cells.join(" + "),
                fmt_map(&stops, &["data_closed", "exited", "escalated"])
            );
            assert_eq!(lost, 0, "acknowledged writes lost in run {run}");
        }
        for (step, w) in walls.iter().enumerate() {
            summary(
                &format!(
                    "step {} ({} -> {})",
                    step + 1,
                    chain[step].version(),
                    chain[step + 1].version()
                ),
                w.clone(),
            );
        }
        println!(
            "lost in all runs: {lost_total}; leader changes per run (mean): {:.2}; HashKV equal after every swap of every run",
            changes_total as f64 / runs as f64
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
