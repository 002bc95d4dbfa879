//! A child process (etcd, or a tool run beside it): spawn, signal and wait for it. When
//! to stop etcd and when to escalate to SIGKILL is the run loop's lifecycle
//! (`supervisor::lifecycle`), which owns the deadline.
//!
//! The child inherits stdout; its stderr (where etcd logs) is either inherited or passed
//! through the supervisor unchanged with its last lines kept ([`SpawnOptions::stderr_tail`]),
//! so a failed start can be told apart: a usage error or a crash. It gets `PR_SET_PDEATHSIG(SIGTERM)` so that a
//! killed supervisor never leaves an etcd holding the data dir, and `NOTIFY_SOCKET` is
//! removed from its environment because the supervisor, not etcd, is the unit's main PID.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::process::log_tail::{LogTail, Tee};
use crate::process::reaper::{ChildExit, Reaper, ReaperError};

/// Environment variables that belong to the supervisor's systemd contract, not etcd's.
const SYSTEMD_VARS: &[&str] = &["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A running etcd process.
#[derive(Debug)]
pub struct EtcdProcess {
    pid: Pid,
    started: Instant,
    exit: oneshot::Receiver<ChildExit>,
    exited: Option<ChildExit>,
    /// The copy of its stderr, when it goes through the supervisor.
    tee: Option<Tee>,
}

/// Copies etcd's stderr through the supervisor; on failure etcd writes into a closed pipe
/// and ends, and its exit says so.
fn start_tee(fd: OwnedFd, tail: LogTail) -> Option<Tee> {
    Tee::spawn(fd, tail)
        .map_err(|e| tracing::error!(error = %e, "cannot read etcd's stderr"))
        .ok()
}

/// How a requested stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The child's exit.
    pub exit: ChildExit,
    /// What ended it.
    pub ended: StopEnd,
    /// Time from the stop request to the exit.
    pub took: Duration,
}

/// What ended a stop that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEnd {
    /// The process exited by itself after SIGTERM (or was not running).
    Exited,
    /// Its data was closed (WAL and db locks free), and SIGKILL ended the rest: a clean stop.
    DataClosed,
    /// The stop timeout passed and SIGKILL was sent with the data still open.
    Escalated,
}

impl StopEnd {
    /// The name used in logs and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            StopEnd::Exited => "exited",
            StopEnd::DataClosed => "data_closed",
            StopEnd::Escalated => "escalated",
        }
    }
}

/// Where a child's output goes and what its environment lacks or adds, beyond the
/// supervisor's own (systemd's variables are always removed).
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// stdout and stderr go to this file; `None`: inherited.
    pub output: Option<File>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Variables set (after the removals).
    pub env: Vec<(String, String)>,
    /// With `output` unset: stderr goes through the supervisor, copied unchanged to its own
    /// stderr, and its last lines are kept here.
    pub stderr_tail: Option<LogTail>,
}

impl EtcdProcess {
    /// Starts `binary` with `args` through the reaper.
    pub fn spawn(reaper: &Reaper, binary: &Path, args: &[String]) -> Result<Self, ReaperError> {
        Self::spawn_with(reaper, binary, args, SpawnOptions::default())
    }

    /// Starts `binary` with `args` through the reaper, its output and environment as
    /// `options` say (a private etcd whose log must be read back, a tool run beside it).
    pub fn spawn_with(
        reaper: &Reaper,
        binary: &Path,
        args: &[String],
        options: SpawnOptions,
    ) -> Result<Self, ReaperError> {
        let mut cmd = Command::new(binary);
        cmd.args(args).stdin(Stdio::null());
        match options.output {
            Some(file) => {
                let err = file.try_clone().map_err(|source| ReaperError::Spawn {
                    program: binary.display().to_string(),
                    source,
                })?;
                cmd.stdout(file).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::inherit());
                if options.stderr_tail.is_some() {
                    cmd.stderr(Stdio::piped());
                } else {
                    cmd.stderr(Stdio::inherit());
                }
            }
        }
        for var in SYSTEMD_VARS {
            cmd.env_remove(var);
        }
        for var in &options.env_remove {
            cmd.env_remove(var);
        }
        for (key, value) in &options.env {
            cmd.env(key, value);
        }
        let parent = std::process::id() as i32;
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid, sigprocmask, kill).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut spawned = reaper.spawn(&mut cmd)?;
        let tee = match (options.stderr_tail, spawned.child.stderr.take()) {
            (Some(tail), Some(stderr)) => start_tee(stderr.into(), tail),
            _ => None,
        };
        Ok(Self {
            pid: spawned.pid,
            started: Instant::now(),
            exit: spawned.exit,
            exited: None,
            tee,
        })
    }

    /// An etcd this process did not spawn but is the parent of (a re-executed supervisor
    /// took it over): `exit` comes from [`Reaper::start_adopting`], `stderr` is the pipe
    /// the previous process image read, copied on as before.
    pub fn adopted(
        pid: u32,
        exit: oneshot::Receiver<ChildExit>,
        stderr: Option<(OwnedFd, LogTail)>,
    ) -> Self {
        Self {
            pid: Pid::from_raw(pid as i32),
            started: Instant::now(),
            exit,
            exited: None,
            tee: stderr.and_then(|(fd, tail)| start_tee(fd, tail)),
        }
    }

    /// Copies etcd's stderr from `fd` again (a reload that could not exec takes it back).
    pub fn resume_stderr(&mut self, fd: OwnedFd, tail: LogTail) {
        self.tee = start_tee(fd, tail);
    }

    /// Stops copying etcd's stderr and returns the pipe, for the re-executed supervisor.
    pub async fn hand_over_stderr(&mut self) -> Option<OwnedFd> {
        match self.tee.take() {
            Some(tee) => Some(tee.hand_over().await),
            None => None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Sends `sig` unless the process has already been reaped (its pid may be reused).
    pub fn signal(&self, sig: Signal) {
        if self.exited.is_some() {
            return;
        }
        if let Err(e) = kill(self.pid, sig) {
            tracing::debug!(pid = self.pid.as_raw(), signal = sig.as_str(), error = %e, "signal not delivered");
        }
    }

    /// Waits for the process to exit. Cancel-safe: may be polled again after a cancel.
    pub async fn wait(&mut self) -> ChildExit {
        if let Some(exit) = self.exited {
            return exit;
        }
        // The reaper only drops the sender after sending; a closed channel without a value
        // would mean the reaper task is gone, which ends the runtime anyway.
        let exit = (&mut self.exit)
            .await
            .unwrap_or(ChildExit::Signal(libc::SIGKILL));
        self.exited = Some(exit);
        exit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(reaper: &Reaper, script: &str) -> EtcdProcess {
        EtcdProcess::spawn(
            reaper,
            Path::new("/bin/sh"),
            &["-c".to_owned(), script.to_owned()],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn death_by_the_sigterm_we_sent_counts_as_stopped_as_asked() {
        let reaper = Reaper::start().unwrap();
        let mut child = sh(&reaper, "exec sleep 30");
        child.signal(Signal::SIGTERM);
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap();
        assert_eq!(exit, ChildExit::Signal(libc::SIGTERM));
        assert!(exit.stopped_as_asked());
    }

    #[tokio::test]
    async fn systemd_variables_are_not_inherited() {
        let reaper = Reaper::start().unwrap();
        std::env::set_var("NOTIFY_SOCKET", "/run/test-notify");
        let mut child = sh(&reaper, "test -z \"${NOTIFY_SOCKET+x}\"");
        let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap();
        assert_eq!(exit, ChildExit::Code(0));
    }
}
