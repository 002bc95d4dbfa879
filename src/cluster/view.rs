//! `etcd-supervisor status`'s data: members, versions, health, raft progress, the cluster
//! version, alarms, the upgrade turn, and each supervisor's records, gathered into typed
//! data ([`ClusterView`]) that preflight judges and `status` renders; its JSON form is the
//! stable output of `status --json`.
//!
//! Gathering talks to every member concurrently; [`build_view`] is a plain function over
//! what was gathered, so the view's logic is tested without a cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::keys::Keys;
use crate::cluster::lock::{self, LockConfig};
use crate::cluster::records::{MemberRecord, PauseRecord, RejectionRecord, Stored};
use crate::etcd::cluster::Member;
use crate::etcd::maintenance::{Alarm, EtcdVersion, Status};
use crate::etcd::{Client, EtcdError};
use crate::versions::Version;

/// One member as seen by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// Member name.
    pub name: String,
    /// Member id, hex as etcdctl prints it.
    pub id: String,
    /// First client URL.
    pub client_url: Option<String>,
    /// Server version it reports (`None` when it did not answer).
    pub server_version: Option<Version>,
    /// `/health` answered true.
    pub healthy: bool,
    /// It is the raft leader.
    pub leader: bool,
    /// It is a learner.
    pub learner: bool,
    /// Version of its storage schema (3.6+ reports it; `None` before).
    pub storage_version: Option<String>,
    /// Raft applied index.
    pub raft_applied_index: Option<u64>,
    /// How far its applied index is behind the leader's.
    pub lag: Option<u64>,
    /// Why it could not be asked, if it could not.
    pub error: Option<String>,
}

/// Who holds the upgrade turn and who waits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnView {
    /// The holder.
    pub holder: Option<String>,
    /// Waiters in queue order.
    pub waiting: Vec<String>,
}

/// A raised alarm, with the member named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmView {
    /// Member name (or id when unknown).
    pub member: String,
    /// Alarm name (NOSPACE, CORRUPT).
    pub alarm: String,
}

/// The whole cluster, typed; its JSON form is the stable output of `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// Every member healthy and the cluster reachable.
    pub healthy: bool,
    /// Cluster id, hex.
    pub cluster_id: Option<String>,
    /// Cluster version (X.Y.0), as the members report it; `None` until it is decided.
    pub cluster_version: Option<Version>,
    /// Name of the leader.
    pub leader: Option<String>,
    /// Members in member-list order.
    pub members: Vec<MemberView>,
    /// Raised alarms.
    pub alarms: Vec<AlarmView>,
    /// The upgrade turn.
    pub turn: TurnView,
    /// `members/<name>` progress records written by each supervisor, by member name.
    pub progress: BTreeMap<String, Stored<MemberRecord>>,
    /// Versions marked rejected for the whole cluster (`rejected/<version>`).
    pub rejected: BTreeMap<Version, Stored<RejectionRecord>>,
    /// Whether etcd's auth is enabled (`None`: could not be told).
    pub auth_enabled: Option<bool>,
    /// The `rejected/` records could be read (when not, a rejection may be missed, so
    /// preflight waits).
    pub rejections_read: bool,
    /// Why the cluster could not be asked at all.
    pub error: Option<String>,
    /// The `pause` key: upgrades are paused cluster-wide (a key that cannot be read or
    /// holds something else counts as paused: it holds rather than rolls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Stored<PauseRecord>>,
}

impl ClusterView {
    /// Why no turn may start because of the pause, one line; `None` when not paused.
    pub fn paused(&self) -> Option<String> {
        if let Some(err) = &self.error {
            return Some(format!(
                "cannot tell whether upgrades are paused: cluster unreachable: {err}"
            ));
        }
        match self.pause.as_ref()? {
            Stored::Read(p) => Some(p.describe()),
            Stored::Unreadable { error, .. } => Some(format!("paused (the pause key: {error})")),
        }
    }
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
#[derive(Debug)]
pub struct Gathered {
    /// Cluster id from the member list's header.
    pub cluster_id: u64,
    /// Raised alarms.
    pub alarms: Vec<Alarm>,
    /// The turn's queue, holder first.
    pub queue: Vec<String>,
    /// Progress records by member name.
    pub progress: BTreeMap<String, Stored<MemberRecord>>,
    /// Rejected versions.
    pub rejected: BTreeMap<Version, Stored<RejectionRecord>>,
    /// The rejected versions could be listed.
    pub rejections_read: bool,
    /// Whether auth is enabled, when it could be told.
    pub auth_enabled: Option<bool>,
}

impl Default for Gathered {
    /// Nothing gathered: no alarms, no queue, no records (an empty `rejected/` read).
    fn default() -> Self {
        Self {
            cluster_id: 0,
            alarms: Vec::new(),
            queue: Vec::new(),
            progress: BTreeMap::new(),
            rejected: BTreeMap::new(),
            rejections_read: true,
            auth_enabled: None,
        }
    }
}

/// Builds the view from the member list and each member's answers (same order).
pub fn build_view(members: &[Member], probes: Vec<Probe>, gathered: Gathered) -> ClusterView {
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
        .find_map(|v| v.cluster.parse().ok());
    let views: Vec<MemberView> = members
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
            MemberView {
                name: m.name.clone(),
                id: format!("{:x}", m.id),
                client_url: m.client_urls.first().cloned(),
                server_version: p.version.as_ref().ok().and_then(|v| v.server.parse().ok()),
                healthy: matches!(p.health, Ok(true)),
                leader: Some(m.id) == leader_id,
                learner: m.is_learner,
                storage_version: p
                    .status
                    .as_ref()
                    .ok()
                    .map(|s| s.storage_version.clone())
                    .filter(|v| !v.is_empty())
                    .or_else(|| {
                        let v = p.version.as_ref().ok()?;
                        Some(v.storage.clone()).filter(|v| !v.is_empty())
                    }),
                raft_applied_index: applied,
                lag: applied
                    .zip(leader_applied)
                    .map(|(a, l)| l.saturating_sub(a)),
                error,
            }
        })
        .collect();
    let mut queue = gathered.queue.into_iter();
    ClusterView {
        healthy: !views.is_empty() && views.iter().all(|m| m.healthy),
        cluster_id: Some(format!("{:x}", gathered.cluster_id)).filter(|_| gathered.cluster_id != 0),
        cluster_version,
        leader: leader_id.map(name_of),
        alarms: gathered
            .alarms
            .iter()
            .map(|a| AlarmView {
                member: name_of(a.member_id),
                alarm: a.alarm.to_string(),
            })
            .collect(),
        members: views,
        turn: TurnView {
            holder: queue.next(),
            waiting: queue.collect(),
        },
        progress: gathered.progress,
        rejected: gathered.rejected,
        auth_enabled: gathered.auth_enabled,
        rejections_read: gathered.rejections_read,
        error: None,
        pause: None,
    }
}

/// The view of a cluster that could not be asked at all.
pub fn unreachable(error: &EtcdError) -> ClusterView {
    ClusterView {
        healthy: false,
        cluster_id: None,
        cluster_version: None,
        leader: None,
        members: Vec::new(),
        alarms: Vec::new(),
        turn: TurnView::default(),
        progress: BTreeMap::new(),
        rejected: BTreeMap::new(),
        auth_enabled: None,
        rejections_read: false,
        error: Some(error.to_string()),
        pause: None,
    }
}

/// Asks the cluster for everything `status` shows and preflight judges.
pub async fn gather(client: &Client, key_prefix: &str) -> ClusterView {
    let list = match client.member_list().await {
        Ok(list) => list,
        Err(e) => return unreachable(&e),
    };
    let probes = join_all(list.members.iter().map(|m| probe(client, m))).await;
    let keys = Keys::new(key_prefix);
    let lock_cfg = LockConfig {
        key_prefix: key_prefix.to_owned(),
        ttl: Duration::from_secs(1),
        member: String::new(),
    };
    let under =
        |prefix: String| async move { client.get_prefix(prefix.into_bytes()).await.map(|r| r.kvs) };
    let progress = under(keys.members_prefix())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| Some((keys.member_name(&kv.key)?, Stored::decode(&kv.value))))
        .collect();
    let rejected_kvs = under(keys.rejected_prefix()).await;
    let rejections_read = rejected_kvs.is_ok();
    let rejected = rejected_kvs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            let version = keys.rejected_version(&kv.key);
            if version.is_none() {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "ignoring a rejection whose key names no version");
            }
            Some((version?, Stored::decode(&kv.value)))
        })
        .collect();
    let gathered = Gathered {
        cluster_id: list.header.cluster_id,
        alarms: alarms(client).await,
        queue: lock::queue(client, &lock_cfg)
            .await
            .map(|q| q.members)
            .unwrap_or_default(),
        progress,
        rejected,
        rejections_read,
        auth_enabled: client.auth_enabled().await.ok(),
    };
    let pause = match client.get(keys.pause().into_bytes()).await {
        Ok(kv) => kv.map(|kv| Stored::decode(&kv.value)),
        Err(e) => Some(Stored::Unreadable {
            raw: String::new(),
            error: format!("cannot be read: {e}"),
        }),
    };
    ClusterView {
        pause,
        ..build_view(&list.members, probes, gathered)
    }
}

/// One attempt at the alarm list may wait out the whole request timeout: it goes through
/// raft, and a proposal dropped in a leader change (a swap next door) is never answered.
/// Short attempts, retried, find the new leader instead.
const ALARM_ATTEMPT: Duration = Duration::from_millis(1500);

/// The raised alarms; none when they cannot be read (as before: preflight's other checks
/// still see an unhealthy cluster).
async fn alarms(client: &Client) -> Vec<Alarm> {
    for _ in 0..3 {
        if let Ok(Ok(alarms)) = tokio::time::timeout(ALARM_ATTEMPT, client.alarms()).await {
            return alarms;
        }
    }
    Vec::new()
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
                storage: String::new(),
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
        let view = build_view(
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
        assert!(view.healthy);
        assert_eq!(view.leader.as_deref(), Some("m2"));
        assert_eq!(view.cluster_id.as_deref(), Some("abc"));
        assert_eq!(view.cluster_version, Some(Version::new(3, 5, 0)));
        assert_eq!(view.members[0].lag, Some(10));
        assert!(view.members[1].leader);
        assert_eq!(view.alarms[0].member, "m3");
        assert_eq!(view.turn.holder.as_deref(), Some("m3"));
        assert_eq!(view.turn.waiting, ["m1"]);
        let text = crate::commands::status::render(&view);
        assert!(
            text.contains("upgrade turn: held by m3; waiting: m1"),
            "{text}"
        );
        assert!(text.contains("alarms: NOSPACE on m3"), "{text}");
    }

    #[test]
    fn a_member_down_makes_the_report_unhealthy_and_says_why() {
        let members = [member(1, "m1"), member(2, "m2")];
        let view = build_view(
            &members,
            vec![up(1, 1, 5, "3.4.23"), down()],
            Gathered::default(),
        );
        assert!(!view.healthy);
        assert!(!view.members[1].healthy);
        assert_eq!(view.members[1].lag, None);
        assert!(view.members[1]
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused"));
        let text = crate::commands::status::render(&view);
        assert!(text.contains("UNHEALTHY"), "{text}");
        assert!(text.contains("m2: "), "{text}");
        assert!(text.contains("upgrade turn: free"), "{text}");
    }

    #[test]
    fn versions_are_typed_and_an_undecided_cluster_version_is_none() {
        let members = [member(1, "m1")];
        let mut probe = up(1, 1, 5, "3.4.23");
        if let Ok(v) = &mut probe.version {
            v.cluster = "not_decided".into();
        }
        let view = build_view(&members, vec![probe], Gathered::default());
        assert_eq!(view.cluster_version, None);
        assert_eq!(view.members[0].server_version, Some(Version::new(3, 4, 23)));
    }

    /// The JSON of `status --json` keeps the shape scripts and tests parse: versions as
    /// strings, records under their member name and version as the records' own JSON, an
    /// unreadable record as its text.
    #[test]
    fn the_json_form_keeps_its_shape() {
        use crate::cluster::records::{MemberRecord, RejectionRecord, Stored};
        let members = [member(1, "m1")];
        let mut gathered = Gathered {
            cluster_id: 0xabc,
            queue: vec!["m1".into()],
            ..Default::default()
        };
        gathered.progress.insert(
            "m1".into(),
            Stored::decode(
                br#"{"last_error":null,"member":"m1","running":"3.4.23","since":"2026-11-29T10:00:00Z","staged":"3.5.16","state":"queued"}"#,
            ),
        );
        gathered
            .progress
            .insert("m9".into(), Stored::<MemberRecord>::decode(b"junk"));
        gathered.rejected.insert(
            Version::new(3, 5, 1),
            Stored::<RejectionRecord>::decode(br#"{"member":"m1","reason":"r","time":"t"}"#),
        );
        let view = build_view(&members, vec![up(1, 1, 7, "3.4.23")], gathered);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "healthy": true,
                "cluster_id": "abc",
                "cluster_version": "3.5.0",
                "leader": "m1",
                "members": [{
                    "name": "m1", "id": "1", "client_url": "http://127.0.0.1:1",
                    "server_version": "3.4.23", "healthy": true, "leader": true,
                    "learner": false, "storage_version": null, "raft_applied_index": 7,
                    "lag": 0, "error": null,
                }],
                "alarms": [],
                "turn": {"holder": "m1", "waiting": []},
                "progress": {
                    "m1": {
                        "schema": 1, "member": "m1", "running": "3.4.23", "staged": "3.5.16",
                        "state": "queued", "since": "2026-11-29T10:00:00Z", "last_error": null,
                    },
                    "m9": "junk",
                },
                "rejected": {
                    "3.5.1": {"schema": 1, "member": "m1", "reason": "r", "time": "t"},
                },
                "auth_enabled": null,
                "rejections_read": true,
                "error": null,
            })
        );
        let text = crate::commands::status::render(&view);
        assert!(
            text.contains("rejected: 3.5.1 (failed on m1 at t): r"),
            "{text}"
        );
        assert!(
            text.contains("note: progress record of m9: unreadable record"),
            "{text}"
        );
    }

    #[test]
    fn status_says_when_a_record_comes_from_a_newer_supervisor() {
        let members = [member(1, "m1")];
        let mut gathered = Gathered::default();
        gathered.progress.insert(
            "m1".into(),
            Stored::decode(br#"{"schema":2,"member":"m1","state":"draining","new":true}"#),
        );
        let view = build_view(&members, vec![up(1, 1, 7, "3.4.23")], gathered);
        let text = crate::commands::status::render(&view);
        assert!(
            text.contains(
                "note: progress record of m1 was written by a newer supervisor (schema 2"
            ),
            "{text}"
        );
        assert!(text.contains("draining"), "{text}");
    }
}
