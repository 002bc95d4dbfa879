//! etcd release knowledge as data: releases not to run, the minimum patch every member
//! must run before a minor upgrade, softer recommendations, and the 3.4 -> 3.5 auth caveat.
//!
//! This module owns the facts and plain look-ups over them; deciding whether to refuse or
//! warn is the caller's business. Every table line names where the fact comes from
//! (etcd issue/PR number, CHANGELOG file and version, or etcd-io/website doc path).

use std::fmt;

use crate::versions::Version;

/// An inclusive range of releases, compared on major.minor.patch only.
///
/// Comparing without the pre-release tag makes `3.5.2-rc.0` fall inside `3.5.0..=3.5.2`:
/// a release candidate of a bad release carries the same bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    /// First release in the range.
    pub first: Version,
    /// Last release in the range (inclusive).
    pub last: Version,
}

impl VersionRange {
    /// The releases `first..=last`.
    pub const fn new(first: Version, last: Version) -> Self {
        Self { first, last }
    }

    /// Whether `v` (or the release it is a pre-release of) lies in the range.
    pub fn contains(&self, v: &Version) -> bool {
        let core = (v.major, v.minor, v.patch);
        let first = (self.first.major, self.first.minor, self.first.patch);
        let last = (self.last.major, self.last.minor, self.last.patch);
        first <= core && core <= last
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}–{}", self.first, self.last)
        }
    }
}

/// A range of releases etcd itself says not to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBad {
    /// The affected releases.
    pub versions: VersionRange,
    /// What goes wrong, in one sentence.
    pub reason: &'static str,
    /// The first release of the same minor without the problem.
    pub fixed_in: Version,
    /// Where this is stated (issue/PR number, CHANGELOG, doc path).
    pub source: &'static str,
}

impl fmt::Display for KnownBad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "etcd {} {}; use {} or later ({})",
            self.versions, self.reason, self.fixed_in, self.source
        )
    }
}

const fn v(major: u64, minor: u64, patch: u64) -> Version {
    Version::new(major, minor, patch)
}

/// Releases not to run, most specific first (so [`known_bad`] names the sharpest reason).
pub const KNOWN_BAD: &[KnownBad] = &[
    // CHANGELOG/README.md ("v3.5 data corruption issue", commit 88a39d780, 2022-03-29) and
    // the etcd.io blog "Announcing etcd v3.6.0": introduced in 3.5.0, fixed in 3.5.3 by PR #13854.
    KnownBad {
        versions: VersionRange::new(v(3, 5, 0), v(3, 5, 2)),
        reason: "can lose committed transactions on a member killed under high load (data inconsistency)",
        fixed_in: v(3, 5, 3),
        source: "etcd issue #13766; CHANGELOG/README.md 'v3.5 data corruption issue'",
    },
    // CHANGELOG-3.5.md v3.5.6: "revision might be inconsistency between members when etcd
    // crashes during processing defragmentation"; 3.5 backport PR #14733 of #14730, found in #14685.
    KnownBad {
        versions: VersionRange::new(v(3, 5, 0), v(3, 5, 5)),
        reason: "a crash during defragmentation can leave the member's revision inconsistent with the others",
        fixed_in: v(3, 5, 6),
        source: "etcd PR #14733 (found in PR #14685); CHANGELOG-3.5.md v3.5.6",
    },
    // Issue #14571 ("3.5.5: client auth failures on first startup") is a regression of the
    // rangePermCache change (3.4.20 PR #14230, 3.5.5 PR #14227): authStore.Recover stopped
    // refreshing the permission cache, so a member that recovers from a snapshot (e.g. newly
    // added) rejects entries with auth enabled. Verified in auth/store.go Recover at tags
    // v3.4.19..v3.4.22; fixed by PR #14649 (CHANGELOG-3.4.md v3.4.22).
    KnownBad {
        versions: VersionRange::new(v(3, 4, 20), v(3, 4, 21)),
        reason: "with auth enabled, a member that recovers from a snapshot (e.g. a newly added one) can diverge (data inconsistency)",
        fixed_in: v(3, 4, 22),
        source: "etcd issue #14571; fix PR #14649 in CHANGELOG-3.4.md v3.4.22",
    },
    // Same bug on 3.5: server/auth/store.go Recover at v3.5.5 vs v3.5.6; fixed by PR #14648
    // (CHANGELOG-3.5.md v3.5.6).
    KnownBad {
        versions: VersionRange::new(v(3, 5, 5), v(3, 5, 5)),
        reason: "with auth enabled, a member that recovers from a snapshot (e.g. a newly added one) can diverge (data inconsistency)",
        fixed_in: v(3, 5, 6),
        source: "etcd issue #14571; fix PR #14648 in CHANGELOG-3.5.md v3.5.6",
    },
    // CHANGELOG/README.md "Production recommendation": "minimum recommended etcd versions to
    // run in production are v3.4.22+ and v3.5.6+" (commit 146f44d35, 2023-04-24; earlier
    // 3.4.8+/3.5.4+, 3.5.3+ and "v3.5.[0-2] no longer recommended").
    KnownBad {
        versions: VersionRange::new(v(3, 4, 0), v(3, 4, 21)),
        reason: "is below etcd's minimum recommended version for production (v3.4.22+)",
        fixed_in: v(3, 4, 22),
        source: "etcd CHANGELOG/README.md 'Production recommendation'",
    },
    KnownBad {
        versions: VersionRange::new(v(3, 5, 0), v(3, 5, 5)),
        reason: "is below etcd's minimum recommended version for production (v3.5.6+)",
        fixed_in: v(3, 5, 6),
        source: "etcd CHANGELOG/README.md 'Production recommendation'",
    },
];

/// The first [`KNOWN_BAD`] line covering `v` (the most specific reason), if any.
pub fn known_bad(v: &Version) -> Option<&'static KnownBad> {
    KNOWN_BAD.iter().find(|bad| bad.versions.contains(v))
}

/// Every [`KNOWN_BAD`] line covering `v`, in table order.
pub fn known_bad_all(v: &Version) -> Vec<&'static KnownBad> {
    KNOWN_BAD
        .iter()
        .filter(|bad| bad.versions.contains(v))
        .collect()
}

/// The lowest release every member must run before any member moves to `target_minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The minor being upgraded to, e.g. `(3, 6)`.
    pub target_minor: (u64, u64),
    /// Every member must run at least this before the first one moves.
    pub minimum: Version,
    /// Why, in one sentence.
    pub reason: &'static str,
    /// Where this is stated.
    pub source: &'static str,
}

/// Minimum patch release before a minor upgrade: below it, the upgrade is refused.
pub const MINOR_UPGRADE_FLOORS: &[Floor] = &[
    // etcd-io/website content/en/docs/v3.6/upgrades/upgrade_3_6.md, "Update 3.5" alert.
    // History of that line (git log of the file):
    //   3.5.20  9889a83b 2025-05-09  "too many learner members" upgrade failure, issue #19557
    //   3.5.24  0d8f7726 2025-11-13  #19557 and #20793 (learner promotion not persisted)
    //   3.5.26  837f7ddd 2025-12-17  zombie members in v3store, issue #20967 (fix PR #20995)
    //   3.5.32  5a5c2009 2026-08-03  adds --v2-deprecation=write-only-skip-check (PR #21897)
    //                                and `etcdutl check v2store` of WAL records (PR #21889)
    Floor {
        target_minor: (3, 6),
        minimum: v(3, 5, 32),
        reason: "3.5.24 through 3.5.32 fix several blockers of the rolling upgrade to 3.6 (learner promotion, zombie members, v2store check)",
        source: "etcd-io/website docs/v3.6/upgrades/upgrade_3_6.md; etcd issues #19557, #20793, #20967, PR #21897",
    },
    // etcd-io/website content/en/docs/v3.7/upgrades/upgrade_3_7.md, "Update 3.6" alert and
    // "Upgrade requirements": the running cluster must be v3.6.11 or later.
    Floor {
        target_minor: (3, 7),
        minimum: v(3, 6, 11),
        reason: "earlier 3.6 patch releases may not be compatible with a rolling upgrade to 3.7",
        source: "etcd-io/website docs/v3.7/upgrades/upgrade_3_7.md",
    },
];

/// The floor for upgrading to `target_minor`, if etcd documents one.
pub fn floor_for(target_minor: (u64, u64)) -> Option<&'static Floor> {
    MINOR_UPGRADE_FLOORS
        .iter()
        .find(|floor| floor.target_minor == target_minor)
}

/// A softer minimum before a minor upgrade: below it, warn but do not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// The minor being upgraded to.
    pub target_minor: (u64, u64),
    /// Members below this get a warning.
    pub recommended: Version,
    /// Why, in one sentence.
    pub reason: &'static str,
    /// Where this comes from.
    pub source: &'static str,
}

/// Recommended (not required) minimum patch release before a minor upgrade.
pub const RECOMMENDATIONS: &[Recommendation] = &[
    // The 3.5 upgrade guide (docs/v3.5/upgrades/upgrade_3_5.md, "Upgrade requirements") only
    // requires "3.4 or greater"; taking the latest 3.4 patch first is this project's policy.
    // 3.4.45 is the final 3.4 release (etcd.io blog 2026 "Final Update for v3.4", june-patch-release).
    Recommendation {
        target_minor: (3, 5),
        recommended: v(3, 4, 45),
        reason: "upgrade from the latest 3.4 patch; 3.4.45 is the final 3.4 release",
        source: "etcd-io/website docs/v3.5/upgrades/upgrade_3_5.md (requires 3.4+); blog/2026/june-patch-release.md (3.4.45 final)",
    },
];

/// The recommendation for upgrading to `target_minor`, if any.
pub fn recommendation_for(target_minor: (u64, u64)) -> Option<&'static Recommendation> {
    RECOMMENDATIONS
        .iter()
        .find(|rec| rec.target_minor == target_minor)
}

/// A member running less than a floor or recommendation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberBelow {
    /// The member's name.
    pub member: String,
    /// What it runs.
    pub running: Version,
    /// What it should run at least.
    pub minimum: Version,
    /// Why.
    pub reason: &'static str,
    /// Where the minimum comes from.
    pub source: &'static str,
}

impl fmt::Display for MemberBelow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "member {} runs etcd {}, below {}: {} ({}); upgrade it to {} or later first",
            self.member, self.running, self.minimum, self.reason, self.source, self.minimum
        )
    }
}

/// Members that must be patched before any member may move to `target`'s minor.
///
/// Members already on the target minor or later are never below the floor, because the
/// floor is always on an earlier minor; a pre-release of the floor counts as below it.
pub fn members_below_floor(target: &Version, members: &[(String, Version)]) -> Vec<MemberBelow> {
    match floor_for(target.minor_version()) {
        Some(floor) => below(members, &floor.minimum, floor.reason, floor.source),
        None => Vec::new(),
    }
}

/// Members worth patching (warning only) before moving to `target`'s minor.
pub fn members_below_recommendation(
    target: &Version,
    members: &[(String, Version)],
) -> Vec<MemberBelow> {
    match recommendation_for(target.minor_version()) {
        Some(rec) => below(members, &rec.recommended, rec.reason, rec.source),
        None => Vec::new(),
    }
}

fn below(
    members: &[(String, Version)],
    minimum: &Version,
    reason: &'static str,
    source: &'static str,
) -> Vec<MemberBelow> {
    members
        .iter()
        .filter(|(_, running)| running < minimum)
        .map(|(member, running)| MemberBelow {
            member: member.clone(),
            running: running.clone(),
            minimum: minimum.clone(),
            reason,
            source,
        })
        .collect()
}

/// A documented limit on rolling upgrades that depends on how the cluster is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeCaveat {
    /// The newest minor a member may run for the caveat to apply.
    pub from_minor_at_most: (u64, u64),
    /// The oldest target minor the caveat applies to.
    pub to_minor_at_least: (u64, u64),
    /// When it applies.
    pub condition: &'static str,
    /// What etcd says, paraphrased.
    pub statement: &'static str,
    /// Where.
    pub source: &'static str,
}

/// Rolling upgrade from 3.4 (or older) to 3.5 with auth enabled is not supported.
pub const AUTH_34_TO_35: UpgradeCaveat = UpgradeCaveat {
    from_minor_at_most: (3, 4),
    to_minor_at_least: (3, 5),
    condition: "auth is enabled",
    // upgrade_3_5.md alert: 3.5 changes the format of auth-related WAL entries.
    statement: "rolling upgrade from 3.4 or older to 3.5 is not supported with auth enabled, because 3.5 changes the format of auth-related WAL entries",
    source: "etcd-io/website docs/v3.5/upgrades/upgrade_3_5.md; etcd PR #11943",
};

/// The auth caveat if moving a member from `running` to `target` crosses 3.4 -> 3.5.
pub fn auth_caveat_for(running: &Version, target: &Version) -> Option<&'static UpgradeCaveat> {
    let caveat = &AUTH_34_TO_35;
    (running.minor_version() <= caveat.from_minor_at_most
        && target.minor_version() >= caveat.to_minor_at_least)
        .then_some(caveat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(s: &str) -> Version {
        s.parse().expect("test version")
    }

    /// Source of the line that `known_bad` picks for `s`, or "" if none.
    fn bad_source(s: &str) -> &'static str {
        known_bad(&ver(s)).map_or("", |b| b.source)
    }

    fn all_sources(s: &str) -> Vec<&'static str> {
        known_bad_all(&ver(s)).iter().map(|b| b.source).collect()
    }

    #[test]
    fn line_13766_covers_3_5_0_to_3_5_2() {
        assert!(bad_source("3.5.0").contains("#13766"));
        assert!(bad_source("3.5.2").contains("#13766"));
        assert_eq!(
            known_bad(&ver("3.5.0")).map(|b| b.fixed_in.clone()),
            Some(v(3, 5, 3))
        );
        // One outside: 3.4.45 is clean; 3.5.3 is hit by other lines but not this one.
        assert!(!all_sources("3.5.3").iter().any(|s| s.contains("#13766")));
        assert!(known_bad(&ver("3.4.45")).is_none());
    }

    #[test]
    fn line_14733_covers_3_5_0_to_3_5_5() {
        assert!(all_sources("3.5.0").iter().any(|s| s.contains("#14733")));
        assert!(all_sources("3.5.5").iter().any(|s| s.contains("#14733")));
        assert!(bad_source("3.5.3").contains("#14733"));
        assert!(!all_sources("3.5.6").iter().any(|s| s.contains("#14733")));
        assert!(!all_sources("3.4.45").iter().any(|s| s.contains("#14733")));
    }

    #[test]
    fn line_14571_on_3_4_covers_3_4_20_to_3_4_21() {
        assert!(bad_source("3.4.20").contains("#14571"));
        assert!(bad_source("3.4.21").contains("#14571"));
        assert_eq!(
            known_bad(&ver("3.4.21")).map(|b| b.fixed_in.clone()),
            Some(v(3, 4, 22))
        );
        assert!(!all_sources("3.4.19").iter().any(|s| s.contains("#14571")));
        assert!(!all_sources("3.4.22").iter().any(|s| s.contains("#14571")));
    }

    #[test]
    fn line_14571_on_3_5_is_only_3_5_5() {
        assert!(all_sources("3.5.5").iter().any(|s| s.contains("#14648")));
        assert!(!all_sources("3.5.4").iter().any(|s| s.contains("#14571")));
        assert!(!all_sources("3.5.6").iter().any(|s| s.contains("#14571")));
    }

    #[test]
    fn production_minimum_3_4_covers_3_4_0_to_3_4_21() {
        let prod = |s: &str| {
            all_sources(s)
                .iter()
                .any(|src| src.contains("Production recommendation"))
        };
        assert!(prod("3.4.0"));
        assert!(prod("3.4.21"));
        assert!(!prod("3.3.27"));
        assert!(!prod("3.4.22"));
        // The specific #14571 line wins over the general one.
        assert!(bad_source("3.4.20").contains("#14571"));
        assert!(bad_source("3.4.19").contains("Production recommendation"));
    }

    #[test]
    fn production_minimum_3_5_covers_3_5_0_to_3_5_5() {
        let prod_3_5 = |s: &str| {
            known_bad_all(&ver(s))
                .iter()
                .any(|b| b.source.contains("Production") && b.fixed_in == v(3, 5, 6))
        };
        assert!(prod_3_5("3.5.0"));
        assert!(prod_3_5("3.5.5"));
        assert!(!prod_3_5("3.4.99"));
        assert!(!prod_3_5("3.5.6"));
        assert!(known_bad(&ver("3.5.6")).is_none());
    }

    #[test]
    fn pre_release_of_bad_release_is_bad_and_of_fixed_release_is_not() {
        assert!(bad_source("3.5.2-rc.0").contains("#13766"));
        assert!(known_bad(&ver("3.5.0-alpha.0")).is_some());
        assert!(known_bad(&ver("3.5.6-rc.1")).is_none());
    }

    #[test]
    fn clean_releases_are_not_bad() {
        for s in ["3.4.22", "3.4.45", "3.5.6", "3.5.32", "3.6.0", "3.7.1"] {
            assert!(known_bad(&ver(s)).is_none(), "{s}");
        }
    }

    #[test]
    fn every_known_bad_line_is_well_formed() {
        for bad in KNOWN_BAD {
            assert!(bad.versions.first <= bad.versions.last, "{bad}");
            assert!(bad.fixed_in > bad.versions.last, "{bad}");
            assert_eq!(
                bad.fixed_in.minor_version(),
                bad.versions.last.minor_version()
            );
            assert!(!bad.source.is_empty() && !bad.reason.is_empty());
        }
    }

    #[test]
    fn known_bad_display_names_fix_and_source() {
        let text = known_bad(&ver("3.5.1"))
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(text.contains("3.5.0–3.5.2"), "{text}");
        assert!(text.contains("3.5.3 or later"), "{text}");
        assert!(text.contains("#13766"), "{text}");
    }

    #[test]
    fn floor_for_3_6_is_3_5_32_and_3_7_is_3_6_11() {
        assert_eq!(
            floor_for((3, 6)).map(|f| f.minimum.clone()),
            Some(v(3, 5, 32))
        );
        assert_eq!(
            floor_for((3, 7)).map(|f| f.minimum.clone()),
            Some(v(3, 6, 11))
        );
        assert!(floor_for((3, 5)).is_none());
        assert!(floor_for((3, 8)).is_none());
    }

    fn members(list: &[(&str, &str)]) -> Vec<(String, Version)> {
        list.iter().map(|(n, s)| (n.to_string(), ver(s))).collect()
    }

    #[test]
    fn members_below_floor_for_3_6() {
        let m = members(&[
            ("a", "3.5.31"),
            ("b", "3.5.32"),
            ("c", "3.5.33"),
            ("d", "3.6.0"),
            ("e", "3.5.32-rc.0"),
        ]);
        let below = members_below_floor(&ver("3.6.14"), &m);
        let names: Vec<&str> = below.iter().map(|b| b.member.as_str()).collect();
        assert_eq!(names, ["a", "e"]);
        assert_eq!(below[0].minimum, v(3, 5, 32));
        let text = below[0].to_string();
        assert!(
            text.contains("member a runs etcd 3.5.31, below 3.5.32"),
            "{text}"
        );
    }

    #[test]
    fn members_below_floor_for_3_7() {
        let m = members(&[("a", "3.6.10"), ("b", "3.6.11"), ("c", "3.7.0")]);
        let below = members_below_floor(&ver("3.7.1"), &m);
        assert_eq!(below.len(), 1);
        assert_eq!(below[0].member, "a");
    }

    #[test]
    fn no_floor_means_no_member_below() {
        let m = members(&[("a", "3.4.0")]);
        assert!(members_below_floor(&ver("3.5.30"), &m).is_empty());
    }

    #[test]
    fn recommendation_for_3_5_is_latest_3_4_patch() {
        assert_eq!(
            recommendation_for((3, 5)).map(|r| r.recommended.clone()),
            Some(v(3, 4, 45))
        );
        assert!(recommendation_for((3, 6)).is_none());
        let m = members(&[("a", "3.4.44"), ("b", "3.4.45")]);
        let below = members_below_recommendation(&ver("3.5.33"), &m);
        assert_eq!(below.len(), 1);
        assert_eq!(below[0].member, "a");
        assert!(members_below_recommendation(&ver("3.6.0"), &m).is_empty());
    }

    #[test]
    fn auth_caveat_applies_only_across_3_4_to_3_5() {
        assert_eq!(
            auth_caveat_for(&ver("3.4.45"), &ver("3.5.0")).map(|c| c.source),
            Some(AUTH_34_TO_35.source)
        );
        assert!(auth_caveat_for(&ver("3.3.27"), &ver("3.5.0")).is_some());
        assert!(auth_caveat_for(&ver("3.5.0"), &ver("3.5.6")).is_none());
        assert!(auth_caveat_for(&ver("3.4.45"), &ver("3.4.45")).is_none());
        assert!(AUTH_34_TO_35.source.contains("#11943"));
    }
}
