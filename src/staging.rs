//! The staging directory: how an etcd binary dropped by an operator becomes a pinned,
//! verified version, or is quarantined with a reason. Nothing here decides whether the
//! cluster may move to that version; that is the upgrade logic's job, fed by [`Candidate`]s.
//!
//! # Protocol (what an operator, or `etcd-supervisor stage`, writes)
//!
//! - **The etcd server binary** is any file whose name starts with `etcd` but not with
//!   `etcdctl`/`etcdutl`: `etcd`, `etcd-3.5.16`, `etcd-1a2b3c4d5e6f`. What follows `etcd` is
//!   the drop's *suffix*.
//! - **Companions** are `etcdctl<suffix>` and `etcdutl<suffix>` beside it (`etcd-3.5.16` goes
//!   with `etcdctl-3.5.16`). They travel with the server binary into its version directory,
//!   installed as `etcdctl` / `etcdutl`.
//! - **A file `NAME` is ready only when its checksum is present**: `NAME.sha256` (sha256sum
//!   format `HEX  NAME`; `HEX *NAME`, a bare `HEX` and BSD `SHA256 (NAME) = HEX` are accepted
//!   too), or a line for `NAME` in `SHA256SUMS`. `NAME.sha256` wins when both exist. The
//!   checksum file is the commit marker and is written last: a file without one is still
//!   being written and is waited for (one log line, no hashing). A drop is processed once
//!   its server binary and every companion present are ready; companions must be complete
//!   before the server binary's checksum lands.
//! - Left alone (never touched, never deleted): names starting with `.` (temp files, such as
//!   `stage`'s), `*.tmp`/`*.part`/`*.partial`/`*~`, `*.reason`, directories (`accepted/`,
//!   `rejected/`), archives (`*.tar.gz`, `*.tgz`, `*.tar`, `*.zip`: extract the binary first)
//!   and any other name (one log line each).
//!
//! # Checks, in order, before anything runs a staged file
//!
//! 1. regular file, not a symlink (checked with `lstat`, then opened with `O_NOFOLLOW` and
//!    checked again on the open descriptor: every later step reads that same inode);
//! 2. owned by root or by the supervisor's effective user;
//! 3. not group- or world-writable;
//! 4. not empty;
//! 5. its checksum file passes 1-3 as well, is well-formed, and the sha256 matches.
//!
//! Then the files are copied into a private (0700) temp dir under `<state-dir>/versions/`
//! (fsync), hashed again there, and only the *copy* of the server binary is probed with
//! `--version` under a timeout (a binary that hangs, fails, or prints anything but etcd's
//! `etcd Version: X.Y.Z` is refused). The temp dir is then renamed to
//! `versions/<X.Y.Z>` (see [`crate::versions::PendingInstall`]). A version already pinned
//! with identical bytes is a no-op; with other bytes it is refused.
//!
//! # What happens to staged files
//!
//! - **Refused**: moved to `<staging-dir>/rejected/` with their checksum files, then
//!   `NAME.reason` is written (last): one line with the time, the rule and what to do.
//!   Nothing refused is executed (only the private copy of a binary that passed checks 1-5
//!   is probed, and it is deleted when the probe refuses it).
//! - **Accepted**: the [`Candidate`] is delivered, then the files move to
//!   `<staging-dir>/accepted/` with their checksum files and `NAME.accepted` (time, where it
//!   is pinned), so a restart does not process them again (a crash in between means the drop
//!   is processed again, as a no-op). They are an audit trail: the pinned copy under
//!   `versions/` is what runs, and operators may delete `accepted/` at will.
//! - An existing name in those directories is never overwritten: the moved file becomes
//!   `NAME.2`, `NAME.3`, ... instead.
//! - `SHA256SUMS` is shared by several files: each drop verified by it gets a copy beside it
//!   (`NAME.SHA256SUMS`), and once no file it lists is left in the staging dir the original
//!   moves there instead, so a stale line never vouches for a later drop of the same name.
//!
//! A problem on the supervisor's side (disk full, `versions/` unwritable) refuses nothing: it
//! is logged and the drop retried a minute later.
//!
//! # Watching
//!
//! [`StagingWatcher`] scans the whole directory at start (files dropped while the supervisor
//! was down), then on every inotify event (debounced, ~150 ms) and, with `--poll-interval`,
//! on a timer for filesystems whose inotify is blind (network mounts). Each scan is a pure
//! [`plan`] over a [`Listing`]; only ready drops are opened. Accepted drops come out of a
//! channel as [`Candidate`]s; the versions store is the durable record of them.
//!
//! `etcd-supervisor stage` ([`stage`]) writes a drop by this protocol: content-addressed
//! names (`etcd-<12 hex of its sha256>`, companions with the same suffix), each file through
//! a temp file in the staging dir + fsync + rename, checksum files last, the server binary's
//! very last. It never executes anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventHandler, EventKind, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind};
use notify_debouncer_mini::{new_debouncer_opt, Config, DebounceEventResult, Debouncer};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::StageArgs;
use crate::config::RunSettings;
use crate::reaper::Reaper;
use crate::version::Version;
use crate::versions::{self, sync_dir, VersionStore, VersionsError};

/// The shared checksum file.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// Suffix of a file's own checksum file.
pub const CHECKSUM_SUFFIX: &str = ".sha256";
/// Where refused files go, inside the staging dir.
pub const REJECTED_DIR: &str = "rejected";
/// Where accepted files go, inside the staging dir.
pub const ACCEPTED_DIR: &str = "accepted";
/// Companion tools that travel with the server binary, installed under these names.
pub const COMPANIONS: [&str; 2] = ["etcdctl", "etcdutl"];
/// Debounce of inotify events: short, so a drop is seen well within a second.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);
/// Rescan interval used when inotify cannot be set up and no `--poll-interval` was given.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a drop that failed on the supervisor's side waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Largest checksum file read (a SHA256SUMS of a whole release is a few KiB).
const MAX_CHECKSUM_FILE: u64 = 1024 * 1024;
/// Hex digits of the sha256 in names written by `stage`.
const STAGE_NAME_HEX: usize = 12;

// ---------------------------------------------------------------------------------------
// Errors

/// Errors of the staging watcher and the `stage` command (the supervisor's side; a refused
/// staged file is a [`Refusal`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The staging dir is missing and so is its parent.
    #[error("staging directory {0} does not exist, and neither does its parent; create it (mode 0755) or point --staging-dir elsewhere")]
    NoParent(PathBuf),
    /// The staging path exists but is not a directory.
    #[error(
        "staging directory {0} is not a directory; remove it or point --staging-dir elsewhere"
    )]
    NotADirectory(PathBuf),
    /// The staging dir could not be created.
    #[error("cannot create staging directory {dir}: {source}; create it (mode 0755, owned by the supervisor's user) or point --staging-dir elsewhere")]
    Create {
        /// The staging dir.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The staging dir cannot be read.
    #[error(
        "cannot read staging directory {dir}: {source}; make it readable by the supervisor's user"
    )]
    Unreadable {
        /// The staging dir.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `stage` was given something it cannot stage.
    #[error("cannot stage {path}: {why}")]
    BadSource {
        /// The file given.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The versions store failed.
    #[error(transparent)]
    Versions(#[from] VersionsError),
}

impl StagingError {
    /// The exit code of a command that failed with this error: 2 for what the operator
    /// gave us (a bad source file, an unusable staging dir), 1 for failures on the way.
    pub fn exit_code(&self) -> i32 {
        match self {
            StagingError::Io { .. } | StagingError::Versions(_) => 1,
            _ => 2,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StagingError + 'a {
    move |source| StagingError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Why a staged drop was refused: one variant per rule, each message saying what to do.
/// `file` is the staged file (or checksum file) that broke the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A symlink (it could be re-pointed after the check).
    #[error("{file} is a symlink: staged files must be regular files (a link can be re-pointed after it is checked); copy the file itself in, e.g. with `etcd-supervisor stage`")]
    Symlink {
        /// The offending file.
        file: String,
    },
    /// A fifo, socket, device...
    #[error("{file} is a {kind}, not a regular file; stage the etcd binary itself")]
    NotRegular {
        /// The offending file.
        file: String,
        /// What it is.
        kind: &'static str,
    },
    /// Owned by someone other than root or the supervisor's user.
    #[error("{file} is owned by uid {uid}: staged files must be owned by root or by the supervisor's user (uid {euid}); chown it, or stage it as one of them")]
    Owner {
        /// The offending file.
        file: String,
        /// Its owner.
        uid: u32,
        /// The supervisor's effective uid.
        euid: u32,
    },
    /// Writable by a group or by everyone.
    #[error("{file} is {who}-writable (mode {mode:04o}): others could change it after it is checked; `chmod go-w` it and stage it again")]
    Writable {
        /// The offending file.
        file: String,
        /// "group" or "world".
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// Zero bytes.
    #[error("{file} is empty: stage the complete binary again, checksum last")]
    Empty {
        /// The offending file.
        file: String,
    },
    /// The checksum file cannot be understood.
    #[error("{file}: its checksum file is malformed ({detail}); write it as sha256sum prints it (`HEX  NAME`) and stage again")]
    MalformedChecksum {
        /// The staged file.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// The sha256 does not match the checksum file.
    #[error("{file}: sha256 {actual} does not match {expected} from {checksum_file}: the file is corrupt or incomplete, or the checksum is for another file; stage it again, checksum last")]
    Mismatch {
        /// The staged file.
        file: String,
        /// What the checksum file says.
        expected: String,
        /// What the file hashes to.
        actual: String,
        /// Which checksum file said it.
        checksum_file: String,
    },
    /// The file changed between the check and the copy.
    #[error("{file} changed while it was copied (the copy has sha256 {actual}, {expected} was checked): nothing may write into a staged file; stage it again")]
    ChangedDuringCopy {
        /// The staged file.
        file: String,
        /// The checked sha256.
        expected: String,
        /// The copy's sha256.
        actual: String,
    },
    /// `--version` printed something that is not etcd's version.
    #[error("{file}: `--version` (run on the private copy) did not print an etcd server version, it printed {output:?}; stage the etcd server binary (etcdctl/etcdutl go beside it as companions)")]
    NotEtcd {
        /// The staged file.
        file: String,
        /// The start of what it printed.
        output: String,
    },
    /// `--version` did not finish in time.
    #[error("{file}: `--version` (run on the private copy) did not answer within {}, so it is not a working etcd; check the binary and stage it again", humantime::format_duration(*timeout))]
    ProbeTimeout {
        /// The staged file.
        file: String,
        /// The limit.
        timeout: Duration,
    },
    /// `--version` could not run or exited non-zero.
    #[error("{file}: `--version` (run on the private copy) failed ({reason}): not an etcd binary for this host (wrong architecture? an archive? extract the etcd binary and stage that)")]
    ProbeFailed {
        /// The staged file.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// The version is pinned already, with other bytes.
    #[error("{file}: {version} is already pinned with different contents ({tool}: pinned sha256 {pinned}, staged {staged}); two builds under one version number are refused: check where this one comes from, or remove versions/{version} if the pinned one is wrong and not in use")]
    PinnedDifferent {
        /// The staged server binary.
        file: String,
        /// The version it reports (`X.Y.Z`).
        version: String,
        /// Which file of the version differs (etcd, etcdctl, etcdutl).
        tool: String,
        /// sha256 of the pinned file.
        pinned: String,
        /// sha256 of the staged file.
        staged: String,
    },
}

impl Refusal {
    /// A short name of the rule, for logs and tests.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Symlink { .. } => "symlink",
            Refusal::NotRegular { .. } => "not-regular",
            Refusal::Owner { .. } => "owner",
            Refusal::Writable { .. } => "writable",
            Refusal::Empty { .. } => "empty",
            Refusal::MalformedChecksum { .. } => "malformed-checksum",
            Refusal::Mismatch { .. } => "checksum-mismatch",
            Refusal::ChangedDuringCopy { .. } => "changed-during-copy",
            Refusal::NotEtcd { .. } => "not-etcd",
            Refusal::ProbeTimeout { .. } => "probe-timeout",
            Refusal::ProbeFailed { .. } => "probe-failed",
            Refusal::PinnedDifferent { .. } => "pinned-different",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure part: names, checksum files, and the plan for one directory listing

/// What a name in the staging dir is, by the naming convention.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// An etcd server binary; the suffix ties companions to it.
    Binary { suffix: String },
    /// `etcdctl<suffix>` / `etcdutl<suffix>`.
    Companion { tool: &'static str, suffix: String },
    /// `NAME.sha256` or `SHA256SUMS`.
    Checksum,
    /// Ours or an editor's/copier's: never looked at, never logged.
    Quiet,
    /// An archive: logged once, left alone.
    Archive,
    /// Anything else: logged once, left alone.
    Other,
}

fn role(name: &str) -> Role {
    const QUIET_SUFFIXES: [&str; 6] = [".tmp", ".part", ".partial", ".swp", "~", ".reason"];
    const ARCHIVES: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".zip"];
    if name.starts_with('.') || QUIET_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Role::Quiet;
    }
    if name == SUMS_FILE || name.ends_with(CHECKSUM_SUFFIX) {
        return Role::Checksum;
    }
    if name.ends_with(".accepted") || name.ends_with(".SHA256SUMS") {
        return Role::Quiet;
    }
    if ARCHIVES.iter().any(|s| name.ends_with(s)) {
        return Role::Archive;
    }
    for tool in COMPANIONS {
        if let Some(suffix) = name.strip_prefix(tool) {
            return Role::Companion {
                tool,
                suffix: suffix.to_owned(),
            };
        }
    }
    match name.strip_prefix("etcd") {
        Some(suffix) => Role::Binary {
            suffix: suffix.to_owned(),
        },
        None => Role::Other,
    }
}

/// One line of a checksum file: the digest, and the file name it is for when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumLine {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// The file name (directories stripped), if the line has one.
    pub name: Option<String>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn base_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// Parses one checksum line: sha256sum's `HEX  NAME` / `HEX *NAME`, a bare `HEX`, or BSD's
/// `SHA256 (NAME) = HEX`. `None` for anything else.
pub fn parse_checksum_line(line: &str) -> Option<ChecksumLine> {
    let line = line.trim_end_matches(['\r', '\n']).trim_start();
    if let Some(rest) = line.strip_prefix("SHA256 (") {
        let (name, hex) = rest.rsplit_once(") = ")?;
        let hex = hex.trim();
        return is_sha256_hex(hex).then(|| ChecksumLine {
            sha256: hex.to_ascii_lowercase(),
            name: Some(base_name(name)),
        });
    }
    let (hex, rest) = match line.split_once([' ', '\t']) {
        Some((hex, rest)) => (hex, rest),
        None => (line, ""),
    };
    if !is_sha256_hex(hex) {
        return None;
    }
    // sha256sum: one space, then ' ' (text) or '*' (binary), then the name.
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let name = rest.strip_prefix('*').unwrap_or(rest).trim_end();
    Some(ChecksumLine {
        sha256: hex.to_ascii_lowercase(),
        name: (!name.is_empty()).then(|| base_name(name)),
    })
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// What `NAME.sha256` says about `name`: `Ok(None)` while it is empty (being written),
/// `Err` with what is wrong when it is malformed or names another file.
pub fn expected_from_own(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut lines = Vec::new();
    for (n, line) in content_lines(text) {
        lines.push(
            parse_checksum_line(line)
                .ok_or_else(|| format!("line {n} is not `HEX  NAME` with a 64-digit sha256"))?,
        );
    }
    if lines.is_empty() {
        return Ok(None);
    }
    if let Some(line) = lines.iter().find(|l| l.name.as_deref() == Some(name)) {
        return Ok(Some(line.sha256.clone()));
    }
    match lines.as_slice() {
        [ChecksumLine { sha256, name: None }] => Ok(Some(sha256.clone())),
        _ => {
            let named: Vec<&str> = lines.iter().filter_map(|l| l.name.as_deref()).collect();
            Err(format!("it is for {}, not {name}", named.join(", ")))
        }
    }
}

/// What `SHA256SUMS` says about `name`: `Ok(None)` when it has no line for it, `Err` when it
/// has two lines for it that disagree. Lines it cannot parse are skipped (such files often
/// carry other content).
pub fn expected_from_sums(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut found: Option<String> = None;
    for (_, line) in content_lines(text) {
        let Some(parsed) = parse_checksum_line(line) else {
            continue;
        };
        if parsed.name.as_deref() != Some(name) {
            continue;
        }
        match &found {
            Some(earlier) if *earlier != parsed.sha256 => {
                return Err(format!(
                    "{SUMS_FILE} lists {name} twice with different sums"
                ))
            }
            _ => found = Some(parsed.sha256),
        }
    }
    Ok(found)
}

/// The names in `SHA256SUMS` (for deciding when it is used up).
fn names_in_sums(text: &str) -> BTreeSet<String> {
    content_lines(text)
        .filter_map(|(_, l)| parse_checksum_line(l))
        .filter_map(|l| l.name)
        .collect()
}

/// A snapshot of the staging directory: all [`plan`] needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Names of the entries that are not directories (files, symlinks, fifos, ...).
    pub files: BTreeSet<String>,
    /// Text of each checksum file (`*.sha256`, `SHA256SUMS`) that is a readable regular
    /// file. One in `files` but not here could not be read as such.
    pub checksum_texts: BTreeMap<String, String>,
}

/// Where a staged file's expected sha256 comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// `NAME.sha256` or `SHA256SUMS`.
    pub checksum_file: String,
}

/// A ready file of a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Its name in the staging dir.
    pub name: String,
    /// Its name in the version dir: `etcd`, `etcdctl` or `etcdutl`.
    pub tool: &'static str,
    /// Its checksum, or what is wrong with its checksum file.
    pub checksum: Result<Expected, String>,
}

/// A drop whose files are all ready: the server binary and the companions staged with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The etcd server binary.
    pub binary: StagedFile,
    /// etcdctl / etcdutl with the same suffix.
    pub companions: Vec<StagedFile>,
}

impl Bundle {
    /// The server binary, then the companions.
    pub fn files(&self) -> impl Iterator<Item = &StagedFile> {
        std::iter::once(&self.binary).chain(&self.companions)
    }
}

/// Why a file is not processed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// No checksum yet: the file is still being written.
    Checksum,
    /// The server binary is ready, but this companion staged with it is not.
    Companion(String),
    /// A companion whose server binary (this name) is not there.
    Binary(String),
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Checksum => write!(
                f,
                "waiting for its checksum (NAME{CHECKSUM_SUFFIX} or a line in {SUMS_FILE}), which is written last"
            ),
            Waiting::Companion(c) => write!(f, "waiting for the checksum of {c}, staged with it"),
            Waiting::Binary(b) => write!(f, "waiting for {b}, the etcd binary it goes with"),
        }
    }
}

/// Why a file is left alone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not named like part of a drop.
    NotEtcd,
    /// An archive.
    Archive,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::NotEtcd => f.write_str(
                "not part of an etcd drop (names start with etcd, etcdctl or etcdutl); left alone",
            ),
            Ignored::Archive => {
                f.write_str("an archive: extract the etcd binary and stage that; left alone")
            }
        }
    }
}

/// What one scan of the staging dir found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Drops to process now, by name.
    pub ready: Vec<Bundle>,
    /// Files to wait for, and why.
    pub waiting: Vec<(String, Waiting)>,
    /// Files left alone for good, and why.
    pub ignored: Vec<(String, Ignored)>,
}

/// Decides, from a listing alone, which drops are ready, which files are still incomplete,
/// and which are not ours.
pub fn plan(listing: &Listing) -> Plan {
    let files = &listing.files;
    let sums = files
        .contains(SUMS_FILE)
        .then(|| listing.checksum_texts.get(SUMS_FILE))
        .flatten();
    // None: not ready yet. Some(Err): ready to be refused for its checksum file.
    let checksum_of = |name: &str| -> Option<Result<Expected, String>> {
        let own = format!("{name}{CHECKSUM_SUFFIX}");
        if files.contains(&own) {
            let Some(text) = listing.checksum_texts.get(&own) else {
                return Some(Err(format!("{own} is not a readable regular file")));
            };
            return match expected_from_own(text, name) {
                Ok(Some(sha256)) => Some(Ok(Expected {
                    sha256,
                    checksum_file: own,
                })),
                // Empty: being written. It wins over SHA256SUMS, so wait for it.
                Ok(None) => None,
                Err(detail) => Some(Err(format!("{own}: {detail}"))),
            };
        }
        if files.contains(SUMS_FILE) && sums.is_none() {
            return Some(Err(format!("{SUMS_FILE} is not a readable regular file")));
        }
        match expected_from_sums(sums?, name) {
            Ok(found) => found.map(|sha256| {
                Ok(Expected {
                    sha256,
                    checksum_file: SUMS_FILE.to_owned(),
                })
            }),
            Err(detail) => Some(Err(detail)),
        }
    };
    let mut out = Plan::default();
    for name in files {
        match role(name) {
            Role::Binary { suffix } => {
                let Some(checksum) = checksum_of(name) else {
                    out.waiting.push((name.clone(), Waiting::Checksum));
                    continue;
                };
                let mut companions = Vec::new();
                let mut incomplete = None;
                for tool in COMPANIONS {
                    let companion = format!("{tool}{suffix}");
                    if !files.contains(&companion) {
                        continue;
                    }
                    match checksum_of(&companion) {
                        Some(checksum) => companions.push(StagedFile {
                            name: companion,
                            tool,
                            checksum,
                        }),
                        None => incomplete = Some(companion),
                    }
                }
                match incomplete {
                    Some(companion) => out
                        .waiting
                        .push((name.clone(), Waiting::Companion(companion))),
                    None => out.ready.push(Bundle {
                        binary: StagedFile {
                            name: name.clone(),
                            tool: "etcd",
                            checksum,
                        },
                        companions,
                    }),
                }
            }
            Role::Companion { suffix, .. } => {
                let binary = format!("etcd{suffix}");
                if !files.contains(&binary) {
                    out.waiting.push((name.clone(), Waiting::Binary(binary)));
                } else if checksum_of(name).is_none() {
                    out.waiting.push((name.clone(), Waiting::Checksum));
                }
            }
            Role::Archive => out.ignored.push((name.clone(), Ignored::Archive)),
            Role::Other => out.ignored.push((name.clone(), Ignored::NotEtcd)),
            Role::Checksum | Role::Quiet => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The watcher

/// A staged etcd version that passed every check and is now pinned under `versions/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The version its private copy reported.
    pub version: Version,
    /// `<state-dir>/versions/<X.Y.Z>`.
    pub dir: PathBuf,
    /// `<dir>/etcd`.
    pub binary: PathBuf,
    /// sha256 of the etcd binary.
    pub sha256: String,
    /// Companions staged with it and now in `dir` (`etcdctl`, `etcdutl`).
    pub companions: Vec<String>,
    /// The server binary's name in the staging dir.
    pub staged_name: String,
    /// True when this exact version was pinned already (staged twice): nothing changed.
    pub already_pinned: bool,
}

/// Settings of the staging watcher.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The staging dir (created, mode 0755, when missing and its parent exists).
    pub staging_dir: PathBuf,
    /// The state dir holding `versions/`.
    pub state_dir: PathBuf,
    /// Also rescan on this timer (filesystems whose inotify misses changes).
    pub poll_interval: Option<Duration>,
    /// inotify debounce.
    pub debounce: Duration,
    /// Limit of the `--version` probe.
    pub probe_timeout: Duration,
    /// Use inotify (false: timer only, every `poll_interval` or [`FALLBACK_POLL`]).
    pub inotify: bool,
}

impl WatchOptions {
    /// Defaults for `staging_dir` and `state_dir`: inotify, no timer.
    pub fn new(staging_dir: &Path, state_dir: &Path) -> Self {
        Self {
            staging_dir: staging_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            poll_interval: None,
            debounce: DEFAULT_DEBOUNCE,
            probe_timeout: versions::PROBE_TIMEOUT,
            inotify: true,
        }
    }

    /// The options `run` asked for.
    pub fn from_settings(settings: &RunSettings) -> Self {
        Self {
            poll_interval: settings.poll_interval,
            ..Self::new(&settings.staging_dir, &settings.state_dir)
        }
    }
}

/// Watches the staging dir and turns ready drops into [`Candidate`]s. Dropping it stops the
/// watch (a drop being processed is abandoned; its temp copy is removed).
pub struct StagingWatcher {
    dir: PathBuf,
    task: JoinHandle<()>,
    _debouncer: Option<Debouncer<ChangesOnly>>,
}

impl fmt::Debug for StagingWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for StagingWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StagingWatcher {
    /// Prepares the staging dir (created with mode 0755 when missing and its parent exists),
    /// starts the watch on the current runtime, and returns the stream of accepted drops.
    /// The first scan runs at once, so drops made while the supervisor was down are found.
    pub fn start(
        opts: WatchOptions,
        reaper: Reaper,
    ) -> Result<(StagingWatcher, mpsc::Receiver<Candidate>), StagingError> {
        prepare_staging_dir(&opts.staging_dir)?;
        let wake = Arc::new(Notify::new());
        let mut poll = opts.poll_interval;
        let debouncer = if opts.inotify {
            match watch_dir(&opts.staging_dir, opts.debounce, wake.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    let every = *poll.get_or_insert(FALLBACK_POLL);
                    tracing::warn!(
                        dir = %opts.staging_dir.display(),
                        "cannot watch the staging directory with inotify ({e}); rescanning every {} instead (raise fs.inotify.max_user_instances / max_user_watches, or set --poll-interval)",
                        humantime::format_duration(every)
                    );
                    None
                }
            }
        } else {
            poll.get_or_insert(FALLBACK_POLL);
            None
        };
        let (tx, rx) = mpsc::channel(16);
        let dir = opts.staging_dir.clone();
        let worker = Worker {
            store: VersionStore::new(&opts.state_dir),
            opts,
            reaper,
            reported: HashMap::new(),
            failed: HashSet::new(),
            scan_error: None,
            retry_at: None,
        };
        let task = tokio::spawn(worker.run(wake, poll, tx));
        Ok((
            StagingWatcher {
                dir,
                task,
                _debouncer: debouncer,
            },
            rx,
        ))
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn prepare_staging_dir(dir: &Path) -> Result<(), StagingError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StagingError::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent_exists = dir
                .parent()
                .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
            if !parent_exists {
                return Err(StagingError::NoParent(dir.to_path_buf()));
            }
            create_dir_0755(dir).map_err(|source| StagingError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
            tracing::info!(dir = %dir.display(), "created the staging directory");
        }
        Err(source) => {
            return Err(StagingError::Unreadable {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    fs::read_dir(dir).map_err(|source| StagingError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = fs::metadata(dir) {
        let euid = nix::unistd::geteuid().as_raw();
        if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != euid) {
            tracing::warn!(
                dir = %dir.display(),
                "the staging directory is writable by others (mode {:04o}, uid {}): files they drop are refused, but `chmod go-w` it and chown it to root or the supervisor's user",
                meta.mode() & 0o7777,
                meta.uid()
            );
        }
    }
    Ok(())
}

fn create_dir_0755(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask may have taken bits away; the mode is part of the contract.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

fn watch_dir(
    dir: &Path,
    debounce: Duration,
    wake: Arc<Notify>,
) -> Result<Debouncer<ChangesOnly>, notify::Error> {
    // Not batched: each path's events are delivered once it has been quiet for `debounce`
    // (batching could hold them up to twice as long).
    let config = Config::default()
        .with_timeout(debounce)
        .with_batch_mode(false);
    let mut debouncer =
        new_debouncer_opt::<_, ChangesOnly>(config, move |res: DebounceEventResult| {
            if let Err(e) = res {
                tracing::warn!("staging directory watch: {e}; rescanning");
            }
            // Any event, or a lost one, is answered the same way: a rescan.
            wake.notify_one();
        })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// The platform watcher minus open/read events. notify's inotify backend reports every
/// `open` of the directory and its files, and each scan opens them: without this filter
/// every scan would wake the watcher for another one, forever.
struct ChangesOnly(RecommendedWatcher);

impl Watcher for ChangesOnly {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let inner = RecommendedWatcher::new(
            move |res: notify::Result<notify::Event>| {
                let reads_only = matches!(
                    &res,
                    Ok(notify::Event {
                        kind: EventKind::Access(access),
                        ..
                    }) if *access != AccessKind::Close(AccessMode::Write)
                );
                if !reads_only {
                    handler.handle_event(res);
                }
            },
            config,
        )?;
        Ok(Self(inner))
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// How processing one drop ended.
enum Outcome {
    Accepted(Box<(Candidate, Bundle)>),
    Refused(Refusal),
    /// A file went away (or was replaced) under us; the next scan sees what is there now.
    Vanished,
    /// Our side failed; nothing is refused, the drop is retried later.
    Failed(StagingError),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Self {
        Outcome::Refused(r)
    }
}

impl From<StagingError> for Outcome {
    fn from(e: StagingError) -> Self {
        Outcome::Failed(e)
    }
}

impl From<VersionsError> for Outcome {
    fn from(e: VersionsError) -> Self {
        Outcome::Failed(e.into())
    }
}

struct Worker {
    opts: WatchOptions,
    store: VersionStore,
    reaper: Reaper,
    /// Waiting/ignored names and the message last logged for each: logged once.
    reported: HashMap<String, String>,
    /// Server binaries whose drop failed on our side: skipped until `retry_at`.
    failed: HashSet<String>,
    scan_error: Option<String>,
    retry_at: Option<Instant>,
}

impl Worker {
    async fn run(mut self, wake: Arc<Notify>, poll: Option<Duration>, tx: mpsc::Sender<Candidate>) {
        let mut ticker = poll.map(|every| tokio::time::interval_at(Instant::now() + every, every));
        if let Some(t) = ticker.as_mut() {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            if !self.scan_and_process(&tx).await {
                tracing::debug!("nobody listens for staged versions any more; stopping the watch");
                return;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                _ = wake.notified() => {}
                _ = async {
                    match ticker.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    self.retry_at = None;
                    self.failed.clear();
                    self.scan_error = None;
                }
            }
        }
    }

    /// One scan and everything it makes ready. False when the receiver is gone.
    async fn scan_and_process(&mut self, tx: &mpsc::Sender<Candidate>) -> bool {
        let dir = self.opts.staging_dir.clone();
        let listing = match blocking(move || scan(&dir)).await {
            Ok(listing) => listing,
            Err(e) => {
                let text = e.to_string();
                if self.scan_error.as_deref() != Some(&text) {
                    tracing::error!("cannot scan the staging directory: {text}");
                    self.scan_error = Some(text);
                }
                self.schedule_retry();
                return true;
            }
        };
        self.scan_error = None;
        tracing::debug!(
            entries = listing.files.len(),
            "scanned the staging directory"
        );
        let plan = plan(&listing);
        self.report(&plan);
        self.failed.retain(|name| listing.files.contains(name));
        for bundle in plan.ready {
            let name = bundle.binary.name.clone();
            if self.failed.contains(&name) {
                continue;
            }
            tracing::debug!(file = %name, "staged {name} is ready: checking it");
            match self.process(&bundle).await {
                Outcome::Accepted(accepted) => {
                    let (candidate, bundle) = *accepted;
                    tracing::info!(
                        file = %name,
                        version = %candidate.version,
                        "staged {name} accepted as etcd {}{}",
                        candidate.version,
                        if candidate.already_pinned { " (already pinned: nothing changed)" } else { "" }
                    );
                    // Delivered first, moved after: a drop still in staging/ after a crash is
                    // processed again (a no-op), never lost.
                    if tx.send(candidate.clone()).await.is_err() {
                        return false;
                    }
                    let dir = self.opts.staging_dir.clone();
                    let moved = blocking(move || accept_files(&dir, &bundle, &candidate)).await;
                    if let Err(e) = moved {
                        tracing::error!(file = %name, "accepted, but cannot move it out of the staging directory: {e}");
                        self.failed.insert(name);
                        self.schedule_retry();
                    }
                }
                Outcome::Refused(refusal) => {
                    tracing::warn!(file = %name, rule = refusal.rule(), "staged {name} refused: {refusal}");
                    let dir = self.opts.staging_dir.clone();
                    let b = bundle.clone();
                    let r = refusal.clone();
                    if let Err(e) = blocking(move || reject_files(&dir, &b, &r)).await {
                        tracing::error!(file = %name, "cannot move the refused drop to {REJECTED_DIR}/: {e}");
                        self.failed.insert(name);
                        self.schedule_retry();
                    }
                }
                Outcome::Vanished => {}
                Outcome::Failed(e) => {
                    tracing::error!(
                        file = %name,
                        "cannot process staged {name}: {e}; nothing was refused, retrying in {}",
                        humantime::format_duration(RETRY_AFTER)
                    );
                    self.failed.insert(name);
                    self.schedule_retry();
                }
            }
        }
        true
    }

    fn schedule_retry(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// Logs each waiting or ignored file once (again only when its reason changes).
    fn report(&mut self, plan: &Plan) {
        let mut now: HashMap<String, String> = HashMap::new();
        for (name, why) in &plan.waiting {
            now.insert(name.clone(), format!("{name}: {why}"));
        }
        for (name, why) in &plan.ignored {
            now.insert(name.clone(), format!("{name}: {why}"));
        }
        for (name, line) in &now {
            if self.reported.get(name) != Some(line) {
                tracing::info!(file = %name, "staging: {line}");
            }
        }
        self.reported = now;
    }

    async fn process(&self, bundle: &Bundle) -> Outcome {
        let dir = self.opts.staging_dir.clone();
        let store = self.store.clone();
        let b = bundle.clone();
        let pending = match blocking(move || Ok(verify_and_copy(&dir, &store, &b))).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(outcome)) => return outcome,
            Err(e) => return e.into(),
        };
        let file = bundle.binary.name.clone();
        let binary = pending.binary();
        let version =
            match versions::probe_version(&self.reaper, &binary, self.opts.probe_timeout).await {
                Ok(v) => v,
                Err(VersionsError::NotEtcd { output, .. }) => {
                    return Refusal::NotEtcd { file, output }.into()
                }
                Err(VersionsError::ProbeTimeout { timeout, .. }) => {
                    return Refusal::ProbeTimeout { file, timeout }.into()
                }
                Err(VersionsError::ProbeFailed { reason, .. }) => {
                    return Refusal::ProbeFailed { file, reason }.into()
                }
                Err(e) => return e.into(),
            };
        let v = version.clone();
        let committed = match blocking(move || Ok(pending.commit(&v))).await {
            Ok(committed) => committed,
            Err(e) => return e.into(),
        };
        let installed = match committed {
            Ok(installed) => installed,
            Err(VersionsError::PinnedDifferent {
                version,
                file: tool,
                pinned,
                new,
            }) => {
                return Refusal::PinnedDifferent {
                    file,
                    version: version.to_string(),
                    tool,
                    pinned,
                    staged: new,
                }
                .into()
            }
            Err(e) => return e.into(),
        };
        Outcome::Accepted(Box::new((
            Candidate {
                dir: self.store.dir_of(&version),
                binary: installed.pinned.binary,
                version,
                sha256: installed.sha256,
                companions: bundle
                    .companions
                    .iter()
                    .map(|c| c.tool.to_owned())
                    .collect(),
                staged_name: file,
                already_pinned: installed.already_pinned,
            },
            bundle.clone(),
        )))
    }
}

/// Runs blocking file work off the runtime thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StagingError> + Send + 'static,
) -> Result<T, StagingError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(StagingError::Io {
            action: "processing",
            path: PathBuf::from("the staging directory"),
            source: io::Error::other(e.to_string()),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// File work (blocking)

/// Reads the staging dir into a [`Listing`].
/// Lists the staging dir: its files and the text of its checksum files.
pub fn scan(dir: &Path) -> Result<Listing, StagingError> {
    let unreadable = |source| StagingError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    };
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name of ours
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unreadable(e)),
        }
        if role(&name) == Role::Checksum {
            match read_checksum_file(&dir.join(&name)) {
                Ok(Some(text)) => {
                    listing.checksum_texts.insert(name.clone(), text);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &dir.join(&name))(e)),
            }
        }
        listing.files.insert(name);
    }
    Ok(listing)
}

/// The text of a checksum file; `None` when it is not a regular file (a symlink, a fifo)
/// or too large to be one.
fn read_checksum_file(path: &Path) -> io::Result<Option<String>> {
    let file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_CHECKSUM_FILE {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_CHECKSUM_FILE).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Opens without following a final symlink, and without blocking on a fifo.
fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Rules 1-3: regular file, owner, not group/world-writable.
fn check_meta(file: &str, meta: &Metadata) -> Result<(), Refusal> {
    if meta.file_type().is_symlink() {
        return Err(Refusal::Symlink {
            file: file.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(Refusal::NotRegular {
            file: file.to_owned(),
            kind: kind_of(meta),
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(Refusal::Owner {
            file: file.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    let who = if mode & 0o002 != 0 {
        Some("world")
    } else if mode & 0o020 != 0 {
        Some("group")
    } else {
        None
    };
    if let Some(who) = who {
        return Err(Refusal::Writable {
            file: file.to_owned(),
            who,
            mode,
        });
    }
    Ok(())
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Rules 1-5 for one staged file: returns it open (rewound), its checks bound to that inode.
fn inspect(dir: &Path, staged: &StagedFile) -> Result<File, Outcome> {
    let name = &staged.name;
    let path = dir.join(name);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("reading", &path)(e).into()),
    };
    check_meta(name, &meta)?;
    let mut file = match open_no_follow(&path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Refusal::Symlink { file: name.clone() }.into())
        }
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("opening", &path)(e).into()),
    };
    let opened = file
        .metadata()
        .map_err(|e| Outcome::from(io_err("reading", &path)(e)))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(Outcome::Vanished); // replaced between lstat and open
    }
    check_meta(name, &opened)?;
    if opened.len() == 0 {
        return Err(Refusal::Empty { file: name.clone() }.into());
    }
    let expected = match &staged.checksum {
        Ok(expected) => expected,
        Err(detail) => {
            return Err(Refusal::MalformedChecksum {
                file: name.clone(),
                detail: detail.clone(),
            }
            .into())
        }
    };
    let sums_path = dir.join(&expected.checksum_file);
    match fs::symlink_metadata(&sums_path) {
        Ok(m) => check_meta(&expected.checksum_file, &m)?,
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("reading", &sums_path)(e).into()),
    }
    let actual = versions::sha256_reader(&mut file, &path)?;
    if actual != expected.sha256 {
        return Err(Refusal::Mismatch {
            file: name.clone(),
            expected: expected.sha256.clone(),
            actual,
            checksum_file: expected.checksum_file.clone(),
        }
        .into());
    }
    file.rewind()
        .map_err(|e| Outcome::from(io_err("rewinding", &path)(e)))?;
    Ok(file)
}

/// Checks every file of the drop, then copies them into a private temp dir under
/// `versions/`, each hashed again after the copy.
fn verify_and_copy(
    dir: &Path,
    store: &VersionStore,
    bundle: &Bundle,
) -> Result<versions::PendingInstall, Outcome> {
    let mut opened = Vec::new();
    for staged in bundle.files() {
        opened.push((staged, inspect(dir, staged)?));
    }
    let mut pending = store.begin_install()?;
    for (staged, mut file) in opened {
        let expected = staged
            .checksum
            .as_ref()
            .map(|e| e.sha256.as_str())
            .unwrap_or_default();
        match pending.add(staged.tool, &mut file, &dir.join(&staged.name), expected) {
            Ok(_) => {}
            Err(VersionsError::Tampered { actual, .. }) => {
                return Err(Refusal::ChangedDuringCopy {
                    file: staged.name.clone(),
                    expected: expected.to_owned(),
                    actual,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pending)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A stem in `dest` free for `name`, its checksum and its note: `name`, `name.2`, ...
fn free_stem(dest: &Path, name: &str, note_ext: &str) -> String {
    let taken = |stem: &str| {
        [
            stem.to_owned(),
            format!("{stem}{CHECKSUM_SUFFIX}"),
            format!("{stem}.{note_ext}"),
            format!("{stem}.{SUMS_FILE}"),
        ]
        .iter()
        .any(|f| fs::symlink_metadata(dest.join(f)).is_ok())
    };
    let mut stem = name.to_owned();
    let mut n = 2;
    while taken(&stem) {
        stem = format!("{name}.{n}");
        n += 1;
    }
    stem
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StagingError> {
    let mut f = File::create(path).map_err(io_err("creating", path))?;
    f.write_all(bytes).map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("syncing", path))
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), StagingError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if vanished(&e) => Ok(()),
        Err(e) => Err(io_err("moving", from)(e)),
    }
}

/// Moves a drop's files, with their checksum files, into `dest_name/`, then writes a
/// one-line note per file (`NAME.<note_ext>`) last: a note means its file is in place.
/// `SHA256SUMS` is copied beside the server binary, or moved there once it lists nothing
/// still staged.
fn move_bundle(
    dir: &Path,
    bundle: &Bundle,
    dest_name: &str,
    note_ext: &str,
    note: impl Fn(&StagedFile) -> String,
) -> Result<(), StagingError> {
    let dest = dir.join(dest_name);
    create_dir_0755(&dest).map_err(io_err("creating", &dest))?;
    let mut stems = Vec::new();
    let mut uses_sums = false;
    for staged in bundle.files() {
        let stem = free_stem(&dest, &staged.name, note_ext);
        rename_if_present(&dir.join(&staged.name), &dest.join(&stem))?;
        rename_if_present(
            &dir.join(format!("{}{CHECKSUM_SUFFIX}", staged.name)),
            &dest.join(format!("{stem}{CHECKSUM_SUFFIX}")),
        )?;
        uses_sums |= matches!(&staged.checksum, Ok(e) if e.checksum_file == SUMS_FILE)
            || matches!(&staged.checksum, Err(d) if d.starts_with(SUMS_FILE));
        stems.push((staged, stem));
    }
    let sums = dir.join(SUMS_FILE);
    if let (true, Some((_, stem))) = (uses_sums, stems.first()) {
        let to = dest.join(format!("{stem}.{SUMS_FILE}"));
        let still_needed = read_checksum_file(&sums)
            .ok()
            .flatten()
            .map(|text| {
                names_in_sums(&text)
                    .iter()
                    .any(|n| fs::symlink_metadata(dir.join(n)).is_ok())
            })
            .unwrap_or(false);
        if still_needed {
            fs::copy(&sums, &to).map_err(io_err("copying", &sums))?;
        } else {
            rename_if_present(&sums, &to)?;
        }
    }
    sync_dir(dir)?;
    for (staged, stem) in stems {
        let tmp = dest.join(format!(".{stem}.{note_ext}.tmp"));
        write_synced(&tmp, format!("{}\n", note(staged)).as_bytes())?;
        let to = dest.join(format!("{stem}.{note_ext}"));
        fs::rename(&tmp, &to).map_err(io_err("renaming into", &to))?;
    }
    sync_dir(&dest)?;
    Ok(())
}

fn reject_files(dir: &Path, bundle: &Bundle, refusal: &Refusal) -> Result<(), StagingError> {
    let time = now_rfc3339();
    let binary = &bundle.binary.name;
    move_bundle(dir, bundle, REJECTED_DIR, "reason", |staged| {
        if staged.name == *binary {
            format!("{time} refused: {refusal}")
        } else {
            format!("{time} refused together with {binary}: {refusal}")
        }
    })
}

fn accept_files(dir: &Path, bundle: &Bundle, candidate: &Candidate) -> Result<(), StagingError> {
    let time = now_rfc3339();
    let target = candidate.dir.display();
    let how = if candidate.already_pinned {
        "was already pinned as"
    } else {
        "pinned as"
    };
    move_bundle(dir, bundle, ACCEPTED_DIR, "accepted", |staged| {
        format!(
            "{time} accepted: {} {how} {target}/{}",
            staged.name, staged.tool
        )
    })
}

// ---------------------------------------------------------------------------------------
// `etcd-supervisor stage`

/// What [`stage`] put into the staging dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDrop {
    /// The staging dir.
    pub dir: PathBuf,
    /// The server binary's name there (`etcd-<12 hex>`).
    pub binary: String,
    /// Its sha256.
    pub sha256: String,
    /// Names of the companions staged with it.
    pub companions: Vec<String>,
    /// True when the same drop was already staged and still waiting (nothing was written).
    pub already_staged: bool,
}

impl fmt::Display for StagedDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.already_staged {
            "already staged"
        } else {
            "staged"
        };
        write!(f, "{verb} {} (sha256 {})", self.binary, self.sha256)?;
        if !self.companions.is_empty() {
            write!(f, " with {}", self.companions.join(", "))?;
        }
        write!(f, " in {}", self.dir.display())
    }
}

/// `etcd-supervisor stage`: stages the files and prints one line; returns the exit code.
pub fn stage_command(args: &StageArgs) -> i32 {
    let dir = args
        .staging_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join("staging"));
    match stage(&args.binary, &args.with, &dir) {
        Ok(staged) => {
            println!("{staged}");
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}

fn bad_source(path: &Path, why: impl Into<String>) -> StagingError {
    StagingError::BadSource {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Opens a file to stage: it must be a non-empty regular file we can read.
fn open_source(path: &Path) -> Result<File, StagingError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => bad_source(path, "it does not exist"),
        _ => bad_source(path, format!("cannot read it ({e})")),
    })?;
    if !meta.is_file() {
        return Err(bad_source(
            path,
            format!("it is a {}, not a regular file", kind_of(&meta)),
        ));
    }
    if meta.len() == 0 {
        return Err(bad_source(path, "it is empty"));
    }
    File::open(path).map_err(|e| bad_source(path, format!("cannot read it ({e})")))
}

/// The tool a `--with` file is, by its file name.
fn companion_tool(path: &Path) -> Result<&'static str, StagingError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    COMPANIONS
        .into_iter()
        .find(|tool| name.starts_with(tool))
        .ok_or_else(|| {
            bad_source(
                path,
                "--with takes etcdctl and etcdutl (the file name must start with one of them)",
            )
        })
}

/// Copies `source` into a hidden temp file in `dir` with `mode`, hashing what it writes,
/// and fsyncs it.
fn copy_to_temp(
    source: &mut File,
    source_path: &Path,
    dir: &Path,
    mode: u32,
) -> Result<(tempfile::NamedTempFile, String), StagingError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".stage-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temp file in", dir))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", source_path)(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(io_err("writing into", dir))?;
    }
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions in", dir))?;
    file.sync_all()
        .map_err(io_err("syncing a temp file in", dir))?;
    Ok((tmp, hex::encode(hasher.finalize())))
}

/// Stages `binary` (and `with`: etcdctl/etcdutl) into `dir` by the staging protocol: names
/// `etcd-<12 hex>` / `etcdctl-<12 hex>` from the binary's sha256, each file through a temp
/// file + fsync + rename, then the checksum files, the binary's last. Creates `dir` (0755)
/// when missing. Never executes anything.
pub fn stage(binary: &Path, with: &[PathBuf], dir: &Path) -> Result<StagedDrop, StagingError> {
    let binary_name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(tool) = COMPANIONS.into_iter().find(|t| binary_name.starts_with(t)) {
        return Err(bad_source(
            binary,
            format!(
                "this looks like {tool}; stage the etcd server binary and pass {tool} with --with"
            ),
        ));
    }
    let mut source = open_source(binary)?;
    let mut companions = Vec::new();
    for path in with {
        let tool = companion_tool(path)?;
        if companions.iter().any(|(t, _, _)| *t == tool) {
            return Err(bad_source(path, format!("{tool} is given twice")));
        }
        companions.push((tool, path.clone(), open_source(path)?));
    }
    let create_err = |source| StagingError::Create {
        dir: dir.to_path_buf(),
        source,
    };
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(create_err)?;
        // The umask may have taken bits away; the mode is part of the contract.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(create_err)?;
    }
    if !dir.is_dir() {
        return Err(StagingError::NotADirectory(dir.to_path_buf()));
    }

    let (binary_tmp, sha256) = copy_to_temp(&mut source, binary, dir, 0o755)?;
    let suffix = format!("-{}", &sha256[..STAGE_NAME_HEX]);
    let binary_final = format!("etcd{suffix}");
    let mut staged = StagedDrop {
        dir: dir.to_path_buf(),
        binary: binary_final.clone(),
        sha256: sha256.clone(),
        companions: Vec::new(),
        already_staged: false,
    };
    let committed = dir.join(format!("{binary_final}{CHECKSUM_SUFFIX}"));
    if dir.join(&binary_final).is_file() && committed.is_file() {
        // Same bytes, same name, checksum written: an earlier stage is still waiting to be
        // processed. (Without its checksum, an earlier stage died half-way: redo it.)
        staged.already_staged = true;
        return Ok(staged);
    }
    let mut copies = Vec::new();
    for (tool, path, mut file) in companions {
        let (tmp, sum) = copy_to_temp(&mut file, &path, dir, 0o755)?;
        copies.push((format!("{tool}{suffix}"), tmp, sum));
    }
    // Data first (companions, then the binary), then checksums, the binary's last: the
    // binary's checksum is the commit marker of the whole drop.
    let mut sums = Vec::new();
    for (name, tmp, sum) in copies {
        persist(tmp, &dir.join(&name))?;
        sums.push((name, sum));
    }
    persist(binary_tmp, &dir.join(&binary_final))?;
    sync_dir(dir)?;
    for (name, sum) in sums {
        write_checksum_file(dir, &name, &sum)?;
        staged.companions.push(name);
    }
    write_checksum_file(dir, &binary_final, &sha256)?;
    Ok(staged)
}

/// Renames a synced temp file into place. Replacing an earlier file of the same name is
/// safe: names are content-addressed, and nothing is processed before its checksum lands.
fn persist(tmp: tempfile::NamedTempFile, to: &Path) -> Result<(), StagingError> {
    tmp.persist(to)
        .map(|_| ())
        .map_err(|e| io_err("renaming into", to)(e.error))
}

/// Writes `NAME.sha256` (`HEX  NAME`, mode 0644) through a temp file, fsync, rename.
fn write_checksum_file(dir: &Path, name: &str, sha256: &str) -> Result<(), StagingError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".stage-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temp file in", dir))?;
    tmp.write_all(format!("{sha256}  {name}\n").as_bytes())
        .map_err(io_err("writing into", dir))?;
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting permissions in", dir))?;
    file.sync_all()
        .map_err(io_err("syncing a temp file in", dir))?;
    persist(tmp, &dir.join(format!("{name}{CHECKSUM_SUFFIX}")))?;
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn listing(files: &[(&str, Option<&str>)]) -> Listing {
        let mut l = Listing::default();
        for (name, text) in files {
            l.files.insert(name.to_string());
            if let Some(text) = text {
                l.checksum_texts.insert(name.to_string(), text.to_string());
            }
        }
        l
    }

    fn ready_names(p: &Plan) -> Vec<(String, Vec<String>)> {
        p.ready
            .iter()
            .map(|b| {
                (
                    b.binary.name.clone(),
                    b.companions.iter().map(|c| c.name.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn parses_every_checksum_format() {
        let upper = A.to_ascii_uppercase();
        for (line, name) in [
            (format!("{A}  etcd"), Some("etcd")),
            (format!("{A} *etcd"), Some("etcd")),
            (format!("{A} etcd"), Some("etcd")),
            (format!("{A}\tetcd"), Some("etcd")),
            (format!("{A}  ./bin/etcd\r\n"), Some("etcd")),
            (A.to_string(), None),
            (format!("  {upper}  "), None),
            (format!("SHA256 (etcd) = {A}"), Some("etcd")),
        ] {
            let parsed = parse_checksum_line(&line).unwrap_or_else(|| panic!("{line:?}"));
            assert_eq!(parsed.sha256, A, "{line:?}");
            assert_eq!(parsed.name.as_deref(), name, "{line:?}");
        }
        for bad in [
            "",
            "abc  etcd",
            &A[..63],
            &format!("{A}0  etcd"),
            "MD5 (x) = 00",
        ] {
            assert_eq!(parse_checksum_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_checksum_file_must_be_for_its_file() {
        assert_eq!(
            expected_from_own(&format!("{A}  etcd\n"), "etcd"),
            Ok(Some(A.into()))
        );
        assert_eq!(expected_from_own(A, "etcd"), Ok(Some(A.into())));
        assert_eq!(expected_from_own("", "etcd"), Ok(None));
        assert_eq!(expected_from_own("\n  \n", "etcd"), Ok(None));
        // A multi-line file is fine when it has a line for the file.
        let multi = format!("# sums\n{B}  etcdctl\n{A}  etcd\n");
        assert_eq!(expected_from_own(&multi, "etcd"), Ok(Some(A.into())));
        assert!(expected_from_own(&format!("{A}  etcd-3.5.15"), "etcd")
            .unwrap_err()
            .contains("etcd-3.5.15, not etcd"));
        assert!(expected_from_own("deadbeef  etcd", "etcd")
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn sums_file_lines_are_looked_up_by_name() {
        let text = format!("{A}  etcd\n{B} *etcdctl\nnot a line\n");
        assert_eq!(expected_from_sums(&text, "etcd"), Ok(Some(A.into())));
        assert_eq!(expected_from_sums(&text, "etcdctl"), Ok(Some(B.into())));
        assert_eq!(expected_from_sums(&text, "etcdutl"), Ok(None));
        let twice = format!("{A}  etcd\n{B}  etcd\n");
        assert!(expected_from_sums(&twice, "etcd").is_err());
        assert_eq!(
            names_in_sums(&text).into_iter().collect::<Vec<_>>(),
            ["etcd", "etcdctl"]
        );
    }

    #[test]
    fn a_file_is_ready_only_with_its_checksum() {
        let own = format!("{A}  etcd");
        let p = plan(&listing(&[("etcd", None), ("etcd.sha256", Some(&own))]));
        assert_eq!(ready_names(&p), [("etcd".to_string(), vec![])]);
        assert_eq!(
            p.ready[0].binary.checksum,
            Ok(Expected {
                sha256: A.into(),
                checksum_file: "etcd.sha256".into()
            })
        );
        assert!(p.waiting.is_empty() && p.ignored.is_empty());

        let p = plan(&listing(&[("etcd-3.5.16", None)]));
        assert!(p.ready.is_empty());
        assert_eq!(p.waiting, [("etcd-3.5.16".to_string(), Waiting::Checksum)]);

        // An empty checksum file is still being written.
        let p = plan(&listing(&[("etcd", None), ("etcd.sha256", Some(""))]));
        assert_eq!(p.waiting, [("etcd".to_string(), Waiting::Checksum)]);

        // A checksum file without its file: nothing to do yet, nothing to say.
        let p = plan(&listing(&[("etcd.sha256", Some(&own))]));
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn malformed_or_unreadable_checksums_make_a_drop_ready_to_refuse() {
        let p = plan(&listing(&[
            ("etcd", None),
            ("etcd.sha256", Some("nonsense")),
        ]));
        assert!(p.ready[0]
            .binary
            .checksum
            .as_ref()
            .unwrap_err()
            .contains("etcd.sha256"));
        // In `files` without text: a symlink or fifo named like a checksum file.
        let p = plan(&listing(&[("etcd", None), ("etcd.sha256", None)]));
        assert!(p.ready[0]
            .binary
            .checksum
            .as_ref()
            .unwrap_err()
            .contains("not a readable regular file"));
    }

    #[test]
    fn sums_file_makes_files_ready_and_own_file_wins() {
        let sums = format!("{A}  etcd\n{B}  etcdctl\n");
        let p = plan(&listing(&[
            ("etcd", None),
            ("etcdctl", None),
            ("SHA256SUMS", Some(&sums)),
        ]));
        assert_eq!(
            ready_names(&p),
            [("etcd".to_string(), vec!["etcdctl".to_string()])]
        );
        assert_eq!(
            p.ready[0].companions[0]
                .checksum
                .as_ref()
                .unwrap()
                .checksum_file,
            "SHA256SUMS"
        );
        let own = format!("{B}  etcd");
        let p = plan(&listing(&[
            ("etcd", None),
            ("etcd.sha256", Some(&own)),
            ("SHA256SUMS", Some(&sums)),
        ]));
        assert_eq!(p.ready[0].binary.checksum.as_ref().unwrap().sha256, B);
    }

    #[test]
    fn companions_go_with_the_binary_of_the_same_suffix() {
        let s = |n: &str| format!("{A}  {n}");
        let (a, b, c, d) = (
            s("etcd-3.5.16"),
            s("etcdctl-3.5.16"),
            s("etcdutl-3.5.16"),
            s("etcdctl"),
        );
        let p = plan(&listing(&[
            ("etcd-3.5.16", None),
            ("etcd-3.5.16.sha256", Some(&a)),
            ("etcdctl-3.5.16", None),
            ("etcdctl-3.5.16.sha256", Some(&b)),
            ("etcdutl-3.5.16", None),
            ("etcdutl-3.5.16.sha256", Some(&c)),
            ("etcdctl", None),
            ("etcdctl.sha256", Some(&d)),
        ]));
        assert_eq!(
            ready_names(&p),
            [(
                "etcd-3.5.16".to_string(),
                vec!["etcdctl-3.5.16".to_string(), "etcdutl-3.5.16".to_string()]
            )]
        );
        assert_eq!(p.ready[0].companions[1].tool, "etcdutl");
        assert_eq!(
            p.waiting,
            [("etcdctl".to_string(), Waiting::Binary("etcd".into()))]
        );

        // A companion still being written holds its binary back.
        let p = plan(&listing(&[
            ("etcd-3.5.16", None),
            ("etcd-3.5.16.sha256", Some(&a)),
            ("etcdctl-3.5.16", None),
        ]));
        assert!(p.ready.is_empty());
        assert_eq!(
            p.waiting,
            [
                (
                    "etcd-3.5.16".to_string(),
                    Waiting::Companion("etcdctl-3.5.16".into())
                ),
                ("etcdctl-3.5.16".to_string(), Waiting::Checksum),
            ]
        );
    }

    #[test]
    fn other_names_are_ignored_and_ours_are_quiet() {
        let p = plan(&listing(&[
            ("README", None),
            ("etcd-v3.5.16-linux-amd64.tar.gz", None),
            (".stage-XYZ", None),
            ("etcd.part", None),
            ("etcd.reason", None),
            ("etcd.sha256.tmp", None),
        ]));
        assert!(p.ready.is_empty() && p.waiting.is_empty());
        assert_eq!(
            p.ignored,
            [
                ("README".to_string(), Ignored::NotEtcd),
                (
                    "etcd-v3.5.16-linux-amd64.tar.gz".to_string(),
                    Ignored::Archive
                ),
            ]
        );
    }

    #[test]
    fn free_stems_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd");
        fs::write(dir.path().join("etcd.reason"), "x").unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd.2");
        fs::write(dir.path().join("etcd.2"), "x").unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd.3");
    }

    #[test]
    fn refusal_messages_name_the_rule_and_the_fix() {
        let r = Refusal::PinnedDifferent {
            file: "etcd-x".into(),
            version: "3.5.16".into(),
            tool: "etcd".into(),
            pinned: A.into(),
            staged: B.into(),
        };
        assert!(r
            .to_string()
            .contains("3.5.16 is already pinned with different contents"));
        let t = Refusal::ProbeTimeout {
            file: "etcd".into(),
            timeout: Duration::from_secs(5),
        };
        assert!(t.to_string().contains("within 5s"), "{t}");
        let w = Refusal::Writable {
            file: "etcd".into(),
            who: "group",
            mode: 0o775,
        };
        assert!(w.to_string().contains("group-writable (mode 0775)"), "{w}");
    }
}
