//! Facts about etcd's data directory that the supervisor checks before starting etcd.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use nix::fcntl::{Flock, FlockArg};

/// The data dir is held by another process.
#[derive(Debug, thiserror::Error)]
#[error("data dir {dir} is in use by another etcd process ({db} is locked); stop that etcd first, or point --data-dir elsewhere")]
pub struct DataDirInUse {
    /// The data dir.
    pub dir: PathBuf,
    /// The locked file.
    pub db: PathBuf,
}

/// The bbolt database etcd keeps open, under an exclusive `flock`, while it runs.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

/// True when another process holds etcd's database lock in `data_dir`.
pub fn is_locked(data_dir: &Path) -> io::Result<bool> {
    let db = db_path(data_dir);
    let file = match File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropping the guard unlocks at once, before etcd is started.
        Ok(_guard) => Ok(false),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

/// Waits up to `patience` for the data dir to be free. A previous etcd of ours may still be
/// finishing its graceful stop (it got SIGTERM when its supervisor died). Each check runs
/// on the blocking pool (an open on a hung mount must not stall the runtime thread), and
/// the wait is a timer, so the caller can drop it at any moment.
pub async fn wait_until_free(data_dir: &Path, patience: Duration) -> Result<(), DataDirInUse> {
    let deadline = Instant::now() + patience;
    let mut logged = false;
    loop {
        let dir = data_dir.to_path_buf();
        let locked = crate::blocking::run(move || is_locked(&dir)).await;
        match locked {
            Ok(false) => return Ok(()),
            // An unreadable db is etcd's to report, with its own words.
            Err(_) => return Ok(()),
            Ok(true) if Instant::now() >= deadline => {
                return Err(DataDirInUse {
                    dir: data_dir.to_path_buf(),
                    db: db_path(data_dir),
                })
            }
            Ok(true) => {
                if !logged {
                    tracing::info!(data_dir = %data_dir.display(), "data dir is locked; waiting for the previous etcd to exit");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_held_flock_and_a_missing_db() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        std::fs::create_dir_all(dir.path().join("member/snap")).unwrap();
        let db = File::create(db_path(dir.path())).unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        let held = Flock::lock(db, FlockArg::LockExclusiveNonblock).unwrap();
        assert!(is_locked(dir.path()).unwrap());
        drop(held);
        assert!(!is_locked(dir.path()).unwrap());
    }
}
