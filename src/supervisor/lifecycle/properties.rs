//! Properties of [`step`] over generated input sequences.
//!
//! A small model of the world plays the shell: it keeps the children it spawned, the
//! signals each got, the start task, the data watch and the driver's open requests, and it
//! delivers only inputs the real loop can see (a start ends only while one is prepared, an
//! exit only while a child lives, a timer only when it is due). The invariants are judged
//! from that history, not from the lifecycle's own state:
//! - never two children, and a start is prepared only while none runs or is prepared;
//! - no SIGKILL to a child before SIGTERM/SIGINT was sent to it;
//! - long-lived calls are brought home only to a child that was not told to stop;
//! - every stop (and start) request of the driver is answered exactly once: never twice,
//!   and by the time the loop ends (or the sequence does) every one without an answer is
//!   still held by the lifecycle for a child that lives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

const CASES: u32 = 2000;

/// One generated happening.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Signal(u8),
    StartEnds { ok: bool, in_use: bool },
    Exit(u8),
    Health(u8),
    DataWatch(u8),
    StopRequest,
    StartRequest,
    Resume,
    Advance(u16),
    Phase(u8),
    Checked(bool),
    DriverDone,
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        (0u8..5).prop_map(Choice::Signal),
        (any::<bool>(), any::<bool>()).prop_map(|(ok, in_use)| Choice::StartEnds { ok, in_use }),
        (0u8..4).prop_map(Choice::Exit),
        (0u8..3).prop_map(Choice::Health),
        (0u8..3).prop_map(Choice::DataWatch),
        Just(Choice::StopRequest),
        Just(Choice::StartRequest),
        Just(Choice::Resume),
        (0u16..20_000).prop_map(Choice::Advance),
        (0u8..12).prop_map(Choice::Phase),
        any::<bool>().prop_map(Choice::Checked),
        Just(Choice::DriverDone),
    ]
}

const PHASES: [Phase; 12] = [
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

/// The world as the shell would see it.
#[derive(Debug, Default)]
struct World {
    alive: Option<u32>,
    next_pid: u32,
    /// Signals sent to each child, in order.
    sent: BTreeMap<u32, Vec<Signal>>,
    preparing: bool,
    watching: bool,
    checking: bool,
    next_id: ReqId,
    stops_open: BTreeSet<ReqId>,
    starts_open: BTreeSet<ReqId>,
}

impl World {
    /// Performs `fx` as the shell would; panics on a broken invariant.
    fn perform(&mut self, fx: &[Effect]) {
        for e in fx {
            match e {
                Effect::Prepare => {
                    assert!(self.alive.is_none(), "a start while a child runs");
                    assert!(!self.preparing, "two starts at once");
                    self.preparing = true;
                }
                Effect::AbandonStart => self.preparing = false,
                Effect::AnswerStart(id, _) => {
                    assert!(self.starts_open.remove(id), "start {id} answered twice");
                }
                Effect::AnswerStop(id, _) => {
                    assert!(self.stops_open.remove(id), "stop {id} answered twice");
                }
                Effect::Signal(sig) => {
                    let pid = self.alive.expect("a signal with no child");
                    let sent = self.sent.entry(pid).or_default();
                    if *sig == Signal::SIGKILL {
                        assert!(
                            sent.iter()
                                .any(|s| matches!(s, Signal::SIGTERM | Signal::SIGINT)),
                            "SIGKILL before SIGTERM to {pid}: {sent:?}"
                        );
                    }
                    sent.push(*sig);
                }
                Effect::ComeHome => {
                    let pid = self.alive.expect("calls brought home with no child");
                    let sent = self.sent.get(&pid).map_or(&[][..], Vec::as_slice);
                    assert!(
                        !sent
                            .iter()
                            .any(|s| matches!(s, Signal::SIGTERM | Signal::SIGINT)),
                        "calls brought home to {pid}, which was told to stop: {sent:?}"
                    );
                }
                Effect::WatchData(_) => self.watching = true,
                Effect::ChildGone => {
                    self.alive = None;
                    self.watching = false;
                }
                Effect::CheckNewBinary => self.checking = true,
                Effect::CancelCheck => self.checking = false,
                _ => {}
            }
        }
    }
}

/// The input `choice` makes in `world`, if the real loop could see it now.
fn input(c: Choice, world: &mut World, state: &Lifecycle, now: &mut Instant) -> Option<Input> {
    Some(match c {
        Choice::Signal(n) => Input::Signal(
            [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGUSR1,
                Signal::SIGQUIT,
            ][n as usize],
        ),
        Choice::StartEnds { ok, in_use } => {
            if !world.preparing {
                return None;
            }
            world.preparing = false;
            if ok {
                assert!(world.alive.is_none(), "two children");
                world.next_pid += 1;
                world.alive = Some(world.next_pid);
                Input::Started(Ok(Spawned {
                    pid: world.next_pid,
                    version: "3.5.16".parse().unwrap(),
                }))
            } else {
                Input::Started(Err(StartFailure {
                    why: "no".into(),
                    data_dir_in_use: in_use,
                }))
            }
        }
        Choice::Exit(n) => {
            world.alive?;
            Input::Exited(
                [
                    ChildExit::Code(0),
                    ChildExit::Code(2),
                    ChildExit::Signal(libc::SIGTERM),
                    ChildExit::Signal(libc::SIGKILL),
                ][n as usize],
            )
        }
        Choice::Health(n) => {
            world.alive?;
            Input::Health([Health::Unknown, Health::Healthy, Health::Unhealthy][n as usize])
        }
        Choice::DataWatch(n) => {
            if !world.watching {
                return None;
            }
            world.watching = false;
            Input::DataWatched(match n {
                0 => DataWatch::Closed(Duration::from_millis(30)),
                1 => DataWatch::CannotTell("nfs".into()),
                _ => DataWatch::StillOpen,
            })
        }
        Choice::StopRequest => {
            world.next_id += 1;
            world.stops_open.insert(world.next_id);
            Input::Stop(world.next_id)
        }
        Choice::StartRequest => {
            world.next_id += 1;
            world.starts_open.insert(world.next_id);
            Input::Start(world.next_id)
        }
        Choice::Resume => Input::Resume,
        Choice::Advance(ms) => {
            *now += Duration::from_millis(u64::from(ms));
            let (at, timer) = state.next_timer()?;
            if at > *now {
                return None;
            }
            Input::Timer(timer)
        }
        Choice::Phase(n) => Input::DriverPhase(PHASES[n as usize]),
        Choice::Checked(ok) => {
            if !world.checking {
                return None;
            }
            world.checking = false;
            Input::Checked(if ok {
                Ok("new".into())
            } else {
                Err("no".into())
            })
        }
        Choice::DriverDone => {
            if !state.draining() {
                return None;
            }
            Input::DriverDone
        }
    })
}

/// Requests the lifecycle still holds (stops for a stopping child, starts being prepared).
fn held_requests(state: &Lifecycle) -> (BTreeSet<ReqId>, BTreeSet<ReqId>) {
    let stops = match &state.child {
        Child::Stopping(_, s) | Child::Killing(_, s, _) => {
            s.replies.iter().map(|(id, _)| *id).collect()
        }
        _ => BTreeSet::new(),
    };
    let starts = match &state.child {
        Child::Preparing { waiting, .. } => waiting.iter().copied().collect(),
        _ => BTreeSet::new(),
    };
    (stops, starts)
}

fn rules() -> Rules {
    Rules {
        stop_timeout: Duration::from_secs(10),
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        },
        reload: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn one_child_no_early_sigkill_no_home_while_stopping_every_request_answered_once(
        held in any::<bool>(),
        choices in proptest::collection::vec(choice(), 0..80),
    ) {
        let mut now = Instant::now();
        let mut state = Lifecycle::new(rules(), "3.5.16".parse().unwrap(), held);
        let mut world = World::default();
        let (next, fx) = step(&state, now, Input::Boot(None));
        world.perform(&fx);
        state = next;
        for c in choices {
            if state.finished().is_some() {
                break;
            }
            let Some(input) = input(c, &mut world, &state, &mut now) else { continue };
            let (next, fx) = step(&state, now, input);
            world.perform(&fx);
            state = next;
            prop_assert_eq!(state.etcd().map(|e| e.pid), world.alive);
            prop_assert_eq!(matches!(state.child, Child::Preparing { .. }), world.preparing);
        }
        // Open requests are exactly those the lifecycle still holds: each gets its one
        // answer at the exit (stops) or the start's end (starts).
        let (stops, starts) = held_requests(&state);
        prop_assert_eq!(&world.stops_open, &stops);
        prop_assert_eq!(&world.starts_open, &starts);
        if state.finished().is_some() {
            prop_assert!(world.stops_open.is_empty() && world.starts_open.is_empty());
            prop_assert!(world.alive.is_none());
        }
    }
}
