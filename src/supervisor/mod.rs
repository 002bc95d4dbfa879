//! The run loop: keep the pinned etcd running.
//!
//! Theory of operation: the child's lifecycle is a pure state machine ([`lifecycle`]:
//! Down, Preparing, Running, Stopping, Killing, and a reload beside them). This module is
//! the shell around it: it waits for the loop's inputs (the child's exit, a signal to the
//! supervisor, the lifecycle's timers, the end of the data watch, the end of a start being
//! prepared, a change of etcd's /health, a request of the upgrade driver, the driver's
//! phase, the end of a reload's check or of the driver's task, and the systemd watchdog
//! tick), feeds each to [`lifecycle::step`], and performs the effects it returns through
//! a [`host::Host`] ([`live::LiveHost`] in production, a fake child in the tests).
//!
//! Nothing in an arm waits: a start is prepared (data dir lock, binary hash) by a task of
//! [`start`] and only the spawn happens in the loop, so a SIGTERM is answered at once in
//! every state, and an error ends the loop through the same epilogue as a signal.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::config::RunSettings;
use crate::etcd::{Client, ClientConfig, StreamPlacement};
use crate::metrics::Metrics;
use crate::process::child::{EtcdProcess, Stopped};
use crate::process::data_locks::DataLocks;
use crate::process::log_tail::LogTail;
use crate::process::reaper::{ChildExit, Reaper};
use crate::upgrade::turn::machine::Phase;
use crate::versions::store::{Pinned, VersionStore};
use closing::DataWatch;
use host::{EtcdHandle, Handed, Host};
use lifecycle::{Effect, Input, Lifecycle, ReqId, Rules, Spawned, StartFailure};
use systemd::Notifier;

pub mod closing;
pub mod control;
pub mod error;
pub mod health;
pub mod host;
mod journal;
pub mod lifecycle;
pub mod live;
pub mod reexec;
pub mod signals;
pub mod start;
pub mod systemd;

pub use control::{ChildControl, ChildRequest, ChildStatus, DriverStarter, Health};
pub use error::RunError;
pub use lifecycle::exit::{on_exit, AfterExit, ExitContext};
pub use signals::Signals;

/// The shell's resources; the decisions are in `life`.
struct RunLoop<H: Host> {
    host: H,
    member: String,
    metrics: Metrics,
    notifier: Notifier,
    life: Lifecycle,
    child: Option<H::Child>,
    starting: Option<JoinHandle<Result<Pinned, RunError>>>,
    /// The error of the start just reported, kept for [`Effect::Fail`].
    start_error: Option<RunError>,
    poller: Option<JoinHandle<()>>,
    health_rx: watch::Receiver<Health>,
    closing: Option<JoinHandle<DataWatch>>,
    check: Option<JoinHandle<Result<String, String>>>,
    status_tx: watch::Sender<ChildStatus>,
    shutdown_tx: watch::Sender<bool>,
    start_replies: HashMap<ReqId, oneshot::Sender<Result<u32, String>>>,
    stop_replies: HashMap<ReqId, oneshot::Sender<Stopped>>,
    next_id: ReqId,
    /// Why the loop could not go on, returned once the driver has been told.
    failure: Option<RunError>,
}

impl<H: Host> RunLoop<H> {
    /// Feeds `input` to the lifecycle and performs what it says, with any inputs the
    /// effects produce at once.
    async fn apply(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let (next, effects) = lifecycle::step(&self.life, Instant::now(), input);
            self.life = next;
            // Before any answer: the driver reads the status once it is answered.
            self.publish_status();
            for effect in effects {
                queue.extend(self.perform(effect).await);
            }
        }
    }

    fn publish_status(&self) {
        let etcd = self.life.etcd();
        let status = ChildStatus {
            pid: etcd.map(|e| e.pid),
            health: etcd.map_or(Health::Unknown, |e| e.health),
            last_exit: self.life.last_exit,
        };
        self.status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    fn handed(&self) -> Handed {
        Handed {
            pid: self.child.as_ref().map(EtcdHandle::pid),
            version: self.life.version.clone(),
            ever_healthy: self.life.ever_healthy,
            healthy: self.status_tx.borrow().health == Health::Healthy,
            crashes: self.life.crashes,
        }
    }

    async fn perform(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Prepare => self.starting = Some(tokio::spawn(self.host.prepare())),
            Effect::AbandonStart => {
                if let Some(task) = self.starting.take() {
                    task.abort();
                }
            }
            Effect::AnswerStart(id, answer) => {
                if let Some(reply) = self.start_replies.remove(&id) {
                    let _ = reply.send(answer);
                }
            }
            Effect::AnswerStop(id, stopped) => {
                if let Some(reply) = self.stop_replies.remove(&id) {
                    let _ = reply.send(stopped);
                }
            }
            Effect::Signal(sig) => {
                if self.child.is_some() && matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                    self.host.step_aside().await;
                }
                if let Some(child) = &self.child {
                    child.signal(sig);
                    if sig == Signal::SIGTERM {
                        // Test builds only: a crash test's kill after SIGTERM, before etcd exits.
                        crate::failpoint::kill_at(crate::failpoint::ETCD_SIGNALLED);
                    }
                }
            }
            Effect::WatchData(until) => {
                if let Some(w) = self.closing.take() {
                    w.abort();
                }
                self.closing = Some(tokio::spawn(self.host.watch_data(until)));
            }
            Effect::PollHealth(initial) => {
                let (tx, rx) = watch::channel(initial);
                if let Some(p) = self.poller.take() {
                    p.abort();
                }
                self.poller = Some(tokio::spawn(self.host.poll_health(tx)));
                self.health_rx = rx;
            }
            Effect::ChildGone => {
                self.child = None;
                if let Some(p) = self.poller.take() {
                    p.abort();
                }
                if let Some(w) = self.closing.take() {
                    w.abort();
                }
            }
            Effect::EtcdUp(up) => self.metrics.set_etcd_up(up),
            Effect::ComeHome => self.host.come_home(),
            Effect::StopMeasured(ended, took) => self.metrics.stopped(ended.as_str(), took),
            Effect::Restarted => self.metrics.restarted(),
            Effect::Ready(status) => self.notifier.ready(&status),
            Effect::Status(status) => self.notifier.status(&status),
            Effect::Stopping => self.notifier.stopping(),
            Effect::Reloading(status) => self.notifier.reloading(&status),
            Effect::TellDriver => {
                let _ = self.shutdown_tx.send(true);
            }
            Effect::Fail => self.failure = self.start_error.take(),
            Effect::CheckNewBinary => {
                let check = self.host.check_new_binary(&self.handed());
                self.check = Some(tokio::spawn(check));
            }
            Effect::CancelCheck => {
                if let Some(task) = self.check.take() {
                    task.abort();
                }
            }
            Effect::DropRecord => self.host.drop_record(),
            Effect::Exec => {
                let handed = self.handed();
                let why = self.host.exec(self.child.as_mut(), &handed).await;
                tracing::error!(member = self.member, reason = %why, "reload failed after the upgrade driver stood down: etcd keeps running under this supervisor; upgrades resume after a restart of the supervisor");
                self.notifier.ready(&format!(
                    "etcd {}; reload failed, upgrades off until restart: {why}",
                    self.life.version
                ));
            }
            Effect::Log(note) => journal::write(&note, &self.member, &self.life.version),
        }
        None
    }

    /// A start's preparation ended: spawn etcd from it, here on the loop's thread.
    fn spawned(&mut self, prepared: Result<Result<Pinned, RunError>, JoinError>) -> Input {
        self.starting = None;
        let result = prepared
            .map_err(|e| RunError::Worker(e.to_string()))
            .and_then(|r| r)
            .and_then(|pinned| Ok((self.host.spawn(&pinned)?, pinned.version)));
        match result {
            Ok((child, version)) => {
                let pid = child.pid();
                self.child = Some(child);
                Input::Started(Ok(Spawned { pid, version }))
            }
            Err(e) => {
                let failure = StartFailure {
                    why: e.to_string(),
                    data_dir_in_use: matches!(e, RunError::DataDirInUse(_)),
                };
                self.start_error = Some(e);
                Input::Started(Err(failure))
            }
        }
    }

    /// A request of the driver, its answer kept until the lifecycle gives it.
    fn request(&mut self, req: ChildRequest) -> Input {
        self.next_id += 1;
        let id = self.next_id;
        match req {
            ChildRequest::Stop(reply) => {
                self.stop_replies.insert(id, reply);
                Input::Stop(id)
            }
            ChildRequest::Start(reply) => {
                self.start_replies.insert(id, reply);
                Input::Start(id)
            }
            ChildRequest::Resume => Input::Resume,
        }
    }
}

/// Waits for the child's exit, or forever when there is none.
async fn child_exit<C: EtcdHandle>(child: &mut Option<C>) -> ChildExit {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Waits for a task, or forever when there is none.
async fn task_end<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt<T: Copy>(at: Option<(Instant, T)>) -> T {
    match at {
        Some((at, what)) => {
            tokio::time::sleep_until(at).await;
            what
        }
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
        settings,
        reaper,
        signals,
        pinned,
        driver,
        held,
        metrics,
        reload,
        StreamPlacement::default(),
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

/// [`run_with`], re-executing on SIGHUP and taking over an etcd as `reload` says; the
/// driver's long-lived etcd calls step aside from `streams` before each stop.
#[allow(clippy::too_many_arguments)] // run_with's inputs plus the reload's
pub async fn run_with_reload(
    settings: RunSettings,
    reaper: Reaper,
    signals: Signals,
    pinned: Pinned,
    driver: DriverStarter,
    held: bool,
    metrics: Metrics,
    reload: Reexec,
    streams: StreamPlacement,
) -> Result<i32, RunError> {
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(settings.member.client_urls.clone())
    })?;
    let log = LogTail::default();
    let adopted = reload.adopted.map(|etcd| {
        let stderr = etcd.stderr.map(|fd| (fd, log.clone()));
        let child = EtcdProcess::adopted(etcd.pid, etcd.exit, stderr);
        let facts = lifecycle::Adopted {
            pid: etcd.pid,
            version: etcd.version,
            ever_healthy: etcd.ever_healthy,
            healthy: etcd.healthy,
            crashes: etcd.crashes,
            from: etcd.from,
        };
        (child, facts)
    });
    let host = live::LiveHost {
        reaper,
        plan: start::StartPlan {
            store: VersionStore::new(&settings.state_dir),
            versions_dir: settings.versions_dir(),
            data_dir: settings.member.data_dir.clone(),
            patience: settings.stop_timeout,
        },
        etcd_args: settings.etcd_args.clone(),
        client,
        health_interval: settings.health_interval,
        locks: DataLocks::new(
            &settings.member.data_dir,
            settings.member.wal_dir.as_deref(),
        ),
        log,
        member: settings.member.name.clone(),
        reexec: reload.setup,
        streams,
    };
    run_on(
        host, &settings, signals, pinned, driver, held, metrics, adopted,
    )
    .await
}

/// The loop on `host`: starts (or adopts) etcd, serves until the lifecycle is finished,
/// then tells the driver and waits for it, bounded by the stop timeout.
#[allow(clippy::too_many_arguments)] // run_with_reload's inputs, resolved
async fn run_on<H: Host>(
    host: H,
    settings: &RunSettings,
    mut signals: Signals,
    pinned: Pinned,
    driver: DriverStarter,
    held: bool,
    metrics: Metrics,
    adopted: Option<(H::Child, lifecycle::Adopted)>,
) -> Result<i32, RunError> {
    let notifier = Notifier;
    let watchdog = notifier.watchdog_interval();
    let (status_tx, status_rx) = watch::channel(ChildStatus {
        pid: None,
        health: Health::Unknown,
        last_exit: None,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (phase_tx, mut phase_rx) = watch::channel(Phase::Idle);
    let (req_tx, mut req_rx) = mpsc::channel(8);
    let rules = Rules {
        stop_timeout: settings.stop_timeout,
        backoff: settings.backoff,
        reload: host.reloads(),
    };
    let log = host.log();
    let mut lp = RunLoop {
        host,
        member: settings.member.name.clone(),
        metrics,
        notifier,
        life: Lifecycle::new(rules, pinned.version, held),
        child: None,
        starting: None,
        start_error: None,
        poller: None,
        health_rx: watch::channel(Health::Unknown).1,
        closing: None,
        check: None,
        status_tx,
        shutdown_tx,
        start_replies: HashMap::new(),
        stop_replies: HashMap::new(),
        next_id: 0,
        failure: None,
    };
    let mut driver_task = tokio::spawn(driver(ChildControl {
        requests: req_tx,
        status: status_rx,
        shutdown: shutdown_rx,
        log,
        phase: phase_tx,
    }));
    let boot = adopted.map(|(child, facts)| {
        lp.child = Some(child);
        facts
    });
    lp.apply(Input::Boot(boot)).await;
    let mut driver_done = false;
    let mut phase_open = true;
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    let code = loop {
        if let Some(code) = lp.life.finished() {
            break code;
        }
        let input = tokio::select! {
            exit = child_exit(&mut lp.child) => Some(Input::Exited(exit)),
            sig = signals.recv() => Some(Input::Signal(sig)),
            timer = sleep_until_opt(lp.life.next_timer()) => Some(Input::Timer(timer)),
            seen = task_end(&mut lp.closing) => {
                lp.closing = None;
                Some(Input::DataWatched(seen.unwrap_or_else(|e| DataWatch::CannotTell(e.to_string()))))
            }
            prepared = task_end(&mut lp.starting) => Some(lp.spawned(prepared)),
            changed = lp.health_rx.changed(), if lp.child.is_some() => {
                changed.ok().map(|()| Input::Health(*lp.health_rx.borrow_and_update()))
            }
            Some(req) = req_rx.recv() => Some(lp.request(req)),
            checked = task_end(&mut lp.check) => {
                lp.check = None;
                Some(Input::Checked(checked.map_err(|e| e.to_string()).and_then(|r| r)))
            }
            changed = phase_rx.changed(), if phase_open => {
                phase_open = changed.is_ok();
                changed.ok().map(|()| Input::DriverPhase(*phase_rx.borrow_and_update()))
            }
            _ = &mut driver_task, if lp.life.draining() => {
                driver_done = true;
                Some(Input::DriverDone)
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                lp.notifier.watchdog();
                None
            }
        };
        if let Some(input) = input {
            lp.apply(input).await;
        }
    };
    // However the loop ended (signal, or etcd failing before it was ever healthy), the
    // driver is told now, so it releases the turn at once instead of being waited out.
    let _ = lp.shutdown_tx.send(true);
    // The driver releases the turn and persists its state; bounded so a hung etcd cannot
    // keep the supervisor from exiting.
    if !driver_done
        && tokio::time::timeout(settings.stop_timeout, &mut driver_task)
            .await
            .is_err()
    {
        tracing::warn!(
            member = lp.member,
            "upgrade driver did not finish in time; exiting anyway"
        );
    }
    match lp.failure {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

#[cfg(test)]
mod fake_child_tests;
#[cfg(test)]
mod tests;
