//! Maintenance calls: member status, alarms, leadership transfer, HashKV, the downgrade
//! API (3.6+: validate, enable, cancel), and the plain `/health` and `/version` endpoints
//! of one member.
//!
//! HashKV (`/v3/maintenance/hashkv`) is on the gateway of 3.5.16 and 3.5.30 but not of
//! 3.4.23 or 3.5.1 (HTTP 404): callers must treat "cannot answer" as "not compared".
//!
//! Leader-only calls (transfer-leadership) must reach the current leader: the leader is
//! found through status and the member list, and the call is sent to its client URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{Client, Retry};
use super::error::EtcdError;
use super::wire::{int, ResponseHeader};

/// One member's view of itself and the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The response header; `member_id` is the member that answered.
    pub header: ResponseHeader,
    /// The member's etcd version ("3.5.16").
    pub version: String,
    /// Size of its database file, in bytes.
    #[serde(rename = "dbSize", with = "int")]
    pub db_size: i64,
    /// Bytes of the database in use (the rest is free pages a defragment would return).
    #[serde(rename = "dbSizeInUse", with = "int")]
    pub db_size_in_use: i64,
    /// The id of the leader it knows (0: none).
    #[serde(with = "int")]
    pub leader: u64,
    /// Its raft index.
    #[serde(rename = "raftIndex", with = "int")]
    pub raft_index: u64,
    /// Its raft term.
    #[serde(rename = "raftTerm", with = "int")]
    pub raft_term: u64,
    /// Its applied raft index (compare with the leader's to see it caught up).
    #[serde(rename = "raftAppliedIndex", with = "int")]
    pub raft_applied_index: u64,
    /// Errors it reports, e.g. "memberID:10405928607036884643 alarm:NOSPACE ".
    pub errors: Vec<String>,
    /// True when it is a learner.
    #[serde(rename = "isLearner")]
    pub is_learner: bool,
    /// The version of its db file's schema (3.6+; empty before): it may lag the cluster
    /// version, and it is what a 3.6 downgrade has to move back.
    #[serde(rename = "storageVersion")]
    pub storage_version: String,
    /// The cluster's downgrade, as this member knows it (3.6+ `downgradeInfo`; `None`
    /// before 3.6, which does not report it, so a 3.5 member says nothing either way).
    #[serde(rename = "downgradeInfo")]
    pub downgrade: Option<DowngradeInfo>,
}

/// A downgrade in etcd (`StatusResponse.downgradeInfo`, 3.6+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DowngradeInfo {
    /// True while a downgrade is enabled (the gateway omits `false`).
    pub enabled: bool,
    /// Its target, `X.Y.0` (empty when none).
    #[serde(rename = "targetVersion")]
    pub target_version: String,
}

/// What a downgrade request asks of etcd (`DowngradeRequest.DowngradeAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DowngradeAction {
    /// Checks the target without changing anything.
    Validate,
    /// Enables the downgrade: the cluster version moves to the target, the storage schema
    /// is migrated down.
    Enable,
    /// Cancels an enabled downgrade.
    Cancel,
}

impl DowngradeAction {
    /// The enum name the gateway reads.
    fn wire(self) -> &'static str {
        match self {
            Self::Validate => "VALIDATE",
            Self::Enable => "ENABLE",
            Self::Cancel => "CANCEL",
        }
    }
}

#[derive(Serialize)]
struct DowngradeRequest<'a> {
    action: &'static str,
    version: &'a str,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DowngradeResponse {
    version: String,
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

impl<'de> Deserialize<'de> for AlarmKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The gateway writes enum names; numbers are accepted too (1 NOSPACE, 2 CORRUPT).
        let value = serde_json::Value::deserialize(d)?;
        Ok(match value {
            serde_json::Value::String(s) if s == "NOSPACE" => AlarmKind::NoSpace,
            serde_json::Value::String(s) if s == "CORRUPT" => AlarmKind::Corrupt,
            serde_json::Value::String(s) => AlarmKind::Other(s),
            serde_json::Value::Number(n) if n.as_u64() == Some(1) => AlarmKind::NoSpace,
            serde_json::Value::Number(n) if n.as_u64() == Some(2) => AlarmKind::Corrupt,
            other => AlarmKind::Other(other.to_string()),
        })
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Alarm {
    /// The member that raised it.
    #[serde(rename = "memberID", with = "int", default)]
    pub member_id: u64,
    /// The alarm.
    pub alarm: AlarmKind,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AlarmResponse {
    alarms: Vec<Alarm>,
}

#[derive(Serialize)]
struct AlarmRequest {
    action: &'static str,
}

#[derive(Serialize)]
struct MoveLeaderRequest {
    #[serde(rename = "targetID", with = "int")]
    target_id: u64,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HashKv {
    /// The response header; `revision` is the member's current revision.
    pub header: ResponseHeader,
    /// The hash (a JSON number on the wire).
    pub hash: u32,
    /// The compaction revision the hash starts after: equal hashes mean something only
    /// between members with the same one.
    #[serde(with = "int")]
    pub compact_revision: i64,
}

#[derive(Serialize)]
struct HashKvRequest {
    #[serde(with = "int")]
    revision: i64,
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
            "/v3/maintenance/status",
            &serde_json::json!({}),
            Retry::Idempotent,
        )
        .await
    }

    /// Status of the member at `endpoint` (no failover: the answer is about that member).
    pub async fn status_of(&self, endpoint: &str) -> Result<Status, EtcdError> {
        self.call_endpoint(endpoint, "/v3/maintenance/status", &serde_json::json!({}))
            .await
    }

    /// Status of the local member (the first configured endpoint).
    pub async fn local_status(&self) -> Result<Status, EtcdError> {
        self.status_of(self.local_endpoint()).await
    }

    /// The raised alarms of the whole cluster (empty when none).
    pub async fn alarms(&self) -> Result<Vec<Alarm>, EtcdError> {
        // 3.4 answers `{}` (not even a header) when there are none.
        let resp: AlarmResponse = self
            .call(
                "/v3/maintenance/alarm",
                &AlarmRequest { action: "GET" },
                Retry::Idempotent,
            )
            .await?;
        Ok(resp.alarms)
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
                path: "/v3/cluster/member/list".to_owned(),
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
        let request = MoveLeaderRequest { target_id };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let leader = self.leader().await?;
            let result: Result<serde_json::Value, EtcdError> = self
                .call_endpoint(
                    &leader.endpoint,
                    "/v3/maintenance/transfer-leadership",
                    &request,
                )
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

    /// Sends a downgrade request (`POST /v3/maintenance/downgrade`, admin role when auth is
    /// on) and answers the cluster version etcd reports with it. `version` is the target
    /// (`3.6`, `3.6.17`: etcd keeps `X.Y`); it is ignored for a cancel. Enable and cancel
    /// change the cluster, so they are not repeated on another endpoint after a timeout.
    pub async fn downgrade(
        &self,
        action: DowngradeAction,
        version: &str,
    ) -> Result<String, EtcdError> {
        let retry = match action {
            DowngradeAction::Validate => Retry::Idempotent,
            DowngradeAction::Enable | DowngradeAction::Cancel => Retry::AtMostOnce,
        };
        let request = DowngradeRequest {
            action: action.wire(),
            version,
        };
        let resp: DowngradeResponse = self
            .call("/v3/maintenance/downgrade", &request, retry)
            .await?;
        Ok(resp.version)
    }

    /// HashKV of the local member at `revision` (0: its newest).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKv, EtcdError> {
        self.hash_kv_of(self.local_endpoint(), revision).await
    }

    /// HashKV of the member at `endpoint` at `revision` (0: its newest); no failover, the
    /// answer is about that member. A version without it on the gateway answers
    /// [`EtcdError::Http`] 404; a revision compacted away, [`EtcdError::is_compacted`].
    pub async fn hash_kv_of(&self, endpoint: &str, revision: i64) -> Result<HashKv, EtcdError> {
        self.call_endpoint(
            endpoint,
            "/v3/maintenance/hashkv",
            &HashKvRequest { revision },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn downgrade_info_is_read_when_3_6_reports_it() {
        let s: Status = serde_json::from_value(json!({
            "version": "3.7.4", "storageVersion": "3.6.0",
            "downgradeInfo": {"enabled": true, "targetVersion": "3.6.0"}
        }))
        .unwrap();
        assert_eq!(
            s.downgrade,
            Some(DowngradeInfo {
                enabled: true,
                target_version: "3.6.0".into()
            })
        );
        // The gateway omits defaults: no downgrade is `{}`; 3.5 has no field at all.
        let s: Status = serde_json::from_value(json!({"downgradeInfo": {}})).unwrap();
        assert_eq!(s.downgrade, Some(DowngradeInfo::default()));
        let s: Status = serde_json::from_value(json!({"version": "3.5.36"})).unwrap();
        assert_eq!(s.downgrade, None);
        assert_eq!(DowngradeAction::Enable.wire(), "ENABLE");
    }

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
        let s: Status =
            serde_json::from_value(json!({"version":"3.6.1","storageVersion":"3.6.0"})).unwrap();
        assert_eq!(s.storage_version, "3.6.0");
    }

    #[test]
    fn status_parses_3_4_and_alarm_errors() {
        let s: Status = serde_json::from_value(json!({
            "header":{"cluster_id":"1","member_id":"10405928607036884643","revision":"18","raft_term":"2"},
            "version":"3.4.23","dbSize":"20480","leader":"3961401065075778231","raftIndex":"46",
            "raftTerm":"2","raftAppliedIndex":"46","dbSizeInUse":"20480",
            "errors":["memberID:10405928607036884643 alarm:NOSPACE "]
        }))
        .unwrap();
        assert_eq!(s.version, "3.4.23");
        assert_eq!(s.db_size, 20480);
        assert_eq!(s.leader, 3_961_401_065_075_778_231);
        assert_eq!(s.member_id(), 10_405_928_607_036_884_643);
        assert_eq!(
            (s.raft_index, s.raft_applied_index, s.raft_term),
            (46, 46, 2)
        );
        assert_eq!(s.errors.len(), 1);
        assert!(!s.is_leader());
        assert!(!s.is_learner);
    }

    #[test]
    fn alarms_parse_with_and_without_header() {
        let none: AlarmResponse = serde_json::from_value(json!({})).unwrap();
        assert!(none.alarms.is_empty());
        let some: AlarmResponse = serde_json::from_value(json!({
            "header":{"revision":"3"},
            "alarms":[{"memberID":"10405928607036884643","alarm":"NOSPACE"},{"memberID":"1","alarm":"CORRUPT"},{"memberID":"2","alarm":"FUTURE"}]
        }))
        .unwrap();
        assert_eq!(some.alarms[0].alarm, AlarmKind::NoSpace);
        assert_eq!(some.alarms[0].member_id, 10_405_928_607_036_884_643);
        assert_eq!(some.alarms[1].alarm, AlarmKind::Corrupt);
        assert_eq!(some.alarms[2].alarm, AlarmKind::Other("FUTURE".into()));
        assert_eq!(
            serde_json::to_value(AlarmRequest { action: "GET" }).unwrap(),
            json!({"action":"GET"})
        );
    }

    #[test]
    fn move_leader_uses_target_id_as_string() {
        assert_eq!(
            serde_json::to_value(MoveLeaderRequest {
                target_id: 9_014_470_537_425_678_577
            })
            .unwrap(),
            json!({"targetID":"9014470537425678577"})
        );
    }

    #[test]
    fn hash_kv_parses_and_sends_the_revision_as_a_string() {
        let h: HashKv = serde_json::from_value(json!({
            "header":{"cluster_id":"1009341656423100102", "member_id":"7254984457005631914", "revision":"56", "raft_term":"2"},
            "hash":2372643425u32, "compact_revision":"41"
        }))
        .unwrap();
        assert_eq!(
            (h.hash, h.compact_revision, h.header.revision),
            (2_372_643_425, 41, 56)
        );
        let never: HashKv =
            serde_json::from_value(json!({"hash":1,"compact_revision":"-1"})).unwrap();
        assert_eq!(never.compact_revision, -1);
        assert_eq!(
            serde_json::to_value(HashKvRequest { revision: 56 }).unwrap(),
            json!({"revision":"56"})
        );
    }

    #[test]
    fn version_parses() {
        let v: EtcdVersion =
            serde_json::from_value(json!({"etcdserver":"3.4.23","etcdcluster":"3.4.0"})).unwrap();
        assert_eq!((v.server.as_str(), v.cluster.as_str()), ("3.4.23", "3.4.0"));
    }
}
