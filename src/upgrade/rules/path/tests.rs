use super::*;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn mv(name: &str, version: &str) -> MemberVersion {
    MemberVersion {
        name: name.to_owned(),
        version: v(version),
    }
}

/// One row: the situation preflight saw, and the decision expected.
struct Case {
    name: &'static str,
    running: &'static str,
    target: &'static str,
    cluster: Option<&'static str>,
    peers: &'static [(&'static str, Option<&'static str>)],
    allow: &'static [&'static str],
    /// (version, member, reason)
    rejected: &'static [(&'static str, &'static str, &'static str)],
    expect: PathDecision,
}

/// A steady 3.5 cluster with this member on 3.5.16; rows override what they test.
fn base() -> Case {
    Case {
        name: "",
        running: "3.5.16",
        target: "3.5.16",
        cluster: Some("3.5.0"),
        peers: ON_35,
        allow: &[],
        rejected: &[],
        expect: PathDecision::AlreadyRunning,
    }
}

const ON_34: &[(&str, Option<&str>)] = &[("m2", Some("3.4.23")), ("m3", Some("3.4.23"))];
const ON_35: &[(&str, Option<&str>)] = &[("m2", Some("3.5.16")), ("m3", Some("3.5.16"))];
/// On 3.5.32, the floor etcd's guide sets for the upgrade to 3.6.
const ON_35_FLOOR: &[(&str, Option<&str>)] = &[("m2", Some("3.5.32")), ("m3", Some("3.5.32"))];
const MIXED: &[(&str, Option<&str>)] = &[("m2", Some("3.5.16")), ("m3", Some("3.4.23"))];
const BROKEN_RELEASE: &str = "etcd did not become healthy within 30s";

impl Case {
    fn input(&self) -> PathInput {
        let mut input = PathInput::new(v(self.running), v(self.target));
        input.cluster_version = self.cluster.map(v);
        input.peers = self
            .peers
            .iter()
            .map(|(name, version)| PeerVersion {
                name: (*name).to_owned(),
                version: version.map(v),
            })
            .collect();
        input.allow_known_bad = self.allow.iter().copied().map(v).collect();
        input.rejected = self
            .rejected
            .iter()
            .map(|(version, member, reason)| Rejection {
                version: v(version),
                member: (*member).to_owned(),
                reason: (*reason).to_owned(),
            })
            .collect();
        input
    }
}

fn proceed(step: PathStep) -> PathDecision {
    PathDecision::Proceed(step)
}

fn refuse(reason: RefuseReason) -> PathDecision {
    PathDecision::Refuse(reason)
}

fn wait(reason: WaitReason) -> PathDecision {
    PathDecision::Wait(reason)
}

fn refused_as_known_bad(version: &str) -> PathDecision {
    refuse(RefuseReason::KnownBad {
        version: v(version),
        bad: release_facts::known_bad(&v(version)).unwrap(),
    })
}

fn rejected(version: &str) -> PathDecision {
    refuse(RefuseReason::Rejected {
        version: v(version),
        member: "m2".to_owned(),
        reason: BROKEN_RELEASE.to_owned(),
    })
}

fn cases() -> Vec<Case> {
    vec![
        // --- Proceed ---
        Case {
            name: "patch up",
            target: "3.5.17",
            expect: proceed(PathStep::PatchUpgrade),
            ..base()
        },
        Case {
            name: "patch down",
            running: "3.5.17",
            target: "3.5.16",
            expect: proceed(PathStep::PatchDowngrade),
            ..base()
        },
        Case {
            name: "patch down while the other members run a higher patch",
            running: "3.5.16",
            target: "3.5.10",
            peers: &[("m2", Some("3.5.30")), ("m3", Some("3.5.30"))],
            expect: proceed(PathStep::PatchDowngrade),
            ..base()
        },
        Case {
            name: "minor up by one, first member",
            running: "3.4.23",
            target: "3.5.16",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "minor up by one, mid-rollout (one member already on the target)",
            running: "3.4.23",
            target: "3.5.16",
            cluster: Some("3.4.0"),
            peers: MIXED,
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "minor up by one, last member (all others on the target)",
            running: "3.4.23",
            target: "3.5.16",
            cluster: Some("3.4.0"),
            peers: ON_35,
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "patch change on the new minor mid-rollout",
            running: "3.5.16",
            target: "3.5.17",
            cluster: Some("3.4.0"),
            peers: MIXED,
            expect: proceed(PathStep::PatchUpgrade),
            ..base()
        },
        Case {
            name: "rollback while the cluster version has not moved",
            running: "3.5.16",
            target: "3.4.23",
            cluster: Some("3.4.0"),
            peers: MIXED,
            expect: proceed(PathStep::Rollback),
            ..base()
        },
        Case {
            name: "rollback to another patch of the old minor",
            running: "3.5.16",
            target: "3.4.22",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: proceed(PathStep::Rollback),
            ..base()
        },
        Case {
            name: "pre-release target counts as its minor",
            running: "3.5.32",
            target: "3.6.0-rc.1",
            peers: ON_35_FLOOR,
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "pre-release to its release",
            running: "3.6.0-rc.1",
            target: "3.6.0",
            expect: proceed(PathStep::PatchUpgrade),
            ..base()
        },
        Case {
            name: "release back to its pre-release",
            running: "3.6.0",
            target: "3.6.0-rc.1",
            expect: proceed(PathStep::PatchDowngrade),
            ..base()
        },
        Case {
            name: "known-bad with --allow-known-bad naming it",
            running: "3.4.23",
            target: "3.5.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            allow: &["3.5.1"],
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "known-bad pre-release allowed by its exact version",
            running: "3.4.23",
            target: "3.5.0-rc.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            allow: &["3.5.0-rc.1"],
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "known-bad running version does not matter",
            running: "3.5.1",
            target: "3.5.16",
            expect: proceed(PathStep::PatchUpgrade),
            ..base()
        },
        Case {
            name: "a rejected pre-release does not reject its release",
            running: "3.5.32",
            target: "3.6.0",
            peers: ON_35_FLOOR,
            rejected: &[("3.6.0-rc.1", "m2", BROKEN_RELEASE)],
            expect: proceed(PathStep::MinorUpgrade),
            ..base()
        },
        Case {
            name: "a single-member cluster",
            target: "3.5.17",
            peers: &[],
            expect: proceed(PathStep::PatchUpgrade),
            ..base()
        },
        // --- AlreadyRunning ---
        Case {
            name: "equal version",
            expect: PathDecision::AlreadyRunning,
            ..base()
        },
        Case {
            name: "equal version needs no cluster information",
            cluster: None,
            peers: &[("m2", None), ("m3", None)],
            expect: PathDecision::AlreadyRunning,
            ..base()
        },
        Case {
            name: "equal version that is known-bad and rejected",
            running: "3.5.1",
            target: "3.5.1",
            rejected: &[("3.5.1", "m2", BROKEN_RELEASE)],
            expect: PathDecision::AlreadyRunning,
            ..base()
        },
        // --- Refuse: version arithmetic ---
        Case {
            name: "major change up",
            target: "4.0.0",
            expect: refuse(RefuseReason::MajorChange {
                from: v("3.5.16"),
                to: v("4.0.0"),
            }),
            ..base()
        },
        Case {
            name: "major change down",
            target: "2.3.8",
            expect: refuse(RefuseReason::MajorChange {
                from: v("3.5.16"),
                to: v("2.3.8"),
            }),
            ..base()
        },
        Case {
            name: "skip a minor",
            running: "3.4.23",
            target: "3.6.0",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: refuse(RefuseReason::SkipsMinor {
                from: v("3.4.23"),
                to: v("3.6.0"),
            }),
            ..base()
        },
        Case {
            name: "skip a minor, with a pre-release target",
            running: "3.4.23",
            target: "3.6.0-rc.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: refuse(RefuseReason::SkipsMinor {
                from: v("3.4.23"),
                to: v("3.6.0-rc.1"),
            }),
            ..base()
        },
        Case {
            name: "skip a minor is refused without waiting for the cluster version",
            running: "3.4.23",
            target: "3.6.0",
            cluster: None,
            peers: &[("m2", None)],
            expect: refuse(RefuseReason::SkipsMinor {
                from: v("3.4.23"),
                to: v("3.6.0"),
            }),
            ..base()
        },
        Case {
            name: "downgrade after the cluster version moved",
            target: "3.4.23",
            expect: refuse(RefuseReason::DowngradeBelowCluster {
                cluster: v("3.5.0"),
                to: v("3.4.23"),
            }),
            ..base()
        },
        Case {
            name: "downgrade two minors after the cluster version moved",
            running: "3.6.1",
            target: "3.4.23",
            cluster: Some("3.6.0"),
            peers: &[("m2", Some("3.6.1"))],
            expect: refuse(RefuseReason::DowngradeBelowCluster {
                cluster: v("3.6.0"),
                to: v("3.4.23"),
            }),
            ..base()
        },
        Case {
            name: "rollback by two minors with the cluster version unknown",
            running: "3.6.1",
            target: "3.4.23",
            cluster: None,
            expect: refuse(RefuseReason::RollbackTooFar {
                from: v("3.6.1"),
                to: v("3.4.23"),
            }),
            ..base()
        },
        Case {
            name: "another member two minors above the cluster version",
            running: "3.4.22",
            target: "3.4.23",
            cluster: Some("3.4.0"),
            peers: &[("m2", Some("3.6.0")), ("m3", Some("3.4.22"))],
            expect: refuse(RefuseReason::MembersTooFarAhead {
                cluster: v("3.4.0"),
                members: vec![mv("m2", "3.6.0")],
            }),
            ..base()
        },
        Case {
            name: "member too far ahead is refused even while another is unknown",
            running: "3.4.22",
            target: "3.4.23",
            cluster: Some("3.4.0"),
            peers: &[("m2", Some("3.6.0")), ("m3", None)],
            expect: refuse(RefuseReason::MembersTooFarAhead {
                cluster: v("3.4.0"),
                members: vec![mv("m2", "3.6.0")],
            }),
            ..base()
        },
        // --- Refuse: rejected and known-bad ---
        Case {
            name: "rejected in etcd",
            target: "3.5.17",
            rejected: &[("3.5.17", "m2", BROKEN_RELEASE)],
            expect: rejected("3.5.17"),
            ..base()
        },
        Case {
            name: "rejected in etcd, --allow-known-bad does not override",
            target: "3.5.17",
            allow: &["3.5.17"],
            rejected: &[("3.5.17", "m2", BROKEN_RELEASE)],
            expect: rejected("3.5.17"),
            ..base()
        },
        Case {
            name: "rejected and known-bad, allowed: the rejection still wins",
            running: "3.4.23",
            target: "3.5.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            allow: &["3.5.1"],
            rejected: &[("3.5.1", "m2", BROKEN_RELEASE)],
            expect: rejected("3.5.1"),
        },
        Case {
            name: "rejected is refused without waiting for the cluster version",
            target: "3.5.17",
            cluster: None,
            rejected: &[("3.5.17", "m2", BROKEN_RELEASE)],
            expect: rejected("3.5.17"),
            ..base()
        },
        Case {
            name: "known-bad",
            running: "3.4.23",
            target: "3.5.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: refused_as_known_bad("3.5.1"),
            ..base()
        },
        Case {
            name: "known-bad, --allow-known-bad names another version",
            running: "3.4.23",
            target: "3.5.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            allow: &["3.5.2"],
            expect: refused_as_known_bad("3.5.1"),
            ..base()
        },
        Case {
            name: "known-bad patch downgrade",
            target: "3.5.2",
            expect: refused_as_known_bad("3.5.2"),
            ..base()
        },
        Case {
            name: "pre-release of a known-bad release",
            running: "3.4.23",
            target: "3.5.0-rc.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            expect: refused_as_known_bad("3.5.0-rc.1"),
            ..base()
        },
        Case {
            name: "pre-release of a known-bad release, allowing the release is not enough",
            running: "3.4.23",
            target: "3.5.0-rc.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            allow: &["3.5.0"],
            expect: refused_as_known_bad("3.5.0-rc.1"),
            ..base()
        },
        Case {
            name: "known-bad is refused without waiting for the cluster version",
            running: "3.4.23",
            target: "3.5.1",
            cluster: None,
            peers: &[("m2", None)],
            expect: refused_as_known_bad("3.5.1"),
            ..base()
        },
        // --- Refuse: which reason wins ---
        Case {
            name: "skipping a minor beats rejected and known-bad",
            running: "3.3.27",
            target: "3.5.1",
            cluster: Some("3.3.0"),
            peers: &[],
            rejected: &[("3.5.1", "m2", BROKEN_RELEASE)],
            expect: refuse(RefuseReason::SkipsMinor {
                from: v("3.3.27"),
                to: v("3.5.1"),
            }),
            ..base()
        },
        Case {
            name: "downgrade below the cluster version beats known-bad",
            running: "3.6.0",
            target: "3.5.2",
            cluster: Some("3.6.0"),
            peers: &[("m2", Some("3.6.0"))],
            expect: refuse(RefuseReason::DowngradeBelowCluster {
                cluster: v("3.6.0"),
                to: v("3.5.2"),
            }),
            ..base()
        },
        Case {
            name: "rejected beats known-bad",
            running: "3.4.23",
            target: "3.5.1",
            cluster: Some("3.4.0"),
            peers: ON_34,
            rejected: &[("3.5.1", "m2", BROKEN_RELEASE)],
            expect: rejected("3.5.1"),
            ..base()
        },
        // --- Wait ---
        Case {
            name: "cluster version unknown",
            target: "3.5.17",
            cluster: None,
            expect: wait(WaitReason::ClusterVersionUnknown),
            ..base()
        },
        Case {
            name: "possible rollback with the cluster version unknown",
            running: "3.5.16",
            target: "3.4.23",
            cluster: None,
            peers: MIXED,
            expect: wait(WaitReason::ClusterVersionUnknown),
            ..base()
        },
        Case {
            name: "etcd's 3.0 placeholder before its first decision waits, not refuses a minor",
            running: "3.5.36",
            target: "3.6.17",
            cluster: Some("3.0.0"),
            peers: &[("m2", Some("3.5.36")), ("m3", Some("3.5.36"))],
            expect: wait(WaitReason::ClusterVersionUnknown),
            ..base()
        },
        Case {
            name: "the 3.0 placeholder on a 3.5 cluster waits, not refuses a patch",
            target: "3.5.17",
            cluster: Some("3.0.0"),
            expect: wait(WaitReason::ClusterVersionUnknown),
            ..base()
        },
        Case {
            name: "a cluster version one minor below this member is decided: a rollback proceeds",
            running: "3.5.16",
            target: "3.4.23",
            cluster: Some("3.4.0"),
            peers: MIXED,
            expect: PathDecision::Proceed(PathStep::Rollback),
            ..base()
        },
        Case {
            name: "cluster version unknown beats unknown members",
            target: "3.5.17",
            cluster: None,
            peers: &[("m2", None)],
            expect: wait(WaitReason::ClusterVersionUnknown),
            ..base()
        },
        Case {
            name: "a member's version unknown",
            target: "3.5.17",
            peers: &[("m2", None), ("m3", Some("3.5.16"))],
            expect: wait(WaitReason::MemberVersionsUnknown {
                members: vec!["m2".to_owned()],
            }),
            ..base()
        },
        Case {
            name: "every member's version unknown",
            target: "3.5.17",
            peers: &[("m2", None), ("m3", None)],
            expect: wait(WaitReason::MemberVersionsUnknown {
                members: vec!["m2".to_owned(), "m3".to_owned()],
            }),
            ..base()
        },
        Case {
            name: "a member below the cluster version (stale reading)",
            target: "3.5.17",
            peers: &[("m2", Some("3.4.23")), ("m3", Some("3.5.16"))],
            expect: wait(WaitReason::MembersBelowClusterVersion {
                cluster: v("3.5.0"),
                members: vec![mv("m2", "3.4.23")],
            }),
            ..base()
        },
        Case {
            name: "two minors above the cluster while this member is already ahead",
            running: "3.5.32",
            target: "3.6.0",
            cluster: Some("3.4.0"),
            peers: &[("m2", Some("3.5.32")), ("m3", Some("3.4.23"))],
            expect: wait(WaitReason::ClusterVersionBehind {
                cluster: v("3.4.0"),
                target: v("3.6.0"),
                lagging: vec![mv("m3", "3.4.23")],
            }),
            ..base()
        },
        Case {
            name: "every member on the next minor, cluster version about to move",
            running: "3.5.32",
            target: "3.6.0",
            cluster: Some("3.4.0"),
            peers: ON_35_FLOOR,
            expect: wait(WaitReason::ClusterVersionBehind {
                cluster: v("3.4.0"),
                target: v("3.6.0"),
                lagging: vec![],
            }),
            ..base()
        },
        Case {
            name: "patch on the old minor while others already run the new one",
            running: "3.4.22",
            target: "3.4.23",
            cluster: Some("3.4.0"),
            peers: MIXED,
            expect: wait(WaitReason::UpgradeInProgress {
                target: v("3.4.23"),
                ahead: vec![mv("m2", "3.5.16")],
            }),
            ..base()
        },
    ]
}

#[test]
fn decides_every_case() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = decide(&case.input());
        if got != case.expect {
            failures.push(format!(
                "{}:\n  expected {:?}\n       got {:?}",
                case.name, case.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn case_names_are_unique() {
    let mut names: Vec<&str> = cases().iter().map(|c| c.name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count);
}

#[test]
fn reasons_read_as_one_line() {
    for case in cases() {
        let text = match &case.expect {
            PathDecision::Wait(reason) => reason.to_string(),
            PathDecision::Refuse(reason) => reason.to_string(),
            PathDecision::Proceed(step) => step.to_string(),
            PathDecision::AlreadyRunning => continue,
        };
        assert!(
            !text.is_empty() && !text.contains('\n') && !text.contains("  "),
            "{}: {text:?}",
            case.name
        );
    }
}

/// The operator reads these; every variant is pinned here so wording changes are reviewed.
#[test]
fn tells_the_operator_what_happened_and_what_to_do() {
    let rows: Vec<(String, &str)> = vec![
        (
            RefuseReason::MajorChange {
                from: v("3.5.16"),
                to: v("4.0.0"),
            }
            .to_string(),
            "3.5.16 -> 4.0.0 changes the major version, which a rolling upgrade of etcd \
             cannot do; stage a 3.x release",
        ),
        (
            RefuseReason::SkipsMinor {
                from: v("3.4.23"),
                to: v("3.6.0"),
            }
            .to_string(),
            "3.4.23 -> 3.6.0 skips a minor version; upgrade every member to 3.5 first",
        ),
        (
            RefuseReason::DowngradeBelowCluster {
                cluster: v("3.5.0"),
                to: v("3.4.23"),
            }
            .to_string(),
            "the cluster version is 3.5; etcd cannot go back to 3.4: to return to 3.4, \
             restore the cluster from a backup taken before the upgrade",
        ),
        (
            RefuseReason::RollbackTooFar {
                from: v("3.6.1"),
                to: v("3.4.23"),
            }
            .to_string(),
            "3.6.1 -> 3.4.23 goes back more than one minor version; etcd rolls back only \
             to the previous minor, and only until the cluster version moves: to return \
             to 3.4, restore the cluster from a backup taken before the upgrade",
        ),
        (
            RefuseReason::MembersTooFarAhead {
                cluster: v("3.4.0"),
                members: vec![mv("m2", "3.6.0")],
            }
            .to_string(),
            "m2 runs 3.6.0 but the cluster version is 3.4; members may run at most one \
             minor above it, so no upgrade path leads on from here: bring those members \
             back in step (restore from a backup if needed) before changing this member",
        ),
        (
            RefuseReason::Rejected {
                version: v("3.5.17"),
                member: "m2".to_owned(),
                reason: BROKEN_RELEASE.to_owned(),
            }
            .to_string(),
            "3.5.17 was rejected by member m2: etcd did not become healthy within 30s; \
             fix the cause, then delete the key rejected/3.5.17 under the supervisor's \
             key prefix (default /etcd-supervisor/) to try it again (--allow-known-bad \
             does not override a rejection)",
        ),
        (
            RefuseReason::KnownBad {
                version: v("3.5.1"),
                bad: release_facts::known_bad(&v("3.5.1")).unwrap(),
            }
            .to_string(),
            "3.5.1 is known-bad: etcd 3.5.0–3.5.2 can lose committed transactions on a member \
             killed under high load (data inconsistency) (etcd issue #13766; CHANGELOG/README.md \
             'v3.5 data corruption issue'); stage 3.5.3 or later, or pass --allow-known-bad \
             3.5.1 if you accept the risk",
        ),
        (
            WaitReason::ClusterVersionUnknown.to_string(),
            "no member reported the cluster version; retrying (if this persists, check \
             that the members are running and reachable)",
        ),
        (
            WaitReason::MemberVersionsUnknown {
                members: vec!["m2".to_owned(), "m3".to_owned()],
            }
            .to_string(),
            "the etcd version of m2, m3 is unknown (no answer); retrying (if this \
             persists, check that those members are running and reachable)",
        ),
        (
            WaitReason::MembersBelowClusterVersion {
                cluster: v("3.5.0"),
                members: vec![mv("m2", "3.4.23")],
            }
            .to_string(),
            "m2 runs 3.4.23, below the cluster version 3.5; etcd stops such a member, so \
             the reading is stale or the member is failing: retrying (check it if this \
             persists)",
        ),
        (
            WaitReason::ClusterVersionBehind {
                cluster: v("3.4.0"),
                target: v("3.6.0"),
                lagging: vec![mv("m2", "3.4.23"), mv("m3", "3.4.22")],
            }
            .to_string(),
            "3.6.0 needs the cluster version at 3.5, and it is still 3.4; it moves once \
             every member runs 3.5 (m2 runs 3.4.23, m3 runs 3.4.22): upgrade those members \
             to 3.5 first, then this one follows",
        ),
        (
            WaitReason::ClusterVersionBehind {
                cluster: v("3.4.0"),
                target: v("3.6.0"),
                lagging: vec![],
            }
            .to_string(),
            "3.6.0 needs the cluster version at 3.5, and it is still 3.4; every member \
             runs 3.5 now and etcd moves the cluster version within seconds: retrying",
        ),
        (
            WaitReason::UpgradeInProgress {
                target: v("3.4.23"),
                ahead: vec![mv("m2", "3.5.16")],
            }
            .to_string(),
            "m2 runs 3.5.16 already, so the cluster is being upgraded to 3.5, and 3.4.23 \
             would keep this member on 3.4: stage a 3.5 release here to finish the \
             upgrade, or roll those members back to 3.4 first",
        ),
    ];
    for (got, expected) in rows {
        assert_eq!(got, expected);
    }
}

#[test]
fn builtin_known_bad_list_refuses_up_to_the_production_minimum() {
    for bad in ["3.4.21", "3.5.0", "3.5.2", "3.5.3", "3.5.5", "3.5.6-rc.1"] {
        let mut input = PathInput::new(v("3.5.16"), v(bad));
        input.cluster_version = Some(v("3.5.0"));
        if bad.starts_with("3.4") {
            input = PathInput::new(v("3.4.23"), v(bad));
            input.cluster_version = Some(v("3.4.0"));
        }
        let refused = matches!(
            decide(&input),
            PathDecision::Refuse(RefuseReason::KnownBad { .. })
        );
        assert_eq!(refused, bad != "3.5.6-rc.1", "{bad}");
    }
    for good in ["3.4.22", "3.5.6", "3.5.16"] {
        assert!(release_facts::known_bad(&v(good)).is_none(), "{good}");
    }
}

#[test]
fn minor_upgrade_to_3_6_needs_every_member_on_3_5_32() {
    let mut input = PathInput::new(v("3.5.30"), v("3.6.1"));
    input.cluster_version = Some(v("3.5.0"));
    input.peers = vec![
        PeerVersion {
            name: "m2".into(),
            version: Some(v("3.5.32")),
        },
        PeerVersion {
            name: "m3".into(),
            version: Some(v("3.5.16")),
        },
    ];
    let PathDecision::Refuse(reason @ RefuseReason::BelowFloor { .. }) = decide(&input) else {
        panic!("expected a floor refusal: {:?}", decide(&input));
    };
    let text = reason.to_string();
    assert!(text.contains("3.5.32"), "{text}");
    assert!(text.contains("this member runs 3.5.30"), "{text}");
    assert!(text.contains("m3 runs 3.5.16"), "{text}");
    assert!(!text.contains("m2"), "{text}");
    // Once everyone is on the floor, the same upgrade proceeds.
    input.running = v("3.5.32");
    input.peers[1].version = Some(v("3.5.33"));
    assert_eq!(decide(&input), proceed(PathStep::MinorUpgrade));
    // Patch upgrades within 3.5 have no floor.
    let mut patch = PathInput::new(v("3.5.16"), v("3.5.30"));
    patch.cluster_version = Some(v("3.5.0"));
    assert_eq!(decide(&patch), proceed(PathStep::PatchUpgrade));
}

#[test]
fn minor_upgrade_to_3_7_needs_every_member_on_3_6_11() {
    let mut input = PathInput::new(v("3.6.10"), v("3.7.0"));
    input.cluster_version = Some(v("3.6.0"));
    assert!(matches!(
        decide(&input),
        PathDecision::Refuse(RefuseReason::BelowFloor { .. })
    ));
    input.running = v("3.6.11");
    assert_eq!(decide(&input), proceed(PathStep::MinorUpgrade));
}

#[test]
fn auth_enabled_3_4_to_3_5_is_refused_unless_allowed() {
    let mut input = PathInput::new(v("3.4.23"), v("3.5.30"));
    input.cluster_version = Some(v("3.4.0"));
    input.auth_enabled = Some(false);
    assert_eq!(decide(&input), proceed(PathStep::MinorUpgrade));
    input.auth_enabled = Some(true);
    let PathDecision::Refuse(reason @ RefuseReason::AuthFrom34 { .. }) = decide(&input) else {
        panic!("expected the auth refusal");
    };
    assert!(reason.to_string().contains("--allow-auth-upgrade-from-3.4"));
    input.allow_auth_upgrade_from_34 = true;
    assert_eq!(decide(&input), proceed(PathStep::MinorUpgrade));
    // 3.5 patch upgrades with auth on are fine.
    let mut patch = PathInput::new(v("3.5.16"), v("3.5.30"));
    patch.cluster_version = Some(v("3.5.0"));
    patch.auth_enabled = Some(true);
    assert_eq!(decide(&patch), proceed(PathStep::PatchUpgrade));
}

#[test]
fn absurd_minor_numbers_do_not_overflow() {
    let mut input = PathInput::new(v("3.18446744073709551615.0"), v("3.18446744073709551615.1"));
    input.cluster_version = Some(v("3.18446744073709551615.0"));
    assert_eq!(
        decide(&input),
        PathDecision::Proceed(PathStep::PatchUpgrade)
    );
}
