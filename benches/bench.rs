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
        ("backup", bench_backup),
        ("swap", upgrade::bench_swap),
        ("rollout", upgrade::bench_rollout),
        ("turn", upgrade::bench_turn),
        ("rehearsal", rehearsal::bench_rehearsal),
        ("loop", upgrade::bench_loop),
    ];
    for (name, f) in all {
        // The loop runs only when named: it takes many minutes.
        let default = *name != "loop";
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

/// A verified backup (snapshot through the API, meta.json, SHA256SUMS, every file re-read
/// from disk, rename) vs `etcdctl snapshot save` + `sha256sum` on the same ~16 MB member,
/// interleaved; then the cold data-dir copy (etcd stopped) vs `cp -a` + `sync`.
fn bench_backup() {
    use etcd_supervisor::backup::BackupMode;
    use etcd_supervisor::backup::BackupPlan;
    use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};
    use std::process::Command;

    const RUNS: usize = 5;
    let release = Release::V3_5;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let client = Client::new(ClientConfig::new(vec![url.clone()])).expect("client");
    // ~16 MB: 160 transactions of 100 × 1 KiB values.
    let value = vec![b'x'; 1024];
    rt.block_on(async {
        for t in 0..160 {
            let ops: Vec<TxnOp> = (0..100)
                .map(|i| TxnOp::Put(PutRequest::new(format!("k/{t}/{i}"), value.clone())))
                .collect();
            client.txn(&Txn::new().and_then(ops)).await.expect("txn");
        }
    });
    let db_size = rt.block_on(client.local_status()).expect("status").db_size;
    let scratch = tempfile::tempdir().expect("scratch");
    let mb = |bytes: u64, d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut streamed, mut finished) = (Vec::new(), Vec::new());
    let mut snapshot_size = 0;
    for run in 0..RUNS {
        let dir = scratch.path().join(format!("ours-{run}"));
        let t0 = Instant::now();
        let backup = rt.block_on(async {
            let pending = BackupPlan::exact(dir.clone()).begin(&client).await?;
            let t1 = Instant::now();
            let pending = pending.snapshot(&client).await?;
            let t2 = Instant::now();
            streamed.push(t2 - t1);
            let done = pending.finish().await;
            finished.push(t2.elapsed());
            done
        });
        ours.push(t0.elapsed());
        snapshot_size = backup
            .expect("backup")
            .meta
            .snapshot
            .expect("snapshot")
            .size;
        std::fs::remove_dir_all(&dir).expect("clean");

        let file = scratch.path().join(format!("etcdctl-{run}.db"));
        let t0 = Instant::now();
        let saved = Command::new(release.etcdctl())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={url}"))
            .args(["snapshot", "save"])
            .arg(&file)
            .output()
            .expect("etcdctl");
        assert!(saved.status.success(), "{saved:?}");
        let summed = Command::new("sha256sum")
            .arg(&file)
            .output()
            .expect("sha256sum");
        assert!(summed.status.success());
        theirs.push(t0.elapsed());
        std::fs::remove_file(&file).expect("clean");
    }
    println!(
        "etcd {}, db {:.1} MB, snapshot file {:.1} MB, {RUNS} runs each, interleaved",
        release.version(),
        db_size as f64 / 1e6,
        snapshot_size as f64 / 1e6
    );
    println!("| case | runs | median | min | max |\n|---|---|---|---|---|");
    summary(
        "verified backup (snapshot, sums, meta, re-read, rename)",
        ours,
    );
    summary(
        "  of which snapshot() (status + API stream to disk)",
        streamed,
    );
    summary(
        "  of which finish() (meta, sums, re-read, rename)",
        finished,
    );
    summary("etcdctl snapshot save + sha256sum", theirs);

    // Cold data-dir copy: etcd stopped, page cache warm from the running member.
    let data_dir = cluster.members[0].spec.data_dir.clone();
    let (mut copy, mut cp) = (Vec::new(), Vec::new());
    let mut data_bytes = 0;
    for run in 0..3 {
        let dir = scratch.path().join(format!("cold-{run}"));
        let pending = rt
            .block_on(
                BackupPlan::exact(dir.clone())
                    .mode(BackupMode::DataDir)
                    .data_dir(&data_dir)
                    .begin(&client),
            )
            .expect("begin");
        cluster.member(0).stop();
        let t0 = Instant::now();
        let pending = rt.block_on(pending.copy_data_dir()).expect("copy");
        copy.push(t0.elapsed());
        let done = rt.block_on(pending.finish()).expect("finish");
        data_bytes = done.meta.data_dir.expect("data dir").bytes;
        std::fs::remove_dir_all(&dir).expect("clean");

        let dst = scratch.path().join(format!("cp-{run}"));
        let t0 = Instant::now();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&data_dir)
            .arg(&dst)
            .status()
            .expect("cp")
            .success()
            // -f: syncfs, so the copied files are on disk too (not only the directory).
            && Command::new("sync")
                .arg("-f")
                .arg(&dst)
                .status()
                .expect("sync")
                .success();
        assert!(ok);
        cp.push(t0.elapsed());
        std::fs::remove_dir_all(&dst).expect("clean");
        cluster.member(0).start();
        cluster.member(0).wait_healthy();
    }
    copy.sort();
    cp.sort();
    println!(
        "\ncold data-dir copy, {:.1} MB (db + WAL segments, preallocated), 3 runs each",
        data_bytes as f64 / 1e6
    );
    println!("| case | runs | median | min | max | median rate |\n|---|---|---|---|---|---|");
    for (label, samples) in [
        ("copy_data_dir (hash + fsync per file)", &copy),
        ("cp -a + sync -f", &cp),
    ] {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} MB/s |",
            samples.len(),
            ms(samples[1]),
            ms(samples[0]),
            ms(samples[2]),
            mb(data_bytes, samples[1])
        );
    }
}
