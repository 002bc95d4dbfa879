//! Test-only crash points inside the steps of a turn. In a build with the `failpoints`
//! feature (the tests' build, never a shipped binary), [`kill_at`] SIGKILLs the supervisor
//! itself when `ETCD_SUPERVISOR_FAILPOINT_KILL` names that point, so a crash test can land
//! a kill in the middle of a step (a half-written backup, a stop under way, a half-done
//! cold copy, `current` switched but nothing started) instead of only between steps. In
//! other builds [`kill_at`] does nothing.

/// The variable naming the point to die at; read at each point.
#[cfg(feature = "failpoints")]
pub const KILL_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_KILL";

/// The backup directory is half written: meta.json is there, SHA256SUMS (its commit
/// marker) is not, and it is not renamed into place yet.
pub const BACKUP_HALF_WRITTEN: &str = "backup-half-written";
/// SIGTERM has gone to etcd for a stop; etcd has not exited yet.
pub const ETCD_SIGNALLED: &str = "etcd-signalled";
/// The cold copy of the data dir has copied its first file, not the rest.
pub const COLD_COPY_HALF_DONE: &str = "cold-copy-half-done";
/// `current` points at the new target (renamed, fsynced); etcd is not started yet.
pub const SWITCHED: &str = "switched";

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
