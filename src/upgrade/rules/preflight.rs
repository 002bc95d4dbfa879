//! Preflight: may this member take its turn now? A plain function over the typed
//! [`ClusterView`] (the same one `status` shows), plus the upgrade-path rules.
//!
//! The cluster must be healthy before a member stops: every member reachable and healthy,
//! a leader, every other voting member caught up with it, no alarm, and losing this member
//! must keep quorum. A one-member cluster has no
//! quorum to keep (its upgrade is a short outage by nature) and is allowed; a two-member
//! cluster loses quorum with either member down and waits, saying so.

pub use super::path::Policy;
use super::path::{self, PathDecision, PathInput, PeerVersion, Rejection};
use crate::cluster::records::{RejectionRecord, Stored};
use crate::cluster::view::{AlarmView, ClusterView};
use crate::versions::Version;

/// What preflight concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightVerdict {
    /// Go ahead.
    Proceed,
    /// Not now (with the reason to log and show).
    Wait(String),
    /// Never for this target (with the rule and what to do).
    Refuse(String),
}

/// The path rules alone (no health checks): used when a candidate arrives, to refuse an
/// impossible target at once instead of after a wait in the queue.
pub fn path_only(
    report: &ClusterView,
    member: &str,
    running: &Version,
    target: &Version,
    policy: &Policy,
) -> PreflightVerdict {
    let input = path_input(report, member, running, target, policy);
    let decision = path::decide(&input);
    // What the rules could not judge for lack of facts waits until the facts are in.
    if matches!(decision, PathDecision::Proceed(_)) {
        if !report.rejections_read {
            return PreflightVerdict::Wait(
                "the rejected/ records could not be read; a rejected version must not slip \
                 through: retrying"
                    .into(),
            );
        }
        let from_34_to_35 = running.minor_version() == (3, 4) && target.minor_version() == (3, 5);
        if from_34_to_35 && report.auth_enabled.is_none() && !policy.allow_auth_upgrade_from_34 {
            return PreflightVerdict::Wait(
                "cannot tell whether auth is enabled (3.4 -> 3.5 with auth on is not \
                 supported by etcd): retrying"
                    .into(),
            );
        }
    }
    match decision {
        PathDecision::Proceed(_) => PreflightVerdict::Proceed,
        PathDecision::AlreadyRunning => {
            PreflightVerdict::Wait(format!("{target} is already running"))
        }
        PathDecision::Wait(why) => PreflightVerdict::Wait(why.to_string()),
        PathDecision::Refuse(why) => PreflightVerdict::Refuse(why.to_string()),
    }
}

/// The full preflight: cluster health, quorum, then the path rules.
pub fn assess(
    report: &ClusterView,
    member: &str,
    running: &Version,
    target: &Version,
    policy: &Policy,
) -> PreflightVerdict {
    if let Some(err) = &report.error {
        return PreflightVerdict::Wait(format!("the cluster cannot be reached: {err}"));
    }
    if !report.members.iter().any(|m| m.name == member) {
        return PreflightVerdict::Wait(format!(
            "member {member} is not in the cluster's member list yet"
        ));
    }
    if let Some(sick) = report.members.iter().find(|m| !m.healthy) {
        let why = sick
            .error
            .clone()
            .unwrap_or_else(|| "/health is false".into());
        return PreflightVerdict::Wait(format!("member {} is not healthy ({why})", sick.name));
    }
    if report.leader.is_none() {
        return PreflightVerdict::Wait("the cluster has no leader".into());
    }
    if let Some(why) = catching_up(report, member) {
        return PreflightVerdict::Wait(why);
    }
    if let Some(why) = alarm_hold(&report.alarms) {
        return PreflightVerdict::Wait(why);
    }
    // Quorum counts voting members only: stopping a learner costs none of it.
    let voters = report.members.iter().filter(|m| !m.learner).count();
    let quorum = voters / 2 + 1;
    let me_voting = report
        .members
        .iter()
        .any(|m| m.name == member && !m.learner);
    if me_voting && voters > 1 && voters - 1 < quorum {
        return PreflightVerdict::Wait(format!(
            "stopping one of {voters} voting members would lose quorum ({quorum} needed); add a member first"
        ));
    }
    path_only(report, member, running, target, policy)
}

/// How far behind the leader's applied index another voting member may be and still
/// count as keeping quorum with it. A member back from a cut answers `/health` before it
/// has applied what it missed: in the partition tests one back from a 13 s cut had applied
/// 745 of 2,117 entries (etcd's own trace) when another member's turn began, and the
/// outside sampler saw it down as that member stopped. Under a steady writer the members'
/// status answers, read at once, differ by tens of entries; etcd sends a snapshot past
/// 5,000.
pub const MAX_LAG: u64 = 500;

/// `Some(why)` while another voting member is more than [`MAX_LAG`] entries behind the
/// leader: the stop waits for it (the last look before the stop asks the same).
pub fn catching_up(report: &ClusterView, member: &str) -> Option<String> {
    let behind = report
        .members
        .iter()
        .filter(|m| m.name != member && !m.learner)
        .find(|m| m.lag.is_some_and(|lag| lag > MAX_LAG))?;
    Some(format!(
        "member {} is catching up ({} entries behind the leader)",
        behind.name,
        behind.lag.unwrap_or_default()
    ))
}

fn path_input(
    report: &ClusterView,
    member: &str,
    running: &Version,
    target: &Version,
    policy: &Policy,
) -> PathInput {
    let mut input = PathInput::new(running.clone(), target.clone());
    input.cluster_version = report.cluster_version.clone();
    input.peers = report
        .members
        .iter()
        .filter(|m| m.name != member)
        .map(|m| PeerVersion {
            name: m.name.clone(),
            version: m.server_version.clone(),
        })
        .collect();
    input.allow_known_bad = policy.allow_known_bad.clone();
    input.auth_enabled = report.auth_enabled;
    input.allow_auth_upgrade_from_34 = policy.allow_auth_upgrade_from_34;
    input.rejected = report
        .rejected
        .iter()
        .map(|(version, stored)| rejection(version, stored))
        .collect();
    input
}

/// The key alone rejects the version; its record only says who and why.
fn rejection(version: &Version, stored: &Stored<RejectionRecord>) -> Rejection {
    match stored {
        Stored::Read(record) => Rejection {
            version: version.clone(),
            member: record.member.clone(),
            reason: record.reason.clone(),
        },
        Stored::Unreadable { error, .. } => Rejection {
            version: version.clone(),
            member: "(not readable)".into(),
            reason: error.clone(),
        },
    }
}

/// Why a raised alarm holds every turn, with the fix (`None`: no alarm). No member stops
/// under an alarm: with NOSPACE etcd serves only reads and deletes (the turn's lease and
/// records are writes, and an upgrade frees no space: the alarm is kept in the db across
/// restarts); etcd's maintenance guide ("Space quota") frees space by compacting the
/// history, defragmenting every member and then disarming. CORRUPT means a member's data
/// differs from the others': an upgrade is no fix and could spread it.
pub fn alarm_hold(alarms: &[AlarmView]) -> Option<String> {
    let alarm = alarms.first()?;
    Some(match alarm.alarm.as_str() {
        "NOSPACE" => format!(
            "alarm NOSPACE is raised on {}: etcd's db reached --quota-backend-bytes and takes only reads and deletes. Free space first, as etcd's maintenance guide says: etcdctl compact <current revision>, etcdctl defrag on each member, then etcdctl alarm disarm (or raise --quota-backend-bytes on every member); the upgrade proceeds by itself once the alarm is gone",
            alarm.member
        ),
        "CORRUPT" => format!(
            "alarm CORRUPT is raised on {}: its data differs from the other members'; no member is upgraded until it is replaced or restored from a backup and the alarm disarmed (etcdctl alarm disarm)",
            alarm.member
        ),
        other => format!(
            "alarm {other} is raised on {}; resolve it and disarm it (etcdctl alarm disarm) first",
            alarm.member
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::{MemberView, TurnView};
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn member(name: &str, version: &str, healthy: bool) -> MemberView {
        MemberView {
            name: name.into(),
            id: "1".into(),
            client_url: None,
            server_version: Some(v(version)),
            healthy,
            leader: name == "m1",
            learner: false,
            storage_version: None,
            raft_applied_index: Some(1),
            lag: Some(0),
            error: (!healthy).then(|| "connection refused".into()),
        }
    }

    fn report(members: Vec<MemberView>, cluster: &str) -> ClusterView {
        ClusterView {
            healthy: members.iter().all(|m| m.healthy),
            cluster_id: Some("abc".into()),
            cluster_version: Some(v(cluster)),
            leader: Some("m1".into()),
            members,
            alarms: vec![],
            turn: TurnView::default(),
            progress: BTreeMap::new(),
            rejected: BTreeMap::new(),
            auth_enabled: Some(false),
            rejections_read: true,
            error: None,
            pause: None,
        }
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn three(cluster: &str, versions: [&str; 3]) -> ClusterView {
        report(
            vec![
                member("m1", versions[0], true),
                member("m2", versions[1], true),
                member("m3", versions[2], true),
            ],
            cluster,
        )
    }

    #[test]
    fn healthy_cluster_minor_upgrade_proceeds() {
        let r = three("3.4.0", ["3.4.23"; 3]);
        assert_eq!(
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()),
            PreflightVerdict::Proceed
        );
    }

    #[test]
    fn an_unhealthy_member_makes_everyone_wait() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.members[2].healthy = false;
        r.members[2].error = Some("connection refused".into());
        let verdict = assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default());
        assert!(
            matches!(&verdict, PreflightVerdict::Wait(w) if w.contains("m3") && w.contains("connection refused")),
            "{verdict:?}"
        );
    }

    #[test]
    fn another_voting_member_catching_up_makes_the_turn_wait() {
        let target = v("3.5.16");
        let run = |lags: [u64; 4], learner: bool| {
            let mut r = report(
                vec![
                    member("m1", "3.5.16", true),
                    member("m2", "3.4.23", true),
                    member("m3", "3.4.23", true),
                    member("m4", "3.4.23", true),
                ],
                "3.4.0",
            );
            for (m, lag) in r.members.iter_mut().zip(lags) {
                m.lag = Some(lag);
            }
            r.members[2].learner = learner;
            assess(&r, "m2", &v("3.4.23"), &target, &Policy::default())
        };
        assert_eq!(run([0, 0, MAX_LAG, 0], false), PreflightVerdict::Proceed);
        assert_eq!(
            run([0, 0, MAX_LAG + 1, 0], false),
            PreflightVerdict::Wait(format!(
                "member m3 is catching up ({} entries behind the leader)",
                MAX_LAG + 1
            ))
        );
        // Its own lag, and a learner's, cost no quorum.
        assert_eq!(
            run([0, MAX_LAG + 1, 0, 0], false),
            PreflightVerdict::Proceed
        );
        assert_eq!(run([0, 0, MAX_LAG + 1, 0], true), PreflightVerdict::Proceed);
    }

    #[test]
    fn an_alarm_holds_with_its_fix() {
        let alarm = |a: &str| AlarmView {
            member: "m2".into(),
            alarm: a.into(),
        };
        assert_eq!(alarm_hold(&[]), None);
        let nospace = alarm_hold(&[alarm("NOSPACE")]).unwrap();
        for fix in [
            "compact",
            "defrag",
            "alarm disarm",
            "--quota-backend-bytes",
            "m2",
        ] {
            assert!(nospace.contains(fix), "{fix}: {nospace}");
        }
        let corrupt = alarm_hold(&[alarm("CORRUPT")]).unwrap();
        assert!(
            corrupt.contains("CORRUPT") && corrupt.contains("m2"),
            "{corrupt}"
        );
        assert!(!corrupt.contains("defrag"), "{corrupt}");
    }

    #[test]
    fn no_leader_alarm_unreachable_and_two_members_wait() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.leader = None;
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()), PreflightVerdict::Wait(w) if w.contains("no leader"))
        );
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.alarms.push(AlarmView {
            member: "m2".into(),
            alarm: "NOSPACE".into(),
        });
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()), PreflightVerdict::Wait(w) if w.contains("NOSPACE"))
        );
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.error = Some("no endpoint answered".into());
        assert!(matches!(
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()),
            PreflightVerdict::Wait(_)
        ));
        let r = report(
            vec![member("m1", "3.4.23", true), member("m2", "3.4.23", true)],
            "3.4.0",
        );
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()), PreflightVerdict::Wait(w) if w.contains("quorum"))
        );
    }

    #[test]
    fn single_member_cluster_may_upgrade() {
        let r = report(vec![member("m1", "3.4.23", true)], "3.4.0");
        assert_eq!(
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()),
            PreflightVerdict::Proceed
        );
    }

    #[test]
    fn path_rules_refuse_known_bad_and_rejected_even_when_unhealthy() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.members[1].healthy = false;
        assert!(
            matches!(path_only(&r, "m1", &v("3.4.23"), &v("3.5.1"), &Policy::default()), PreflightVerdict::Refuse(w) if w.contains("3.5.1"))
        );
        assert_eq!(
            path_only(
                &r,
                "m1",
                &v("3.4.23"),
                &v("3.5.1"),
                &Policy {
                    allow_known_bad: vec![v("3.5.1")],
                    ..Policy::default()
                }
            ),
            PreflightVerdict::Proceed
        );
        r.rejected.insert(
            v("3.5.16"),
            Stored::Read(RejectionRecord::new(
                "m2",
                "did not come up",
                SystemTime::now(),
            )),
        );
        assert!(
            matches!(path_only(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default()), PreflightVerdict::Refuse(w) if w.contains("m2") && w.contains("did not come up"))
        );
    }

    #[test]
    fn a_rejection_whose_record_is_unreadable_or_newer_still_refuses() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.rejected
            .insert(v("3.5.16"), Stored::decode(b"\x00 written by hand"));
        let verdict = path_only(&r, "m1", &v("3.4.23"), &v("3.5.16"), &Policy::default());
        assert!(
            matches!(&verdict, PreflightVerdict::Refuse(w) if w.contains("3.5.16") && w.contains("unreadable record")),
            "{verdict:?}"
        );
        r.rejected.insert(
            v("3.5.17"),
            Stored::decode(br#"{"schema":3,"member":"m3","reason":"corrupt","extra":[1]}"#),
        );
        let verdict = path_only(&r, "m1", &v("3.4.23"), &v("3.5.17"), &Policy::default());
        assert!(
            matches!(&verdict, PreflightVerdict::Refuse(w) if w.contains("m3") && w.contains("corrupt")),
            "{verdict:?}"
        );
        // Other versions are not affected.
        assert_eq!(
            path_only(&r, "m1", &v("3.4.23"), &v("3.5.15"), &Policy::default()),
            PreflightVerdict::Proceed
        );
    }

    #[test]
    fn downgrade_after_the_cluster_version_moved_is_refused() {
        let r = three("3.5.0", ["3.5.16"; 3]);
        assert!(matches!(
            assess(&r, "m1", &v("3.5.16"), &v("3.4.23"), &Policy::default()),
            PreflightVerdict::Refuse(_)
        ));
    }
}
