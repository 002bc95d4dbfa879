//! The steps after `begin` ([`PendingBackup`]: snapshot, cold copy, finish) and the finished
//! [`Backup`]. Each step owns the pending backup; dropping it removes the temporary directory.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{renameat2, Flock, FlockArg, RenameFlags};

use crate::backup::BackupMode;
use crate::blocking;
use crate::etcd::{Client, EtcdError};
use crate::process::datadir::{self, DataDirInUse};

use super::meta::{has_data_dir, has_snapshot, DataDirMeta, Meta, SnapshotMeta};
use super::space::{self, MARGIN};
use super::sums::{self, DATA, META, SNAPSHOT, SUMS};
use super::verify::{verify_dir, Verified};
use super::{copy, human_size, io_error, prune, BackupError};

/// A backup being written; see the module header for the steps. Dropping it before
/// [`PendingBackup::finish`] succeeded removes everything written so far.
#[derive(Debug)]
pub struct PendingBackup {
    pub(super) dest: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) lock: Option<Flock<File>>,
    pub(super) mode: BackupMode,
    pub(super) keep: Option<u32>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) endpoint: String,
    pub(super) snapshot_timeout: Duration,
    pub(super) meta: Meta,
    pub(super) sums: sums::Sums,
    pub(super) needed: u64,
    pub(super) started: Instant,
    pub(super) done: bool,
}

impl PendingBackup {
    /// Where the backup will be once finished.
    pub fn dir(&self) -> &Path {
        &self.dest
    }

    /// Where it is being written.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    /// The free-space estimate `begin` checked.
    pub fn needed_bytes(&self) -> u64 {
        self.needed
    }

    /// Its meta.json as far as written (the revision once the snapshot is taken).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The mode.
    pub fn mode(&self) -> BackupMode {
        self.mode
    }

    /// Takes the snapshot through the API (etcd must be running). Does nothing when the
    /// mode has no snapshot.
    pub async fn snapshot(mut self, client: &Client) -> Result<Self, BackupError> {
        if !has_snapshot(self.mode) {
            return Ok(self);
        }
        // The revision and size right before the snapshot: the snapshot holds at least this.
        let status =
            client
                .status_of(&self.endpoint)
                .await
                .map_err(|source| BackupError::Status {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
        self.meta.revision = status.header.revision;
        self.meta.db_size = status.db_size;
        let path = self.temp.join(SNAPSHOT);
        let info = client
            .snapshot_from(&self.endpoint, &path, self.snapshot_timeout)
            .await
            .map_err(|e| match e {
                EtcdError::Io { path, source, .. } if space::is_no_space(&source) => {
                    BackupError::NoSpace { path, source }
                }
                source => BackupError::Snapshot { source },
            })?;
        if let Ok(file) = File::open(&path) {
            sums::drop_cache(&file);
        }
        crate::failpoint::corrupt_at(crate::failpoint::BACKUP_SNAPSHOT_WRITTEN, &path);
        self.sums.insert(SNAPSHOT.to_owned(), info.sha256_hex());
        self.meta.snapshot = Some(SnapshotMeta {
            file: SNAPSHOT.to_owned(),
            size: info.size,
            sha256: info.sha256_hex(),
        });
        Ok(self)
    }

    /// Copies the data dir (etcd must be stopped: refused while its database lock is held,
    /// and the lock is held by us during the copy). Does nothing when the mode has no
    /// data-dir copy.
    pub async fn copy_data_dir(self) -> Result<Self, BackupError> {
        if !has_data_dir(self.mode) {
            return Ok(self);
        }
        blocking::run(move || {
            let mut me = self;
            me.copy_data_dir_blocking()?;
            Ok(me)
        })
        .await
    }

    fn copy_data_dir_blocking(&mut self) -> Result<(), BackupError> {
        let dir = self
            .data_dir
            .clone()
            .ok_or(BackupError::NoDataDir { mode: self.mode })?;
        let db = datadir::db_path(&dir);
        let file = File::open(&db).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BackupError::NotADataDir { dir: dir.clone() },
            _ => io_error("open", &db)(e),
        })?;
        // Held until the copy is done: etcd cannot open the database under us meanwhile.
        let _lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                BackupError::DataDirInUse(DataDirInUse {
                    dir: dir.clone(),
                    db: db.clone(),
                })
            } else {
                io_error("lock", &db)(io::Error::from(errno))
            }
        })?;
        let tree = copy::scan(&dir)?;
        // Checked again: the snapshot has taken its share since `begin`, and the data dir
        // may have grown while etcd ran.
        let needed = MARGIN.saturating_add(tree.bytes);
        let (free, _) =
            space::free_bytes(&self.temp).map_err(io_error("check free space in", &self.temp))?;
        if needed > free {
            return Err(BackupError::InsufficientSpace {
                dir: self.temp.parent().unwrap_or(&self.temp).to_path_buf(),
                needed,
                free,
            });
        }
        let copied = copy::copy_tree(&dir, &self.temp.join(DATA), DATA, &tree)?;
        self.sums.extend(copied.sums);
        self.meta.data_dir = Some(DataDirMeta {
            source: dir.display().to_string(),
            dir: DATA.to_owned(),
            files: copied.files,
            bytes: copied.bytes,
        });
        Ok(())
    }

    /// Writes meta.json and SHA256SUMS, verifies everything from disk, renames the
    /// directory into place, and applies retention to a turn's backups.
    pub async fn finish(self) -> Result<Backup, BackupError> {
        blocking::run(move || self.seal_blocking(true)?.commit_blocking()).await
    }

    /// The first half of [`PendingBackup::finish`]: writes meta.json and SHA256SUMS and
    /// verifies everything from disk, leaving it where it was written
    /// ([`PendingBackup::temp_dir`]) and in the page cache, for a reader beside this pass
    /// (the rehearsal restores the snapshot while it is verified: one read from the disk
    /// serves both). [`Sealed::commit`] puts it in place.
    pub async fn seal(self) -> Result<Sealed, BackupError> {
        blocking::run(move || self.seal_blocking(false)).await
    }

    fn seal_blocking(mut self, drop_cache: bool) -> Result<Sealed, BackupError> {
        if has_snapshot(self.mode) && self.meta.snapshot.is_none() {
            return Err(BackupError::Interrupted(
                "finish() called before snapshot() in a mode with a snapshot".to_owned(),
            ));
        }
        if has_data_dir(self.mode) && self.meta.data_dir.is_none() {
            return Err(BackupError::Interrupted(
                "finish() called before copy_data_dir() in a mode with a data-dir copy".to_owned(),
            ));
        }
        let mut json = serde_json::to_vec_pretty(&self.meta)
            .map_err(|e| BackupError::Interrupted(format!("cannot encode meta.json: {e}")))?;
        json.push(b'\n');
        let meta_path = self.temp.join(META);
        sums::write_new_synced(&meta_path, &json, 0o600)?;
        self.sums
            .insert(META.to_owned(), crate::digest::sha256_hex(&json));
        crate::failpoint::kill_at(crate::failpoint::BACKUP_HALF_WRITTEN);
        // Last: inside the directory, the checksum list is the commit marker.
        let sums_path = self.temp.join(SUMS);
        sums::write_new_synced(&sums_path, sums::render(&self.sums).as_bytes(), 0o600)?;
        crate::durable::sync_dir(&self.temp)?;

        let verified =
            verify_dir(&self.temp, drop_cache).map_err(|source| BackupError::NotVerified {
                dir: self.dest.clone(),
                source,
            })?;
        Ok(Sealed {
            pending: self,
            verified,
        })
    }
}

/// A backup written and verified from disk, not yet in place; see [`PendingBackup::seal`].
/// Dropping it removes it, as an unfinished backup.
#[derive(Debug)]
pub struct Sealed {
    pending: PendingBackup,
    verified: Verified,
}

impl Sealed {
    /// Renames it into place (its pages leave the cache now: the reader beside its
    /// verification is done) and applies retention to a turn's backups.
    pub async fn commit(self) -> Result<Backup, BackupError> {
        blocking::run(move || {
            sums::drop_cached_files(&self.pending.temp);
            self.commit_blocking()
        })
        .await
    }

    fn commit_blocking(mut self) -> Result<Backup, BackupError> {
        let this = &mut self.pending;
        rename_no_replace(&this.temp, &this.dest)?;
        this.done = true;
        this.lock = None;
        let parent = this.dest.parent().unwrap_or(Path::new(".")).to_path_buf();
        crate::durable::sync_dir(&parent)?;
        let elapsed = this.started.elapsed();
        let verified = self.verified;
        tracing::info!(
            dir = %this.dest.display(),
            files = verified.files,
            bytes = verified.bytes,
            secs = format!("{:.2}", elapsed.as_secs_f64()),
            "backup written and verified"
        );

        let pruned = match this.keep {
            Some(keep) => match prune(&parent, keep, Some(&this.dest)) {
                Ok(p) => p.deleted,
                Err(e) => {
                    tracing::warn!("backup: retention skipped: {e}");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Ok(Backup {
            dir: this.dest.clone(),
            meta: verified.meta,
            files: verified.files,
            bytes: verified.bytes,
            elapsed,
            pruned,
        })
    }
}

impl Drop for PendingBackup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match fs::remove_dir_all(&self.temp) {
            Ok(()) => tracing::debug!(dir = %self.temp.display(), "unfinished backup removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.temp.display(), "cannot remove an unfinished backup: {e}")
            }
        }
    }
}

/// A finished, verified backup.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Its directory.
    pub dir: PathBuf,
    /// Its meta.json.
    pub meta: Meta,
    /// Files (SHA256SUMS not counted).
    pub files: usize,
    /// Bytes of those files.
    pub bytes: u64,
    /// From `begin` to verified and in place.
    pub elapsed: Duration,
    /// Older turn backups deleted by retention afterwards.
    pub pruned: Vec<PathBuf>,
}

impl Backup {
    /// One line for an operator.
    pub fn summary(&self) -> String {
        let m = &self.meta;
        format!(
            "verified backup of member {} ({}) at revision {}: {} files, {}, mode {}, etcd {}, in {:.2} s",
            m.member,
            m.member_id,
            m.revision,
            self.files,
            human_size(self.bytes),
            m.mode,
            m.etcd_version,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Renames `from` to `to`, failing rather than replacing anything at `to` (a plain rename
/// would replace an empty directory).
fn rename_no_replace(from: &Path, to: &Path) -> Result<(), BackupError> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(BackupError::Exists {
            dir: to.to_path_buf(),
        }),
        // Filesystems without RENAME_NOREPLACE: check, then rename. The race left is between
        // two writers of the same name, which carries a millisecond timestamp.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(BackupError::Exists {
                    dir: to.to_path_buf(),
                });
            }
            fs::rename(from, to).map_err(io_error("rename the finished backup to", to))
        }
        Err(errno) => Err(io_error("rename the finished backup to", to)(
            io::Error::from(errno),
        )),
    }
}
