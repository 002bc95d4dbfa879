//! The downgrade, as the driver carries it out (the rules are [`crate::upgrade::rules::downgrade`]):
//! a staged older minor is parked (idle, staged, with the reason and the command to run)
//! until etcd's downgrade is enabled and the storage migrated, then it queues as any
//! candidate and takes the same turn (lock, leader last, backup, stop, swap, start,
//! verify). After a cancel, a member already downgraded takes the version it came from
//! again (still pinned in the versions store). A target that fails here cancels the
//! downgrade for the cluster. The idle member that sees the cluster finished (or the
//! cancel settled) deletes `<prefix>downgrade`.
//!
//! Hooks: [`Driver::downgrade_wake`] in `idle`'s wait and [`Driver::downgrade_gate`] in
//! `idle` (`candidate.rs`), the gate again in `preflight` (`queue.rs`),
//! [`Driver::downgrade_failed`] in `release`.

use super::*;
use crate::cluster::view::ClusterView;
use crate::upgrade::rules::downgrade::{self, Gate};

/// How long a settled cancel's record is kept for `status` before it is deleted.
const CANCEL_SHOWN: Duration = Duration::from_secs(60);

/// What the driver remembers of a parked older minor.
#[derive(Debug, Default)]
pub(super) struct Parked {
    /// Since when this member, leading, has seen the gate open while others were parked.
    leader_since: Option<Instant>,
    /// The next candidate comes from [`Driver::downgrade_wake`]: a parked one stays quiet.
    pub(super) recheck: bool,
}

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// The staged older minor this member waits with, if any (kept in state.json: idle
    /// with `to` set, so a restarted supervisor parks it again).
    fn parked_target(&self) -> Option<Version> {
        self.turn.to.clone().filter(|t| {
            self.turn.phase == Phase::Idle && t.minor_version() < self.turn.from.minor_version()
        })
    }

    /// How long `idle` waits before [`Driver::downgrade_wake`]; `None`: only for candidates.
    pub(super) fn downgrade_interval(&self) -> Option<Duration> {
        let interval = self.client.downgrade_poll()?;
        // A 3.5 member polls too: after 3.6 -> 3.5 it may be the one to see the end.
        (self.turn.from.minor_version() >= (3, 5) || self.parked_target().is_some())
            .then_some(interval)
    }

    /// One look at the downgrade from `idle`: the version to offer as a candidate now (a
    /// parked target whose gate opened, or the version to go back to after a cancel).
    pub(super) async fn downgrade_wake(&mut self) -> Option<Version> {
        if self.parked_target().is_none() && !self.client.downgrade_recorded().await {
            return None;
        }
        let view = self.client.read_view().await;
        if view.error.is_some() {
            return None;
        }
        let facts = self.client.downgrade_facts(&view).await;
        if downgrade::finished(&facts) {
            let target = facts.record.as_ref().map(|r| r.target.to_string());
            tracing::info!(member = %self.cfg.member, target = target.as_deref().unwrap_or("-"), cluster_version = ?view.cluster_version.as_ref().map(ToString::to_string), "the cluster finished the downgrade: every member runs the target and etcd ended it");
            self.client.end_downgrade().await;
            return None;
        }
        // A cancel's record stays a while after it settled, so `status` and a following
        // `downgrade` command still show why it was cancelled.
        let cancelled_a_while = facts.record.as_ref().is_some_and(|r| {
            humantime::parse_rfc3339(&r.time)
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age >= CANCEL_SHOWN)
        });
        if downgrade::cancel_settled(&facts) && cancelled_a_while {
            tracing::info!(member = %self.cfg.member, "the cancelled downgrade is settled: every member runs the newer minor again");
            self.client.end_downgrade().await;
            return None;
        }
        if matches!(self.turn.phase, Phase::Idle | Phase::Failed) {
            if let Some(back) = downgrade::go_back(facts.record.as_ref(), &self.turn.from) {
                if self.store_has(&back) {
                    tracing::warn!(member = %self.cfg.member, from = %self.turn.from, to = %back, "the downgrade was cancelled: going back to {back}");
                    return Some(back);
                }
                tracing::error!(member = %self.cfg.member, to = %back, "the downgrade was cancelled, but {back} is no longer pinned here: stage it again");
            }
        }
        let target = self.parked_target()?;
        match downgrade::gate(&facts, &self.turn.from, &target) {
            Gate::Go if self.leader_waits(&view, &target) => None,
            Gate::Go | Gate::NotADowngrade => Some(target),
            Gate::Park(_) => None,
        }
    }

    /// Leader last among parked members: the leader un-parks after the others (which then
    /// show as queued, and leader-last waits for them), or after `--leader-last-wait`.
    fn leader_waits(&mut self, view: &ClusterView, target: &Version) -> bool {
        if view.leader.as_deref() != Some(self.cfg.member.as_str()) {
            return false;
        }
        let others_parked = view.members.iter().any(|m| {
            m.name != self.cfg.member
                && m.server_version.as_ref() != Some(target)
                && view
                    .progress
                    .get(&m.name)
                    .and_then(|s| s.record())
                    .is_some_and(|r| r.state == "idle" && r.staged.as_ref() == Some(target))
        });
        if !others_parked {
            self.parked.leader_since = None;
            return false;
        }
        let since = *self.parked.leader_since.get_or_insert_with(Instant::now);
        since.elapsed() < self.cfg.leader_last_wait
    }

    /// Whether `version` is pinned here (the version a cancel goes back to).
    fn store_has(&self, version: &Version) -> bool {
        self.cfg
            .state_dir
            .join("versions")
            .join(version.to_string())
            .join("etcd")
            .is_file()
    }

    /// The gate for a staged `target`: `None` when it may go on (not a downgrade, or the
    /// downgrade is ready for it), `Some(why)` when it is parked. Clusters before 3.6 have
    /// no downgrade: the path rules alone decide there, as before.
    pub(super) async fn downgrade_gate(
        &self,
        view: &ClusterView,
        target: &Version,
    ) -> Option<String> {
        if self.turn.from.minor_version() < (3, 6)
            || target.minor_version() >= self.turn.from.minor_version()
        {
            return None;
        }
        let facts = self.client.downgrade_facts(view).await;
        match downgrade::gate(&facts, &self.turn.from, target) {
            Gate::Go | Gate::NotADowngrade => None,
            Gate::Park(why) => Some(why),
        }
    }

    /// A lower-minor target failed on this member (rolled back to `from`, or failed its
    /// rehearsal): the downgrade is cancelled for the cluster, with the reason.
    pub(super) async fn downgrade_failed(&self, version: &Version, why: &str) {
        if self.turn.from.minor_version() < (3, 6)
            || version.minor_version() >= self.turn.from.minor_version()
        {
            return;
        }
        let reason = format!("etcd {version} failed on {}: {why}", self.cfg.member);
        tracing::error!(member = %self.cfg.member, version = %version, reason = %reason, "cancelling the downgrade: the members already downgraded go back to {}", self.turn.from);
        let cancel = self
            .client
            .cancel_downgrade(reason, version.clone(), self.turn.from.clone());
        if tokio::time::timeout(RECORD_TIMEOUT * 2, cancel)
            .await
            .is_err()
        {
            tracing::error!(member = %self.cfg.member, "cancelling the downgrade timed out; run `etcd-supervisor downgrade --cancel`");
        }
    }
}
