//! The dress rehearsal: before any member stops, the target etcd version opens a private
//! copy of this member's data, so a binary that cannot serve it (crashes on start, cannot
//! open the data, panics on this cluster's state) is rejected without costing a member a
//! stop, a failed start and a rollback.
//!
//! Steps of [`rehearse`]: check the restore tool, the db size (`--rehearsal-max-db`) and
//! the free space for a second copy; pick a key (a limit=1 range on the live member: its
//! header revision R is the comparison revision); stream a verified snapshot from the live
//! member; restore it with the pinned tool as a single-member cluster `rehearsal` on free
//! loopback ports; start the RUNNING binary on it first, with the member's own flags minus
//! those that name the member, its data, the cluster or the network (see `args`), for the
//! reference HashKV at R, and stop it; then start the TARGET binary on the same copy: it
//! must be healthy within the ready timeout, report the target on `/version`, read the
//! picked key at R exactly as the live member had it, and compute the reference HashKV at R.
//!
//! Why the reference comes from the copy and not from the live member: etcd computes
//! HashKV holding its backend's read transaction for the whole hash, which blocks its
//! commits; under a writer a 1 GB member answered in 1.8 s to 18 s and stalled its writes
//! as long (measured on 3.5.30 and in `scripts/bench big`, where all three members, each
//! rehearsing, went unhealthy at once). On the copy it costs one more start and stalls
//! nothing. That the copy is the live data is proven by the backup's own checks (its
//! SHA256SUMS and etcd's snapshot trailer), the key read back at R, and after the rollout
//! by every member's HashKV ([`crate::upgrade::turn::consistency`]).
//! With [`Request::snapshot`] (the turn's backup, written just before by the vetter, which
//! verifies it while this restores it and discards the verdict if that fails) that file is
//! restored instead of a streamed one, R is the revision read before it, the
//! key is picked at R, and the file stays (it is the turn's backup; only the restored copy
//! needs room here).
//! Whatever happens (a crash, a timeout, an error, `cancel`), the private etcd is stopped
//! (SIGTERM, SIGKILL after a bound) and the dir removed; a dropped future SIGKILLs it.
//!
//! Why revision R, read *before* the snapshot: the snapshot's own revision S is ≥ R, and
//! the restored member may add revisions of its own (leases expiring), so R is the newest
//! revision both sides are known to share.
//!
//! Finding on restore, compaction and HashKV (tested on the real binaries: 50 puts,
//! compact at rev 41, 5 more puts, snapshot at rev 56): `snapshot restore` KEEPS the
//! compaction state. 3.4.23's `etcdctl snapshot restore` logs "restored last compact
//! revision ... finishedCompactRev 41"; a 3.5.30 etcd on the restored dir (restored by 3.4
//! etcdctl or 3.5.30 etcdutl) answers HashKV `compact_revision` 41 and the same hash
//! (2372643425) as the 3.5.16 / 3.4.23 source, and refuses reads below 41 as compacted.
//! HashKV only covers revisions after the compaction revision, so hashes are compared only
//! when both sides report the same `compact_revision` (a compaction on the live member
//! after the snapshot makes them incomparable: reported as not compared). HashKV is asked
//! over gRPC, which every supported release serves (3.4.23's and 3.5.1's gateways had no
//! route for it); when it cannot be asked, the hash is not compared and the report says
//! why; it never pretends.
//!
//! Flags: the member's own are kept (quotas, snapshot-count, logger, feature gates,
//! experimental flags, TLS files: those are what may break; etcd ignores TLS files on the
//! copy's http loopback URLs but still loads the peer ones, so they must be readable).
//! Replaced: name, data-dir, wal-dir, every listen-*/advertise-* URL, initial-cluster*,
//! initial-advertise-peer-urls, discovery*, force-new-cluster, and log-outputs (the copy
//! logs to a file in the scratch dir, read back for the tail). The matching `ETCD_*`
//! variables are removed from its environment, as is `NOTIFY_SOCKET`. A member configured
//! by `--config-file` (with which etcd ignores every flag) is rehearsed with a rewritten
//! copy of its YAML in the scratch dir: the same keys, with the same ones replaced
//! ([`rehearsal_config`]).
//!
//! Whose fault a failure is: see `outcome` ([`classify`] is pure and unit-tested).

mod args;
mod outcome;
mod scratch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::etcd::maintenance::HashKv;
use crate::etcd::{
    Client, ClientConfig, Credentials, EtcdError, KeyValue, RangeRequest, RangeResponse,
};
use crate::process::child::{EtcdProcess, SpawnOptions};
use crate::process::reaper::{ChildExit, Reaper};
use crate::versions::store::VersionStore;
use crate::versions::Version;

pub use args::{
    choose_restore_tool, rehearsal_args, rehearsal_config, restore_command, strip_member_flags,
    PinnedTools, RestoreTool, ToolKind, REHEARSAL_NAME,
};
pub use outcome::{classify, usage_error, Finding, Outcome, RehearsalMode};
use scratch::{tail, Scratch};

/// Default of `--rehearsal-max-db`: 2 GiB, the largest size at which `scripts/bench big`
/// measured a 3-member rollout with its rehearsal faster than by hand in every run on a
/// 2-core host (2 GB: 0.84×; 4 GB: 0.96-1.05× in five runs, 0.97-1.02× since queued members
/// read their db back into memory, where the three members' vetting shares one disk); its
/// disk cost is a restored copy (db size + 64 MiB WAL), the snapshot being the turn's backup
/// either way.
pub const DEFAULT_MAX_DB: u64 = 2 << 30;

/// Lines of the rehearsal etcd's output kept in a report.
pub const LOG_TAIL_LINES: usize = 20;

/// Lines of output searched for the cause of a failure (a usage text is ~150 lines).
const CLASSIFIED_LINES: usize = 400;

/// Room for the restored member's WAL (etcd preallocates 64 MiB segments) and some slack.
const SPACE_MARGIN: u64 = 128 << 20;

/// How long the private etcd gets to stop after SIGTERM (3.5 takes about 1 s).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The same when the supervisor itself is stopping: the copy is disposable.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Polling interval while waiting for the private etcd to become healthy.
const POLL: Duration = Duration::from_millis(100);

const SNAPSHOT_FILE: &str = "snapshot.db";
const RESTORE_LOG: &str = "restore.log";
const ETCD_LOG: &str = "etcd.log";
/// The running version's output while it computes the reference hash.
const REFERENCE_LOG: &str = "reference.log";
const DATA_DIR: &str = "data";
const CONFIG_FILE: &str = "etcd.conf.yml";

/// What to rehearse, and with what.
#[derive(Debug, Clone)]
pub struct Request {
    /// This member's name (for logs).
    pub member: String,
    /// The version this member runs.
    pub running: Version,
    /// The running version's etcd binary (the reference HashKV on the copy).
    pub running_binary: PathBuf,
    /// The version to rehearse.
    pub target: Version,
    /// The target's etcd binary.
    pub target_binary: PathBuf,
    /// The restore tool ([`choose_restore_tool`]); `None` when none is pinned.
    pub restore_tool: Option<RestoreTool>,
    /// `--rehearsal`.
    pub mode: RehearsalMode,
    /// This member's etcd arguments, as passed to etcd.
    pub etcd_args: Vec<String>,
    /// etcd's `--config-file` when the member reads one: its rewritten copy configures
    /// the rehearsal (etcd ignores flags then).
    pub config_file: Option<PathBuf>,
    /// Parent of the private dir (`<state-dir>/rehearsal`); leftovers in it are removed.
    pub scratch_parent: PathBuf,
    /// A snapshot of the live member already taken (the turn's backup, verified beside): restored
    /// in place of one streamed into the scratch dir, and left where it is.
    pub snapshot: Option<GivenSnapshot>,
    /// How long the target gets to become healthy.
    pub ready_timeout: Duration,
    /// `--rehearsal-max-db`: larger databases are not rehearsed.
    pub max_db: u64,
    /// The local member's client endpoint (status, snapshot, HashKV go there only).
    pub endpoint: String,
    /// Credentials when etcd's auth is on (the copy has the same users).
    pub credentials: Option<Credentials>,
}

impl Request {
    /// The restore tool from the versions store: the running version's, else the target's.
    pub fn restore_tool_from_store(
        store: &VersionStore,
        running: &Version,
        target: &Version,
    ) -> Option<RestoreTool> {
        choose_restore_tool(
            &PinnedTools::in_dir(running.clone(), &store.dir_of(running)),
            &PinnedTools::in_dir(target.clone(), &store.dir_of(target)),
        )
    }
}

/// A snapshot of the live member, taken before the rehearsal and verified beside it by its
/// giver (whose verdict stands only if that verification passes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenSnapshot {
    /// The snapshot file (read only: the restore writes its own data dir).
    pub path: PathBuf,
    /// The member's revision read before the snapshot began: the comparison revision.
    pub revision: i64,
}

/// What a rehearsal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The member rehearsed on.
    pub member: String,
    /// The target version.
    pub version: Version,
    /// The outcome, by whose fault.
    pub outcome: Outcome,
    /// From start to everything cleaned up.
    pub duration: Duration,
    /// The last lines of the private etcd's output (or the restore tool's).
    pub log_tail: String,
}

/// What passed, before it becomes [`Outcome::Passed`].
struct Passed {
    hash_compared: bool,
    hash_note: String,
    read_note: String,
    revision: i64,
}

/// Rehearses `req.target` on a copy of the local member's data. Never fails: every
/// problem is an [`Outcome`]. When `cancel` resolves, everything is stopped and removed
/// and [`Outcome::Cancelled`] returned.
pub async fn rehearse(
    req: &Request,
    client: &Client,
    reaper: &Reaper,
    cancel: impl std::future::Future<Output = ()>,
) -> Report {
    let started = Instant::now();
    tracing::info!(member = %req.member, running = %req.running, target = %req.target, mode = %req.mode, "rehearsal starting");
    let (result, log) = match req.mode {
        RehearsalMode::Never => (Err(Finding::Disabled), String::new()),
        RehearsalMode::Auto | RehearsalMode::Always => run(req, client, reaper, cancel).await,
    };
    let outcome = match result {
        Ok(p) => Outcome::Passed {
            hash_compared: p.hash_compared,
            hash_note: p.hash_note,
            read_note: p.read_note,
            revision: p.revision,
        },
        Err(finding) => classify(&finding, &req.target, req.mode, &log),
    };
    let lines: Vec<&str> = log.lines().collect();
    let log_tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    let duration = started.elapsed();
    match &outcome {
        Outcome::Passed { hash_compared, .. } => {
            tracing::info!(member = %req.member, target = %req.target, ?duration, hash_compared, "rehearsal passed")
        }
        Outcome::Cancelled => {
            tracing::info!(member = %req.member, target = %req.target, ?duration, "rehearsal cancelled")
        }
        other => {
            tracing::warn!(member = %req.member, target = %req.target, ?duration, outcome = other.label(), reason = ?other, "rehearsal did not pass")
        }
    }
    Report {
        member: req.member.clone(),
        version: req.target.clone(),
        outcome,
        duration,
        log_tail,
    }
}

/// Runs the steps in a fresh scratch dir and always cleans it up; returns the result and
/// the log tail read before the private etcd was stopped.
async fn run(
    req: &Request,
    client: &Client,
    reaper: &Reaper,
    cancel: impl std::future::Future<Output = ()>,
) -> (Result<Passed, Finding>, String) {
    let mut scratch = match Scratch::create(&req.scratch_parent) {
        Ok(s) => s,
        Err(e) => {
            let why = format!(
                "cannot create a rehearsal dir in {}: {e}",
                req.scratch_parent.display()
            );
            return (Err(Finding::Local(why)), String::new());
        }
    };
    let result = {
        let work = steps(req, client, reaper, &mut scratch);
        tokio::pin!(work);
        tokio::pin!(cancel);
        tokio::select! {
            biased;
            () = &mut cancel => Err(Finding::Cancelled),
            r = &mut work => r,
        }
    };
    let etcd_log = scratch.dir().join(ETCD_LOG);
    let log = if etcd_log.exists() {
        etcd_log
    } else {
        scratch.dir().join(RESTORE_LOG)
    };
    // Read before the stop; all of it goes to the classification.
    let log_tail = tail(&log, CLASSIFIED_LINES);
    let grace = if matches!(result, Err(Finding::Cancelled)) {
        CANCEL_GRACE
    } else {
        STOP_GRACE
    };
    let t = Instant::now();
    scratch.shutdown(grace).await;
    tracing::info!(member = %req.member, took = ?t.elapsed(), "rehearsal etcd stopped and its copy removed");
    (result, log_tail)
}

async fn steps(
    req: &Request,
    client: &Client,
    reaper: &Reaper,
    scratch: &mut Scratch,
) -> Result<Passed, Finding> {
    let tool = req
        .restore_tool
        .clone()
        .ok_or_else(|| Finding::NoRestoreTool {
            looked_in: vec![req.running.clone(), req.target.clone()],
        })?;
    // With a config file etcd reads nothing else: its copy is rewritten instead.
    let kept = match &req.config_file {
        Some(_) => None,
        None => {
            let (kept, dropped) =
                strip_member_flags(&req.etcd_args).map_err(Finding::UnsupportedFlags)?;
            tracing::debug!(member = %req.member, ?dropped, "member flags replaced by the rehearsal's own");
            Some(kept)
        }
    };
    let live = |e: EtcdError| Finding::LiveMember(e.to_string());

    let status = client.status_of(&req.endpoint).await.map_err(live)?;
    let db_size = u64::try_from(status.db_size).unwrap_or(0);
    if db_size > req.max_db {
        return Err(Finding::DbOverMax {
            db_size,
            max_db: req.max_db,
        });
    }
    // A given snapshot is already on disk: only the restored copy needs room.
    let copies = if req.snapshot.is_some() { 1 } else { 2 };
    let needed = db_size.saturating_mul(copies).saturating_add(SPACE_MARGIN);
    let free = free_bytes(scratch.dir())
        .map_err(|e| Finding::Local(format!("cannot stat {}: {e}", scratch.dir().display())))?;
    if free < needed {
        return Err(Finding::NotEnoughSpace {
            needed,
            free,
            dir: req.scratch_parent.display().to_string(),
        });
    }

    // The key and the revision to compare at, read before the snapshot (see the header);
    // with a given snapshot, its own revision read before it, and the key as of then.
    let pick = RangeRequest::prefix(Vec::new()).limit(1);
    let pick = match &req.snapshot {
        Some(given) => pick.revision(given.revision),
        None => pick,
    };
    let picked: Result<RangeResponse, EtcdError> = client.range_of(&req.endpoint, &pick).await;
    let (revision, key) = match (picked, &req.snapshot) {
        (Ok(p), None) => (p.header.revision, p.kvs.into_iter().next()),
        (Ok(p), Some(given)) => (given.revision, p.kvs.into_iter().next()),
        // Compacted since the given snapshot: no key to read back; the read and HashKV
        // checks below say what they could compare.
        (Err(e), Some(given)) if e.is_compacted() => (given.revision, None),
        (Err(e), _) => return Err(live(e)),
    };

    let scratch_snapshot = scratch.dir().join(SNAPSHOT_FILE);
    let snapshot = match &req.snapshot {
        Some(given) => given.path.clone(),
        None => {
            let t = Instant::now();
            let info = client
                .snapshot_from(&req.endpoint, &scratch_snapshot, transfer_timeout(db_size))
                .await
                .map_err(|e| match &e {
                    EtcdError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                        Finding::Local(format!("no space left for the snapshot: {e}"))
                    }
                    _ => Finding::LiveMember(e.to_string()),
                })?;
            tracing::info!(member = %req.member, size = info.size, took = ?t.elapsed(), "rehearsal snapshot taken");
            scratch_snapshot.clone()
        }
    };

    let (client_port, peer_port) = free_ports()
        .map_err(|e| Finding::Local(format!("cannot find free loopback ports: {e}")))?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = scratch.dir().join(DATA_DIR);
    let verified = req.snapshot.is_some();
    restore(
        scratch, reaper, &tool, &snapshot, &data_dir, &peer_url, db_size, verified,
    )
    .await?;
    // The restored copy is all that is needed now; the snapshot's space goes back (a given
    // one is the turn's backup: it stays, out of memory: with the copy and the live db it
    // would push etcd's data out of the page cache, and the member's restart at its turn
    // would read its whole db from the disk).
    match &req.snapshot {
        None => {
            let _ = std::fs::remove_file(&scratch_snapshot);
        }
        Some(given) => {
            if let Ok(file) = std::fs::File::open(&given.path) {
                crate::durable::drop_cache(&file);
            }
        }
    }

    let log = open_log(&scratch.dir().join(ETCD_LOG))?;
    let args = match (&req.config_file, kept) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Finding::Local(format!(
                    "cannot read etcd's config file {}: {e}",
                    file.display()
                ))
            })?;
            let yaml = rehearsal_config(&text, &data_dir, &client_url, &peer_url)
                .map_err(Finding::UnsupportedFlags)?;
            let copy = scratch.dir().join(CONFIG_FILE);
            std::fs::write(&copy, yaml)
                .map_err(|e| Finding::Local(format!("cannot write {}: {e}", copy.display())))?;
            vec![format!("--config-file={}", copy.display())]
        }
        (None, kept) => {
            rehearsal_args(&kept.unwrap_or_default(), &data_dir, &client_url, &peer_url)
        }
    };
    let on = OnCopy {
        args: &args,
        url: &client_url,
        db_size,
    };
    let reference = reference_hash(req, reaper, scratch, &on, revision).await?;

    let copy = start_copy(req, reaper, scratch, &req.target_binary, &on, log).await?;
    tracing::info!(member = %req.member, target = %req.target, took = ?copy.took, "rehearsal etcd healthy");
    let copy = copy.client;

    let version = copy
        .version_of(&client_url)
        .await
        .map_err(|e| Finding::NotServing(format!("GET /version failed: {e}")))?;
    if version.server.parse::<Version>().ok().as_ref() != Some(&req.target) {
        return Err(Finding::WrongVersion {
            reported: version.server,
        });
    }

    let t = Instant::now();
    let read_note = check_read(&copy, &client_url, key.as_ref(), revision).await?;
    let (hash_compared, hash_note) = match copy.hash_kv_of(&client_url, revision).await {
        Ok(ours) => hash_verdict(&reference, &ours, revision)?,
        Err(e) => (
            false,
            format!(
                "not compared: the rehearsal gave no HashKV at revision {revision}: {}",
                cannot(&e)
            ),
        ),
    };
    tracing::info!(member = %req.member, target = %req.target, took = ?t.elapsed(), revision, hash_compared, "rehearsal compared with the running version's reference");
    Ok(Passed {
        hash_compared,
        hash_note,
        read_note,
        revision,
    })
}

/// How a private etcd is started on the copy: its arguments, its client URL, and the size
/// of the db it serves (its calls' bound grows with it).
struct OnCopy<'a> {
    args: &'a [String],
    url: &'a str,
    db_size: u64,
}

/// A private etcd serving the copy, and how long it took to become healthy.
struct Serving {
    client: Client,
    took: Duration,
}

/// Starts `binary` on the copy with `args`, its output to `log`, and waits until it is
/// healthy (the ready timeout); it stays in `scratch`, which stops it.
async fn start_copy(
    req: &Request,
    reaper: &Reaper,
    scratch: &mut Scratch,
    binary: &Path,
    on: &OnCopy<'_>,
    log: std::fs::File,
) -> Result<Serving, Finding> {
    let (args, client_url) = (on.args, on.url);
    let options = SpawnOptions {
        output: Some(log),
        env_remove: args::replaced_env_vars(),
        env: Vec::new(),
        stderr_tail: None,
    };
    let child = EtcdProcess::spawn_with(reaper, binary, args, options)
        .map_err(|e| Finding::Spawn(e.to_string()))?;
    tracing::info!(member = %req.member, binary = %binary.display(), pid = child.pid(), endpoint = %client_url, "rehearsal etcd started");
    scratch.adopt(child);

    let mut config = ClientConfig::new(vec![client_url.to_owned()]);
    // HashKV reads the whole db: a second per GB alone, minutes at 4 GB on a loaded host
    // (a fixed 30 s skipped a 4 GB rehearsal); the health polls have their own deadline.
    config.request_timeout = transfer_timeout(on.db_size);
    config.connect_timeout = Duration::from_secs(1);
    config.credentials = req.credentials.clone();
    let client = Client::new(config).map_err(|e| Finding::Local(e.to_string()))?;
    let t = Instant::now();
    wait_healthy(scratch, &client, client_url, req.ready_timeout).await?;
    Ok(Serving {
        client,
        took: t.elapsed(),
    })
}

/// The running version's HashKV of the restored copy at `revision`, the reference the
/// target must reproduce; its etcd is stopped (SIGTERM, bounded) before the target opens
/// the same data. Its failures are the running version's, never the target's:
/// [`Finding::Reference`].
async fn reference_hash(
    req: &Request,
    reaper: &Reaper,
    scratch: &mut Scratch,
    on: &OnCopy<'_>,
    revision: i64,
) -> Result<HashKv, Finding> {
    let client_url = on.url;
    let t = Instant::now();
    let not_served = |why: String| {
        Finding::Reference(format!(
            "the running version {} did not serve the restored copy: {why}",
            req.running
        ))
    };
    let log = open_log(&scratch.dir().join(REFERENCE_LOG))?;
    let served = start_copy(req, reaper, scratch, &req.running_binary, on, log).await;
    let hashed = match served {
        Ok(s) => s
            .client
            .hash_kv_of(client_url, revision)
            .await
            .map_err(|e| not_served(format!("HashKV at revision {revision}: {}", cannot(&e)))),
        Err(Finding::Exited(exit)) => {
            let log = tail(&scratch.dir().join(REFERENCE_LOG), CLASSIFIED_LINES);
            let said = match usage_error(&log) {
                // Its usage text would bury the one line that matters.
                Some(usage) => format!("its command line was refused: {usage}"),
                None => {
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
                }
            };
            Err(not_served(format!("it exited ({exit}); {said}")))
        }
        Err(Finding::NeverHealthy(after)) => Err(not_served(format!(
            "not healthy within {}",
            humantime::format_duration(after)
        ))),
        Err(Finding::Spawn(why)) => Err(not_served(why)),
        Err(other) => Err(other),
    };
    scratch.stop_child(STOP_GRACE).await;
    let reference = hashed?;
    tracing::info!(member = %req.member, running = %req.running, took = ?t.elapsed(), revision, hash = reference.hash, "rehearsal reference HashKV taken with the running version on the copy");
    Ok(reference)
}

/// Restores `snapshot` into `data_dir` with `tool`, its output in the scratch dir.
#[allow(clippy::too_many_arguments)] // the steps' locals, passed once
async fn restore(
    scratch: &mut Scratch,
    reaper: &Reaper,
    tool: &RestoreTool,
    snapshot: &Path,
    data_dir: &Path,
    peer_url: &str,
    db_size: u64,
    verified: bool,
) -> Result<(), Finding> {
    let log_path = scratch.dir().join(RESTORE_LOG);
    let log = open_log(&log_path)?;
    let (args, env) = restore_command(tool, snapshot, data_dir, peer_url, verified);
    // The tools read flags from ETCDCTL_*/ETCDUTL_* too, and refuse a conflict.
    let env_remove = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("ETCDCTL_") || k.starts_with("ETCDUTL_"))
        .collect();
    let options = SpawnOptions {
        output: Some(log),
        env_remove,
        env,
        stderr_tail: None,
    };
    let t = Instant::now();
    let child = EtcdProcess::spawn_with(reaper, &tool.path, &args, options).map_err(|e| {
        Finding::Restore {
            exit: None,
            output: e.to_string(),
        }
    })?;
    scratch.adopt(child);
    let limit = transfer_timeout(db_size);
    let waited = match scratch.child() {
        Some(child) => tokio::time::timeout(limit, child.wait()).await,
        None => return Err(Finding::Local("the restore process vanished".to_owned())),
    };
    scratch.stop_child(STOP_GRACE).await;
    match waited {
        Ok(ChildExit::Code(0)) => {
            tracing::info!(tool = %tool.path.display(), took = ?t.elapsed(), "rehearsal snapshot restored");
            Ok(())
        }
        Ok(exit) => Err(Finding::Restore {
            exit: Some(exit),
            output: tail(&log_path, LOG_TAIL_LINES),
        }),
        Err(_) => Err(Finding::Restore {
            exit: None,
            output: format!(
                "it did not finish within {}; {}",
                humantime::format_duration(limit),
                tail(&log_path, LOG_TAIL_LINES)
            ),
        }),
    }
}

/// Waits until `/health` says true, the process exits, or `timeout` runs out.
async fn wait_healthy(
    scratch: &mut Scratch,
    copy: &Client,
    url: &str,
    timeout: Duration,
) -> Result<(), Finding> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(child) = scratch.child() else {
            return Err(Finding::Local("the rehearsal etcd vanished".to_owned()));
        };
        tokio::select! {
            exit = child.wait() => return Err(Finding::Exited(exit)),
            healthy = tokio::time::timeout_at(deadline, copy.health_of(url)) => {
                if matches!(healthy, Ok(Ok(true))) {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Finding::NeverHealthy(timeout));
        }
        // Exit wins over a sleep: a crash is reported as such, not as "never healthy".
        if let Some(child) = scratch.child() {
            tokio::select! {
                exit = child.wait() => return Err(Finding::Exited(exit)),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Reads the picked key at `revision` from the copy; it must be exactly what the live
/// member had.
async fn check_read(
    copy: &Client,
    url: &str,
    key: Option<&KeyValue>,
    revision: i64,
) -> Result<String, Finding> {
    let request = match key {
        Some(kv) => RangeRequest::key(kv.key.clone()).revision(revision),
        None => RangeRequest::prefix(Vec::new()).limit(1).revision(revision),
    };
    let read: Result<RangeResponse, EtcdError> = copy.range_of(url, &request).await;
    let read = match read {
        Ok(r) => r,
        // Compacted on the live member between the pick and the snapshot: not the
        // target's doing; the copy must still serve a read at its newest revision.
        Err(e) if e.is_compacted() => {
            let _: RangeResponse = copy
                .range_of(url, &RangeRequest::prefix(Vec::new()).limit(1))
                .await
                .map_err(|e| Finding::NotServing(format!("range read failed: {e}")))?;
            return Ok(format!(
                "revision {revision} was compacted before the snapshot; a read at the newest revision was served"
            ));
        }
        Err(e) => return Err(Finding::NotServing(format!("range read failed: {e}"))),
    };
    let Some(kv) = key else {
        return Ok(format!(
            "the keyspace was empty at revision {revision}: only checked that a range read is served"
        ));
    };
    let shown = String::from_utf8_lossy(&kv.key).into_owned();
    match read.kvs.first() {
        Some(got) if got == kv => Ok(format!("key {shown:?} read back at revision {revision}")),
        Some(got) => Err(Finding::NotServing(format!(
            "key {shown:?} at revision {revision} reads as mod_revision {} ({} bytes); the live member had mod_revision {} ({} bytes)",
            got.mod_revision,
            got.value.len(),
            kv.mod_revision,
            kv.value.len()
        ))),
        None => Err(Finding::NotServing(format!(
            "key {shown:?} is missing at revision {revision}"
        ))),
    }
}

/// Compares the running version's HashKV of the copy with the target's, at `revision`
/// (pure).
fn hash_verdict(running: &HashKv, ours: &HashKv, revision: i64) -> Result<(bool, String), Finding> {
    // Both read the same copy: a compaction between them would be the target's own.
    if running.compact_revision != ours.compact_revision {
        return Ok((
            false,
            format!(
                "not compared: compaction revisions differ (running version {}, target {})",
                running.compact_revision, ours.compact_revision
            ),
        ));
    }
    if running.hash != ours.hash {
        return Err(Finding::HashMismatch {
            revision,
            running: running.hash,
            rehearsal: ours.hash,
        });
    }
    Ok((
        true,
        format!(
            "HashKV {} at revision {revision} (compacted at {}) from both versions",
            running.hash, running.compact_revision
        ),
    ))
}

fn cannot(e: &EtcdError) -> String {
    e.to_string()
}

/// Upper bound for moving `db_size` bytes (snapshot, restore): a minute, plus a second
/// per 10 MiB.
fn transfer_timeout(db_size: u64) -> Duration {
    Duration::from_secs(60 + db_size / (10 << 20))
}

fn open_log(path: &Path) -> Result<std::fs::File, Finding> {
    std::fs::File::create(path)
        .map_err(|e| Finding::Local(format!("cannot create {}: {e}", path.display())))
}

/// Two free loopback ports, held together while chosen so they differ.
fn free_ports() -> std::io::Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// Bytes available to unprivileged users on the filesystem of `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    Ok(free)
}

#[cfg(test)]
mod tests;
