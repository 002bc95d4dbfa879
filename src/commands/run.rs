//! `etcd-supervisor run`: wires up the daemon. Pins the first version if needed, recovers
//! an interrupted turn, starts the staging watcher, the metrics endpoint and the upgrade
//! driver, and hands etcd to the run loop.

use crate::config::RunSettings;
use crate::etcd::{Client, ClientConfig};
use crate::metrics::{self, Metrics};
use crate::process::reaper::{Reaper, ReaperError};
use crate::staging::{StagingWatcher, WatchOptions};
use crate::supervisor::start::off_thread;
use crate::supervisor::{self, DriverStarter, RunError, Signals};
use crate::upgrade::driver::{Driver, DriverConfig};
use crate::upgrade::machine::{self, Effect, Turn};
use crate::upgrade::state_file::StateFile;
use crate::upgrade::vet::{LiveVetter, MemberConfig, RehearsalSettings};
use crate::versions::store::{self, Pinned, VersionStore};

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
        // Hashing ~25 MB: on the blocking pool, like every copy and hash of the daemon.
        let (checker, checked) = (store.clone(), pinned.clone());
        off_thread(move || Ok(checker.verify(&checked)?)).await?;
        return Ok(pinned);
    }
    let Some((path, probed)) = given else {
        return Err(RunError::NothingInstalled(settings.versions_dir()));
    };
    let version = probed?;
    let (source, v) = (path.clone(), version.clone());
    let (pinned, sum) = off_thread(move || {
        let sum = store::sha256_file(&source)?;
        let pinned = store.install(&source, &v, &sum)?;
        store.set_current(&v)?;
        Ok((pinned, sum))
    })
    .await?;
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
    let vetter = LiveVetter::new(
        reaper.clone(),
        &settings.state_dir,
        MemberConfig {
            name: settings.member.name.clone(),
            config_file: settings.member.config_file.clone(),
            v2_enabled: settings.member.v2_enabled,
            args: settings.etcd_args.clone(),
            env: settings.etcd_env.clone(),
            data_dir: settings.member.data_dir.clone(),
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
            client: Client::new(ClientConfig {
                endpoints: settings.member.client_urls.clone(),
                ..settings.cluster.clone()
            })?,
        },
    );
    let machine::Step { turn, effect } = recovered;
    let metrics = Metrics::new(machine::STATE_NAMES);
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
    supervisor::run_with(settings, reaper, signals, pinned, starter, held, metrics).await
}
