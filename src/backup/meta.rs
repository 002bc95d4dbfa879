//! `meta.json`: what a backup holds, whose it is and when it was taken. Written once, read
//! by `verify-backup` and by whoever restores; field names are part of the on-disk contract.

use serde::{Deserialize, Serialize};

use crate::backup::BackupMode;

/// Version of the meta.json layout; bumped only for incompatible changes.
pub const FORMAT: u32 = 1;

/// Why the backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Before a member's swap during an upgrade turn (subject to `--backup-keep`).
    Turn,
    /// `etcd-supervisor backup` (the operator's; never pruned).
    OnDemand,
}

/// Contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// Why it was taken.
    pub kind: Kind,
    /// When it was started, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The member's name.
    pub member: String,
    /// The member's id, hex (as etcd logs and `etcdctl member list` print it).
    pub member_id: String,
    /// The cluster's id, hex.
    pub cluster_id: String,
    /// The client URL the member was reached at.
    pub endpoint: String,
    /// The version the member ran (a turn's `from`).
    pub from_version: String,
    /// The version a turn upgrades to; `null` for an on-demand backup.
    pub to_version: Option<String>,
    /// The version the member itself reported when the backup was taken.
    pub etcd_version: String,
    /// `snapshot`, `data-dir` or `both`.
    pub mode: String,
    /// The store revision the member reported right before the snapshot (the snapshot holds
    /// at least this revision); for a data-dir-only backup, when the backup began.
    pub revision: i64,
    /// The member's database size (bytes) it reported at the same moment.
    pub db_size: i64,
    /// The snapshot, when the mode includes one.
    pub snapshot: Option<SnapshotMeta>,
    /// The cold copy of the data dir, when the mode includes one.
    pub data_dir: Option<DataDirMeta>,
    /// The etcd-supervisor version that wrote the backup.
    pub supervisor_version: String,
}

/// The snapshot part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// File name inside the backup (`snapshot.db`).
    pub file: String,
    /// Bytes, the 32-byte sha256 trailer included.
    pub size: u64,
    /// sha256 of the whole file (as in SHA256SUMS).
    pub sha256: String,
}

/// The data-dir part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDirMeta {
    /// Where the data dir was.
    pub source: String,
    /// Directory inside the backup (`data`).
    pub dir: String,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// True when the mode takes a snapshot through the API.
pub fn has_snapshot(mode: BackupMode) -> bool {
    matches!(mode, BackupMode::Snapshot | BackupMode::Both)
}

/// True when the mode copies the data dir while etcd is stopped.
pub fn has_data_dir(mode: BackupMode) -> bool {
    matches!(mode, BackupMode::DataDir | BackupMode::Both)
}
