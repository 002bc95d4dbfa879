//! The events the lifecycle asks the loop to log, as plain data (the loop writes them
//! with `tracing`, one event each, in [`crate::supervisor::journal`]).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::child::{StopEnd, Stopped};
use crate::process::reaper::ChildExit;
use crate::upgrade::turn::machine::Phase;

/// One event to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A start is being prepared.
    Preparing,
    /// A start being prepared was dropped, for this reason.
    StartAbandoned(String),
    /// A start the driver asked for failed.
    CannotStartForUpgrade(String),
    /// A restart failed and is retried after backoff.
    CannotStartRetrying {
        /// Why it failed.
        why: String,
        /// Crashes so far.
        crashes: u32,
        /// The backoff.
        delay: Duration,
    },
    /// etcd was spawned.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// A re-executed supervisor took etcd over.
    Adopted {
        /// Its pid.
        pid: u32,
        /// The supervisor version that handed it over.
        from: String,
    },
    /// A stop of an etcd that was never healthy is not ended early.
    NoFastStop,
    /// etcd's data is closed this long after SIGTERM; SIGKILL ends the rest.
    DataClosed(Duration),
    /// The data watch cannot tell; the stop takes its ordinary course.
    CannotTell(String),
    /// A signal is forwarded to etcd.
    Forwarding(Signal),
    /// A signal is dropped: etcd is not running.
    Dropped(Signal),
    /// A stop came while etcd was down (or starting): the supervisor exits.
    StopWhileDown {
        /// The signal.
        sig: Signal,
        /// A start was being prepared.
        starting: bool,
    },
    /// etcd is healthy for the first time, this long after its start.
    Ready {
        /// Since the start.
        took: Duration,
    },
    /// etcd is healthy again.
    HealthyAgain,
    /// etcd is unhealthy.
    Unhealthy,
    /// A stop the driver asked for ended.
    StoppedForUpgrade {
        /// How.
        stopped: Stopped,
        /// SIGKILL followed the data seen closed this long after SIGTERM.
        data_closed: Option<Duration>,
    },
    /// etcd exited while the driver holds it; the driver decides.
    ExitedDuringTurn(ChildExit),
    /// etcd stopped on the supervisor's stop: the supervisor exits with `code`.
    StoppedExiting {
        /// etcd's exit.
        exit: ChildExit,
        /// The supervisor's code.
        code: i32,
        /// What ended the stop.
        ended: StopEnd,
        /// Since SIGTERM.
        took: Option<Duration>,
        /// SIGKILL followed the data seen closed this long after SIGTERM.
        data_closed: Option<Duration>,
    },
    /// etcd exited before it ever became healthy: no restart.
    NeverHealthy {
        /// etcd's exit.
        exit: ChildExit,
        /// The supervisor's code.
        code: i32,
    },
    /// etcd crashed and is restarted after `delay`.
    Restarting {
        /// etcd's exit.
        exit: ChildExit,
        /// Crashes so far.
        crashes: u32,
        /// The backoff.
        delay: Duration,
    },
    /// etcd did not stop within the stop timeout; SIGKILL.
    StopTimedOut(Duration),
    /// SIGHUP while stopping.
    ReloadIgnored,
    /// SIGHUP while a reload is under way.
    ReloadUnderWay,
    /// The new binary can take over (its own line).
    CanTakeOver(String),
    /// A reload changed nothing, for this reason.
    ReloadRefused(String),
    /// The quiet point: the driver stands down.
    DriverStandsDown(Phase),
    /// The reload waits (logged once).
    ReloadWaits {
        /// The driver's phase.
        phase: Phase,
        /// etcd runs under the loop's own care.
        settled: bool,
    },
    /// The driver did not stand down in time.
    DriverLate,
}
