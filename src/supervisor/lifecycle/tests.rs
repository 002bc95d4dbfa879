//! The lifecycle's transitions, one rule each: the README's exit-code table, its stop rules
//! (SIGTERM, the data-closed SIGKILL, escalation at `--stop-timeout`), restarts with backoff,
//! the driver's requests, and the reload's quiet point.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::*;
use crate::process::child::{StopEnd, Stopped};

const STOP: Duration = Duration::from_secs(10);
const PID: u32 = 100;

fn rules(reload: bool) -> Rules {
    Rules {
        stop_timeout: STOP,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        },
        reload,
    }
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// A lifecycle driven through inputs at times relative to its start.
struct Run {
    state: Lifecycle,
    t0: Instant,
    now: Instant,
}

impl Run {
    fn new(reload: bool, held: bool) -> Self {
        let t0 = Instant::now();
        Self {
            state: Lifecycle::new(rules(reload), v("3.5.16"), held),
            t0,
            now: t0,
        }
    }

    fn at(&mut self, after: Duration) -> &mut Self {
        self.now = self.t0 + after;
        self
    }

    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let (next, fx) = step(&self.state, self.now, input);
        self.state = next;
        fx
    }

    /// Booted and started: etcd runs with `PID`.
    fn running() -> Self {
        let mut run = Self::new(false, false);
        run.feed(Input::Boot(None));
        run.feed(started(PID));
        run
    }

    /// Running, and healthy once.
    fn healthy() -> Self {
        let mut run = Self::running();
        run.feed(Input::Health(Health::Healthy));
        run
    }
}

fn started(pid: u32) -> Input {
    Input::Started(Ok(Spawned {
        pid,
        version: v("3.5.16"),
    }))
}

fn failed(in_use: bool) -> Input {
    Input::Started(Err(StartFailure {
        why: "no".to_owned(),
        data_dir_in_use: in_use,
    }))
}

fn signals(fx: &[Effect]) -> Vec<Signal> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Signal(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn has(fx: &[Effect], want: &Effect) -> bool {
    fx.contains(want)
}

#[test]
fn boot_starts_etcd_unless_held() {
    let mut run = Run::new(false, false);
    let fx = run.feed(Input::Boot(None));
    assert!(has(&fx, &Effect::Prepare));
    assert_eq!(
        run.state.child,
        Child::Preparing {
            first: true,
            waiting: vec![]
        }
    );
    let mut held = Run::new(false, true);
    assert!(held.feed(Input::Boot(None)).is_empty());
    assert_eq!(held.state.child, Child::Down { restart_at: None });
    assert_eq!(held.state.finished(), None);
}

#[test]
fn sigterm_forwards_it_and_sets_the_stop_deadline() {
    let mut run = Run::healthy();
    run.at(Duration::from_secs(3));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    let deadline = run.now + STOP;
    assert_eq!(signals(&fx), [Signal::SIGTERM]);
    assert!(has(&fx, &Effect::TellDriver) && has(&fx, &Effect::Stopping));
    assert!(has(&fx, &Effect::WatchData(deadline)), "{fx:?}");
    assert!(run.state.shutting_down);
    assert_eq!(run.state.next_timer(), Some((deadline, Timer::StopTimeout)));
}

#[test]
fn a_stop_ended_by_our_sigterm_exits_0_and_etcds_own_code_is_propagated() {
    for (exit, code) in [
        (ChildExit::Signal(libc::SIGTERM), 0),
        (ChildExit::Code(0), 0),
        (ChildExit::Code(3), 3),
    ] {
        let mut run = Run::healthy();
        run.feed(Input::Signal(Signal::SIGTERM));
        run.at(Duration::from_secs(2));
        let fx = run.feed(Input::Exited(exit));
        assert!(has(
            &fx,
            &Effect::StopMeasured(StopEnd::Exited, Duration::from_secs(2))
        ));
        assert_eq!(run.state.finished(), Some(code), "{exit}");
    }
}

#[test]
fn sigint_stops_like_sigterm_and_is_forwarded_as_itself() {
    let mut run = Run::healthy();
    let fx = run.feed(Input::Signal(Signal::SIGINT));
    assert_eq!(signals(&fx), [Signal::SIGINT]);
    run.feed(Input::Exited(ChildExit::Signal(libc::SIGINT)));
    assert_eq!(run.state.finished(), Some(0));
}

#[test]
fn the_stop_escalates_to_sigkill_at_the_stop_timeout_and_reports_the_kill() {
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    run.at(STOP - Duration::from_millis(1));
    assert!(run.feed(Input::Timer(Timer::StopTimeout)).is_empty());
    run.at(STOP);
    let fx = run.feed(Input::Timer(Timer::StopTimeout));
    assert_eq!(signals(&fx), [Signal::SIGKILL]);
    assert!(matches!(
        run.state.child,
        Child::Killing(_, _, Kill::Escalated)
    ));
    assert_eq!(run.state.next_timer(), None, "one SIGKILL only");
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGKILL)));
    assert!(has(&fx, &Effect::StopMeasured(StopEnd::Escalated, STOP)));
    assert_eq!(run.state.finished(), Some(137));
}

#[test]
fn the_data_seen_closed_ends_the_stop_with_sigkill_counted_clean() {
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    let after = Duration::from_millis(40);
    run.at(after);
    let fx = run.feed(Input::DataWatched(DataWatch::Closed(after)));
    assert_eq!(signals(&fx), [Signal::SIGKILL]);
    assert_eq!(run.state.next_timer(), None, "no escalation after it");
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGKILL)));
    assert!(has(&fx, &Effect::StopMeasured(StopEnd::DataClosed, after)));
    assert_eq!(run.state.finished(), Some(0));
}

#[test]
fn an_etcd_that_was_never_healthy_is_not_stopped_early() {
    let mut run = Run::running();
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert!(!fx.iter().any(|e| matches!(e, Effect::WatchData(_))));
    assert!(has(&fx, &Effect::Log(Note::NoFastStop)));
}

#[test]
fn the_data_watch_that_cannot_tell_leaves_the_stop_to_its_course() {
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    let fx = run.feed(Input::DataWatched(DataWatch::CannotTell("nfs".into())));
    assert!(signals(&fx).is_empty());
    assert!(matches!(run.state.child, Child::Stopping(..)));
}

#[test]
fn a_crash_before_etcd_was_ever_healthy_fails_fast_with_its_code() {
    let mut run = Run::running();
    let fx = run.feed(Input::Exited(ChildExit::Code(2)));
    assert!(has(
        &fx,
        &Effect::Log(Note::NeverHealthy {
            exit: ChildExit::Code(2),
            code: 2
        })
    ));
    assert_eq!(run.state.finished(), Some(2));
}

#[test]
fn a_crash_after_healthy_restarts_with_growing_backoff() {
    let mut run = Run::healthy();
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGKILL)));
    assert!(has(&fx, &Effect::Restarted));
    let at = run.now + Duration::from_secs(1);
    assert_eq!(run.state.next_timer(), Some((at, Timer::Restart)));
    assert_eq!(run.state.finished(), None);
    run.at(Duration::from_secs(1));
    assert!(has(
        &run.feed(Input::Timer(Timer::Restart)),
        &Effect::Prepare
    ));
    run.feed(started(PID + 1));
    run.feed(Input::Exited(ChildExit::Code(1)));
    assert_eq!(run.state.crashes, 2);
    let at = run.now + Duration::from_secs(2);
    assert_eq!(run.state.next_timer(), Some((at, Timer::Restart)));
}

#[test]
fn healthy_for_the_reset_period_starts_the_backoff_again() {
    let mut run = Run::healthy();
    run.state.crashes = 4;
    run.at(Duration::from_secs(61));
    run.feed(Input::Exited(ChildExit::Code(1)));
    assert_eq!(run.state.crashes, 1);
}

#[test]
fn a_stop_request_while_down_is_answered_at_once_with_the_last_exit() {
    let mut run = Run::new(false, true);
    run.feed(Input::Boot(None));
    let fx = run.feed(Input::Stop(7));
    let stopped = Stopped {
        exit: ChildExit::Code(0),
        ended: StopEnd::Exited,
        took: Duration::ZERO,
    };
    assert_eq!(fx, [Effect::AnswerStop(7, stopped)]);
}

#[test]
fn a_drivers_stop_is_answered_at_the_exit_and_etcd_stays_down() {
    let mut run = Run::healthy();
    let fx = run.feed(Input::Stop(7));
    assert_eq!(signals(&fx), [Signal::SIGTERM]);
    assert!(run.state.held);
    run.at(Duration::from_millis(300));
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGTERM)));
    let stopped = Stopped {
        exit: ChildExit::Signal(libc::SIGTERM),
        ended: StopEnd::Exited,
        took: Duration::from_millis(300),
    };
    assert!(has(&fx, &Effect::AnswerStop(7, stopped)));
    assert_eq!(run.state.child, Child::Down { restart_at: None });
    assert_eq!((run.state.crashes, run.state.finished()), (0, None));
    assert_eq!(
        run.state.last_exit,
        Some((PID, ChildExit::Signal(libc::SIGTERM)))
    );
}

#[test]
fn sigterm_during_a_drivers_stop_answers_it_and_exits_with_a_fresh_deadline() {
    let mut run = Run::healthy();
    run.feed(Input::Stop(7));
    run.at(Duration::from_secs(4));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert_eq!(signals(&fx), [Signal::SIGTERM]);
    let deadline = run.now + STOP;
    assert_eq!(run.state.next_timer(), Some((deadline, Timer::StopTimeout)));
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGTERM)));
    assert!(fx.iter().any(|e| matches!(e, Effect::AnswerStop(7, _))));
    assert_eq!(run.state.finished(), Some(0));
}

#[test]
fn an_exit_during_a_held_turn_is_left_to_the_driver() {
    let mut run = Run::healthy();
    run.feed(Input::Start(1));
    let fx = run.feed(Input::Exited(ChildExit::Code(1)));
    assert!(has(
        &fx,
        &Effect::Log(Note::ExitedDuringTurn(ChildExit::Code(1)))
    ));
    assert_eq!(run.state.child, Child::Down { restart_at: None });
    assert_eq!(run.state.finished(), None);
}

#[test]
fn a_drivers_start_joins_a_start_under_way_and_both_get_the_pid() {
    let mut run = Run::new(false, false);
    run.feed(Input::Boot(None));
    assert!(run.feed(Input::Start(1)).is_empty());
    let fx = run.feed(started(PID));
    assert!(has(&fx, &Effect::AnswerStart(1, Ok(PID))));
    assert_eq!(run.feed(Input::Start(2)), [Effect::AnswerStart(2, Ok(PID))]);
}

#[test]
fn a_failed_first_start_ends_the_supervisor_with_1() {
    let mut run = Run::new(false, false);
    run.feed(Input::Boot(None));
    let fx = run.feed(failed(false));
    assert!(has(&fx, &Effect::Fail));
    assert_eq!(run.state.finished(), Some(1));
}

#[test]
fn a_failed_start_for_the_driver_is_answered_and_not_fatal() {
    let mut run = Run::new(false, true);
    run.feed(Input::Boot(None));
    run.feed(Input::Start(1));
    let fx = run.feed(failed(false));
    assert!(has(&fx, &Effect::AnswerStart(1, Err("no".into()))));
    assert!(!has(&fx, &Effect::Fail));
    assert_eq!(run.state.finished(), None);
}

#[test]
fn a_restart_is_retried_after_backoff_unless_the_data_dir_is_held() {
    let mut run = Run::healthy();
    run.feed(Input::Exited(ChildExit::Code(1)));
    run.at(Duration::from_secs(1));
    run.feed(Input::Timer(Timer::Restart));
    run.feed(failed(false));
    assert_eq!(run.state.crashes, 2);
    assert!(matches!(
        run.state.child,
        Child::Down {
            restart_at: Some(_)
        }
    ));
    run.at(Duration::from_secs(3));
    run.feed(Input::Timer(Timer::Restart));
    let fx = run.feed(failed(true));
    assert!(has(&fx, &Effect::Fail));
    assert_eq!(run.state.finished(), Some(1));
}

#[test]
fn sigterm_while_a_start_is_prepared_abandons_it_and_exits_0() {
    let mut run = Run::new(false, true);
    run.feed(Input::Boot(None));
    run.feed(Input::Start(1));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert!(has(&fx, &Effect::AbandonStart));
    assert!(has(
        &fx,
        &Effect::AnswerStart(1, Err("the supervisor is shutting down".into()))
    ));
    assert!(signals(&fx).is_empty());
    assert_eq!(run.state.finished(), Some(0));
}

#[test]
fn a_start_while_shutting_down_is_refused() {
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    let fx = run.feed(Input::Start(3));
    assert_eq!(
        fx,
        [Effect::AnswerStart(
            3,
            Err("the supervisor is shutting down".into())
        )]
    );
}

#[test]
fn resume_starts_an_etcd_left_stopped_by_the_turn() {
    let mut run = Run::healthy();
    run.feed(Input::Stop(1));
    run.feed(Input::Exited(ChildExit::Code(0)));
    assert_eq!(run.state.next_timer(), None);
    run.feed(Input::Resume);
    assert_eq!(run.state.next_timer(), Some((run.now, Timer::Restart)));
    assert!(has(
        &run.feed(Input::Timer(Timer::Restart)),
        &Effect::Prepare
    ));
}

#[test]
fn other_signals_are_forwarded_or_dropped_when_etcd_is_down() {
    let mut run = Run::healthy();
    assert_eq!(
        signals(&run.feed(Input::Signal(Signal::SIGUSR1))),
        [Signal::SIGUSR1]
    );
    // Without a reload, SIGHUP is etcd's too.
    assert_eq!(
        signals(&run.feed(Input::Signal(Signal::SIGHUP))),
        [Signal::SIGHUP]
    );
    let mut down = Run::new(false, true);
    down.feed(Input::Boot(None));
    let fx = down.feed(Input::Signal(Signal::SIGQUIT));
    assert_eq!(fx, [Effect::Log(Note::Dropped(Signal::SIGQUIT))]);
    assert!(!down.state.shutting_down);
}

#[test]
fn health_makes_ready_once_then_status() {
    let mut run = Run::running();
    run.at(Duration::from_millis(800));
    let fx = run.feed(Input::Health(Health::Healthy));
    assert!(has(
        &fx,
        &Effect::Log(Note::Ready {
            took: Duration::from_millis(800)
        })
    ));
    assert!(has(&fx, &Effect::Ready("etcd 3.5.16 healthy".into())));
    let fx = run.feed(Input::Health(Health::Unhealthy));
    assert!(has(&fx, &Effect::Status("etcd 3.5.16 unhealthy".into())));
    let fx = run.feed(Input::Health(Health::Healthy));
    assert!(has(&fx, &Effect::Status("etcd 3.5.16 healthy".into())));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Ready(_))));
}

#[test]
fn an_adopted_etcd_runs_without_a_start() {
    let mut run = Run::new(true, false);
    let fx = run.feed(Input::Boot(Some(Adopted {
        pid: 42,
        version: v("3.6.17"),
        ever_healthy: true,
        healthy: true,
        crashes: 2,
        from: "0.1.0".into(),
    })));
    assert!(!has(&fx, &Effect::Prepare));
    assert!(has(&fx, &Effect::PollHealth(Health::Healthy)));
    assert_eq!(run.state.etcd().map(|e| e.pid), Some(42));
    assert_eq!((run.state.crashes, run.state.ever_healthy), (2, true));
}

#[test]
fn long_lived_calls_come_home_to_an_adopted_etcd_only_once_it_is_healthy() {
    let adopted = |healthy| {
        Input::Boot(Some(Adopted {
            pid: 42,
            version: v("3.6.17"),
            ever_healthy: true,
            healthy,
            crashes: 0,
            from: "0.1.0".into(),
        }))
    };
    let mut run = Run::new(true, false);
    assert!(has(&run.feed(adopted(true)), &Effect::ComeHome));
    let mut run = Run::new(true, false);
    assert!(!has(&run.feed(adopted(false)), &Effect::ComeHome));
    assert!(has(
        &run.feed(Input::Health(Health::Healthy)),
        &Effect::ComeHome
    ));
}

/// A reloading run: checked, now waiting for the quiet point.
fn waiting_reload() -> Run {
    let mut run = Run::new(true, false);
    run.feed(Input::Boot(None));
    run.feed(started(PID));
    let fx = run.feed(Input::Signal(Signal::SIGHUP));
    assert!(signals(&fx).is_empty(), "SIGHUP is the supervisor's");
    assert!(has(&fx, &Effect::CheckNewBinary));
    run.feed(Input::Checked(Ok("etcd-supervisor 0.2.0".into())));
    run
}

#[test]
fn a_reload_while_quiet_drains_the_driver_and_execs() {
    let mut run = waiting_reload();
    run.at(reload::QUIET_POLL);
    let fx = run.feed(Input::Timer(Timer::LookForQuiet));
    assert!(has(&fx, &Effect::TellDriver));
    assert!(run.state.draining());
    assert_eq!(run.feed(Input::DriverDone), [Effect::Exec]);
    assert_eq!(run.state.reload, None);
}

#[test]
fn a_reload_waits_while_a_turn_is_held_and_goes_once_it_ends() {
    let mut run = waiting_reload();
    run.feed(Input::DriverPhase(Phase::Verifying));
    run.feed(Input::Start(1));
    run.at(reload::QUIET_POLL);
    let fx = run.feed(Input::Timer(Timer::LookForQuiet));
    assert!(has(
        &fx,
        &Effect::Log(Note::ReloadWaits {
            phase: Phase::Verifying,
            settled: false
        })
    ));
    run.at(reload::QUIET_POLL * 2);
    assert!(run.feed(Input::Timer(Timer::LookForQuiet)).is_empty());
    run.feed(Input::Resume);
    run.feed(Input::DriverPhase(Phase::Idle));
    run.at(reload::QUIET_POLL * 3);
    assert!(has(
        &run.feed(Input::Timer(Timer::LookForQuiet)),
        &Effect::TellDriver
    ));
    // The driver is slow to stand down: the loop execs at the deadline anyway.
    run.at(reload::QUIET_POLL * 3 + STOP);
    let fx = run.feed(Input::Timer(Timer::DrainTimeout));
    assert_eq!(fx, [Effect::Log(Note::DriverLate), Effect::Exec]);
}

#[test]
fn a_reload_without_a_quiet_point_is_refused_in_the_end() {
    let mut run = waiting_reload();
    run.feed(Input::DriverPhase(Phase::Soaking));
    run.at(reload::QUIET_WAIT);
    let fx = run.feed(Input::Timer(Timer::LookForQuiet));
    assert!(has(&fx, &Effect::DropRecord));
    assert_eq!(run.state.reload, None);
}

#[test]
fn a_reload_whose_check_fails_changes_nothing_and_sigterm_cancels_a_check() {
    let mut run = Run::new(true, false);
    run.feed(Input::Boot(None));
    run.feed(started(PID));
    run.feed(Input::Signal(Signal::SIGHUP));
    let fx = run.feed(Input::Checked(Err("bad flags".into())));
    assert!(has(&fx, &Effect::DropRecord));
    assert!(has(
        &fx,
        &Effect::Ready("etcd 3.5.16; reload refused: bad flags".into())
    ));
    run.feed(Input::Signal(Signal::SIGHUP));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert!(has(&fx, &Effect::CancelCheck));
    assert_eq!(signals(&fx), [Signal::SIGTERM]);
    // A stop that came first wins over a drain that ends now: no exec.
    assert!(run.feed(Input::Checked(Ok("late".into()))).is_empty());
}

#[test]
fn a_drain_that_ends_after_sigterm_does_not_exec() {
    let mut run = waiting_reload();
    run.at(reload::QUIET_POLL);
    run.feed(Input::Timer(Timer::LookForQuiet));
    run.feed(Input::Signal(Signal::SIGTERM));
    assert!(!has(&run.feed(Input::DriverDone), &Effect::Exec));
}

#[test]
fn a_failed_start_for_the_driver_sets_no_restart_and_counts_no_crash() {
    for in_use in [false, true] {
        let mut run = Run::new(false, true);
        run.feed(Input::Boot(None));
        run.feed(Input::Start(1));
        let fx = run.feed(failed(in_use));
        assert!(
            has(&fx, &Effect::Log(Note::CannotStartForUpgrade("no".into()))),
            "{fx:?}"
        );
        assert!(
            !has(&fx, &Effect::Fail),
            "the driver rolls back, in use or not"
        );
        assert_eq!(run.state.child, Child::Down { restart_at: None });
        assert_eq!((run.state.crashes, run.state.finished()), (0, None));
    }
}

#[test]
fn a_failed_restart_is_retried_its_backoff_after_the_failure() {
    let mut run = Run::healthy();
    run.feed(Input::Exited(ChildExit::Code(1)));
    run.at(Duration::from_secs(1));
    run.feed(Input::Timer(Timer::Restart));
    run.at(Duration::from_secs(2));
    run.feed(failed(false));
    // The second crash in a row: 2 s of backoff, from the failure.
    let at = run.now + Duration::from_secs(2);
    assert_eq!(run.state.next_timer(), Some((at, Timer::Restart)));
}

#[test]
fn sigterm_during_a_drivers_stop_watches_the_data_only_if_no_watch_runs() {
    // The driver's stop started the watch: the shutdown does not start a second one.
    let mut run = Run::healthy();
    let fx = run.feed(Input::Stop(7));
    assert!(has(&fx, &Effect::WatchData(run.now + STOP)), "{fx:?}");
    run.at(Duration::from_secs(4));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::WatchData(_))),
        "{fx:?}"
    );
    // The watch ended without telling: the shutdown watches again, to its fresh deadline.
    let mut run = Run::healthy();
    run.feed(Input::Stop(7));
    run.feed(Input::DataWatched(DataWatch::CannotTell("nfs".into())));
    run.at(Duration::from_secs(4));
    let fx = run.feed(Input::Signal(Signal::SIGTERM));
    assert!(has(&fx, &Effect::WatchData(run.now + STOP)), "{fx:?}");
}

#[test]
fn a_drain_gives_the_driver_the_stop_timeout_then_execs() {
    let mut run = waiting_reload();
    run.at(reload::QUIET_POLL);
    run.feed(Input::Timer(Timer::LookForQuiet));
    let until = run.now + STOP;
    assert_eq!(run.state.next_timer(), Some((until, Timer::DrainTimeout)));
    run.at(reload::QUIET_POLL + STOP - Duration::from_millis(1));
    assert!(run.feed(Input::Timer(Timer::DrainTimeout)).is_empty());
    assert!(run.state.draining());
}

#[test]
fn a_stop_ended_after_the_data_closed_reports_when_it_closed() {
    let after = Duration::from_millis(40);
    let end = Duration::from_millis(50);
    let killed = ChildExit::Signal(libc::SIGKILL);
    // The supervisor's own stop.
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    run.at(after);
    run.feed(Input::DataWatched(DataWatch::Closed(after)));
    run.at(end);
    let fx = run.feed(Input::Exited(killed));
    assert!(
        has(
            &fx,
            &Effect::Log(Note::StoppedExiting {
                exit: killed,
                code: 0,
                ended: StopEnd::DataClosed,
                took: Some(end),
                data_closed: Some(after),
            })
        ),
        "{fx:?}"
    );
    // The driver's stop.
    let mut run = Run::healthy();
    run.feed(Input::Stop(7));
    run.at(after);
    run.feed(Input::DataWatched(DataWatch::Closed(after)));
    run.at(end);
    let fx = run.feed(Input::Exited(killed));
    let stopped = Stopped {
        exit: killed,
        ended: StopEnd::DataClosed,
        took: end,
    };
    assert!(
        has(
            &fx,
            &Effect::Log(Note::StoppedForUpgrade {
                stopped,
                data_closed: Some(after),
            })
        ),
        "{fx:?}"
    );
}

#[test]
fn an_etcd_that_exits_by_itself_before_the_data_closed_sigkill_lands_stopped_as_exited() {
    let mut run = Run::healthy();
    run.feed(Input::Signal(Signal::SIGTERM));
    let after = Duration::from_millis(40);
    run.at(after);
    run.feed(Input::DataWatched(DataWatch::Closed(after)));
    let fx = run.feed(Input::Exited(ChildExit::Signal(libc::SIGTERM)));
    assert!(
        has(&fx, &Effect::StopMeasured(StopEnd::Exited, after)),
        "{fx:?}"
    );
    assert_eq!(run.state.finished(), Some(0));
}

#[test]
fn a_reload_waits_fifteen_minutes_for_a_quiet_point_before_refusing() {
    let mut run = waiting_reload();
    run.feed(Input::DriverPhase(Phase::Soaking));
    run.at(Duration::from_secs(15 * 60) - Duration::from_secs(1));
    let fx = run.feed(Input::Timer(Timer::LookForQuiet));
    assert!(!has(&fx, &Effect::DropRecord), "{fx:?}");
    assert!(matches!(run.state.reload, Some(Reload::Waiting { .. })));
    run.at(Duration::from_secs(15 * 60));
    let fx = run.feed(Input::Timer(Timer::LookForQuiet));
    assert!(has(&fx, &Effect::DropRecord), "{fx:?}");
}

#[test]
fn a_checked_reload_looks_for_its_quiet_point_one_poll_later_not_before() {
    let mut run = waiting_reload();
    let first = run.now + reload::QUIET_POLL;
    assert_eq!(run.state.next_timer(), Some((first, Timer::LookForQuiet)));
    // A look before it is due does nothing, though etcd is quiet.
    assert!(run.feed(Input::Timer(Timer::LookForQuiet)).is_empty());
    assert!(!run.state.draining());
}

#[test]
fn a_waiting_reload_looks_again_one_poll_after_each_look() {
    let mut run = waiting_reload();
    run.feed(Input::DriverPhase(Phase::Verifying));
    run.at(reload::QUIET_POLL * 3);
    run.feed(Input::Timer(Timer::LookForQuiet));
    let next = run.now + reload::QUIET_POLL;
    assert_eq!(run.state.next_timer(), Some((next, Timer::LookForQuiet)));
}
