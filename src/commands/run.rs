//! `etcd-supervisor run`: wires up the daemon. Pins the first version if needed, recovers
//! an interrupted turn, starts the staging watcher, the metrics endpoint and the upgrade
//! driver, and hands etcd to the run loop.

use std::path::PathBuf;

use nix::unistd::Pid;

use crate::blocking;
use crate::config::record::DaemonRecord;
use crate::config::RunSettings;
use crate::digest::sha256_of;
use crate::etcd::{Client, ClientConfig};
use crate::metrics::{self, Metrics};
use crate::process::handover::Handover;
use crate::process::reaper::{Reaper, ReaperError};
use crate::staging::{StagingWatcher, WatchOptions};
use crate::supervisor::reexec::{self, AdoptedEtcd, Relaunch, ReloadSetup};
use crate::supervisor::Reexec;
use crate::supervisor::{self, DriverStarter, RunError, Signals};
use crate::upgrade::turn::driver::{Driver, DriverConfig};
use crate::upgrade::turn::machine::{self, Effect, Turn};
use crate::upgrade::turn::state_file::StateFile;
use crate::upgrade::turn::vet::{LiveVetter, MemberConfig, RehearsalSettings};
use crate::versions::companions;
use crate::versions::store::{self, Pinned, VersionStore, VersionsError};

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
            store::probe_version(reaper, path, store::PROBE_TIMEOUT).await,
        )),
        None => None,
    };
    if let Some(pinned) = store.current()? {
        if let Some((path, probed)) = given {
            match probed {
                Ok(v) if v == pinned.version => {
                    // A pinned version without its tools (pinned before they were looked
                    // for, or installed since): the ones beside the binary join it.
                    pin_companions(&store, reaper, path, &v).await;
                }
                Ok(v) => tracing::warn!(
                    given = %path.display(), given_version = %v, running_version = %pinned.version,
                    "--etcd-binary differs from the pinned version and is ignored; upgrades go through the staging directory"
                ),
                Err(e) => {
                    tracing::warn!(given = %path.display(), error = %e, "--etcd-binary is unusable and ignored; the pinned version runs")
                }
            }
        }
        // Hashing ~25 MB: on the blocking pool, like every copy and hash of the daemon.
        let (checker, checked) = (store.clone(), pinned.clone());
        blocking::run(move || Ok::<_, RunError>(checker.verify(&checked)?)).await?;
        return Ok(pinned);
    }
    let Some((path, probed)) = given else {
        return Err(RunError::NothingInstalled(settings.versions_dir()));
    };
    let version = probed?;
    let companions = companions::beside(reaper, path, &version).await;
    let (source, v) = (path.clone(), version.clone());
    let (installed, sum) = blocking::run(move || {
        let sum = sha256_of(&source).map_err(VersionsError::from)?;
        let installed = install_with(&store, &source, &sum, &companions, &v)?;
        store.set_current(&v)?;
        Ok::<_, RunError>((installed, sum))
    })
    .await?;
    let pinned = installed.pinned;
    tracing::info!(version = %version, binary = %pinned.binary.display(), sha256 = %sum, "pinned first etcd version");
    Ok(pinned)
}

/// Installs `etcd` (with `sum`) and the companions into `versions/<version>` in one
/// rename; companions a pinned version lacks are added to it.
fn install_with(
    store: &VersionStore,
    etcd: &std::path::Path,
    sum: &str,
    companions: &[(&'static str, PathBuf)],
    version: &crate::versions::Version,
) -> Result<store::Installed, crate::versions::store::VersionsError> {
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).map_err(|e| {
            crate::versions::store::VersionsError::from(crate::durable::io_err("opening", p)(e))
        })
    };
    let mut pending = store.begin_install()?;
    pending.add("etcd", &mut open(etcd)?, etcd, sum)?;
    for (name, path) in companions {
        let tool_sum = sha256_of(path)?;
        pending.add(name, &mut open(path)?, path, &tool_sum)?;
    }
    pending.commit(version)
}

/// Adds the companions beside `binary` to the pinned `version` when it lacks them; a
/// failure is logged and changes nothing (the rehearsal then says no tool is pinned).
async fn pin_companions(
    store: &VersionStore,
    reaper: &Reaper,
    binary: &std::path::Path,
    version: &crate::versions::Version,
) {
    let dir = store.dir_of(version);
    if companions::TOOLS.iter().all(|t| dir.join(t).is_file()) {
        return;
    }
    let found = companions::beside(reaper, binary, version).await;
    if found.iter().all(|(t, _)| dir.join(t).is_file()) {
        return;
    }
    let (store, binary, v) = (store.clone(), binary.to_path_buf(), version.clone());
    let done = blocking::run(move || {
        let sum = sha256_of(&binary).map_err(VersionsError::from)?;
        Ok::<_, RunError>(install_with(&store, &binary, &sum, &found, &v)?)
    })
    .await;
    match done {
        Ok(installed) => {
            tracing::info!(version = %version, added = ?installed.added, "companions pinned beside the pinned etcd")
        }
        Err(e) => {
            tracing::warn!(version = %version, error = %e, "cannot pin the companions beside the pinned etcd; it runs as before")
        }
    }
}

/// The state dir takes new files (the check of `run --handover-check` uses it too).
pub(crate) fn check_writable(dir: &std::path::Path) -> Result<(), RunError> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|source| RunError::StateDir {
            dir: dir.to_path_buf(),
            source,
        })
}

/// `etcd-supervisor run`: pins the first version if needed, recovers an interrupted turn,
/// starts the staging watcher and the upgrade driver, and supervises etcd. With `handover`
/// (a reload re-executed this binary), the etcd the record names is taken over instead.
pub async fn run(settings: RunSettings, handover: Option<PathBuf>) -> Result<i32, RunError> {
    let record = handover.as_deref().and_then(|path| {
        let record = reexec::read_record(path)
            .map_err(|e| tracing::error!(error = %e, "cannot take over from the handover record; starting afresh"))
            .ok();
        let _ = std::fs::remove_file(path);
        record
    });
    let etcd_pid = record
        .as_ref()
        .and_then(|r| r.etcd.as_ref())
        .map(|e| Pid::from_raw(e.pid as i32));
    // Before the reaper's first pass: an etcd that exited in the exec window is reaped
    // and reported as ours, not as an orphan.
    let (reaper, adopted_exit) = Reaper::start_adopting(etcd_pid)?;
    // Subscribed first, so a SIGTERM during start-up is seen by the loop, not lost.
    let signals = Signals::subscribe().map_err(ReaperError::Signal)?;
    if handover.is_some() {
        // Blocked by the previous image for the exec; pending ones arrive now.
        if let Err(e) = reexec::block_handled_signals(false) {
            tracing::error!(error = %e, "cannot unblock signals after the re-exec");
        }
    }
    let pinned = ensure_pinned(&settings, &reaper).await?;
    // For `plan` and `status` run from a shell without the unit's environment.
    let effective = DaemonRecord::of(&settings, std::time::SystemTime::now());
    match effective.save(&settings.state_dir) {
        Ok(()) => {
            tracing::debug!(file = %DaemonRecord::path(&settings.state_dir).display(), "effective settings recorded")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record the effective settings; plan and status from a shell will not see them")
        }
    }
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
    let streams = client.placement();
    let cfg = DriverConfig::from_settings(&settings);
    let vetter = LiveVetter::new(
        reaper.clone(),
        &settings.state_dir,
        MemberConfig {
            name: settings.member.name.clone(),
            config_file: settings.member.config_file.clone(),
            v2_enabled: settings.member.v2_enabled,
            quota_backend_bytes: settings.member.quota_backend_bytes,
            args: settings.etcd_args.clone(),
            env: settings.etcd_env.clone(),
            data_dir: settings.member.data_dir.clone(),
            wal_dir: settings.member.wal_dir.clone(),
        },
        RehearsalSettings {
            mode: settings.rehearsal,
            max_db: settings.rehearsal_max_db,
            ready_timeout: settings.ready_timeout,
            endpoint: settings
                .member
                .client_urls
                .first()
                .cloned()
                .unwrap_or_default(),
            credentials: settings.cluster.credentials.clone(),
            // The rehearsal asks the live member only small things (status, one key, its
            // roles); the snapshot stream has its own bound by size.
            client: Client::new(ClientConfig {
                endpoints: settings.member.client_urls.clone(),
                ..settings.cluster.clone()
            })?,
        },
    );
    let machine::Step { turn, effect } = recovered;
    let metrics = Metrics::new(machine::STATE_NAMES);
    let kept_listener = record
        .as_ref()
        .and_then(|r| r.metrics.as_ref())
        .and_then(|m| reexec::inherited_fd(m.fd));
    let mut metrics_fd = None;
    if let Some(addr) = settings.metrics_addr {
        let bound = serve_metrics(addr, kept_listener, &metrics)
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        tracing::info!(addr = %bound.0, "serving /metrics and /healthz");
        metrics_fd = Some((bound.1, bound.0.to_string()));
    }
    let adopted = adopted_exit.and_then(|exit| {
        let etcd = record.as_ref()?.etcd.as_ref()?;
        Some(AdoptedEtcd {
            pid: etcd.pid,
            exit,
            stderr: etcd.stderr_fd.and_then(reexec::inherited_fd),
            version: etcd
                .version
                .parse()
                .unwrap_or_else(|_| pinned.version.clone()),
            ever_healthy: etcd.ever_healthy,
            healthy: etcd.healthy,
            crashes: etcd.crashes,
            from: record
                .as_ref()
                .map(|r| r.supervisor_version.clone())
                .unwrap_or_default(),
        })
    });
    let reload = Reexec {
        setup: Relaunch::capture().map(|relaunch| ReloadSetup {
            relaunch,
            record: Handover::path(&settings.state_dir),
            metrics: metrics_fd,
        }),
        adopted,
    };
    let driver_metrics = metrics.clone();
    let starter: DriverStarter = Box::new(move |control| {
        Box::pin(async move {
            // The watcher lives as long as the driver that consumes its candidates.
            let _watcher = watcher;
            Driver::new(
                cfg,
                client,
                control,
                turn,
                candidates,
                driver_metrics,
                vetter,
            )
            .run(effect)
            .await;
        })
    });
    supervisor::run_with_reload(
        settings, reaper, signals, pinned, starter, held, metrics, reload, streams,
    )
    .await
}

/// Serves metrics on the listener a re-executed image kept, or binds `addr`; returns the
/// address and a duplicate of the listener for the next reload.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    kept: Option<std::os::fd::OwnedFd>,
    metrics: &Metrics,
) -> std::io::Result<(std::net::SocketAddr, std::os::fd::OwnedFd)> {
    let kept = kept.and_then(|fd| {
        let std_listener = std::net::TcpListener::from(fd);
        std_listener.set_nonblocking(true).ok()?;
        tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| tracing::warn!(error = %e, "the kept metrics listener is unusable; binding again"))
            .ok()
    });
    let listener = match kept {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(addr).await?,
    };
    let dup = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
    let bound = metrics::serve_on(listener, metrics.clone())?;
    Ok((bound, dup))
}
