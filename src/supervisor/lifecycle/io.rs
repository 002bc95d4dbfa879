//! The lifecycle's inputs (what the run loop saw) and effects (what it does next).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Note, ReqId};
use crate::process::child::{StopEnd, Stopped};
use crate::process::reaper::ChildExit;
use crate::supervisor::closing::DataWatch;
use crate::supervisor::control::Health;
use crate::upgrade::turn::machine::Phase;
use crate::versions::Version;

/// A started etcd, as the loop reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// The version it runs.
    pub version: Version,
}

/// Why a start failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// The error, as told to the driver.
    pub why: String,
    /// Another process still holds the data dir.
    pub data_dir_in_use: bool,
}

/// An etcd a re-executed supervisor takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Its pid.
    pub pid: u32,
    /// The version it runs.
    pub version: Version,
    /// It has been healthy since the supervisor first started it.
    pub ever_healthy: bool,
    /// It was healthy at the handover.
    pub healthy: bool,
    /// Crashes counted towards the backoff.
    pub crashes: u32,
    /// The supervisor version that handed it over.
    pub from: String,
}

/// The timers the lifecycle sets (see [`Lifecycle::next_timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The stop deadline: SIGKILL.
    StopTimeout,
    /// The restart after backoff.
    Restart,
    /// A waiting reload looks for its quiet point.
    LookForQuiet,
    /// The driver did not stand down in time.
    DrainTimeout,
}

/// One input of the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The loop begins: adopt this etcd, or start one unless held.
    Boot(Option<Adopted>),
    /// A signal to the supervisor.
    Signal(Signal),
    /// A start's preparation and spawn ended.
    Started(Result<Spawned, StartFailure>),
    /// The child exited.
    Exited(ChildExit),
    /// The child's /health changed.
    Health(Health),
    /// The data watch ended.
    DataWatched(DataWatch),
    /// The driver asks for a stop.
    Stop(ReqId),
    /// The driver asks for a start.
    Start(ReqId),
    /// The driver's turn is over.
    Resume,
    /// A timer fired.
    Timer(Timer),
    /// The driver reported its phase.
    DriverPhase(Phase),
    /// The new binary's check ended: what it said, or why it cannot take over.
    Checked(Result<String, String>),
    /// The driver's task ended.
    DriverDone,
}

/// What the loop does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Prepare a start off the loop; spawn when ready and report [`Input::Started`].
    Prepare,
    /// Drop the start being prepared.
    AbandonStart,
    /// Answer a driver's start.
    AnswerStart(ReqId, Result<u32, String>),
    /// Answer a driver's stop.
    AnswerStop(ReqId, Stopped),
    /// Send a signal to the child.
    Signal(Signal),
    /// Watch for the data being closed, until this deadline.
    WatchData(Instant),
    /// Poll /health from this initial value.
    PollHealth(Health),
    /// The child is gone: stop polling and watching.
    ChildGone,
    /// Set the `etcd_up` gauge.
    EtcdUp(bool),
    /// etcd is healthy and not being stopped: the long-lived etcd calls may come back to
    /// this member (never during a stop: etcd's graceful stop would wait for them).
    ComeHome,
    /// A stop ended this way, this long after SIGTERM (the stop metric).
    StopMeasured(StopEnd, Duration),
    /// A crash restart (the restart metric).
    Restarted,
    /// systemd: READY=1 with this status.
    Ready(String),
    /// systemd: STATUS=.
    Status(String),
    /// systemd: STOPPING=1.
    Stopping,
    /// systemd: RELOADING=1 with this status.
    Reloading(String),
    /// Tell the driver the supervisor stands down (shutdown, or a reload's drain).
    TellDriver,
    /// The loop fails with the start's error.
    Fail,
    /// Write the handover record and check the new binary; report [`Input::Checked`].
    CheckNewBinary,
    /// Stop checking the new binary.
    CancelCheck,
    /// Remove the handover record (a reload that changed nothing).
    DropRecord,
    /// Re-execute in place; returns only if the exec failed.
    Exec,
    /// Log an event.
    Log(Note),
}
