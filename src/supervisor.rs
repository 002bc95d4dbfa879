//! `etcd-supervisor run`: keep the pinned etcd running.
//!
//! Theory of operation: the loop owns one etcd child at a time and reacts to four inputs:
//! the child's exit, a signal to the supervisor, a change of etcd's /health, and the
//! systemd watchdog tick. What to do when the child exits is decided by [`on_exit`], a
//! plain function, so the policy (clean stop, fail fast, restart with backoff) is tested
//! without processes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::child::{EtcdChild, Stopped};
use crate::config::{Backoff, RunSettings};
use crate::datadir;
use crate::etcd::{Client, ClientConfig};
use crate::metrics::{self, Metrics};
use crate::notify::Notifier;
use crate::reaper::{ChildExit, Reaper, ReaperError};
use crate::staging::{StagingError, StagingWatcher, WatchOptions};
use crate::upgrade::driver::{Driver, DriverConfig};
use crate::upgrade::machine::{self, Effect, Turn};
use crate::upgrade::state_file::{StateFile, StateFileError};
use crate::version::Version;
use crate::versions::{self, Pinned, VersionStore, VersionsError};

/// Why `run` could not keep etcd running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Nothing is pinned and no binary was given.
    #[error("no etcd version is installed in {0}; pass --etcd-binary PATH (or ETCD_SUPERVISOR_ETCD_BINARY) for the first start")]
    NothingInstalled(PathBuf),
    /// The given or pinned binary is unusable.
    #[error("{0}")]
    Versions(#[from] VersionsError),
    /// The state dir cannot be created or written.
    #[error(
        "state dir {dir} is not writable ({source}); create it, or choose another with --state-dir"
    )]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another etcd holds the data dir.
    #[error(transparent)]
    DataDirInUse(#[from] datadir::DataDirInUse),
    /// etcd could not be started at all.
    #[error(transparent)]
    Spawn(#[from] ReaperError),
    /// The HTTP client could not be built (bad TLS material and the like).
    #[error(transparent)]
    Client(#[from] crate::etcd::EtcdError),
    /// The staging directory cannot be watched.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// The metrics address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics-addr")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// state.json cannot be read.
    #[error(transparent)]
    State(#[from] StateFileError),
}

impl RunError {
    /// True for errors the operator fixes in the configuration (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::NothingInstalled(_)
                | RunError::Versions(_)
                | RunError::StateDir { .. }
                | RunError::Client(_)
                | RunError::Metrics { .. }
        ) || matches!(self, RunError::Staging(e) if e.exit_code() == 2)
    }
}

/// What the loop does after the child exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Leave with this process exit code.
    Exit(i32),
    /// Start etcd again after this delay.
    Restart(Duration),
}

/// Facts about the run that decide what an exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitContext {
    /// A stop was requested (SIGTERM/SIGINT to the supervisor).
    pub stop_requested: bool,
    /// The stop had to be escalated to SIGKILL.
    pub escalated: bool,
    /// etcd has answered /health true at least once since the supervisor started.
    pub ever_healthy: bool,
    /// Crashes since the last healthy period, including this one.
    pub crashes: u32,
}

/// The exit policy: a requested stop ends the supervisor with 0 when etcd stopped as asked
/// (code 0 or death by the signal we forwarded) and with etcd's own code otherwise; an etcd
/// that never became healthy fails fast, so a bad flag surfaces as a failed unit instead of
/// a restart loop; any other exit is a crash and is restarted with backoff.
pub fn on_exit(exit: ChildExit, ctx: ExitContext, backoff: &Backoff) -> AfterExit {
    if ctx.stop_requested {
        return AfterExit::Exit(if exit.stopped_as_asked() && !ctx.escalated {
            0
        } else {
            exit.exit_code()
        });
    }
    if !ctx.ever_healthy {
        return AfterExit::Exit(exit.exit_code());
    }
    AfterExit::Restart(backoff.delay(ctx.crashes.max(1)))
}

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

/// The signals the supervisor forwards to etcd.
pub struct Signals {
    term: SignalStream,
    int: SignalStream,
    hup: SignalStream,
    quit: SignalStream,
    usr1: SignalStream,
    usr2: SignalStream,
}

impl Signals {
    fn subscribe() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.hup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
            _ = self.usr1.recv() => Signal::SIGUSR1,
            _ = self.usr2.recv() => Signal::SIGUSR2,
        }
    }
}

/// Makes sure a version is pinned (installing `--etcd-binary` on first start) and returns it.
pub async fn ensure_pinned(settings: &RunSettings, reaper: &Reaper) -> Result<Pinned, RunError> {
    std::fs::create_dir_all(&settings.state_dir).map_err(|source| RunError::StateDir {
        dir: settings.state_dir.clone(),
        source,
    })?;
    check_writable(&settings.state_dir)?;
    let store = VersionStore::new(&settings.state_dir);
    let given = match &settings.etcd_binary {
        Some(path) => Some((
            path,
            versions::probe_version(reaper, path, versions::PROBE_TIMEOUT).await,
        )),
        None => None,
    };
    if let Some(pinned) = store.current()? {
        if let Some((path, probed)) = given {
            match probed {
                Ok(v) if v == pinned.version => {}
                Ok(v) => tracing::warn!(
                    given = %path.display(), given_version = %v, running_version = %pinned.version,
                    "--etcd-binary differs from the pinned version and is ignored; upgrades go through the staging directory"
                ),
                Err(e) => {
                    tracing::warn!(given = %path.display(), error = %e, "--etcd-binary is unusable and ignored; the pinned version runs")
                }
            }
        }
        store.verify(&pinned)?;
        return Ok(pinned);
    }
    let Some((path, probed)) = given else {
        return Err(RunError::NothingInstalled(settings.versions_dir()));
    };
    let version = probed?;
    let sum = versions::sha256_file(path)?;
    let pinned = store.install(path, &version, &sum)?;
    store.set_current(&version)?;
    tracing::info!(version = %version, binary = %pinned.binary.display(), sha256 = %sum, "pinned first etcd version");
    Ok(pinned)
}

fn check_writable(dir: &std::path::Path) -> Result<(), RunError> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|source| RunError::StateDir {
            dir: dir.to_path_buf(),
            source,
        })
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

    /// Hands supervision back to the run loop.
    pub async fn resume(&self) {
        let _ = self.requests.send(ChildRequest::Resume).await;
    }
}

/// Starts the upgrade driver, given the child's handles; its future ends the driver.
pub type DriverStarter = Box<
    dyn FnOnce(ChildControl) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
>;

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
    poller: Option<tokio::task::JoinHandle<()>>,
    health_rx: watch::Receiver<Health>,
    status_tx: watch::Sender<ChildStatus>,
    /// The upgrade driver controls starts and stops; no automatic restart.
    held: bool,
    shutting_down: bool,
    stop_deadline: Option<Instant>,
    escalated: bool,
    stop_reply: Option<(oneshot::Sender<Stopped>, Instant)>,
    restart_at: Option<Instant>,
    healthy_since: Option<Instant>,
    ever_healthy: bool,
    crashes: u32,
    exit_code: Option<i32>,
}

impl RunLoop {
    fn member(&self) -> &str {
        &self.settings.member.name
    }

    /// Spawns etcd on `current` (re-read: the driver may have switched it).
    fn spawn(&mut self) -> Result<u32, RunError> {
        let pinned = self
            .store
            .current()?
            .ok_or_else(|| RunError::NothingInstalled(self.settings.versions_dir()))?;
        self.store.verify(&pinned)?;
        self.version = pinned.version.clone();
        self.notifier
            .status(&format!("starting etcd {}", pinned.version));
        let child = EtcdChild::spawn(&self.reaper, &pinned.binary, &self.settings.etcd_args)?;
        let pid = child.pid();
        tracing::info!(member = self.member(), version = %pinned.version, pid, "etcd started");
        let (health_tx, health_rx) = watch::channel(Health::Unknown);
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        self.poller = Some(tokio::spawn(poll_health(
            self.client.clone(),
            self.settings.health_interval,
            health_tx,
        )));
        self.health_rx = health_rx;
        self.child = Some(child);
        self.healthy_since = None;
        self.stop_deadline = None;
        self.escalated = false;
        self.status_tx.send_modify(|s| {
            s.pid = Some(pid);
            s.health = Health::Unknown;
        });
        Ok(pid)
    }

    fn begin_stop(&mut self) {
        if let Some(child) = &self.child {
            child.signal(Signal::SIGTERM);
            if self.stop_deadline.is_none() {
                self.stop_deadline = Some(Instant::now() + self.settings.stop_timeout);
            }
        }
    }

    fn on_signal(&mut self, sig: Signal, shutdown_tx: &watch::Sender<bool>) {
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
            } else {
                tracing::info!(
                    member = self.member(),
                    signal = sig.as_str(),
                    "stop requested while etcd is down; exiting"
                );
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

    fn on_exit(&mut self, exit: ChildExit) {
        let Some(child) = self.child.take() else {
            return;
        };
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        let pid = child.pid();
        self.status_tx.send_modify(|s| {
            s.pid = None;
            s.health = Health::Unknown;
            s.last_exit = Some((pid, exit));
        });
        let member = self.settings.member.name.clone();
        let version = self.version.clone();
        if let Some((reply, asked)) = self.stop_reply.take() {
            let stopped = Stopped {
                exit,
                escalated: self.escalated,
                took: asked.elapsed(),
            };
            tracing::info!(member, %version, %exit, took_ms = stopped.took.as_millis() as u64, "etcd stopped for the upgrade");
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
            ever_healthy: self.ever_healthy,
            crashes: self.crashes,
        };
        match on_exit(exit, ctx, &self.settings.backoff) {
            AfterExit::Exit(code) => {
                if self.shutting_down {
                    tracing::info!(member, %version, %exit, code, "etcd stopped; exiting");
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
                        escalated: false,
                        took: Duration::ZERO,
                    });
                }
            }
            ChildRequest::Start(reply) => {
                self.held = true;
                let answer = if self.shutting_down {
                    Err("the supervisor is shutting down".to_owned())
                } else if let Some(child) = &self.child {
                    Ok(child.pid())
                } else {
                    self.spawn().map_err(|e| e.to_string())
                };
                let _ = reply.send(answer);
            }
            ChildRequest::Resume => {
                self.held = false;
                if self.child.is_none() && !self.shutting_down && self.restart_at.is_none() {
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs etcd until the supervisor is asked to stop; returns the process exit code.
///
/// `driver`, when given, is started with the child's handles and runs beside the loop (the
/// upgrade driver). `held` starts with etcd stopped and under the driver's control (crash
/// recovery mid-swap).
pub async fn run_with(
    settings: RunSettings,
    reaper: Reaper,
    mut signals: Signals,
    pinned: Pinned,
    driver: DriverStarter,
    held: bool,
    metrics: Metrics,
) -> Result<i32, RunError> {
    datadir::wait_until_free(&settings.member.data_dir, settings.stop_timeout).await?;
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
    let mut lp = RunLoop {
        metrics,
        store: VersionStore::new(&settings.state_dir),
        settings,
        reaper,
        notifier,
        client,
        version: pinned.version,
        child: None,
        poller: None,
        health_rx: watch::channel(Health::Unknown).1,
        status_tx,
        held,
        shutting_down: false,
        stop_deadline: None,
        escalated: false,
        stop_reply: None,
        restart_at: None,
        healthy_since: None,
        ever_healthy: false,
        crashes: 0,
        exit_code: None,
    };
    let mut driver_task = tokio::spawn(driver(ChildControl {
        requests: req_tx,
        status: status_rx,
        shutdown: shutdown_rx,
    }));
    if !lp.held {
        lp.spawn()?;
    }
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
        let kill_at = lp.stop_deadline.filter(|_| !lp.escalated);
        tokio::select! {
            exit = child_exit(&mut lp.child) => lp.on_exit(exit),
            sig = signals.recv() => lp.on_signal(sig, &shutdown_tx),
            () = sleep_until_opt(kill_at) => {
                tracing::warn!(member = lp.member(), timeout = %humantime::format_duration(lp.settings.stop_timeout), "etcd did not stop in time; sending SIGKILL");
                if let Some(c) = &lp.child {
                    c.signal(Signal::SIGKILL);
                }
                lp.escalated = true;
            }
            () = sleep_until_opt(lp.restart_at) => {
                lp.restart_at = None;
                datadir::wait_until_free(&lp.settings.member.data_dir, lp.settings.stop_timeout).await?;
                if let Err(e) = lp.spawn() {
                    tracing::error!(member = lp.member(), error = %e, "cannot start etcd; retrying after backoff");
                    lp.crashes += 1;
                    lp.restart_at = Some(Instant::now() + lp.settings.backoff.delay(lp.crashes));
                }
            }
            changed = lp.health_rx.changed(), if lp.child.is_some() => {
                if changed.is_ok() {
                    let health = *lp.health_rx.borrow_and_update();
                    lp.on_health(health);
                }
            }
            Some(req) = req_rx.recv() => lp.on_request(req),
            _ = watchdog_tick.tick(), if watchdog.is_some() => lp.notifier.watchdog(),
        }
    };
    // However the loop ended (signal, or etcd failing before it was ever healthy), the
    // driver is told now, so it releases the turn at once instead of being waited out.
    let _ = shutdown_tx.send(true);
    // The driver releases the turn and persists its state; bounded so a hung etcd cannot
    // keep the supervisor from exiting.
    if tokio::time::timeout(lp.settings.stop_timeout, &mut driver_task)
        .await
        .is_err()
    {
        tracing::warn!(
            member = lp.member(),
            "upgrade driver did not finish in time; exiting anyway"
        );
    }
    Ok(code)
}

/// `etcd-supervisor run`: pins the first version if needed, recovers an interrupted turn,
/// starts the staging watcher and the upgrade driver, and supervises etcd.
pub async fn run(settings: RunSettings) -> Result<i32, RunError> {
    let reaper = Reaper::start()?;
    // Subscribed first, so a SIGTERM during start-up is seen by the loop, not lost.
    let signals = Signals::subscribe().map_err(ReaperError::Signal)?;
    let pinned = ensure_pinned(&settings, &reaper).await?;
    let state = StateFile::new(&settings.state_dir);
    let persisted = state.load()?;
    let recovered = match &persisted {
        Some(turn) => machine::recover(turn, &pinned.version),
        None => machine::Step {
            turn: Turn::idle(pinned.version.clone()),
            effect: Effect::Nothing,
        },
    };
    if persisted.is_some() && recovered.effect != Effect::Nothing {
        tracing::info!(
            member = %settings.member.name,
            state = recovered.turn.state_name(),
            effect = ?recovered.effect,
            "resuming an interrupted upgrade"
        );
    }
    // Mid-swap, etcd stays stopped until the driver has put `current` right.
    let held = matches!(recovered.effect, Effect::Switch(_));
    let (watcher, candidates) =
        StagingWatcher::start(WatchOptions::from_settings(&settings), reaper.clone())?;
    let client = Client::new(settings.cluster.clone())?;
    let cfg = DriverConfig::from_settings(&settings);
    let machine::Step { turn, effect } = recovered;
    let metrics = Metrics::new();
    if let Some(addr) = settings.metrics_addr {
        let bound = metrics::serve(addr, metrics.clone())
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        tracing::info!(addr = %bound, "serving /metrics and /healthz");
    }
    let driver_metrics = metrics.clone();
    let starter: DriverStarter = Box::new(move |control| {
        Box::pin(async move {
            // The watcher lives as long as the driver that consumes its candidates.
            let _watcher = watcher;
            Driver::new(cfg, client, control, turn, candidates, driver_metrics)
                .run(effect)
                .await;
        })
    });
    run_with(settings, reaper, signals, pinned, starter, held, metrics).await
}

/// Polls /health quickly until etcd first answers, then every `interval`; publishes changes.
async fn poll_health(client: Client, interval: Duration, tx: watch::Sender<Health>) {
    let endpoint = client.endpoints().first().cloned().unwrap_or_default();
    loop {
        let health = match client.health_of(&endpoint).await {
            Ok(true) => Health::Healthy,
            Ok(false) => Health::Unhealthy,
            // Not answering at all is only "unhealthy" once etcd has been up.
            Err(_) if *tx.borrow() == Health::Unknown => Health::Unknown,
            Err(_) => Health::Unhealthy,
        };
        tx.send_if_modified(|old| {
            let changed = *old != health;
            *old = health;
            changed
        });
        let pause = if health == Health::Healthy {
            interval
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
    };

    fn ctx(stop_requested: bool, escalated: bool, ever_healthy: bool, crashes: u32) -> ExitContext {
        ExitContext {
            stop_requested,
            escalated,
            ever_healthy,
            crashes,
        }
    }

    #[test]
    fn requested_stop_that_ends_by_our_sigterm_is_exit_zero() {
        let c = ctx(true, false, true, 0);
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGTERM), c, &BACKOFF),
            AfterExit::Exit(0)
        );
        assert_eq!(on_exit(ChildExit::Code(0), c, &BACKOFF), AfterExit::Exit(0));
        assert_eq!(on_exit(ChildExit::Code(3), c, &BACKOFF), AfterExit::Exit(3));
    }

    #[test]
    fn escalated_stop_reports_the_kill() {
        let c = ctx(true, true, true, 0);
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGKILL), c, &BACKOFF),
            AfterExit::Exit(137)
        );
    }

    #[test]
    fn never_healthy_fails_fast_with_etcds_code() {
        let c = ctx(false, false, false, 1);
        assert_eq!(on_exit(ChildExit::Code(2), c, &BACKOFF), AfterExit::Exit(2));
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGSEGV), c, &BACKOFF),
            AfterExit::Exit(139)
        );
    }

    #[test]
    fn crash_after_healthy_restarts_with_growing_delay() {
        let delays: Vec<AfterExit> = (1..=3)
            .map(|n| {
                on_exit(
                    ChildExit::Signal(libc::SIGKILL),
                    ctx(false, false, true, n),
                    &BACKOFF,
                )
            })
            .collect();
        assert_eq!(
            delays,
            [
                AfterExit::Restart(Duration::from_secs(1)),
                AfterExit::Restart(Duration::from_secs(2)),
                AfterExit::Restart(Duration::from_secs(4)),
            ]
        );
    }
}
