//! The reload's part of the lifecycle (SIGHUP, see [`crate::supervisor::reexec`]): the new
//! binary is checked, then the reload waits for a quiet point (etcd running under the loop's
//! own care and the driver holding no turn), the driver stands down, and the loop execs.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Child, Effect, Lifecycle, Note};
use crate::upgrade::turn::machine::Phase;

/// How long a reload waits for a turn to end (and etcd to run) before it gives up.
pub const QUIET_WAIT: Duration = Duration::from_secs(15 * 60);

/// How often a waiting reload looks for its quiet point.
pub const QUIET_POLL: Duration = Duration::from_millis(200);

/// A reload under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new binary is proving it can take over.
    Checking,
    /// It can; waiting for a quiet point.
    Waiting {
        /// Since when.
        since: Instant,
        /// The wait was logged once.
        logged: bool,
        /// When to look again.
        next_look: Instant,
    },
    /// The driver was told to stand down; exec when it has, or at this deadline.
    Draining {
        /// When the loop stops waiting for the driver.
        until: Instant,
    },
}

/// True for the driver's phases in which it holds no turn: a reload may hand over then.
pub fn holds_no_turn(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Idle | Phase::Queued | Phase::Failed | Phase::Holding
    )
}

impl Lifecycle {
    /// A handled signal, seen first by the reload: SIGHUP starts one (and is not forwarded
    /// to etcd, which would die of it), a stop cancels a check. True when the signal is taken.
    pub(super) fn reload_signal(&mut self, sig: Signal, fx: &mut Vec<Effect>) -> bool {
        if !self.rules.reload {
            return false;
        }
        match sig {
            Signal::SIGHUP => {
                self.request_reload(fx);
                true
            }
            Signal::SIGTERM | Signal::SIGINT => {
                if self.reload == Some(Reload::Checking) {
                    self.reload = None;
                    fx.push(Effect::CancelCheck);
                }
                false
            }
            _ => false,
        }
    }

    fn request_reload(&mut self, fx: &mut Vec<Effect>) {
        if self.shutting_down {
            fx.push(Effect::Log(Note::ReloadIgnored));
        } else if self.reload.is_some() {
            fx.push(Effect::Log(Note::ReloadUnderWay));
        } else {
            self.reload = Some(Reload::Checking);
            fx.push(Effect::Reloading(
                "reloading: checking the new binary".to_owned(),
            ));
            fx.push(Effect::CheckNewBinary);
        }
    }

    /// Ends a reload that changed nothing: logged, and systemd told it is over.
    fn refuse(&mut self, why: String, fx: &mut Vec<Effect>) {
        self.reload = None;
        fx.push(Effect::DropRecord);
        let status = format!("etcd {}; reload refused: {why}", self.version);
        fx.push(Effect::Log(Note::ReloadRefused(why)));
        fx.push(Effect::Ready(status));
    }

    pub(super) fn on_checked(
        &mut self,
        now: Instant,
        result: Result<String, String>,
        fx: &mut Vec<Effect>,
    ) {
        if self.reload != Some(Reload::Checking) {
            return;
        }
        match result {
            Ok(said) => {
                fx.push(Effect::Log(Note::CanTakeOver(said)));
                self.reload = Some(Reload::Waiting {
                    since: now,
                    logged: false,
                    next_look: now + QUIET_POLL,
                });
            }
            Err(why) => self.refuse(why, fx),
        }
    }

    /// etcd runs under the loop's own care: no start, stop or restart under way, no turn.
    pub fn settled(&self) -> bool {
        matches!(self.child, Child::Running(_)) && !self.held
    }

    pub(super) fn look_for_quiet(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let settled = self.settled();
        let phase = self.driver;
        let Some(Reload::Waiting {
            since,
            logged,
            next_look,
        }) = &mut self.reload
        else {
            return;
        };
        if now < *next_look {
            return;
        }
        *next_look = now + QUIET_POLL;
        if settled && holds_no_turn(phase) {
            fx.push(Effect::Log(Note::DriverStandsDown(phase)));
            fx.push(Effect::TellDriver);
            self.reload = Some(Reload::Draining {
                until: now + self.rules.stop_timeout,
            });
        } else if now.saturating_duration_since(*since) >= QUIET_WAIT {
            let why = format!(
                "no quiet point within {} (upgrade phase {phase:?})",
                humantime::format_duration(QUIET_WAIT)
            );
            self.refuse(why, fx);
        } else if !*logged {
            *logged = true;
            fx.push(Effect::Log(Note::ReloadWaits { phase, settled }));
        }
    }

    pub(super) fn on_drain_timeout(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(Reload::Draining { until }) = self.reload {
            if now >= until {
                fx.push(Effect::Log(Note::DriverLate));
                self.exec_now(fx);
            }
        }
    }

    pub(super) fn on_driver_done(&mut self, fx: &mut Vec<Effect>) {
        if self.draining() {
            self.exec_now(fx);
        }
    }

    /// Re-executes, unless a stop or a fatal exit came first: the loop then ends as it
    /// would have.
    fn exec_now(&mut self, fx: &mut Vec<Effect>) {
        self.reload = None;
        if !self.shutting_down && self.end.is_none() {
            fx.push(Effect::Exec);
        }
    }
}
