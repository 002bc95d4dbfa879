//! The driver's pacing hooks: the gate before a turn starts (pause, maintenance windows),
//! and the soak after a forward verify. The decisions are pure ([`window::state_at`],
//! [`SoakWatch`]); this file only feeds them and waits.

use super::*;
use crate::cluster::view::ClusterView;
use crate::upgrade::rules::pacing::soak::{first_on_target, sample_of, SoakWatch};
use crate::upgrade::rules::pacing::window;

/// How often a member held by the pause looks again when the watch of the key prefix
/// is broken; while it works, a resume is seen as it happens.
pub(super) const PAUSE_POLL: Duration = Duration::from_secs(5);

/// Longest sleep while outside the windows: the time is re-evaluated (a clock step, or a
/// pause arriving meanwhile, is seen within this).
const WINDOW_POLL: Duration = Duration::from_secs(30);

/// How often a soaking member is looked at.
const SOAK_TICK: Duration = Duration::from_millis(500);

/// What holds a queued member back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldKind {
    /// `etcd-supervisor pause`.
    Pause,
    /// Outside every `--window`.
    Window,
    /// An etcd alarm is raised (NOSPACE, CORRUPT): held before the queue, not stopping.
    Alarm,
}

impl HoldKind {
    /// The metric label and log field.
    fn name(self) -> &'static str {
        match self {
            HoldKind::Pause => "pause",
            HoldKind::Window => "window",
            HoldKind::Alarm => "alarm",
        }
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
    /// Why no turn may start now (the pause first: it is the operator's word), and how long
    /// to wait before looking again; `None` when a turn may start.
    pub(super) async fn hold_reason(&self) -> Option<(HoldKind, String, Duration)> {
        let now = SystemTime::now();
        let window = window::state_at(&self.cfg.pacing.windows, now);
        let view = self.client.read_view().await;
        if let Some(why) = view.paused() {
            return Some((HoldKind::Pause, why, PAUSE_POLL));
        }
        // Under NOSPACE etcd takes no writes, not even the turn's lease: said here, with
        // the fix, rather than as a failing queue.
        if let Some(why) = preflight::alarm_hold(&view.alarms) {
            return Some((HoldKind::Alarm, why, PAUSE_POLL));
        }
        match window {
            window::WindowState::Closed { opens } => {
                let until = opens
                    .and_then(|t| t.duration_since(now).ok())
                    .unwrap_or(WINDOW_POLL);
                Some((HoldKind::Window, window.to_string(), until.min(WINDOW_POLL)))
            }
            _ => None,
        }
    }

    /// Waits until the cluster is not paused and a window is open; `Some(Shutdown)` when
    /// the supervisor is asked to stop meanwhile.
    pub(super) async fn wait_for_gate(&mut self) -> Option<Event> {
        loop {
            let Some((kind, why, nap)) = self.hold_reason().await else {
                self.set_hold(None).await;
                return None;
            };
            self.set_hold(Some((kind, why))).await;
            // A resume (or a pause arriving outside a window) wakes this at once.
            tokio::select! {
                () = self.client.changed_within(nap.max(Duration::from_millis(100))) => {}
                () = self.shutdown_signal() => return Some(Event::Shutdown),
            }
        }
    }

    /// Before vetting a candidate: waits while an etcd alarm is raised in `view` (read
    /// again every poll), saying why once. Under NOSPACE the rehearsal's restored copy
    /// carries the alarm and never serves /health true, which would read as the target's
    /// fault; and no turn may be taken anyway. `Some(Shutdown)` when asked to stop meanwhile.
    pub(super) async fn wait_out_alarm(&mut self, view: &ClusterView) -> Option<Event> {
        let mut why = preflight::alarm_hold(&view.alarms)?;
        loop {
            self.set_hold(Some((HoldKind::Alarm, why))).await;
            tokio::select! {
                () = tokio::time::sleep(PAUSE_POLL) => {}
                () = self.shutdown_signal() => return Some(Event::Shutdown),
            }
            match preflight::alarm_hold(&self.client.read_view().await.alarms) {
                Some(still) => why = still,
                None => {
                    self.set_hold(None).await;
                    return None;
                }
            }
        }
    }

    /// Right after the turn was acquired, before preflight changes anything: gives the turn
    /// back when a pause or the end of the window arrived while queued. True when it did.
    pub(super) async fn gate_closed_after_acquire(&mut self) -> bool {
        let Some((kind, why, _)) = self.hold_reason().await else {
            return false;
        };
        tracing::info!(member = %self.cfg.member, held_by = kind.name(), reason = %why, "turn acquired, but {why}; giving it back");
        self.give_back_turn().await;
        self.set_hold(Some((kind, why))).await;
        true
    }

    /// Records what holds this member (log, metric, `members/<name>`), once per change.
    async fn set_hold(&mut self, hold: Option<(HoldKind, String)>) {
        let text = hold.as_ref().map(|(_, why)| why.clone());
        if text == self.gate_hold {
            return;
        }
        match &hold {
            Some((kind, why)) => {
                tracing::info!(member = %self.cfg.member, held_by = kind.name(), reason = %why, "not starting a turn: {why}")
            }
            None => {
                tracing::info!(member = %self.cfg.member, "no longer held; queueing for the turn")
            }
        }
        self.metrics
            .set_held(hold.as_ref().map(|(kind, _)| kind.name()));
        self.gate_hold = text;
        self.publish().await;
    }

    /// A forward verify becomes a soak when `--soak` (or `--canary-soak`, for the first
    /// member on the target) asks for one; any other event passes through.
    pub(super) async fn soak_after_verify(&mut self, event: Event) -> Event {
        let pacing = &self.cfg.pacing;
        if event != Event::Verified
            || self.turn.phase != Phase::Verifying
            || self.turn.rollback
            || (pacing.soak.is_zero() && pacing.canary_soak.is_zero())
        {
            return event;
        }
        let Some(target) = self.turn.to.clone() else {
            return event;
        };
        let first = pacing.canary_soak > pacing.soak
            && first_on_target(&self.client.read_view().await, &self.cfg.member, &target);
        let length = pacing.soak_for(first);
        if length.is_zero() {
            return event;
        }
        Event::SoakFor(length)
    }

    /// Keeps the turn for `length`, watching the member; `Verified` when it held up.
    pub(super) async fn soak(&mut self, length: Duration) -> Event {
        let started = Instant::now();
        let pid = self.started_pid.or(self.control.status().pid);
        let to = self.turn.to.as_ref().map(ToString::to_string);
        let to = to.as_deref().unwrap_or("-");
        tracing::info!(member = %self.cfg.member, to, soak_ms = length.as_millis() as u64, "soaking: keeping the turn, watching health, alarms and the applied index");
        let mut watch = SoakWatch::new();
        loop {
            // Another member may start its turn once this one is lost: the soak no longer
            // holds the others back, so it ends here. The new version keeps running (no stop
            // without the turn); the machine holds it and queues to verify and soak it again.
            if let Some(reason) = self.held.as_ref().and_then(|h| h.lost_reason()) {
                tracing::warn!(member = %self.cfg.member, to, reason, "lost the upgrade turn during the soak; holding the new version, to verify and soak it again in a new turn");
                return Event::TurnLost;
            }
            let status = self.control.status();
            if status.pid.is_none() || status.pid != pid {
                let exit = status
                    .last_exit
                    .filter(|(p, _)| Some(*p) == pid)
                    .map_or_else(|| "not running".into(), |(_, e)| e.to_string());
                let why = format!(
                    "etcd {to} exited during the soak ({exit}); its last lines: {}",
                    verify::last_lines(&self.control.log_tail(), 5)
                );
                tracing::error!(member = %self.cfg.member, to, reason = %why, "soak failed");
                return Event::SoakFailed(why);
            }
            let elapsed = started.elapsed();
            if elapsed >= length {
                tracing::info!(member = %self.cfg.member, to, soak_ms = length.as_millis() as u64, "soak passed");
                return Event::Verified;
            }
            let sample = sample_of(&self.client.read_view().await, &self.cfg.member);
            if let Err(why) = watch.observe(started.elapsed(), &sample) {
                tracing::error!(member = %self.cfg.member, to, reason = %why, "soak failed");
                return Event::SoakFailed(why);
            }
            tokio::select! {
                () = tokio::time::sleep(SOAK_TICK.min(length - elapsed)) => {}
                () = self.shutdown_signal() => return Event::Shutdown,
            }
        }
    }
}
