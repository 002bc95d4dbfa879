//! The slow half of starting etcd, kept off the runtime thread: waiting for the data dir's
//! lock and re-hashing the pinned binary. The run loop awaits it as one of its inputs, so
//! a signal or a driver request is answered while a start is being prepared; the spawn
//! itself stays on the main thread (PR_SET_PDEATHSIG follows the spawning thread).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::blocking;
use crate::process::datadir;
use crate::versions::store::{Pinned, VersionStore};

use super::RunError;

/// What a start needs to know, copied out of the loop so the task owns it.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// The versions store; `current` is read when the wait is over.
    pub store: VersionStore,
    /// Named in the error when nothing is pinned.
    pub versions_dir: PathBuf,
    /// etcd's data dir, whose lock a previous etcd may still hold.
    pub data_dir: PathBuf,
    /// How long that previous etcd may take to let go.
    pub patience: Duration,
}

/// Waits for the data dir to be free, then reads `current` and checks the binary's hash,
/// both on the blocking pool. Returns the binary to spawn.
pub async fn prepare(plan: StartPlan) -> Result<Pinned, RunError> {
    datadir::wait_until_free(&plan.data_dir, plan.patience).await?;
    let StartPlan {
        store,
        versions_dir,
        ..
    } = plan;
    blocking::run(move || {
        let pinned = store
            .current()?
            .ok_or(RunError::NothingInstalled(versions_dir))?;
        let started = Instant::now();
        store.verify(&pinned)?;
        tracing::debug!(version = %pinned.version, took_ms = started.elapsed().as_millis() as u64, "pinned binary verified");
        Ok(pinned)
    })
    .await
}
