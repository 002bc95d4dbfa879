//! Whether an etcd still holds its data: the bbolt database's `flock` and the WAL's OFD
//! write locks, probed from outside without ever holding either.
//!
//! etcd's shutdown closes the WAL (fdatasync, then its OFD locks go) and then the backend
//! (final commit, then bbolt's `flock` goes); what follows is the peer listeners' drain,
//! about a second in 3.5, which writes nothing (docs/etcd-shutdown-order.md). Both kinds
//! are probed because they are independent on Linux: an OFD lock does not conflict with a
//! `flock`, so each file is asked with its own kind. The probes answer for any holder,
//! this process included, because both kinds conflict between open file descriptions.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg};

use crate::process::datadir;

/// Why the locks cannot be probed; the stop then takes its ordinary course.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A file or directory that a running etcd keeps could not be read.
    #[error("cannot probe {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The WAL directory holds no segment, so there is nothing whose lock means anything.
    #[error("no WAL segment in {0}")]
    NoWal(PathBuf),
    /// The kernel has no OFD locks (before 3.15; etcd then locks its WAL with `flock`).
    #[error("open file description locks are not supported here: {0}")]
    NoOfdLocks(Errno),
    /// A network file system emulates `flock` with POSIX locks; the kinds are not told apart.
    #[error("{0} is on NFS, where the lock kinds cannot be told apart")]
    Nfs(PathBuf),
}

/// What one probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockState {
    /// Someone holds `member/snap/db`'s `flock`.
    pub db_held: bool,
    /// Someone holds an OFD/fcntl write lock on a WAL segment or a preallocated `.tmp`.
    pub wal_held: bool,
}

impl LockState {
    /// True when neither lock is held: the data is closed and synced.
    pub fn closed(self) -> bool {
        !self.db_held && !self.wal_held
    }
}

/// The lock files of one etcd data dir.
#[derive(Debug, Clone)]
pub struct DataLocks {
    db: PathBuf,
    wal_dir: PathBuf,
}

impl DataLocks {
    /// The locks of `data_dir`, its WAL in `wal_dir` (etcd's `--wal-dir`) when given,
    /// otherwise in `member/wal`.
    pub fn new(data_dir: &Path, wal_dir: Option<&Path>) -> Self {
        Self {
            db: datadir::db_path(data_dir),
            wal_dir: wal_dir.map_or_else(|| data_dir.join("member").join("wal"), Path::to_path_buf),
        }
    }

    /// The WAL directory probed.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// Probes both locks once, releasing whatever the probe itself took before returning.
    /// Blocking file calls: run it off the runtime thread.
    pub fn probe(&self) -> Result<LockState, ProbeError> {
        for path in [&self.db, &self.wal_dir] {
            if on_nfs(path)? {
                return Err(ProbeError::Nfs(path.clone()));
            }
        }
        let wal_held = self.wal_held()?;
        // After the WAL: etcd closes the WAL first, so a db seen free after a free WAL is
        // never older than it.
        let db_held = flock_held(&self.db)?;
        Ok(LockState { db_held, wal_held })
    }

    fn wal_held(&self) -> Result<bool, ProbeError> {
        let io_err = |source| ProbeError::Io {
            path: self.wal_dir.clone(),
            source,
        };
        let mut segments = 0;
        let mut held = false;
        for entry in std::fs::read_dir(&self.wal_dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let kind = path.extension().and_then(|e| e.to_str());
            if !matches!(kind, Some("wal" | "tmp")) {
                continue;
            }
            segments += usize::from(kind == Some("wal"));
            // Every file is asked, even after a held one: a probe error must not hide.
            held |= ofd_write_locked(&path)?;
        }
        if segments == 0 {
            return Err(ProbeError::NoWal(self.wal_dir.clone()));
        }
        Ok(held)
    }
}

/// True when another open file description holds a `flock` on `path`. The probe's own
/// lock, when it gets one, is dropped before returning. etcd never removes its db, so a
/// missing one is an error: this is not the data dir we think it is.
fn flock_held(path: &Path) -> Result<bool, ProbeError> {
    let file = File::open(path).map_err(|source| ProbeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropping the guard unlocks at once.
        Ok(_guard) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(ProbeError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(e),
        }),
    }
}

/// True when an OFD (or classic POSIX) lock would block a whole-file write lock on `path`:
/// `F_OFD_GETLK` only asks, it never acquires. A file deleted meanwhile (etcd removes its
/// preallocated `.tmp` on close) holds nothing.
fn ofd_write_locked(path: &Path) -> Result<bool, ProbeError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(ProbeError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut query = whole_file(libc::F_WRLCK);
    match fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        FcntlArg::F_OFD_GETLK(&mut query),
    ) {
        Ok(_) => Ok(i32::from(query.l_type) != libc::F_UNLCK),
        Err(Errno::EINVAL) => Err(ProbeError::NoOfdLocks(Errno::EINVAL)),
        Err(e) => Err(ProbeError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(e),
        }),
    }
}

/// A `struct flock` for the whole file; `l_pid` must be 0 for OFD requests.
fn whole_file(kind: i32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    // The constants are tiny; the field is a c_short.
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock.l_pid = 0;
    lock
}

fn on_nfs(path: &Path) -> Result<bool, ProbeError> {
    match nix::sys::statfs::statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == nix::sys::statfs::NFS_SUPER_MAGIC),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(ProbeError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(e),
        }),
    }
}

#[cfg(test)]
mod tests;
