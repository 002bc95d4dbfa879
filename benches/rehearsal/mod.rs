//! The dress rehearsal's cost at 16 MB and 256 MB: a real 3.5.30 rehearsed on a copy of a
//! 3.5.16 member's data (snapshot, restore with 3.5.16's etcdutl, start, checks, clean-up).
//! It runs before a member queues, so it never lengthens the swap window.

use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};
use etcd_supervisor::process::reaper::Reaper;
use etcd_supervisor::rehearsal::{
    choose_restore_tool, rehearse, Outcome, PinnedTools, RehearsalMode, Request, DEFAULT_MAX_DB,
};

use crate::support::{Cluster, Release};

/// Rehearsals per size.
const RUNS: usize = 3;

pub fn bench_rehearsal() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // One reaper for the whole run, as in the supervisor: two would steal each other's
    // children's exit statuses.
    let reaper = rt.block_on(async { Reaper::start() }).expect("reaper");
    println!("| db | runs | median | min | max | hash compared |");
    println!("|---|---|---|---|---|---|");
    for mb in [16u64, 256] {
        // Never stopped by hand: the reaper below may collect the member's status.
        let cluster = Cluster::start(Release::V3_5, 1);
        let url = cluster.client_urls()[0].clone();
        let client = Client::new(ClientConfig {
            request_timeout: Duration::from_secs(60),
            ..ClientConfig::new(vec![url.clone()])
        })
        .expect("client");
        let value = vec![b'x'; 1024];
        let (samples, compared) = rt.block_on(async {
            // 100 × 1 KiB per transaction; the db grows ~1.4× faster than the payload.
            for t in 0..(mb * 7) {
                let ops: Vec<TxnOp> = (0..100)
                    .map(|i| TxnOp::Put(PutRequest::new(format!("k/{t}/{i}"), value.clone())))
                    .collect();
                client.txn(&Txn::new().and_then(ops)).await.expect("txn");
            }
            let member = &cluster.members[0];
            let running: etcd_supervisor::versions::Version =
                Release::V3_5.version().parse().expect("version");
            let target: etcd_supervisor::versions::Version =
                Release::V3_5Newest.version().parse().expect("version");
            let req = Request {
                member: member.spec.name.clone(),
                restore_tool: choose_restore_tool(
                    &PinnedTools::in_dir(running.clone(), &Release::V3_5.dir()),
                    &PinnedTools::in_dir(target.clone(), &Release::V3_5Newest.dir()),
                ),
                running,
                running_binary: Release::V3_5.etcd(),
                target,
                target_binary: Release::V3_5Newest.etcd(),
                mode: RehearsalMode::Auto,
                etcd_args: member.spec.etcd_flags(),
                config_file: None,
                scratch_parent: cluster.dir().join("rehearsal"),
                snapshot: None,
                ready_timeout: Duration::from_secs(120),
                max_db: DEFAULT_MAX_DB,
                endpoint: url.clone(),
                credentials: None,
            };
            let mut samples = Vec::new();
            let mut compared = true;
            for _ in 0..RUNS {
                let t0 = Instant::now();
                let report = rehearse(&req, &client, &reaper, std::future::pending()).await;
                samples.push(t0.elapsed());
                match report.outcome {
                    Outcome::Passed { hash_compared, .. } => compared &= hash_compared,
                    other => panic!("rehearsal did not pass: {other:?}\n{}", report.log_tail),
                }
            }
            (samples, compared)
        });
        let db = rt.block_on(client.local_status()).expect("status").db_size as f64 / 1e6;
        let mut sorted = samples.clone();
        sorted.sort();
        let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        println!(
            "| {db:.0} MB | {RUNS} | {} | {} | {} | {compared} |",
            s(sorted[RUNS / 2]),
            s(sorted[0]),
            s(sorted[RUNS - 1])
        );
    }
}
