//! What the run loop does to the world, as two small traits: the host (prepare and spawn
//! etcd, poll its health, watch its data close, check and exec a new supervisor binary)
//! and the running etcd (signal it, wait for it). [`super::live`] is the real world; the
//! loop's tests use a fake child on tokio's paused clock.

use std::future::Future;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::closing::DataWatch;
use super::control::Health;
use super::RunError;
use crate::process::log_tail::LogTail;
use crate::process::reaper::ChildExit;
use crate::versions::store::Pinned;
use crate::versions::Version;

/// A running etcd, as the loop handles it.
pub trait EtcdHandle {
    /// Its pid.
    fn pid(&self) -> u32;
    /// Sends `sig` unless it has already been reaped.
    fn signal(&self, sig: Signal);
    /// Waits for its exit. Cancel-safe.
    fn wait(&mut self) -> impl Future<Output = ChildExit> + Send + '_;
}

/// What a re-executed supervisor must know of etcd (the handover record's part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    /// The running etcd's pid.
    pub pid: Option<u32>,
    /// The version it runs.
    pub version: Version,
    /// It has been healthy since the supervisor first started it.
    pub ever_healthy: bool,
    /// It is healthy now.
    pub healthy: bool,
    /// Crashes counted towards the backoff.
    pub crashes: u32,
}

/// The world the run loop acts on.
pub trait Host {
    /// A running etcd.
    type Child: EtcdHandle;
    /// SIGHUP re-executes the supervisor (else it is forwarded to etcd).
    fn reloads(&self) -> bool;
    /// The last lines etcd wrote to stderr, shared with the driver.
    fn log(&self) -> LogTail;
    /// Prepares a start off the loop (waits for the data dir, reads and checks `current`).
    fn prepare(&self) -> impl Future<Output = Result<Pinned, RunError>> + Send + 'static;
    /// Spawns etcd from `pinned`, on the loop's thread.
    fn spawn(&mut self, pinned: &Pinned) -> Result<Self::Child, RunError>;
    /// Polls etcd's /health into `tx` until dropped.
    fn poll_health(&self, tx: watch::Sender<Health>) -> impl Future<Output = ()> + Send + 'static;
    /// Watches for etcd's data being closed after SIGTERM, until `until`.
    fn watch_data(&self, until: Instant) -> impl Future<Output = DataWatch> + Send + 'static;
    /// Writes the handover record and checks that the new binary can take over: its own
    /// line, or why not.
    fn check_new_binary(
        &self,
        handed: &Handed,
    ) -> impl Future<Output = Result<String, String>> + Send + 'static;
    /// Removes the handover record of a reload that changed nothing.
    fn drop_record(&self);
    /// Moves the driver's long-lived etcd calls off this member before it is told to stop
    /// (etcd's graceful stop waits for them; see `etcd::placement`); bounded.
    fn step_aside(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::ready(())
    }
    /// etcd is healthy: the long-lived calls may come back to this member.
    fn come_home(&self) {}
    /// Re-executes in place, handing `child` over; returns only when that failed, why.
    fn exec(
        &mut self,
        child: Option<&mut Self::Child>,
        handed: &Handed,
    ) -> impl Future<Output = String>;
}
