//! Preflight: may this member take its turn now? A plain function over the same
//! [`ClusterReport`] that `status` shows, plus the upgrade-path rules.
//!
//! The cluster must be healthy before a member stops: every member reachable and healthy,
//! a leader, no alarm, and losing this member must keep quorum. A one-member cluster has no
//! quorum to keep (its upgrade is a short outage by nature) and is allowed; a two-member
//! cluster loses quorum with either member down and waits, saying so.

use super::path::{self, Decision, PathInput, Peer, Rejection};
use crate::cluster::view::ClusterReport;
use crate::versions::Version;

/// What preflight concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
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
    report: &ClusterReport,
    member: &str,
    running: &Version,
    target: &Version,
    allow_known_bad: &[Version],
) -> Verdict {
    let input = path_input(report, member, running, target, allow_known_bad);
    match path::decide(&input) {
        Decision::Proceed(_) => Verdict::Proceed,
        Decision::AlreadyRunning => Verdict::Wait(format!("{target} is already running")),
        Decision::Wait(why) => Verdict::Wait(why.to_string()),
        Decision::Refuse(why) => Verdict::Refuse(why.to_string()),
    }
}

/// The full preflight: cluster health, quorum, then the path rules.
pub fn assess(
    report: &ClusterReport,
    member: &str,
    running: &Version,
    target: &Version,
    allow_known_bad: &[Version],
) -> Verdict {
    if let Some(err) = &report.error {
        return Verdict::Wait(format!("the cluster cannot be reached: {err}"));
    }
    if !report.members.iter().any(|m| m.name == member) {
        return Verdict::Wait(format!(
            "member {member} is not in the cluster's member list yet"
        ));
    }
    if let Some(sick) = report.members.iter().find(|m| !m.healthy) {
        let why = sick
            .error
            .clone()
            .unwrap_or_else(|| "/health is false".into());
        return Verdict::Wait(format!("member {} is not healthy ({why})", sick.name));
    }
    if report.leader.is_none() {
        return Verdict::Wait("the cluster has no leader".into());
    }
    if let Some(alarm) = report.alarms.first() {
        return Verdict::Wait(format!(
            "alarm {} is raised on {}; resolve it and disarm it (etcdctl alarm disarm) first",
            alarm.alarm, alarm.member
        ));
    }
    let n = report.members.len();
    let quorum = n / 2 + 1;
    if n > 1 && n - 1 < quorum {
        return Verdict::Wait(format!(
            "stopping one of {n} members would lose quorum ({quorum} needed); add a member first"
        ));
    }
    path_only(report, member, running, target, allow_known_bad)
}

fn path_input(
    report: &ClusterReport,
    member: &str,
    running: &Version,
    target: &Version,
    allow_known_bad: &[Version],
) -> PathInput {
    let mut input = PathInput::new(running.clone(), target.clone());
    input.cluster_version = report
        .cluster_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    input.peers = report
        .members
        .iter()
        .filter(|m| m.name != member)
        .map(|m| Peer {
            name: m.name.clone(),
            version: m.server_version.as_deref().and_then(|v| v.parse().ok()),
        })
        .collect();
    input.allow_known_bad = allow_known_bad.to_vec();
    input.rejected = report
        .rejected
        .iter()
        .filter_map(|(version, record)| {
            Some(Rejection {
                version: version.parse().ok()?,
                member: record
                    .get("member")
                    .and_then(|m| m.as_str())
                    .unwrap_or("?")
                    .to_owned(),
                reason: record
                    .get("reason")
                    .and_then(|m| m.as_str())
                    .unwrap_or("?")
                    .to_owned(),
            })
        })
        .collect();
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::{AlarmReport, MemberReport, TurnReport};
    use std::collections::BTreeMap;

    fn member(name: &str, version: &str, healthy: bool) -> MemberReport {
        MemberReport {
            name: name.into(),
            id: "1".into(),
            client_url: None,
            server_version: Some(version.into()),
            healthy,
            leader: name == "m1",
            learner: false,
            raft_applied_index: Some(1),
            lag: Some(0),
            error: (!healthy).then(|| "connection refused".into()),
        }
    }

    fn report(members: Vec<MemberReport>, cluster: &str) -> ClusterReport {
        ClusterReport {
            healthy: members.iter().all(|m| m.healthy),
            cluster_id: Some("abc".into()),
            cluster_version: Some(cluster.into()),
            leader: Some("m1".into()),
            members,
            alarms: vec![],
            turn: TurnReport::default(),
            progress: BTreeMap::new(),
            rejected: BTreeMap::new(),
            error: None,
        }
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn three(cluster: &str, versions: [&str; 3]) -> ClusterReport {
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
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]),
            Verdict::Proceed
        );
    }

    #[test]
    fn an_unhealthy_member_makes_everyone_wait() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.members[2].healthy = false;
        r.members[2].error = Some("connection refused".into());
        let verdict = assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]);
        assert!(
            matches!(&verdict, Verdict::Wait(w) if w.contains("m3") && w.contains("connection refused")),
            "{verdict:?}"
        );
    }

    #[test]
    fn no_leader_alarm_unreachable_and_two_members_wait() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.leader = None;
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]), Verdict::Wait(w) if w.contains("no leader"))
        );
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.alarms.push(AlarmReport {
            member: "m2".into(),
            alarm: "NOSPACE".into(),
        });
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]), Verdict::Wait(w) if w.contains("NOSPACE"))
        );
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.error = Some("no endpoint answered".into());
        assert!(matches!(
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]),
            Verdict::Wait(_)
        ));
        let r = report(
            vec![member("m1", "3.4.23", true), member("m2", "3.4.23", true)],
            "3.4.0",
        );
        assert!(
            matches!(assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]), Verdict::Wait(w) if w.contains("quorum"))
        );
    }

    #[test]
    fn single_member_cluster_may_upgrade() {
        let r = report(vec![member("m1", "3.4.23", true)], "3.4.0");
        assert_eq!(
            assess(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]),
            Verdict::Proceed
        );
    }

    #[test]
    fn path_rules_refuse_known_bad_and_rejected_even_when_unhealthy() {
        let mut r = three("3.4.0", ["3.4.23"; 3]);
        r.members[1].healthy = false;
        assert!(
            matches!(path_only(&r, "m1", &v("3.4.23"), &v("3.5.1"), &[]), Verdict::Refuse(w) if w.contains("3.5.1"))
        );
        assert_eq!(
            path_only(&r, "m1", &v("3.4.23"), &v("3.5.1"), &[v("3.5.1")]),
            Verdict::Proceed
        );
        r.rejected.insert(
            "3.5.16".into(),
            serde_json::json!({"member": "m2", "reason": "did not come up"}),
        );
        assert!(
            matches!(path_only(&r, "m1", &v("3.4.23"), &v("3.5.16"), &[]), Verdict::Refuse(w) if w.contains("m2"))
        );
    }

    #[test]
    fn downgrade_after_the_cluster_version_moved_is_refused() {
        let r = three("3.5.0", ["3.5.16"; 3]);
        assert!(matches!(
            assess(&r, "m1", &v("3.5.16"), &v("3.4.23"), &[]),
            Verdict::Refuse(_)
        ));
    }
}
