//! The dress rehearsal against real etcd: `rehearse` driven directly against bare members
//! started by the fixtures, with the real restore tools and target binaries (and a fake
//! target that dies when served).
//!
//! These tests start a [`Reaper`], which reaps every child of the test process: they rely
//! on nextest's one process per test, and never `stop()` a fixture member (the reaper may
//! have collected its status; dropping the cluster kills it regardless).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};
use etcd_supervisor::process::reaper::Reaper;
use etcd_supervisor::rehearsal::{
    choose_restore_tool, rehearse, Outcome, PinnedTools, RehearsalMode, Report, Request, ToolKind,
    DEFAULT_MAX_DB,
};
use etcd_supervisor::versions::Version;

use crate::support::{http_get, http_post, write_script, Cluster, Release};

/// Bound on a whole rehearsal in these tests.
const REHEARSAL_BOUND: Duration = Duration::from_secs(180);

fn client(url: &str) -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::new(vec![url.to_owned()])
    })
    .expect("client")
}

fn version_of(release: Release) -> Version {
    release.version().parse().expect("release version")
}

/// A request to rehearse `target` (binary `target_binary`) on member 0 of `cluster`.
fn request(cluster: &Cluster, target_release: Release, target_binary: PathBuf) -> Request {
    let member = &cluster.members[0];
    let running = version_of(member.release);
    let target = version_of(target_release);
    let tool = choose_restore_tool(
        &PinnedTools::in_dir(running.clone(), &member.release.dir()),
        &PinnedTools::in_dir(target.clone(), &target_release.dir()),
    );
    Request {
        member: member.spec.name.clone(),
        running,
        running_binary: member.release.etcd(),
        target,
        target_binary,
        restore_tool: tool,
        mode: RehearsalMode::Auto,
        etcd_args: member.spec.etcd_flags(),
        config_file: None,
        scratch_parent: cluster.dir().join("state/rehearsal"),
        snapshot: None,
        ready_timeout: Duration::from_secs(30),
        max_db: DEFAULT_MAX_DB,
        endpoint: member.client_url(),
        credentials: None,
    }
}

/// Writes `n` keys of `size` bytes, 100 per transaction.
async fn write_keys(client: &Client, n: usize, size: usize) {
    let value = vec![b'v'; size];
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| TxnOp::Put(PutRequest::new(format!("k/{i:06}"), value.clone())));
        client.txn(&Txn::new().and_then(ops)).await.expect("txn");
    }
}

/// Compacts at `revision` (physically) through the gateway.
fn compact(url: &str, revision: i64) {
    let (status, body) = http_post(
        &format!("{url}/v3/kv/compaction"),
        &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        Duration::from_secs(10),
    )
    .expect("compaction call");
    assert_eq!(status, 200, "compaction: {body}");
}

/// Writes a few hundred keys, compacts once, writes a few more; returns the compaction
/// revision.
async fn fill_and_compact(client: &Client, url: &str) -> i64 {
    write_keys(client, 300, 100).await;
    for i in 0..30 {
        client
            .put(format!("k/{i:06}"), "again", None)
            .await
            .expect("put");
    }
    let rev = client.status().await.expect("status").header.revision;
    compact(url, rev - 10);
    for i in 0..5 {
        client
            .put(format!("after/{i}"), "x", None)
            .await
            .expect("put");
    }
    rev - 10
}

async fn run(req: &Request, client: &Client) -> Report {
    let reaper = Reaper::start().expect("reaper");
    let report = tokio::time::timeout(
        REHEARSAL_BOUND,
        rehearse(req, client, &reaper, std::future::pending()),
    )
    .await
    .expect("rehearsal finished in time");
    eprintln!(
        "rehearsal of {} on {}: {} in {:?}: {:?}",
        report.version,
        req.running,
        report.outcome.label(),
        report.duration,
        report.outcome
    );
    report
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) && !crate::support::process_gone(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Nothing of a rehearsal is left: no entry in the scratch parent, no process.
fn assert_nothing_left(scratch_parent: &Path) {
    let entries: Vec<_> = std::fs::read_dir(scratch_parent)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "left in the scratch dir: {entries:?}");
    let procs = processes_mentioning(scratch_parent);
    assert!(procs.is_empty(), "rehearsal processes left: {procs:?}");
}

fn db_size(status_db: i64) -> String {
    format!("{:.1} MiB", status_db as f64 / (1 << 20) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_3_5_30_passes_on_a_3_5_16_member_with_compacted_data_and_leaves_nothing() {
    let cluster = Cluster::start(Release::V3_5, 3);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    let compacted = fill_and_compact(&live, &url).await;
    let req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    assert_eq!(
        req.restore_tool
            .as_ref()
            .map(|t| (t.kind, t.version.to_string())),
        Some((ToolKind::Etcdutl, "3.5.16".to_owned())),
        "the running version's etcdutl restores"
    );
    let db = live.status_of(&url).await.expect("status").db_size;
    let report = run(&req, &live).await;
    eprintln!(
        "BENCH rehearsal db={} duration={:?}",
        db_size(db),
        report.duration
    );
    match &report.outcome {
        Outcome::Passed {
            hash_compared,
            hash_note,
            read_note,
            ..
        } => {
            assert!(*hash_compared, "{hash_note}");
            assert!(
                hash_note.contains(&format!("compacted at {compacted}")),
                "{hash_note}"
            );
            // The first key in order: the limit=1 range picks it.
            assert!(read_note.contains("after/0"), "{read_note}");
        }
        other => panic!("{other:?}\n{}", report.log_tail),
    }
    assert!(!report.log_tail.is_empty());
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_4_23_member_rehearses_3_5_30_restored_by_3_4_etcdctl() {
    let cluster = Cluster::start(Release::V3_4, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    fill_and_compact(&live, &url).await;
    let req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    assert_eq!(
        req.restore_tool
            .as_ref()
            .map(|t| (t.kind, t.version.to_string())),
        Some((ToolKind::Etcdctl34, "3.4.23".to_owned()))
    );
    let report = run(&req, &live).await;
    match &report.outcome {
        // 3.4.23 serves HashKV over gRPC (not on its gateway): the hashes are compared.
        Outcome::Passed {
            hash_compared,
            hash_note,
            ..
        } => {
            assert!(hash_compared, "{hash_note}");
            assert!(hash_note.contains("from both versions"), "{hash_note}");
        }
        other => panic!("{other:?}\n{}", report.log_tail),
    }
    assert_nothing_left(&req.scratch_parent);
}

/// HashKV calls a member has answered, by etcd's own gRPC counters on `/metrics`.
fn hash_kv_calls(url: &str) -> u64 {
    let (code, text) = http_get(&format!("{url}/metrics"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no /metrics from {url}"));
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{") && l.contains(r#"grpc_method="HashKV""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The reference hash is the running version's, on the copy: the live member answers no
/// HashKV (under a writer, a HashKV at a GB holds its commits for seconds), judged by the
/// live member's own counters; the hashes are still compared. The counter is seen moving
/// when the test asks for a HashKV itself, so an unchanged count is not a dead metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_member_answers_no_hashkv_for_the_rehearsal() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 200, 100).await;
    let before = hash_kv_calls(&url);
    let req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    let report = run(&req, &live).await;
    match &report.outcome {
        Outcome::Passed {
            hash_compared,
            hash_note,
            ..
        } => assert!(hash_compared, "{hash_note}"),
        other => panic!("{other:?}\n{}", report.log_tail),
    }
    assert_eq!(
        hash_kv_calls(&url),
        before,
        "the rehearsal asked the live member for HashKV"
    );
    live.hash_kv_of(&url, 0).await.expect("HashKV");
    assert_eq!(
        hash_kv_calls(&url),
        before + 1,
        "the counter does not count"
    );
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_exits_when_served_is_the_versions_fault_with_its_log() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 50, 10).await;
    let fake = cluster.dir().join("fake-etcd");
    write_script(
        &fake,
        "#!/bin/sh\n\
         if [ \"$1\" = --version ]; then\n\
         printf 'etcd Version: 3.5.30\\nGit SHA: 0000000\\nGo Version: go1.23.12\\nGo OS/Arch: linux/amd64\\n'\n\
         exit 0\nfi\n\
         echo 'panic: fake etcd cannot open this data' >&2\n\
         exit 1\n",
    );
    let out = std::process::Command::new(&fake)
        .arg("--version")
        .output()
        .expect("fake --version");
    let probed = Version::from_etcd_version_output(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(probed, Some(Version::new(3, 5, 30)));
    let req = request(&cluster, Release::V3_5Newest, fake);
    let report = run(&req, &live).await;
    match &report.outcome {
        Outcome::VersionFault(reason) => {
            assert!(reason.contains("exit code 1"), "{reason}");
            assert!(
                reason.contains("panic: fake etcd cannot open this data"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(report.log_tail.contains("panic: fake etcd"));
    assert_nothing_left(&req.scratch_parent);
}

/// 3.7 removed the `--experimental-*` flags 3.6 still takes: the running 3.6.17 serves the
/// copy with it (the reference hash), 3.7.4 refuses its command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_the_target_removed_is_the_members_fault_naming_it() {
    let cluster = Cluster::start(Release::V3_6, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 50, 10).await;
    let mut req = request(&cluster, Release::V3_7, Release::V3_7.etcd());
    req.etcd_args
        .push("--experimental-initial-corrupt-check=true".to_owned());
    let report = run(&req, &live).await;
    match &report.outcome {
        Outcome::MemberFault(reason) => {
            assert!(
                reason.contains("--experimental-initial-corrupt-check"),
                "{reason}"
            );
            assert!(reason.contains("flag"), "{reason}");
        }
        other => panic!("{other:?}\n{}", report.log_tail),
    }
    assert_nothing_left(&req.scratch_parent);
}

/// The reference hash comes from the running version on the copy: when that version
/// cannot serve it (here a flag neither 3.5.16 nor 3.5.30 knows), the target never ran and
/// is not blamed: the rehearsal is skipped, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_the_running_version_cannot_serve_is_skipped_not_blamed_on_the_target() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 50, 10).await;
    let mut req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    req.etcd_args.push("--debug".to_owned());
    let report = run(&req, &live).await;
    match &report.outcome {
        Outcome::Skipped(reason) => {
            assert!(
                reason.contains("the running version 3.5.16 did not serve the restored copy"),
                "{reason}"
            );
            assert!(reason.contains("flag --debug is not defined"), "{reason}");
        }
        other => panic!("{other:?}\n{}", report.log_tail),
    }
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_the_target_starts_stops_it_and_removes_the_dir() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 300, 100).await;
    let req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    let target = Release::V3_5Newest.etcd();
    let parent = req.scratch_parent.clone();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<(i32, Instant)>();
    // Resolves as soon as the target etcd runs in the scratch dir.
    let cancel = async move {
        loop {
            let started = processes_mentioning(&parent)
                .into_iter()
                .find(|(_, cmd)| cmd.contains(&*target.to_string_lossy()));
            if let Some((pid, _)) = started {
                let _ = seen_tx.send((pid, Instant::now()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let reaper = Reaper::start().expect("reaper");
    let report = tokio::time::timeout(REHEARSAL_BOUND, rehearse(&req, &live, &reaper, cancel))
        .await
        .expect("rehearsal finished in time");
    let returned = Instant::now();
    let (pid, cancelled_at) = seen_rx.await.expect("the target etcd was seen starting");
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.log_tail);
    let took = returned - cancelled_at;
    eprintln!("cancelled {took:?} after the target (pid {pid}) appeared");
    assert!(
        took < Duration::from_secs(5),
        "returned {took:?} after cancel"
    );
    assert!(crate::support::process_gone(pid), "pid {pid} still runs");
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_over_max_db_is_skipped_and_leaves_nothing() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    let mut req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    req.max_db = 4096;
    let report = run(&req, &live).await;
    match &report.outcome {
        Outcome::Skipped(reason) => assert!(reason.contains("--rehearsal-max-db"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsal_duration_on_a_larger_db() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    let t = Instant::now();
    // REHEARSAL_BENCH_KEYS measures other sizes (1 KiB values); 20,000 is about 26 MiB.
    let keys = std::env::var("REHEARSAL_BENCH_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    write_keys(&live, keys, 1024).await;
    let db = live.status_of(&url).await.expect("status").db_size;
    eprintln!("wrote {} in {:?}", db_size(db), t.elapsed());
    let req = request(&cluster, Release::V3_5Newest, Release::V3_5Newest.etcd());
    let report = run(&req, &live).await;
    eprintln!(
        "BENCH rehearsal db={} duration={:?}",
        db_size(db),
        report.duration
    );
    assert!(
        matches!(
            report.outcome,
            Outcome::Passed {
                hash_compared: true,
                ..
            }
        ),
        "{:?}\n{}",
        report.outcome,
        report.log_tail
    );
    assert_nothing_left(&req.scratch_parent);
}

/// A fake target that ignores SIGTERM, writes its pid to `pid_file` and sleeps (the pid
/// stays the same across the exec; the ignored SIGTERM too).
fn stubborn_target(dir: &Path, pid_file: &Path) -> PathBuf {
    let script = dir.join("stubborn-etcd");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\ntrap '' TERM\necho $$ > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexec sleep 300\n",
            pid_file.display()
        ),
    );
    script
}

/// Waits for the pid the stubborn target wrote.
async fn pid_from(pid_file: &Path) -> i32 {
    loop {
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_target_that_ignores_sigterm_within_the_bound() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 50, 10).await;
    let pid_file = cluster.dir().join("stubborn.pid");
    let target = stubborn_target(cluster.dir(), &pid_file);
    let req = request(&cluster, Release::V3_5Newest, target);
    let seen = std::sync::Mutex::new(None);
    let cancel = async {
        let pid = pid_from(&pid_file).await;
        *seen.lock().unwrap() = Some((pid, Instant::now()));
    };
    let reaper = Reaper::start().expect("reaper");
    let report = tokio::time::timeout(REHEARSAL_BOUND, rehearse(&req, &live, &reaper, cancel))
        .await
        .expect("rehearsal finished in time");
    let returned = Instant::now();
    let (pid, cancelled_at) = seen.lock().unwrap().expect("the target was seen");
    assert_eq!(report.outcome, Outcome::Cancelled);
    let took = returned - cancelled_at;
    eprintln!("a target ignoring SIGTERM was gone {took:?} after the cancel");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}: SIGKILL after the grace, not before, not much later"
    );
    assert!(crate::support::process_gone(pid), "pid {pid} still runs");
    assert_nothing_left(&req.scratch_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_rehearsal_kills_the_target_and_removes_the_dir() {
    let cluster = Cluster::start(Release::V3_5, 1);
    let url = cluster.members[0].client_url();
    let live = client(&url);
    write_keys(&live, 50, 10).await;
    let pid_file = cluster.dir().join("stubborn.pid");
    let target = stubborn_target(cluster.dir(), &pid_file);
    let req = request(&cluster, Release::V3_5Newest, target);
    let reaper = Reaper::start().expect("reaper");
    let pid = tokio::select! {
        report = rehearse(&req, &live, &reaper, std::future::pending()) => panic!("{report:?}"),
        pid = pid_from(&pid_file) => pid,
    };
    // The future is dropped: the guard removed the dir and SIGKILLed the process.
    crate::support::wait_for(Duration::from_secs(10), || {
        crate::support::process_gone(pid).then_some(())
    })
    .unwrap_or_else(|e| panic!("pid {pid} still runs: {e}"));
    assert_nothing_left(&req.scratch_parent);
}
