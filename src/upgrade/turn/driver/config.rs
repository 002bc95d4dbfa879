//! The driver's settings: its part of `run`'s settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::backup::BackupMode;
use crate::config::RunSettings;
use crate::upgrade::rules::pacing::soak::Pacing;
use crate::upgrade::rules::path::Policy;

/// What the driver needs to know.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This member's name.
    pub member: String,
    /// Supervisor state dir.
    pub state_dir: PathBuf,
    /// Staging dir (refusal notes go to `rejected/` in it).
    pub staging_dir: PathBuf,
    /// etcd's data dir (for a cold copy).
    pub data_dir: PathBuf,
    /// This member's own client URLs.
    pub local_endpoints: Vec<String>,
    /// The client URLs other hosts reach this member at (published in its record).
    pub advertised_endpoints: Vec<String>,
    /// Key prefix in etcd.
    pub key_prefix: String,
    /// Lease TTL of the turn.
    pub lock_ttl: Duration,
    /// How long the leader waits without progress for followers to go first (zero: off).
    pub leader_last_wait: Duration,
    /// Bound on the new etcd being healthy and caught up.
    pub ready_timeout: Duration,
    /// What to back up.
    pub backup: BackupMode,
    /// Backups kept.
    pub backup_keep: u32,
    /// `--backup-max-age`: how old the backup taken while vetting may be for the turn to
    /// reuse it (zero: never reused, every turn takes its own).
    pub backup_max_age: Duration,
    /// What the operator accepts beyond etcd's own upgrade rules.
    pub policy: Policy,
    /// Test hook: pause after entering this state (see `RunSettings::failpoint_pause`).
    pub failpoint_pause: Option<(String, Duration)>,
    /// Maintenance windows and soak.
    pub pacing: Pacing,
}

impl DriverConfig {
    /// The driver's part of `run`'s settings.
    pub fn from_settings(settings: &RunSettings) -> Self {
        Self {
            member: settings.member.name.clone(),
            state_dir: settings.state_dir.clone(),
            staging_dir: settings.staging_dir.clone(),
            data_dir: settings.member.data_dir.clone(),
            local_endpoints: settings.member.client_urls.clone(),
            advertised_endpoints: settings.member.advertised_client_urls.clone(),
            key_prefix: settings.key_prefix.clone(),
            lock_ttl: settings.lock_ttl,
            leader_last_wait: settings.leader_last_wait,
            ready_timeout: settings.ready_timeout,
            backup: settings.backup,
            backup_keep: settings.backup_keep,
            backup_max_age: settings.backup_max_age,
            policy: settings.policy.clone(),
            failpoint_pause: settings.failpoint_pause.clone(),
            pacing: settings.pacing.clone(),
        }
    }
}
