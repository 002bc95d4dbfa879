//! The turn's state machine: plain data and one pure transition function.
//!
//! Every transition yields exactly one [`Effect`] for the executor to carry out; the
//! effect's outcome comes back as the next [`Event`]. The executor persists the new
//! [`Turn`] (state.json) *before* it performs the effect, so after a crash the persisted
//! phase says what may have been half done, and [`recover`] decides how to go on.
//!
//! The swap itself (stop, switch `current`, start, verify) runs in one of two directions:
//! forward to `to`, or back to `from` when the new version failed. `rollback` says which.
//! A cold copy of the data dir that fails once etcd is stopped, or a forward switch that
//! fails (a full or read-only disk), leads to `Restoring` instead: `current` is put back at
//! the old version (idempotent), which is started and verified again, and the member
//! queues anew without rejecting anything.
//!
//! Whose fault a failure is ([`Fault`]) decides what the rollback records: a version that
//! crashed is rejected for the cluster; one that kept running unhealthy is rejected only if
//! the old version, rolled back under the same conditions, comes back healthy. A member
//! that cannot reach its peers rejects nothing, and a turn lost mid-swap never leads to a
//! second stop: the old version is put back while etcd is stopped, and a new version that
//! already runs is held, unverified, until the turn is taken again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::versions::Version;

pub use fault::Fault;
pub use recover::recover;

mod fault;
mod recover;

/// Where a member is in its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing staged.
    Idle,
    /// A verified candidate is waiting for the cluster-wide turn.
    Queued,
    /// The turn is held; checking cluster health and path rules.
    Preflight,
    /// Taking the backup (etcd still running).
    Backup,
    /// Stopping etcd (SIGTERM, escalation after the stop timeout).
    Stopping,
    /// Switching `current`.
    Swapping,
    /// Starting etcd on the switched version.
    Starting,
    /// Waiting until etcd is healthy, reports the version, and has caught up.
    Verifying,
    /// Verified on the new version; keeping the turn a while longer, watched (`--soak`).
    /// A failure now rolls back and rejects, like a failed verify.
    Soaking,
    /// The cold copy failed after etcd was stopped for a forward swap: `current` still
    /// points at `from`; starting and verifying it, then queueing again. Nothing is rejected.
    Restoring,
    /// The old version cannot be brought back; the run loop keeps restarting it.
    Failed,
    /// The turn was lost while the new version ran unverified: it keeps running (no stop
    /// without the turn); queueing to verify it again, and roll back if need be.
    Holding,
}

/// Every state name [`Turn::state_name`] yields, in the order of the swap.
pub const STATE_NAMES: &[&str] = &[
    "idle",
    "queued",
    "preflight",
    "backup",
    "stopping",
    "swapping",
    "starting",
    "verifying",
    "soaking",
    "rolling-back",
    "restoring",
    "failed",
    "holding",
];

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 12] = [
        Phase::Idle,
        Phase::Queued,
        Phase::Preflight,
        Phase::Backup,
        Phase::Stopping,
        Phase::Swapping,
        Phase::Starting,
        Phase::Verifying,
        Phase::Soaking,
        Phase::Restoring,
        Phase::Failed,
        Phase::Holding,
    ];
}

/// The persisted state of this member's upgrade (state.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Current phase.
    pub phase: Phase,
    /// The known-good version (running before the turn, and the rollback target).
    pub from: Version,
    /// The staged target, if any.
    pub to: Option<Version>,
    /// True while the swap runs backwards, to `from`.
    pub rollback: bool,
    /// Why the last attempt did not go through (cleared on success).
    pub last_error: Option<String>,
    /// Attempts at the turn that ended in a wait or a transient failure, for backoff.
    pub retries: u32,
    /// Whose fault the rollback under way is (read from `member_fault` in older files).
    #[serde(default, alias = "member_fault", deserialize_with = "fault::compat")]
    pub fault: Fault,
}

/// What happened: the outcome of the last effect, or something from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A staged binary passed the acceptance checks.
    Staged(Version),
    /// The staged version cannot run with this member as it is configured (its flags,
    /// its disk, a missing tool): refused here with the fix; kept staged, nothing rejected.
    RefusedHere(Version, String),
    /// The staged version failed a check that is its own fault (the dress rehearsal):
    /// rejected for the whole cluster before any member stopped.
    FailedBeforeTurn(Version, String),
    /// The cluster-wide turn is ours.
    TurnAcquired,
    /// The turn's lease expired or its key vanished.
    TurnLost,
    /// Cluster healthy and path rules say proceed.
    PreflightPassed,
    /// Not now (cluster unhealthy, a member unreachable...): retry later.
    PreflightWait(String),
    /// Never for this version (path rules refuse).
    PreflightRefused(String),
    /// The backup is written and verified.
    BackupDone,
    /// The backup could not be taken (disk full...).
    BackupFailed(String),
    /// etcd has exited.
    Stopped,
    /// The stop could not even be asked for (the run loop is gone): whether etcd runs is
    /// unknown, so the driver ends and `recover` decides on the next start.
    StopFailed(String),
    /// etcd was stopped for a forward swap, but the cold copy of its data dir failed.
    ColdCopyFailed(String),
    /// `current` points at the effect's version.
    Switched,
    /// The switch failed (I/O error).
    SwitchFailed(String),
    /// etcd was started.
    Started,
    /// etcd could not be started at all.
    StartFailed(String),
    /// Healthy, right version, caught up.
    Verified,
    /// Verified on the new version, and to be soaked this long before the turn is released.
    SoakFor(Duration),
    /// The member failed while soaking (exited, unhealthy too long, alarm, fell behind).
    SoakFailed(String),
    /// Exited, or reported another version: the version's fault.
    VerifyFailed(String),
    /// Kept running but was not healthy and caught up in time: whose fault is not known.
    StayedUnhealthy(String),
    /// The new version refused this member's configuration (a usage error): rolled back
    /// like a failure, but as the member's fault.
    Misconfigured(String),
    /// The turn was released (and progress recorded).
    Released,
    /// SIGTERM/SIGINT to the supervisor.
    Shutdown,
}

/// The one thing the executor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing to do until an outside event.
    Nothing,
    /// Queue for the turn (after a delay, for retries).
    AcquireTurn {
        /// Wait this long first.
        after: Duration,
    },
    /// Check cluster health and the path rules.
    Preflight,
    /// Take and verify the backup.
    Backup,
    /// Stop etcd gracefully.
    StopEtcd,
    /// Point `current` at this version.
    Switch(Version),
    /// Start etcd on `current`.
    StartEtcd,
    /// Wait until etcd runs this version healthily and caught up.
    Verify(Version),
    /// Keep the turn this long, watching the member (health, alarms, applied index).
    Soak(Duration),
    /// Release the turn; record the outcome in etcd and on disk.
    Release {
        /// A version that failed to serve: rejected for the whole cluster (`rejected/<v>`).
        reject: Option<(Version, String)>,
        /// A version this member may not take (path rules): refused here, with the reason.
        refuse: Option<(Version, String)>,
    },
    /// Release the turn (if held), stop etcd, keep the persisted state for `recover`, exit.
    Exit,
}

/// A transition's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The next state, to persist before performing `effect`.
    pub turn: Turn,
    /// What to do.
    pub effect: Effect,
}

/// Delay before re-queueing after a wait or transient failure: 1 s doubling to 60 s.
pub fn retry_delay(retries: u32) -> Duration {
    Duration::from_secs(1u64 << retries.min(6)).min(Duration::from_secs(60))
}

impl Turn {
    /// A member running `version` with nothing staged.
    pub fn idle(version: Version) -> Self {
        Self {
            phase: Phase::Idle,
            from: version,
            to: None,
            rollback: false,
            last_error: None,
            retries: 0,
            fault: Fault::Version,
        }
    }

    /// The version the swap is heading to (`to` forward, `from` when rolling back).
    pub fn target(&self) -> Option<&Version> {
        if self.rollback {
            Some(&self.from)
        } else {
            self.to.as_ref()
        }
    }

    /// The state name used in logs, STATUS= and `members/<name>`.
    pub fn state_name(&self) -> &'static str {
        match (self.phase, self.rollback) {
            (Phase::Idle, _) => "idle",
            (Phase::Queued, _) => "queued",
            (Phase::Preflight, _) => "preflight",
            (Phase::Backup, _) => "backup",
            (Phase::Failed, _) => "failed",
            (Phase::Restoring, _) => "restoring",
            (Phase::Holding, _) => "holding",
            (Phase::Soaking, _) => "soaking",
            (_, true) => "rolling-back",
            (Phase::Stopping, false) => "stopping",
            (Phase::Swapping, false) => "swapping",
            (Phase::Starting, false) => "starting",
            (Phase::Verifying, false) => "verifying",
        }
    }

    fn with(&self, phase: Phase) -> Turn {
        Turn {
            phase,
            ..self.clone()
        }
    }

    /// Back in the queue after a wait or transient failure, turn released.
    fn requeue(&self, why: String) -> Step {
        let turn = Turn {
            phase: Phase::Queued,
            rollback: false,
            fault: Fault::Version,
            last_error: Some(why),
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

    /// Starts the swap back to `from` because the new version failed.
    fn roll_back(&self, why: String) -> Step {
        self.roll_back_for(why, Fault::Version)
    }

    /// Starts the swap back to `from`; `fault` says whose fault it was.
    fn roll_back_for(&self, why: String, fault: Fault) -> Step {
        let turn = Turn {
            phase: Phase::Stopping,
            rollback: true,
            last_error: Some(why),
            fault,
            ..self.clone()
        };
        Step {
            turn,
            effect: Effect::StopEtcd,
        }
    }
}

/// The transition function.
pub fn step(turn: &Turn, event: Event) -> Step {
    use Effect as E;
    use Event as V;
    use Phase as P;
    let go = |turn: Turn, effect: Effect| Step { turn, effect };
    let stay = || go(turn.clone(), E::Nothing);

    match (turn.phase, event) {
        // Shutdown leaves the state as it is: before the stop nothing has changed, and after
        // it the persisted phase lets `recover` finish the swap on the next start. Putting
        // `from` back blindly could start an older minor after the cluster version moved,
        // which etcd refuses (after touching the data dir).
        (_, V::Shutdown) => go(turn.clone(), E::Exit),

        (P::Idle | P::Queued | P::Failed, V::Staged(v)) => {
            if v == turn.from {
                return stay();
            }
            let t = Turn {
                phase: P::Queued,
                to: Some(v),
                rollback: false,
                last_error: None,
                retries: 0,
                fault: Fault::Version,
                ..turn.clone()
            };
            go(
                t,
                E::AcquireTurn {
                    after: Duration::ZERO,
                },
            )
        }
        // Vetting before the queue (or again at preflight): nothing has stopped; a turn held
        // at preflight is given back by the release.
        (P::Idle | P::Failed | P::Preflight, V::RefusedHere(v, why)) => go(
            Turn {
                phase: P::Idle,
                to: Some(v.clone()),
                last_error: Some(why.clone()),
                retries: 0,
                fault: Fault::Version,
                ..turn.clone()
            },
            E::Release {
                reject: None,
                refuse: Some((v, why)),
            },
        ),
        (P::Idle | P::Failed | P::Preflight, V::FailedBeforeTurn(v, why)) => go(
            Turn {
                phase: P::Idle,
                to: None,
                last_error: Some(why.clone()),
                retries: 0,
                fault: Fault::Version,
                ..turn.clone()
            },
            E::Release {
                reject: Some((v, why)),
                refuse: None,
            },
        ),
        // A held new version is verified (or rolled back) first: keep queueing for that turn.
        (P::Holding, V::Staged(_)) => go(
            turn.clone(),
            E::AcquireTurn {
                after: retry_delay(turn.retries.saturating_sub(1)),
            },
        ),
        // A newer candidate while the turn is under way waits for the next turn.
        (_, V::Staged(_)) => stay(),

        (P::Queued, V::TurnAcquired) => go(turn.with(P::Preflight), E::Preflight),
        (P::Preflight, V::PreflightPassed) => go(turn.with(P::Backup), E::Backup),
        (P::Preflight, V::PreflightWait(why)) => turn.requeue(why),
        (P::Preflight, V::PreflightRefused(why)) => {
            let rejected = turn.to.clone();
            let t = Turn {
                phase: P::Idle,
                to: None,
                last_error: Some(why.clone()),
                ..turn.clone()
            };
            go(
                t,
                E::Release {
                    reject: None,
                    refuse: rejected.map(|v| (v, why)),
                },
            )
        }
        (P::Backup, V::BackupDone) => go(turn.with(P::Stopping), E::StopEtcd),
        (P::Backup, V::BackupFailed(why)) => turn.requeue(why),
        // The last look right before a forward stop found a member down: nothing stopped.
        (P::Stopping, V::PreflightWait(why)) if !turn.rollback => turn.requeue(why),
        // etcd is stopped but there is no backup: the old version is started and verified
        // again before the turn is given back. `current` is put back first (idempotent):
        // after a failed switch-back it may not point at `from`.
        (P::Stopping, V::ColdCopyFailed(why)) if !turn.rollback => go(
            Turn {
                phase: P::Restoring,
                last_error: Some(why),
                ..turn.clone()
            },
            E::Switch(turn.from.clone()),
        ),
        // Nobody is left to stop etcd: end here and let `recover` settle it on restart.
        (P::Stopping, V::StopFailed(why)) => go(
            Turn {
                last_error: Some(why),
                ..turn.clone()
            },
            E::Exit,
        ),

        // Losing the turn before the stop aborts; after it the swap is finished or rolled
        // back first (the event is ignored), and the next turn must be acquired anew.
        (P::Preflight | P::Backup, V::TurnLost) => turn.requeue("lost the upgrade turn".into()),
        // Found lost right before a forward stop (the driver checks): nothing stopped yet.
        (P::Stopping, V::TurnLost) if !turn.rollback => {
            turn.requeue("lost the upgrade turn".into())
        }
        // Found lost right before switching to or starting the new version, etcd stopped:
        // the known-good version is put back and started; nothing is stopped again.
        (P::Swapping | P::Starting, V::TurnLost) if !turn.rollback => go(
            Turn {
                phase: P::Restoring,
                last_error: Some(format!(
                    "lost the upgrade turn while etcd was stopped; restoring {}",
                    turn.from
                )),
                ..turn.clone()
            },
            E::Switch(turn.from.clone()),
        ),
        // Found lost right before a rollback's stop, the new version still running (the
        // driver says so only then): no stop without the turn.
        (P::Stopping, V::TurnLost) => turn.hold(),
        // Lost during the soak: the new version verified but is not proven yet, and another
        // member may start its turn now, so the soak no longer holds the others back. No
        // stop without the turn: the new version keeps running, and the member queues to
        // verify and soak it again (or roll it back) in a turn of its own.
        (P::Soaking, V::TurnLost) => Turn {
            last_error: Some("the soak was cut short".into()),
            ..turn.clone()
        }
        .hold(),
        (_, V::TurnLost) => stay(),
        (P::Holding, V::Released) => go(
            turn.clone(),
            E::AcquireTurn {
                after: retry_delay(turn.retries.saturating_sub(1)),
            },
        ),
        (P::Holding, V::TurnAcquired) => {
            let to = turn.to.clone().unwrap_or_else(|| turn.from.clone());
            go(turn.with(P::Verifying), E::Verify(to))
        }

        (P::Stopping, V::Stopped) => {
            let target = turn.target().cloned().unwrap_or_else(|| turn.from.clone());
            go(turn.with(P::Swapping), E::Switch(target))
        }
        (P::Swapping, V::Switched) => go(turn.with(P::Starting), E::StartEtcd),
        // Restoring after a crash re-points `current` at `from` first.
        (P::Restoring, V::Switched) => go(turn.clone(), E::StartEtcd),
        (P::Restoring, V::Started) => go(turn.clone(), E::Verify(turn.from.clone())),
        (P::Restoring, V::StayedUnhealthy(why)) => turn.member_cannot_serve(why),
        (P::Restoring, V::Verified) => {
            let why = turn
                .last_error
                .clone()
                .unwrap_or_else(|| "the backup failed after the stop".into());
            turn.requeue(why)
        }
        // The old version does not come back: as a failed rollback, minus the rejection
        // (the new version never ran).
        // (A usage error of the old version is its flags or config file changed since it
        // last ran: no turn may stay held for it either.)
        (
            P::Restoring,
            V::SwitchFailed(why)
            | V::StartFailed(why)
            | V::VerifyFailed(why)
            | V::Misconfigured(why),
        ) => go(
            Turn {
                phase: P::Failed,
                last_error: Some(format!("restarting the old version failed: {why}")),
                ..turn.clone()
            },
            E::Release {
                reject: None,
                refuse: None,
            },
        ),
        // etcd is already stopped and the new version never ran: a second stop would be
        // redundant and a rejection unfounded (a full or read-only disk is not the
        // version's fault). `current` is put back and the old version verified, then requeued.
        (P::Swapping, V::SwitchFailed(why)) if !turn.rollback => go(
            Turn {
                phase: P::Restoring,
                last_error: Some(format!("switching `current` failed: {why}")),
                ..turn.clone()
            },
            E::Switch(turn.from.clone()),
        ),
        (P::Starting, V::Started) => {
            let target = turn.target().cloned().unwrap_or_else(|| turn.from.clone());
            go(turn.with(P::Verifying), E::Verify(target))
        }
        // Never started: nothing to stop, so the rollback begins at the switch back.
        (P::Starting, V::StartFailed(why)) if !turn.rollback => go(
            Turn {
                phase: P::Swapping,
                rollback: true,
                last_error: Some(why),
                ..turn.clone()
            },
            E::Switch(turn.from.clone()),
        ),
        (P::Verifying, V::VerifyFailed(why)) if !turn.rollback => turn.roll_back(why),
        (P::Verifying, V::StayedUnhealthy(why)) if !turn.rollback => {
            turn.roll_back_for(why, Fault::Unproven)
        }
        (P::Starting | P::Verifying, V::Misconfigured(why)) if !turn.rollback => {
            turn.roll_back_for(why, Fault::Member)
        }
        (P::Verifying, V::Verified) if !turn.rollback => {
            let to = turn.to.clone().unwrap_or_else(|| turn.from.clone());
            let t = Turn {
                phase: P::Idle,
                from: to,
                to: None,
                rollback: false,
                last_error: None,
                retries: 0,
                fault: Fault::Version,
            };
            go(
                t,
                E::Release {
                    reject: None,
                    refuse: None,
                },
            )
        }
        // Soak: only forward, after the new version verified.
        (P::Verifying, V::SoakFor(length)) if !turn.rollback => {
            go(turn.with(P::Soaking), E::Soak(length))
        }
        // The soak passed: finished exactly as a verify without soak.
        (P::Soaking, V::Verified) => step(&turn.with(P::Verifying), V::Verified),
        // Judged like a version that stayed unhealthy: rejected only if the old version,
        // rolled back under the same conditions, becomes healthy (a partition rejects nothing).
        (P::Soaking, V::SoakFailed(why)) => {
            turn.roll_back_for(format!("failed during the soak: {why}"), Fault::Unproven)
        }
        (P::Verifying, V::Verified) if turn.fault == Fault::Member => {
            // Back on the old version, and the new one is fine: this member's flags are
            // not. It stays staged here, to be taken once the flags are fixed.
            let reason = turn
                .last_error
                .clone()
                .unwrap_or_else(|| "the new version refused this member's flags".into());
            let refuse = turn.to.clone().map(|v| (v, reason));
            let t = Turn {
                phase: P::Idle,
                rollback: false,
                fault: Fault::Version,
                ..turn.clone()
            };
            go(
                t,
                E::Release {
                    reject: None,
                    refuse,
                },
            )
        }
        (P::Verifying, V::Verified) => {
            // Back on the old version: the new one is rejected for the whole cluster.
            let mut reason = turn
                .last_error
                .clone()
                .unwrap_or_else(|| "failed to come up".into());
            if turn.fault == Fault::Unproven {
                reason = format!(
                    "{reason}; {}, rolled back under the same conditions, became healthy",
                    turn.from
                );
            }
            let reject = turn.to.clone().map(|v| (v, reason));
            let t = Turn {
                phase: P::Idle,
                to: None,
                rollback: false,
                fault: Fault::Version,
                ..turn.clone()
            };
            go(
                t,
                E::Release {
                    reject,
                    refuse: None,
                },
            )
        }
        // The old version stays unhealthy too after a version that kept running unhealthy:
        // the member is to blame, not the version.
        (P::Verifying, V::StayedUnhealthy(why)) if turn.fault == Fault::Unproven => {
            turn.member_cannot_serve(why)
        }
        // The old version does not come back either: say so, release the turn (the other
        // members' preflight sees this member down and waits), and let the run loop keep
        // restarting `from` with backoff.
        (P::Swapping, V::SwitchFailed(why))
        | (P::Starting, V::StartFailed(why))
        | (P::Verifying, V::VerifyFailed(why) | V::StayedUnhealthy(why))
        | (P::Starting | P::Verifying, V::Misconfigured(why)) => {
            let reject = turn
                .to
                .clone()
                .filter(|_| turn.fault == Fault::Version)
                .map(|v| {
                    let first = turn.last_error.clone().unwrap_or_default();
                    (v, first)
                });
            let t = Turn {
                phase: P::Failed,
                last_error: Some(format!("rollback failed: {why}")),
                ..turn.clone()
            };
            go(
                t,
                E::Release {
                    reject,
                    refuse: None,
                },
            )
        }

        (P::Queued, V::Released) if turn.to.is_some() => go(
            turn.clone(),
            E::AcquireTurn {
                after: retry_delay(turn.retries.saturating_sub(1)),
            },
        ),
        (_, V::Released) => stay(),

        // Anything else is an outcome that does not belong to this phase (a stale event
        // after a crash or a race); ignoring it keeps the machine where it is.
        _ => stay(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
#[cfg(test)]
mod soak_tests;
