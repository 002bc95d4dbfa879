//! Properties of [`step`] and [`recover`] over generated histories.
//!
//! A small model of the world plays the executor: it answers each [`Effect`] with one of
//! the outcomes the real driver can produce (chosen by the generated script), injects the
//! outside events the driver really sees (a new drop, a lost turn, a shutdown, stale
//! events while idle), and crashes the supervisor at generated points: the persisted
//! [`Turn`] is what the last step returned, and the restart goes through [`recover`] with
//! `current` as the model has it. The facts the invariants need (is the turn held, is a
//! verified backup taken in this turn, does etcd run, what does `current` point at) come
//! from the history of effects and their answers, never from the machine's own state.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

/// Cases per property; the three together run in well under a second.
const CASES: u32 = 1000;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// One generated choice: which outcome an effect gets, or what happens beside it.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// The effect's outcome, picked by index among the outcomes it can have.
    Outcome(u8),
    /// The supervisor dies right after persisting the step (before or during its effect).
    Crash { effect_landed: bool },
    /// SIGTERM to the supervisor.
    Shutdown,
    /// A newer drop arrives (index into the candidate versions).
    Staged(u8),
    /// A stale or unsolicited event while the machine waits (index into every event).
    Stray(u8),
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        12 => any::<u8>().prop_map(Choice::Outcome),
        1 => any::<bool>().prop_map(|effect_landed| Choice::Crash { effect_landed }),
        1 => Just(Choice::Shutdown),
        1 => any::<u8>().prop_map(Choice::Staged),
        1 => any::<u8>().prop_map(Choice::Stray),
    ]
}

/// What the executor knows of etcd's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Running,
    Stopped,
    /// A failed verify: it may have exited or may still run unhealthy. Only a stop (which
    /// is then needed) or a restart settles it.
    Unknown,
}

/// The simulated world as the executor and the run loop keep it.
#[derive(Debug, Clone)]
struct SimWorld {
    /// Whether etcd runs (the run loop restarts it unless a swap holds it).
    running: Run,
    /// Where `current` points.
    current: Version,
    /// The cluster-wide turn is held (acquired and neither released nor lost).
    held: bool,
    /// A verified backup was taken while holding this turn.
    backup: bool,
    /// The supervisor stopped etcd forward in this swap, holding the turn with a backup:
    /// half of the licence for the rollback's stop (which may come after the turn was
    /// lost, or after a restart: the swap is finished or rolled back first, by design).
    swap_licensed: bool,
    /// This world answered a switch, start, verify or soak with a failure since that
    /// forward stop: the other half. Set only here, from the answers the model gave, never
    /// from the machine's `rollback` flag.
    failed_since_stop: bool,
    /// Versions that ran healthily here (verified), the first one included.
    known_good: BTreeSet<Version>,
    /// The new version can never verify (a bad binary).
    target_bad: bool,
    /// The known-good version itself failed to come back at least once.
    old_failed: bool,
}

/// Every event, for stray deliveries.
fn any_event(i: u8) -> Event {
    let all = [
        Event::TurnAcquired,
        Event::TurnLost,
        Event::PreflightPassed,
        Event::PreflightWait("w".into()),
        Event::PreflightRefused("r".into()),
        Event::BackupDone,
        Event::BackupFailed("b".into()),
        Event::Stopped,
        Event::StopFailed("s".into()),
        Event::ColdCopyFailed("c".into()),
        Event::Switched,
        Event::SwitchFailed("x".into()),
        Event::Started,
        Event::StartFailed("f".into()),
        Event::Verified,
        Event::VerifyFailed("v".into()),
        Event::Misconfigured("m".into()),
        Event::StayedUnhealthy("u".into()),
        Event::SoakFor(Duration::from_secs(1)),
        Event::SoakFailed("k".into()),
        Event::Released,
    ];
    all[usize::from(i) % all.len()].clone()
}

const CANDIDATES: [&str; 4] = ["3.5.17", "3.6.0", "3.5.15", "3.5.16"];

/// Why a run of the model failed, for the property's message.
type Broken = String;

impl SimWorld {
    /// Answers `effect` (already returned by a step whose turn is `turn`) with the outcome
    /// `pick` selects, updating the facts; checks the effect is allowed first.
    fn perform(&mut self, turn: &Turn, effect: &Effect, pick: u8) -> Result<Event, Broken> {
        let pick = usize::from(pick);
        let one_of = |events: Vec<Event>| events[pick % events.len()].clone();
        Ok(match effect {
            Effect::Nothing | Effect::Exit => unreachable!("handled by the driver loop"),
            Effect::Soak(_) => {
                let ev = one_of(vec![
                    Event::Verified,
                    Event::Verified,
                    Event::SoakFailed("exited".into()),
                    Event::TurnLost,
                ]);
                match &ev {
                    Event::Verified => {
                        self.known_good.insert(self.current.clone());
                    }
                    // The soak ends; the new version keeps running, verified but unproven.
                    Event::TurnLost => self.held = false,
                    _ => {
                        self.running = Run::Unknown;
                        self.failed_since_stop = true;
                    }
                }
                ev
            }
            Effect::AcquireTurn { .. } => {
                if self.held {
                    return Err(format!("AcquireTurn while the turn is held: {turn:?}"));
                }
                self.held = true;
                self.backup = false;
                Event::TurnAcquired
            }
            Effect::Preflight => {
                let to = turn.to.clone().unwrap_or_else(|| v("3.5.17"));
                let ev = one_of(vec![
                    Event::PreflightPassed,
                    Event::PreflightPassed,
                    Event::PreflightWait("a member is down".into()),
                    Event::PreflightRefused("path".into()),
                    Event::TurnLost,
                    Event::RefusedHere(to.clone(), "flags".into()),
                    Event::FailedBeforeTurn(to, "rehearsal".into()),
                ]);
                if ev == Event::TurnLost {
                    self.held = false;
                }
                ev
            }
            Effect::Backup => {
                let ev = one_of(vec![
                    Event::BackupDone,
                    Event::BackupDone,
                    Event::BackupFailed("disk full".into()),
                    Event::TurnLost,
                ]);
                match ev {
                    Event::BackupDone if self.held => self.backup = true,
                    Event::TurnLost => self.held = false,
                    _ => {}
                }
                ev
            }
            Effect::StopEtcd => {
                if self.running == Run::Stopped {
                    return Err(format!("StopEtcd while etcd is already stopped: {turn:?}"));
                }
                if turn.rollback {
                    if !(self.swap_licensed && self.failed_since_stop) {
                        return Err(format!(
                            "rollback stop without a forward stop and a failure seen since \
                             (forward stop {}, failure {}): {turn:?}",
                            self.swap_licensed, self.failed_since_stop
                        ));
                    }
                    // The fence before a rollback's stop finds the turn gone (a partition):
                    // the new version keeps running, unverified.
                    let ev = one_of(vec![Event::Stopped, Event::Stopped, Event::TurnLost]);
                    match ev {
                        Event::Stopped => self.running = Run::Stopped,
                        _ => self.held = false,
                    }
                    return Ok(ev);
                }
                if !(self.held && self.backup) {
                    return Err(format!(
                        "forward StopEtcd with held={} backup={}: {turn:?}",
                        self.held, self.backup
                    ));
                }
                let ev = one_of(vec![
                    Event::Stopped,
                    Event::Stopped,
                    Event::Stopped,
                    Event::PreflightWait("went down".into()),
                    Event::TurnLost,
                    Event::ColdCopyFailed("no space".into()),
                ]);
                match ev {
                    Event::Stopped => {
                        self.running = Run::Stopped;
                        self.swap_licensed = true;
                        self.failed_since_stop = false;
                    }
                    Event::ColdCopyFailed(_) => {
                        self.running = Run::Stopped;
                        self.backup = false;
                    }
                    Event::TurnLost => self.held = false,
                    _ => {}
                }
                ev
            }
            Effect::Switch(to) => {
                if self.running != Run::Stopped {
                    return Err(format!("Switch({to}) while etcd may run: {turn:?}"));
                }
                let mut outcomes = vec![
                    Event::Switched,
                    Event::Switched,
                    Event::Switched,
                    Event::SwitchFailed("EIO".into()),
                ];
                // The fence before pointing at the new version.
                if turn.phase == Phase::Swapping && !turn.rollback {
                    outcomes.push(Event::TurnLost);
                }
                let ev = one_of(outcomes);
                if ev == Event::TurnLost {
                    self.held = false;
                } else if ev == Event::Switched {
                    self.current = to.clone();
                } else {
                    self.failed_since_stop = true;
                    if self.known_good.contains(to) {
                        self.old_failed = true;
                    }
                }
                ev
            }
            Effect::StartEtcd => {
                if self.running != Run::Stopped {
                    return Err(format!("StartEtcd while etcd may run: {turn:?}"));
                }
                let mut outcomes = vec![
                    Event::Started,
                    Event::Started,
                    Event::Started,
                    Event::StartFailed("exec".into()),
                ];
                // The fence before starting the new version.
                if turn.phase == Phase::Starting && !turn.rollback {
                    outcomes.push(Event::TurnLost);
                }
                let ev = one_of(outcomes);
                if ev == Event::TurnLost {
                    self.held = false;
                } else if ev == Event::Started {
                    self.running = Run::Running;
                } else {
                    self.failed_since_stop = true;
                    if self.known_good.contains(&self.current) {
                        self.old_failed = true;
                    }
                }
                ev
            }
            Effect::Verify(want) => {
                if self.running != Run::Running || self.current != *want {
                    return Err(format!(
                        "Verify({want}) with running={:?} current={}: {turn:?}",
                        self.running, self.current
                    ));
                }
                let good = self.known_good.contains(want) || !self.target_bad;
                let forward = !turn.rollback && Some(want) == turn.to.as_ref();
                let ev = if good {
                    let mut outcomes = vec![
                        Event::Verified,
                        Event::Verified,
                        Event::Verified,
                        Event::VerifyFailed("slow".into()),
                        Event::Misconfigured("usage".into()),
                        Event::StayedUnhealthy("cut off".into()),
                    ];
                    if forward {
                        outcomes.push(Event::SoakFor(Duration::from_secs(1)));
                    }
                    one_of(outcomes)
                } else {
                    one_of(vec![
                        Event::VerifyFailed("crashed".into()),
                        Event::Misconfigured("usage".into()),
                        Event::StayedUnhealthy("cut off".into()),
                    ])
                };
                match &ev {
                    Event::Verified => {
                        self.known_good.insert(want.clone());
                    }
                    // Verified, to be soaked: good only once the soak passes.
                    Event::SoakFor(_) => {}
                    Event::StayedUnhealthy(_) => {
                        self.running = Run::Running;
                        self.failed_since_stop = true;
                        if self.known_good.contains(want) {
                            self.old_failed = true;
                        }
                    }
                    _ => {
                        self.running = Run::Unknown;
                        self.failed_since_stop = true;
                        if self.known_good.contains(want) {
                            self.old_failed = true;
                        }
                    }
                }
                ev
            }
            Effect::Release { .. } => {
                // The driver hands etcd back to the run loop, which (re)starts it on `current`.
                self.running = Run::Running;
                self.held = false;
                self.backup = false;
                // A held swap (the new version runs unverified) stays open for its next turn.
                self.swap_licensed = self.swap_licensed && turn.phase == Phase::Holding;
                self.failed_since_stop &= self.swap_licensed;
                Event::Released
            }
        })
    }

    /// The supervisor dies: the turn's lease goes, etcd dies with it (PDEATHSIG), and the
    /// restart recovers from `persisted`. Returns the step `recover` gives.
    fn crash_and_recover(&mut self, persisted: &Turn) -> Result<Step, Broken> {
        // The licence of a begun swap survives: recovery finishes or rolls back that swap.
        self.held = false;
        self.backup = false;
        let step = recover(persisted, &self.current);
        if matches!(step.effect, Effect::StopEtcd) {
            return Err(format!("recover stops etcd: {persisted:?}"));
        }
        // The run loop starts etcd on `current` unless the swap must be finished first.
        self.running = if matches!(step.effect, Effect::Switch(_)) {
            Run::Stopped
        } else {
            Run::Running
        };
        Ok(step)
    }
}

/// What one run of the model went through, for the coverage check.
#[derive(Debug, Default)]
struct Played {
    /// Phases the machine was in when an effect was answered.
    phases: Vec<Phase>,
    /// Phases the supervisor crashed in (the persisted turn's).
    crashed_in: Vec<Phase>,
    /// A rollback's stop was answered (the licence check ran).
    rollback_stops: usize,
    /// The known-good version itself failed: the strict end-state checks were skipped.
    old_failed: bool,
}

/// Runs the script, then lets the world answer with first outcomes (success) and no
/// outside events until the machine rests; checks the invariants at every effect and the
/// end state. Returns what the run went through.
fn play(target_bad: bool, script: &[Choice]) -> Result<Played, Broken> {
    let mut played = Played::default();
    let from = v("3.5.16");
    let mut world = SimWorld {
        running: Run::Running,
        current: from.clone(),
        held: false,
        backup: false,
        swap_licensed: false,
        failed_since_stop: false,
        known_good: BTreeSet::from([from.clone()]),
        target_bad,
        old_failed: false,
    };
    let mut turn = Turn::idle(from);
    let mut effect = Effect::Nothing;
    let mut script = script.iter().copied();
    let mut steps = 0usize;
    let mut drained_idle = 0;
    loop {
        steps += 1;
        if steps > 10_000 {
            return Err(format!("no rest after 10000 steps: {turn:?}"));
        }
        let next = script.next();
        let event = match (next, &effect) {
            (Some(Choice::Crash { effect_landed }), _) => {
                // The effect may have half happened: a switch is atomic, either way.
                if effect_landed {
                    if let Effect::Switch(to) = &effect {
                        world.current = to.clone();
                    }
                }
                if !played.crashed_in.contains(&turn.phase) {
                    played.crashed_in.push(turn.phase);
                }
                let step = world.crash_and_recover(&turn)?;
                if std::env::var_os("PROP_TRACE").is_some() {
                    eprintln!(
                        "CRASH in {:?} landed={effect_landed} -> {:?} {:?}",
                        turn.phase, step.turn.phase, step.effect
                    );
                }
                turn = step.turn;
                effect = step.effect;
                continue;
            }
            (_, Effect::Exit) => {
                let step = world.crash_and_recover(&turn)?;
                turn = step.turn;
                effect = step.effect;
                continue;
            }
            (Some(Choice::Shutdown), _) => Event::Shutdown,
            (Some(Choice::Staged(i)), Effect::Nothing | Effect::AcquireTurn { .. }) => {
                Event::Staged(v(CANDIDATES[usize::from(i) % CANDIDATES.len()]))
            }
            // The driver's idle wait hands the machine only drops and vetting results, but
            // the machine must shrug off any stale outcome there.
            (Some(Choice::Stray(i)), Effect::Nothing)
                if matches!(turn.phase, Phase::Idle | Phase::Failed) =>
            {
                any_event(i)
            }
            (Some(_), Effect::Nothing) => Event::Staged(v(CANDIDATES[steps % CANDIDATES.len()])),
            (Some(Choice::Outcome(pick)), e) => world.perform(&turn, e, pick)?,
            (Some(_), e) => world.perform(&turn, e, 0)?,
            (None, Effect::Nothing) => {
                // Out of events: the machine rests here.
                drained_idle += 1;
                break;
            }
            (None, e) => world.perform(&turn, e, 0)?,
        };
        if !played.phases.contains(&turn.phase) {
            played.phases.push(turn.phase);
        }
        if turn.rollback && effect == Effect::StopEtcd {
            played.rollback_stops += 1;
        }
        let step = step(&turn, event.clone());
        if std::env::var_os("PROP_TRACE").is_some() {
            eprintln!(
                "{:?}/{} + {event:?} -> {:?}/{} {:?}",
                turn.phase, turn.rollback, step.turn.phase, step.turn.rollback, step.effect
            );
        }
        turn = step.turn;
        effect = step.effect;
    }
    debug_assert_eq!(drained_idle, 1);
    // At rest: on a version that ran healthily here, and the persisted turn agrees.
    match turn.phase {
        Phase::Idle | Phase::Queued => {
            if world.running != Run::Running {
                return Err(format!("at rest with etcd stopped: {turn:?}"));
            }
            // After the known-good version itself failed (a switch back that hit an I/O
            // error leaves `current` on the failed version), the member is what the
            // operator must look at (`failed` was published); past that, the state may
            // name a `from` that `current` no longer points at, so only the strict checks
            // of the runs without such a failure apply.
            if !world.old_failed {
                if !world.known_good.contains(&world.current) {
                    return Err(format!(
                        "ended on {} which never verified: {turn:?}",
                        world.current
                    ));
                }
                if turn.from != world.current {
                    return Err(format!(
                        "state says from={} but current is {}",
                        turn.from, world.current
                    ));
                }
            }
            if world.held {
                return Err(format!("at rest with the turn held: {turn:?}"));
            }
        }
        // The run loop keeps restarting it; allowed only when the known-good version
        // itself was seen failing (a switch, start or verify of it).
        Phase::Failed if world.old_failed => {}
        _ => {
            return Err(format!(
                "rests in {:?} without a failure of the old version: {turn:?}",
                turn.phase
            ))
        }
    }
    played.old_failed = world.old_failed;
    Ok(played)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Random outcomes, outside events and crashes: no stop without a held turn and a
    /// verified backup, no double stop/start/acquire, a switch only while stopped, and the
    /// member rests on a known-good version.
    #[test]
    fn prop_machine_with_crashes_keeps_its_invariants(
        target_bad in any::<bool>(),
        script in proptest::collection::vec(choice(), 0..120),
    ) {
        if let Err(broken) = play(target_bad, &script) {
            prop_assert!(false, "{broken}\nscript: {script:?}");
        }
    }

    /// `recover` from any persisted turn and any `current` never stops etcd, and leaves
    /// nothing half done: it resumes the swap, queues, or rests.
    #[test]
    fn prop_recover_never_stops_etcd(
        phase in proptest::sample::select(Phase::ALL.to_vec()),
        rollback in any::<bool>(),
        fault in proptest::sample::select(vec![Fault::Version, Fault::Member, Fault::Unproven]),
        has_to in any::<bool>(),
        current_is_to in any::<bool>(),
    ) {
        let from = v("3.5.16");
        let to = v("3.6.0");
        let persisted = Turn {
            phase,
            from: from.clone(),
            to: has_to.then(|| to.clone()),
            rollback,
            last_error: None,
            retries: 0,
            fault,
        };
        let current = if current_is_to && has_to { to.clone() } else { from.clone() };
        let step = recover(&persisted, &current);
        prop_assert!(
            matches!(step.effect, Effect::Nothing | Effect::AcquireTurn { .. } | Effect::Switch(_)),
            "{persisted:?} -> {:?}", step.effect
        );
        if let Effect::Switch(target) = &step.effect {
            // Only to a version this turn names.
            prop_assert!(*target == from || Some(target) == persisted.to.as_ref());
        }
    }
}

/// The model itself can fail: a machine that stopped etcd without a backup would be caught.
#[test]
fn prop_model_catches_a_stop_without_backup() {
    let mut world = SimWorld {
        running: Run::Running,
        current: v("3.5.16"),
        held: true,
        backup: false,
        swap_licensed: false,
        failed_since_stop: false,
        known_good: BTreeSet::from([v("3.5.16")]),
        target_bad: false,
        old_failed: false,
    };
    let turn = Turn::idle(v("3.5.16"));
    assert!(world.perform(&turn, &Effect::StopEtcd, 0).is_err());
    world.backup = true;
    world.running = Run::Stopped;
    assert!(world.perform(&turn, &Effect::StopEtcd, 0).is_err());
}

/// The generator is not vacuous: runs reach every phase, crash in every phase a turn
/// passes through, roll back (so the rollback-stop licence is checked), and most end
/// without the old version failing (so the strict end-state checks run in most cases).
#[test]
fn prop_machine_generator_reaches_every_phase_and_crash_point() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (any::<bool>(), proptest::collection::vec(choice(), 0..120));
    let (mut phases, mut crashed_in) = (Vec::new(), Vec::new());
    let (mut runs, mut strict, mut rollback_stops) = (0usize, 0usize, 0usize);
    for _ in 0..2000 {
        let (target_bad, script) = strategy.new_tree(&mut runner).unwrap().current();
        let played = play(target_bad, &script).unwrap_or_else(|e| panic!("{e}"));
        runs += 1;
        strict += usize::from(!played.old_failed);
        rollback_stops += played.rollback_stops;
        for p in played.phases {
            if !phases.contains(&p) {
                phases.push(p);
            }
        }
        for p in played.crashed_in {
            if !crashed_in.contains(&p) {
                crashed_in.push(p);
            }
        }
    }
    eprintln!(
        "runs {runs}, strict end checks {strict}, rollback stops {rollback_stops}, \
         phases {phases:?}, crashed in {crashed_in:?}"
    );
    for p in Phase::ALL {
        assert!(phases.contains(&p), "never in {p:?}: {phases:?}");
        assert!(
            crashed_in.contains(&p),
            "never crashed in {p:?}: {crashed_in:?}"
        );
    }
    assert!(rollback_stops >= 50, "rollback stops {rollback_stops}");
    // Half the runs at least keep every end-state check.
    assert!(strict * 2 >= runs, "strict {strict} of {runs}");
}

/// The model itself can fail: a rollback stop after a forward stop, with no failure the
/// world answered since, is caught whatever the machine's `rollback` flag says.
#[test]
fn prop_model_catches_a_rollback_stop_without_a_failure() {
    let mut world = SimWorld {
        running: Run::Running,
        current: v("3.6.0"),
        held: true,
        backup: true,
        swap_licensed: true,
        failed_since_stop: false,
        known_good: BTreeSet::from([v("3.5.16")]),
        target_bad: false,
        old_failed: false,
    };
    let turn = Turn {
        phase: Phase::Stopping,
        from: v("3.5.16"),
        to: Some(v("3.6.0")),
        rollback: true,
        last_error: None,
        retries: 0,
        fault: Fault::Version,
    };
    assert!(world.perform(&turn, &Effect::StopEtcd, 0).is_err());
    world.failed_since_stop = true;
    assert!(world.perform(&turn, &Effect::StopEtcd, 0).is_ok());
}
