//! The interface between the run loop, which owns the etcd child, and the upgrade driver:
//! requests (stop, start, resume) and the child's status as the loop sees it; back the
//! other way, the driver's phase (a reload hands over only while no turn is held).

use tokio::sync::{mpsc, oneshot, watch};

use crate::process::child::Stopped;
use crate::process::log_tail::LogTail;
use crate::process::reaper::ChildExit;
use crate::upgrade::turn::machine::Phase;

/// etcd's health as last seen by the poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not answered yet since the start.
    Unknown,
    /// `/health` true.
    Healthy,
    /// `/health` false or not answering after having answered.
    Unhealthy,
}

/// Requests from the upgrade driver to the run loop, which owns the etcd child.
#[derive(Debug)]
pub enum ChildRequest {
    /// Stop etcd for a swap, and do not restart it until `Start`.
    Stop(oneshot::Sender<Stopped>),
    /// Start etcd on whatever `current` points at now; answers the pid.
    Start(oneshot::Sender<Result<u32, String>>),
    /// The turn is over: supervise normally again (restart on crash, start if stopped).
    Resume,
}

/// What the driver can see of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildStatus {
    /// The running etcd's pid.
    pub pid: Option<u32>,
    /// Its health as last polled.
    pub health: Health,
    /// How the last etcd ended, with its pid.
    pub last_exit: Option<(u32, ChildExit)>,
}

/// The handles the upgrade driver gets.
#[derive(Debug)]
pub struct ChildControl {
    /// Requests to the run loop.
    pub requests: mpsc::Sender<ChildRequest>,
    /// The child's status.
    pub status: watch::Receiver<ChildStatus>,
    /// Becomes true when the supervisor is asked to stop.
    pub shutdown: watch::Receiver<bool>,
    /// The last lines the current (or last) etcd wrote to stderr.
    pub log: LogTail,
    /// The driver's phase, reported to the loop.
    pub phase: watch::Sender<Phase>,
}

impl ChildControl {
    /// Stops etcd for a swap.
    pub async fn stop(&self) -> Result<Stopped, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ChildRequest::Stop(tx))
            .await
            .map_err(|_| "the run loop is gone".to_owned())?;
        rx.await.map_err(|_| "the run loop is gone".to_owned())
    }

    /// Starts etcd on `current`.
    pub async fn start(&self) -> Result<u32, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ChildRequest::Start(tx))
            .await
            .map_err(|_| "the run loop is gone".to_owned())?;
        rx.await.map_err(|_| "the run loop is gone".to_owned())?
    }

    /// Tells the loop the driver's phase (it changed, or was published again).
    pub fn report_phase(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let changed = *p != phase;
            *p = phase;
            changed
        });
    }

    /// Hands supervision back to the run loop.
    pub async fn resume(&self) {
        let _ = self.requests.send(ChildRequest::Resume).await;
    }
}

/// Starts the upgrade driver, given the child's handles; its future ends the driver.
pub type DriverStarter = Box<
    dyn FnOnce(ChildControl) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
>;
