//! Test-only crash points inside the steps of a turn. In a build with the `failpoints`
//! feature (the tests' build, never a shipped binary), [`kill_at`] SIGKILLs the supervisor
//! itself when `ETCD_SUPERVISOR_FAILPOINT_KILL` names that point, so a crash test can land
//! a kill in the middle of a step (a half-written backup, a stop under way, a half-done
//! cold copy, `current` switched but nothing started) instead of only between steps, and
//! [`stall_at`] blocks the calling thread for a while (a disk that stops answering), and
//! [`corrupt_at`] flips a byte of a file just written (a disk that returns what it was not
//! given). In other builds they do nothing.

/// The variable naming the point to die at; read at each point.
#[cfg(feature = "failpoints")]
pub const KILL_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_KILL";

/// The variable naming a point to stall at and for how long: `<point>:<duration>`.
#[cfg(feature = "failpoints")]
pub const STALL_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_STALL";

/// The variable naming the point at which to corrupt the file just written.
#[cfg(feature = "failpoints")]
pub const CORRUPT_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_CORRUPT";

/// The backup directory is half written: meta.json is there, SHA256SUMS (its commit
/// marker) is not, and it is not renamed into place yet.
pub const BACKUP_HALF_WRITTEN: &str = "backup-half-written";
/// SIGTERM has gone to etcd for a stop; etcd has not exited yet.
pub const ETCD_SIGNALLED: &str = "etcd-signalled";
/// The cold copy of the data dir has copied its first file, not the rest.
pub const COLD_COPY_HALF_DONE: &str = "cold-copy-half-done";
/// `current` points at the new target (renamed, fsynced); etcd is not started yet.
pub const SWITCHED: &str = "switched";

/// The snapshot writer has written the stream's first chunk; the disk is slow for the rest.
pub const SNAPSHOT_WRITTEN_FIRST_CHUNK: &str = "snapshot-written-first-chunk";

/// A backup's snapshot is written, fsynced and its sha256 recorded; not yet verified.
pub const BACKUP_SNAPSHOT_WRITTEN: &str = "backup-snapshot-written";

/// Dies here (SIGKILL to this process) when the failpoint variable names `point`.
pub fn kill_at(point: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var(KILL_ENV).is_ok_and(|p| p == point) {
        // Straight to stderr: a buffered log line would die with the process.
        eprintln!("failpoint: killing the supervisor at {point}");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

/// Blocks this (blocking) thread for the duration the stall variable gives `point`.
pub fn stall_at(point: &str) {
    #[cfg(feature = "failpoints")]
    if let Some(pause) = std::env::var(STALL_ENV).ok().and_then(|v| {
        let (at, pause) = v.split_once(':')?;
        (at == point).then(|| humantime::parse_duration(pause).ok())?
    }) {
        eprintln!("failpoint: stalling at {point} for {pause:?}");
        std::thread::sleep(pause);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

/// Flips one byte in the middle of `path` when the corrupt variable names `point`.
pub fn corrupt_at(point: &str, path: &std::path::Path) {
    #[cfg(feature = "failpoints")]
    if std::env::var(CORRUPT_ENV).is_ok_and(|p| p == point) {
        use std::os::unix::fs::FileExt;
        let flipped = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .and_then(|f| {
                let at = f.metadata()?.len() / 2;
                let mut byte = [0u8];
                f.read_exact_at(&mut byte, at)?;
                f.write_all_at(&[!byte[0]], at)
            });
        eprintln!(
            "failpoint: corrupting {} at {point}: {flipped:?}",
            path.display()
        );
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (point, path);
}
