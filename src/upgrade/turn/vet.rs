//! Vetting a staged version against this member before it queues, while nothing has
//! stopped (the live [`Vetter`]): the side effects at the edge of pure checks. What each
//! check's output means (the root role, whether and how the v2 store is checked, what
//! `etcdutl check v2store` said) is judged by [`crate::upgrade::rules::vet`].
//!
//! 0. **The user.** With auth on, `--user` must hold etcd's `root` role (a turn's snapshot,
//!    HashKV and leader hand-off are admin-only); otherwise a local refusal naming the grant.
//! 1. **The command line.** The flag lists of the running and the target binary come from
//!    their own `--help` (as etcd's guides tell operators to diff them); this member's
//!    flags, `ETCD_*` environment and `--config-file` are judged by [`flags::check`]. A
//!    refusal is this member's fault: the version stays staged and is taken once the flags
//!    are fixed and the supervisor restarted.
//! 2. **The v2 store, before 3.6.** When this member moves from 3.5 to 3.6 or later,
//!    `etcdutl check v2store` of the running version (3.6's and 3.7's etcdutl have no
//!    `check`) runs on a copy of the member's `snap/` and `wal/` (the live data dir is in
//!    use), whether or not v2 was ever enabled: v2 data can predate the supervisor, and v2
//!    requests left in the WAL since the last v2 snapshot (3.4's `/health` writes them) make
//!    3.6 panic at replay; 3.5.32+ reads the WAL too. Custom v2 data refuses the upgrade with
//!    the remedies of etcd's 3.6 upgrade guide, by where it was found. Without that etcdutl
//!    pinned, a member that runs (or ever ran, under this supervisor) with `--enable-v2` is
//!    refused; any other passes with a warning ([`v2store_check`]).
//! 3. **The dress rehearsal** ([`crate::rehearsal`]): the target serves a restored copy of
//!    this member's data on loopback. Its outcome says whose fault a failure is: the
//!    version's rejects it for the whole cluster, the member's is a local refusal, and one
//!    that cannot run is skipped with a mark (or, under `--rehearsal always`, holds).
//!    In snapshot backup mode (and `--backup-max-age` above zero) its snapshot is the
//!    turn's own backup, written here first ([`LiveBackups::write_for_rehearsal`]): the
//!    rehearsal restores that file while it is verified from disk (one read serves both;
//!    a failed verification makes the verdict a local refusal, whatever the rehearsal
//!    said), and the turn reuses it while it is fresh
//!    ([`crate::upgrade::rules::backup_reuse`]).
//!
//! The outcome of the last vetting is kept in `<state-dir>/vetting.json` for `plan`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::live::{ForRehearsal, LiveBackups};
use super::ports::{BackupTurn, Vetter};
use crate::etcd::{Client, Credentials};
use crate::process::reaper::Reaper;
use crate::process::tool;
use crate::rehearsal::{self, Outcome, RehearsalMode};
use crate::upgrade::rules::flags::{self, FlagSet};
use crate::upgrade::rules::vet::{
    judge_roles, judge_v2store, quota_headroom, v2store_check, V2StoreCheck, Vetted,
};
use crate::versions::store::VersionStore;
use crate::versions::Version;

/// Bound on `etcd --help` and on the v2store check.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The marker left when this member was seen with the v2 API enabled.
const V2_MARKER: &str = "v2-enabled-seen";

/// This member's etcd configuration, as the vetter judges it (resolved once by
/// [`crate::config`] with etcd's precedence: a flag beats the environment).
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The member's name.
    pub name: String,
    /// The flags passed to etcd.
    pub args: Vec<String>,
    /// The `ETCD_*` variables etcd sees.
    pub env: Vec<(String, String)>,
    /// etcd's data dir.
    pub data_dir: PathBuf,
    /// etcd's WAL dir, when kept outside the data dir.
    pub wal_dir: Option<PathBuf>,
    /// The `--config-file` etcd reads, if any.
    pub config_file: Option<PathBuf>,
    /// The v2 API is enabled.
    pub v2_enabled: bool,
    /// `--quota-backend-bytes` as given.
    pub quota_backend_bytes: Option<i64>,
}

/// How the dress rehearsal runs for this member.
#[derive(Debug, Clone)]
pub struct RehearsalSettings {
    /// `--rehearsal`.
    pub mode: RehearsalMode,
    /// `--rehearsal-max-db`.
    pub max_db: u64,
    /// How long the target gets to become healthy (`--ready-timeout`).
    pub ready_timeout: Duration,
    /// This member's own client URL (the snapshot and HashKV come from it).
    pub endpoint: String,
    /// Credentials when etcd's auth is on.
    pub credentials: Option<Credentials>,
    /// A client of the local member.
    pub client: Client,
}

/// The last vetting, as `plan` shows it (`<state-dir>/vetting.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VettingRecord {
    /// The version vetted.
    pub version: Version,
    /// `passed`, `refused here`, `rejected` or `passed, rehearsal skipped`.
    pub result: String,
    /// What each check found, one line.
    pub detail: String,
    /// How long the vetting took, in ms.
    pub took_ms: u64,
    /// When (RFC 3339).
    pub time: String,
}

impl VettingRecord {
    /// `<state-dir>/vetting.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("vetting.json")
    }

    /// The last record, if any (a broken one reads as none: it is only a report).
    pub fn load(state_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(state_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The live vetter.
#[derive(Clone)]
pub struct LiveVetter {
    reaper: Reaper,
    versions_dir: PathBuf,
    state_dir: PathBuf,
    member: MemberConfig,
    rehearsal: RehearsalSettings,
    /// When set, the rehearsal's snapshot is taken as a verified turn backup that the
    /// turn may reuse ([`LiveBackups::prepare`]).
    backups: Option<LiveBackups>,
}

impl LiveVetter {
    /// A vetter for this member; remembers in the state dir when it runs with v2 enabled.
    pub fn new(
        reaper: Reaper,
        state_dir: &Path,
        member: MemberConfig,
        rehearsal: RehearsalSettings,
    ) -> Self {
        if member.v2_enabled {
            if let Err(e) = std::fs::write(state_dir.join(V2_MARKER), b"") {
                tracing::warn!(error = %e, "cannot record that the v2 API is enabled");
            }
        }
        Self {
            reaper,
            versions_dir: state_dir.join("versions"),
            state_dir: state_dir.to_path_buf(),
            member,
            rehearsal,
            backups: None,
        }
    }

    /// Takes the rehearsal's snapshot as a verified turn backup through `backups`.
    pub fn sharing_backups(mut self, backups: LiveBackups) -> Self {
        self.backups = Some(backups);
        self
    }

    /// The turn backup the rehearsal restores, written now and verified beside it; `None`
    /// (the rehearsal streams its own) when none is shared, the rehearsal does not run, or
    /// the backup failed.
    async fn backup_for_rehearsal(
        &self,
        running: &Version,
        target: &Version,
    ) -> Option<(&LiveBackups, ForRehearsal)> {
        let backups = self.backups.as_ref()?;
        if self.rehearsal.mode == RehearsalMode::Never {
            return None;
        }
        let turn = BackupTurn {
            from: running.clone(),
            to: target.clone(),
        };
        match backups.write_for_rehearsal(turn).await {
            Ok(written) => Some((backups, written)),
            Err(e) => {
                tracing::warn!(member = %self.member.name, error = %e, "no backup taken for the rehearsal; it takes its own snapshot and the turn its own backup");
                None
            }
        }
    }

    /// The dress rehearsal of `target`, as a verdict.
    async fn rehearse(&self, running: &Version, target: &Version) -> Vetted {
        let written = self.backup_for_rehearsal(running, target).await;
        let snapshot = written.as_ref().map(|(_, w)| rehearsal::GivenSnapshot {
            path: w.snapshot.clone(),
            revision: w.revision,
        });
        let run = self.rehearse_on(running, target, snapshot);
        let Some((backups, written)) = written else {
            return run.await;
        };
        // The restore and the verification read the same file at once: one read from the
        // disk serves both. The restore trusts the file (it skips its own hash pass), so the
        // verdict counts only once the verification passed.
        let (vetted, sealed) = tokio::join!(run, written.seal());
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                return Vetted::MemberFault(format!(
                    "the backup taken for the dress rehearsal of etcd {target} failed its verification from disk ({e}); check this member's disk and its backups directory"
                ))
            }
        };
        if let Err(e) = backups.keep_for_turn(sealed).await {
            tracing::warn!(member = %self.member.name, error = %e, "the backup taken for the rehearsal could not be kept; the turn takes its own");
        }
        vetted
    }

    /// The dress rehearsal of `target` on `snapshot` (else a snapshot of its own), as a
    /// verdict.
    async fn rehearse_on(
        &self,
        running: &Version,
        target: &Version,
        snapshot: Option<rehearsal::GivenSnapshot>,
    ) -> Vetted {
        let r = &self.rehearsal;
        let store = VersionStore::new(&self.state_dir);
        let req = rehearsal::Request {
            member: self.member.name.clone(),
            running: running.clone(),
            running_binary: self.binary(running, "etcd"),
            target: target.clone(),
            target_binary: self.binary(target, "etcd"),
            restore_tool: rehearsal::Request::restore_tool_from_store(&store, running, target),
            mode: r.mode,
            etcd_args: self.member.args.clone(),
            config_file: self.member.config_file.clone(),
            scratch_parent: self.state_dir.join("rehearsal"),
            snapshot,
            ready_timeout: r.ready_timeout,
            max_db: r.max_db,
            endpoint: r.endpoint.clone(),
            credentials: r.credentials.clone(),
        };
        // Dropping this future (the supervisor stopping) kills the private etcd and
        // removes its directory; no cancel signal is needed here.
        let report =
            rehearsal::rehearse(&req, &r.client, &self.reaper, std::future::pending()).await;
        let secs = report.duration.as_secs_f64();
        match report.outcome {
            Outcome::Passed {
                hash_compared,
                hash_note,
                ..
            } => Vetted::Pass {
                warnings: Vec::new(),
                summary: format!(
                    "rehearsal passed in {secs:.1} s ({})",
                    if hash_compared {
                        "HashKV equal".to_owned()
                    } else {
                        format!("HashKV not compared: {hash_note}")
                    }
                ),
            },
            Outcome::VersionFault(why) => Vetted::VersionFault(format!(
                "the dress rehearsal of etcd {target} on a copy of this member's data failed: {why}"
            )),
            Outcome::MemberFault(why) => Vetted::MemberFault(format!(
                "the dress rehearsal of etcd {target} could not run here: {why}"
            )),
            Outcome::Skipped(why) => Vetted::Pass {
                warnings: vec![format!("the dress rehearsal was skipped: {why}")],
                summary: format!("rehearsal skipped: {why}"),
            },
            Outcome::Cancelled => Vetted::MemberFault("the dress rehearsal was cancelled".into()),
        }
    }

    fn binary(&self, version: &Version, tool: &str) -> PathBuf {
        self.versions_dir.join(version.to_string()).join(tool)
    }

    async fn flag_set(&self, version: &Version) -> Result<FlagSet, String> {
        let bin = self.binary(version, "etcd");
        let out = tool::run(
            &self.reaper,
            Command::new(&bin).arg("--help").env_clear(),
            TOOL_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        let set = flags::parse_help(&out.stdout);
        if set.is_empty() {
            return Err(format!("{} --help listed no flags", bin.display()));
        }
        Ok(set)
    }

    async fn command_line(&self, running: &Version, target: &Version) -> Vetted {
        let (running_flags, target_flags) =
            match (self.flag_set(running).await, self.flag_set(target).await) {
                (Ok(r), Ok(t)) => (r, t),
                (Err(e), _) | (_, Err(e)) => {
                    return Vetted::Pass {
                        warnings: vec![format!(
                            "the flags of etcd {target} could not be compared with this \
                             member's: {e}"
                        )],
                        summary: "flags not compared".into(),
                    }
                }
            };
        let config = match &self.member.config_file {
            None => None,
            Some(path) => match tokio::fs::read_to_string(&path).await {
                Ok(text) => Some(text),
                Err(e) => {
                    return Vetted::MemberFault(format!(
                        "this member's etcd --config-file {} cannot be read ({e}); fix it and \
                         restart the supervisor",
                        path.display()
                    ))
                }
            },
        };
        let passed = flags::parse_args(&self.member.args, &running_flags);
        let verdict = flags::check(
            &passed,
            &self.member.env,
            config.as_deref(),
            running,
            target,
            &target_flags,
        );
        let warnings = verdict.warnings.iter().map(ToString::to_string).collect();
        if verdict.refusals.is_empty() {
            return Vetted::Pass {
                warnings,
                summary: "flags fit".into(),
            };
        }
        let problems: Vec<String> = verdict.refusals.iter().map(ToString::to_string).collect();
        Vetted::MemberFault(format!(
            "etcd {target} would not start with this member's configuration: {}. The version \
             stays staged here and is taken once the supervisor restarts with the fix",
            problems.join("; ")
        ))
    }

    /// With auth on, whether the `--user` holds etcd's `root` role: a turn needs it (the
    /// snapshot backup, HashKV and the leader hand-off are admin-only in etcd, and the lock
    /// and records sit under the key prefix). Without this check such a user queues and then
    /// waits for ever on a "permission denied" the log shows as a pause.
    async fn access(&self) -> Option<Vetted> {
        let user = &self.rehearsal.credentials.as_ref()?.user;
        let client = &self.rehearsal.client;
        let roles = match client.auth_enabled().await {
            Ok(false) => return None,
            Ok(true) => client.user_roles(user).await,
            Err(e) => Err(e),
        };
        Some(judge_roles(user, roles.map_err(|e| e.to_string())))
    }

    /// A warning when the db is close to its quota (`None` when it is not, or the size
    /// cannot be read: the rehearsal and the turn's preflight read it again).
    async fn quota(&self) -> Option<Vetted> {
        let status = self
            .rehearsal
            .client
            .status_of(&self.rehearsal.endpoint)
            .await
            .ok()?;
        let db_size = u64::try_from(status.db_size).ok()?;
        let warning = quota_headroom(db_size, self.member.quota_backend_bytes)?;
        Some(Vetted::Pass {
            warnings: vec![warning],
            summary: "db near its quota".into(),
        })
    }

    /// `etcdutl check v2store` on a copy of the member's snap/ and wal/, when this member
    /// moves from before 3.6 to 3.6 or later.
    ///
    /// Only the running 3.5 release's `etcdutl` has `check v2store` (3.6's and 3.7's do not:
    /// "unknown command"), and the 3.5.32 floor makes it one that also reads the WAL. v2
    /// data can predate the supervisor (written while `--enable-v2` was on, then the flag
    /// dropped), so the check runs whenever that etcdutl is pinned; without it, a member
    /// seen with v2 enabled is refused and any other passes with a warning.
    async fn v2store(&self, running: &Version, target: &Version) -> Option<Vetted> {
        let seen = self.member.v2_enabled || self.state_dir.join(V2_MARKER).exists();
        let etcdutl = self.binary(running, "etcdutl");
        let stage = || {
            format!(
                "stage etcdutl {running} beside the running version (etcd-supervisor stage \
                 <etcd {running}> --with <etcdutl {running}>)"
            )
        };
        match v2store_check(running, target, seen, etcdutl.exists()) {
            V2StoreCheck::None => return None,
            V2StoreCheck::WithRunning => {}
            V2StoreCheck::WarnUnchecked => {
                return Some(Vetted::Pass {
                    warnings: vec![format!(
                        "the v2 store was not checked before {target} (etcd's 3.6 upgrade \
                         guide asks for `etcdutl check v2store`): {}",
                        stage()
                    )],
                    summary: "v2store not checked (no etcdutl pinned)".into(),
                });
            }
            V2StoreCheck::RefuseUnchecked => {
                let stage = stage();
                return Some(Vetted::MemberFault(format!(
                    "this member has run with the v2 API enabled, so its v2 store must be checked \
                 before {target} (etcd's 3.6 upgrade guide), and only etcdutl {running} can \
                 check it: {stage}, then restart the supervisor"
                )));
            }
        }
        let scratch = match tempfile::Builder::new()
            .prefix("v2store-check.")
            .tempdir_in(&self.state_dir)
        {
            Ok(d) => d,
            Err(e) => {
                return Some(Vetted::MemberFault(format!(
                    "cannot make a scratch dir in {} for the v2store check: {e}",
                    self.state_dir.display()
                )))
            }
        };
        let (from, wal, to) = (
            self.member.data_dir.clone(),
            self.member.wal_dir.clone(),
            scratch.path().to_path_buf(),
        );
        let copied = crate::blocking::run(move || copy_v2_files(&from, wal.as_deref(), &to)).await;
        if let Err(e) = copied {
            return Some(Vetted::MemberFault(format!(
                "cannot copy the data dir for the v2store check: {e}"
            )));
        }
        let out = tool::run(
            &self.reaper,
            Command::new(&etcdutl)
                .args(["check", "v2store", "--data-dir"])
                .arg(scratch.path()),
            TOOL_TIMEOUT,
        )
        .await;
        Some(match out {
            Ok(out) => judge_v2store(target, out.exit, &format!("{}{}", out.stdout, out.stderr)),
            Err(e) => Vetted::MemberFault(format!("the v2store check did not run: {e}")),
        })
    }
}

impl Vetter for LiveVetter {
    async fn vet(&self, running: &Version, target: &Version) -> Vetted {
        let started = std::time::Instant::now();
        let verdict = self.vet_all(running, target).await;
        let (result, detail) = match &verdict {
            Vetted::Pass { summary, .. } if summary.contains("rehearsal skipped") => {
                ("passed, rehearsal skipped", summary.clone())
            }
            Vetted::Pass { summary, .. } => ("passed", summary.clone()),
            Vetted::MemberFault(why) => ("refused here", why.clone()),
            Vetted::VersionFault(why) => ("rejected", why.clone()),
        };
        let record = VettingRecord {
            version: target.clone(),
            result: result.to_owned(),
            detail,
            took_ms: started.elapsed().as_millis() as u64,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let path = VettingRecord::path(&self.state_dir);
        let written = crate::blocking::run(move || {
            let json = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
            crate::durable::replace_atomically(&path, &json).map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the vetting for `plan`");
        }
        verdict
    }
}

impl LiveVetter {
    async fn vet_all(&self, running: &Version, target: &Version) -> Vetted {
        let mut summary = Vec::new();
        let mut warnings = Vec::new();
        let mut absorb = |v: Vetted| match v {
            Vetted::Pass {
                warnings: w,
                summary: s,
            } => {
                warnings.extend(w);
                summary.push(s);
                None
            }
            refusal => Some(refusal),
        };
        if let Some(check) = self.access().await {
            if let Some(refusal) = absorb(check) {
                return refusal;
            }
        }
        match self.command_line(running, target).await {
            // `--enable-v2` is refused by 3.6; the v2store check says whether removing it
            // is all there is to do, so the operator does not have to run it by hand.
            Vetted::MemberFault(why) if self.member.v2_enabled => {
                let also = match self.v2store(running, target).await {
                    Some(Vetted::Pass { summary, .. }) if summary == "v2store clean" => {
                        " (etcdutl check v2store found no custom v2 data here)".to_owned()
                    }
                    Some(Vetted::MemberFault(more) | Vetted::VersionFault(more)) => {
                        format!(". Also: {more}")
                    }
                    Some(Vetted::Pass { .. }) | None => String::new(),
                };
                return Vetted::MemberFault(format!("{why}{also}"));
            }
            other => {
                if let Some(refusal) = absorb(other) {
                    return refusal;
                }
            }
        }
        if let Some(check) = self.v2store(running, target).await {
            if let Some(refusal) = absorb(check) {
                return refusal;
            }
        }
        if let Some(check) = self.quota().await {
            absorb(check);
        }
        if let Some(refusal) = absorb(self.rehearse(running, target).await) {
            return refusal;
        }
        Vetted::Pass {
            warnings,
            summary: summary.join("; "),
        }
    }
}

/// Copies `member/snap/*.snap` and `member/wal/*.wal` of `data_dir` into `to`, the files
/// the v2store check reads (the db is not needed).
fn copy_v2_files(data_dir: &Path, wal_dir: Option<&Path>, to: &Path) -> Result<(), String> {
    for (sub, ext) in [("snap", "snap"), ("wal", "wal")] {
        // A separate --wal-dir holds the WAL files directly; the copy keeps etcd's layout.
        let from = match (sub, wal_dir) {
            ("wal", Some(wal)) => wal.to_path_buf(),
            _ => data_dir.join("member").join(sub),
        };
        let dest = to.join("member").join(sub);
        std::fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let entries = match std::fs::read_dir(&from) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", from.display())),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == ext) {
                std::fs::copy(&path, dest.join(entry.file_name()))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_copy_takes_the_wal_from_a_separate_wal_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, wal, to) = (
            tmp.path().join("data"),
            tmp.path().join("wal"),
            tmp.path().join("to"),
        );
        std::fs::create_dir_all(data.join("member/snap")).unwrap();
        std::fs::write(data.join("member/snap/1.snap"), b"s").unwrap();
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("0.wal"), b"w").unwrap();
        copy_v2_files(&data, Some(&wal), &to).unwrap();
        assert!(to.join("member/snap/1.snap").is_file());
        assert_eq!(std::fs::read(to.join("member/wal/0.wal")).unwrap(), b"w");
    }
}
