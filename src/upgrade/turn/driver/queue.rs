//! Taking the turn: queueing for the cluster-wide lock behind the gates (pause, windows,
//! leader last, a recorded inconsistency), then preflight under it, which vets the target
//! again when this process has not vetted it for the cluster version it sees.
//!
//! A recorded inconsistency (a consistency check after a rollout found the members'
//! stores differ) blocks every turn until an operator acknowledges it: it is looked at
//! before queueing, and again once the lock is ours, since it may have been recorded while
//! this member waited in the queue.

use super::*;
use crate::cluster::keys::Keys;

/// How often a turn blocked by a recorded inconsistency looks whether it was acknowledged
/// when the watch of the key prefix is broken; while it works, the acknowledgement (the
/// record deleted) is seen as it happens.
const BLOCKED_POLL: Duration = Duration::from_secs(5);

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Queues for the turn after `after`.
    pub(super) async fn acquire(&mut self, after: Duration) -> Event {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            () = self.shutdown_signal() => return Event::Shutdown,
        }
        self.client.refresh_endpoints().await;
        let waited = Instant::now();
        tracing::info!(member = %self.cfg.member, to = ?self.turn.to.as_ref().map(ToString::to_string), "queueing for the upgrade turn");
        // The wait is spent reading the db back into memory for the restart at the turn.
        self.backups.read_ahead();
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
            match self.lock_unless_inconsistent().await {
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

    /// The lock, once no inconsistency is recorded (before queueing, and still once it is
    /// held; otherwise it is given back and the wait goes on). [`LockError::Cancelled`] on
    /// shutdown.
    async fn lock_unless_inconsistent(&self) -> Result<K::Lock, LockError> {
        let mut said = false;
        loop {
            if self.inconsistency(&mut said).await.is_some() {
                tokio::select! {
                    () = self.client.changed_within(BLOCKED_POLL) => continue,
                    () = self.shutdown_signal() => return Err(LockError::Cancelled),
                }
            }
            let held = self.client.acquire(self.shutdown_signal()).await?;
            if self.inconsistency(&mut said).await.is_none() {
                return Ok(held);
            }
            if let Err(e) = held.release().await {
                tracing::warn!(member = %self.cfg.member, error = %e, "could not give back the upgrade turn; it expires with its lease");
            }
        }
    }

    /// The recorded inconsistency, if any; said once per wait (`said`). A read that fails
    /// does not block: the lock call that follows fails the same way, and retries.
    async fn inconsistency(&self, said: &mut bool) -> Option<String> {
        match self.client.recorded_inconsistency().await {
            Ok(Some(why)) => {
                if !*said {
                    let key = Keys::new(&self.cfg.key_prefix).inconsistency();
                    tracing::error!(member = %self.cfg.member, key = %key, "not taking the upgrade turn: {why}; check the members, then run `etcd-supervisor acknowledge-inconsistency`");
                    *said = true;
                }
                Some(why)
            }
            Ok(None) => {
                if *said {
                    tracing::info!(member = %self.cfg.member, "the inconsistency was acknowledged; queueing for the upgrade turn");
                    *said = false;
                }
                None
            }
            Err(e) => {
                tracing::debug!(member = %self.cfg.member, error = %e, "could not read the inconsistency record");
                None
            }
        }
    }

    pub(super) async fn preflight(&mut self) -> Event {
        let Some(target) = self.turn.to.clone() else {
            return Event::PreflightRefused("nothing staged".into());
        };
        let report = self.client.read_view().await;
        match preflight::assess(
            &report,
            &self.cfg.member,
            &self.turn.from,
            &target,
            &self.cfg.policy,
        ) {
            PreflightVerdict::Proceed => {
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
            PreflightVerdict::Wait(why) => {
                tracing::info!(member = %self.cfg.member, to = %target, reason = %why, "preflight: waiting");
                Event::PreflightWait(why)
            }
            PreflightVerdict::Refuse(why) => Event::PreflightRefused(why),
        }
    }
}
