//! The consistency check after a rollout: once the last member verified on the target,
//! every member's `HashKV` at one common revision must agree. A mismatch (a member whose
//! key-value store diverged, which a rolling upgrade must never cause and must never hide)
//! is logged as an error, raises the `consistency_alarm` gauge, and is recorded under
//! `consistency/alarm`; while that key exists no supervisor takes an upgrade turn, until an
//! operator runs `etcd-supervisor acknowledge-inconsistency`.
//!
//! The verdict and the record are the rule's ([`crate::upgrade::rules::consistency`]);
//! [`fetch`] gathers the hashes through the driver's [`Cluster`] port; [`after_rollout`] is
//! the driver's one call, which records a mismatch through the port; [`blocked`] and
//! [`acknowledge`] read and delete the record for the live cluster and the commands.

use std::time::{Duration, SystemTime};

use super::ports::Cluster;
use crate::cluster::keys::Keys;
use crate::cluster::view::ClusterView;
use crate::etcd::{Client, EtcdError};
use crate::metrics::Metrics;
use crate::upgrade::rules::consistency::{
    common_revision, compare, ConsistencyVerdict, InconsistencyRecord, MemberHash,
};
use crate::versions::Version;

/// How many times a common revision is chosen anew when a member compacted past it (or
/// had not reached it) meanwhile.
const ATTEMPTS: u32 = 5;

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
    let view = cluster.read_view().await;
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
            if let Err(e) = cluster.record_inconsistency(&record).await {
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
