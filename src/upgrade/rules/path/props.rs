//! Properties of [`decide`] over generated clusters: it never proceeds below the cluster
//! version, never skips a minor, and does not depend on the order the members are listed in.

use proptest::prelude::*;

use super::*;

/// Cases per property; all three run in well under a second.
const CASES: u32 = 2000;

fn version() -> impl Strategy<Value = Version> {
    (
        prop_oneof![20 => Just(3u64), 1 => Just(2u64), 1 => Just(4u64)],
        3u64..9,
        0u64..40,
        prop_oneof![8 => Just(None), 1 => Just(Some("rc.1".to_owned()))],
    )
        .prop_map(|(major, minor, patch, pre)| Version {
            major,
            minor,
            patch,
            pre,
        })
}

/// A version near minor `m` of major 3: `m - 1` to `m + 2`, any patch, rarely a pre-release.
fn near(m: u64) -> impl Strategy<Value = Version> {
    (
        0u64..4,
        0u64..40,
        prop_oneof![8 => Just(None), 1 => Just(Some("rc.1".to_owned()))],
    )
        .prop_map(move |(d, patch, pre)| Version {
            major: 3,
            minor: (m + d).saturating_sub(1),
            patch,
            pre,
        })
}

/// A cluster around this member: mostly near one minor, so the interesting rules fire,
/// and sometimes anything at all.
fn input() -> impl Strategy<Value = PathInput> {
    let close = (4u64..8).prop_flat_map(|m| {
        (
            near(m),
            near(m),
            proptest::option::weighted(0.9, (m..m + 2).prop_map(|c| Version::new(3, c, 0))),
            proptest::collection::vec(proptest::option::weighted(0.95, near(m)), 0..5),
        )
    });
    let wild = (
        version(),
        version(),
        proptest::option::weighted(0.85, (3u64..9).prop_map(|m| Version::new(3, m, 0))),
        proptest::collection::vec(proptest::option::weighted(0.9, version()), 0..5),
    );
    (
        prop_oneof![3 => close.boxed(), 1 => wild.boxed()],
        proptest::collection::vec(version(), 0..2),
        proptest::collection::vec(version(), 0..2),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |((running, target, cluster, peers), allow, rejected, auth, allow_auth)| PathInput {
                cluster_version: cluster,
                peers: peers
                    .into_iter()
                    .enumerate()
                    .map(|(i, version)| PeerVersion {
                        name: format!("m{i}"),
                        version,
                    })
                    .collect(),
                running,
                target,
                known_bad: KNOWN_BAD,
                auth_enabled: auth,
                allow_auth_upgrade_from_34: allow_auth,
                allow_known_bad: allow,
                rejected: rejected
                    .into_iter()
                    .map(|version| Rejection {
                        version,
                        member: "m0".into(),
                        reason: "crashed".into(),
                    })
                    .collect(),
            },
        )
}

/// A decision with its member lists sorted, so two orders of the same cluster compare.
fn normalized(d: PathDecision) -> PathDecision {
    fn sort(members: &mut [MemberVersion]) {
        members.sort_by_key(|m| (m.name.clone(), m.version.to_string()));
    }
    match d {
        PathDecision::Wait(mut w) => {
            match &mut w {
                WaitReason::MemberVersionsUnknown { members } => members.sort(),
                WaitReason::MembersBelowClusterVersion { members, .. } => sort(members),
                WaitReason::ClusterVersionBehind { lagging, .. } => sort(lagging),
                WaitReason::UpgradeInProgress { ahead, .. } => sort(ahead),
                WaitReason::ClusterVersionUnknown => {}
            }
            PathDecision::Wait(w)
        }
        PathDecision::Refuse(mut r) => {
            match &mut r {
                RefuseReason::MembersTooFarAhead { members, .. }
                | RefuseReason::BelowFloor { members, .. } => sort(members),
                _ => {}
            }
            PathDecision::Refuse(r)
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// A proceed never lands below the cluster version, never skips a minor (from this
    /// member's minor nor from the cluster's), never changes the major, and needs every
    /// member's version known.
    #[test]
    fn prop_path_never_below_cluster_nor_skipping_a_minor(input in input()) {
        let decision = decide(&input);
        prop_assert_eq!(
            decision == PathDecision::AlreadyRunning,
            input.target == input.running,
            "{:?}", decision
        );
        if let PathDecision::Proceed(_) = decision {
            let (t, r) = (input.target.minor_version(), input.running.minor_version());
            let Some(cluster) = &input.cluster_version else {
                return Err(TestCaseError::fail("proceeded with no cluster version"));
            };
            let c = cluster.minor_version();
            prop_assert_eq!(t.0, r.0, "major change");
            prop_assert!(t >= c, "below the cluster version {cluster}: {:?}", input);
            prop_assert!(t.1 <= r.1 + 1, "skips a minor from {}", input.running);
            prop_assert!(t.1 <= c.1 + 1, "skips a minor from the cluster's {cluster}");
            prop_assert!(t.1 + 1 >= r.1, "rolls back more than one minor");
            prop_assert!(input.peers.iter().all(|p| p.version.is_some()));
            prop_assert!(!input.rejected.iter().any(|x| x.version == input.target));
        }
    }

    /// The same cluster listed in another order gets the same decision.
    #[test]
    fn prop_path_stable_under_reordering_of_members(
        (input, shuffled) in input().prop_flat_map(|input| {
            let peers = Just(input.peers.clone()).prop_shuffle();
            (Just(input), peers)
        })
    ) {
        let reordered = PathInput { peers: shuffled, ..input.clone() };
        prop_assert_eq!(normalized(decide(&input)), normalized(decide(&reordered)));
    }
}

/// The generator is not vacuous: it reaches every kind of decision, proceeds included.
#[test]
fn prop_path_generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut proceed, mut wait, mut refuse, mut running) = (0, 0, 0, 0);
    for _ in 0..2000 {
        let input = input().new_tree(&mut runner).unwrap().current();
        match decide(&input) {
            PathDecision::Proceed(_) => proceed += 1,
            PathDecision::Wait(_) => wait += 1,
            PathDecision::Refuse(_) => refuse += 1,
            PathDecision::AlreadyRunning => running += 1,
        }
    }
    eprintln!("proceed {proceed}, wait {wait}, refuse {refuse}, already running {running}");
    assert!(
        proceed >= 60 && wait >= 20 && refuse >= 20 && running >= 1,
        "proceed {proceed}, wait {wait}, refuse {refuse}, already running {running}"
    );
}
