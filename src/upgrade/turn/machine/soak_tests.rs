//! The soak's transitions: entered only forward after a verify, finished like a verify,
//! and a failure in it rolls back and rejects the version.

use super::*;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn at_verifying() -> Turn {
    let mut t = Turn::idle(v("3.4.23"));
    for e in [
        Event::Staged(v("3.5.16")),
        Event::TurnAcquired,
        Event::PreflightPassed,
        Event::BackupDone,
        Event::Stopped,
        Event::Switched,
        Event::Started,
    ] {
        t = step(&t, e).turn;
    }
    assert_eq!(t.phase, Phase::Verifying);
    t
}

fn soaking() -> Turn {
    let s = step(&at_verifying(), Event::SoakFor(Duration::from_secs(30)));
    assert_eq!(s.effect, Effect::Soak(Duration::from_secs(30)));
    assert_eq!(s.turn.phase, Phase::Soaking);
    assert_eq!(s.turn.state_name(), "soaking");
    assert!(!s.turn.rollback);
    s.turn
}

#[test]
fn a_passed_soak_finishes_the_turn_as_a_verify_does() {
    let after_soak = step(&soaking(), Event::Verified);
    let without_soak = step(&at_verifying(), Event::Verified);
    assert_eq!(after_soak, without_soak);
    assert_eq!(after_soak.turn, Turn::idle(v("3.5.16")));
    assert_eq!(
        after_soak.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
}

#[test]
fn a_failed_soak_rolls_back_and_rejects_the_version() {
    let s = step(
        &soaking(),
        Event::SoakFailed("etcd exited (signal 9)".into()),
    );
    assert_eq!(s.effect, Effect::StopEtcd);
    assert!(s.turn.rollback);
    assert_eq!(s.turn.state_name(), "rolling-back");
    let mut t = s.turn;
    let mut effects = Vec::new();
    for e in [
        Event::Stopped,
        Event::Switched,
        Event::Started,
        Event::Verified,
    ] {
        let s = step(&t, e);
        t = s.turn;
        effects.push(s.effect);
    }
    assert_eq!(
        effects,
        [
            Effect::Switch(v("3.4.23")),
            Effect::StartEtcd,
            Effect::Verify(v("3.4.23")),
            Effect::Release {
                reject: Some((
                    v("3.5.16"),
                    "failed during the soak: etcd exited (signal 9); 3.4.23, rolled back \
                     under the same conditions, became healthy"
                        .into()
                )),
                refuse: None
            },
        ]
    );
    assert_eq!(
        t,
        Turn {
            to: None,
            last_error: Some("failed during the soak: etcd exited (signal 9)".into()),
            ..Turn::idle(v("3.4.23"))
        }
    );
}

#[test]
fn no_soak_while_rolling_back_or_outside_verifying() {
    let rolling_back = step(&at_verifying(), Event::VerifyFailed("x".into())).turn;
    let mut t = rolling_back;
    for e in [Event::Stopped, Event::Switched, Event::Started] {
        t = step(&t, e).turn;
    }
    assert!(t.rollback && t.phase == Phase::Verifying);
    let s = step(&t, Event::SoakFor(Duration::from_secs(5)));
    assert_eq!((s.turn, s.effect), (t, Effect::Nothing));
    for t in [
        Turn::idle(v("3.4.23")),
        at_verifying().with(Phase::Starting),
    ] {
        let s = step(&t, Event::SoakFor(Duration::from_secs(5)));
        assert_eq!(s.effect, Effect::Nothing);
        assert_eq!(s.turn, t);
        assert_eq!(step(&t, Event::SoakFailed("x".into())).turn, t);
    }
}

#[test]
fn soaking_exits_on_shutdown_and_keeps_its_state_for_recovery() {
    let t = soaking();
    let s = step(&t, Event::Shutdown);
    assert_eq!((s.turn, s.effect), (t, Effect::Exit));
}

#[test]
fn recovery_from_a_soak_drives_the_swap_again() {
    let s = recover(&soaking(), &v("3.5.16"));
    assert_eq!(s.effect, Effect::Switch(v("3.5.16")));
    assert_eq!(s.turn.phase, Phase::Swapping);
    assert!(!s.turn.rollback);
}

#[test]
fn the_soaking_phase_persists_and_old_state_files_still_read() {
    let json = serde_json::to_string(&soaking()).unwrap();
    assert!(json.contains("\"phase\":\"soaking\""), "{json}");
    assert_eq!(serde_json::from_str::<Turn>(&json).unwrap(), soaking());
    // A state.json of the release before soaks.
    let old = r#"{"phase":"verifying","from":"3.4.23","to":"3.5.16","rollback":false,"last_error":null,"retries":0}"#;
    assert_eq!(serde_json::from_str::<Turn>(old).unwrap(), at_verifying());
}

#[test]
fn a_soak_failure_the_old_version_shares_rejects_nothing() {
    // Cut off from its peers while soaking: the old version, rolled back, is no healthier,
    // so the member is to blame and the version stays staged.
    let mut t = step(&soaking(), Event::SoakFailed("unhealthy for 3s".into())).turn;
    let mut effects = Vec::new();
    for e in [
        Event::Stopped,
        Event::Switched,
        Event::Started,
        Event::StayedUnhealthy("not healthy in 30s".into()),
    ] {
        let s = step(&t, e);
        t = s.turn;
        effects.push(s.effect);
    }
    assert!(
        effects.iter().all(|e| !matches!(
            e,
            Effect::Release {
                reject: Some(_),
                ..
            }
        )),
        "{effects:?}"
    );
    assert_eq!(t.to, Some(v("3.5.16")), "{t:?}");
}

/// A lost turn ends the soak without a stop: the verified new version keeps running
/// (holding), the turn is given back, and the next turn verifies it again, which soaks it
/// again, before anything else.
#[test]
fn a_turn_lost_during_the_soak_holds_the_new_version_and_verifies_it_again_next_turn() {
    let s = step(&soaking(), Event::TurnLost);
    assert_eq!(s.turn.phase, Phase::Holding);
    assert_eq!(s.turn.to, Some(v("3.5.16")));
    assert!(!s.turn.rollback);
    assert_eq!(
        s.effect,
        Effect::Release {
            reject: None,
            refuse: None
        }
    );
    assert!(
        s.turn
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("soak was cut short")),
        "{:?}",
        s.turn
    );
    let queued = step(&s.turn, Event::Released);
    assert!(matches!(queued.effect, Effect::AcquireTurn { .. }));
    let next = step(&queued.turn, Event::TurnAcquired);
    assert_eq!(next.effect, Effect::Verify(v("3.5.16")));
    assert_eq!(next.turn.phase, Phase::Verifying);
    // The verify hands a soak again (the driver does so for a forward verify).
    let again = step(&next.turn, Event::SoakFor(Duration::from_secs(30)));
    assert_eq!(again.effect, Effect::Soak(Duration::from_secs(30)));
}
