//! Before the queue: a staged candidate waits here (with a parked older minor looked at
//! again), is refused at once when the path rules say it can never be taken, parked while
//! etcd's downgrade is not enabled for it, and vetted against this member (flags, v2 store,
//! dress rehearsal) before it may queue; an etcd alarm (NOSPACE) holds it before vetting. Nothing is held and nothing stops for a candidate
//! that fails here.

use super::*;

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Waits for a staged candidate (or shutdown) and vets it before it may queue: the path
    /// rules, then this member's configuration (and the rehearsal). Nothing is held and
    /// nothing stops for a candidate that fails here.
    pub(super) async fn idle(&mut self) -> Event {
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
            let report = self.client.read_view().await;
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
            if let PreflightVerdict::Refuse(why) = verdict {
                self.note_refusal(&target, &why).await;
                continue;
            }
            if let Some(shutdown) = self.wait_out_alarm(&report).await {
                return shutdown;
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
}
