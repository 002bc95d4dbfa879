//! Upgrade-path rules: may this member switch from the etcd version it runs to the staged
//! one, given what the cluster reports? A pure function over plain data ([`decide`] on a
//! [`PathInput`]), so every rule is unit-tested in milliseconds; preflight gathers the input
//! and acts on the [`PathDecision`].
//!
//! The facts the rules rest on (etcd's upgrade guides, and `etcd-api.md`): members run the
//! cluster version's minor or the next one; the cluster version (always `X.Y.0`) moves up
//! once every member runs the next minor, and never moves back; a binary older than the
//! cluster version exits fatally on the member's data; within a minor the data format does
//! not change, so patch versions go up and down freely.
//!
//! # Outcomes
//! - [`PathDecision::Proceed`]: take the turn; the [`PathStep`] says what kind of change it is.
//! - [`PathDecision::AlreadyRunning`]: the target is what runs. Nothing to do, and not an error
//!   (a re-staged file, or a supervisor restarted right after its swap).
//! - [`PathDecision::Wait`]: not now, but it may become possible without the operator touching
//!   this host: information is missing, or other members have to move first.
//! - [`PathDecision::Refuse`]: not possible as things stand; the operator has to change
//!   something (stage another version, delete a rejected key, pass `--allow-known-bad`, or
//!   repair the cluster).
//!
//! # Rules, in the order they are checked (the first that matches decides)
//! `C` is the cluster version's minor, `R` this member's running version, `T` the target.
//! Minor arithmetic looks at `X.Y` only, so a pre-release (`3.6.0-rc.1`) counts as its
//! release's minor: an operator who stages one has chosen it on purpose.
//!
//! | #  | rule                                                          | outcome                              |
//! |----|---------------------------------------------------------------|--------------------------------------|
//! | 1  | `T == R` (pre-release tag included)                           | `AlreadyRunning`                     |
//! | 2  | `T`'s major differs from `R`'s                                | Refuse `MajorChange`                 |
//! | 3  | `T` more than one minor above `R`                             | Refuse `SkipsMinor`                  |
//! | 4  | `T`'s minor below `C`                                         | Refuse `DowngradeBelowCluster`       |
//! | 5  | `T` more than one minor below `R`                             | Refuse `RollbackTooFar`              |
//! | 6  | another member runs more than one minor above `C`             | Refuse `MembersTooFarAhead`          |
//! | 7  | `rejected/<T>` exists in etcd (no flag overrides it)          | Refuse `Rejected`                    |
//! | 7a | `T` is `R`'s next minor and etcd's guide requires a minimum patch of every member first (3.6 needs 3.5.32, 3.7 needs 3.6.11: [`release_facts`]), and this member or another is below it | Refuse `BelowFloor` |
//! | 7b | `R` on 3.4, `T` on 3.5, auth enabled, and no `--allow-auth-upgrade-from-3.4` | Refuse `AuthFrom34`               |
//! | 8  | `T` (or the release of pre-release `T`) is in [`release_facts::KNOWN_BAD`], and `T` is not named exactly in `--allow-known-bad` | Refuse `KnownBad` |
//! | 9  | `C` unknown                                                   | Wait `ClusterVersionUnknown`         |
//! | 10 | another member's version unknown                              | Wait `MemberVersionsUnknown`         |
//! | 11 | another member reports a minor below `C`                      | Wait `MembersBelowClusterVersion`    |
//! | 12 | `T` more than one minor above `C` (this member is ahead)      | Wait `ClusterVersionBehind`          |
//! | 13 | `T` and `R` on `C` while other members already run `C + 1`    | Wait `UpgradeInProgress`             |
//! | 14 | otherwise: patch up/down within a minor, `C -> C + 1`, or rollback `C + 1 -> C` | `Proceed`  |
//!
//! Rules 4 and 6 need `C` and are skipped while it is unknown; rule 9 then waits. A `C` more
//! than one minor below `R` counts as unknown: no member can run that far above a decided
//! cluster version, but etcd reports `3.0.0` (its minimum) for the few seconds between a new
//! multi-member cluster's start and its leader's first version decision.
//!
//! # Why this order
//! - Nothing to do beats everything, even a known-bad or rejected version: it already runs.
//! - Refusals come before waits: waiting cannot lift a refusal, so it would only delay the
//!   answer. This is why a known-bad or impossible target is refused even while a member is
//!   unreachable.
//! - Among refusals, those only a different staged version (or a repaired cluster) can lift
//!   come first, then the rejected key (the operator deletes it), and known-bad last, because
//!   it is the one a flag overrides: an operator who acts on the reason shown is never sent
//!   straight into another refusal that was already known.
//! - Among waits, missing information comes before the states that need it to be judged.
//!
//! # Decisions where the design was silent
//! - A patch downgrade within a minor is allowed whenever the minor stays the same: the
//!   cluster version only records `X.Y`, so it never blocks one, and other members' patch
//!   versions do not matter. The same holds for moving between a release and its
//!   pre-releases.
//! - A target two minors above the cluster version is a refusal when this member would skip
//!   (rule 3), but a wait when this member already runs the next minor (rule 12): it becomes
//!   valid as soon as the others catch up and the cluster version moves.
//! - A patch change on the old minor while other members already run the new one waits
//!   (rule 13) rather than proceeding: moving the cluster in two directions at once is never
//!   what a rolling upgrade wants, and the wait ends by itself if the others roll back.
//! - A member below the cluster version cannot stay up (etcd exits when it applies the
//!   cluster version), so seeing one means a stale reading or a failing member: wait.
//! - A pre-release of a known-bad release is known-bad (it comes before the fix), but
//!   `--allow-known-bad` must name the exact version, so accepting a risk never widens.
//! - A rejection matches the exact version: rejecting `3.6.0-rc.1` says nothing about `3.6.0`.

use std::fmt;

use super::release_facts::{self, KnownBad, KNOWN_BAD};
use crate::versions::Version;

/// What the operator accepts beyond etcd's own rules (`--allow-*` options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Known-bad versions accepted, matched exactly.
    pub allow_known_bad: Vec<Version>,
    /// Roll 3.4 -> 3.5 with auth enabled although etcd does not support it.
    pub allow_auth_upgrade_from_34: bool,
}

/// Another member of the cluster, as preflight saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerVersion {
    /// The member's name.
    pub name: String,
    /// Its server version, or `None` when it did not answer.
    pub version: Option<Version>,
}

/// A member whose version is known; used in reasons to name who is where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberVersion {
    /// The member's name.
    pub name: String,
    /// The server version it reported.
    pub version: Version,
}

/// A `rejected/<version>` record from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The rejected version.
    pub version: Version,
    /// The member whose supervisor rejected it.
    pub member: String,
    /// Why, as that supervisor recorded it.
    pub reason: String,
}

/// Everything the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInput {
    /// The cluster version (`etcdcluster` in `/version`, always `X.Y.0`), or `None` when no
    /// member reported it.
    pub cluster_version: Option<Version>,
    /// Every other member of the cluster; this member is described by `running`.
    pub peers: Vec<PeerVersion>,
    /// The version this member runs now.
    pub running: Version,
    /// The staged version this member would switch to.
    pub target: Version,
    /// Versions refused unless allowed; [`KNOWN_BAD`] outside tests.
    pub known_bad: &'static [KnownBad],
    /// Whether etcd's auth is enabled (`None`: not checked). Rolling 3.4 -> 3.5 with auth
    /// on is not supported by etcd.
    pub auth_enabled: Option<bool>,
    /// `--allow-auth-upgrade-from-3.4`: the operator accepts that risk.
    pub allow_auth_upgrade_from_34: bool,
    /// `--allow-known-bad`: known-bad versions the operator accepts, matched exactly.
    pub allow_known_bad: Vec<Version>,
    /// The `rejected/<version>` records found in etcd.
    pub rejected: Vec<Rejection>,
}

impl PathInput {
    /// An input that knows nothing about the cluster yet: no cluster version, no peers,
    /// the built-in known-bad list, nothing allowed, nothing rejected. Set the fields
    /// preflight learned.
    pub fn new(running: Version, target: Version) -> Self {
        Self {
            cluster_version: None,
            peers: Vec::new(),
            running,
            target,
            known_bad: KNOWN_BAD,
            auth_enabled: None,
            allow_auth_upgrade_from_34: false,
            allow_known_bad: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

/// What this member should do with its staged version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathDecision {
    /// Take the turn.
    Proceed(PathStep),
    /// The target is the running version: nothing to do, and not an error.
    AlreadyRunning,
    /// Not now; retry later. The caller must release the upgrade lock while it waits:
    /// several waits end only when other members take their turns.
    Wait(WaitReason),
    /// Not possible until the operator changes something; say why.
    Refuse(RefuseReason),
}

/// The kind of change a [`PathDecision::Proceed`] makes, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStep {
    /// A later version within the same minor (including pre-release to release).
    PatchUpgrade,
    /// An earlier version within the same minor (including release to pre-release).
    PatchDowngrade,
    /// The next minor version.
    MinorUpgrade,
    /// Back to the previous minor, while the cluster version is still on it.
    Rollback,
}

impl fmt::Display for PathStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PatchUpgrade => "patch upgrade",
            Self::PatchDowngrade => "patch downgrade",
            Self::MinorUpgrade => "minor upgrade",
            Self::Rollback => "rollback to the previous minor",
        })
    }
}

/// Applies the rules in the order of the module's table.
pub fn decide(input: &PathInput) -> PathDecision {
    if input.target == input.running {
        return PathDecision::AlreadyRunning;
    }
    if let Some(reason) = refusal(input) {
        return PathDecision::Refuse(reason);
    }
    if let Some(reason) = wait(input) {
        return PathDecision::Wait(reason);
    }
    PathDecision::Proceed(step(&input.running, &input.target))
}

/// Rules 2-8.
fn refusal(input: &PathInput) -> Option<RefuseReason> {
    let (running, target) = (&input.running, &input.target);
    let (r, t) = (running.minor_version(), target.minor_version());
    let cluster = decided_cluster(input);

    if target.major != running.major {
        return Some(RefuseReason::MajorChange {
            from: running.clone(),
            to: target.clone(),
        });
    }
    // Holds whatever the cluster says: the cluster version is never above a running member.
    if t > next(r) {
        return Some(RefuseReason::SkipsMinor {
            from: running.clone(),
            to: target.clone(),
        });
    }
    if let Some(cluster) = cluster {
        if t < cluster.minor_version() {
            return Some(RefuseReason::DowngradeBelowCluster {
                cluster: cluster.clone(),
                to: target.clone(),
            });
        }
    }
    if next(t) < r {
        return Some(RefuseReason::RollbackTooFar {
            from: running.clone(),
            to: target.clone(),
        });
    }
    if let Some(cluster) = cluster {
        let limit = next(cluster.minor_version());
        let ahead = known_peers(input, |v| v.minor_version() > limit);
        if !ahead.is_empty() {
            return Some(RefuseReason::MembersTooFarAhead {
                cluster: cluster.clone(),
                members: ahead,
            });
        }
    }
    if let Some(rejection) = input.rejected.iter().find(|r| r.version == *target) {
        return Some(RefuseReason::Rejected {
            version: target.clone(),
            member: rejection.member.clone(),
            reason: rejection.reason.clone(),
        });
    }
    if let Some(reason) = below_floor(input) {
        return Some(reason);
    }
    if r == (3, 4)
        && t == (3, 5)
        && input.auth_enabled == Some(true)
        && !input.allow_auth_upgrade_from_34
    {
        return Some(RefuseReason::AuthFrom34 {
            from: running.clone(),
            to: target.clone(),
        });
    }
    if let Some(bad) = known_bad(input) {
        return Some(RefuseReason::KnownBad {
            version: target.clone(),
            bad,
        });
    }
    None
}

/// The cluster version, unless it is missing or is etcd's placeholder before its first
/// decision (more than one minor below what this member runs).
fn decided_cluster(input: &PathInput) -> Option<&Version> {
    let running = input.running.minor_version();
    input
        .cluster_version
        .as_ref()
        .filter(|c| !placeholder(c, running))
}

/// Whether `cluster` can only be etcd's placeholder (3.0.0 until the leader's first
/// decision) for a member on `member`: a real cluster version is at most one minor below
/// any member's.
pub(super) fn placeholder(cluster: &Version, member: (u64, u64)) -> bool {
    next(cluster.minor_version()) < member
}

/// Rule 7a: a minor upgrade needs every member (this one too) on the guide's minimum patch.
/// Members whose version is unknown are judged by the wait rules.
fn below_floor(input: &PathInput) -> Option<RefuseReason> {
    let (r, t) = (input.running.minor_version(), input.target.minor_version());
    if t != next(r) {
        return None;
    }
    let floor = release_facts::floor_for(t)?;
    let below = |v: &Version| {
        (v.major, v.minor, v.patch)
            < (
                floor.minimum.major,
                floor.minimum.minor,
                floor.minimum.patch,
            )
            && v.minor_version() == r
    };
    let mut members = Vec::new();
    if below(&input.running) {
        members.push(MemberVersion {
            name: "this member".to_owned(),
            version: input.running.clone(),
        });
    }
    members.extend(known_peers(input, below));
    (!members.is_empty()).then(|| RefuseReason::BelowFloor {
        target: input.target.clone(),
        floor,
        members,
    })
}

/// Rules 9-13.
fn wait(input: &PathInput) -> Option<WaitReason> {
    let Some(cluster) = decided_cluster(input) else {
        return Some(WaitReason::ClusterVersionUnknown);
    };
    let unknown: Vec<String> = input
        .peers
        .iter()
        .filter(|p| p.version.is_none())
        .map(|p| p.name.clone())
        .collect();
    if !unknown.is_empty() {
        return Some(WaitReason::MemberVersionsUnknown { members: unknown });
    }

    let c = cluster.minor_version();
    let below = known_peers(input, |v| v.minor_version() < c);
    if !below.is_empty() {
        return Some(WaitReason::MembersBelowClusterVersion {
            cluster: cluster.clone(),
            members: below,
        });
    }
    let t = input.target.minor_version();
    if t > next(c) {
        return Some(WaitReason::ClusterVersionBehind {
            cluster: cluster.clone(),
            target: input.target.clone(),
            lagging: known_peers(input, |v| v.minor_version() <= c),
        });
    }
    if t == c && input.running.minor_version() == c {
        let ahead = known_peers(input, |v| v.minor_version() > c);
        if !ahead.is_empty() {
            return Some(WaitReason::UpgradeInProgress {
                target: input.target.clone(),
                ahead,
            });
        }
    }
    None
}

/// Classifies a switch that passed every rule; `running != target`.
fn step(running: &Version, target: &Version) -> PathStep {
    let (r, t) = (running.minor_version(), target.minor_version());
    if t == r {
        if target > running {
            PathStep::PatchUpgrade
        } else {
            PathStep::PatchDowngrade
        }
    } else if t > r {
        PathStep::MinorUpgrade
    } else {
        PathStep::Rollback
    }
}

/// The known-bad entry that refuses the target, unless the operator allowed it.
fn known_bad(input: &PathInput) -> Option<&'static KnownBad> {
    let target = &input.target;
    if input.allow_known_bad.contains(target) {
        return None;
    }
    // A pre-release precedes its release, so it carries whatever made the release bad
    // (the ranges compare major.minor.patch only).
    input
        .known_bad
        .iter()
        .find(|bad| bad.versions.contains(target))
}

/// Other members with a known version that matches `keep`.
fn known_peers(input: &PathInput, keep: impl Fn(&Version) -> bool) -> Vec<MemberVersion> {
    input
        .peers
        .iter()
        .filter_map(|peer| {
            let version = peer.version.as_ref().filter(|v| keep(v))?;
            Some(MemberVersion {
                name: peer.name.clone(),
                version: version.clone(),
            })
        })
        .collect()
}

/// The minor after `(major, minor)`; saturating, because versions come from outside.
pub(super) fn next((major, minor): (u64, u64)) -> (u64, u64) {
    (major, minor.saturating_add(1))
}

/// `X.Y`, the way etcd names a cluster version.
pub(super) struct MinorLabel((u64, u64));

impl fmt::Display for MinorLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = self.0;
        write!(f, "{major}.{minor}")
    }
}

pub(super) fn minor(version: &Version) -> MinorLabel {
    MinorLabel(version.minor_version())
}

/// `m2 runs 3.4.23, m3 runs 3.4.22`.
pub(super) struct Runs<'a>(&'a [MemberVersion]);

impl fmt::Display for Runs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, member) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} runs {}", member.name, member.version)?;
        }
        Ok(())
    }
}

mod reasons;

pub use reasons::{RefuseReason, WaitReason};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
