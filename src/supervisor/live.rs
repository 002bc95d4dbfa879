//! The real world behind [`super::host`]: etcd spawned through the reaper, `/health`
//! polled over HTTP, the WAL and db locks probed, the new binary checked as a subprocess
//! and exec'd in place.

use std::future::Future;
use std::os::fd::AsFd;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::closing::{self, DataWatch};
use super::control::Health;
use super::host::{EtcdHandle, Handed, Host};
use super::reexec::{self, ReloadSetup};
use super::start::{self, StartPlan};
use super::systemd::Notifier;
use super::{health, RunError};
use crate::etcd::{Client, StreamPlacement};
use crate::process::child::{EtcdProcess, SpawnOptions};
use crate::process::data_locks::DataLocks;
use crate::process::handover;
use crate::process::log_tail::LogTail;
use crate::process::reaper::{ChildExit, Reaper};
use crate::versions::store::Pinned;

impl EtcdHandle for EtcdProcess {
    fn pid(&self) -> u32 {
        EtcdProcess::pid(self)
    }

    fn signal(&self, sig: Signal) {
        EtcdProcess::signal(self, sig);
    }

    fn wait(&mut self) -> impl Future<Output = ChildExit> + Send + '_ {
        EtcdProcess::wait(self)
    }
}

/// The real world of one member.
pub struct LiveHost {
    /// Spawns and reaps.
    pub reaper: Reaper,
    /// What a start needs.
    pub plan: StartPlan,
    /// etcd's own arguments.
    pub etcd_args: Vec<String>,
    /// The client for /health.
    pub client: Client,
    /// How often /health is polled once etcd is up.
    pub health_interval: std::time::Duration,
    /// etcd's WAL and db locks.
    pub locks: DataLocks,
    /// The tail of etcd's stderr.
    pub log: LogTail,
    /// The member's name, for logs.
    pub member: String,
    /// How to re-execute on SIGHUP.
    pub reexec: Option<ReloadSetup>,
    /// Where the driver's long-lived etcd calls sit.
    pub streams: StreamPlacement,
}

/// Longest wait for the driver's long-lived calls to leave this member before it is told to
/// stop: they move in milliseconds (a dropped stream, reopened elsewhere); a stuck one
/// costs its stop this much at most, instead of etcd's request timeout.
const STEP_ASIDE_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

impl Host for LiveHost {
    type Child = EtcdProcess;

    fn reloads(&self) -> bool {
        self.reexec.is_some()
    }

    fn log(&self) -> LogTail {
        self.log.clone()
    }

    fn prepare(&self) -> impl Future<Output = Result<Pinned, RunError>> + Send + 'static {
        start::prepare(self.plan.clone())
    }

    /// Spawns etcd here on the main thread (the one PR_SET_PDEATHSIG is tied to); the slow
    /// checks were done by [`start::prepare`].
    fn spawn(&mut self, pinned: &Pinned) -> Result<EtcdProcess, RunError> {
        Notifier.status(&format!("starting etcd {}", pinned.version));
        self.log.clear();
        let child = EtcdProcess::spawn_with(
            &self.reaper,
            &pinned.binary,
            &self.etcd_args,
            SpawnOptions {
                stderr_tail: Some(self.log.clone()),
                ..SpawnOptions::default()
            },
        )?;
        Ok(child)
    }

    fn poll_health(&self, tx: watch::Sender<Health>) -> impl Future<Output = ()> + Send + 'static {
        health::poll_health(self.client.clone(), self.health_interval, tx)
    }

    fn watch_data(&self, until: Instant) -> impl Future<Output = DataWatch> + Send + 'static {
        closing::watch(self.locks.clone(), closing::PROBE_EVERY, until)
    }

    fn check_new_binary(
        &self,
        handed: &Handed,
    ) -> impl Future<Output = Result<String, String>> + Send + 'static {
        let checked = self
            .reexec
            .as_ref()
            .map(|setup| reexec::check_new_binary(setup, &self.reaper, &self.member, handed));
        async move {
            match checked {
                Some(check) => check.await,
                None => Err("no relaunch path".to_owned()),
            }
        }
    }

    fn step_aside(&self) -> impl Future<Output = ()> + Send + 'static {
        let streams = self.streams.clone();
        let member = self.member.clone();
        async move {
            let started = Instant::now();
            streams.step_aside();
            let cleared = streams.cleared(STEP_ASIDE_BOUND).await;
            let took_ms = started.elapsed().as_millis() as u64;
            if cleared {
                tracing::debug!(
                    member,
                    took_ms,
                    "long-lived etcd calls moved off this member"
                );
            } else {
                tracing::warn!(
                    member,
                    open = streams.on_local(),
                    bound_ms = STEP_ASIDE_BOUND.as_millis() as u64,
                    "long-lived etcd calls did not leave this member in time; its stop may wait for them up to etcd's request timeout"
                );
            }
        }
    }

    fn come_home(&self) {
        self.streams.home();
    }

    fn drop_record(&self) {
        if let Some(setup) = &self.reexec {
            // Only an exec may leave it behind (the new image removes it).
            let _ = std::fs::remove_file(&setup.record);
        }
    }

    async fn exec(&mut self, mut child: Option<&mut EtcdProcess>, handed: &Handed) -> String {
        let Some(setup) = &self.reexec else {
            return "no relaunch path".to_owned();
        };
        let stderr = match child.as_deref_mut() {
            Some(c) => c.hand_over_stderr().await,
            None => None,
        };
        let why = reexec::try_exec(
            setup,
            &self.member,
            handed,
            stderr.as_ref().map(AsFd::as_fd),
        );
        // Still here: etcd's stderr is copied by this process again.
        if let Some(fd) = &stderr {
            let _ = handover::set_inherit(fd.as_fd(), false);
        }
        if let (Some(fd), Some(c)) = (stderr, child) {
            c.resume_stderr(fd, self.log.clone());
        }
        why
    }
}
