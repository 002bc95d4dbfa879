//! Leader last, as the driver carries it out (the decision is [`crate::upgrade::rules::leader_last`]):
//! before queueing, a leading member waits while others staged for the same target still
//! have to take their turns; a member that finds itself leading once it holds the turn
//! gives it back at once, before preflight changes anything; and a leader about to stop
//! hands leadership to a member already on the target.
//!
//! Hooks: [`Driver::leader_last_wait`] and [`Driver::keep_turn`] in `acquire`
//! (`queue.rs`), [`Driver::hand_over_leadership`] in `stop` (`swap.rs`) right before etcd
//! is stopped, [`Driver::announce_candidate`] around the vetting in `idle` (`candidate.rs`).

use std::collections::BTreeSet;

use super::*;
use crate::cluster::view::ClusterView;
use crate::upgrade::rules::leader_last::{
    self as rule, Assessment, Go, LeaderLastFacts, Stall, TurnOrder,
};

/// How often a waiting leader looks at the cluster again at the latest: a change of the
/// records or the lock (the last other member releasing the turn) wakes it at once; this
/// bound moves the time-based rules (the stall, the grace for members not staged yet) and
/// is the poll when the watch is broken.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(500);

/// Bound on the leadership transfer call; etcd's own hand-off on SIGTERM remains after it.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// What leader-last remembers across queue attempts.
#[derive(Debug, Default)]
pub(super) struct LeaderLast {
    /// The target the rest is about.
    target: Option<Version>,
    /// When this member was first ready to queue for it.
    since: Option<Instant>,
    /// Members waited for until the bound, for this target: not waited for again.
    given_up: BTreeSet<String>,
    /// What was last logged of each kind, so each change is logged once.
    said: [Option<String>; 3],
    /// A staged version being vetted, published in this member's record.
    pub(super) candidate: Option<Version>,
}

impl LeaderLast {
    fn for_target(&mut self, target: &Version) {
        if self.target.as_ref() != Some(target) {
            self.target = Some(target.clone());
            self.since = Some(Instant::now());
            self.given_up.clear();
            self.said = Default::default();
        }
    }

    /// True the first time `line` is to be said since something else of its `kind` was.
    fn fresh(&mut self, kind: Said, line: &str) -> bool {
        let said = &mut self.said[kind as usize];
        if said.as_deref() == Some(line) {
            return false;
        }
        *said = Some(line.to_owned());
        true
    }
}

/// The kinds of lines logged once per change.
#[derive(Debug, Clone, Copy)]
enum Said {
    Waiting,
    Skipped,
    Going,
}

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// Before queueing: while this member leads and others staged for the same target can
    /// still take their turns, waits (looking again on every change under the key prefix,
    /// at the latest every [`LOOK_EVERY`], so leadership moving away ends it). `false` on
    /// shutdown.
    pub(super) async fn leader_last_wait(&mut self) -> bool {
        let Some(target) = self.turn.to.clone() else {
            return true;
        };
        if self.cfg.leader_last_wait.is_zero() {
            return true;
        }
        self.leader_last.for_target(&target);
        let start = Instant::now();
        let mut stall = Stall::default();
        let mut waited = false;
        loop {
            let view = self.client.read_view().await;
            let facts = LeaderLastFacts::from_view(&view, &self.cfg.member, &target);
            let first = self.assess(&facts, Duration::ZERO);
            let stalled = match &first.decision {
                TurnOrder::Wait(names) => {
                    stall.observe(start.elapsed(), names, first.holder_waited)
                }
                TurnOrder::Go(_) => Duration::ZERO,
            };
            let assessment = self.assess(&facts, stalled);
            self.say_skipped(&assessment, &target);
            match assessment.decision {
                TurnOrder::Wait(names) => {
                    // A pause or a closed window holds the whole queue: that gate speaks
                    // (and is published) first.
                    if self.hold_reason().await.is_some() {
                        return true;
                    }
                    waited = true;
                    let line = format!("leader last: waiting for {}", names.join(", "));
                    if self.leader_last.fresh(Said::Waiting, &line) {
                        tracing::info!(member = %self.cfg.member, to = %target, waiting_for = %names.join(","), stalled_ms = stalled.as_millis() as u64, bound_ms = self.cfg.leader_last_wait.as_millis() as u64, "leader last: this member leads; leaving the turn to the members staged for the same version first");
                    }
                    tokio::select! {
                        () = self.client.changed_within(LOOK_EVERY) => {}
                        () = self.shutdown_signal() => return false,
                    }
                }
                TurnOrder::Go(go) => {
                    self.say_go(&go, &target, waited, start.elapsed());
                    return true;
                }
            }
        }
    }

    /// Once the turn is held: keeps it unless this member leads and others staged for the
    /// same target still have to go, in which case it is given back at once (nothing has
    /// changed yet) and `None` returned.
    pub(super) async fn keep_turn(&mut self, held: K::Lock) -> Option<K::Lock> {
        let Some(target) = self.turn.to.clone() else {
            return Some(held);
        };
        if self.cfg.leader_last_wait.is_zero() {
            return Some(held);
        }
        self.leader_last.for_target(&target);
        let view = self.client.read_view().await;
        let facts = LeaderLastFacts::from_view(&view, &self.cfg.member, &target);
        let TurnOrder::Wait(names) = self.assess(&facts, Duration::ZERO).decision else {
            return Some(held);
        };
        tracing::info!(member = %self.cfg.member, to = %target, waiting_for = %names.join(","), "leader last: this member leads and others staged for the same version are waiting; giving the turn back before preflight");
        match tokio::time::timeout(RECORD_TIMEOUT, held.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(member = %self.cfg.member, error = %e, "could not give the upgrade turn back; it expires with its lease")
            }
            Err(_) => {
                tracing::warn!(member = %self.cfg.member, "giving the upgrade turn back timed out; it expires with its lease")
            }
        }
        None
    }

    /// Right before a forward stop: when this member leads, hands leadership to a member
    /// already on the target, so the stop needs no election; otherwise (or when the call
    /// fails) etcd hands it over by itself on SIGTERM, as before.
    pub(super) async fn hand_over_leadership(&self, report: &ClusterView) {
        let Some(target) = self.turn.to.as_ref() else {
            return;
        };
        if report.leader.as_deref() != Some(self.cfg.member.as_str()) {
            return;
        }
        let Some(to) = rule::transferee(report, &self.cfg.member, target) else {
            tracing::info!(member = %self.cfg.member, to = %target, "this member leads and no other member runs the target yet; etcd hands leadership over by itself on SIGTERM");
            return;
        };
        let started = Instant::now();
        let moved =
            tokio::time::timeout(TRANSFER_TIMEOUT, self.client.transfer_leadership(to.id)).await;
        let took_ms = started.elapsed().as_millis() as u64;
        match moved {
            Ok(Ok(())) => {
                tracing::info!(member = %self.cfg.member, new_leader = %to.name, version = %target, took_ms, "leadership handed to a member on the target before the stop")
            }
            Ok(Err(e)) => {
                tracing::warn!(member = %self.cfg.member, new_leader = %to.name, error = %e, took_ms, "leadership transfer failed; etcd hands leadership over by itself on SIGTERM")
            }
            Err(_) => {
                tracing::warn!(member = %self.cfg.member, new_leader = %to.name, took_ms, "leadership transfer timed out; etcd hands leadership over by itself on SIGTERM")
            }
        }
    }

    /// Publishes (or clears) the staged version being vetted, so a leader waiting to go
    /// last counts this member. Cleared without a publish when `pass`: the move to `queued`
    /// publishes next, and a record without either would briefly read "not staged".
    pub(super) async fn announce_candidate(&mut self, candidate: Option<&Version>, pass: bool) {
        self.leader_last.candidate = candidate.cloned();
        if candidate.is_some() || !pass {
            self.publish().await;
        }
    }

    fn assess(&self, facts: &LeaderLastFacts, stalled: Duration) -> Assessment {
        let facts = LeaderLastFacts {
            staged_for: self
                .leader_last
                .since
                .map_or(Duration::MAX, |s| s.elapsed()),
            ..facts.clone()
        };
        rule::assess(
            &facts,
            &self.leader_last.given_up,
            stalled,
            self.cfg.leader_last_wait,
        )
    }

    fn say_skipped(&mut self, assessment: &Assessment, target: &Version) {
        if assessment.skipped.is_empty() {
            return;
        }
        let line = assessment
            .skipped
            .iter()
            .map(|(name, why)| format!("{name}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        if self.leader_last.fresh(Said::Skipped, &line) {
            tracing::info!(member = %self.cfg.member, to = %target, not_waiting_for = %line, "leader last: not waiting for these members");
        }
    }

    fn say_go(&mut self, go: &Go, target: &Version, waited: bool, took: Duration) {
        let took_ms = took.as_millis() as u64;
        match go {
            Go::GaveUp(names) => {
                tracing::warn!(member = %self.cfg.member, to = %target, gave_up_on = %names.join(","), bound_ms = self.cfg.leader_last_wait.as_millis() as u64, took_ms, "leader last: these members made no progress within the bound; the leader takes its turn before them");
                self.leader_last.given_up.extend(names.iter().cloned());
            }
            _ if waited => {
                tracing::info!(member = %self.cfg.member, to = %target, took_ms, reason = ?go, "leader last: done waiting; queueing");
            }
            Go::NoneWaiting if self.leader_last.fresh(Said::Going, "none waiting") => {
                tracing::info!(member = %self.cfg.member, to = %target, "leader last: this member leads and no other member waits for the same version");
            }
            _ => {}
        }
    }
}
