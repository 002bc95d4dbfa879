//! Whose fault a failed swap is: the one idea the machine uses to decide between rejecting
//! a version for the whole cluster and keeping it staged here.

use serde::{Deserialize, Deserializer, Serialize};

use super::{Effect, Phase, Step, Turn};

/// Who a failed swap is blamed on, which decides what the rollback's release records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The new version: it crashed, exited or reported another version. Rejected
    /// cluster-wide (`rejected/<v>`).
    #[default]
    Version,
    /// This member: its flags (a usage error) or its network. Nothing is rejected and the
    /// target stays staged here.
    Member,
    /// Not known yet: the new version kept running but stayed unhealthy. The old version,
    /// rolled back under the same conditions, decides: healthy again blames the version,
    /// unhealthy too blames the member.
    Unproven,
}

/// Reads the field as written now (`"version"`, `"member"`, `"unproven"`) or as state files
/// before it wrote it (`member_fault: true|false`).
pub(super) fn compat<'de, D: Deserializer<'de>>(d: D) -> Result<Fault, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Legacy(bool),
        Now(Fault),
    }
    Ok(match Either::deserialize(d)? {
        Either::Legacy(true) => Fault::Member,
        Either::Legacy(false) => Fault::Version,
        Either::Now(f) => f,
    })
}

impl Turn {
    /// The turn is gone while the new version runs unverified: it keeps running (a stop
    /// needs the turn), supervision goes back to the run loop, and the turn is queued for
    /// to verify it again.
    pub(super) fn hold(&self) -> Step {
        let to = self.to.clone().unwrap_or_else(|| self.from.clone());
        let before = self.last_error.clone().unwrap_or_default();
        let turn = Turn {
            phase: Phase::Holding,
            rollback: false,
            fault: Fault::Version,
            last_error: Some(format!(
                "lost the upgrade turn while etcd {to} ran unverified ({before}); not stopping \
                 it without the turn: it is verified again, or rolled back, in the next turn"
            )),
            retries: self.retries.saturating_add(1),
            ..self.clone()
        };
        Step {
            turn,
            effect: Effect::Release {
                reject: None,
                refuse: None,
            },
        }
    }

    /// Neither the new version nor the old one became healthy here: the conditions are to
    /// blame (this member cannot reach its peers), not the version. Nothing is rejected, the
    /// target stays staged, and the member queues again with backoff.
    pub(super) fn member_cannot_serve(&self, why: String) -> Step {
        let to = self
            .to
            .as_ref()
            .map_or_else(|| "the target".to_owned(), ToString::to_string);
        let first = self.last_error.clone().unwrap_or_default();
        self.requeue(format!(
            "{first}; and {from} did not become healthy either: {why}. This member cannot \
             serve (its network to the other members, most likely), which is not the fault of \
             etcd {to}: nothing is rejected, {to} stays staged and is tried again; check this \
             host's network to its peers",
            from = self.from
        ))
    }
}
