//! Benchmarks against real etcd: figures, never pass/fail.
//!
//! `scripts/bench [NAME...]` runs them (all by default) and prints one table per benchmark.
//! Every comparison runs bare etcd and the supervisor in the same run, same binary, same
//! machine, interleaved so drift hits both sides alike.

#[path = "../tests/it/support/mod.rs"]
mod support;

// The rollout tests' helpers (stage, writer, timeline); its #[test]s are not compiled here.
#[path = "../tests/it/rollout.rs"]
#[allow(dead_code, unused_imports)]
mod rollout;

// HashKV after every swap (its #[test]s are not compiled here).
#[path = "../tests/it/fast_stop.rs"]
#[allow(dead_code, unused_imports)]
mod fast_stop;

#[path = "upgrade/mod.rs"]
mod upgrade;

#[path = "rehearsal/mod.rs"]
mod rehearsal;

#[path = "backup/mod.rs"]
mod backup;

#[path = "big/mod.rs"]
mod big;

use std::time::{Duration, Instant};

use support::{Cluster, Mode, Release};

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all: &[(&str, fn())] = &[
        ("start", bench_start),
        ("idle", bench_idle),
        ("backup", backup::bench_backup),
        ("swap", upgrade::bench_swap),
        ("rollout", upgrade::bench_rollout),
        ("rollout-db", upgrade::bench_rollout_db),
        ("turn", upgrade::bench_turn),
        ("rehearsal", rehearsal::bench_rehearsal),
        ("loop", upgrade::bench_loop),
        ("big", big::bench_big),
    ];
    for (name, f) in all {
        // The loop and big run only when named: they take many minutes (and big, many GB).
        let default = !matches!(*name, "loop" | "big");
        if (wanted.is_empty() && default) || wanted.iter().any(|w| w == name) {
            println!("\n## {name}");
            f();
        }
    }
}

/// Summary of a sample of durations.
fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
}

/// Spawn → /health true, polled every 5 ms.
fn time_to_healthy(cluster: &mut Cluster) -> Duration {
    let url = format!("{}/health", cluster.member(0).client_url());
    let t0 = Instant::now();
    cluster.member(0).start();
    support::wait_for_every(Duration::from_secs(30), Duration::from_millis(5), || {
        support::is_healthy(&url)
    })
    .expect("healthy");
    t0.elapsed()
}

/// Start-to-healthy of a single member: bare etcd vs under the supervisor, for a new data
/// dir (first start; the supervisor also pins the binary) and a restart on existing data.
fn bench_start() {
    const RUNS: usize = 7;
    let release = Release::V3_5;
    println!(
        "etcd {} single member, {RUNS} runs each, interleaved",
        release.version()
    );
    println!("| case | runs | median | min | max |\n|---|---|---|---|---|");
    let (mut bare_new, mut sup_new, mut bare_re, mut sup_re) = (vec![], vec![], vec![], vec![]);
    for _ in 0..RUNS {
        for supervised in [false, true] {
            let mode = if supervised {
                Mode::Supervised(vec![])
            } else {
                Mode::Bare
            };
            let mut c = Cluster::new(release, 1, mode);
            let first = time_to_healthy(&mut c);
            c.member(0).stop();
            let again = time_to_healthy(&mut c);
            c.member(0).stop();
            if supervised {
                sup_new.push(first);
                sup_re.push(again);
            } else {
                bare_new.push(first);
                bare_re.push(again);
            }
        }
    }
    summary("bare etcd, new data dir", bare_new);
    summary("supervised, new data dir (incl. pinning)", sup_new);
    summary("bare etcd, restart", bare_re);
    summary("supervised, restart", sup_re);
}

fn proc_stat(pid: i32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the command.
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss_kib)
}

/// RSS and CPU of an idle supervisor over a healthy single member.
fn bench_idle() {
    const WINDOW: Duration = Duration::from_secs(60);
    let mut c = Cluster::start_supervised(Release::V3_5, 1, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let pid = c.member(0).proc().pid().as_raw();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (t0, _) = proc_stat(pid);
    std::thread::sleep(WINDOW);
    let (t1, rss) = proc_stat(pid);
    let cpu = (t1 - t0) as f64 / hz / WINDOW.as_secs_f64() * 100.0;
    println!("| supervisor pid | window | RSS | CPU |\n|---|---|---|---|");
    println!(
        "| {pid} | {} s | {:.1} MiB | {cpu:.3} % |",
        WINDOW.as_secs(),
        rss as f64 / 1024.0
    );
}
