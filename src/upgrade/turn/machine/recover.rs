//! The way back in after a restart: what the persisted turn says may be half done, and how
//! to go on without stopping etcd.

use std::time::Duration;

use super::{Effect, Phase, Step, Turn};
use crate::versions::Version;

/// How to go on after the supervisor restarts with `persisted` state; `current` on disk is
/// the version `current` points at now.
///
/// Before the stop nothing changed, so the turn is re-queued. Once etcd may have been
/// stopped, the swap is driven to its end without waiting for the turn: restarting a
/// member only adds capacity, and the other members' preflight waits while it is down.
/// A forward swap is resumed rather than rolled back, because the cluster version may
/// already have moved past `from` (etcd refuses to start an older minor then).
/// An interrupted restore (the cold copy had failed) puts `from` back and verifies it.
pub fn recover(persisted: &Turn, current: &Version) -> Step {
    let go = |turn: Turn, effect: Effect| Step { turn, effect };
    match persisted.phase {
        Phase::Idle => go(
            Turn {
                from: current.clone(),
                ..persisted.clone()
            },
            Effect::Nothing,
        ),
        Phase::Queued | Phase::Preflight | Phase::Backup => go(
            Turn {
                phase: Phase::Queued,
                ..persisted.clone()
            },
            Effect::AcquireTurn {
                after: Duration::ZERO,
            },
        ),
        Phase::Stopping if !persisted.rollback => {
            // Stopped (or not) but not yet switched: the known-good version runs again.
            go(
                Turn {
                    phase: Phase::Queued,
                    ..persisted.clone()
                },
                Effect::AcquireTurn {
                    after: Duration::ZERO,
                },
            )
        }
        // A soak cut short: the swap is driven again, and the member verified and soaked anew.
        Phase::Stopping | Phase::Swapping | Phase::Starting | Phase::Verifying | Phase::Soaking => {
            let target = persisted
                .target()
                .cloned()
                .unwrap_or_else(|| persisted.from.clone());
            go(
                Turn {
                    phase: Phase::Swapping,
                    ..persisted.clone()
                },
                Effect::Switch(target),
            )
        }
        // Stopped with no backup and `current` never switched: `from` is put back (the
        // switch is idempotent, and keeps etcd held until it is done), started and verified.
        Phase::Restoring => go(persisted.clone(), Effect::Switch(persisted.from.clone())),
        Phase::Failed => go(persisted.clone(), Effect::Nothing),
        // The new version runs (the run loop starts `current`), unverified: the turn is
        // queued for, to verify it again.
        Phase::Holding => go(
            persisted.clone(),
            Effect::AcquireTurn {
                after: Duration::ZERO,
            },
        ),
    }
}
