//! The downgrade rules over plain facts.

use proptest::prelude::*;

use super::*;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn m(name: &str, server: &str, storage: Option<(u64, u64)>, staged: Option<&str>) -> MemberFacts {
    MemberFacts {
        name: name.into(),
        server: Some(v(server)),
        storage,
        healthy: true,
        staged: staged.map(v),
    }
}

/// A healthy 3.7.4 cluster with 3.6.17 staged everywhere, nothing enabled.
fn on_37() -> DowngradeFacts {
    DowngradeFacts {
        cluster_version: Some(v("3.7.0")),
        members: ["m1", "m2", "m3"]
            .iter()
            .map(|n| m(n, "3.7.4", Some((3, 7)), Some("3.6.17")))
            .collect(),
        etcd: InEtcd::Off,
        record: None,
        turn_holder: None,
    }
}

fn record(state: RecordState) -> DowngradeRecord {
    DowngradeRecord {
        schema: 1,
        target: v("3.6.17"),
        from: v("3.7.4"),
        state,
        by: "op@h".into(),
        time: String::new(),
        reason: (state == RecordState::Cancelled).then(|| "3.6.17 failed on m2".into()),
    }
}

/// Enabled in etcd, cluster version moved, storage migrated.
fn enabled() -> DowngradeFacts {
    let mut f = on_37();
    f.cluster_version = Some(v("3.6.0"));
    f.etcd = InEtcd::Enabled((3, 6));
    f.record = Some(record(RecordState::Enabled));
    for m in &mut f.members {
        m.storage = Some((3, 6));
    }
    f
}

#[test]
fn a_healthy_cluster_with_the_target_staged_everywhere_may_start() {
    assert_eq!(may_start(&on_37(), &v("3.6.17")), Ok(()));
}

#[test]
fn two_minors_down_or_not_lower_is_refused() {
    let f = on_37();
    assert!(matches!(
        may_start(&f, &v("3.5.36")),
        Err(StartRefusal::TooFar { .. })
    ));
    assert!(matches!(
        may_start(&f, &v("3.7.1")),
        Err(StartRefusal::NotLower { .. })
    ));
    let msg = may_start(&f, &v("3.5.36")).unwrap_err().to_string();
    assert!(msg.contains("downgrade to 3.6 first"), "{msg}");
}

#[test]
fn etcds_placeholder_cluster_version_is_undecided_not_a_refusal_of_the_target() {
    // A new cluster answers 3.0.0 until its leader decides: seen in CI, where the command
    // said "3.6.17 is not below the cluster version 3.0.0".
    let mut f = on_37();
    f.cluster_version = Some(v("3.0.0"));
    let refusal = may_start(&f, &v("3.6.17")).unwrap_err();
    assert_eq!(refusal, StartRefusal::Undecided(v("3.0.0")));
    assert!(refusal.to_string().contains("not decided yet"), "{refusal}");
    // One minor below the lowest member is a real cluster version (mid-upgrade, or
    // mid-downgrade with members still on the newer minor): judged as such.
    f.cluster_version = Some(v("3.6.0"));
    assert_ne!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::Undecided(v("3.6.0")))
    );
    f.members[0].server = Some(v("3.6.17"));
    f.cluster_version = Some(v("3.5.0"));
    assert_ne!(
        may_start(&f, &v("3.5.36")),
        Err(StartRefusal::Undecided(v("3.5.0")))
    );
    // Two below the lowest is the placeholder's shape again.
    f.cluster_version = Some(v("3.4.0"));
    assert_eq!(
        may_start(&f, &v("3.5.36")),
        Err(StartRefusal::Undecided(v("3.4.0")))
    );
}

#[test]
fn a_35_cluster_has_no_downgrade() {
    let mut f = on_37();
    f.cluster_version = Some(v("3.5.0"));
    for m in &mut f.members {
        m.server = Some(v("3.5.36"));
    }
    assert!(matches!(
        may_start(&f, &v("3.4.23")),
        Err(StartRefusal::TooOld(_))
    ));
}

#[test]
fn the_floor_of_36_to_35_is_the_patch_the_36_upgrade_guide_names() {
    let mut f = on_37();
    f.cluster_version = Some(v("3.6.0"));
    for m in &mut f.members {
        m.server = Some(v("3.6.17"));
        m.staged = Some(v("3.5.30"));
    }
    let err = may_start(&f, &v("3.5.30")).unwrap_err();
    assert!(
        matches!(&err, StartRefusal::BelowFloor { minimum, .. } if *minimum == v("3.5.32")),
        "{err:?}"
    );
    for m in &mut f.members {
        m.staged = Some(v("3.5.36"));
    }
    assert_eq!(may_start(&f, &v("3.5.36")), Ok(()));
    // 3.7 -> 3.6: 3.6.11 (the 3.7 upgrade guide's floor).
    let f = on_37();
    assert!(matches!(
        may_start(&f, &v("3.6.10")),
        Err(StartRefusal::BelowFloor { .. })
    ));
}

#[test]
fn unhealthy_mid_upgrade_held_or_not_staged_clusters_are_refused() {
    let mut f = on_37();
    f.members[1].healthy = false;
    assert_eq!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::Unhealthy(vec!["m2".into()]))
    );
    let mut f = on_37();
    f.cluster_version = Some(v("3.6.0"));
    f.members[0].server = Some(v("3.6.17"));
    // Cluster 3.6 with members on 3.7: an upgrade under way; target 3.5 is not the point.
    let mut g = on_37();
    g.members[0].server = Some(v("3.6.17"));
    assert!(matches!(
        may_start(&g, &v("3.6.17")),
        Err(StartRefusal::MidUpgrade(_))
    ));
    let mut f = on_37();
    f.turn_holder = Some("m3".into());
    assert_eq!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::TurnHeld("m3".into()))
    );
    let mut f = on_37();
    f.members[2].staged = None;
    assert_eq!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::NotStaged(vec!["m3".into()]))
    );
    let mut f = on_37();
    f.members[0].server = None;
    assert!(matches!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::Unknown(_))
    ));
}

#[test]
fn running_it_again_resumes_an_enabled_downgrade_but_not_another() {
    let mut f = enabled();
    f.members[0].server = Some(v("3.6.17"));
    f.members[0].staged = None;
    f.turn_holder = Some("m2".into());
    // m2 is down in its turn: following goes on all the same.
    f.members[1].server = None;
    f.members[1].healthy = false;
    assert_eq!(may_start(&f, &v("3.6.17")), Ok(()));
    let mut f = on_37();
    f.etcd = InEtcd::Enabled((3, 5));
    assert_eq!(
        may_start(&f, &v("3.6.17")),
        Err(StartRefusal::OtherDowngrade((3, 5)))
    );
}

#[test]
fn an_older_minor_without_an_enabled_downgrade_is_parked_with_the_command() {
    let Gate::Park(why) = gate(&on_37(), &v("3.7.4"), &v("3.6.17")) else {
        panic!("not parked");
    };
    assert!(why.contains("etcd-supervisor downgrade 3.6.17"), "{why}");
}

#[test]
fn patch_changes_and_upgrades_are_not_the_gates_business() {
    let f = on_37();
    assert_eq!(gate(&f, &v("3.7.4"), &v("3.7.1")), Gate::NotADowngrade);
    assert_eq!(gate(&f, &v("3.6.17"), &v("3.7.4")), Gate::NotADowngrade);
}

#[test]
fn an_enabled_downgrade_goes_once_the_cluster_and_storage_versions_moved() {
    assert_eq!(gate(&enabled(), &v("3.7.4"), &v("3.6.17")), Gate::Go);
    let mut f = enabled();
    f.members[2].storage = Some((3, 7));
    assert!(matches!(gate(&f, &v("3.7.4"), &v("3.6.17")), Gate::Park(w) if w.contains("m3: 3.7")));
    let mut f = enabled();
    f.cluster_version = Some(v("3.7.0"));
    assert!(
        matches!(gate(&f, &v("3.7.4"), &v("3.6.17")), Gate::Park(w) if w.contains("cluster version"))
    );
    // A downgraded 3.5 member reports no storage version: not in the way.
    let mut f = enabled();
    f.members[0].storage = None;
    assert_eq!(gate(&f, &v("3.7.4"), &v("3.6.17")), Gate::Go);
}

#[test]
fn a_rollback_before_the_cluster_version_moved_stays_a_plain_swap() {
    let mut f = on_37();
    f.cluster_version = Some(v("3.6.0"));
    f.members[1].server = Some(v("3.6.17"));
    assert_eq!(gate(&f, &v("3.7.4"), &v("3.6.17")), Gate::Go);
    // ... but not after a cancelled downgrade to that minor.
    f.record = Some(record(RecordState::Cancelled));
    assert!(
        matches!(gate(&f, &v("3.7.4"), &v("3.6.17")), Gate::Park(w) if w.contains("cancelled"))
    );
}

#[test]
fn after_a_cancel_downgraded_members_go_back_to_from() {
    let r = record(RecordState::Cancelled);
    assert_eq!(go_back(Some(&r), &v("3.6.17")), Some(v("3.7.4")));
    assert_eq!(go_back(Some(&r), &v("3.7.4")), None);
    assert_eq!(
        go_back(Some(&record(RecordState::Enabled)), &v("3.6.17")),
        None
    );
    assert_eq!(go_back(None, &v("3.6.17")), None);
}

#[test]
fn finished_when_every_member_is_on_the_target_and_etcd_ended_it() {
    let mut f = enabled();
    assert!(!finished(&f));
    for m in &mut f.members {
        m.server = Some(v("3.6.17"));
    }
    assert!(!finished(&f), "etcd still has it enabled");
    f.etcd = InEtcd::Off;
    assert!(finished(&f));
    let line = progress(&f).unwrap();
    assert!(line.contains("finished") && line.contains("3/3"), "{line}");
}

#[test]
fn progress_names_the_target_who_is_done_and_the_storage_versions() {
    let mut f = enabled();
    f.members[0].server = Some(v("3.6.17"));
    let line = progress(&f).unwrap();
    assert_eq!(
        line,
        "downgrade to 3.6.17: enabled in etcd; done 1/3 (m1); storage version: m1 3.6, m2 3.6, m3 3.6"
    );
    assert_eq!(progress(&on_37()), None);
}

#[test]
fn the_record_reads_back() {
    let r = record(RecordState::Cancelled);
    assert_eq!(DowngradeRecord::decode(r.encode().as_bytes()).unwrap(), r);
    assert!(r.encode().contains("\"state\":\"cancelled\""));
}

fn version() -> impl Strategy<Value = Version> {
    (3u64..4, 4u64..8, 0u64..40).prop_map(|(a, b, c)| v(&format!("{a}.{b}.{c}")))
}

proptest! {
    /// Never a swap to a lower minor below the cluster version without etcd's downgrade
    /// enabled to that very minor, whatever else the facts say.
    #[test]
    fn no_lower_minor_below_the_cluster_version_without_an_enabled_downgrade(
        running in version(),
        target in version(),
        cluster_minor in 4u64..8,
        etcd in prop_oneof![Just(InEtcd::Unknown), Just(InEtcd::Off), (4u64..8).prop_map(|m| InEtcd::Enabled((3, m)))],
        with_record in any::<bool>(),
    ) {
        let mut f = on_37();
        f.cluster_version = Some(v(&format!("3.{cluster_minor}.0")));
        f.etcd = etcd.clone();
        f.record = with_record.then(|| record(RecordState::Enabled));
        let g = gate(&f, &running, &target);
        if g == Gate::Go {
            prop_assert!(target.minor_version() < running.minor_version());
            let below_cluster = target.minor < cluster_minor;
            prop_assert!(!below_cluster || etcd == InEtcd::Enabled(target.minor_version()));
        }
    }

    /// `may_start` only says yes to exactly one minor down from 3.6 on, at or above the floor.
    #[test]
    fn may_start_only_one_minor_down(target in version(), cluster_minor in 4u64..8) {
        let mut f = on_37();
        f.cluster_version = Some(v(&format!("3.{cluster_minor}.0")));
        for m in &mut f.members {
            m.server = Some(v(&format!("3.{cluster_minor}.3")));
            m.staged = Some(target.clone());
        }
        if may_start(&f, &target).is_ok() {
            prop_assert_eq!(target.minor + 1, cluster_minor);
            prop_assert!(cluster_minor >= 6);
        }
    }
}
