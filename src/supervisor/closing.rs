//! The watch that ends a stop early: after SIGTERM, etcd's WAL and db locks are probed every
//! few milliseconds; once both are free the data is closed and synced, and what is left of
//! the process (the ~1 s peer-listener drain of 3.5) is not worth waiting for. The run loop
//! awaits the watch as one of its inputs; its lifecycle decides on the SIGKILL.

use std::time::Duration;

use tokio::time::Instant;

use crate::process::data_locks::DataLocks;

/// How often the locks are probed after SIGTERM: well under the drain it saves, and each
/// probe is a few syscalls on the blocking pool.
pub const PROBE_EVERY: Duration = Duration::from_millis(4);

/// What the watch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataWatch {
    /// Both locks were free this long after the watch began (SIGTERM).
    Closed(Duration),
    /// The locks cannot be probed here; the stop takes its ordinary course.
    CannotTell(String),
    /// The locks were still held when the watch gave up.
    StillOpen,
}

/// Probes `locks` every `every` until both are free, a probe fails, or `until`.
pub async fn watch(locks: DataLocks, every: Duration, until: Instant) -> DataWatch {
    let began = Instant::now();
    loop {
        let probe = locks.clone();
        let seen = crate::blocking::run(move || probe.probe().map_err(|e| e.to_string())).await;
        match seen {
            Ok(state) if state.closed() => return DataWatch::Closed(began.elapsed()),
            Ok(_) => {}
            Err(e) => return DataWatch::CannotTell(e),
        }
        if Instant::now() >= until {
            return DataWatch::StillOpen;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, OpenOptions};

    use nix::fcntl::{Flock, FlockArg};

    use super::*;

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("member/snap")).unwrap();
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        std::fs::write(dir.path().join("member/snap/db"), b"db").unwrap();
        std::fs::write(dir.path().join("member/wal/0-0.wal"), b"wal").unwrap();
        dir
    }

    fn hold_db(dir: &tempfile::TempDir) -> Flock<File> {
        let f = OpenOptions::new()
            .read(true)
            .open(dir.path().join("member/snap/db"))
            .unwrap();
        Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap()
    }

    #[tokio::test]
    async fn ends_once_the_locks_are_released() {
        let dir = data_dir();
        let held = hold_db(&dir);
        let locks = DataLocks::new(dir.path(), None);
        let far = Instant::now() + Duration::from_secs(60);
        let task = tokio::spawn(watch(locks, Duration::from_millis(1), far));
        drop(held);
        let seen = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(seen, DataWatch::Closed(_)), "{seen:?}");
    }

    #[tokio::test]
    async fn gives_up_at_its_bound_while_held() {
        let dir = data_dir();
        let _held = hold_db(&dir);
        let locks = DataLocks::new(dir.path(), None);
        let seen = watch(locks, Duration::from_millis(1), Instant::now()).await;
        assert_eq!(seen, DataWatch::StillOpen);
    }

    #[tokio::test]
    async fn a_layout_it_cannot_probe_is_said_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let locks = DataLocks::new(dir.path(), None);
        let far = Instant::now() + Duration::from_secs(60);
        let seen = watch(locks, Duration::from_millis(1), far).await;
        assert!(matches!(seen, DataWatch::CannotTell(_)), "{seen:?}");
    }
}
