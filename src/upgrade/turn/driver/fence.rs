//! The fence before each world-changing step: the turn taken by this process is confirmed
//! with etcd (its lock key, under its lease) right before etcd is stopped, `current` is
//! pointed at the new version or it is started, and a rejection is recorded.

use super::*;

impl<C, K, B, S, V> Driver<C, K, B, S, V>
where
    C: EtcdChild,
    K: Cluster,
    B: Backups,
    S: VersionSwitch,
    V: Vetter,
{
    /// True on a forward swap in one of `phases`, with a turn taken by this process.
    pub(super) fn forward_in(&self, phases: &[Phase]) -> bool {
        !self.turn.rollback && phases.contains(&self.turn.phase) && self.held.is_some()
    }

    /// Confirms with etcd that the turn taken by this process is still ours, right before
    /// `step`: `Some(reason)` when it is not (logged). A swap driven by `recover` holds no
    /// turn of its own and is not fenced: it finishes what was announced before the crash.
    pub(super) async fn fence(&self, step: &str) -> Option<String> {
        let held = self.held.as_ref()?;
        let stopped = matches!(self.turn.phase, Phase::Swapping | Phase::Starting);
        let reason = if self.sole_voter && stopped {
            // The only voting member is the one stopped: nobody can be asked, and nobody can
            // take the turn meanwhile (its lock lives in the stopped etcd).
            held.lost_reason()?
        } else {
            held.confirm().await?
        };
        tracing::warn!(member = %self.cfg.member, state = self.turn.state_name(), reason, "lost the upgrade turn; not {step}");
        Some(reason)
    }
}
