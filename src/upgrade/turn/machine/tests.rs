use super::*;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn run(turn: &Turn, events: Vec<Event>) -> (Turn, Vec<Effect>) {
    let mut t = turn.clone();
    let mut effects = Vec::new();
    for e in events {
        let s = step(&t, e);
        t = s.turn;
        effects.push(s.effect);
    }
    (t, effects)
}

fn staged() -> Turn {
    step(&Turn::idle(v("3.4.23")), Event::Staged(v("3.5.16"))).turn
}

#[test]
fn happy_path_walks_every_phase_once() {
    let (t, effects) = run(
        &Turn::idle(v("3.4.23")),
        vec![
            Event::Staged(v("3.5.16")),
            Event::TurnAcquired,
            Event::PreflightPassed,
            Event::BackupDone,
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::Verified,
            Event::Released,
        ],
    );
    assert_eq!(
        effects,
        [
            Effect::AcquireTurn {
                after: Duration::ZERO
            },
            Effect::Preflight,
            Effect::Backup,
            Effect::StopEtcd,
            Effect::Switch(v("3.5.16")),
            Effect::StartEtcd,
            Effect::Verify(v("3.5.16")),
            Effect::Release {
                reject: None,
                refuse: None
            },
            Effect::Nothing,
        ]
    );
    assert_eq!(t, Turn::idle(v("3.5.16")));
}

#[test]
fn preflight_wait_releases_and_requeues_with_growing_delay() {
    let (t, effects) = run(
        &staged(),
        vec![
            Event::TurnAcquired,
            Event::PreflightWait("m2 unreachable".into()),
            Event::Released,
            Event::TurnAcquired,
            Event::PreflightWait("m2 unreachable".into()),
            Event::Released,
        ],
    );
    assert_eq!(t.phase, Phase::Queued);
    assert_eq!(t.last_error.as_deref(), Some("m2 unreachable"));
    assert_eq!(
        effects[1],
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
    assert_eq!(
        effects[2],
        Effect::AcquireTurn {
            after: Duration::from_secs(1)
        }
    );
    assert_eq!(
        effects[5],
        Effect::AcquireTurn {
            after: Duration::from_secs(2)
        }
    );
}

#[test]
fn refused_by_path_rules_rejects_without_touching_etcd() {
    let (t, effects) = run(
        &staged(),
        vec![
            Event::TurnAcquired,
            Event::PreflightRefused("skips a minor".into()),
        ],
    );
    assert_eq!(t.phase, Phase::Idle);
    assert_eq!(t.to, None);
    assert_eq!(
        effects[1],
        Effect::Release {
            reject: None,
            refuse: Some((v("3.5.16"), "skips a minor".into()))
        }
    );
    assert!(!effects.contains(&Effect::StopEtcd));
}

#[test]
fn failed_backup_aborts_before_the_stop() {
    let (t, effects) = run(
        &staged(),
        vec![
            Event::TurnAcquired,
            Event::PreflightPassed,
            Event::BackupFailed("disk full".into()),
        ],
    );
    assert_eq!(t.phase, Phase::Queued);
    assert!(!effects.contains(&Effect::StopEtcd));
    assert_released_last(&effects, None, None);
}

/// The last effect releases the turn, rejecting and refusing as given.
#[track_caller]
fn assert_released_last(
    effects: &[Effect],
    reject: Option<(Version, String)>,
    refuse: Option<(Version, String)>,
) {
    assert_eq!(effects.last(), Some(&Effect::Release { reject, refuse }));
}

/// `event` leaves `t` as it is and does nothing.
#[track_caller]
fn assert_ignored(t: &Turn, event: Event) {
    let s = step(t, event);
    assert_eq!((s.turn, s.effect), (t.clone(), Effect::Nothing));
}

fn at_stopping() -> Turn {
    run(
        &staged(),
        vec![
            Event::TurnAcquired,
            Event::PreflightPassed,
            Event::BackupDone,
        ],
    )
    .0
}

#[test]
fn failed_cold_copy_after_the_stop_restarts_and_verifies_the_old_version_then_requeues() {
    let (t, effects) = run(
        &at_stopping(),
        vec![
            Event::ColdCopyFailed("disk full".into()),
            Event::Switched,
            Event::Started,
            Event::Verified,
            Event::Released,
        ],
    );
    assert_eq!(
        effects,
        [
            Effect::Switch(v("3.4.23")),
            Effect::StartEtcd,
            Effect::Verify(v("3.4.23")),
            Effect::Release {
                reject: None,
                refuse: None
            },
            Effect::AcquireTurn {
                after: Duration::from_secs(1)
            },
        ]
    );
    assert_eq!(t.phase, Phase::Queued);
    assert_eq!(t.from, v("3.4.23"));
    assert_eq!(t.to, Some(v("3.5.16")));
    assert!(!t.rollback);
    assert_eq!(t.last_error.as_deref(), Some("disk full"));
    assert_eq!(t.retries, 1);
}

#[test]
fn restoring_is_its_own_persisted_state_after_the_stop() {
    let s = step(&at_stopping(), Event::ColdCopyFailed("disk full".into()));
    assert_eq!(s.turn.phase, Phase::Restoring);
    assert_eq!(s.turn.state_name(), "restoring");
    let json = serde_json::to_string(&s.turn).unwrap();
    assert!(json.contains("\"phase\":\"restoring\""), "{json}");
    // Stale swap outcomes do not move it anywhere.
    for e in [Event::Stopped, Event::BackupDone, Event::TurnLost] {
        let again = step(&s.turn, e.clone());
        assert_eq!(
            (again.turn, again.effect),
            (s.turn.clone(), Effect::Nothing),
            "{e:?}"
        );
    }
}

#[test]
fn old_version_not_coming_back_after_a_failed_cold_copy_ends_failed_without_rejecting() {
    for failure in [
        Event::StartFailed("spawn failed".into()),
        Event::VerifyFailed("not healthy".into()),
    ] {
        let restoring = step(&at_stopping(), Event::ColdCopyFailed("disk full".into())).turn;
        let (t, effects) = run(&restoring, vec![failure.clone()]);
        assert_eq!(t.phase, Phase::Failed, "{failure:?}");
        assert!(
            t.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("restarting the old version failed")),
            "{t:?}"
        );
        assert_eq!(
            effects,
            [Effect::Release {
                reject: None,
                refuse: None
            }]
        );
    }
}

#[test]
fn cold_copy_failure_during_a_rollback_is_ignored() {
    let mut t = at_stopping();
    t.rollback = true;
    assert_ignored(&t, Event::ColdCopyFailed("disk full".into()));
}

#[test]
fn a_member_down_right_before_the_stop_requeues_without_stopping() {
    let s = step(
        &at_stopping(),
        Event::PreflightWait("member m2 went down".into()),
    );
    assert_eq!(s.turn.phase, Phase::Queued);
    assert_eq!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
}

#[test]
fn failed_stop_request_exits_and_keeps_the_phase_for_recovery() {
    for rollback in [false, true] {
        let mut t = at_stopping();
        t.rollback = rollback;
        let s = step(&t, Event::StopFailed("the run loop is gone".into()));
        assert_eq!(s.effect, Effect::Exit);
        assert_eq!(s.turn.phase, Phase::Stopping);
        assert_eq!(s.turn.last_error.as_deref(), Some("the run loop is gone"));
        // It never counts as stopped: no switch follows.
        assert_ne!(s.effect, Effect::Switch(v("3.5.16")));
    }
    // Outside the stop it is stale.
    let idle = Turn::idle(v("3.4.23"));
    let s = step(&idle, Event::StopFailed("gone".into()));
    assert_eq!((s.turn, s.effect), (idle, Effect::Nothing));
}

#[test]
fn lost_turn_before_stop_aborts_after_stop_restores_the_old_version_without_a_second_stop() {
    let (t, _) = run(&staged(), vec![Event::TurnAcquired, Event::TurnLost]);
    assert_eq!(t.phase, Phase::Queued);
    // Found lost by the driver's check right before the stop request: nothing stopped.
    let s = step(&at_stopping(), Event::TurnLost);
    assert_eq!(s.turn.phase, Phase::Queued);
    assert_eq!(s.turn.last_error.as_deref(), Some("lost the upgrade turn"));
    assert_eq!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
    // Found lost before the switch or the start of the new version (the driver's fence),
    // etcd stopped: the old version is put back and started, and the member queues again.
    for late in [vec![], vec![Event::Switched]] {
        let mut events = vec![Event::Stopped];
        events.extend(late);
        events.extend([
            Event::TurnLost,
            Event::Switched,
            Event::Started,
            Event::Verified,
        ]);
        let (t, effects) = run(&at_stopping(), events);
        let lost_at = effects.len() - 4;
        assert_eq!(
            effects[lost_at..],
            [
                Effect::Switch(v("3.4.23")),
                Effect::StartEtcd,
                Effect::Verify(v("3.4.23")),
                Effect::Release {
                    reject: None,
                    refuse: None
                },
            ]
        );
        // The one stop was before these events (`at_stopping`); none follows.
        assert!(!effects.contains(&Effect::StopEtcd), "{effects:?}");
        assert_eq!((t.phase, t.to.clone()), (Phase::Queued, Some(v("3.5.16"))));
    }
    // Lost while the old version starts again after a rollback's stop: the rollback goes
    // on (it only adds a member back).
    let mut back = at_stopping();
    back.rollback = true;
    for phase in [Phase::Swapping, Phase::Starting, Phase::Verifying] {
        let t = Turn {
            phase,
            ..back.clone()
        };
        assert_eq!(step(&t, Event::TurnLost).effect, Effect::Nothing);
    }
}

#[test]
fn lost_turn_before_a_rollbacks_stop_holds_the_new_version_and_verifies_it_in_the_next_turn() {
    let unhealthy = step(
        &at_verifying(),
        Event::StayedUnhealthy("not healthy within 8s".into()),
    );
    assert_eq!(unhealthy.effect, Effect::StopEtcd);
    // The driver's fence found the turn gone with the new version still running.
    let held = step(&unhealthy.turn, Event::TurnLost);
    assert_eq!(held.turn.phase, Phase::Holding);
    assert_eq!(held.turn.state_name(), "holding");
    assert!(!held.turn.rollback);
    assert_eq!(
        held.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
    let (t, effects) = run(
        &held.turn,
        vec![Event::Released, Event::TurnAcquired, Event::Verified],
    );
    assert_eq!(
        effects[..2],
        [
            Effect::AcquireTurn {
                after: Duration::from_secs(1)
            },
            Effect::Verify(v("3.5.16")),
        ]
    );
    assert_eq!(t, Turn::idle(v("3.5.16")));
    // Still failing with the turn back: rolled back then, with the turn held.
    let again = run(
        &held.turn,
        vec![
            Event::Released,
            Event::TurnAcquired,
            Event::VerifyFailed("exited (code 1)".into()),
        ],
    );
    assert_eq!(again.1.last(), Some(&Effect::StopEtcd));
    assert!(again.0.rollback);
    // A restart while holding queues for the turn again; `current` runs meanwhile.
    let r = recover(&held.turn, &v("3.5.16"));
    assert_eq!(r.turn.phase, Phase::Holding);
    assert_eq!(
        r.effect,
        Effect::AcquireTurn {
            after: Duration::ZERO
        }
    );
}

#[test]
fn a_version_that_stays_unhealthy_is_rejected_only_when_the_old_one_comes_back_healthy() {
    let rolled = step(
        &at_verifying(),
        Event::StayedUnhealthy("not healthy within 8s".into()),
    );
    assert!(rolled.turn.rollback);
    assert_eq!(rolled.turn.fault, Fault::Unproven);
    let back = [Event::Stopped, Event::Switched, Event::Started];
    // The old version, under the same conditions, is healthy: the new one is to blame.
    let mut events = back.to_vec();
    events.push(Event::Verified);
    let (t, effects) = run(&rolled.turn, events);
    assert_eq!((t.phase, t.to.clone()), (Phase::Idle, None));
    match effects.last() {
        Some(Effect::Release {
            reject: Some((version, why)),
            refuse: None,
        }) => {
            assert_eq!(version, &v("3.5.16"));
            assert!(why.contains("not healthy within 8s"), "{why}");
            assert!(why.contains("3.4.23, rolled back"), "{why}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The old version stays unhealthy too: this member's conditions; nothing rejected,
    // the target kept, queued again with backoff.
    let mut events = back.to_vec();
    events.push(Event::StayedUnhealthy("not healthy within 8s".into()));
    events.push(Event::Released);
    let (t, effects) = run(&rolled.turn, events);
    assert_eq!(t.phase, Phase::Queued);
    assert_eq!(t.to, Some(v("3.5.16")));
    assert_eq!((t.rollback, t.fault, t.retries), (false, Fault::Version, 1));
    let why = t.last_error.clone().unwrap();
    assert!(why.contains("nothing is rejected"), "{why}");
    assert!(why.contains("network"), "{why}");
    assert_eq!(
        effects[effects.len() - 2..],
        [
            Effect::Release {
                reject: None,
                refuse: None
            },
            Effect::AcquireTurn {
                after: Duration::from_secs(1)
            },
        ]
    );
    // An old version that exits (rather than staying unhealthy) ends failed, still
    // without a verdict on the new one.
    let mut events = back.to_vec();
    events.push(Event::VerifyFailed("exited (code 1)".into()));
    let (t, effects) = run(&rolled.turn, events);
    assert_eq!(t.phase, Phase::Failed);
    assert!(matches!(
        effects.last(),
        Some(Effect::Release { reject: None, .. })
    ));
}

#[test]
fn a_version_that_exits_or_lies_about_its_version_is_rejected_without_a_trial_of_the_old_one() {
    let s = step(
        &at_verifying(),
        Event::VerifyFailed("reports 3.5.15 instead of 3.5.16".into()),
    );
    assert_eq!((s.turn.rollback, s.turn.fault), (true, Fault::Version));
    // Even if the old one then stays unhealthy, the version is still rejected.
    let (t, effects) = run(
        &s.turn,
        vec![
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::StayedUnhealthy("no leader".into()),
        ],
    );
    assert_eq!(t.phase, Phase::Failed);
    assert!(matches!(
        effects.last(),
        Some(Effect::Release {
            reject: Some(_),
            ..
        })
    ));
}

#[test]
fn the_old_version_staying_unhealthy_after_a_restore_requeues_without_failing() {
    let (restoring, _) = run(
        &at_stopping(),
        vec![
            Event::Stopped,
            Event::TurnLost,
            Event::Switched,
            Event::Started,
        ],
    );
    assert_eq!(restoring.phase, Phase::Restoring);
    let s = step(&restoring, Event::StayedUnhealthy("partitioned".into()));
    assert_eq!(
        (s.turn.phase, s.turn.to.clone()),
        (Phase::Queued, Some(v("3.5.16")))
    );
    assert!(matches!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    ));
}

#[test]
fn state_files_written_before_the_fault_field_still_load() {
    let mut json = serde_json::to_value(at_verifying()).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("fault");
    for (legacy, fault) in [(true, Fault::Member), (false, Fault::Version)] {
        obj.insert("member_fault".into(), legacy.into());
        let t: Turn = serde_json::from_value(serde_json::Value::Object(obj.clone())).unwrap();
        assert_eq!(t.fault, fault);
    }
    obj.remove("member_fault");
    let t: Turn = serde_json::from_value(serde_json::Value::Object(obj.clone())).unwrap();
    assert_eq!(t.fault, Fault::Version);
    let now = serde_json::to_string(&Turn {
        fault: Fault::Unproven,
        ..at_verifying()
    })
    .unwrap();
    assert!(now.contains("\"fault\":\"unproven\""), "{now}");
}

fn at_verifying() -> Turn {
    run(
        &staged(),
        vec![
            Event::TurnAcquired,
            Event::PreflightPassed,
            Event::BackupDone,
            Event::Stopped,
            Event::Switched,
            Event::Started,
        ],
    )
    .0
}

#[test]
fn failed_verify_rolls_back_and_rejects_the_version() {
    let (t, effects) = run(
        &at_verifying(),
        vec![
            Event::VerifyFailed("not healthy within 60s".into()),
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::Verified,
        ],
    );
    assert_eq!(
        effects,
        [
            Effect::StopEtcd,
            Effect::Switch(v("3.4.23")),
            Effect::StartEtcd,
            Effect::Verify(v("3.4.23")),
            Effect::Release {
                reject: Some((v("3.5.16"), "not healthy within 60s".into())),
                refuse: None
            },
        ]
    );
    assert_eq!(t.phase, Phase::Idle);
    assert_eq!(t.from, v("3.4.23"));
    assert_eq!(t.to, None);
}

#[test]
fn failed_start_rolls_back_too() {
    let mut t = at_verifying();
    t.phase = Phase::Starting;
    let s = step(&t, Event::StartFailed("exec format error".into()));
    assert!(s.turn.rollback);
    assert_eq!(s.turn.state_name(), "rolling-back");
    // etcd never started: the rollback begins at the switch back, not with a second stop.
    assert_eq!(s.effect, Effect::Switch(s.turn.from.clone()));
}

#[test]
fn rollback_that_fails_too_ends_failed_and_still_rejects() {
    let (t, effects) = run(
        &at_verifying(),
        vec![
            Event::VerifyFailed("crashed".into()),
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::VerifyFailed("old one crashes too".into()),
        ],
    );
    assert_eq!(t.phase, Phase::Failed);
    assert_released_last(&effects, Some((v("3.5.16"), "crashed".into())), None);
}

#[test]
fn shutdown_keeps_the_phase_for_recovery() {
    for phase in [
        Phase::Queued,
        Phase::Backup,
        Phase::Stopping,
        Phase::Verifying,
        Phase::Restoring,
    ] {
        let mut t = at_verifying();
        t.phase = phase;
        let s = step(&t, Event::Shutdown);
        assert_eq!(s.effect, Effect::Exit);
        assert_eq!(s.turn, t, "{phase:?}");
    }
}

#[test]
fn staging_the_running_version_or_during_a_turn_changes_nothing() {
    let idle = Turn::idle(v("3.4.23"));
    assert_eq!(step(&idle, Event::Staged(v("3.4.23"))).turn, idle);
    let busy = at_verifying();
    assert_eq!(step(&busy, Event::Staged(v("3.5.30"))).turn, busy);
}

#[test]
fn stale_events_are_ignored() {
    let idle = Turn::idle(v("3.4.23"));
    for e in [
        Event::Verified,
        Event::Stopped,
        Event::BackupDone,
        Event::TurnAcquired,
    ] {
        let s = step(&idle, e);
        assert_eq!((s.turn, s.effect), (idle.clone(), Effect::Nothing));
    }
}

#[test]
fn recovery_requeues_before_stop_and_finishes_the_swap_after() {
    let current = v("3.4.23");
    for phase in [
        Phase::Queued,
        Phase::Preflight,
        Phase::Backup,
        Phase::Stopping,
    ] {
        let mut t = staged();
        t.phase = phase;
        let s = recover(&t, &current);
        assert_eq!(s.turn.phase, Phase::Queued, "{phase:?}");
        assert_eq!(
            s.effect,
            Effect::AcquireTurn {
                after: Duration::ZERO
            }
        );
    }
    for phase in [Phase::Swapping, Phase::Starting, Phase::Verifying] {
        let mut t = at_verifying();
        t.phase = phase;
        let s = recover(&t, &current);
        assert_eq!(s.turn.phase, Phase::Swapping, "{phase:?}");
        assert_eq!(s.effect, Effect::Switch(v("3.5.16")));
    }
    // A rollback in progress is finished towards the old version.
    let mut t = at_verifying();
    t.rollback = true;
    t.phase = Phase::Stopping;
    assert_eq!(recover(&t, &current).effect, Effect::Switch(v("3.4.23")));
}

#[test]
fn recovery_while_restoring_puts_the_old_version_back_starts_and_verifies_it() {
    let restoring = step(&at_stopping(), Event::ColdCopyFailed("disk full".into())).turn;
    // Whatever `current` says now, the old version is the one to run.
    for current in [v("3.4.23"), v("3.5.16")] {
        let s = recover(&restoring, &current);
        assert_eq!(s.turn.phase, Phase::Restoring);
        assert_eq!(s.effect, Effect::Switch(v("3.4.23")));
        let (t, effects) = run(
            &s.turn,
            vec![Event::Switched, Event::Started, Event::Verified],
        );
        assert_eq!(
            effects,
            [
                Effect::StartEtcd,
                Effect::Verify(v("3.4.23")),
                Effect::Release {
                    reject: None,
                    refuse: None
                },
            ]
        );
        assert_eq!(t.phase, Phase::Queued);
        assert_eq!(t.from, v("3.4.23"));
    }
    // A switch that fails there ends failed, nothing rejected.
    let s = recover(&restoring, &v("3.4.23"));
    let failed = step(&s.turn, Event::SwitchFailed("read-only fs".into()));
    assert_eq!(failed.turn.phase, Phase::Failed);
    assert_eq!(
        failed.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
}

#[test]
fn turn_round_trips_through_json() {
    let t = at_verifying();
    let json = serde_json::to_string(&t).unwrap();
    assert!(json.contains("\"phase\":\"verifying\""), "{json}");
    assert_eq!(serde_json::from_str::<Turn>(&json).unwrap(), t);
}

#[test]
fn state_names_are_exactly_what_state_name_yields() {
    // A new phase fails to compile here until it is placed in `Phase::ALL`.
    let position = |p: Phase| match p {
        Phase::Idle => 0,
        Phase::Queued => 1,
        Phase::Preflight => 2,
        Phase::Backup => 3,
        Phase::Stopping => 4,
        Phase::Swapping => 5,
        Phase::Starting => 6,
        Phase::Verifying => 7,
        Phase::Soaking => 8,
        Phase::Restoring => 9,
        Phase::Failed => 10,
        Phase::Holding => 11,
    };
    for (i, phase) in Phase::ALL.into_iter().enumerate() {
        assert_eq!(position(phase), i, "{phase:?}");
    }
    let mut yielded: Vec<&str> = Vec::new();
    for phase in Phase::ALL {
        for rollback in [false, true] {
            let turn = Turn {
                phase,
                rollback,
                ..Turn::idle(v("3.4.23"))
            };
            let name = turn.state_name();
            assert!(STATE_NAMES.contains(&name), "{name} missing");
            if !yielded.contains(&name) {
                yielded.push(name);
            }
        }
    }
    let mut listed = STATE_NAMES.to_vec();
    listed.sort_unstable();
    listed.dedup();
    assert_eq!(listed.len(), STATE_NAMES.len(), "duplicates in STATE_NAMES");
    yielded.sort_unstable();
    assert_eq!(yielded, listed);
}

#[test]
fn refused_here_keeps_the_version_staged_and_rejects_nothing() {
    let idle = Turn::idle(v("3.4.23"));
    let s = step(&idle, Event::RefusedHere(v("3.5.30"), "--debug".into()));
    assert_eq!(s.turn.phase, Phase::Idle);
    assert_eq!(s.turn.to, Some(v("3.5.30")));
    assert_eq!(s.turn.last_error.as_deref(), Some("--debug"));
    assert_eq!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: Some((v("3.5.30"), "--debug".into())),
        }
    );
    // A restart recovers it as idle, the version still named.
    let r = recover(&s.turn, &v("3.4.23"));
    assert_eq!(r.effect, Effect::Nothing);
    assert_eq!(r.turn.to, Some(v("3.5.30")));
    // Staging it (again) clears the refusal and queues.
    let q = step(&s.turn, Event::Staged(v("3.5.30")));
    assert_eq!(q.turn.phase, Phase::Queued);
    assert_eq!(q.turn.last_error, None);
}

#[test]
fn failed_before_the_turn_rejects_the_version_for_the_cluster() {
    let idle = Turn::idle(v("3.5.16"));
    let s = step(
        &idle,
        Event::FailedBeforeTurn(v("3.5.30"), "rehearsal: exit 1".into()),
    );
    assert_eq!(s.turn.phase, Phase::Idle);
    assert_eq!(s.turn.to, None);
    assert_eq!(
        s.effect,
        Effect::Release {
            reject: Some((v("3.5.30"), "rehearsal: exit 1".into())),
            refuse: None,
        }
    );
    // Mid-turn, a vetting outcome is stale and ignored.
    let busy = at_verifying();
    assert_eq!(
        step(&busy, Event::RefusedHere(v("3.5.30"), "x".into())).turn,
        busy
    );
}

#[test]
fn a_usage_error_rolls_back_as_the_members_fault() {
    let s = step(&at_verifying(), Event::Misconfigured("exit code 2".into()));
    assert!(s.turn.rollback && s.turn.fault == Fault::Member);
    assert_eq!(s.effect, Effect::StopEtcd);
    let (back, effects) = run(
        &s.turn,
        vec![
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::Verified,
        ],
    );
    assert_eq!(back.phase, Phase::Idle);
    assert_eq!(back.fault, Fault::Version);
    assert_eq!(back.to, Some(v("3.5.16")), "kept for after the fix");
    assert_released_last(&effects, None, Some((v("3.5.16"), "exit code 2".into())));
    // A failing rollback after a usage error still rejects nothing.
    let s = step(&at_verifying(), Event::Misconfigured("exit code 2".into()));
    let (failed, effects) = run(
        &s.turn,
        vec![Event::Stopped, Event::SwitchFailed("io".into())],
    );
    assert_eq!(failed.phase, Phase::Failed);
    assert!(matches!(
        effects.last(),
        Some(Effect::Release { reject: None, .. })
    ));
}

#[test]
fn vetting_again_at_preflight_can_refuse_or_reject_with_the_turn_given_back() {
    let pre = step(&staged(), Event::TurnAcquired).turn;
    assert_eq!(pre.phase, Phase::Preflight);
    let s = step(&pre, Event::RefusedHere(v("3.5.16"), "--debug".into()));
    assert_eq!(
        (s.turn.phase, s.turn.to.clone()),
        (Phase::Idle, Some(v("3.5.16")))
    );
    assert!(matches!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: Some(_)
        }
    ));
    let s = step(&pre, Event::FailedBeforeTurn(v("3.5.16"), "crash".into()));
    assert_eq!((s.turn.phase, s.turn.to.clone()), (Phase::Idle, None));
    assert!(matches!(
        s.effect,
        Effect::Release {
            reject: Some(_),
            refuse: None
        }
    ));
}

#[test]
fn a_drop_while_holding_keeps_queueing_for_the_held_versions_verify() {
    // Found by prop_machine_with_crashes_keeps_its_invariants: a drop arriving while a
    // held member queued turned its AcquireTurn into Nothing, so the new version stayed
    // unverified for good.
    let holding = Turn {
        phase: Phase::Holding,
        to: Some(v("3.5.16")),
        retries: 1,
        ..Turn::idle(v("3.5.15"))
    };
    let s = step(&holding, Event::Staged(v("3.5.17")));
    assert_eq!(s.turn, holding);
    assert!(matches!(s.effect, Effect::AcquireTurn { .. }), "{s:?}");
}

#[test]
fn a_member_down_reported_at_a_rollbacks_stop_is_ignored_and_the_rollback_goes_on() {
    // Only a forward stop is preceded by the last look at the members: a PreflightWait now
    // is stale, and requeueing would drop the rollback and give the turn back.
    let mut t = at_stopping();
    t.rollback = true;
    assert_ignored(&t, Event::PreflightWait("member m2 went down".into()));
}

#[test]
fn the_old_version_failing_to_start_during_a_rollback_ends_failed_and_still_rejects() {
    let (t, effects) = run(
        &at_verifying(),
        vec![
            Event::VerifyFailed("crashed".into()),
            Event::Stopped,
            Event::Switched,
            Event::StartFailed("old one does not start".into()),
        ],
    );
    assert_eq!(t.phase, Phase::Failed);
    assert_eq!(
        t.last_error.as_deref(),
        Some("rollback failed: old one does not start")
    );
    assert_released_last(&effects, Some((v("3.5.16"), "crashed".into())), None);
}

#[test]
fn staging_a_new_version_after_a_failed_turn_starts_afresh_with_no_retries_and_no_blame() {
    let mut t = staged();
    t.phase = Phase::Failed;
    t.retries = 4;
    t.fault = Fault::Member;
    t.last_error = Some("rollback failed: old one crashes too".into());
    let s = step(&t, Event::Staged(v("3.5.17")));
    assert_eq!(
        (s.turn.phase, s.turn.to),
        (Phase::Queued, Some(v("3.5.17")))
    );
    assert_eq!(
        (s.turn.retries, s.turn.fault, s.turn.last_error),
        (0, Fault::Version, None)
    );
}

#[test]
fn a_refusal_here_after_a_failed_turn_records_why_and_clears_retries_and_blame() {
    let mut t = staged();
    t.phase = Phase::Failed;
    t.retries = 3;
    t.fault = Fault::Member;
    let s = step(&t, Event::RefusedHere(v("3.5.16"), "flag --x".into()));
    assert_eq!(
        (s.turn.phase, s.turn.retries, s.turn.fault),
        (Phase::Idle, 0, Fault::Version)
    );
    assert_eq!(s.turn.last_error.as_deref(), Some("flag --x"));
}

#[test]
fn a_failure_before_the_turn_after_a_failed_turn_records_why_and_clears_retries_and_blame() {
    let mut t = staged();
    t.phase = Phase::Failed;
    t.retries = 3;
    t.fault = Fault::Unproven;
    t.last_error = Some("rollback failed: earlier".into());
    let s = step(
        &t,
        Event::FailedBeforeTurn(v("3.5.16"), "rehearsal crashed".into()),
    );
    assert_eq!(
        (s.turn.phase, s.turn.retries, s.turn.fault),
        (Phase::Idle, 0, Fault::Version)
    );
    assert_eq!(s.turn.last_error.as_deref(), Some("rehearsal crashed"));
}

#[test]
fn a_path_rule_refusal_at_preflight_records_why() {
    let (t, _) = run(&staged(), vec![Event::TurnAcquired]);
    let s = step(&t, Event::PreflightRefused("skips a minor".into()));
    assert_eq!(s.turn.last_error.as_deref(), Some("skips a minor"));
}

#[test]
fn a_turn_lost_with_etcd_stopped_records_that_the_old_version_is_being_restored() {
    let mut t = at_verifying();
    t.phase = Phase::Starting;
    let s = step(&t, Event::TurnLost);
    assert_eq!(s.turn.phase, Phase::Restoring);
    assert_eq!(
        s.turn.last_error.as_deref(),
        Some("lost the upgrade turn while etcd was stopped; restoring 3.4.23")
    );
}

#[test]
fn a_release_while_queued_with_nothing_staged_queues_for_no_turn() {
    let mut t = staged();
    t.to = None;
    assert_ignored(&t, Event::Released);
}

#[test]
fn a_failed_forward_switch_records_why_while_the_old_version_is_restored() {
    let mut t = at_verifying();
    t.phase = Phase::Swapping;
    let s = step(&t, Event::SwitchFailed("read-only file system".into()));
    assert_eq!(s.turn.phase, Phase::Restoring);
    assert_eq!(
        s.turn.last_error.as_deref(),
        Some("switching `current` failed: read-only file system")
    );
}

#[test]
fn a_new_version_that_never_starts_is_rejected_with_its_start_error() {
    let mut t = at_verifying();
    t.phase = Phase::Starting;
    let (t, effects) = run(
        &t,
        vec![
            Event::StartFailed("exec format error".into()),
            Event::Switched,
            Event::Started,
            Event::Verified,
        ],
    );
    assert_eq!(t.phase, Phase::Idle);
    assert_released_last(
        &effects,
        Some((v("3.5.16"), "exec format error".into())),
        None,
    );
}

#[test]
fn a_finished_rollback_for_the_members_fault_leaves_the_turn_idle_and_no_longer_rolling_back() {
    let (t, effects) = run(
        &at_verifying(),
        vec![
            Event::Misconfigured("flag provided but not defined: -x".into()),
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::Verified,
        ],
    );
    assert!(matches!(
        effects.last(),
        Some(Effect::Release {
            refuse: Some(_),
            ..
        })
    ));
    assert_eq!(
        (t.phase, t.rollback, t.fault),
        (Phase::Idle, false, Fault::Version)
    );
}

#[test]
fn a_rollback_that_fails_too_records_why_the_old_version_failed() {
    let (t, _) = run(
        &at_verifying(),
        vec![
            Event::VerifyFailed("crashed".into()),
            Event::Stopped,
            Event::Switched,
            Event::Started,
            Event::VerifyFailed("old one crashes too".into()),
        ],
    );
    assert_eq!(
        t.last_error.as_deref(),
        Some("rollback failed: old one crashes too")
    );
}

#[test]
fn holding_after_a_turn_lost_at_a_rollbacks_stop_clears_the_blame_counts_a_retry_and_says_why() {
    let (t, _) = run(
        &at_verifying(),
        vec![Event::StayedUnhealthy("not caught up".into())],
    );
    assert_eq!((t.fault, t.retries), (Fault::Unproven, 0));
    let s = step(&t, Event::TurnLost);
    assert_eq!(s.turn.phase, Phase::Holding);
    assert_eq!((s.turn.fault, s.turn.retries), (Fault::Version, 1));
    let why = s.turn.last_error.unwrap_or_default();
    assert!(
        why.starts_with("lost the upgrade turn while etcd 3.5.16 ran unverified (not caught up)"),
        "{why}"
    );
}

#[test]
fn recovery_when_idle_takes_the_version_current_points_at_as_the_known_good_one() {
    let s = recover(&Turn::idle(v("3.4.23")), &v("3.5.16"));
    assert_eq!(s.turn.from, v("3.5.16"));
    assert_eq!(s.effect, Effect::Nothing);
}
