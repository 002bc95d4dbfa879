//! The executor of the turn's state machine: performs each [`Effect`], turns its outcome
//! into the next [`Event`], persists and publishes every transition.
//!
//! Order per transition: persist `state.json` (atomic), then publish `members/<name>` and
//! `STATUS=`, then perform the effect. Nothing world-changing happens before the state that
//! announces it is on disk, so [`recover`](super::machine::recover) knows what may be half
//! done after a crash.
//!
//! The world is reached only through [`super::ports`] ([`World`]); [`Driver::new`] wires
//! the real one ([`super::live`]).

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

pub use config::DriverConfig;

use super::advice;
use super::flags;
use super::live::{LiveBackups, LiveCluster};
use super::machine::{self, Effect, Event, Phase, Turn};
use super::ports::{
    BackupStage, BackupTurn, Backups, Cluster, EtcdChild, TakenBackup, TurnLock, VersionSwitch,
    Vetted, Vetter,
};
use super::preflight::{self, Verdict};
use super::state_file::StateFile;
use super::vet::LiveVetter;
use crate::cluster::lock::{LockConfig, LockError};
use crate::etcd::Client;
use crate::metrics::Metrics;
use crate::staging::Candidate;
use crate::supervisor::systemd::Notifier;
use crate::supervisor::ChildControl;
use crate::versions::store::VersionStore;
use crate::versions::Version;

mod config;
mod downgrade;
mod fence;
mod leader_last;
mod pacing;
mod release;
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
        let world = World {
            child: control,
            backups: LiveBackups {
                client: client.clone(),
                state_dir: cfg.state_dir.clone(),
                data_dir: cfg.data_dir.clone(),
                member: cfg.member.clone(),
                endpoint: cfg.local_endpoints.first().cloned(),
                mode: cfg.backup,
                keep: cfg.backup_keep,
            },
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

    /// Points `current` at `v` (symlink, rename, fsync) on the blocking pool.
    async fn switch_current(&self, v: &Version) -> Result<(), String> {
        let (store, v) = (self.store.clone(), v.clone());
        let switched =
            crate::blocking::run(move || store.set_current(&v).map_err(|e| e.to_string())).await;
        if switched.is_ok() {
            crate::failpoint::kill_at(crate::failpoint::SWITCHED);
        }
        switched
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
        let key = crate::cluster::keys::Keys::new(&self.cfg.key_prefix).member(&self.cfg.member);
        let put = self.client.put(key, record.encode(), None);
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

    /// Waits for a staged candidate (or shutdown) and vets it before it may queue: the path
    /// rules, then this member's configuration (and the rehearsal). Nothing is held and
    /// nothing stops for a candidate that fails here.
    async fn idle(&mut self) -> Event {
        loop {
            // A parked older minor is looked at again quietly: its refusal was said once.
            let recheck = std::mem::take(&mut self.parked.recheck);
            let target = match self.pending.take() {
                Some(v) if matches!(self.turn.phase, Phase::Idle | Phase::Failed) => v,
                _ => {
                    let shutdown = self.shutdown_signal();
                    let poll = self.downgrade_interval();
                    let candidate = tokio::select! {
                        c = self.candidates.recv() => c,
                        () = shutdown => return Event::Shutdown,
                        () = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => {
                            if let Some(v) = self.downgrade_wake().await {
                                self.parked.recheck = true;
                                self.pending = Some(v);
                            }
                            continue;
                        }
                    };
                    let Some(candidate) = candidate else {
                        // No more candidates (watcher gone): wait for shutdown only.
                        self.shutdown_signal().await;
                        return Event::Shutdown;
                    };
                    candidate.version
                }
            };
            if target == self.turn.from {
                tracing::info!(member = %self.cfg.member, version = %target, "staged version is already running; nothing to do");
                continue;
            }
            self.client.refresh_endpoints().await;
            // Refuse an impossible target at once, without waiting in the queue.
            let report = self.client.gather().await;
            let verdict = preflight::path_only(
                &report,
                &self.cfg.member,
                &self.turn.from,
                &target,
                &self.cfg.policy,
            );
            // An older minor waits for etcd's downgrade, staged (state.json keeps it).
            if let Some(why) = self.downgrade_gate(&report, &target).await {
                if recheck && self.turn.to.as_ref() == Some(&target) {
                    continue;
                }
                return Event::RefusedHere(target, why);
            }
            if let Verdict::Refuse(why) = verdict {
                self.note_refusal(&target, &why);
                continue;
            }
            let vetting = Instant::now();
            self.announce_candidate(Some(&target), false).await;
            // A SIGTERM mid-vetting drops it: the rehearsal's private etcd dies with it.
            let shutdown = self.shutdown_signal();
            let vetted = tokio::select! {
                v = self.vetter.vet(&self.turn.from, &target) => v,
                () = shutdown => return Event::Shutdown,
            };
            self.announce_candidate(None, matches!(vetted, Vetted::Pass { .. }))
                .await;
            let took_ms = vetting.elapsed().as_millis() as u64;
            match vetted {
                Vetted::Pass { warnings, summary } => {
                    for w in &warnings {
                        tracing::warn!(member = %self.cfg.member, to = %target, warning = %w, "staged version: {w}");
                    }
                    tracing::info!(member = %self.cfg.member, from = %self.turn.from, to = %target, took_ms, vetting = %summary, "staged version vetted against this member");
                    self.vetting = Some(format!("{target}: {summary}"));
                    self.vetted = Some((target.clone(), report.cluster_version.clone()));
                    return Event::Staged(target);
                }
                Vetted::MemberFault(why) => {
                    self.vetting = Some(format!("{target}: refused here"));
                    return Event::RefusedHere(target, why);
                }
                Vetted::VersionFault(why) => {
                    self.vetting = Some(format!("{target}: failed, rejected"));
                    return Event::FailedBeforeTurn(target, why);
                }
            }
        }
    }

    /// Queues for the turn after `after`.
    async fn acquire(&mut self, after: Duration) -> Event {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            () = self.shutdown_signal() => return Event::Shutdown,
        }
        self.client.refresh_endpoints().await;
        let waited = Instant::now();
        tracing::info!(member = %self.cfg.member, to = ?self.turn.to.as_ref().map(ToString::to_string), "queueing for the upgrade turn");
        loop {
            if let Some(shutdown) = self.wait_for_gate().await {
                return shutdown;
            }
            if !self.leader_last_wait().await {
                return Event::Shutdown;
            }
            if self.hold_reason().await.is_some() {
                continue;
            }
            let shutdown = self.shutdown_signal();
            match self.client.acquire(shutdown).await {
                Ok(held) => {
                    let Some(held) = self.keep_turn(held).await else {
                        continue;
                    };
                    tracing::info!(member = %self.cfg.member, waited_ms = waited.elapsed().as_millis() as u64, "upgrade turn acquired");
                    self.metrics.turn_acquired(waited.elapsed());
                    self.held = Some(held);
                    // The endpoints may be this member's alone when the queueing began (a
                    // restart while etcd was down): the fence after this member's own stop
                    // must reach the others, or it finds the turn unconfirmable and restores.
                    self.client.refresh_endpoints().await;
                    if self.gate_closed_after_acquire().await {
                        continue;
                    }
                    return Event::TurnAcquired;
                }
                Err(LockError::Cancelled) => return Event::Shutdown,
                Err(e) => {
                    tracing::warn!(member = %self.cfg.member, error = %e, "could not queue for the upgrade turn; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        () = self.shutdown_signal() => return Event::Shutdown,
                    }
                }
            }
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

    async fn preflight(&mut self) -> Event {
        let Some(target) = self.turn.to.clone() else {
            return Event::PreflightRefused("nothing staged".into());
        };
        let report = self.client.gather().await;
        match preflight::assess(
            &report,
            &self.cfg.member,
            &self.turn.from,
            &target,
            &self.cfg.policy,
        ) {
            Verdict::Proceed => {
                // Under the turn, the downgrade's state again (a cancel may have come).
                if let Some(why) = self.downgrade_gate(&report, &target).await {
                    return Event::RefusedHere(target, why);
                }
                self.sole_voter = report.members.iter().filter(|m| !m.learner).count() <= 1;
                let now = Some((target.clone(), report.cluster_version.clone()));
                if self.vetted != now {
                    // Not vetted by this process (a restart while queued), or the cluster
                    // version moved since: vet again before anything stops.
                    tracing::info!(member = %self.cfg.member, to = %target, cluster_version = ?report.cluster_version.as_ref().map(ToString::to_string), "vetting the staged version again before the stop");
                    match self.vetter.vet(&self.turn.from, &target).await {
                        Vetted::Pass { summary, .. } => {
                            self.vetting = Some(format!("{target}: {summary}"));
                            self.vetted = now;
                        }
                        Vetted::MemberFault(why) => return Event::RefusedHere(target, why),
                        Vetted::VersionFault(why) => return Event::FailedBeforeTurn(target, why),
                    }
                }
                if let Some(note) = advice::last_to_move(&report, &self.cfg.member, &target) {
                    tracing::warn!(member = %self.cfg.member, from = %self.turn.from, to = %target, "{note}");
                }
                Event::PreflightPassed
            }
            Verdict::Wait(why) => {
                tracing::info!(member = %self.cfg.member, to = %target, reason = %why, "preflight: waiting");
                Event::PreflightWait(why)
            }
            Verdict::Refuse(why) => Event::PreflightRefused(why),
        }
    }

    /// Space check and snapshot while etcd runs; in snapshot mode the backup is finished
    /// and verified here, otherwise the cold copy follows once etcd is stopped.
    async fn backup(&mut self) -> Event {
        let to = self
            .turn
            .to
            .clone()
            .unwrap_or_else(|| self.turn.from.clone());
        let turn = BackupTurn {
            from: self.turn.from.clone(),
            to,
        };
        match self.backups.begin(turn).await {
            Ok(BackupStage::Done(done)) => {
                self.backup_done(&done);
                Event::BackupDone
            }
            Ok(BackupStage::ColdCopyPending(pending)) => {
                self.pending_backup = Some(pending);
                Event::BackupDone
            }
            Err(e) => Event::BackupFailed(e.to_string()),
        }
    }

    fn backup_done(&self, done: &TakenBackup) {
        tracing::info!(member = %self.cfg.member, backup = %done.dir.display(), bytes = done.bytes, took_ms = done.elapsed.as_millis() as u64, "{}", done.summary);
        self.metrics.backup_taken(done.bytes, true);
    }

    async fn stop(&mut self) -> Event {
        // Preflight passed before the backup; a member may have gone down since. One last
        // look right before a forward stop keeps that window to a few milliseconds. (A
        // rollback always stops: the new version is the one failing.) Nor does a forward
        // stop happen on a turn lost while the backup finished.
        if !self.turn.rollback {
            let lost = match &self.held {
                Some(held) => held.confirm().await,
                None => Some("no upgrade turn held".into()),
            };
            if let Some(reason) = lost {
                tracing::warn!(member = %self.cfg.member, reason, "lost the upgrade turn before the stop");
                self.pending_backup = None;
                return Event::TurnLost;
            }
        } else if self.control.status().pid.is_some()
            && self.fence("stopping etcd again").await.is_some()
        {
            // The new version still runs: without the turn another member may be down now.
            return Event::TurnLost;
        }
        let report = if self.turn.rollback {
            None
        } else {
            Some(self.client.gather().await)
        };
        // A pause that arrived during preflight or the backup holds the turn before the stop.
        if let Some(paused) = report.as_ref().filter(|r| r.pause.is_some()) {
            self.pending_backup = None;
            return Event::PreflightWait(paused.paused().unwrap_or_default());
        }
        if let Some(down) = report
            .iter()
            .flat_map(|r| r.members.iter())
            .find(|m| m.name != self.cfg.member && !m.healthy)
        {
            self.pending_backup = None;
            return Event::PreflightWait(format!(
                "member {} went down after preflight; not stopping this one",
                down.name
            ));
        }
        if let Some(report) = &report {
            self.hand_over_leadership(report).await;
        }
        self.swap_started = Some(Instant::now());
        let stopped = match self.control.stop().await {
            Ok(stopped) => stopped,
            Err(e) => {
                // Nobody is left to stop (or restart) etcd: not a stop.
                tracing::error!(member = %self.cfg.member, error = %e, "stop request failed");
                self.pending_backup = None;
                return Event::StopFailed(format!("stopping etcd failed: {e}"));
            }
        };
        tracing::info!(member = %self.cfg.member, exit = %stopped.exit, ended = stopped.ended.as_str(), took_ms = stopped.took.as_millis() as u64, "etcd stopped");
        let Some(pending) = self.pending_backup.take() else {
            return Event::Stopped;
        };
        // The cold copy of the data dir, while etcd is stopped.
        match self.backups.cold_copy(pending).await {
            Ok(done) => {
                self.backup_done(&done);
                Event::Stopped
            }
            Err(e) => {
                // No verified backup, no swap: `current` still points at the old version;
                // the machine restarts and verifies it, then queues again.
                let why = format!("backup failed after the stop: {e}");
                tracing::error!(member = %self.cfg.member, reason = %why, "restoring the old etcd; the upgrade will be retried");
                Event::ColdCopyFailed(why)
            }
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
