//! The downgrade's facts read from a live cluster, and its record written: the I/O edge of
//! [`crate::upgrade::rules::downgrade`]. The typed [`ClusterView`] (the same one `status` shows) gives the
//! members, their versions and storage versions and their records; etcd's own downgrade
//! state is asked of the members' status (3.6+ `downgradeInfo`; 3.5 does not report it);
//! the record is `<prefix>downgrade`.

use std::time::SystemTime;

use crate::cluster::keys::Keys;
use crate::cluster::records::Stored;
use crate::cluster::view::ClusterView;
use crate::etcd::maintenance::DowngradeInfo;
use crate::etcd::{Client, EtcdError};
use crate::upgrade::rules::downgrade::{
    DowngradeFacts, DowngradeRecord, InEtcd, MemberFacts, RecordState,
};
use crate::versions::Version;

/// The rules' facts from `view`, etcd's downgrade state and the record (pure).
pub fn facts_from(
    view: &ClusterView,
    etcd: InEtcd,
    record: Option<DowngradeRecord>,
) -> DowngradeFacts {
    let members = view
        .members
        .iter()
        .map(|m| MemberFacts {
            name: m.name.clone(),
            server: m.server_version.clone(),
            storage: m
                .storage_version
                .as_deref()
                .and_then(|s| s.parse::<Version>().ok())
                .map(|v| v.minor_version()),
            healthy: m.healthy,
            staged: match view.progress.get(&m.name) {
                Some(Stored::Read(r)) => r.staged.clone(),
                _ => None,
            },
        })
        .collect();
    DowngradeFacts {
        cluster_version: view.cluster_version.clone(),
        members,
        etcd,
        record,
        turn_holder: view.turn.holder.clone(),
    }
}

/// etcd's downgrade state as one member's status reports it.
pub fn in_etcd(info: Option<&DowngradeInfo>) -> InEtcd {
    match info {
        None => InEtcd::Unknown,
        Some(d) if !d.enabled => InEtcd::Off,
        Some(d) => match d.target_version.parse::<Version>() {
            Ok(v) => InEtcd::Enabled(v.minor_version()),
            // Enabled, but to something unreadable: treat as enabled to nothing we take.
            Err(_) => InEtcd::Enabled((0, 0)),
        },
    }
}

/// Asks the members in turn (the leader first) until one that reports `downgradeInfo`
/// (3.6+) answers.
pub async fn read_etcd(client: &Client, view: &ClusterView) -> InEtcd {
    let mut members: Vec<_> = view.members.iter().collect();
    members.sort_by_key(|m| !m.leader);
    for m in members {
        let Some(url) = &m.client_url else { continue };
        if let Ok(status) = client.status_of(url).await {
            if status.downgrade.is_some() {
                return in_etcd(status.downgrade.as_ref());
            }
        }
    }
    InEtcd::Unknown
}

/// The record, `Ok(None)` when there is none; a value that is not one is an error.
pub async fn read_record(
    client: &Client,
    key_prefix: &str,
) -> Result<Option<DowngradeRecord>, EtcdError> {
    let key = Keys::new(key_prefix).downgrade();
    let Some(kv) = client.get(key.clone().into_bytes()).await? else {
        return Ok(None);
    };
    DowngradeRecord::decode(&kv.value)
        .map(Some)
        .map_err(|e| EtcdError::InvalidRequest(format!("{key} is not a downgrade record: {e}")))
}

/// Everything the rules look at, from the live cluster.
pub async fn read(client: &Client, key_prefix: &str, view: &ClusterView) -> DowngradeFacts {
    let etcd = read_etcd(client, view).await;
    let record = read_record(client, key_prefix).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "downgrade record not readable; treated as absent");
        None
    });
    facts_from(view, etcd, record)
}

/// Writes the record.
pub async fn write_record(
    client: &Client,
    key_prefix: &str,
    record: &DowngradeRecord,
) -> Result<(), EtcdError> {
    let key = Keys::new(key_prefix).downgrade();
    client.put(key, record.encode(), None).await.map(drop)
}

/// Deletes the record (the downgrade, or its cancel, is over).
pub async fn delete_record(client: &Client, key_prefix: &str) -> Result<(), EtcdError> {
    let key = Keys::new(key_prefix).downgrade();
    client.delete(key.into_bytes()).await.map(drop)
}

/// Cancels the downgrade in etcd and marks the record cancelled with `why` (a record is
/// written even when none was, so the members already downgraded know to go back).
pub async fn cancel(
    client: &Client,
    key_prefix: &str,
    why: &str,
    fallback: Option<(Version, Version)>,
) -> Result<Option<DowngradeRecord>, EtcdError> {
    use crate::etcd::maintenance::DowngradeAction;
    let cancelled = client.downgrade(DowngradeAction::Cancel, "").await;
    if let Err(e) = &cancelled {
        // 3.6 answers an error when none is enabled ("no inflight downgrade job"): the
        // record is still marked, so the members go back.
        tracing::warn!(error = %e, "etcd's downgrade cancel answered an error");
    }
    let record = match read_record(client, key_prefix).await? {
        Some(r) => Some(r),
        None => fallback.map(|(target, from)| DowngradeRecord {
            schema: 1,
            target,
            from,
            state: RecordState::Enabled,
            by: String::new(),
            time: String::new(),
            reason: None,
        }),
    };
    let Some(mut record) = record else {
        return Ok(None);
    };
    record.state = RecordState::Cancelled;
    record.reason = Some(why.to_owned());
    record.time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    write_record(client, key_prefix, &record).await?;
    Ok(Some(record))
}
