//! What to back up and where ([`BackupPlan`], [`Target`]), and `begin`: the checks a turn
//! can still fail cheaply, while etcd runs, before anything is written.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::backup::BackupMode;
use crate::blocking;
use crate::etcd::Client;
use crate::process::datadir;
use crate::versions::Version;

use super::meta::{self, has_data_dir, Kind, Meta};
use super::naming::{self, TEMP_PREFIX};
use super::pending::PendingBackup;
use super::space::{self, mib_down, mib_up, space_needed};
use super::{backups_dir, copy, io_error, retention, sums, BackupError};

/// Where a backup goes, and whether retention applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A turn's backup: `<backups_dir>/<time>-<member>-<from>-to-<to>`, then `--backup-keep`.
    Turn {
        /// `<state-dir>/backups`.
        backups_dir: PathBuf,
        /// The version the member runs.
        from: Version,
        /// The version it is upgraded to.
        to: Version,
        /// `--backup-keep` (at least 1).
        keep: u32,
    },
    /// `etcd-supervisor backup`: `<backups_dir>/<time>-<member>-<version>`, never pruned.
    OnDemand {
        /// `<state-dir>/backups`.
        backups_dir: PathBuf,
    },
    /// `etcd-supervisor backup --out DIR`: exactly this directory (must not exist; its
    /// parent must), never pruned.
    Exact(PathBuf),
}

/// What to back up and where. Build one with [`BackupPlan::turn`], [`BackupPlan::on_demand`]
/// or [`BackupPlan::exact`], then [`BackupPlan::begin`].
#[derive(Debug, Clone)]
pub struct BackupPlan {
    /// Where it goes.
    pub target: Target,
    /// Snapshot, data dir, or both.
    pub mode: BackupMode,
    /// The member's name; `None`: looked up in the member list by the id its status reports.
    pub member: Option<String>,
    /// The member's data dir (needed when the mode copies it).
    pub data_dir: Option<PathBuf>,
    /// The member's client URL; `None`: the client's first configured endpoint.
    pub endpoint: Option<String>,
    /// Limit of the snapshot transfer; `None`: 60 s plus 1 s per 4 MiB of database.
    pub snapshot_timeout: Option<Duration>,
}

impl BackupPlan {
    /// A turn's backup in `<state_dir>/backups`, pruned to `keep` afterwards.
    pub fn turn(state_dir: &Path, from: Version, to: Version, mode: BackupMode, keep: u32) -> Self {
        Self::new(
            Target::Turn {
                backups_dir: backups_dir(state_dir),
                from,
                to,
                keep,
            },
            mode,
        )
    }

    /// An on-demand snapshot backup in `<state_dir>/backups`.
    pub fn on_demand(state_dir: &Path) -> Self {
        Self::new(
            Target::OnDemand {
                backups_dir: backups_dir(state_dir),
            },
            BackupMode::Snapshot,
        )
    }

    /// An on-demand snapshot backup into exactly `dir`.
    pub fn exact(dir: PathBuf) -> Self {
        Self::new(Target::Exact(dir), BackupMode::Snapshot)
    }

    /// A plan for `target` and `mode`, member looked up, no data dir.
    pub fn new(target: Target, mode: BackupMode) -> Self {
        Self {
            target,
            mode,
            member: None,
            data_dir: None,
            endpoint: None,
            snapshot_timeout: None,
        }
    }

    /// Names the member (otherwise looked up in the member list).
    pub fn member(mut self, name: impl Into<String>) -> Self {
        self.member = Some(name.into());
        self
    }

    /// The member's data dir (for the data-dir modes).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The member's client URL (otherwise the client's first configured endpoint): the
    /// snapshot is of this member, whichever endpoint the client prefers for other calls.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Replaces the mode.
    pub fn mode(mut self, mode: BackupMode) -> Self {
        self.mode = mode;
        self
    }

    /// Starts the backup of the member at [`BackupPlan::endpoint`] (by default the client's
    /// first, local, endpoint), while etcd runs: reads its status, sizes the data dir, checks free space, and creates the
    /// temporary directory. Nothing is written when this fails.
    pub async fn begin(&self, client: &Client) -> Result<PendingBackup, BackupError> {
        let started = Instant::now();
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| client.local_endpoint().to_owned());
        let status = client
            .status_of(&endpoint)
            .await
            .map_err(|source| BackupError::Status {
                endpoint: endpoint.clone(),
                source,
            })?;
        let member = match &self.member {
            Some(name) => name.clone(),
            None => member_name(client, status.member_id()).await,
        };
        let tree = match (has_data_dir(self.mode), &self.data_dir) {
            (false, _) => None,
            (true, None) => return Err(BackupError::NoDataDir { mode: self.mode }),
            (true, Some(dir)) => {
                if !datadir::db_path(dir).is_file() {
                    return Err(BackupError::NotADataDir { dir: dir.clone() });
                }
                // A walk of the data dir: on the blocking pool, not the runtime thread.
                let dir = dir.clone();
                Some(blocking::run(move || copy::scan(&dir)).await?)
            }
        };

        let (time, rfc3339) = naming::timestamps(SystemTime::now());
        let (dest, kind, keep, from, to) = match &self.target {
            Target::Turn {
                backups_dir,
                from,
                to,
                keep,
            } => (
                backups_dir.join(naming::turn_name(&time, &member, from, to)),
                Kind::Turn,
                Some(*keep),
                from.to_string(),
                Some(to.to_string()),
            ),
            Target::OnDemand { backups_dir } => (
                backups_dir.join(naming::on_demand_name(&time, &member, &status.version)),
                Kind::OnDemand,
                None,
                status.version.clone(),
                None,
            ),
            Target::Exact(dir) => (
                dir.clone(),
                Kind::OnDemand,
                None,
                status.version.clone(),
                None,
            ),
        };
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(BackupError::Exists { dir: dest });
        }
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                io_error("write a backup to", &dest)(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a directory name",
                ))
            })?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };

        let db_size = u64::try_from(status.db_size).unwrap_or(0);
        let data_bytes = tree.as_ref().map_or(0, |t| t.bytes);
        let needed = space_needed(self.mode, db_size, data_bytes);
        let (free, _) =
            space::free_bytes(&parent).map_err(io_error("check free space in", &parent))?;
        if needed > free {
            return Err(BackupError::InsufficientSpace {
                dir: parent,
                needed,
                free,
            });
        }

        if matches!(self.target, Target::Turn { .. } | Target::OnDemand { .. }) {
            // Backups hold every key of the cluster, secrets included: private.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(io_error("create the directory", &parent))?;
            // Leftovers of an interrupted backup may be a whole data-dir copy to delete.
            let stale_in = parent.clone();
            blocking::run(move || {
                retention::clean_stale(&stale_in);
                Ok::<_, BackupError>(())
            })
            .await?;
        }
        let temp = parent.join(format!("{TEMP_PREFIX}{name}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&temp)
            .map_err(io_error("create the directory", &temp))?;
        // From here on, dropping `pending` removes `temp`.
        let mut pending = PendingBackup {
            dest,
            temp,
            lock: None,
            mode: self.mode,
            keep,
            data_dir: self.data_dir.clone(),
            endpoint: endpoint.clone(),
            snapshot_timeout: self
                .snapshot_timeout
                .unwrap_or_else(|| default_snapshot_timeout(db_size)),
            sums: sums::Sums::new(),
            needed,
            started,
            done: false,
            meta: Meta {
                format: meta::FORMAT,
                kind,
                time: rfc3339,
                member,
                member_id: format!("{:x}", status.member_id()),
                cluster_id: format!("{:x}", status.header.cluster_id),
                endpoint,
                from_version: from,
                to_version: to,
                etcd_version: status.version.clone(),
                mode: self.mode.name().to_owned(),
                revision: status.header.revision,
                db_size: status.db_size,
                snapshot: None,
                data_dir: None,
                supervisor_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        };
        let dir = File::open(&pending.temp).map_err(io_error("open", &pending.temp))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io_error("lock", &pending.temp)(io::Error::from(errno)))?;
        pending.lock = Some(lock);
        tracing::info!(
            dir = %pending.dest.display(),
            mode = self.mode.name(),
            needed_mib = mib_up(needed),
            free_mib = mib_down(free),
            "backup started"
        );
        Ok(pending)
    }
}

/// 60 s, plus 1 s per 4 MiB: a slow disk or a busy member still finishes, a hung one does not
/// hold the turn for ever.
fn default_snapshot_timeout(db_size: u64) -> Duration {
    Duration::from_secs(60 + db_size / (4 * 1024 * 1024))
}

/// The member's name from the member list; its hex id when the list cannot say.
async fn member_name(client: &Client, id: u64) -> String {
    match client.member_list().await {
        Ok(list) => match list.by_id(id) {
            Some(m) if !m.name.is_empty() => m.name.clone(),
            _ => format!("{id:x}"),
        },
        Err(e) => {
            tracing::warn!(
                "backup: cannot read the member list ({e}); naming the backup by member id"
            );
            format!("{id:x}")
        }
    }
}
