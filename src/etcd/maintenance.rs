//! Maintenance calls (`etcdserverpb.Maintenance`): member status, alarms, leadership
//! transfer, HashKV, downgrade; and the plain `/health` and `/version` endpoints of one
//! member, which stay on HTTP because etcd serves them on its client URL even with the
//! gateway off.
//!
//! HashKV is served over gRPC by every supported version (3.4 included); callers still treat
//! "cannot answer" as "not compared". Downgrade exists from 3.6 on (3.5 knows the call but
//! refuses to enable it).
//!
//! Leader-only calls (transfer-leadership) must reach the current leader: the leader is
//! found through status and the member list, and the call is sent to its client URL.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, DowngradeOptions};
use serde::Deserialize;

use super::client::{Client, Retry, Rpc};
use super::error::EtcdError;
use super::kv::{header, ResponseHeader};

/// One member's view of itself and the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The response header; `member_id` is the member that answered.
    pub header: ResponseHeader,
    /// The member's etcd version ("3.5.16").
    pub version: String,
    /// Size of its database file, in bytes.
    pub db_size: i64,
    /// Bytes of the database in use (the rest is free pages a defragment would return).
    pub db_size_in_use: i64,
    /// The id of the leader it knows (0: none).
    pub leader: u64,
    /// Its raft index.
    pub raft_index: u64,
    /// Its raft term.
    pub raft_term: u64,
    /// Its applied raft index (compare with the leader's to see it caught up).
    pub raft_applied_index: u64,
    /// Errors it reports, e.g. "memberID:10405928607036884643 alarm:NOSPACE ".
    pub errors: Vec<String>,
    /// True when it is a learner.
    pub is_learner: bool,
    /// The version of its db file's schema (3.6+; empty before): it may lag the cluster
    /// version, and it is what a 3.6 downgrade has to move back.
    pub storage_version: String,
    /// The cluster's downgrade, as this member knows it (3.6+; `None` before).
    pub downgrade: Option<DowngradeInfo>,
}

/// A downgrade of the cluster version (etcd 3.6+ `StatusResponse.downgradeInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DowngradeInfo {
    /// True while a downgrade is enabled (between `downgrade enable` and its completion or
    /// cancellation).
    pub enabled: bool,
    /// The version the cluster is being downgraded to ("3.5.0"); empty when none.
    pub target_version: String,
}

/// What a downgrade call asks for (`etcdctl downgrade validate|enable|cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DowngradeAction {
    /// Check that the cluster can be downgraded to the version; changes nothing.
    Validate,
    /// Start the downgrade: the cluster version moves to the target at once.
    Enable,
    /// Cancel a downgrade under way.
    Cancel,
}

impl Status {
    /// The id of the member that answered.
    pub fn member_id(&self) -> u64 {
        self.header.member_id
    }

    /// True when the member that answered is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.header.member_id
    }
}

/// Which alarm is raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmKind {
    /// The database hit its quota: writes are refused until space is freed and the alarm
    /// disarmed.
    NoSpace,
    /// A corruption check failed.
    Corrupt,
    /// Any other name etcd may report.
    Other(String),
}

impl AlarmKind {
    fn from_pb(alarm: AlarmType) -> Self {
        match alarm {
            AlarmType::Nospace => AlarmKind::NoSpace,
            AlarmType::Corrupt => AlarmKind::Corrupt,
            other => AlarmKind::Other(other.as_str_name().to_owned()),
        }
    }
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmKind::NoSpace => f.write_str("NOSPACE"),
            AlarmKind::Corrupt => f.write_str("CORRUPT"),
            AlarmKind::Other(s) => f.write_str(s),
        }
    }
}

/// A raised alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// The alarm.
    pub alarm: AlarmKind,
}

/// The current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Its member id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The client URL to reach it at (one of the client's endpoints when it has one).
    pub endpoint: String,
}

/// `/version` of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EtcdVersion {
    /// The member's own version ("3.5.16").
    #[serde(rename = "etcdserver", default)]
    pub server: String,
    /// The cluster version, always "X.Y.0"; it moves only once every member runs the
    /// new minor ("not_decided" while a new member has not learned it yet).
    #[serde(rename = "etcdcluster", default)]
    pub cluster: String,
    /// The version of the member's storage schema (3.6+; empty before).
    #[serde(default)]
    pub storage: String,
}

/// HashKV of one member: a hash of its key-value history up to a revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashKv {
    /// The response header; `revision` is the member's current revision.
    pub header: ResponseHeader,
    /// The hash (a JSON number on the wire).
    pub hash: u32,
    /// The compaction revision the hash starts after: equal hashes mean something only
    /// between members with the same one.
    pub compact_revision: i64,
}

#[derive(Deserialize)]
struct HealthBody {
    #[serde(default)]
    health: String,
}

impl Client {
    /// Status of whichever member answers first (failover across endpoints).
    pub async fn status(&self) -> Result<Status, EtcdError> {
        self.call(
            "status",
            Retry::Idempotent,
            self.request_timeout(),
            status_call,
        )
        .await
    }

    /// Status of the member at `endpoint` (no failover: the answer is about that member).
    pub async fn status_of(&self, endpoint: &str) -> Result<Status, EtcdError> {
        self.call_endpoint(endpoint, "status", status_call).await
    }

    /// Status of the local member (the first configured endpoint).
    pub async fn local_status(&self) -> Result<Status, EtcdError> {
        self.status_of(self.local_endpoint()).await
    }

    /// The raised alarms of the whole cluster (empty when none).
    pub async fn alarms(&self) -> Result<Vec<Alarm>, EtcdError> {
        self.call(
            "alarm list",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc
                    .maintenance_client()
                    .alarm(AlarmAction::Get, AlarmType::None, None)
                    .await?;
                Ok(resp
                    .alarms()
                    .iter()
                    .map(|a| Alarm {
                        member_id: a.member_id(),
                        alarm: AlarmKind::from_pb(a.alarm()),
                    })
                    .collect())
            },
        )
        .await
    }

    /// Asks etcd to validate, enable or cancel a downgrade of the cluster version to
    /// `version` ("3.6" or "3.6.0"; ignored by `Cancel`). Returns the cluster version etcd
    /// answers with. Sent to one member with failover; etcd forwards it to the leader.
    pub async fn downgrade(
        &self,
        action: DowngradeAction,
        version: &str,
    ) -> Result<String, EtcdError> {
        self.call(
            "downgrade",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| {
                let options = match action {
                    DowngradeAction::Validate => DowngradeOptions::Validate(version.to_owned()),
                    DowngradeAction::Enable => DowngradeOptions::Enable(version.to_owned()),
                    DowngradeAction::Cancel => DowngradeOptions::Cancel,
                };
                async move {
                    let resp = rpc.maintenance_client().downgrade(options).await?;
                    Ok(resp.version().to_owned())
                }
            },
        )
        .await
    }

    /// The current leader: its id from a member's status, its client URL from the member
    /// list. [`EtcdError::NoLeader`] when the member asked knows none.
    pub async fn leader(&self) -> Result<Leader, EtcdError> {
        let status = self.status().await?;
        if status.leader == 0 {
            return Err(EtcdError::NoLeader {
                endpoint: self.attempt_first(),
            });
        }
        let members = self.member_list().await?;
        let member = members
            .by_id(status.leader)
            .ok_or_else(|| EtcdError::NoLeader {
                endpoint: self.attempt_first(),
            })?;
        let ours = self.endpoints();
        let normalized: Vec<String> = member
            .client_urls
            .iter()
            .filter_map(|u| self.endpoint_url(u).ok())
            .collect();
        let endpoint = normalized
            .iter()
            .find(|u| ours.contains(u))
            .or_else(|| normalized.first())
            .cloned()
            .ok_or_else(|| EtcdError::Decode {
                endpoint: self.attempt_first(),
                path: "MemberList".to_owned(),
                reason: format!(
                    "the leader {} ({:x}) has no client URL in the member list",
                    member.name, member.id
                ),
            })?;
        Ok(Leader {
            id: member.id,
            name: member.name.clone(),
            endpoint,
        })
    }

    /// Moves leadership to the member `target_id`, sending the request to the current
    /// leader (found again, at most 3 times, if leadership moves meanwhile). Returns once
    /// the old leader has handed over; peers see the new leader a few hundred ms later.
    pub async fn transfer_leadership(&self, target_id: u64) -> Result<(), EtcdError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let leader = self.leader().await?;
            let result = self
                .call_endpoint(&leader.endpoint, "transfer-leadership", |rpc| async move {
                    rpc.maintenance_client()
                        .move_leader(target_id)
                        .await
                        .map(drop)
                })
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(err) if err.is_not_leader() && attempt < ATTEMPTS => {
                    tracing::debug!(leader = %leader.endpoint, "leadership moved meanwhile; asking again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// HashKV of the local member at `revision` (0: its newest).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKv, EtcdError> {
        self.hash_kv_of(self.local_endpoint(), revision).await
    }

    /// HashKV of the member at `endpoint` at `revision` (0: its newest); no failover, the
    /// answer is about that member. A revision compacted away is an error for which
    /// [`EtcdError::is_compacted`] is true.
    pub async fn hash_kv_of(&self, endpoint: &str, revision: i64) -> Result<HashKv, EtcdError> {
        self.call_endpoint(endpoint, "hashkv", |rpc| async move {
            let resp = rpc.maintenance_client().hash_kv(revision).await?;
            Ok(HashKv {
                header: header(resp.header()),
                hash: resp.hash(),
                compact_revision: resp.compact_version(),
            })
        })
        .await
    }

    /// `GET /health` on one endpoint: `Ok(true)` only for `{"health":"true"}` (an unhealthy
    /// member answers 503 with `"false"`: that is `Ok(false)`, not an error).
    pub async fn health_of(&self, endpoint: &str) -> Result<bool, EtcdError> {
        let body: HealthBody = self.get_json(endpoint, "/health").await?;
        Ok(body.health == "true")
    }

    /// `GET /version` on one endpoint.
    pub async fn version_of(&self, endpoint: &str) -> Result<EtcdVersion, EtcdError> {
        self.get_json(endpoint, "/version").await
    }

    fn attempt_first(&self) -> String {
        self.endpoints().first().cloned().unwrap_or_default()
    }
}

/// One Status call, turned into [`Status`].
async fn status_call(rpc: Rpc) -> Result<Status, etcd_client::Error> {
    let resp = rpc.maintenance_client().status().await?;
    Ok(Status {
        header: header(resp.header()),
        version: resp.version().to_owned(),
        db_size: resp.db_size(),
        db_size_in_use: resp.raft_used_db_size(),
        leader: resp.leader(),
        raft_index: resp.raft_index(),
        raft_term: resp.raft_term(),
        raft_applied_index: resp.raft_applied_index(),
        errors: resp.errors().to_vec(),
        is_learner: resp.is_learner(),
        storage_version: resp.storage_version().to_owned(),
        downgrade: resp.downgrade_info().map(|d| DowngradeInfo {
            enabled: d.enabled(),
            target_version: d.target_version().to_owned(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storage_versions_of_3_6_are_read_and_absent_before() {
        let v: EtcdVersion = serde_json::from_value(
            json!({"etcdserver":"3.6.1","etcdcluster":"3.6.0","storage":"3.6.0"}),
        )
        .unwrap();
        assert_eq!(v.storage, "3.6.0");
        let old: EtcdVersion =
            serde_json::from_value(json!({"etcdserver":"3.5.30","etcdcluster":"3.5.0"})).unwrap();
        assert_eq!(old.storage, "");
    }

    #[test]
    fn alarm_kinds_have_their_names() {
        assert_eq!(AlarmKind::from_pb(AlarmType::Nospace), AlarmKind::NoSpace);
        assert_eq!(AlarmKind::from_pb(AlarmType::Corrupt), AlarmKind::Corrupt);
        assert_eq!(AlarmKind::from_pb(AlarmType::None).to_string(), "NONE");
        assert_eq!(AlarmKind::NoSpace.to_string(), "NOSPACE");
    }

    #[test]
    fn a_status_is_leader_only_when_it_names_itself() {
        let mut s = Status {
            header: ResponseHeader {
                member_id: 7,
                ..ResponseHeader::default()
            },
            ..Status::default()
        };
        assert!(!s.is_leader());
        s.leader = 8;
        assert!(!s.is_leader());
        s.leader = 7;
        assert!(s.is_leader());
        assert_eq!(s.member_id(), 7);
    }
}
