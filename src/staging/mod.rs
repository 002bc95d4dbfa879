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
//!   `rejected/`), other archives (`*.tar.gz`, `*.tgz`, `*.tar`, `*.zip`: extract the binary
//!   first) and any other name (one log line each).
//! - **A release tarball** as upstream names it, `etcd-vX.Y.Z-linux-ARCH.tar.gz`, is a drop
//!   of its own, ready once its checksum is there (`NAME.sha256`, or its line in upstream's
//!   `SHA256SUMS`). The tarball passes checks 1-5 below; then its entries are checked and
//!   `etcd` (with `etcdctl`, `etcdutl` when present) taken from its top directory into a
//!   private dir (see `tarball` for the rules: no traversal, no links, no special files,
//!   size limits), and from there they go the bare binary's way. The version `etcd`
//!   reports must be the one in the name.
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
//! `versions/<X.Y.Z>` (see [`crate::versions::store::PendingInstall`]). A version already pinned
//! with identical bytes is a no-op; with other bytes it is refused.
//!
//! # What happens to staged files
//!
//! - **Refused**: moved to `<staging-dir>/rejected/` with their checksum files, then
//!   `NAME.reason` is written (last): one line with the time, the rule and what to do.
//!   Nothing refused is executed (only the private copy of a binary that passed checks 1-5
//!   is probed, and it is deleted when the probe refuses it). The upgrade driver leaves
//!   `rejected/etcd-<version>.reason` the same way for a version it refused or rejected
//!   ([`write_reason`]).
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
//! `etcd-supervisor stage` ([`stage`](fn@stage)) writes a drop by this protocol:
//! content-addressed names (`etcd-<12 hex of its sha256>`, companions with the same suffix),
//! each file through a temp file in the staging dir + fsync + rename, checksum files last,
//! the server binary's very last. It never executes anything.
//!
//! # Layout
//!
//! - `protocol`: the pure part: naming roles, checksum files, and the [`plan`] of one
//!   [`Listing`] (which drops are ready, waiting or ignored).
//! - `scan`: reading the staging dir into a [`Listing`]; opening files without following links.
//! - `watch`: [`StagingWatcher`]: inotify (debounced) and timer rescans, the scan loop.
//! - `tarball`: release tarballs: the name, the entry rules, the extraction.
//! - `accept`: checks 1-5 on a ready drop, the private copy and probe, and moving its files
//!   to `accepted/` or `rejected/` with a note.
//! - `stage`: the `etcd-supervisor stage` command ([`stage`](fn@stage)).
//! - here: the error types ([`StagingError`], [`Refusal`]), [`Candidate`] and [`WatchOptions`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::RunSettings;
use crate::durable::{self, IoError};
use crate::versions::store::{self, VersionsError};
use crate::versions::Version;

mod accept;
mod note;
#[cfg(test)]
mod props;
mod protocol;
mod scan;
mod stage;
mod tarball;
mod watch;

pub use note::write_reason;
pub use protocol::{
    expected_from_own, expected_from_sums, parse_checksum_line, parse_tarball_name, plan, Bundle,
    ChecksumLine, Expected, Ignored, Listing, Plan, StagedFile, TarballName, Waiting, ACCEPTED_DIR,
    CHECKSUM_SUFFIX, COMPANIONS, REJECTED_DIR, SUMS_FILE,
};
pub use scan::scan;
pub use stage::{stage, StagedDrop};
pub use tarball::{check_entry, ArchiveProblem, EntryUse, MAX_ENTRIES, MAX_ENTRY, MAX_TOTAL};
pub use watch::{StagingWatcher, DEFAULT_DEBOUNCE, FALLBACK_POLL, RETRY_AFTER};

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
    #[error(transparent)]
    Io(#[from] IoError),
    /// The versions store failed.
    #[error(transparent)]
    Versions(#[from] VersionsError),
}

/// Blocking file work that did not finish (a panic): said as a failure to process the
/// staging directory.
impl From<crate::blocking::WorkerLost> for StagingError {
    fn from(e: crate::blocking::WorkerLost) -> Self {
        io_err("processing", Path::new("the staging directory"))(io::Error::other(e.to_string()))
    }
}

impl StagingError {
    /// True for what the operator gave us (a bad source file, an unusable staging dir),
    /// false for failures on the way.
    pub fn is_usage(&self) -> bool {
        !matches!(self, StagingError::Io(_) | StagingError::Versions(_))
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StagingError + 'a {
    move |source| durable::io_err(action, path)(source).into()
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
    /// A release tarball whose contents break a rule (see [`ArchiveProblem`]).
    #[error("{file}: {problem}")]
    Archive {
        /// The staged tarball.
        file: String,
        /// Which rule, and the entry that broke it.
        problem: ArchiveProblem,
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
            Refusal::Archive { problem, .. } => problem.rule(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the watcher delivers, and its settings

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
            probe_timeout: store::PROBE_TIMEOUT,
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

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
