//! The run loop: keep the pinned etcd running.
//!
//! Theory of operation: the loop owns one etcd child at a time and reacts to ten inputs:
//! the child's exit, a signal to the supervisor, the stop deadline (escalation to SIGKILL),
//! the end of the data watch (etcd's data closed after SIGTERM: SIGKILL the rest, see
//! [`closing`]), the restart timer, the end of a start being prepared, a change of etcd's
//! /health, a request of the upgrade driver, and the systemd watchdog tick; and, during a
//! reload (SIGHUP, see [`reexec`]), the steps of the re-exec in place. What to do when the child
//! exits is decided by [`on_exit`], a plain function, so the policy (clean stop, fail fast,
//! restart with backoff) is tested without processes.
//!
//! Nothing in an arm waits: a start is prepared (data dir lock, binary hash) by a task of
//! [`start`] and only the spawn happens in the loop, so a SIGTERM is answered at once in
//! every state, and an error ends the loop through the same epilogue as a signal.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};

use crate::config::RunSettings;
use crate::etcd::{Client, ClientConfig};
use crate::metrics::Metrics;
use crate::process::child::{EtcdChild, SpawnOptions, StopEnd, Stopped};
use crate::process::data_locks::DataLocks;
use crate::process::log_tail::LogTail;
use crate::process::reaper::{ChildExit, Reaper};
use crate::versions::store::{Pinned, VersionStore};
use crate::versions::Version;
use notify::Notifier;

pub mod closing;
pub mod control;
pub mod error;
pub mod exit;
pub mod health;
pub mod notify;
pub mod reexec;
pub mod signals;
pub mod start;

pub use control::{ChildControl, ChildRequest, ChildStatus, DriverStarter, Health};
pub use error::RunError;
pub use exit::{on_exit, AfterExit, ExitContext};
pub use signals::Signals;

/// A start being prepared off the loop (see [`start::prepare`]).
struct Starting {
    task: JoinHandle<Result<Pinned, RunError>>,
    /// The driver's `Start` requests, answered once etcd runs (or cannot).
    replies: Vec<oneshot::Sender<Result<u32, String>>>,
    /// The supervisor's first start: failing it ends the supervisor, as before any health.
    first: bool,
}

/// The run loop's state.
struct RunLoop {
    metrics: Metrics,
    settings: RunSettings,
    reaper: Reaper,
    store: VersionStore,
    notifier: Notifier,
    client: Client,
    version: Version,
    child: Option<EtcdChild>,
    starting: Option<Starting>,
    poller: Option<tokio::task::JoinHandle<()>>,
    health_rx: watch::Receiver<Health>,
    status_tx: watch::Sender<ChildStatus>,
    /// The upgrade driver controls starts and stops; no automatic restart.
    held: bool,
    shutting_down: bool,
    stop_deadline: Option<Instant>,
    escalated: bool,
    /// When SIGTERM was first sent to this child for a stop we asked for.
    stop_sent: Option<Instant>,
    /// etcd's WAL and db locks, probed after SIGTERM.
    locks: DataLocks,
    /// This child has answered /health true: its data was open, so free locks after
    /// SIGTERM mean closed, not "not opened yet".
    child_healthy: bool,
    /// The watch for the data being closed, while a stop waits for it.
    closing: Option<JoinHandle<closing::DataWatch>>,
    /// SIGKILL was sent because the data was seen closed, this long after SIGTERM.
    data_closed: Option<Duration>,
    stop_reply: Option<(oneshot::Sender<Stopped>, Instant)>,
    restart_at: Option<Instant>,
    healthy_since: Option<Instant>,
    ever_healthy: bool,
    crashes: u32,
    exit_code: Option<i32>,
    /// Why the loop could not go on, returned once the driver has been told.
    failure: Option<RunError>,
    /// The tail of etcd's stderr, shared with the driver.
    log: LogTail,
    /// How to re-execute on SIGHUP; `None`: SIGHUP is forwarded to etcd like the others.
    reexec: Option<reexec::ReloadSetup>,
    /// A reload under way.
    reload: Option<reexec::Reload>,
}

impl RunLoop {
    fn member(&self) -> &str {
        &self.settings.member.name
    }

    /// Starts preparing a start of etcd on `current` (re-read when the data dir is free: the
    /// driver may have switched it); a start already under way takes `reply` too.
    fn begin_start(&mut self, reply: Option<oneshot::Sender<Result<u32, String>>>, first: bool) {
        if let Some(starting) = &mut self.starting {
            starting.replies.extend(reply);
            return;
        }
        let plan = start::StartPlan {
            store: self.store.clone(),
            versions_dir: self.settings.versions_dir(),
            data_dir: self.settings.member.data_dir.clone(),
            patience: self.settings.stop_timeout,
        };
        tracing::debug!(member = self.member(), "preparing to start etcd");
        self.starting = Some(Starting {
            task: tokio::spawn(start::prepare(plan)),
            replies: reply.into_iter().collect(),
            first,
        });
    }

    /// Drops a start being prepared; the driver's requests for it are answered with `why`.
    fn abandon_start(&mut self, why: &str) {
        if let Some(starting) = self.starting.take() {
            starting.task.abort();
            tracing::info!(
                member = self.member(),
                reason = why,
                "start of etcd abandoned"
            );
            for reply in starting.replies {
                let _ = reply.send(Err(why.to_owned()));
            }
        }
    }

    /// A start's preparation ended: spawn etcd, or apply the failure policy: the first
    /// start fails the supervisor (a broken install surfaces as a failed unit), a start the
    /// driver asked for is answered with the error (the driver rolls back), a restart
    /// blocked by a data dir that someone else still holds fails the supervisor, and any
    /// other restart is retried after backoff.
    fn on_prepared(&mut self, prepared: Result<Result<Pinned, RunError>, JoinError>) {
        let Some(starting) = self.starting.take() else {
            return;
        };
        let result = prepared
            .map_err(|e| RunError::Worker(e.to_string()))
            .and_then(|r| r)
            .and_then(|pinned| self.spawn(pinned));
        let for_driver = !starting.replies.is_empty();
        let answer = result.as_ref().map(|pid| *pid).map_err(ToString::to_string);
        for reply in starting.replies {
            let _ = reply.send(answer.clone());
        }
        let Err(e) = result else {
            return;
        };
        if for_driver && !starting.first {
            tracing::error!(member = self.member(), error = %e, "cannot start etcd for the upgrade");
        } else if starting.first || matches!(e, RunError::DataDirInUse(_)) {
            // Reported by `run_with` after the epilogue; the code here only ends the loop.
            self.exit_code = Some(1);
            self.failure = Some(e);
        } else {
            self.crashes += 1;
            let delay = self.settings.backoff.delay(self.crashes);
            tracing::error!(member = self.member(), error = %e, crashes = self.crashes, delay_ms = delay.as_millis() as u64, "cannot start etcd; retrying after backoff");
            self.restart_at = Some(Instant::now() + delay);
        }
    }

    /// Spawns etcd from `pinned`, here on the main thread (the one PR_SET_PDEATHSIG is
    /// tied to); the slow checks were done by [`start::prepare`].
    fn spawn(&mut self, pinned: Pinned) -> Result<u32, RunError> {
        self.version = pinned.version.clone();
        self.notifier
            .status(&format!("starting etcd {}", pinned.version));
        self.log.clear();
        let child = EtcdChild::spawn_with(
            &self.reaper,
            &pinned.binary,
            &self.settings.etcd_args,
            SpawnOptions {
                stderr_tail: Some(self.log.clone()),
                ..SpawnOptions::default()
            },
        )?;
        let pid = child.pid();
        tracing::info!(member = self.member(), version = %pinned.version, pid, "etcd started");
        self.start_poller(Health::Unknown);
        self.child = Some(child);
        self.healthy_since = None;
        self.stop_deadline = None;
        self.escalated = false;
        self.stop_sent = None;
        self.child_healthy = false;
        self.data_closed = None;
        if let Some(w) = self.closing.take() {
            w.abort();
        }
        self.status_tx.send_modify(|s| {
            s.pid = Some(pid);
            s.health = Health::Unknown;
        });
        Ok(pid)
    }

    /// (Re)starts polling /health, from `initial` (an adopted etcd is known healthy).
    fn start_poller(&mut self, initial: Health) {
        let (health_tx, health_rx) = watch::channel(initial);
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        self.poller = Some(tokio::spawn(health::poll_health(
            self.client.clone(),
            self.settings.health_interval,
            health_tx,
        )));
        self.health_rx = health_rx;
    }

    fn begin_stop(&mut self) {
        if let Some(child) = &self.child {
            child.signal(Signal::SIGTERM);
            // Test builds only: a crash test's kill after SIGTERM, before etcd exits.
            crate::failpoint::kill_at(crate::failpoint::ETCD_SIGNALLED);
            if self.stop_deadline.is_none() {
                self.stop_deadline = Some(Instant::now() + self.settings.stop_timeout);
            }
            self.sigterm_sent();
        }
    }

    /// SIGTERM went to the child for a stop: note when, and watch for its data to be
    /// closed, bounded by the stop deadline. Only for an etcd that was healthy (its data
    /// open); any other stop takes its ordinary course.
    fn sigterm_sent(&mut self) {
        let now = Instant::now();
        self.stop_sent.get_or_insert(now);
        if self.closing.is_some() || self.data_closed.is_some() || self.escalated {
            return;
        }
        if !self.child_healthy {
            tracing::debug!(
                member = self.member(),
                "etcd was never healthy; its stop is not ended early"
            );
            return;
        }
        let until = self
            .stop_deadline
            .unwrap_or(now + self.settings.stop_timeout);
        self.closing = Some(tokio::spawn(closing::watch(
            self.locks.clone(),
            closing::PROBE_EVERY,
            until.into(),
        )));
    }

    /// The data watch ended: SIGKILL the rest once etcd's data is closed.
    fn on_data_watch(&mut self, seen: Result<closing::DataWatch, JoinError>) {
        self.closing = None;
        let seen = seen.unwrap_or_else(|e| closing::DataWatch::CannotTell(e.to_string()));
        match seen {
            closing::DataWatch::Closed(after) => {
                let Some(child) = &self.child else { return };
                if self.escalated {
                    return;
                }
                tracing::debug!(
                    member = self.member(),
                    after_ms = after.as_millis() as u64,
                    "etcd's data is closed; ending the rest with SIGKILL"
                );
                child.signal(Signal::SIGKILL);
                self.data_closed = Some(after);
            }
            closing::DataWatch::CannotTell(why) => {
                tracing::info!(member = self.member(), reason = %why, "cannot tell when etcd's data is closed; waiting for it to exit");
            }
            closing::DataWatch::StillOpen => {}
        }
    }

    fn on_signal(&mut self, sig: Signal, shutdown_tx: &watch::Sender<bool>) {
        if self.reload_signal(sig) {
            return;
        }
        let stop = matches!(sig, Signal::SIGTERM | Signal::SIGINT);
        match &self.child {
            Some(child) => {
                tracing::info!(
                    member = self.member(),
                    signal = sig.as_str(),
                    "forwarding signal to etcd"
                );
                child.signal(sig);
            }
            None if !stop => {
                tracing::info!(
                    member = self.member(),
                    signal = sig.as_str(),
                    "etcd is not running; signal dropped"
                );
            }
            None => {}
        }
        if stop && !self.shutting_down {
            self.shutting_down = true;
            self.restart_at = None;
            self.notifier.stopping();
            let _ = shutdown_tx.send(true);
            if self.child.is_some() {
                self.stop_deadline = Some(Instant::now() + self.settings.stop_timeout);
                self.sigterm_sent();
            } else {
                let starting = self.starting.is_some();
                tracing::info!(
                    member = self.member(),
                    signal = sig.as_str(),
                    starting,
                    "stop requested while etcd is down; exiting"
                );
                self.abandon_start("the supervisor is shutting down");
                self.exit_code = Some(0);
            }
        }
    }

    fn on_health(&mut self, health: Health) {
        self.status_tx.send_modify(|s| s.health = health);
        self.metrics.set_etcd_up(health == Health::Healthy);
        let member = self.settings.member.name.clone();
        let version = self.version.clone();
        match health {
            Health::Healthy => {
                self.healthy_since = Some(Instant::now());
                self.child_healthy = true;
                let status = format!("etcd {version} healthy");
                if !self.ever_healthy {
                    self.ever_healthy = true;
                    let took_ms = self
                        .child
                        .as_ref()
                        .map_or(0, |c| c.started().elapsed().as_millis() as u64);
                    tracing::info!(member, %version, took_ms, "etcd is healthy; ready");
                    self.notifier.ready(&status);
                } else {
                    tracing::info!(member, %version, "etcd is healthy again");
                    self.notifier.status(&status);
                }
            }
            Health::Unhealthy => {
                self.healthy_since = None;
                tracing::warn!(member, %version, "etcd is unhealthy");
                self.notifier.status(&format!("etcd {version} unhealthy"));
            }
            Health::Unknown => {}
        }
    }

    fn on_child_exit(&mut self, exit: ChildExit) {
        let Some(child) = self.child.take() else {
            return;
        };
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        if let Some(w) = self.closing.take() {
            w.abort();
        }
        let pid = child.pid();
        self.status_tx.send_modify(|s| {
            s.pid = None;
            s.health = Health::Unknown;
            s.last_exit = Some((pid, exit));
        });
        let member = self.settings.member.name.clone();
        let version = self.version.clone();
        let ended = match self.data_closed {
            Some(_) if exit.is_signal(Signal::SIGKILL) => StopEnd::DataClosed,
            _ if self.escalated => StopEnd::Escalated,
            _ => StopEnd::Exited,
        };
        let stop_took = self.stop_sent.take().map(|t| t.elapsed());
        if let Some(took) = stop_took {
            self.metrics.stopped(ended.as_str(), took);
        }
        let data_closed_ms = self.data_closed.map(|d| d.as_millis() as u64);
        let took_ms = stop_took.map(|t| t.as_millis() as u64);
        if let Some((reply, asked)) = self.stop_reply.take() {
            let stopped = Stopped {
                exit,
                ended,
                took: asked.elapsed(),
            };
            tracing::info!(member, %version, %exit, ended = ended.as_str(), took_ms = stopped.took.as_millis() as u64, data_closed_ms, "etcd stopped for the upgrade");
            let _ = reply.send(stopped);
            if !self.shutting_down {
                return;
            }
        }
        if self
            .healthy_since
            .is_some_and(|t| t.elapsed() >= self.settings.backoff.reset_after)
        {
            self.crashes = 0;
        }
        if !self.shutting_down {
            self.crashes += 1;
        }
        if self.held && !self.shutting_down {
            // The driver is verifying this etcd: it sees the exit in the status and decides.
            tracing::warn!(member, %version, %exit, "etcd exited during the upgrade");
            return;
        }
        let ctx = ExitContext {
            stop_requested: self.shutting_down,
            escalated: self.escalated,
            data_closed: ended == StopEnd::DataClosed,
            ever_healthy: self.ever_healthy,
            crashes: self.crashes,
        };
        match on_exit(exit, ctx, &self.settings.backoff) {
            AfterExit::Exit(code) => {
                if self.shutting_down {
                    tracing::info!(member, %version, %exit, code, ended = ended.as_str(), took_ms, data_closed_ms, "etcd stopped; exiting");
                } else {
                    tracing::error!(member, %version, %exit, code,
                        "etcd exited before it ever became healthy; not restarting (check etcd's log above for the cause)");
                }
                self.exit_code = Some(code);
            }
            AfterExit::Restart(delay) => {
                self.metrics.restarted();
                tracing::error!(member, %version, %exit, crashes = self.crashes, delay_ms = delay.as_millis() as u64, "etcd exited unexpectedly; restarting after backoff");
                self.notifier.status(&format!(
                    "etcd exited ({exit}); restarting in {}",
                    humantime::format_duration(delay)
                ));
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    fn on_request(&mut self, req: ChildRequest) {
        match req {
            ChildRequest::Stop(reply) => {
                self.held = true;
                self.restart_at = None;
                self.abandon_start("etcd was stopped for the upgrade");
                if self.child.is_some() {
                    self.stop_reply = Some((reply, Instant::now()));
                    self.begin_stop();
                } else {
                    let exit = self
                        .status_tx
                        .borrow()
                        .last_exit
                        .map_or(ChildExit::Code(0), |(_, e)| e);
                    let _ = reply.send(Stopped {
                        exit,
                        ended: StopEnd::Exited,
                        took: Duration::ZERO,
                    });
                }
            }
            ChildRequest::Start(reply) => {
                self.held = true;
                self.restart_at = None;
                if self.shutting_down {
                    let _ = reply.send(Err("the supervisor is shutting down".to_owned()));
                } else if let Some(child) = &self.child {
                    let _ = reply.send(Ok(child.pid()));
                } else {
                    // Answered when the start is done; the loop keeps serving meanwhile.
                    self.begin_start(Some(reply), false);
                }
            }
            ChildRequest::Resume => {
                self.held = false;
                if self.child.is_none()
                    && self.starting.is_none()
                    && !self.shutting_down
                    && self.restart_at.is_none()
                {
                    self.restart_at = Some(Instant::now());
                }
            }
        }
    }
}

/// Waits for the child's exit, or forever when there is none.
async fn child_exit(child: &mut Option<EtcdChild>) -> ChildExit {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Waits for the start being prepared, or forever when there is none.
async fn prepared(starting: &mut Option<Starting>) -> Result<Result<Pinned, RunError>, JoinError> {
    match starting {
        Some(s) => (&mut s.task).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs etcd until the supervisor is asked to stop; returns the process exit code.
///
/// `driver` is started with the child's handles and runs beside the loop (the upgrade
/// driver). `held` starts with etcd stopped and under the driver's control (crash
/// recovery mid-swap).
pub async fn run_with(
    settings: RunSettings,
    reaper: Reaper,
    signals: Signals,
    pinned: Pinned,
    driver: DriverStarter,
    held: bool,
    metrics: Metrics,
) -> Result<i32, RunError> {
    let reload = Reexec::default();
    run_with_reload(
        settings, reaper, signals, pinned, driver, held, metrics, reload,
    )
    .await
}

/// A run loop's part in re-executing in place (see [`reexec`]).
#[derive(Debug, Default)]
pub struct Reexec {
    /// How to re-execute on SIGHUP; without it SIGHUP is forwarded to etcd.
    pub setup: Option<reexec::ReloadSetup>,
    /// The etcd a re-executed supervisor takes over instead of starting one.
    pub adopted: Option<reexec::AdoptedEtcd>,
}

/// [`run_with`], re-executing on SIGHUP and taking over an etcd as `reload` says.
#[allow(clippy::too_many_arguments)] // run_with's inputs plus the reload's
pub async fn run_with_reload(
    settings: RunSettings,
    reaper: Reaper,
    mut signals: Signals,
    pinned: Pinned,
    driver: DriverStarter,
    held: bool,
    metrics: Metrics,
    reload: Reexec,
) -> Result<i32, RunError> {
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(settings.member.client_urls.clone())
    })?;
    let notifier = Notifier;
    let watchdog = notifier.watchdog_interval();
    let (status_tx, status_rx) = watch::channel(ChildStatus {
        pid: None,
        health: Health::Unknown,
        last_exit: None,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (req_tx, mut req_rx) = mpsc::channel(8);
    let locks = DataLocks::new(
        &settings.member.data_dir,
        settings.member.wal_dir.as_deref(),
    );
    let mut lp = RunLoop {
        metrics,
        store: VersionStore::new(&settings.state_dir),
        settings,
        reaper,
        notifier,
        client,
        version: pinned.version,
        child: None,
        starting: None,
        poller: None,
        health_rx: watch::channel(Health::Unknown).1,
        status_tx,
        held,
        shutting_down: false,
        stop_deadline: None,
        escalated: false,
        stop_sent: None,
        locks,
        child_healthy: false,
        closing: None,
        data_closed: None,
        stop_reply: None,
        restart_at: None,
        healthy_since: None,
        ever_healthy: false,
        crashes: 0,
        exit_code: None,
        failure: None,
        log: LogTail::default(),
        reexec: reload.setup,
        reload: None,
    };
    let mut driver_task = tokio::spawn(driver(ChildControl {
        requests: req_tx,
        status: status_rx,
        shutdown: shutdown_rx,
        log: lp.log.clone(),
    }));
    if let Some(etcd) = reload.adopted {
        lp.adopt(etcd);
    } else if !lp.held {
        lp.begin_start(None, true);
    }
    let mut driver_done = false;
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    let code = loop {
        if let Some(code) = lp.exit_code {
            if lp.child.is_none() {
                break code;
            }
        }
        if lp.shutting_down && lp.child.is_none() {
            break lp.exit_code.unwrap_or(0);
        }
        let kill_at = lp
            .stop_deadline
            .filter(|_| !lp.escalated && lp.data_closed.is_none());
        tokio::select! {
            exit = child_exit(&mut lp.child) => lp.on_child_exit(exit),
            sig = signals.recv() => lp.on_signal(sig, &shutdown_tx),
            () = sleep_until_opt(kill_at) => {
                tracing::warn!(member = lp.member(), timeout = %humantime::format_duration(lp.settings.stop_timeout), "etcd did not stop in time; sending SIGKILL");
                if let Some(c) = &lp.child {
                    c.signal(Signal::SIGKILL);
                }
                lp.escalated = true;
            }
            seen = closing::finished(&mut lp.closing) => lp.on_data_watch(seen),
            () = sleep_until_opt(lp.restart_at) => {
                lp.restart_at = None;
                lp.begin_start(None, false);
            }
            result = prepared(&mut lp.starting) => lp.on_prepared(result),
            changed = lp.health_rx.changed(), if lp.child.is_some() => {
                if changed.is_ok() {
                    let health = *lp.health_rx.borrow_and_update();
                    lp.on_health(health);
                }
            }
            Some(req) = req_rx.recv() => lp.on_request(req),
            event = reexec::next(&mut lp.reload) => lp.on_reload(event, &shutdown_tx).await,
            _ = &mut driver_task, if lp.draining() => {
                driver_done = true;
                lp.exec_now().await;
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => lp.notifier.watchdog(),
        }
    };
    // However the loop ended (signal, or etcd failing before it was ever healthy), the
    // driver is told now, so it releases the turn at once instead of being waited out.
    let _ = shutdown_tx.send(true);
    // The driver releases the turn and persists its state; bounded so a hung etcd cannot
    // keep the supervisor from exiting.
    if !driver_done
        && tokio::time::timeout(lp.settings.stop_timeout, &mut driver_task)
            .await
            .is_err()
    {
        tracing::warn!(
            member = lp.member(),
            "upgrade driver did not finish in time; exiting anyway"
        );
    }
    match lp.failure {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

#[cfg(test)]
mod tests;
