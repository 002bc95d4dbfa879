//! The etcd child's lifecycle as a pure state machine: [`step`] takes the state, the time
//! and one of the run loop's inputs, and returns the next state and the effects the loop
//! performs (spawn, signal, answer the driver, tell systemd, log). No process, task or
//! clock is touched here, so every rule below is unit-tested and checked by properties.
//!
//! Theory of operation. The child is in one of five states:
//!
//! | state | meaning | leaves on |
//! |---|---|---|
//! | `Down` | no etcd; maybe a restart timer | the timer, a driver's start, a resume |
//! | `Preparing` | a start is being prepared off the loop (data dir lock, binary hash) | the start's end |
//! | `Running` | etcd runs | SIGTERM/SIGINT, a driver's stop, its exit |
//! | `Stopping` | SIGTERM was sent, the stop deadline runs; the data watch may run | its exit, the deadline, the data seen closed |
//! | `Killing` | SIGKILL was sent (deadline passed, or the data was closed) | its exit |
//!
//! Beside it: `held` (the upgrade driver owns starts and stops: no automatic restart),
//! `shutting_down` (SIGTERM/SIGINT to the supervisor), the crash count and whether etcd was
//! ever healthy (the exit policy, [`exit::on_exit`]), and a reload under way
//! ([`reload`]: checking the new binary, waiting for a quiet point, the driver draining).
//! The loop ends once etcd is down and either a stop was asked for or the exit policy
//! named a code ([`Lifecycle::finished`]).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::closing::DataWatch;
use super::control::Health;
use crate::config::Backoff;
use crate::process::child::{StopEnd, Stopped};
use crate::process::reaper::ChildExit;
use crate::upgrade::turn::machine::Phase;
use crate::versions::Version;

pub mod exit;
mod io;
mod note;
pub mod reload;

use exit::{on_exit, AfterExit, ExitContext};

pub use io::{Adopted, Effect, Input, Spawned, StartFailure, Timer};
pub use note::Note;
pub use reload::Reload;

/// Names a request of the driver, so that its answer finds it.
pub type ReqId = u64;

/// What the lifecycle's rules depend on, fixed for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// SIGTERM → SIGKILL grace (`--stop-timeout`); also how long a draining driver may take.
    pub stop_timeout: Duration,
    /// Crash-restart backoff.
    pub backoff: Backoff,
    /// SIGHUP re-executes the supervisor (else it is forwarded to etcd).
    pub reload: bool,
}

/// The whole lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// The fixed rules.
    pub rules: Rules,
    /// The version etcd runs (or last ran).
    pub version: Version,
    /// Where the child is.
    pub child: Child,
    /// The upgrade driver controls starts and stops; no automatic restart.
    pub held: bool,
    /// The supervisor was asked to stop (SIGTERM/SIGINT).
    pub shutting_down: bool,
    /// etcd answered /health true at least once since the supervisor first started it.
    pub ever_healthy: bool,
    /// Crashes since the last healthy period.
    pub crashes: u32,
    /// How the last etcd ended, with its pid.
    pub last_exit: Option<(u32, ChildExit)>,
    /// A reload under way.
    pub reload: Option<Reload>,
    /// The upgrade driver's phase, as it last reported it.
    pub driver: Phase,
    /// The exit code the supervisor leaves with, once decided.
    pub end: Option<i32>,
}

/// Where the etcd child is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    /// No etcd; a restart is due at `restart_at`, if set.
    Down {
        /// When the restart timer fires.
        restart_at: Option<Instant>,
    },
    /// A start is being prepared off the loop.
    Preparing {
        /// The supervisor's first start: failing it ends the supervisor.
        first: bool,
        /// The driver's start requests, answered once etcd runs (or cannot).
        waiting: Vec<ReqId>,
    },
    /// etcd runs.
    Running(Etcd),
    /// SIGTERM was sent for a stop.
    Stopping(Etcd, Stop),
    /// SIGKILL was sent.
    Killing(Etcd, Stop, Kill),
}

/// A running etcd process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    /// Its pid.
    pub pid: u32,
    /// When it was started (or adopted).
    pub started: Instant,
    /// Its health as last polled.
    pub health: Health,
    /// It answered /health true: its data was open, so free locks after SIGTERM mean
    /// closed, not "not opened yet".
    pub was_healthy: bool,
    /// Since when it is healthy without a break.
    pub healthy_since: Option<Instant>,
}

/// A stop under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// When SIGTERM was first sent for it.
    pub sigterm_at: Instant,
    /// When SIGKILL follows.
    pub deadline: Instant,
    /// The watch for the data being closed runs.
    pub watching: bool,
    /// The driver's stop requests, with when each was asked; answered at the exit.
    pub replies: Vec<(ReqId, Instant)>,
}

/// Why SIGKILL was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The stop deadline passed with the data still open.
    Escalated,
    /// The data was seen closed this long after SIGTERM: a clean stop.
    DataClosed(Duration),
}

impl Lifecycle {
    /// A lifecycle before [`Input::Boot`].
    pub fn new(rules: Rules, version: Version, held: bool) -> Self {
        Self {
            rules,
            version,
            child: Child::Down { restart_at: None },
            held,
            shutting_down: false,
            ever_healthy: false,
            crashes: 0,
            last_exit: None,
            reload: None,
            driver: Phase::Idle,
            end: None,
        }
    }

    /// The running (or stopping) etcd.
    pub fn etcd(&self) -> Option<&Etcd> {
        match &self.child {
            Child::Running(e) | Child::Stopping(e, _) | Child::Killing(e, _, _) => Some(e),
            Child::Down { .. } | Child::Preparing { .. } => None,
        }
    }

    /// The exit code once the loop is over: etcd is down and a stop was asked for or the
    /// exit policy named a code.
    pub fn finished(&self) -> Option<i32> {
        let down = matches!(self.child, Child::Down { .. });
        (down && (self.end.is_some() || self.shutting_down)).then(|| self.end.unwrap_or(0))
    }

    /// The earliest timer set, and when it fires.
    pub fn next_timer(&self) -> Option<(Instant, Timer)> {
        let child = match &self.child {
            Child::Stopping(_, stop) => Some((stop.deadline, Timer::StopTimeout)),
            Child::Down {
                restart_at: Some(at),
            } => Some((*at, Timer::Restart)),
            _ => None,
        };
        let reload = match &self.reload {
            Some(Reload::Waiting { next_look, .. }) => Some((*next_look, Timer::LookForQuiet)),
            Some(Reload::Draining { until }) => Some((*until, Timer::DrainTimeout)),
            _ => None,
        };
        child.into_iter().chain(reload).min_by_key(|(at, _)| *at)
    }

    /// True while the driver stands down for a reload (its task's end is an input).
    pub fn draining(&self) -> bool {
        matches!(self.reload, Some(Reload::Draining { .. }))
    }
}

/// The transition function: the state after `input` at `now`, and what the loop does.
pub fn step(state: &Lifecycle, now: Instant, input: Input) -> (Lifecycle, Vec<Effect>) {
    let mut next = state.clone();
    let mut fx = Vec::new();
    next.apply(now, input, &mut fx);
    (next, fx)
}

impl Lifecycle {
    fn apply(&mut self, now: Instant, input: Input, fx: &mut Vec<Effect>) {
        match input {
            Input::Boot(adopted) => self.boot(now, adopted, fx),
            Input::Signal(sig) => self.on_signal(now, sig, fx),
            Input::Started(result) => self.on_started(now, result, fx),
            Input::Exited(exit) => self.on_exit(now, exit, fx),
            Input::Health(health) => self.on_health(now, health, fx),
            Input::DataWatched(seen) => self.on_data_watch(seen, fx),
            Input::Stop(id) => self.on_stop_request(now, id, fx),
            Input::Start(id) => self.on_start_request(id, fx),
            Input::Resume => self.on_resume(now),
            Input::Timer(timer) => self.on_timer(now, timer, fx),
            Input::DriverPhase(phase) => self.driver = phase,
            Input::Checked(result) => self.on_checked(now, result, fx),
            Input::DriverDone => self.on_driver_done(fx),
        }
    }

    fn boot(&mut self, now: Instant, adopted: Option<Adopted>, fx: &mut Vec<Effect>) {
        let Some(a) = adopted else {
            if !self.held {
                self.begin_start(None, true, fx);
            }
            return;
        };
        self.version = a.version;
        self.ever_healthy = a.ever_healthy;
        self.crashes = a.crashes;
        let health = if a.healthy {
            Health::Healthy
        } else {
            Health::Unknown
        };
        // Its data was open at the handover, but only a /health answer seen here marks it
        // so (as before the lifecycle was a state machine): its stop takes the ordinary path.
        self.child = Child::Running(Etcd {
            pid: a.pid,
            started: now,
            health,
            was_healthy: false,
            healthy_since: a.healthy.then_some(now),
        });
        fx.push(Effect::EtcdUp(a.healthy));
        if a.healthy {
            fx.push(Effect::ComeHome);
        }
        fx.push(Effect::PollHealth(health));
        fx.push(Effect::Log(Note::Adopted {
            pid: a.pid,
            from: a.from,
        }));
        let what = if a.healthy { "healthy" } else { "starting" };
        fx.push(Effect::Ready(format!("etcd {} {what}", self.version)));
    }

    /// Starts preparing a start; one already under way takes `reply` too.
    fn begin_start(&mut self, reply: Option<ReqId>, first: bool, fx: &mut Vec<Effect>) {
        match &mut self.child {
            Child::Preparing { waiting, .. } => waiting.extend(reply),
            Child::Down { .. } => {
                fx.push(Effect::Log(Note::Preparing));
                fx.push(Effect::Prepare);
                self.child = Child::Preparing {
                    first,
                    waiting: reply.into_iter().collect(),
                };
            }
            // A child runs: nothing to start (callers check first).
            Child::Running(_) | Child::Stopping(..) | Child::Killing(..) => {}
        }
    }

    /// Drops a start being prepared; the driver's requests for it are answered with `why`.
    fn abandon_start(&mut self, why: &str, fx: &mut Vec<Effect>) {
        if let Child::Preparing { waiting, .. } = &mut self.child {
            fx.push(Effect::AbandonStart);
            fx.push(Effect::Log(Note::StartAbandoned(why.to_owned())));
            for id in waiting.drain(..) {
                fx.push(Effect::AnswerStart(id, Err(why.to_owned())));
            }
            self.child = Child::Down { restart_at: None };
        }
    }

    /// A start ended: etcd runs, or the failure policy applies: the first start fails the
    /// supervisor (a broken install surfaces as a failed unit), a start the driver asked for
    /// is answered with the error (the driver rolls back), a restart blocked by a data dir
    /// that someone else still holds fails the supervisor, and any other restart is retried
    /// after backoff.
    fn on_started(
        &mut self,
        now: Instant,
        result: Result<Spawned, StartFailure>,
        fx: &mut Vec<Effect>,
    ) {
        let Child::Preparing { first, waiting } = &mut self.child else {
            return;
        };
        let (first, waiting) = (*first, std::mem::take(waiting));
        let for_driver = !waiting.is_empty();
        let answer = result.as_ref().map(|s| s.pid).map_err(|f| f.why.clone());
        for id in waiting {
            fx.push(Effect::AnswerStart(id, answer.clone()));
        }
        match result {
            Ok(spawned) => {
                self.version = spawned.version;
                self.child = Child::Running(Etcd {
                    pid: spawned.pid,
                    started: now,
                    health: Health::Unknown,
                    was_healthy: false,
                    healthy_since: None,
                });
                fx.push(Effect::Log(Note::Started { pid: spawned.pid }));
                fx.push(Effect::PollHealth(Health::Unknown));
            }
            Err(failure) => {
                self.child = Child::Down { restart_at: None };
                if for_driver && !first {
                    fx.push(Effect::Log(Note::CannotStartForUpgrade(failure.why)));
                } else if first || failure.data_dir_in_use {
                    // Reported after the epilogue; the code here only ends the loop.
                    self.end = Some(1);
                    fx.push(Effect::Fail);
                } else {
                    self.crashes += 1;
                    let delay = self.rules.backoff.delay(self.crashes);
                    fx.push(Effect::Log(Note::CannotStartRetrying {
                        why: failure.why,
                        crashes: self.crashes,
                        delay,
                    }));
                    self.child = Child::Down {
                        restart_at: Some(now + delay),
                    };
                }
            }
        }
    }

    /// SIGTERM went (or goes) to the child for a stop: the child is Stopping with a
    /// deadline, and the data watch runs for an etcd that was healthy (its data open).
    /// `reset_deadline`: a shutdown gives the stop a fresh deadline; a driver's stop keeps one already set.
    fn sigterm_sent(&mut self, now: Instant, reset_deadline: bool, fx: &mut Vec<Effect>) {
        let fresh = now + self.rules.stop_timeout;
        let child = std::mem::replace(&mut self.child, Child::Down { restart_at: None });
        self.child = match child {
            Child::Running(etcd) => {
                let mut stop = Stop {
                    sigterm_at: now,
                    deadline: fresh,
                    watching: false,
                    replies: Vec::new(),
                };
                watch_data(&etcd, &mut stop, fx);
                Child::Stopping(etcd, stop)
            }
            Child::Stopping(etcd, mut stop) => {
                if reset_deadline {
                    stop.deadline = fresh;
                }
                if !stop.watching {
                    watch_data(&etcd, &mut stop, fx);
                }
                Child::Stopping(etcd, stop)
            }
            other => other,
        };
    }

    fn on_signal(&mut self, now: Instant, sig: Signal, fx: &mut Vec<Effect>) {
        if self.reload_signal(sig, fx) {
            return;
        }
        let stop = matches!(sig, Signal::SIGTERM | Signal::SIGINT);
        if self.etcd().is_some() {
            fx.push(Effect::Log(Note::Forwarding(sig)));
            fx.push(Effect::Signal(sig));
        } else if !stop {
            fx.push(Effect::Log(Note::Dropped(sig)));
        }
        if !stop || self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Child::Down { restart_at } = &mut self.child {
            *restart_at = None;
        }
        fx.push(Effect::Stopping);
        fx.push(Effect::TellDriver);
        if self.etcd().is_some() {
            self.sigterm_sent(now, true, fx);
        } else {
            let starting = matches!(self.child, Child::Preparing { .. });
            fx.push(Effect::Log(Note::StopWhileDown { sig, starting }));
            self.abandon_start("the supervisor is shutting down", fx);
            self.end = Some(0);
        }
    }

    fn on_health(&mut self, now: Instant, health: Health, fx: &mut Vec<Effect>) {
        let version = self.version.clone();
        let first_healthy = !self.ever_healthy;
        let (etcd, stopping) = match &mut self.child {
            Child::Running(e) => (e, false),
            Child::Stopping(e, _) | Child::Killing(e, _, _) => (e, true),
            Child::Down { .. } | Child::Preparing { .. } => return,
        };
        etcd.health = health;
        fx.push(Effect::EtcdUp(health == Health::Healthy));
        // A member that recovers from a blip while it stops (the leader handover before a
        // swap's stop makes /health fail for a moment) is still stopping: its calls stay away.
        if health == Health::Healthy && !stopping {
            fx.push(Effect::ComeHome);
        }
        match health {
            Health::Healthy => {
                etcd.healthy_since = Some(now);
                etcd.was_healthy = true;
                let status = format!("etcd {version} healthy");
                if first_healthy {
                    let took = now.saturating_duration_since(etcd.started);
                    self.ever_healthy = true;
                    fx.push(Effect::Log(Note::Ready { took }));
                    fx.push(Effect::Ready(status));
                } else {
                    fx.push(Effect::Log(Note::HealthyAgain));
                    fx.push(Effect::Status(status));
                }
            }
            Health::Unhealthy => {
                etcd.healthy_since = None;
                fx.push(Effect::Log(Note::Unhealthy));
                fx.push(Effect::Status(format!("etcd {version} unhealthy")));
            }
            Health::Unknown => {}
        }
    }

    /// The data watch ended: SIGKILL the rest once etcd's data is closed.
    fn on_data_watch(&mut self, seen: DataWatch, fx: &mut Vec<Effect>) {
        match &mut self.child {
            Child::Stopping(_, stop) | Child::Killing(_, stop, _) => stop.watching = false,
            _ => return,
        }
        match seen {
            DataWatch::Closed(after) => {
                let child = std::mem::replace(&mut self.child, Child::Down { restart_at: None });
                self.child = match child {
                    Child::Stopping(etcd, stop) => {
                        fx.push(Effect::Log(Note::DataClosed(after)));
                        fx.push(Effect::Signal(Signal::SIGKILL));
                        Child::Killing(etcd, stop, Kill::DataClosed(after))
                    }
                    other => other,
                };
            }
            DataWatch::CannotTell(why) => fx.push(Effect::Log(Note::CannotTell(why))),
            DataWatch::StillOpen => {}
        }
    }

    fn on_exit(&mut self, now: Instant, exit: ChildExit, fx: &mut Vec<Effect>) {
        let child = std::mem::replace(&mut self.child, Child::Down { restart_at: None });
        let (etcd, stop, kill) = match child {
            Child::Running(e) => (e, None, None),
            Child::Stopping(e, s) => (e, Some(s), None),
            Child::Killing(e, s, k) => (e, Some(s), Some(k)),
            other => {
                self.child = other;
                return;
            }
        };
        fx.push(Effect::ChildGone);
        self.last_exit = Some((etcd.pid, exit));
        let data_closed = match kill {
            Some(Kill::DataClosed(after)) => Some(after),
            _ => None,
        };
        let escalated = kill == Some(Kill::Escalated);
        let ended = match kill {
            Some(Kill::DataClosed(_)) if exit.is_signal(Signal::SIGKILL) => StopEnd::DataClosed,
            _ if escalated => StopEnd::Escalated,
            _ => StopEnd::Exited,
        };
        let took = stop
            .as_ref()
            .map(|s| now.saturating_duration_since(s.sigterm_at));
        if let Some(took) = took {
            fx.push(Effect::StopMeasured(ended, took));
        }
        let replies = stop.map(|s| s.replies).unwrap_or_default();
        if !replies.is_empty() {
            for (id, asked) in replies {
                let stopped = Stopped {
                    exit,
                    ended,
                    took: now.saturating_duration_since(asked),
                };
                fx.push(Effect::Log(Note::StoppedForUpgrade {
                    stopped,
                    data_closed,
                }));
                fx.push(Effect::AnswerStop(id, stopped));
            }
            if !self.shutting_down {
                return;
            }
        }
        if etcd
            .healthy_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.rules.backoff.reset_after)
        {
            self.crashes = 0;
        }
        if !self.shutting_down {
            self.crashes += 1;
        }
        if self.held && !self.shutting_down {
            // The driver is verifying this etcd: it sees the exit in the status and decides.
            fx.push(Effect::Log(Note::ExitedDuringTurn(exit)));
            return;
        }
        let ctx = ExitContext {
            stop_requested: self.shutting_down,
            escalated,
            data_closed: ended == StopEnd::DataClosed,
            ever_healthy: self.ever_healthy,
            crashes: self.crashes,
        };
        match on_exit(exit, ctx, &self.rules.backoff) {
            AfterExit::Exit(code) => {
                fx.push(Effect::Log(if self.shutting_down {
                    Note::StoppedExiting {
                        exit,
                        code,
                        ended,
                        took,
                        data_closed,
                    }
                } else {
                    Note::NeverHealthy { exit, code }
                }));
                self.end = Some(code);
            }
            AfterExit::Restart(delay) => {
                fx.push(Effect::Restarted);
                fx.push(Effect::Log(Note::Restarting {
                    exit,
                    crashes: self.crashes,
                    delay,
                }));
                fx.push(Effect::Status(format!(
                    "etcd exited ({exit}); restarting in {}",
                    humantime::format_duration(delay)
                )));
                self.child = Child::Down {
                    restart_at: Some(now + delay),
                };
            }
        }
    }

    fn on_stop_request(&mut self, now: Instant, id: ReqId, fx: &mut Vec<Effect>) {
        self.held = true;
        if let Child::Down { restart_at } = &mut self.child {
            *restart_at = None;
        }
        self.abandon_start("etcd was stopped for the upgrade", fx);
        if self.etcd().is_none() {
            let stopped = Stopped {
                exit: self.last_exit.map_or(ChildExit::Code(0), |(_, e)| e),
                ended: StopEnd::Exited,
                took: Duration::ZERO,
            };
            fx.push(Effect::AnswerStop(id, stopped));
            return;
        }
        fx.push(Effect::Signal(Signal::SIGTERM));
        self.sigterm_sent(now, false, fx);
        if let Child::Stopping(_, stop) | Child::Killing(_, stop, _) = &mut self.child {
            stop.replies.push((id, now));
        }
    }

    fn on_start_request(&mut self, id: ReqId, fx: &mut Vec<Effect>) {
        self.held = true;
        if let Child::Down { restart_at } = &mut self.child {
            *restart_at = None;
        }
        if self.shutting_down {
            fx.push(Effect::AnswerStart(
                id,
                Err("the supervisor is shutting down".to_owned()),
            ));
        } else if let Some(etcd) = self.etcd() {
            fx.push(Effect::AnswerStart(id, Ok(etcd.pid)));
        } else {
            // Answered when the start is done; the loop keeps serving meanwhile.
            self.begin_start(Some(id), false, fx);
        }
    }

    fn on_resume(&mut self, now: Instant) {
        self.held = false;
        if self.shutting_down {
            return;
        }
        if let Child::Down { restart_at } = &mut self.child {
            restart_at.get_or_insert(now);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer, fx: &mut Vec<Effect>) {
        match timer {
            Timer::StopTimeout => {
                let child = std::mem::replace(&mut self.child, Child::Down { restart_at: None });
                self.child = match child {
                    Child::Stopping(etcd, stop) if now >= stop.deadline => {
                        fx.push(Effect::Log(Note::StopTimedOut(self.rules.stop_timeout)));
                        fx.push(Effect::Signal(Signal::SIGKILL));
                        Child::Killing(etcd, stop, Kill::Escalated)
                    }
                    other => other,
                };
            }
            Timer::Restart => {
                if let Child::Down {
                    restart_at: Some(at),
                } = self.child
                {
                    if now >= at {
                        self.child = Child::Down { restart_at: None };
                        self.begin_start(None, false, fx);
                    }
                }
            }
            Timer::LookForQuiet => self.look_for_quiet(now, fx),
            Timer::DrainTimeout => self.on_drain_timeout(now, fx),
        }
    }
}

/// Starts the data watch for a stop of `etcd`, if it was ever healthy.
fn watch_data(etcd: &Etcd, stop: &mut Stop, fx: &mut Vec<Effect>) {
    if etcd.was_healthy {
        stop.watching = true;
        fx.push(Effect::WatchData(stop.deadline));
    } else {
        fx.push(Effect::Log(Note::NoFastStop));
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
