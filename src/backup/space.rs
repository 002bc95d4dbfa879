//! Free space: how much a backup needs, and how much the backups filesystem has, checked
//! before anything is written so a turn that cannot back up aborts while etcd still runs.

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::statvfs::statvfs;

use crate::backup::BackupMode;

use super::meta::{has_data_dir, has_snapshot};

/// Added to every estimate: meta.json, SHA256SUMS, directory blocks, and some room so the
/// backup does not leave the filesystem at exactly zero for everything else on it.
pub const MARGIN: u64 = 8 * 1024 * 1024;

/// Bytes a backup needs: the snapshot at 1.1 × the database size etcd reports (the database
/// can grow between the status call and the snapshot), the data dir as measured when it is
/// copied, and [`MARGIN`].
pub fn space_needed(mode: BackupMode, db_size: u64, data_dir_bytes: u64) -> u64 {
    let mut needed = MARGIN;
    if has_snapshot(mode) {
        needed = needed.saturating_add(db_size.saturating_add(db_size.div_ceil(10)));
    }
    if has_data_dir(mode) {
        needed = needed.saturating_add(data_dir_bytes);
    }
    needed
}

/// Bytes available to us on the filesystem that holds (or will hold) `path`, and the
/// existing directory that was asked: `path` itself may not exist yet.
pub(crate) fn free_bytes(path: &Path) -> io::Result<(u64, PathBuf)> {
    let existing = nearest_existing(path);
    let stat = statvfs(existing.as_path()).map_err(io::Error::from)?;
    // f_bavail: blocks available to unprivileged users. root could dig into the reserve,
    // but a backup should not be what fills a filesystem up to its last block.
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
    Ok((free, existing))
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path;
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// Whole MiB, rounded up (for "needs ~N MiB").
pub(crate) fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

/// Whole MiB, rounded down (for "only M MiB free").
pub(crate) fn mib_down(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

/// True for the errors of a full filesystem (or a full quota).
pub(crate) fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || err.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_per_mode() {
        let mib = 1024 * 1024;
        assert_eq!(
            space_needed(BackupMode::Snapshot, 100 * mib, 500 * mib),
            110 * mib + MARGIN
        );
        assert_eq!(
            space_needed(BackupMode::DataDir, 100 * mib, 500 * mib),
            500 * mib + MARGIN
        );
        assert_eq!(
            space_needed(BackupMode::Both, 100 * mib, 500 * mib),
            610 * mib + MARGIN
        );
        assert_eq!(space_needed(BackupMode::Snapshot, 0, 0), MARGIN);
        assert_eq!(space_needed(BackupMode::Both, u64::MAX, u64::MAX), u64::MAX);
        assert_eq!((mib_up(mib + 1), mib_down(2 * mib - 1)), (2, 1));
    }

    #[test]
    fn free_space_of_a_path_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let (free, asked) = free_bytes(&dir.path().join("backups/new/deeper")).unwrap();
        assert_eq!(asked, dir.path());
        assert!(free > 0);
    }

    #[test]
    fn enospc_and_edquot_are_no_space() {
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EACCES)));
    }
}
