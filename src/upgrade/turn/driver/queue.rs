//! Taking the turn: queueing for the cluster-wide lock behind the gates (pause, windows,
//! leader last), then preflight under it, which vets the target again when this process
//! has not vetted it for the cluster version it sees.

use super::*;

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

    pub(super) async fn preflight(&mut self) -> Event {
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
