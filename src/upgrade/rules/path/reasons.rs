//! Why a switch waits or is refused, in words that say what the operator can do.

use std::fmt;

use super::{minor, next, MemberVersion, MinorLabel, Runs};
use crate::cluster::keys::Keys;
use crate::upgrade::rules::release_facts::{Floor, KnownBad};
use crate::versions::Version;

/// Why the switch has to wait. Each one can end without the operator touching this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No member reported the cluster version.
    ClusterVersionUnknown,
    /// These members did not report their version.
    MemberVersionsUnknown {
        /// Their names.
        members: Vec<String>,
    },
    /// These members report a minor below the cluster version.
    MembersBelowClusterVersion {
        /// The cluster version.
        cluster: Version,
        /// The members and what they report.
        members: Vec<MemberVersion>,
    },
    /// The target needs the cluster version one minor further than it is; this member is
    /// already on the next minor, and the others have to follow first.
    ClusterVersionBehind {
        /// The cluster version.
        cluster: Version,
        /// The staged version.
        target: Version,
        /// Members not yet on the next minor (empty when the cluster version is about to move).
        lagging: Vec<MemberVersion>,
    },
    /// The target keeps this member on the cluster's minor while other members already run
    /// the next one.
    UpgradeInProgress {
        /// The staged version.
        target: Version,
        /// Members already on the next minor.
        ahead: Vec<MemberVersion>,
    },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClusterVersionUnknown => write!(
                f,
                "no member reported the cluster version; retrying \
                 (if this persists, check that the members are running and reachable)"
            ),
            Self::MemberVersionsUnknown { members } => write!(
                f,
                "the etcd version of {} is unknown (no answer); retrying \
                 (if this persists, check that those members are running and reachable)",
                members.join(", ")
            ),
            Self::MembersBelowClusterVersion { cluster, members } => write!(
                f,
                "{}, below the cluster version {}; etcd stops such a member, so the reading \
                 is stale or the member is failing: retrying (check it if this persists)",
                Runs(members),
                minor(cluster)
            ),
            Self::ClusterVersionBehind {
                cluster,
                target,
                lagging,
            } => {
                let needed = MinorLabel(next(cluster.minor_version()));
                write!(
                    f,
                    "{target} needs the cluster version at {needed}, and it is still {}; ",
                    minor(cluster)
                )?;
                if lagging.is_empty() {
                    write!(
                        f,
                        "every member runs {needed} now and etcd moves the cluster version \
                         within seconds: retrying"
                    )
                } else {
                    write!(
                        f,
                        "it moves once every member runs {needed} ({}): upgrade those members \
                         to {needed} first, then this one follows",
                        Runs(lagging)
                    )
                }
            }
            Self::UpgradeInProgress { target, ahead } => {
                let next_minor = MinorLabel(next(target.minor_version()));
                write!(
                    f,
                    "{} already, so the cluster is being upgraded to {next_minor}, and {target} \
                     would keep this member on {}: stage a {next_minor} release here to finish \
                     the upgrade, or roll those members back to {} first",
                    Runs(ahead),
                    minor(target),
                    minor(target)
                )
            }
        }
    }
}

/// Why the switch is refused, and what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// The target's major version differs from the running one.
    MajorChange {
        /// The running version.
        from: Version,
        /// The staged version.
        to: Version,
    },
    /// The target is more than one minor above the running version.
    SkipsMinor {
        /// The running version.
        from: Version,
        /// The staged version.
        to: Version,
    },
    /// The target's minor is below the cluster version, which never moves back.
    DowngradeBelowCluster {
        /// The cluster version.
        cluster: Version,
        /// The staged version.
        to: Version,
    },
    /// The target is more than one minor below the running version.
    RollbackTooFar {
        /// The running version.
        from: Version,
        /// The staged version.
        to: Version,
    },
    /// Other members run more than one minor above the cluster version: a state no upgrade
    /// path covers.
    MembersTooFarAhead {
        /// The cluster version.
        cluster: Version,
        /// The members and what they run.
        members: Vec<MemberVersion>,
    },
    /// A supervisor already tried the target in this cluster and rejected it.
    Rejected {
        /// The staged (and rejected) version.
        version: Version,
        /// The member whose supervisor rejected it.
        member: String,
        /// Why, as recorded.
        reason: String,
    },
    /// A minor upgrade for which etcd's guide requires every member on a minimum patch
    /// first, and these members (this one included) are below it.
    BelowFloor {
        /// The staged version.
        target: Version,
        /// The guide's requirement.
        floor: &'static Floor,
        /// The members below it.
        members: Vec<MemberVersion>,
    },
    /// 3.4 -> 3.5 with auth enabled, which etcd does not support as a rolling upgrade.
    AuthFrom34 {
        /// The running version.
        from: Version,
        /// The staged version.
        to: Version,
    },
    /// The target is known-bad and not allowed by `--allow-known-bad`.
    KnownBad {
        /// The staged version.
        version: Version,
        /// What etcd says about it.
        bad: &'static KnownBad,
    },
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MajorChange { from, to } => write!(
                f,
                "{from} -> {to} changes the major version, which a rolling upgrade of etcd \
                 cannot do; stage a {}.x release",
                from.major
            ),
            Self::SkipsMinor { from, to } => write!(
                f,
                "{from} -> {to} skips a minor version; upgrade every member to {} first",
                MinorLabel(next(from.minor_version()))
            ),
            Self::DowngradeBelowCluster { cluster, to } => write!(
                f,
                "the cluster version is {}; etcd cannot go back to {}: to return to {}, \
                 restore the cluster from a backup taken before the upgrade",
                minor(cluster),
                minor(to),
                minor(to)
            ),
            Self::RollbackTooFar { from, to } => write!(
                f,
                "{from} -> {to} goes back more than one minor version; etcd rolls back only \
                 to the previous minor, and only until the cluster version moves: to return \
                 to {}, restore the cluster from a backup taken before the upgrade",
                minor(to)
            ),
            Self::MembersTooFarAhead { cluster, members } => write!(
                f,
                "{} but the cluster version is {}; members may run at most one minor above \
                 it, so no upgrade path leads on from here: bring those members back in step \
                 (restore from a backup if needed) before changing this member",
                Runs(members),
                minor(cluster)
            ),
            Self::Rejected {
                version,
                member,
                reason,
            } => write!(
                f,
                "{version} was rejected by member {member}: {reason}; fix the cause, then \
                 delete the key {} under the supervisor's key prefix \
                 (default /etcd-supervisor/) to try it again (--allow-known-bad does not \
                 override a rejection)",
                // The key relative to the prefix, as an operator reads it.
                Keys::new("").rejected(version)
            ),
            Self::BelowFloor {
                target,
                floor,
                members,
            } => write!(
                f,
                "{target} needs every member on {} or later first, and {}: {} ({}); stage \
                 {} (or a later {} patch) on those members first, then {target}",
                floor.minimum,
                Runs(members),
                floor.reason,
                floor.source,
                floor.minimum,
                minor(&floor.minimum),
            ),
            Self::AuthFrom34 { from, to } => write!(
                f,
                "{from} -> {to} with auth enabled is not supported by etcd as a rolling upgrade \
                 (3.5 writes auth entries to the WAL in a new format; etcd's 3.5 upgrade guide, \
                 PR #11943): disable auth for the upgrade, or take the risk with \
                 --allow-auth-upgrade-from-3.4 after a backup"
            ),
            Self::KnownBad { version, bad } => write!(
                f,
                "{version} is known-bad: etcd {} {} ({}); stage {} or later, or pass \
                 --allow-known-bad {version} if you accept the risk",
                bad.versions, bad.reason, bad.source, bad.fixed_in
            ),
        }
    }
}

impl std::error::Error for RefuseReason {}
