//! Going back one minor (3.7 → 3.6, 3.6 → 3.5) through etcd's downgrade API: the rules, as
//! plain functions over plain data ([`DowngradeFacts`]), so every one is unit-tested without a
//! cluster. `etcd-supervisor downgrade` asks [`may_start`]; each member's driver asks
//! [`gate`] before a staged older minor may queue, [`go_back`] after a cancel, and
//! [`finished`] to see the cluster done; `status` and `plan` render [`progress`].
//!
//! Facts from etcd's guides (`docs/v3.6/downgrades/downgrade_3_6.md`,
//! `docs/v3.7/downgrades/downgrade_3_7.md`) and source (`server/etcdserver/version/` at
//! v3.6.14 and v3.7.1):
//! - etcd downgrades exactly one minor (`isValidDowngrade`: target = cluster minor - 1), and
//!   only from 3.6 on (the API exists in 3.5, but a 3.5 cluster has no storage version to
//!   migrate and etcd's guides start at 3.6 → 3.5).
//! - `downgrade enable X.Y` moves the cluster version to `X.Y` at once (the leader's monitor,
//!   every ~4 s) and each member migrates its storage schema down; the guide says to check
//!   STORAGE VERSION before any binary swap. Then every member in turn, the leader last, is
//!   restarted on the older binary with the same configuration. Once every member reports
//!   the target, the leader ends the downgrade itself (`CancelDowngradeIfNeeded`).
//! - `downgrade cancel` while members are mixed: the downgraded members go back to the
//!   newer binary (the cluster version returns once every member runs it).
//! - Without an enabled downgrade an older minor exits on the newer data
//!   (`MustDetectDowngrade`). A patch downgrade within one minor is not a downgrade to etcd
//!   at all: the cluster and storage versions hold `X.Y` only, and the API refuses a target
//!   on the same minor. So every patch change within a minor stays a plain swap (the path
//!   rules, known-bad list included, still apply).
//! - Floors: the guides say to use the latest patch of the older minor and name no number
//!   of their own. A downgrade runs the same mixed cluster (older and newer minor side by
//!   side) as the upgrade between them, so the older minor must be at least the patch the
//!   upgrade guide requires for that mix: 3.5.32 for 3.6 → 3.5 (`upgrade_3_6.md`: learner
//!   and membership fixes, the WAL-aware v2 check), 3.6.11 for 3.7 → 3.6 (`upgrade_3_7.md`).
//!   They are read from [`release_facts::floor_for`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::release_facts;
use crate::versions::Version;

/// One member, as the downgrade rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    /// Its name.
    pub name: String,
    /// The version it serves (`None`: did not answer).
    pub server: Option<Version>,
    /// Its storage version (3.6+; `None` before, or when it did not answer).
    pub storage: Option<(u64, u64)>,
    /// `/health` answered true.
    pub healthy: bool,
    /// What its supervisor's record says is staged there.
    pub staged: Option<Version>,
}

/// What etcd says about a downgrade (any 3.6+ member's `downgradeInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEtcd {
    /// No member that reports it (3.6+) answered: all 3.5, or none reachable.
    Unknown,
    /// No downgrade is enabled.
    Off,
    /// A downgrade to this minor is enabled.
    Enabled((u64, u64)),
}

/// Where a downgrade recorded under `<prefix>downgrade` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordState {
    /// Enabled by `etcd-supervisor downgrade`: members take their turns.
    Enabled,
    /// Cancelled (by `downgrade --cancel`, or a member whose target failed): members
    /// already downgraded go back to `from`.
    Cancelled,
}

/// The `<prefix>downgrade` record: what the operator started, so members know whether a
/// cluster version on the older minor is a downgrade under way or a cancelled one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowngradeRecord {
    /// Schema it was written with.
    #[serde(default = "schema_one")]
    pub schema: u32,
    /// The version every member goes to.
    pub target: Version,
    /// The version the cluster ran before (the one members go back to on a cancel).
    pub from: Version,
    /// Enabled or cancelled.
    pub state: RecordState,
    /// Who started it (user@host) and when (RFC 3339).
    #[serde(default)]
    pub by: String,
    /// When it was written, RFC 3339.
    #[serde(default)]
    pub time: String,
    /// Why it was cancelled, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn schema_one() -> u32 {
    1
}

impl DowngradeRecord {
    /// The value to store.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored value.
    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// Everything the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowngradeFacts {
    /// The cluster version (`X.Y.0`), `None` when no member reported it.
    pub cluster_version: Option<Version>,
    /// Every member.
    pub members: Vec<MemberFacts>,
    /// etcd's own downgrade state.
    pub etcd: InEtcd,
    /// The supervisors' record, if one exists.
    pub record: Option<DowngradeRecord>,
    /// The member holding the upgrade turn, if any.
    pub turn_holder: Option<String>,
}

/// Why `etcd-supervisor downgrade` will not start; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefusal {
    /// Cannot judge: the cluster version is unknown or a member did not answer.
    Unknown(String),
    /// etcd's placeholder (3.0.0) before the leader's first decision: more than one minor
    /// below every member's version. Seconds after a start; ask again.
    Undecided(Version),
    /// The cluster version is before 3.6.
    TooOld(Version),
    /// The target is not below the cluster's minor.
    NotLower {
        /// The cluster version.
        cluster: Version,
        /// The requested target.
        target: Version,
    },
    /// More than one minor below the cluster version.
    TooFar {
        /// The cluster version.
        cluster: Version,
        /// The requested target.
        target: Version,
    },
    /// The target patch is below the floor of a mixed cluster.
    BelowFloor {
        /// The requested target.
        target: Version,
        /// The lowest patch allowed.
        minimum: Version,
        /// Where the floor is stated.
        source: &'static str,
    },
    /// A member is unhealthy.
    Unhealthy(Vec<String>),
    /// Members run another minor than the cluster version: an upgrade (or rollback) is
    /// under way.
    MidUpgrade(Vec<(String, Version)>),
    /// A turn is held.
    TurnHeld(String),
    /// The target is not staged on these members.
    NotStaged(Vec<String>),
    /// etcd has a downgrade to another minor enabled.
    OtherDowngrade((u64, u64)),
}

impl fmt::Display for StartRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(why) => write!(f, "cannot judge the cluster: {why}"),
            Self::Undecided(cv) => write!(
                f,
                "the cluster version is not decided yet (etcd answers {cv} until its leader's \
                 first decision, seconds after the cluster starts): run the command again"
            ),
            Self::TooOld(cv) => write!(
                f,
                "the cluster version is {cv}: etcd's downgrade starts at 3.6 (a {} cluster \
                 goes back only by restoring a backup taken before its upgrade)",
                minor(cv.minor_version())
            ),
            Self::NotLower { cluster, target } => write!(
                f,
                "{target} is not below the cluster version {cluster}; a patch change within \
                 {} is a plain swap: stage it (`etcd-supervisor stage`)",
                minor(cluster.minor_version())
            ),
            Self::TooFar { cluster, target } => write!(
                f,
                "{target} is more than one minor below the cluster version {cluster}; etcd \
                 downgrades one minor at a time: downgrade to {} first",
                minor((cluster.major, cluster.minor.saturating_sub(1)))
            ),
            Self::BelowFloor {
                target,
                minimum,
                source,
            } => write!(
                f,
                "{target} is below {minimum}, the oldest {} patch that may run beside {} \
                 members ({source}); stage {minimum} or later (etcd's guide: the latest {} \
                 release) on every member",
                minor(minimum.minor_version()),
                minor((minimum.major, minimum.minor + 1)),
                minor(minimum.minor_version())
            ),
            Self::Unhealthy(names) => write!(
                f,
                "not every member is healthy ({}); etcd's guide requires a healthy cluster",
                names.join(", ")
            ),
            Self::MidUpgrade(members) => {
                let list: Vec<String> = members.iter().map(|(n, v)| format!("{n} runs {v}")).collect();
                write!(
                    f,
                    "an upgrade is under way ({}): finish it or roll it back first",
                    list.join(", ")
                )
            }
            Self::TurnHeld(holder) => write!(
                f,
                "member {holder} holds the upgrade turn: wait until its turn ends"
            ),
            Self::NotStaged(names) => write!(
                f,
                "the target is not staged on {}: stage it there first \
                 (`etcd-supervisor stage BINARY --with etcdctl --with etcdutl`)",
                names.join(", ")
            ),
            Self::OtherDowngrade(m) => write!(
                f,
                "etcd already has a downgrade to {} enabled: `etcd-supervisor downgrade --cancel` first",
                minor(*m)
            ),
        }
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn minor((major, minor): (u64, u64)) -> String {
    format!("{major}.{minor}")
}

/// Whether `cluster` is etcd's placeholder before its leader's first decision, judged
/// against the lowest member that answered (the path rules' own test).
fn undecided(cluster: &Version, members: &[MemberFacts]) -> bool {
    let lowest = members
        .iter()
        .filter_map(|m| m.server.as_ref().map(Version::minor_version))
        .min();
    lowest.is_some_and(|low| super::path::placeholder(cluster, low))
}

/// The minor one below the cluster's, which is the only one etcd downgrades to.
fn one_below(cluster: &Version) -> (u64, u64) {
    (cluster.major, cluster.minor.saturating_sub(1))
}

/// May `etcd-supervisor downgrade target` start now? `Ok` also when etcd already has this
/// very downgrade enabled (a command run again resumes it).
pub fn may_start(facts: &DowngradeFacts, target: &Version) -> Result<(), StartRefusal> {
    let Some(cluster) = &facts.cluster_version else {
        return Err(StartRefusal::Unknown(
            "no member reported the cluster version".into(),
        ));
    };
    if undecided(cluster, &facts.members) {
        return Err(StartRefusal::Undecided(cluster.clone()));
    }
    // etcd accepted this very downgrade already (the cluster version moved to it): a
    // command run again resumes it; the version arithmetic was checked when it started.
    let resuming = facts.etcd == InEtcd::Enabled(target.minor_version());
    if !resuming {
        version_rules(cluster, target)?;
    }
    match facts.etcd {
        InEtcd::Enabled(m) if m != target.minor_version() => {
            return Err(StartRefusal::OtherDowngrade(m))
        }
        // Following a downgrade under way: members are down in their turns by design.
        _ if resuming => return Ok(()),
        _ => {}
    }
    let silent: Vec<String> = facts
        .members
        .iter()
        .filter(|m| m.server.is_none())
        .map(|m| m.name.clone())
        .collect();
    let silent = sorted(silent);
    if !silent.is_empty() {
        return Err(StartRefusal::Unknown(format!(
            "{} did not report a version",
            silent.join(", ")
        )));
    }
    let sick: Vec<String> = facts
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.clone())
        .collect();
    let sick = sorted(sick);
    if !sick.is_empty() {
        return Err(StartRefusal::Unhealthy(sick));
    }
    {
        // Before the enable every member runs the cluster's minor.
        let off: Vec<(String, Version)> = facts
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.server.clone()?)))
            .filter(|(_, v)| v.minor_version() != cluster.minor_version())
            .collect();
        if !off.is_empty() {
            return Err(StartRefusal::MidUpgrade(off));
        }
        if let Some(holder) = &facts.turn_holder {
            return Err(StartRefusal::TurnHeld(holder.clone()));
        }
    }
    let missing: Vec<String> = facts
        .members
        .iter()
        .filter(|m| m.server.as_ref() != Some(target) && m.staged.as_ref() != Some(target))
        .map(|m| m.name.clone())
        .collect();
    let missing = sorted(missing);
    if !missing.is_empty() {
        return Err(StartRefusal::NotStaged(missing));
    }
    Ok(())
}

/// The cluster version, the target and the floor: what only another target can lift.
fn version_rules(cluster: &Version, target: &Version) -> Result<(), StartRefusal> {
    // What no change to the cluster can lift comes first.
    if target.minor_version() >= cluster.minor_version() {
        return Err(StartRefusal::NotLower {
            cluster: cluster.clone(),
            target: target.clone(),
        });
    }
    if target.major != cluster.major || target.minor_version() < one_below(cluster) {
        return Err(StartRefusal::TooFar {
            cluster: cluster.clone(),
            target: target.clone(),
        });
    }
    if cluster.minor_version() < (3, 6) {
        return Err(StartRefusal::TooOld(cluster.clone()));
    }
    if let Some(floor) = release_facts::floor_for(cluster.minor_version()) {
        let below = (target.major, target.minor, target.patch)
            < (
                floor.minimum.major,
                floor.minimum.minor,
                floor.minimum.patch,
            );
        if floor.minimum.minor_version() == target.minor_version() && below {
            return Err(StartRefusal::BelowFloor {
                target: target.clone(),
                minimum: floor.minimum.clone(),
                source: floor.source,
            });
        }
    }
    Ok(())
}

/// What a member does with a staged version on a lower minor than it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Not a downgrade (same or higher minor): the path rules alone decide.
    NotADowngrade,
    /// Go ahead: the downgrade is enabled and the storage is migrated, or it is a rollback
    /// while the cluster version has not moved (etcd allows that without its API).
    Go,
    /// Stay staged and wait, saying why (and the command to run when it is the operator's).
    Park(String),
}

/// The gate for a member running `running` with `target` staged.
pub fn gate(facts: &DowngradeFacts, running: &Version, target: &Version) -> Gate {
    let t = target.minor_version();
    if t >= running.minor_version() {
        return Gate::NotADowngrade;
    }
    let cancelled = facts
        .record
        .as_ref()
        .filter(|r| r.state == RecordState::Cancelled && r.target.minor_version() == t);
    if let Some(r) = cancelled {
        return Gate::Park(format!(
            "the downgrade to {} was cancelled ({}); run `etcd-supervisor downgrade {target}` \
             to start it again",
            minor(t),
            r.reason.as_deref().unwrap_or("no reason recorded")
        ));
    }
    match facts.etcd {
        InEtcd::Enabled(m) if m == t => {
            let unmigrated: Vec<String> = facts
                .members
                .iter()
                .filter_map(|m| Some((m.name.clone(), m.storage?)))
                .filter(|(_, s)| *s != t)
                .map(|(n, s)| format!("{n}: {}", minor(s)))
                .collect();
            let cluster_moved = facts
                .cluster_version
                .as_ref()
                .is_some_and(|c| c.minor_version() == t);
            if !cluster_moved {
                return Gate::Park(format!(
                    "the downgrade to {} is enabled; waiting for the cluster version to move",
                    minor(t)
                ));
            }
            if !unmigrated.is_empty() {
                return Gate::Park(format!(
                    "the downgrade to {} is enabled; waiting for the storage version to be \
                     migrated ({})",
                    minor(t),
                    unmigrated.join(", ")
                ));
            }
            Gate::Go
        }
        _ => {
            // A rollback while the cluster version still is the target's minor (a minor
            // upgrade not finished): nothing moved yet, so etcd takes the older binary
            // without its API, as before 3.6. Not once a downgrade was recorded: then the
            // cluster version is on the older minor because of it.
            let unmoved = facts
                .cluster_version
                .as_ref()
                .is_some_and(|c| c.minor_version() == t);
            if unmoved && facts.record.is_none() {
                return Gate::Go;
            }
            Gate::Park(format!(
                "{target} is a lower minor than {running}, and the cluster version has moved: \
                 an older minor needs etcd's downgrade; run `etcd-supervisor downgrade {target}` \
                 (it validates, enables, and the members take their turns); until then this \
                 member keeps {running} and {target} stays staged"
            ))
        }
    }
}

/// After a cancelled downgrade, the version a member already downgraded goes back to.
pub fn go_back(record: Option<&DowngradeRecord>, running: &Version) -> Option<Version> {
    let r = record.filter(|r| r.state == RecordState::Cancelled)?;
    (running.minor_version() == r.target.minor_version()
        && r.from.minor_version() > running.minor_version())
    .then(|| r.from.clone())
}

/// The cluster finished the recorded downgrade: every member serves the target's minor,
/// the cluster version is on it, and etcd no longer has it enabled (3.5 does not say, so
/// there a moment is given to the leader by the caller).
pub fn finished(facts: &DowngradeFacts) -> bool {
    let Some(r) = facts
        .record
        .as_ref()
        .filter(|r| r.state == RecordState::Enabled)
    else {
        return false;
    };
    let t = r.target.minor_version();
    let all = !facts.members.is_empty()
        && facts
            .members
            .iter()
            .all(|m| m.server.as_ref().is_some_and(|v| v.minor_version() == t));
    let cluster = facts
        .cluster_version
        .as_ref()
        .is_some_and(|c| c.minor_version() == t);
    all && cluster && !matches!(facts.etcd, InEtcd::Enabled(_))
}

/// A cancelled downgrade is over once every member serves `from`'s minor again.
pub fn cancel_settled(facts: &DowngradeFacts) -> bool {
    let Some(r) = facts
        .record
        .as_ref()
        .filter(|r| r.state == RecordState::Cancelled)
    else {
        return false;
    };
    !facts.members.is_empty()
        && facts.members.iter().all(|m| {
            m.server
                .as_ref()
                .is_some_and(|v| v.minor_version() == r.from.minor_version())
        })
}

/// One line for `status` and `plan`: the target, who is done, the storage versions.
pub fn progress(facts: &DowngradeFacts) -> Option<String> {
    let etcd_target = match facts.etcd {
        InEtcd::Enabled(m) => Some(m),
        _ => None,
    };
    if facts.record.is_none() && etcd_target.is_none() {
        return None;
    }
    let (target, state) = match &facts.record {
        Some(r) => (
            r.target.to_string(),
            match (r.state, etcd_target) {
                (RecordState::Enabled, Some(_)) => "enabled in etcd".to_owned(),
                (RecordState::Enabled, None) if finished(facts) => "finished".to_owned(),
                (RecordState::Enabled, None) => "enabled".to_owned(),
                (RecordState::Cancelled, _) => format!(
                    "CANCELLED ({}); downgraded members go back to {}",
                    r.reason.as_deref().unwrap_or("no reason"),
                    r.from
                ),
            },
        ),
        None => (
            etcd_target.map(minor).unwrap_or_default(),
            "enabled in etcd (not by a supervisor)".to_owned(),
        ),
    };
    let t = facts
        .record
        .as_ref()
        .map(|r| r.target.minor_version())
        .or(etcd_target);
    let done: Vec<&str> = facts
        .members
        .iter()
        .filter(|m| {
            m.server
                .as_ref()
                .is_some_and(|v| Some(v.minor_version()) == t)
        })
        .map(|m| m.name.as_str())
        .collect();
    let storage: Vec<String> = facts
        .members
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.name,
                m.storage.map_or_else(|| "-".to_owned(), minor)
            )
        })
        .collect();
    Some(format!(
        "downgrade to {target}: {state}; done {}/{} ({}); storage version: {}",
        done.len(),
        facts.members.len(),
        if done.is_empty() {
            "none".to_owned()
        } else {
            done.join(", ")
        },
        storage.join(", ")
    ))
}

#[cfg(test)]
mod tests;
