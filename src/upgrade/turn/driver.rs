//! The executor of the turn's state machine: performs each [`Effect`], turns its outcome
//! into the next [`Event`], persists and publishes every transition.
//!
//! Order per transition: persist `state.json` (atomic), then publish `members/<name>` and
//! `STATUS=`, then perform the effect. Nothing world-changing happens before the state that
//! announces it is on disk, so [`recover`](super::machine::recover) knows what may be half
//! done after a crash.
//!
//! What it does to etcd, its child and the versions store goes through [`super::ports`]
//! ([`World`]: the etcd child, the cluster, the backups, the `current` switch, the vetter);
//! [`Driver::new`] wires the real ones ([`super::live`]), the tests a fake world. Beside the
//! ports the driver acts directly on what is its own: `state.json` ([`StateFile`], on the
//! blocking pool), the `.reason` note beside a refused staged file (staging's writer, on the
//! blocking pool), the metrics, systemd's `STATUS=` ([`Notifier`]) and the failpoints;
//! staged candidates arrive on a channel from the staging watcher.
//!
//! One file per stage of the turn: `candidate` (waiting and vetting before the queue),
//! `queue` (the lock and preflight), `swap` (backup, stop, switch), `verify`, `pacing`
//! (the gates before the queue, the soak), `release` (the verdict and the turn given
//! back); `leader_last`, `downgrade` and `fence` hook into them.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use config::DriverConfig;

use super::live::{LiveBackups, LiveCluster};
use super::machine::{self, Effect, Event, Phase, Turn};
use super::ports::{
    BackupStage, BackupTurn, Backups, Cluster, EtcdChild, TakenBackup, TurnLock, VersionSwitch,
    Vetter,
};
use super::state_file::StateFile;
use super::vet::LiveVetter;
use crate::cluster::lock::{LockConfig, LockError};
use crate::etcd::Client;
use crate::metrics::Metrics;
use crate::staging::Candidate;
use crate::supervisor::systemd::Notifier;
use crate::supervisor::ChildControl;
use crate::upgrade::rules::preflight::{self, PreflightVerdict};
use crate::upgrade::rules::vet::Vetted;
use crate::upgrade::rules::{advice, flags};
use crate::versions::store::VersionStore;
use crate::versions::Version;

mod candidate;
mod config;
mod downgrade;
mod fence;
mod leader_last;
mod pacing;
mod queue;
mod release;
mod swap;
mod verify;

/// How long a lost-in-the-wind etcd call may hold up the end of a turn.
const RECORD_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the last member of a minor upgrade waits to see the cluster version move.
const CLUSTER_VERSION_WAIT: Duration = Duration::from_secs(15);

/// Everything the driver acts on.
#[derive(Debug)]
pub struct World<C, K, B, S, V> {
    /// The etcd child.
    pub child: C,
    /// The cluster (views, the turn, records, the local member's health).
    pub cluster: K,
    /// The turn's backups.
    pub backups: B,
    /// The `current` link.
    pub versions: S,
    /// Checks of a staged version against this member, before it queues.
    pub vetter: V,
}

/// The upgrade driver of one member.
pub struct Driver<
    C = ChildControl,
    K = LiveCluster,
    B = LiveBackups,
    S = VersionStore,
    V = LiveVetter,
> where
    K: Cluster,
    B: Backups,
{
    cfg: DriverConfig,
    client: K,
    control: C,
    backups: B,
    store: S,
    vetter: V,
    /// What the last vetting found, for the progress record.
    vetting: Option<String>,
    /// Why this queued member does not start its turn (pause, window), for its record.
    gate_hold: Option<String>,
    /// The target that passed vetting, and the cluster version it was vetted under: when
    /// either differs at preflight (a restart, the cluster version moved), it is vetted again.
    vetted: Option<(Version, Option<Version>)>,
    /// The pid of the etcd the last start answered: verify matches its exit by it, even
    /// when it exited before verify began.
    started_pid: Option<u32>,
    state: StateFile,
    turn: Turn,
    held: Option<K::Lock>,
    candidates: mpsc::Receiver<Candidate>,
    pending: Option<Version>,
    pending_backup: Option<B::Pending>,
    swap_started: Option<Instant>,
    metrics: Metrics,
    notifier: Notifier,
    since: SystemTime,
    leader_last: leader_last::LeaderLast,
    /// The last preflight saw this member as the cluster's only voting member.
    sole_voter: bool,
    /// A staged older minor waiting for etcd's downgrade.
    parked: downgrade::Parked,
}

impl Driver {
    /// A driver starting from `turn` (fresh or recovered), on the real world.
    pub fn new(
        cfg: DriverConfig,
        client: Client,
        control: ChildControl,
        turn: Turn,
        candidates: mpsc::Receiver<Candidate>,
        metrics: Metrics,
        vetter: LiveVetter,
    ) -> Self {
        let lock = LockConfig {
            key_prefix: cfg.key_prefix.clone(),
            ttl: cfg.lock_ttl,
            member: cfg.member.clone(),
        };
        let backups = LiveBackups {
            client: client.clone(),
            state_dir: cfg.state_dir.clone(),
            data_dir: cfg.data_dir.clone(),
            member: cfg.member.clone(),
            endpoint: cfg.local_endpoints.first().cloned(),
            mode: cfg.backup,
            keep: cfg.backup_keep,
            prepared: Default::default(),
            read_ahead: Default::default(),
        };
        // One verified snapshot serves the rehearsal and the turn (snapshot mode only: a
        // data-dir copy needs etcd stopped); `--backup-max-age 0s` keeps them apart.
        let vetter =
            if cfg.backup == crate::backup::BackupMode::Snapshot && !cfg.backup_max_age.is_zero() {
                vetter.sharing_backups(backups.clone())
            } else {
                vetter
            };
        let world = World {
            child: control,
            backups,
            cluster: LiveCluster::new(client, lock),
            versions: VersionStore::new(&cfg.state_dir),
            vetter,
        };
        Self::with_world(cfg, world, turn, candidates, metrics)
    }
}

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// A driver starting from `turn` (fresh or recovered), acting on `world`.
    pub fn with_world(
        cfg: DriverConfig,
        world: World<C, K, B, S, V>,
        turn: Turn,
        candidates: mpsc::Receiver<Candidate>,
        metrics: Metrics,
    ) -> Self {
        Self {
            state: StateFile::new(&cfg.state_dir),
            cfg,
            client: world.cluster,
            control: world.child,
            backups: world.backups,
            store: world.versions,
            vetter: world.vetter,
            vetting: None,
            gate_hold: None,
            vetted: None,
            started_pid: None,
            // A version refused here for this member's configuration stays staged: offered
            // again at start, so a restart with fixed flags takes it without a new drop.
            pending: turn.to.clone().filter(|_| turn.phase == Phase::Idle),
            turn,
            held: None,
            candidates,
            pending_backup: None,
            swap_started: None,
            metrics,
            notifier: Notifier,
            since: SystemTime::now(),
            leader_last: Default::default(),
            sole_voter: false,
            parked: Default::default(),
        }
    }

    fn shutting_down(&self) -> bool {
        *self.control.shutdown().borrow()
    }

    /// Resolves when the supervisor is asked to stop (owns its receiver, so it can run
    /// beside a borrow of `self`).
    fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.control.shutdown();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }

    /// Runs until shutdown, starting with `effect` (from [`machine::recover`]).
    pub async fn run(mut self, effect: Effect) {
        self.publish().await;
        let mut effect = effect;
        loop {
            let (phase, began) = (phase_of(&effect), Instant::now());
            let Some(event) = self.perform(effect).await else {
                return;
            };
            if let Some(phase) = phase {
                self.metrics.phase(phase, began.elapsed());
            }
            let step = machine::step(&self.turn, event.clone());
            self.transition(step.turn, &event).await;
            effect = step.effect;
        }
    }

    /// Persists, logs and publishes a new state.
    async fn transition(&mut self, next: Turn, event: &Event) {
        let changed = next.phase != self.turn.phase || next.rollback != self.turn.rollback;
        let before = self.turn.state_name();
        self.turn = next;
        // Write, fsync, rename, fsync the dir: on the blocking pool, not the loop's thread.
        let (state, turn) = (self.state.clone(), self.turn.clone());
        let saved =
            crate::blocking::run(move || state.save(&turn).map_err(|e| e.to_string())).await;
        if let Err(e) = saved {
            tracing::error!(member = %self.cfg.member, error = %e, "cannot persist the upgrade state; a crash now may need the operator to check `current`");
        }
        if changed {
            self.since = SystemTime::now();
            let to = self.turn.to.as_ref().map(ToString::to_string);
            tracing::info!(
                member = %self.cfg.member,
                state = self.turn.state_name(),
                previous = before,
                from = %self.turn.from,
                to = to.as_deref().unwrap_or("-"),
                last_error = self.turn.last_error.as_deref().unwrap_or(""),
                ?event,
                "upgrade state changed"
            );
            self.publish().await;
            if let Some((state, pause)) = &self.cfg.failpoint_pause {
                if state == self.turn.state_name() {
                    tracing::warn!(member = %self.cfg.member, state, pause_ms = pause.as_millis() as u64, "failpoint: pausing");
                    tokio::time::sleep(*pause).await;
                }
            }
        }
    }

    /// `members/<name>` in etcd, STATUS= for systemd, and the metrics.
    async fn publish(&self) {
        self.control.report_phase(self.turn.phase);
        self.metrics.set_state(self.turn.state_name());
        self.metrics.set_versions(
            &self.turn.from.to_string(),
            self.turn.to.as_ref().map(ToString::to_string).as_deref(),
        );
        let record = crate::cluster::records::MemberRecord {
            vetting: self.vetting.clone(),
            client_urls: self.cfg.advertised_endpoints.clone(),
            held: self.gate_hold.clone(),
            candidate: self.leader_last.candidate.clone(),
            ..crate::cluster::records::MemberRecord::new(
                &self.cfg.member,
                &self.turn.from,
                self.turn.to.as_ref(),
                self.turn.state_name(),
                self.since,
                self.turn.last_error.as_deref(),
            )
        };
        let put = self.client.publish_member(&record);
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(RECORD_TIMEOUT, put)
            .await
            .map_err(|_| crate::etcd::EtcdError::InvalidRequest("timed out".into()))
            .map(|r| r.map(drop))
        {
            tracing::debug!(error = %e, "progress record not written");
        }
        let status = match (&self.turn.to, self.turn.phase) {
            (Some(to), phase) if phase != Phase::Idle => {
                format!(
                    "upgrade {} -> {to}: {}",
                    self.turn.from,
                    self.turn.state_name()
                )
            }
            _ => format!("etcd {} {}", self.turn.from, self.turn.state_name()),
        };
        let status = match &self.gate_hold {
            Some(held) => format!("{status}; held: {held}"),
            None => status,
        };
        self.notifier.status(&status);
    }

    /// Performs one effect and returns the event it led to; `None` ends the driver.
    async fn perform(&mut self, effect: Effect) -> Option<Event> {
        if self.shutting_down() && effect != Effect::Exit {
            return Some(Event::Shutdown);
        }
        match effect {
            Effect::Nothing => Some(self.idle().await),
            Effect::Exit => {
                self.give_back_turn().await;
                None
            }
            Effect::AcquireTurn { after } => Some(self.acquire(after).await),
            Effect::Preflight => Some(self.guarded(Self::preflight).await),
            Effect::Backup => Some(self.guarded(Self::backup).await),
            Effect::StopEtcd => Some(self.stop().await),
            Effect::Switch(_) | Effect::StartEtcd
                if self.forward_in(&[Phase::Swapping, Phase::Starting]) =>
            {
                // The fence before pointing at or starting the new version.
                match self.fence("switching to the new version").await {
                    Some(_) => Some(Event::TurnLost),
                    None => Some(self.perform_unfenced(effect).await),
                }
            }
            effect => Some(self.perform_unfenced(effect).await),
        }
    }

    /// The effects that need no fence here (or were fenced by the caller).
    async fn perform_unfenced(&mut self, effect: Effect) -> Event {
        match effect {
            Effect::Switch(v) => match self.switch_current(&v).await {
                Ok(()) => {
                    tracing::info!(member = %self.cfg.member, version = %v, "current switched");
                    Event::Switched
                }
                Err(e) => Event::SwitchFailed(e.to_string()),
            },
            Effect::StartEtcd => match self.control.start().await {
                Ok(pid) => {
                    self.started_pid = Some(pid);
                    Event::Started
                }
                Err(e) => Event::StartFailed(e),
            },
            Effect::Verify(v) => {
                let verified = self.verify(&v).await;
                self.soak_after_verify(verified).await
            }
            Effect::Soak(length) => self.soak(length).await,
            Effect::Release { reject, refuse } => self.release(reject, refuse).await,
            // Handled by `perform`.
            Effect::Nothing
            | Effect::AcquireTurn { .. }
            | Effect::Preflight
            | Effect::Backup
            | Effect::StopEtcd
            | Effect::Exit => Event::Shutdown,
        }
    }

    /// Runs a step that needs the turn, turning a loss of the turn or a shutdown into events.
    async fn guarded<'a, F, Fut>(&'a mut self, step: F) -> Event
    where
        F: FnOnce(&'a mut Self) -> Fut,
        Fut: std::future::Future<Output = Event> + 'a,
    {
        let lost = match &self.held {
            Some(h) => Box::pin(h.lost())
                as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>,
            None => return Event::TurnLost,
        };
        let shutdown = self.shutdown_signal();
        tokio::select! {
            event = step(self) => event,
            reason = lost => {
                tracing::warn!(reason, "lost the upgrade turn");
                Event::TurnLost
            }
            () = shutdown => Event::Shutdown,
        }
    }
}

/// The turn's phase an effect's time is counted in (`metrics::PHASES`).
fn phase_of(effect: &Effect) -> Option<&'static str> {
    Some(match effect {
        Effect::AcquireTurn { .. } => "turn_wait",
        Effect::Preflight => "preflight",
        Effect::Backup => "backup",
        Effect::StopEtcd => "stop",
        Effect::Switch(_) => "switch",
        Effect::StartEtcd => "start",
        Effect::Verify(_) => "catch_up",
        Effect::Soak(_) => "soak",
        Effect::Nothing | Effect::Release { .. } | Effect::Exit => return None,
    })
}

#[cfg(test)]
mod tests;
