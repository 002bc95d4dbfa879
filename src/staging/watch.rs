//! The watch on the staging dir: [`StagingWatcher`] prepares the directory, wakes on
//! inotify events (debounced, open/read events filtered out by `ChangesOnly`) or on a
//! timer, and runs the scan loop: scan, [`plan`], log waiting/ignored names once, hand each
//! ready drop to `accept`, deliver accepted [`Candidate`]s, and retry drops that failed on
//! the supervisor's side after [`RETRY_AFTER`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventHandler, EventKind, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind};
use notify_debouncer_mini::{new_debouncer_opt, Config, DebounceEventResult, Debouncer};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::accept::{self, accept_files, create_dir_0755, reject_files, Outcome};
use super::protocol::{plan, Plan, REJECTED_DIR};
use super::scan::scan;
use super::{Candidate, StagingError, WatchOptions};
use crate::blocking;
use crate::process::reaper::Reaper;
use crate::versions::store::VersionStore;

/// Debounce of inotify events: short, so a drop is seen well within a second.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);
/// Rescan interval used when inotify cannot be set up and no `--poll-interval` was given.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a drop that failed on the supervisor's side waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Watches the staging dir and turns ready drops into [`Candidate`]s. Dropping it stops the
/// watch (a drop being processed is abandoned; its temp copy is removed).
pub struct StagingWatcher {
    dir: PathBuf,
    task: JoinHandle<()>,
    _debouncer: Option<Debouncer<ChangesOnly>>,
}

impl fmt::Debug for StagingWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for StagingWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StagingWatcher {
    /// Prepares the staging dir (created with mode 0755 when missing and its parent exists),
    /// starts the watch on the current runtime, and returns the stream of accepted drops.
    /// The first scan runs at once, so drops made while the supervisor was down are found.
    pub fn start(
        opts: WatchOptions,
        reaper: Reaper,
    ) -> Result<(StagingWatcher, mpsc::Receiver<Candidate>), StagingError> {
        prepare_staging_dir(&opts.staging_dir)?;
        let wake = Arc::new(Notify::new());
        let mut poll = opts.poll_interval;
        let debouncer = if opts.inotify {
            match watch_dir(&opts.staging_dir, opts.debounce, wake.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    let every = *poll.get_or_insert(FALLBACK_POLL);
                    tracing::warn!(
                        dir = %opts.staging_dir.display(),
                        "cannot watch the staging directory with inotify ({e}); rescanning every {} instead (raise fs.inotify.max_user_instances / max_user_watches, or set --poll-interval)",
                        humantime::format_duration(every)
                    );
                    None
                }
            }
        } else {
            poll.get_or_insert(FALLBACK_POLL);
            None
        };
        let (tx, rx) = mpsc::channel(16);
        let dir = opts.staging_dir.clone();
        let worker = Worker {
            store: VersionStore::new(&opts.state_dir),
            opts,
            reaper,
            reported: HashMap::new(),
            failed: HashSet::new(),
            scan_error: None,
            retry_at: None,
        };
        let task = tokio::spawn(worker.run(wake, poll, tx));
        Ok((
            StagingWatcher {
                dir,
                task,
                _debouncer: debouncer,
            },
            rx,
        ))
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn prepare_staging_dir(dir: &Path) -> Result<(), StagingError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StagingError::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent_exists = dir
                .parent()
                .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
            if !parent_exists {
                return Err(StagingError::NoParent(dir.to_path_buf()));
            }
            create_dir_0755(dir).map_err(|source| StagingError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
            tracing::info!(dir = %dir.display(), "created the staging directory");
        }
        Err(source) => {
            return Err(StagingError::Unreadable {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    fs::read_dir(dir).map_err(|source| StagingError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = fs::metadata(dir) {
        let euid = nix::unistd::geteuid().as_raw();
        if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != euid) {
            tracing::warn!(
                dir = %dir.display(),
                "the staging directory is writable by others (mode {:04o}, uid {}): files they drop are refused, but `chmod go-w` it and chown it to root or the supervisor's user",
                meta.mode() & 0o7777,
                meta.uid()
            );
        }
    }
    Ok(())
}

/// True when `dir` is on a read-only mount.
fn read_only(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

fn watch_dir(
    dir: &Path,
    debounce: Duration,
    wake: Arc<Notify>,
) -> Result<Debouncer<ChangesOnly>, notify::Error> {
    // Not batched: each path's events are delivered once it has been quiet for `debounce`
    // (batching could hold them up to twice as long).
    let config = Config::default()
        .with_timeout(debounce)
        .with_batch_mode(false);
    let mut debouncer =
        new_debouncer_opt::<_, ChangesOnly>(config, move |res: DebounceEventResult| {
            if let Err(e) = res {
                tracing::warn!("staging directory watch: {e}; rescanning");
            }
            // Any event, or a lost one, is answered the same way: a rescan.
            wake.notify_one();
        })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// The platform watcher minus open/read events. notify's inotify backend reports every
/// `open` of the directory and its files, and each scan opens them: without this filter
/// every scan would wake the watcher for another one, forever.
struct ChangesOnly(RecommendedWatcher);

impl Watcher for ChangesOnly {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let inner = RecommendedWatcher::new(
            move |res: notify::Result<notify::Event>| {
                let reads_only = matches!(
                    &res,
                    Ok(notify::Event {
                        kind: EventKind::Access(access),
                        ..
                    }) if *access != AccessKind::Close(AccessMode::Write)
                );
                if !reads_only {
                    handler.handle_event(res);
                }
            },
            config,
        )?;
        Ok(Self(inner))
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

struct Worker {
    opts: WatchOptions,
    store: VersionStore,
    reaper: Reaper,
    /// Waiting/ignored names and the message last logged for each: logged once.
    reported: HashMap<String, String>,
    /// Server binaries whose drop failed on our side: skipped until `retry_at`.
    failed: HashSet<String>,
    scan_error: Option<String>,
    retry_at: Option<Instant>,
}

impl Worker {
    async fn run(mut self, wake: Arc<Notify>, poll: Option<Duration>, tx: mpsc::Sender<Candidate>) {
        let mut ticker = poll.map(|every| tokio::time::interval_at(Instant::now() + every, every));
        if let Some(t) = ticker.as_mut() {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            if !self.scan_and_process(&tx).await {
                tracing::debug!("nobody listens for staged versions any more; stopping the watch");
                return;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                _ = wake.notified() => {}
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    self.retry_at = None;
                    self.failed.clear();
                    self.scan_error = None;
                }
            }
        }
    }

    /// One scan and everything it makes ready. False when the receiver is gone.
    async fn scan_and_process(&mut self, tx: &mpsc::Sender<Candidate>) -> bool {
        let dir = self.opts.staging_dir.clone();
        let listing = match blocking::run(move || scan(&dir)).await {
            Ok(listing) => listing,
            Err(e) => {
                let text = e.to_string();
                if self.scan_error.as_deref() != Some(&text) {
                    tracing::error!("cannot scan the staging directory: {text}");
                    self.scan_error = Some(text);
                }
                self.schedule_retry();
                return true;
            }
        };
        // A drop that cannot be moved to accepted/ or rejected/ afterwards would be taken
        // again and again: none is processed until the mount is writable. etcd runs on.
        if read_only(&self.opts.staging_dir) {
            let text = format!(
                "the staging directory {} is on a read-only mount: staged drops are not processed until it is remounted read-write; etcd keeps running",
                self.opts.staging_dir.display()
            );
            if self.scan_error.as_deref() != Some(&text) {
                tracing::error!("{text}");
                self.scan_error = Some(text);
            }
            self.schedule_retry();
            return true;
        }
        self.scan_error = None;
        tracing::debug!(
            entries = listing.files.len(),
            "scanned the staging directory"
        );
        let plan = plan(&listing);
        self.report(&plan);
        self.failed.retain(|name| listing.files.contains(name));
        for bundle in plan.ready {
            let name = bundle.binary.name.clone();
            if self.failed.contains(&name) {
                continue;
            }
            tracing::debug!(file = %name, "staged {name} is ready: checking it");
            match accept::process(&self.opts, &self.store, &self.reaper, &bundle).await {
                Outcome::Accepted(accepted) => {
                    let (candidate, bundle) = *accepted;
                    tracing::info!(
                        file = %name,
                        version = %candidate.version,
                        "staged {name} accepted as etcd {}{}",
                        candidate.version,
                        if candidate.already_pinned { " (already pinned: nothing changed)" } else { "" }
                    );
                    // Delivered first, moved after: a drop still in staging/ after a crash is
                    // processed again (a no-op), never lost.
                    if tx.send(candidate.clone()).await.is_err() {
                        return false;
                    }
                    let dir = self.opts.staging_dir.clone();
                    let moved =
                        blocking::run(move || accept_files(&dir, &bundle, &candidate)).await;
                    if let Err(e) = moved {
                        tracing::error!(file = %name, "accepted, but cannot move it out of the staging directory: {e}");
                        self.failed.insert(name);
                        self.schedule_retry();
                    }
                }
                Outcome::Refused(refusal) => {
                    tracing::warn!(file = %name, rule = refusal.rule(), "staged {name} refused: {refusal}");
                    let dir = self.opts.staging_dir.clone();
                    let b = bundle.clone();
                    let r = refusal.clone();
                    if let Err(e) = blocking::run(move || reject_files(&dir, &b, &r)).await {
                        tracing::error!(file = %name, "cannot move the refused drop to {REJECTED_DIR}/: {e}");
                        self.failed.insert(name);
                        self.schedule_retry();
                    }
                }
                Outcome::Vanished => {}
                Outcome::Failed(e) => {
                    tracing::error!(
                        file = %name,
                        "cannot process staged {name}: {e}; nothing was refused, retrying in {}",
                        humantime::format_duration(RETRY_AFTER)
                    );
                    self.failed.insert(name);
                    self.schedule_retry();
                }
            }
        }
        true
    }

    fn schedule_retry(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// Logs each waiting or ignored file once (again only when its reason changes).
    fn report(&mut self, plan: &Plan) {
        let mut now: HashMap<String, String> = HashMap::new();
        for (name, why) in &plan.waiting {
            now.insert(name.clone(), format!("{name}: {why}"));
        }
        for (name, why) in &plan.ignored {
            now.insert(name.clone(), format!("{name}: {why}"));
        }
        for (name, line) in &now {
            if self.reported.get(name) != Some(line) {
                tracing::info!(file = %name, "staging: {line}");
            }
        }
        self.reported = now;
    }
}
