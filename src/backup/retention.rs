//! Retention of turn backups (`--backup-keep N`), and clean-up of what interrupted runs left.
//!
//! Policy:
//! - Only directories named like a turn's backup (`<time>-<member>-<from>-to-<to>`) are
//!   touched. On-demand backups (`<time>-<member>-<version>`, or anywhere `--out` put them)
//!   are the operator's and never deleted; nor is anything else in the directory.
//! - The newest N by name (names start with a fixed-width UTC time, so that is by age) are
//!   kept, and the newest backup that *verifies* is kept too, even when it is older than the
//!   N newest: there is always at least one verified backup left. After a turn's backup the
//!   new backup is that one (it was verified seconds ago), so pruning re-reads nothing.
//! - A backup that fails verification while looking for that newest verified one does not
//!   count as verified. It is logged (warn) with its first bad file. It keeps its place by age:
//!   while among the newest N it stays for inspection; once older, it is deleted like any
//!   other old backup, with a warning that names what was wrong with it.
//! - When no backup verifies at all, nothing is deleted.
//! - A backup is renamed to `.deleting-<name>` before it is removed, so a crash mid-delete
//!   never leaves a half-deleted directory under a backup's name.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use super::naming::{self, DELETING_PREFIX, TEMP_PREFIX};
use super::verify::verify;
use super::{io_error, BackupError};

/// An unfinished backup younger than this is never removed, locked or not: its writer may
/// have created it an instant ago and not yet locked it.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// What [`prune`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Turn backups left in place, newest first.
    pub kept: Vec<PathBuf>,
    /// Turn backups deleted, newest first.
    pub deleted: Vec<PathBuf>,
    /// Backups found not to verify while looking for the newest verified one, and why.
    pub failed_verification: Vec<(PathBuf, String)>,
}

/// Applies `--backup-keep keep` to the turn backups in `backups_dir` (see the module header
/// for the policy). `known_good` is a backup verified moments ago, not re-read.
pub fn prune(
    backups_dir: &Path,
    keep: u32,
    known_good: Option<&Path>,
) -> Result<Pruned, BackupError> {
    let keep = keep.max(1) as usize;
    let mut backups = turn_backups(backups_dir)?;
    backups.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    let mut pruned = Pruned::default();
    if backups.len() <= keep {
        pruned.kept = backups;
        return Ok(pruned);
    }

    let mut anchor = None;
    for (i, dir) in backups.iter().enumerate() {
        if known_good == Some(dir.as_path()) {
            anchor = Some(i);
            break;
        }
        match verify(dir) {
            Ok(_) => {
                anchor = Some(i);
                break;
            }
            Err(e) => {
                tracing::warn!(
                    backup = %dir.display(),
                    "backup fails verification ({e}); it does not count as a verified backup"
                );
                pruned
                    .failed_verification
                    .push((dir.clone(), e.to_string()));
            }
        }
    }
    let Some(anchor) = anchor else {
        tracing::warn!(
            dir = %backups_dir.display(),
            "no backup here verifies; deleting none of them (check the disk, and take a new backup)"
        );
        pruned.kept = backups;
        return Ok(pruned);
    };

    for (i, dir) in backups.into_iter().enumerate() {
        if i < keep || i == anchor {
            pruned.kept.push(dir);
            continue;
        }
        let failed = pruned
            .failed_verification
            .iter()
            .find(|(d, _)| *d == dir)
            .map(|(_, why)| why.clone());
        match delete(&dir) {
            Ok(()) => {
                match failed {
                    Some(why) => {
                        tracing::warn!(backup = %dir.display(), "deleted an old backup that failed verification ({why})")
                    }
                    None => {
                        tracing::info!(backup = %dir.display(), keep, "deleted an old backup (--backup-keep)")
                    }
                }
                pruned.deleted.push(dir);
            }
            Err(e) => {
                tracing::warn!(backup = %dir.display(), "cannot delete an old backup: {e}");
                pruned.kept.push(dir);
            }
        }
    }
    Ok(pruned)
}

/// Directories in `dir` named like a turn's backup (symlinks are not followed).
fn turn_backups(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("read the directory", dir))? {
        let entry = entry.map_err(io_error("read the directory", dir))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name();
        if is_dir && name.to_str().is_some_and(naming::is_turn_backup) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn delete(dir: &Path) -> std::io::Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!("{DELETING_PREFIX}{name}"));
    fs::rename(dir, &doomed)?;
    fs::remove_dir_all(&doomed)
}

/// Removes what interrupted runs left in `backups_dir`: unfinished backups nobody holds
/// (`.tmp-<name>`, unlocked and older than a minute) and half-deleted ones
/// (`.deleting-<name>`). Best effort; each removal is logged.
pub(crate) fn clean_stale(backups_dir: &Path) {
    let Ok(entries) = fs::read_dir(backups_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(rest) = name.strip_prefix(DELETING_PREFIX) {
            if naming::parse(rest).is_some() {
                match fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "removed a backup whose deletion was interrupted")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cannot remove a half-deleted backup: {e}")
                    }
                }
            }
        } else if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
            if naming::parse(rest).is_some() && is_abandoned(&path) {
                match fs::remove_dir_all(&path) {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), "removed an unfinished backup left by an interrupted run")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cannot remove an unfinished backup: {e}")
                    }
                }
            }
        }
    }
}

/// Old enough, and its writer's lock is free (the writer holds it until the rename).
fn is_abandoned(dir: &Path) -> bool {
    let old = fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= STALE_AFTER);
    old && File::open(dir)
        .ok()
        .is_some_and(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok())
}
