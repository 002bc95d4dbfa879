//! `etcd-supervisor status`: members, versions, health, raft progress, the cluster version,
//! alarms, the upgrade turn, and each supervisor's progress record.
//!
//! Gathering talks to every member concurrently; [`build_report`] and [`render`] are plain
//! functions over what was gathered, so the report's logic is tested without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::lock::{self, TurnConfig};
use crate::etcd::cluster::Member;
use crate::etcd::maintenance::{Alarm, EtcdVersion, Status};
use crate::etcd::{Client, EtcdError};

/// One member as seen by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    /// Member name.
    pub name: String,
    /// Member id, hex as etcdctl prints it.
    pub id: String,
    /// First client URL.
    pub client_url: Option<String>,
    /// Server version it reports.
    pub server_version: Option<String>,
    /// `/health` answered true.
    pub healthy: bool,
    /// It is the raft leader.
    pub leader: bool,
    /// It is a learner.
    pub learner: bool,
    /// Raft applied index.
    pub raft_applied_index: Option<u64>,
    /// How far its applied index is behind the leader's.
    pub lag: Option<u64>,
    /// Why it could not be asked, if it could not.
    pub error: Option<String>,
}

/// Who holds the upgrade turn and who waits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnReport {
    /// The holder.
    pub holder: Option<String>,
    /// Waiters in queue order.
    pub waiting: Vec<String>,
}

/// A raised alarm, with the member named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmReport {
    /// Member name (or id when unknown).
    pub member: String,
    /// Alarm name (NOSPACE, CORRUPT).
    pub alarm: String,
}

/// The whole report; its JSON form is the stable output of `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    /// Every member healthy and the cluster reachable.
    pub healthy: bool,
    /// Cluster id, hex.
    pub cluster_id: Option<String>,
    /// Cluster version (X.Y.0), as the members report it.
    pub cluster_version: Option<String>,
    /// Name of the leader.
    pub leader: Option<String>,
    /// Members in member-list order.
    pub members: Vec<MemberReport>,
    /// Raised alarms.
    pub alarms: Vec<AlarmReport>,
    /// The upgrade turn.
    pub turn: TurnReport,
    /// `members/<name>` progress records written by each supervisor.
    pub progress: BTreeMap<String, serde_json::Value>,
    /// Versions marked rejected for the whole cluster (`rejected/<version>`).
    pub rejected: BTreeMap<String, serde_json::Value>,
    /// Why the cluster could not be asked at all.
    pub error: Option<String>,
}

/// What one member answered.
#[derive(Debug)]
pub struct Probe {
    /// maintenance/status.
    pub status: Result<Status, EtcdError>,
    /// /health.
    pub health: Result<bool, EtcdError>,
    /// /version.
    pub version: Result<EtcdVersion, EtcdError>,
}

/// Everything gathered from the cluster besides the members' own answers.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Cluster id from the member list's header.
    pub cluster_id: u64,
    /// Raised alarms.
    pub alarms: Vec<Alarm>,
    /// The turn's queue, holder first.
    pub queue: Vec<String>,
    /// Progress records by member name.
    pub progress: BTreeMap<String, serde_json::Value>,
    /// Rejected versions.
    pub rejected: BTreeMap<String, serde_json::Value>,
}

/// Builds the report from the member list and each member's answers (same order).
pub fn build_report(members: &[Member], probes: Vec<Probe>, gathered: Gathered) -> ClusterReport {
    let leader_id = probes
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .map(|s| s.leader)
        .find(|id| *id != 0);
    let leader_applied = probes
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .find(|s| Some(s.header.member_id) == leader_id)
        .map(|s| s.raft_applied_index);
    let name_of = |id: u64| {
        members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("{id:x}"))
    };
    let cluster_version = probes
        .iter()
        .filter_map(|p| p.version.as_ref().ok())
        .map(|v| v.cluster.clone())
        .find(|v| !v.is_empty());
    let reports: Vec<MemberReport> = members
        .iter()
        .zip(probes)
        .map(|(m, p)| {
            let error = [
                p.status.as_ref().err(),
                p.health.as_ref().err(),
                p.version.as_ref().err(),
            ]
            .into_iter()
            .flatten()
            .next()
            .map(ToString::to_string);
            let applied = p.status.as_ref().ok().map(|s| s.raft_applied_index);
            MemberReport {
                name: m.name.clone(),
                id: format!("{:x}", m.id),
                client_url: m.client_urls.first().cloned(),
                server_version: p.version.as_ref().ok().map(|v| v.server.clone()),
                healthy: matches!(p.health, Ok(true)),
                leader: Some(m.id) == leader_id,
                learner: m.is_learner,
                raft_applied_index: applied,
                lag: applied
                    .zip(leader_applied)
                    .map(|(a, l)| l.saturating_sub(a)),
                error,
            }
        })
        .collect();
    let mut queue = gathered.queue.into_iter();
    ClusterReport {
        healthy: !reports.is_empty() && reports.iter().all(|m| m.healthy),
        cluster_id: Some(format!("{:x}", gathered.cluster_id)).filter(|_| gathered.cluster_id != 0),
        cluster_version,
        leader: leader_id.map(name_of),
        alarms: gathered
            .alarms
            .iter()
            .map(|a| AlarmReport {
                member: name_of(a.member_id),
                alarm: a.alarm.to_string(),
            })
            .collect(),
        members: reports,
        turn: TurnReport {
            holder: queue.next(),
            waiting: queue.collect(),
        },
        progress: gathered.progress,
        rejected: gathered.rejected,
        error: None,
    }
}

/// The report for a cluster that could not be asked at all.
pub fn unreachable_report(error: &EtcdError) -> ClusterReport {
    ClusterReport {
        healthy: false,
        cluster_id: None,
        cluster_version: None,
        leader: None,
        members: Vec::new(),
        alarms: Vec::new(),
        turn: TurnReport::default(),
        progress: BTreeMap::new(),
        rejected: BTreeMap::new(),
        error: Some(error.to_string()),
    }
}

/// Asks the cluster for everything `status` shows.
pub async fn gather(client: &Client, key_prefix: &str) -> ClusterReport {
    let list = match client.member_list().await {
        Ok(list) => list,
        Err(e) => return unreachable_report(&e),
    };
    let probes = join_all(list.members.iter().map(|m| probe(client, m))).await;
    let turn_cfg = TurnConfig {
        key_prefix: key_prefix.to_owned(),
        ttl: Duration::from_secs(1),
        member: String::new(),
    };
    let records = |sub: &'static str| {
        let prefix = format!("{key_prefix}{sub}");
        async move {
            let kvs = client
                .get_prefix(prefix.clone().into_bytes())
                .await
                .map(|r| r.kvs)
                .unwrap_or_default();
            kvs.into_iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(&kv.key);
                    let name = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
                    let value = serde_json::from_slice(&kv.value).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&kv.value).into_owned())
                    });
                    (name, value)
                })
                .collect::<BTreeMap<_, _>>()
        }
    };
    let gathered = Gathered {
        cluster_id: list.header.cluster_id,
        alarms: client.alarms().await.unwrap_or_default(),
        queue: lock::queue(client, &turn_cfg)
            .await
            .map(|q| q.members)
            .unwrap_or_default(),
        progress: records("members/").await,
        rejected: records("rejected/").await,
    };
    build_report(&list.members, probes, gathered)
}

async fn probe(client: &Client, member: &Member) -> Probe {
    let Some(url) = member.client_urls.first() else {
        let none =
            || EtcdError::InvalidRequest("member has no client URL (not started yet?)".into());
        return Probe {
            status: Err(none()),
            health: Err(none()),
            version: Err(none()),
        };
    };
    let (status, health, version) = tokio::join!(
        client.status_of(url),
        client.health_of(url),
        client.version_of(url)
    );
    Probe {
        status,
        health,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::maintenance::AlarmKind;
    use crate::etcd::ResponseHeader;

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![],
            client_urls: vec![format!("http://127.0.0.1:{id}")],
            is_learner: false,
        }
    }

    fn up(id: u64, leader: u64, applied: u64, version: &str) -> Probe {
        Probe {
            status: Ok(Status {
                header: ResponseHeader {
                    member_id: id,
                    ..Default::default()
                },
                version: version.into(),
                leader,
                raft_applied_index: applied,
                ..Default::default()
            }),
            health: Ok(true),
            version: Ok(EtcdVersion {
                server: version.into(),
                cluster: "3.5.0".into(),
            }),
        }
    }

    fn down() -> Probe {
        let err = || EtcdError::InvalidRequest("connection refused".into());
        Probe {
            status: Err(err()),
            health: Err(err()),
            version: Err(err()),
        }
    }

    #[test]
    fn lag_leader_and_turn_are_derived() {
        let members = [member(1, "m1"), member(2, "m2"), member(3, "m3")];
        let report = build_report(
            &members,
            vec![
                up(1, 2, 90, "3.5.16"),
                up(2, 2, 100, "3.5.16"),
                up(3, 2, 100, "3.5.30"),
            ],
            Gathered {
                cluster_id: 0xabc,
                alarms: vec![Alarm {
                    member_id: 3,
                    alarm: AlarmKind::NoSpace,
                }],
                queue: vec!["m3".into(), "m1".into()],
                ..Default::default()
            },
        );
        assert!(report.healthy);
        assert_eq!(report.leader.as_deref(), Some("m2"));
        assert_eq!(report.cluster_id.as_deref(), Some("abc"));
        assert_eq!(report.cluster_version.as_deref(), Some("3.5.0"));
        assert_eq!(report.members[0].lag, Some(10));
        assert!(report.members[1].leader);
        assert_eq!(report.alarms[0].member, "m3");
        assert_eq!(report.turn.holder.as_deref(), Some("m3"));
        assert_eq!(report.turn.waiting, ["m1"]);
        let text = crate::commands::status::render(&report);
        assert!(
            text.contains("upgrade turn: held by m3; waiting: m1"),
            "{text}"
        );
        assert!(text.contains("alarms: NOSPACE on m3"), "{text}");
    }

    #[test]
    fn a_member_down_makes_the_report_unhealthy_and_says_why() {
        let members = [member(1, "m1"), member(2, "m2")];
        let report = build_report(
            &members,
            vec![up(1, 1, 5, "3.4.23"), down()],
            Gathered::default(),
        );
        assert!(!report.healthy);
        assert!(!report.members[1].healthy);
        assert_eq!(report.members[1].lag, None);
        assert!(report.members[1]
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused"));
        let text = crate::commands::status::render(&report);
        assert!(text.contains("UNHEALTHY"), "{text}");
        assert!(text.contains("m2: "), "{text}");
        assert!(text.contains("upgrade turn: free"), "{text}");
    }
}
