//! Why the run loop (or the daemon's start-up around it) could not keep etcd running.

use std::path::PathBuf;

use crate::process::{datadir, reaper::ReaperError};
use crate::staging::StagingError;
use crate::upgrade::turn::state_file::StateFileError;
use crate::versions::store::VersionsError;

/// Why `run` could not keep etcd running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Nothing is pinned and no binary was given.
    #[error("no etcd version is installed in {0}; pass --etcd-binary PATH (or ETCD_SUPERVISOR_ETCD_BINARY) for the first start")]
    NothingInstalled(PathBuf),
    /// The given or pinned binary is unusable.
    #[error("{0}")]
    Versions(#[from] VersionsError),
    /// The state dir cannot be created or written.
    #[error(
        "state dir {dir} is not writable ({source}); create it, or choose another with --state-dir"
    )]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another etcd holds the data dir.
    #[error(transparent)]
    DataDirInUse(#[from] datadir::DataDirInUse),
    /// etcd could not be started at all.
    #[error(transparent)]
    Spawn(#[from] ReaperError),
    /// The HTTP client could not be built (bad TLS material and the like).
    #[error(transparent)]
    Client(#[from] crate::etcd::EtcdError),
    /// The staging directory cannot be watched.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// The metrics address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics-addr")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// state.json cannot be read.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// File work on the blocking pool did not finish (it panicked or was cancelled).
    #[error("background file work failed: {0}")]
    Worker(String),
}

impl From<crate::blocking::WorkerLost> for RunError {
    fn from(e: crate::blocking::WorkerLost) -> Self {
        RunError::Worker(e.to_string())
    }
}

impl RunError {
    /// True for errors the operator fixes in the configuration (a usage error).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RunError::NothingInstalled(_)
                | RunError::Versions(_)
                | RunError::StateDir { .. }
                | RunError::Client(_)
                | RunError::Metrics { .. }
        ) || matches!(self, RunError::Staging(e) if e.is_usage())
            // Needs the operator (exit 2: systemd's RestartPreventExitStatus keeps it down).
            || matches!(self, RunError::State(StateFileError::Corrupt { .. }))
    }
}
