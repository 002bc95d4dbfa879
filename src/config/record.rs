//! The daemon's effective settings, recorded in `<state-dir>/daemon.json` when `run`
//! starts, so that `plan` and `status` run from an operator's shell (without the unit's
//! environment files) describe the daemon that runs, and a later start can tell when its
//! configuration names another member's data than this state dir was used with.
//!
//! Never holds a password: `--user`'s comes only from the environment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunSettings;

/// File name under the state dir.
pub const FILE: &str = "daemon.json";

/// Schema of [`DaemonRecord`]; later releases add fields, never rename them.
const SCHEMA: u32 = 1;

/// What `run` resolved, as `plan` and `status` need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// Always 1 for now.
    pub schema: u32,
    /// The supervisor's pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), so a recycled pid
    /// does not pass for the daemon.
    pub start_time: u64,
    /// When it started (RFC 3339).
    pub started: String,
    /// The member's name.
    pub member: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its WAL dir, when separate.
    #[serde(default)]
    pub wal_dir: Option<PathBuf>,
    /// etcd's config file, when it reads one.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// The member's client URLs on this host.
    pub client_urls: Vec<String>,
    /// Where each member setting came from (`name` -> `config file /etc/etcd.yml`).
    #[serde(default)]
    pub sources: std::collections::BTreeMap<String, String>,
    /// Cluster endpoints the daemon uses.
    pub endpoints: Vec<String>,
    /// TLS towards etcd.
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// etcd user (the password is never recorded).
    #[serde(default)]
    pub user: Option<String>,
    /// `--key-prefix`.
    pub key_prefix: String,
    /// The staging dir.
    pub staging_dir: PathBuf,
    /// `--window` specs.
    #[serde(default)]
    pub windows: Vec<String>,
    /// `--soak`, humantime.
    pub soak: String,
    /// `--canary-soak`, humantime.
    pub canary_soak: String,
    /// `--rehearsal`.
    pub rehearsal: String,
    /// `--allow-known-bad`.
    #[serde(default)]
    pub allow_known_bad: Vec<String>,
    /// `--allow-auth-upgrade-from-3.4`.
    #[serde(default)]
    pub allow_auth_upgrade_from_34: bool,
}

/// Whether the daemon a record names still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Its pid runs with the recorded start time.
    Running,
    /// It has exited (or the pid now belongs to another process).
    Gone,
}

impl DaemonRecord {
    /// The record of `settings`, for the process calling this.
    pub fn of(settings: &RunSettings, now: std::time::SystemTime) -> Self {
        let pid = std::process::id();
        let start_time = crate::process::handover::proc_stat(pid)
            .map(|s| s.start_time)
            .unwrap_or(0);
        let member = &settings.member;
        let p = &settings.policy;
        Self {
            schema: SCHEMA,
            pid,
            start_time,
            started: humantime::format_rfc3339_seconds(now).to_string(),
            member: member.name.clone(),
            data_dir: member.data_dir.clone(),
            wal_dir: member.wal_dir.clone(),
            config_file: member.config_file.clone(),
            client_urls: member.client_urls.clone(),
            sources: member
                .sources
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            endpoints: settings.cluster.endpoints.clone(),
            cacert: settings.cluster.cacert.clone(),
            cert: settings.cluster.cert.clone(),
            key: settings.cluster.key.clone(),
            user: settings
                .cluster
                .credentials
                .as_ref()
                .map(|c| c.user.clone()),
            key_prefix: settings.key_prefix.clone(),
            staging_dir: settings.staging_dir.clone(),
            windows: settings
                .pacing
                .windows
                .iter()
                .map(|w| w.spec().to_owned())
                .collect(),
            soak: humantime::format_duration(settings.pacing.soak).to_string(),
            canary_soak: humantime::format_duration(settings.pacing.canary_soak).to_string(),
            rehearsal: settings.rehearsal.to_string(),
            allow_known_bad: p.allow_known_bad.iter().map(ToString::to_string).collect(),
            allow_auth_upgrade_from_34: p.allow_auth_upgrade_from_34,
        }
    }

    /// `<state-dir>/daemon.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// Writes the record atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), crate::durable::IoError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::durable::replace_atomically(&Self::path(state_dir), &text)
    }

    /// The record in `state_dir`: `Ok(None)` when there is none, `Err` with a sentence when
    /// it cannot be read.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, String> {
        let path = Self::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{} is not a daemon record: {e}", path.display())),
            // No state dir yet, or a path through a file: no record; the state dir's own
            // check then says what is wrong with it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Whether the recorded daemon still runs.
    pub fn liveness(&self) -> Liveness {
        match crate::process::handover::proc_stat(self.pid) {
            Ok(stat) if stat.start_time == self.start_time && stat.state != 'Z' => {
                Liveness::Running
            }
            _ => Liveness::Gone,
        }
    }
}

/// The data dir this configuration names disagrees with the one the state dir was used
/// with, while that one still holds a member's data: refused before anything starts.
pub fn check_agrees(
    previous: &DaemonRecord,
    member: &super::Member,
    state_dir: &Path,
) -> Result<(), super::ConfigError> {
    if previous.data_dir == member.data_dir {
        return Ok(());
    }
    if !previous.data_dir.join("member").is_dir() {
        // The old data is gone (moved on purpose): the new place is the member's now.
        return Ok(());
    }
    Err(super::ConfigError::DataDirDisagrees {
        state_dir: state_dir.to_path_buf(),
        recorded: previous.data_dir.clone(),
        recorded_member: previous.member.clone(),
        now: member.data_dir.clone(),
        from: member
            .sources
            .get("data-dir")
            .map_or_else(|| "etcd's default".to_owned(), ToString::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::member::{Member, Source, Tls};

    fn member(dir: &Path) -> Member {
        Member {
            name: "m1".into(),
            data_dir: dir.to_path_buf(),
            wal_dir: None,
            client_urls: vec![],
            advertised_client_urls: vec![],
            config_file: None,
            v2_enabled: false,
            quota_backend_bytes: None,
            initial_cluster: None,
            client_tls: Tls::default(),
            peer_tls: Tls::default(),
            sources: [("data-dir".to_owned(), Source::EtcdDefault)].into(),
            data_dir_added: false,
        }
    }

    fn record(data_dir: &Path) -> DaemonRecord {
        DaemonRecord {
            schema: 1,
            pid: std::process::id(),
            start_time: crate::process::handover::proc_stat(std::process::id())
                .unwrap()
                .start_time,
            started: "2026-12-07T00:00:00Z".into(),
            member: "m1".into(),
            data_dir: data_dir.to_path_buf(),
            wal_dir: None,
            config_file: None,
            client_urls: vec![],
            sources: Default::default(),
            endpoints: vec![],
            cacert: None,
            cert: None,
            key: None,
            user: None,
            key_prefix: "/p/".into(),
            staging_dir: "/s".into(),
            windows: vec![],
            soak: "0s".into(),
            canary_soak: "0s".into(),
            rehearsal: "auto".into(),
            allow_known_bad: vec![],
            allow_auth_upgrade_from_34: false,
        }
    }

    #[test]
    fn another_data_dir_is_refused_only_while_the_old_one_holds_data() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("old");
        let rec = record(&old);
        let new = member(&tmp.path().join("new"));
        assert!(check_agrees(&rec, &new, tmp.path()).is_ok(), "old one gone");
        std::fs::create_dir_all(old.join("member")).unwrap();
        let err = check_agrees(&rec, &new, tmp.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("old") && text.contains("new"), "{text}");
        assert!(check_agrees(&rec, &member(&old), tmp.path()).is_ok());
    }

    #[test]
    fn a_record_round_trips_and_knows_its_daemon_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = record(Path::new("/d"));
        rec.save(tmp.path()).unwrap();
        let back = DaemonRecord::load(tmp.path()).unwrap().unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.liveness(), Liveness::Running);
        let gone = DaemonRecord {
            start_time: rec.start_time + 1,
            ..rec
        };
        assert_eq!(gone.liveness(), Liveness::Gone);
        assert_eq!(DaemonRecord::load(&tmp.path().join("none")).unwrap(), None);
    }
}
