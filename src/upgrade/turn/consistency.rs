//! The consistency check after a rollout: once the last member verified on the target,
//! every member's `HashKV` at one common revision must agree. A mismatch (a member whose
//! key-value store diverged, which a rolling upgrade must never cause and must never hide)
//! is logged as an error, raises the `consistency_alarm` gauge, and is recorded under
//! `consistency/alarm`; while that key exists no supervisor takes an upgrade turn, until an
//! operator runs `etcd-supervisor acknowledge-inconsistency`.
//!
//! [`compare`] is the pure verdict; [`fetch`] gathers the hashes through the driver's
//! [`Cluster`] port; [`after_rollout`] is the driver's one call; [`blocked`] and
//! [`acknowledge`] read and delete the record.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::ports::Cluster;
use crate::cluster::keys::Keys;
use crate::cluster::view::ClusterView;
use crate::etcd::{Client, EtcdError};
use crate::metrics::Metrics;
use crate::versions::Version;

/// How many times a common revision is chosen anew when a member compacted past it (or
/// had not reached it) meanwhile.
const ATTEMPTS: u32 = 5;

/// One member's answer at the common revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    /// The member's name.
    pub member: String,
    /// Its HashKV at the revision.
    pub hash: u32,
    /// The compaction revision the hash starts after.
    pub compact_revision: i64,
}

/// What the comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsistencyVerdict {
    /// Every member has the same hash at `revision`.
    Consistent {
        /// The common revision.
        revision: i64,
        /// The hash they share.
        hash: u32,
        /// How many members were compared.
        members: usize,
    },
    /// The hashes differ: the stores diverged.
    Mismatch {
        /// The common revision.
        revision: i64,
        /// Every member's answer.
        hashes: Vec<MemberHash>,
    },
    /// The members' compaction revisions differ (a compaction in flight): the hashes
    /// cover different histories and say nothing yet.
    NotComparable,
}

/// Why the check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A member did not answer, or has no client URL.
    #[error("member {member}: {detail}")]
    Member {
        /// The member.
        member: String,
        /// What went wrong.
        detail: String,
    },
    /// No common revision held still long enough.
    #[error("no common revision could be hashed on every member after {ATTEMPTS} tries")]
    NoCommonRevision,
}

/// The verdict on hashes taken at `revision`; two members or more are needed to disagree.
pub fn compare(revision: i64, hashes: &[MemberHash]) -> ConsistencyVerdict {
    let Some(first) = hashes.first() else {
        return ConsistencyVerdict::Consistent {
            revision,
            hash: 0,
            members: 0,
        };
    };
    if hashes
        .iter()
        .any(|h| h.compact_revision != first.compact_revision)
    {
        return ConsistencyVerdict::NotComparable;
    }
    if hashes.iter().all(|h| h.hash == first.hash) {
        ConsistencyVerdict::Consistent {
            revision,
            hash: first.hash,
            members: hashes.len(),
        }
    } else {
        ConsistencyVerdict::Mismatch {
            revision,
            hashes: hashes.to_vec(),
        }
    }
}

/// The revision every member can hash: the lowest current revision among them (each has
/// applied at least that far, and a compaction is a raft entry, so none has compacted
/// past it unless it moved on meanwhile, which [`fetch`] retries).
pub fn common_revision(current: &[i64]) -> Option<i64> {
    current.iter().copied().min()
}

/// HashKV of every member of `view` at one common revision, with the verdict.
pub async fn fetch<K: Cluster>(
    cluster: &K,
    view: &ClusterView,
) -> Result<ConsistencyVerdict, CheckError> {
    let mut members = Vec::new();
    for m in &view.members {
        let url = m.client_url.clone().ok_or_else(|| CheckError::Member {
            member: m.name.clone(),
            detail: "no client URL".into(),
        })?;
        members.push((m.name.clone(), url));
    }
    'attempt: for _ in 0..ATTEMPTS {
        let mut current = Vec::new();
        for (name, url) in &members {
            let status = cluster
                .status_of(url)
                .await
                .map_err(|e| member_error(name, &e))?;
            current.push(status.header.revision);
        }
        let Some(revision) = common_revision(&current) else {
            return Ok(compare(0, &[]));
        };
        let mut hashes = Vec::new();
        for (name, url) in &members {
            match cluster.hash_kv_of(url, revision).await {
                Ok(h) => hashes.push(MemberHash {
                    member: name.clone(),
                    hash: h.hash,
                    compact_revision: h.compact_revision,
                }),
                // Compacted past it, or (a stale reading) not there yet: choose again.
                Err(e) if e.is_compacted() || e.to_string().contains("future revision") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'attempt;
                }
                Err(e) => return Err(member_error(name, &e)),
            }
        }
        match compare(revision, &hashes) {
            ConsistencyVerdict::NotComparable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            verdict => return Ok(verdict),
        }
    }
    Err(CheckError::NoCommonRevision)
}

fn member_error(member: &str, e: &EtcdError) -> CheckError {
    CheckError::Member {
        member: member.to_owned(),
        detail: e.to_string(),
    }
}

/// `consistency/alarm`: what a mismatch left for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InconsistencyRecord {
    /// The supervisor that found it.
    pub found_by: String,
    /// The rollout's target.
    pub version: String,
    /// The common revision hashed.
    pub revision: i64,
    /// Every member's hash.
    pub hashes: Vec<MemberHash>,
    /// When (RFC 3339).
    pub time: String,
}

impl InconsistencyRecord {
    /// One line for `status` and the logs: which members hold which hash.
    pub fn summary(&self) -> String {
        let mut groups: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for h in &self.hashes {
            groups.entry(h.hash).or_default().push(&h.member);
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|(hash, members)| format!("{} hash {hash}", members.join(",")))
            .collect();
        format!(
            "members' key-value stores differ at revision {} after the rollout to {} ({}; found by {} at {})",
            self.revision,
            self.version,
            parts.join("; "),
            self.found_by,
            self.time
        )
    }
}

/// The driver's call once `target` verified on this member: when every member now runs
/// `target`, compare their hashes; a mismatch is logged, raised on the gauge and recorded
/// (which stops every further turn). A check that cannot be made is a warning only.
pub async fn after_rollout<K: Cluster>(
    cluster: &K,
    metrics: &Metrics,
    member: &str,
    prefix: &str,
    target: &Version,
) {
    let view = cluster.gather().await;
    let last = !view.members.is_empty()
        && view
            .members
            .iter()
            .all(|m| m.server_version.as_ref() == Some(target));
    if !last {
        return;
    }
    let verdict = match fetch(cluster, &view).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(member, version = %target, error = %e, "consistency check after the rollout could not be made");
            return;
        }
    };
    metrics.consistency_checked(matches!(verdict, ConsistencyVerdict::Mismatch { .. }));
    match verdict {
        ConsistencyVerdict::Consistent {
            revision,
            hash,
            members,
        } => {
            tracing::info!(member, version = %target, revision, hash, members, "consistency check after the rollout passed: every member's HashKV agrees");
        }
        ConsistencyVerdict::Mismatch { revision, hashes } => {
            let record = InconsistencyRecord {
                found_by: member.to_owned(),
                version: target.to_string(),
                revision,
                hashes,
                time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            let key = Keys::new(prefix).inconsistency();
            tracing::error!(member, version = %target, revision, key = %key, "{}; no further upgrade turn is taken until an operator checks the members and runs `etcd-supervisor acknowledge-inconsistency`", record.summary());
            let value = serde_json::to_string(&record).unwrap_or_default();
            if let Err(e) = cluster.put(key, value, None).await {
                tracing::error!(member, error = %e, "could not record the inconsistency in etcd");
            }
        }
        ConsistencyVerdict::NotComparable => {
            tracing::warn!(member, version = %target, "consistency check after the rollout could not compare: a compaction was in flight");
        }
    }
}

/// The recorded inconsistency, if any (an unreadable record blocks too: it is ours).
pub async fn blocked(client: &Client, prefix: &str) -> Result<Option<String>, EtcdError> {
    let Some(kv) = client.get(Keys::new(prefix).inconsistency()).await? else {
        return Ok(None);
    };
    Ok(Some(
        match serde_json::from_slice::<InconsistencyRecord>(&kv.value) {
            Ok(r) => r.summary(),
            Err(_) => format!(
                "an inconsistency was recorded ({})",
                String::from_utf8_lossy(&kv.value)
            ),
        },
    ))
}

/// Deletes the record; `Ok(None)` when there was none.
pub async fn acknowledge(client: &Client, prefix: &str) -> Result<Option<String>, EtcdError> {
    let found = blocked(client, prefix).await?;
    if found.is_some() {
        client.delete(Keys::new(prefix).inconsistency()).await?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
