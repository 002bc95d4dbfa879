//! The one place that waits for child processes.
//!
//! As PID 1 (a container entrypoint, `unshare --pid`) the supervisor inherits every orphan
//! and must reap them, which means `waitpid(-1)`. That call would also collect etcd's own
//! status and race with any other wait on it, so *all* waiting happens here: processes are
//! spawned through [`Reaper::spawn`], which registers their pid under the same lock the
//! reaper takes before routing a status, and every status is delivered to its owner over a
//! channel. Statuses of processes nobody registered (orphans) are logged and dropped.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ChildExit {
    /// The shell convention: the code itself, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signal(s) => 128 + s,
        }
    }

    /// True when a stop we asked for ended the way it should: code 0, or death by the
    /// SIGTERM/SIGINT that was sent (etcd re-raises the signal when it is not PID 1).
    pub fn stopped_as_asked(self) -> bool {
        matches!(self, ChildExit::Code(0))
            || self.is_signal(Signal::SIGTERM)
            || self.is_signal(Signal::SIGINT)
    }

    /// True when the process died of `sig`.
    pub fn is_signal(self, sig: Signal) -> bool {
        self == ChildExit::Signal(sig as i32)
    }
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildExit::Code(c) => write!(f, "exit code {c}"),
            ChildExit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Errors of spawning through the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// The OS refused to start the program.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program that was to be started.
        program: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// SIGCHLD could not be subscribed to.
    #[error("cannot watch for child exits: {0}")]
    Signal(#[source] std::io::Error),
}

/// A process started through the reaper.
#[derive(Debug)]
pub struct Spawned {
    /// The process id.
    pub pid: Pid,
    /// Resolves once with the process's exit.
    pub exit: oneshot::Receiver<ChildExit>,
    /// Pipes the caller asked for (stdout/stderr), still owned by the caller.
    pub child: std::process::Child,
}

#[derive(Default)]
struct Registry {
    waiting: HashMap<Pid, oneshot::Sender<ChildExit>>,
}

/// Owner of all `waitpid` calls in this process.
#[derive(Clone)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

impl Reaper {
    /// A reaper that never calls `waitpid`, for unit tests that start no process: a real
    /// one would collect the statuses of other tests' children.
    #[cfg(test)]
    pub(crate) fn idle() -> Self {
        Self {
            registry: Arc::new(Mutex::new(Registry::default())),
        }
    }

    /// Subscribes to SIGCHLD and starts the reaping task on the current runtime.
    pub fn start() -> Result<Self, ReaperError> {
        Self::start_adopting(None).map(|(reaper, _)| reaper)
    }

    /// Like [`Reaper::start`], with `adopted` (a child this process already has: the etcd a
    /// re-executed supervisor took over) registered before the first reaping pass, so its
    /// exit is routed even when it happened before this process image existed.
    pub fn start_adopting(
        adopted: Option<Pid>,
    ) -> Result<(Self, Option<oneshot::Receiver<ChildExit>>), ReaperError> {
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let reaper = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
        };
        let adopted = adopted.map(|pid| {
            let (tx, rx) = oneshot::channel();
            reaper.lock().waiting.insert(pid, tx);
            rx
        });
        let task = reaper.clone();
        tokio::spawn(async move {
            // SIGCHLD coalesces and can be lost between a check and a wait, so a slow tick
            // backs it up; reaping is cheap when there is nothing to reap.
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                task.reap_all();
            }
        });
        Ok((reaper, adopted))
    }

    /// Spawns `cmd` and registers it, so its exit is routed to the returned receiver.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Spawned, ReaperError> {
        let mut registry = self.lock();
        let child = cmd.spawn().map_err(|source| ReaperError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = oneshot::channel();
        registry.waiting.insert(pid, tx);
        drop(registry);
        Ok(Spawned {
            pid,
            exit: rx,
            child,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map inconsistent, so a poisoned
        // lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.route(pid, ChildExit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.route(pid, ChildExit::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            }
        }
    }

    fn route(&self, pid: Pid, exit: ChildExit) {
        match self.lock().waiting.remove(&pid) {
            // The owner may have stopped listening; the status is then of no use to anyone.
            Some(tx) => {
                let _ = tx.send(exit);
            }
            None => tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_exit_codes_and_signals_to_their_owner() {
        let reaper = Reaper::start().unwrap();
        let a = reaper
            .spawn(Command::new("sh").args(["-c", "exit 7"]))
            .unwrap();
        let b = reaper
            .spawn(Command::new("sh").args(["-c", "kill -TERM $$"]))
            .unwrap();
        let a = tokio::time::timeout(Duration::from_secs(10), a.exit)
            .await
            .unwrap()
            .unwrap();
        let b = tokio::time::timeout(Duration::from_secs(10), b.exit)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a, ChildExit::Code(7));
        assert_eq!(b, ChildExit::Signal(libc::SIGTERM));
        assert_eq!(b.exit_code(), 143);
        assert_eq!(b.to_string(), "signal SIGTERM");
    }

    #[test]
    fn stopped_as_asked_is_code_zero_or_the_signal_we_sent() {
        assert!(ChildExit::Code(0).stopped_as_asked());
        assert!(ChildExit::Signal(libc::SIGTERM).stopped_as_asked());
        assert!(ChildExit::Signal(libc::SIGINT).stopped_as_asked());
        assert!(!ChildExit::Code(1).stopped_as_asked());
        assert!(!ChildExit::Signal(libc::SIGKILL).stopped_as_asked());
    }
}
