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
use tokio::sync::watch;

use crate::child::EtcdChild;
use crate::config::{Backoff, RunSettings};
use crate::datadir;
use crate::etcd::{Client, ClientConfig};
use crate::notify::Notifier;
use crate::reaper::{ChildExit, Reaper, ReaperError};
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
    /// The HTTP client for health checks could not be built.
    #[error(transparent)]
    Client(#[from] crate::etcd::EtcdError),
}

impl RunError {
    /// True for errors the operator fixes in the configuration (exit code 2).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::NothingInstalled(_) | RunError::Versions(_) | RunError::StateDir { .. }
        )
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
        let as_asked = matches!(exit, ChildExit::Code(0))
            || exit.is_signal(Signal::SIGTERM)
            || exit.is_signal(Signal::SIGINT);
        return AfterExit::Exit(if as_asked && !ctx.escalated {
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
enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

/// The signals the supervisor forwards to etcd.
struct Signals {
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

/// Runs etcd until the supervisor is asked to stop; returns the process exit code.
pub async fn run(settings: RunSettings) -> Result<i32, RunError> {
    let reaper = Reaper::start()?;
    let mut signals = Signals::subscribe().map_err(ReaperError::Signal)?;
    let notifier = Notifier;
    let pinned = ensure_pinned(&settings, &reaper).await?;
    datadir::wait_until_free(&settings.member.data_dir, settings.stop_timeout).await?;
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(settings.member.client_urls.clone())
    })?;
    let member = settings.member.name.as_str();
    let watchdog = notifier.watchdog_interval();
    let mut ever_healthy = false;
    let mut crashes = 0u32;

    loop {
        notifier.status(&format!("starting etcd {}", pinned.version));
        let mut child = EtcdChild::spawn(&reaper, &pinned.binary, &settings.etcd_args)?;
        tracing::info!(member, version = %pinned.version, pid = child.pid(), "etcd started");
        let (health_tx, mut health_rx) = watch::channel(Health::Unknown);
        let poller = tokio::spawn(poll_health(
            client.clone(),
            settings.health_interval,
            health_tx,
        ));
        let mut healthy_since: Option<Instant> = None;
        let mut stop_deadline: Option<Instant> = None;
        let mut escalated = false;
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

        let exit = loop {
            let deadline =
                stop_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                exit = child.wait() => break exit,
                sig = signals.recv() => {
                    tracing::info!(member, signal = sig.as_str(), "forwarding signal to etcd");
                    child.signal(sig);
                    if matches!(sig, Signal::SIGTERM | Signal::SIGINT) && stop_deadline.is_none() {
                        notifier.stopping();
                        stop_deadline = Some(Instant::now() + settings.stop_timeout);
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()), if stop_deadline.is_some() && !escalated => {
                    tracing::warn!(member, timeout = %humantime::format_duration(settings.stop_timeout), "etcd did not stop in time; sending SIGKILL");
                    child.signal(Signal::SIGKILL);
                    escalated = true;
                }
                changed = health_rx.changed() => {
                    if changed.is_err() { continue; }
                    let health = *health_rx.borrow_and_update();
                    match health {
                        Health::Healthy => {
                            healthy_since = Some(Instant::now());
                            let status = format!("etcd {} healthy", pinned.version);
                            if !ever_healthy {
                                ever_healthy = true;
                                tracing::info!(member, version = %pinned.version, took_ms = child.started().elapsed().as_millis() as u64, "etcd is healthy; ready");
                                notifier.ready(&status);
                            } else {
                                tracing::info!(member, version = %pinned.version, "etcd is healthy again");
                                notifier.status(&status);
                            }
                        }
                        Health::Unhealthy => {
                            healthy_since = None;
                            tracing::warn!(member, version = %pinned.version, "etcd is unhealthy");
                            notifier.status(&format!("etcd {} unhealthy", pinned.version));
                        }
                        Health::Unknown => {}
                    }
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => notifier.watchdog(),
            }
        };
        poller.abort();

        if healthy_since.is_some_and(|t| t.elapsed() >= settings.backoff.reset_after) {
            crashes = 0;
        }
        let stop_requested = stop_deadline.is_some();
        if !stop_requested {
            crashes += 1;
        }
        let ctx = ExitContext {
            stop_requested,
            escalated,
            ever_healthy,
            crashes,
        };
        match on_exit(exit, ctx, &settings.backoff) {
            AfterExit::Exit(code) => {
                if stop_requested {
                    tracing::info!(member, version = %pinned.version, %exit, code, "etcd stopped; exiting");
                } else {
                    tracing::error!(member, version = %pinned.version, %exit, code,
                        "etcd exited before it ever became healthy; not restarting (check etcd's log above for the cause)");
                }
                return Ok(code);
            }
            AfterExit::Restart(delay) => {
                tracing::error!(member, version = %pinned.version, %exit, crashes, delay_ms = delay.as_millis() as u64, "etcd exited unexpectedly; restarting after backoff");
                notifier.status(&format!(
                    "etcd exited ({exit}); restarting in {}",
                    humantime::format_duration(delay)
                ));
                let until = tokio::time::Instant::now() + delay;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        sig = signals.recv() => {
                            if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                                notifier.stopping();
                                tracing::info!(member, signal = sig.as_str(), "stop requested while etcd is down; exiting");
                                return Ok(0);
                            }
                            tracing::info!(member, signal = sig.as_str(), "etcd is not running; signal dropped");
                        }
                    }
                }
                datadir::wait_until_free(&settings.member.data_dir, settings.stop_timeout).await?;
            }
        }
    }
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
