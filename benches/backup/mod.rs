//! Backup benchmark, for 3.5.30, the newest 3.6 and the newest 3.7: a verified backup
//! (snapshot over gRPC, meta.json, SHA256SUMS, every file re-read from disk, rename)
//! against `etcdctl snapshot save` + `sha256sum` (the same release's etcdctl) on the same
//! member, interleaved, at about 16 MB and 256 MB of database; the client's snapshot alone
//! for reference; then, on 3.5.30 only, the cold data-dir copy (etcd stopped) against
//! `cp -a` + `sync -f`, at both sizes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_supervisor::backup::{BackupMode, BackupPlan};
use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};

use crate::support::{Cluster, Release};

const MB: u64 = 1_000_000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row: median, min, max, and the median against `base`.
fn row(label: &str, samples: &[Duration], base: Option<Duration>) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let med = median(sorted.clone());
    let ratio = base.map_or("".to_owned(), |b| {
        format!("{:.2}x", med.as_secs_f64() / b.as_secs_f64())
    });
    println!(
        "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {ratio} |",
        samples.len(),
        ms(med),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}

/// Writes 640 KiB transactions until the member's database is at least `target` bytes.
pub async fn grow(client: &Client, target: u64, next: &mut usize) -> u64 {
    let value = vec![b'x'; 10 * 1024];
    loop {
        let size = client.local_status().await.expect("status").db_size.max(0) as u64;
        if size >= target {
            return size;
        }
        let t = *next;
        *next += 1;
        let ops: Vec<TxnOp> = (0..64)
            .map(|i| TxnOp::Put(PutRequest::new(format!("bench/{t}/{i}"), value.clone())))
            .collect();
        client.txn(&Txn::new().and_then(ops)).await.expect("txn");
    }
}

fn etcdctl_save_and_sum(etcdctl: &Path, url: &str, file: &Path) -> Duration {
    let t0 = Instant::now();
    let saved = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["snapshot", "save"])
        .arg(file)
        .output()
        .expect("etcdctl");
    assert!(saved.status.success(), "{saved:?}");
    let summed = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum");
    assert!(summed.status.success());
    let took = t0.elapsed();
    std::fs::remove_file(file).expect("clean");
    took
}

/// The backup benchmark (see the module header), for the newest Debian 3.5, the newest 3.6
/// and the newest 3.7; the cold copy (etcd stopped, no etcd code involved) on the first only.
pub fn bench_backup() {
    for (n, release) in [Release::V3_5Newest, Release::V3_6, Release::V3_7]
        .into_iter()
        .enumerate()
    {
        println!("\n### etcd {}", release.version());
        bench_backup_of(release, n == 0);
    }
}

fn bench_backup_of(release: Release, cold: bool) {
    let etcdctl = release.etcdctl();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let client = Client::new(ClientConfig::new(vec![url.clone()])).expect("client");
    let scratch = tempfile::tempdir().expect("scratch");
    let data_dir = cluster.members[0].spec.data_dir.clone();
    let mut next = 0;
    println!(
        "etcd {} single member; etcdctl {}; machine: {} cores, shared and loaded by other work \
         (figures vary from run to run; compare rows of one run)",
        release.version(),
        release.version(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for (target, runs) in [(16 * MB, 7), (256 * MB, 3)] {
        let db_size = rt.block_on(grow(&client, target, &mut next));
        let (mut ours, mut streamed, mut finished) = (vec![], vec![], vec![]);
        let (mut alone, mut theirs) = (vec![], vec![]);
        let mut snapshot_size = 0;
        for run in 0..runs {
            let dir = scratch.path().join(format!("ours-{run}"));
            let t0 = Instant::now();
            let backup = rt
                .block_on(async {
                    let pending = BackupPlan::exact(dir.clone()).begin(&client).await?;
                    let t1 = Instant::now();
                    let pending = pending.snapshot(&client).await?;
                    let t2 = Instant::now();
                    streamed.push(t2 - t1);
                    let done = pending.finish().await;
                    finished.push(t2.elapsed());
                    done
                })
                .expect("backup");
            ours.push(t0.elapsed());
            snapshot_size = backup.meta.snapshot.expect("snapshot").size;
            std::fs::remove_dir_all(&dir).expect("clean");

            let file = scratch.path().join(format!("etcdctl-{run}.db"));
            theirs.push(etcdctl_save_and_sum(&etcdctl, &url, &file));

            // The client's snapshot alone: stream, check, fsync and rename.
            let file = scratch.path().join(format!("alone-{run}.db"));
            let t0 = Instant::now();
            rt.block_on(client.snapshot_from(&url, &file, Duration::from_secs(600)))
                .expect("snapshot");
            alone.push(t0.elapsed());
            std::fs::remove_file(&file).expect("clean");
        }
        let base = median(theirs.clone());
        println!(
            "\n#### db {:.0} MB (snapshot file {:.1} MB), {runs} runs each, interleaved",
            db_size as f64 / 1e6,
            snapshot_size as f64 / 1e6
        );
        println!("| case | runs | median | min | max | vs etcdctl |\n|---|---|---|---|---|---|");
        row("etcdctl snapshot save + sha256sum", &theirs, None);
        row(
            "verified backup (gRPC snapshot, sums, meta, re-read, rename)",
            &ours,
            Some(base),
        );
        row(
            "  of which snapshot() (status + gRPC stream to disk, fsync)",
            &streamed,
            Some(base),
        );
        row(
            "  of which finish() (meta, sums, re-read from disk, rename)",
            &finished,
            Some(base),
        );
        row(
            "snapshot_from alone (stream to disk, fsync, rename; no verify)",
            &alone,
            Some(base),
        );

        if !cold {
            continue;
        }
        // Cold data-dir copy: etcd stopped, page cache warm from the running member.
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
        let base = median(cp.clone());
        println!(
            "\ncold data-dir copy, {:.1} MB (db + WAL segments, preallocated), 3 runs each, \
             {:.0} MB/s for cp",
            data_bytes as f64 / 1e6,
            data_bytes as f64 / 1e6 / base.as_secs_f64()
        );
        println!("| case | runs | median | min | max | vs cp |\n|---|---|---|---|---|---|");
        row("cp -a + sync -f", &cp, None);
        row("copy_data_dir (hash, fsync per file)", &copy, Some(base));
    }
}
