//! Verified backups of the local member: a snapshot through the API, an optional cold copy
//! of the data dir, `SHA256SUMS`, `meta.json`, verification, retention.
//!
//! Theory of operation. A backup is a directory
//! ```text
//! <state-dir>/backups/<UTC time>-<member>-<from>-to-<to>/   (a turn's; on-demand: <time>-<member>-<version>)
//!     snapshot.db   Maintenance/Snapshot (gRPC), its sha256 trailer checked while it
//!                   streams
//!     data/         optional: the data dir, copied while etcd is stopped
//!     meta.json     what, whose, when (see [`Meta`])
//!     SHA256SUMS    sha256sum format over every other file, relative paths, sorted
//! ```
//! written in steps that the upgrade executor calls at different moments of a turn:
//! ```text
//! let pending = BackupPlan::turn(state_dir, from, to, mode, keep)
//!     .member(name).data_dir(dir)
//!     .begin(&client).await?;              // etcd running: status, sizes, free space, temp dir
//! let pending = pending.snapshot(&client).await?;   // etcd running
//! /* stop etcd */
//! let pending = pending.copy_data_dir().await?;     // etcd stopped (holds the db lock meanwhile)
//! let backup = pending.finish().await?;             // meta, SHA256SUMS, verify, rename, retention
//! ```
//! - A step the mode does not include does nothing, so the executor calls every step.
//! - Each step takes the [`PendingBackup`] by value and hands it back on success. On failure
//!   it has already been dropped, and dropping it removes the temporary directory: a failed,
//!   cancelled or abandoned backup leaves nothing behind (a killed process leaves a locked
//!   `.tmp-` directory that the next backup removes).
//! - `begin` is where a turn can still say no cheaply, before etcd is stopped: it reads the
//!   member's status (database size), sizes the data dir (refusing symlinks and special
//!   files), and checks free space on the backups filesystem before anything is written.
//!   `copy_data_dir` checks again for its part. A write that still hits ENOSPC (something
//!   else filled the disk meanwhile) is [`BackupError::NoSpace`], the partial backup removed.
//! - Everything is written into `.tmp-<name>` beside the final directory (same filesystem,
//!   so the final rename is atomic), under an `flock` that tells a later run it is in use.
//!   `finish` writes `meta.json`, then `SHA256SUMS` (last, the commit marker inside the
//!   directory), fsyncs, and re-reads every file with the page cache dropped, so
//!   verification sees what reached the disk rather than what we remember writing. Only then
//!   is the directory renamed into place (never over anything) and its parent fsynced: only a
//!   complete, verified backup ever carries a backup's name.
//! - Copying and hashing run on the blocking pool: on the supervisor's single-threaded
//!   runtime a multi-GB copy must not starve the turn lease's keepalives.
//!
//! Layout: `mode` (what a turn backs up, `--backup`), `plan` (what and where, and
//! `begin`), `pending` (the steps after `begin`, and the finished [`Backup`]), `naming`
//! (directory names and the pattern), `space` (free-space estimate and check), `copy` (the
//! cold copy), `sums` (`SHA256SUMS`, hashing, the snapshot trailer), `meta` (`meta.json`),
//! `verify`, `retention` (`--backup-keep` and stale clean-up), `progress` (log lines for
//! long copies). The CLI commands that use it (`backup`, `verify-backup`) are in
//! `crate::commands::backup`.

mod copy;
pub mod meta;
mod mode;
mod naming;
mod pending;
mod plan;
mod progress;
pub mod retention;
mod space;
mod sums;
pub mod verify;

use std::io;
use std::path::{Path, PathBuf};

use crate::durable::IoError;
use crate::etcd::EtcdError;
use crate::process::datadir::DataDirInUse;

pub use meta::{DataDirMeta, Kind, Meta, SnapshotMeta};
pub use mode::BackupMode;
pub use pending::{Backup, PendingBackup, Sealed};
pub use plan::{BackupPlan, Target};
pub use retention::{prune, Pruned};
pub use space::{space_needed, MARGIN};
pub use sums::{DATA, META, SNAPSHOT, SUMS};
pub use verify::{verify, Verified, VerifyError};

use space::{mib_down, mib_up};

/// Errors of writing a backup. Messages are for the operator: what, where, what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not enough free space; checked before anything was written.
    #[error("backup needs ~{} MiB in {}, only {} MiB free; free space or lower --backup-keep", mib_up(*.needed), .dir.display(), mib_down(*.free))]
    InsufficientSpace {
        /// Where the backup was to go.
        dir: PathBuf,
        /// Bytes needed (estimate).
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// The filesystem filled up while writing; the partial backup was removed.
    #[error("backup ran out of disk space writing {} ({source}); the partial backup was removed. Free space there or lower --backup-keep", .path.display())]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// ENOSPC or EDQUOT.
        #[source]
        source: io::Error,
    },
    /// The member's status could not be read.
    #[error("backup: cannot read the status of the member at {endpoint}: {source}")]
    Status {
        /// The member's endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: EtcdError,
    },
    /// The snapshot could not be taken (the partial file was removed).
    #[error("backup: {source}")]
    Snapshot {
        /// Why.
        #[source]
        source: EtcdError,
    },
    /// etcd (or something else) still holds the data dir's database lock.
    #[error("backup: {0}")]
    DataDirInUse(#[from] DataDirInUse),
    /// The data dir does not look like etcd's.
    #[error("backup: {} is not an etcd data dir (no member/snap/db); check the member's --data-dir", .dir.display())]
    NotADataDir {
        /// The directory.
        dir: PathBuf,
    },
    /// Something in the data dir the cold copy does not take.
    #[error("backup: {}: {what}; the data-dir copy takes only regular files and directories", .path.display())]
    Unsupported {
        /// The entry.
        path: PathBuf,
        /// What it is.
        what: String,
    },
    /// The mode copies the data dir, but no data dir was given.
    #[error("backup: --backup {} copies the data dir, but the member's data dir is not known", .mode.name())]
    NoDataDir {
        /// The mode.
        mode: BackupMode,
    },
    /// The backup directory exists already.
    #[error("backup: {} already exists; a backup never replaces anything (choose another --out)", .dir.display())]
    Exists {
        /// The directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("backup: cannot {0}")]
    Io(#[source] IoError),
    /// What was just written does not read back the same: a disk or filesystem problem.
    #[error("backup written to {} does not verify ({source}); it was removed. Check the disk", .dir.display())]
    NotVerified {
        /// Where it was to go.
        dir: PathBuf,
        /// The first problem.
        #[source]
        source: VerifyError,
    },
    /// The blocking work died (a bug); the partial backup was removed.
    #[error("backup: interrupted: {0}")]
    Interrupted(String),
}

/// An I/O error on `path`, as [`BackupError::NoSpace`] when the disk is full.
pub(crate) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |source| {
        if space::is_no_space(&source) {
            BackupError::NoSpace {
                path: path.to_path_buf(),
                source,
            }
        } else {
            BackupError::Io(crate::durable::io_err(action, path)(source))
        }
    }
}

/// A panic in the blocking work: the pending backup it owned was dropped on the way, which
/// removed its directory.
impl From<crate::blocking::WorkerLost> for BackupError {
    fn from(e: crate::blocking::WorkerLost) -> Self {
        BackupError::Interrupted(e.to_string())
    }
}

impl From<IoError> for BackupError {
    fn from(e: IoError) -> Self {
        if e.is_no_space() {
            BackupError::NoSpace {
                path: e.path,
                source: e.source,
            }
        } else {
            BackupError::Io(e)
        }
    }
}

/// `<state-dir>/backups`.
pub fn backups_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("backups")
}

/// `12.3 MiB`, or `45.6 KiB` below a MiB.
pub(crate) fn human_size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests;
