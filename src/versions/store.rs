//! The versions store: pinned etcd binaries under `<state-dir>/versions/<X.Y.Z>/` and the
//! `current` symlink that says which one runs.
//!
//! Binaries are installed by copying into a temp directory beside their final place, fsync,
//! and one rename, so a version directory either exists whole or not at all. Each carries
//! `etcd.sha256`, checked before the binary is started, so a binary changed on disk after
//! it was pinned is never run.
//!
//! Two ways in: [`VersionStore::install`] for a binary whose version is already known (the
//! operator's `--etcd-binary`, probed in place), and [`VersionStore::begin_install`] for a
//! staged drop, whose version is only learnt by probing the private copy: the files (etcd,
//! and etcdctl/etcdutl when they came with it) are copied into a temp dir under `versions/`,
//! hashed again there, probed there, and [`PendingInstall::commit`] renames the dir to
//! `versions/<X.Y.Z>`. Companions get their own `NAME.sha256` beside them.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::digest::sha256_of;
use crate::durable::{self, IoError};
use crate::process::reaper::Reaper;
use crate::versions::Version;

/// How long `etcd --version` may take before the binary is judged broken.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the versions store.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The binary does not exist.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// The path is not a regular executable file.
    #[error("{0} is not an executable file")]
    NotExecutable(PathBuf),
    /// `--version` did not print an etcd version.
    #[error("{path} is not an etcd server binary: `--version` printed {output:?}")]
    NotEtcd {
        /// The probed binary.
        path: PathBuf,
        /// The start of what it printed.
        output: String,
    },
    /// `--version` did not finish in time.
    #[error("{path} did not answer `--version` within {timeout:?}")]
    ProbeTimeout {
        /// The probed binary.
        path: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The probe could not be started or exited non-zero.
    #[error("{path} --version failed: {reason}")]
    ProbeFailed {
        /// The probed binary.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A pinned binary no longer matches the checksum recorded when it was installed.
    #[error("pinned binary {path} changed on disk (sha256 {actual}, recorded {expected}); reinstall it through staging")]
    Tampered {
        /// The binary.
        path: PathBuf,
        /// Recorded checksum.
        expected: String,
        /// Checksum now.
        actual: String,
    },
    /// `current` is missing or points somewhere unexpected.
    #[error("{0}")]
    BadCurrent(String),
    /// The version is already pinned, and one of its files has other bytes than the new one.
    #[error("{version} is already pinned with different contents ({file}: pinned sha256 {pinned}, new {new})")]
    PinnedDifferent {
        /// The version.
        version: Version,
        /// Which file differs (`etcd`, `etcdctl`, ...).
        file: String,
        /// sha256 of the pinned file.
        pinned: String,
        /// sha256 of the file being installed.
        new: String,
    },
}

/// `durable::io_err`, already turned into this module's error.
fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> VersionsError + 'a {
    move |source| durable::io_err(action, path)(source).into()
}

/// An installed, pinned etcd version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Its version.
    pub version: Version,
    /// `versions/<X.Y.Z>/etcd`.
    pub binary: PathBuf,
}

/// `<state-dir>/versions` and `<state-dir>/current`.
#[derive(Debug, Clone)]
pub struct VersionStore {
    state_dir: PathBuf,
}

impl VersionStore {
    /// The store under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
        }
    }

    fn versions_dir(&self) -> PathBuf {
        self.state_dir.join("versions")
    }

    fn current_link(&self) -> PathBuf {
        self.state_dir.join("current")
    }

    /// The directory of `version`.
    pub fn dir_of(&self, version: &Version) -> PathBuf {
        self.versions_dir().join(version.to_string())
    }

    /// The version `current` points at, if any.
    pub fn current(&self) -> Result<Option<Pinned>, VersionsError> {
        let link = self.current_link();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &link)(e)),
        };
        let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            VersionsError::BadCurrent(format!("{} points at {}", link.display(), target.display()))
        })?;
        let version: Version = name.parse().map_err(|_| {
            VersionsError::BadCurrent(format!(
                "{} points at {}, which is not a version directory",
                link.display(),
                target.display()
            ))
        })?;
        let binary = self.dir_of(&version).join("etcd");
        if !binary.is_file() {
            return Err(VersionsError::BadCurrent(format!(
                "{} points at {}, which has no etcd binary",
                link.display(),
                target.display()
            )));
        }
        Ok(Some(Pinned { version, binary }))
    }

    /// Points `current` at `version` atomically (symlink to a temp name, then rename).
    pub fn set_current(&self, version: &Version) -> Result<(), VersionsError> {
        let link = self.current_link();
        let target = Path::new("versions").join(version.to_string());
        // Already there: nothing to write, so putting `current` back works on a full disk.
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(durable::sync_dir(&self.state_dir)?);
        }
        let tmp = self
            .state_dir
            .join(format!(".current.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(io_err("creating symlink", &tmp))?;
        fs::rename(&tmp, &link).map_err(io_err("replacing", &link))?;
        Ok(durable::sync_dir(&self.state_dir)?)
    }

    /// Copies `source` into `versions/<version>/etcd` (temp dir, fsync, rename) and checks the
    /// copy's hash against `expected_sha256`. An existing directory for the version is kept
    /// when its binary has the same hash.
    pub fn install(
        &self,
        source: &Path,
        version: &Version,
        expected_sha256: &str,
    ) -> Result<Pinned, VersionsError> {
        let versions = self.versions_dir();
        fs::create_dir_all(&versions).map_err(io_err("creating", &versions))?;
        let final_dir = self.dir_of(version);
        let binary = final_dir.join("etcd");
        if final_dir.exists() {
            let actual = sha256_of(&binary)?;
            if actual == expected_sha256 {
                return Ok(Pinned {
                    version: version.clone(),
                    binary,
                });
            }
            return Err(VersionsError::Tampered {
                path: binary,
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".install-")
            .tempdir_in(&versions)
            .map_err(io_err("creating a temp dir in", &versions))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting permissions of", tmp.path()))?;
        let tmp_binary = tmp.path().join("etcd");
        durable::copy_synced(source, &tmp_binary, 0o755)?;
        let copied = sha256_of(&tmp_binary)?;
        if copied != expected_sha256 {
            return Err(VersionsError::Tampered {
                path: source.to_path_buf(),
                expected: expected_sha256.to_owned(),
                actual: copied,
            });
        }
        durable::write_synced(
            &tmp.path().join("etcd.sha256"),
            format!("{copied}  etcd\n").as_bytes(),
        )?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &final_dir) {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(io_err("renaming into", &final_dir)(e));
        }
        durable::sync_dir(&versions)?;
        Ok(Pinned {
            version: version.clone(),
            binary,
        })
    }

    /// Checks a pinned binary against the checksum recorded at install time.
    pub fn verify(&self, pinned: &Pinned) -> Result<(), VersionsError> {
        let sums = self.dir_of(&pinned.version).join("etcd.sha256");
        let recorded = fs::read_to_string(&sums).map_err(io_err("reading", &sums))?;
        let expected = recorded.split_whitespace().next().unwrap_or_default();
        let actual = sha256_of(&pinned.binary)?;
        if actual != expected {
            return Err(VersionsError::Tampered {
                path: pinned.binary.clone(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(())
    }
}

impl VersionStore {
    /// A private (0700) scratch dir under `versions/`, on the same filesystem as the
    /// pinned versions (a staged tarball is unpacked there); removed when dropped.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, VersionsError> {
        let versions = self.versions_dir();
        fs::create_dir_all(&versions).map_err(io_err("creating", &versions))?;
        let tmp = tempfile::Builder::new()
            .prefix(".extract-")
            .tempdir_in(&versions)
            .map_err(io_err("creating a temp dir in", &versions))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting permissions of", tmp.path()))?;
        Ok(tmp)
    }

    /// Starts an install whose version is not known yet: a private (0700) temp dir under
    /// `versions/`, removed again unless [`PendingInstall::commit`] renames it into place.
    pub fn begin_install(&self) -> Result<PendingInstall, VersionsError> {
        let versions = self.versions_dir();
        fs::create_dir_all(&versions).map_err(io_err("creating", &versions))?;
        let tmp = tempfile::Builder::new()
            .prefix(".install-")
            .tempdir_in(&versions)
            .map_err(io_err("creating a temp dir in", &versions))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting permissions of", tmp.path()))?;
        Ok(PendingInstall {
            store: self.clone(),
            tmp,
            files: Vec::new(),
        })
    }
}

/// An install in progress: files copied into a private temp dir under `versions/`, each
/// hashed again after the copy. Dropped without [`PendingInstall::commit`], the temp dir and
/// everything in it are removed.
#[derive(Debug)]
pub struct PendingInstall {
    store: VersionStore,
    tmp: tempfile::TempDir,
    /// (file name, sha256) of every file added, in order.
    files: Vec<(String, String)>,
}

/// What [`PendingInstall::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The pinned version.
    pub pinned: Pinned,
    /// True when the version was already pinned with identical bytes (nothing replaced).
    pub already_pinned: bool,
    /// sha256 of the etcd binary.
    pub sha256: String,
    /// Companion files added to an already pinned version (it lacked them).
    pub added: Vec<String>,
}

impl PendingInstall {
    /// The private temp dir.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The private copy of the etcd binary (`<temp dir>/etcd`), the one to probe.
    pub fn binary(&self) -> PathBuf {
        self.tmp.path().join("etcd")
    }

    /// Copies everything `source` yields into `<temp dir>/<name>` (mode 0755, fsynced),
    /// hashes the copy, and checks it against `expected_sha256`: a mismatch (the source
    /// changed while it was read) is [`VersionsError::Tampered`] naming `source_path`.
    /// Records `<name>.sha256` beside it.
    pub fn add(
        &mut self,
        name: &str,
        source: &mut impl Read,
        source_path: &Path,
        expected_sha256: &str,
    ) -> Result<PathBuf, VersionsError> {
        let dest = self.tmp.path().join(name);
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io_err("adding", &dest)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain file name",
            )));
        }
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err("creating", &dest))?;
        io::copy(source, &mut dst).map_err(io_err("copying into", &dest))?;
        dst.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting permissions of", &dest))?;
        dst.sync_all().map_err(io_err("syncing", &dest))?;
        drop(dst);
        let copied = sha256_of(&dest)?;
        if copied != expected_sha256 {
            return Err(VersionsError::Tampered {
                path: source_path.to_path_buf(),
                expected: expected_sha256.to_owned(),
                actual: copied,
            });
        }
        durable::write_synced(
            &self.tmp.path().join(format!("{name}.sha256")),
            format!("{copied}  {name}\n").as_bytes(),
        )?;
        self.files.push((name.to_owned(), copied));
        Ok(dest)
    }

    /// Takes `name` (and its checksum file) out of the install again; it is not pinned.
    pub fn remove(&mut self, name: &str) -> Result<(), VersionsError> {
        for file in [name.to_owned(), format!("{name}.sha256")] {
            let path = self.tmp.path().join(&file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
        self.files.retain(|(n, _)| n != name);
        Ok(())
    }

    /// Moves the files into `versions/<version>` with one rename of the temp dir.
    ///
    /// When the version is already pinned: identical files make this a no-op
    /// (`already_pinned`), companions the pinned version lacks are added (temp file in the
    /// same filesystem, rename), and any file with other bytes is
    /// [`VersionsError::PinnedDifferent`]; nothing is changed then.
    pub fn commit(self, version: &Version) -> Result<Installed, VersionsError> {
        let versions = self.store.versions_dir();
        let final_dir = self.store.dir_of(version);
        let pinned = Pinned {
            version: version.clone(),
            binary: final_dir.join("etcd"),
        };
        let Some(sha256) = self
            .files
            .iter()
            .find(|(name, _)| name == "etcd")
            .map(|(_, sum)| sum.clone())
        else {
            return Err(VersionsError::Missing(self.binary()));
        };
        durable::sync_dir(self.tmp.path())?;
        if !final_dir.exists() {
            fs::set_permissions(self.tmp.path(), fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting permissions of", self.tmp.path()))?;
            match fs::rename(self.tmp.path(), &final_dir) {
                Ok(()) => {
                    // The temp dir is gone (renamed): nothing left for TempDir to remove.
                    let _ = self.tmp.keep();
                    durable::sync_dir(&versions)?;
                    return Ok(Installed {
                        pinned,
                        already_pinned: false,
                        sha256,
                        added: Vec::new(),
                    });
                }
                // Someone pinned it between the check and the rename: compare below.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {}
                Err(e) => return Err(io_err("renaming into", &final_dir)(e)),
            }
        }
        let mut missing = Vec::new();
        for (name, new) in &self.files {
            let existing = final_dir.join(name);
            if !existing.exists() {
                missing.push(name.clone());
                continue;
            }
            let actual = sha256_of(&existing)?;
            let recorded_path = final_dir.join(format!("{name}.sha256"));
            if let Ok(recorded) = fs::read_to_string(&recorded_path) {
                let recorded = recorded.split_whitespace().next().unwrap_or_default();
                if recorded != actual {
                    return Err(VersionsError::Tampered {
                        path: existing,
                        expected: recorded.to_owned(),
                        actual,
                    });
                }
            }
            if &actual != new {
                return Err(VersionsError::PinnedDifferent {
                    version: version.clone(),
                    file: name.clone(),
                    pinned: actual,
                    new: new.clone(),
                });
            }
        }
        for name in &missing {
            // The checksum first: a binary never sits in a version dir without its record.
            for file in [format!("{name}.sha256"), name.clone()] {
                let from = self.tmp.path().join(&file);
                let to = final_dir.join(&file);
                fs::rename(&from, &to).map_err(io_err("renaming into", &to))?;
            }
        }
        if !missing.is_empty() {
            durable::sync_dir(&final_dir)?;
        }
        Ok(Installed {
            pinned,
            already_pinned: true,
            sha256,
            added: missing,
        })
    }
}

/// Checks that `path` is an existing regular file with an execute bit.
pub fn check_executable(path: &Path) -> Result<(), VersionsError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VersionsError::Missing(path.to_path_buf()))
        }
        Err(e) => return Err(io_err("reading", path)(e)),
    };
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(VersionsError::NotExecutable(path.to_path_buf()));
    }
    Ok(())
}

/// Runs `binary --version` under `timeout` and returns the etcd version it reports.
pub async fn probe_version(
    reaper: &Reaper,
    binary: &Path,
    timeout: Duration,
) -> Result<Version, VersionsError> {
    check_executable(binary)?;
    let failed = |reason: String| VersionsError::ProbeFailed {
        path: binary.to_path_buf(),
        reason,
    };
    let mut cmd = Command::new(binary);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut spawned = reaper.spawn(&mut cmd).map_err(|e| failed(e.to_string()))?;
    let stdout = spawned
        .child
        .stdout
        .take()
        .ok_or_else(|| failed("no stdout pipe".to_owned()))?;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout.into())
        .map_err(|e| failed(e.to_string()))?;
    let run = async {
        let mut output = Vec::new();
        // A hostile binary could print forever; etcd prints four short lines.
        let mut limited = (&mut pipe).take(64 * 1024);
        let _ = limited.read_to_end(&mut output).await;
        let exit = (&mut spawned.exit).await;
        (output, exit)
    };
    let (output, exit) = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done,
        Err(_) => {
            let _ = nix::sys::signal::kill(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            return Err(VersionsError::ProbeTimeout {
                path: binary.to_path_buf(),
                timeout,
            });
        }
    };
    let text = String::from_utf8_lossy(&output);
    match exit {
        Ok(crate::process::reaper::ChildExit::Code(0)) => {}
        Ok(other) => return Err(failed(other.to_string())),
        Err(_) => return Err(failed("exit status lost".to_owned())),
    }
    Version::from_etcd_version_output(&text).ok_or_else(|| VersionsError::NotEtcd {
        path: binary.to_path_buf(),
        output: text.chars().take(120).collect(),
    })
}

#[cfg(test)]
mod tests;
