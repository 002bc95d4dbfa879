//! The versions store: pinned etcd binaries under `<state-dir>/versions/<X.Y.Z>/` and the
//! `current` symlink that says which one runs.
//!
//! Binaries are installed by copying into a temp directory beside their final place, fsync,
//! and one rename, so a version directory either exists whole or not at all. Each carries
//! `etcd.sha256`, checked before the binary is started, so a binary changed on disk after
//! it was pinned is never run.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::reaper::Reaper;
use crate::version::Version;

/// How long `etcd --version` may take before the binary is judged broken.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the versions store.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
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
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> VersionsError + 'a {
    move |source| VersionsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
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
        let tmp = self
            .state_dir
            .join(format!(".current.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let target = Path::new("versions").join(version.to_string());
        symlink(&target, &tmp).map_err(io_err("creating symlink", &tmp))?;
        fs::rename(&tmp, &link).map_err(io_err("replacing", &link))?;
        sync_dir(&self.state_dir)
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
            let actual = sha256_file(&binary)?;
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
        copy_synced(source, &tmp_binary, 0o755)?;
        let copied = sha256_file(&tmp_binary)?;
        if copied != expected_sha256 {
            return Err(VersionsError::Tampered {
                path: source.to_path_buf(),
                expected: expected_sha256.to_owned(),
                actual: copied,
            });
        }
        write_synced(
            &tmp.path().join("etcd.sha256"),
            format!("{copied}  etcd\n").as_bytes(),
        )?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &final_dir) {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(io_err("renaming into", &final_dir)(e));
        }
        sync_dir(&versions)?;
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
        let actual = sha256_file(&pinned.binary)?;
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
        Ok(crate::reaper::ChildExit::Code(0)) => {}
        Ok(other) => return Err(failed(other.to_string())),
        Err(_) => return Err(failed("exit status lost".to_owned())),
    }
    Version::from_etcd_version_output(&text).ok_or_else(|| VersionsError::NotEtcd {
        path: binary.to_path_buf(),
        output: text.chars().take(120).collect(),
    })
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, VersionsError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Copies `from` to the new file `to` with `mode`, and fsyncs it.
fn copy_synced(from: &Path, to: &Path, mode: u32) -> Result<(), VersionsError> {
    let mut src = File::open(from).map_err(io_err("opening", from))?;
    let mut dst = File::create(to).map_err(io_err("creating", to))?;
    io::copy(&mut src, &mut dst).map_err(io_err("copying into", to))?;
    dst.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", to))?;
    dst.sync_all().map_err(io_err("syncing", to))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), VersionsError> {
    let mut f = File::create(path).map_err(io_err("creating", path))?;
    f.write_all(bytes).map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("syncing", path))
}

/// fsyncs a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), VersionsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_etcd(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-etcd");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn probe_reads_version_and_refuses_liars_and_hangs() {
        let reaper = Reaper::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = fake_etcd(dir.path(), "echo 'etcd Version: 3.5.16'; echo 'Git SHA: x'");
        assert_eq!(
            probe_version(&reaper, &good, PROBE_TIMEOUT).await.unwrap(),
            Version::new(3, 5, 16)
        );
        let liar = fake_etcd(dir.path(), "echo 'etcdctl version: 3.5.16'");
        assert!(matches!(
            probe_version(&reaper, &liar, PROBE_TIMEOUT).await,
            Err(VersionsError::NotEtcd { .. })
        ));
        let hang = fake_etcd(dir.path(), "exec sleep 30");
        assert!(matches!(
            probe_version(&reaper, &hang, Duration::from_millis(300)).await,
            Err(VersionsError::ProbeTimeout { .. })
        ));
        assert!(matches!(
            probe_version(&reaper, &dir.path().join("nope"), PROBE_TIMEOUT).await,
            Err(VersionsError::Missing(_))
        ));
    }

    #[test]
    fn install_pins_and_current_switches_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let src = fake_etcd(dir.path(), "echo 'etcd Version: 3.4.23'");
        let sum = sha256_file(&src).unwrap();
        let store = VersionStore::new(&dir.path().join("state"));
        assert_eq!(store.current().unwrap(), None);
        let v = Version::new(3, 4, 23);
        let pinned = store.install(&src, &v, &sum).unwrap();
        store.set_current(&v).unwrap();
        assert_eq!(store.current().unwrap(), Some(pinned.clone()));
        store.verify(&pinned).unwrap();
        // Installing the same bytes again is a no-op; other bytes under the same version are not.
        store.install(&src, &v, &sum).unwrap();
        assert!(matches!(
            store.install(&src, &v, "00"),
            Err(VersionsError::Tampered { .. })
        ));
        // A pinned binary changed after install is caught before it runs.
        fs::write(&pinned.binary, "#!/bin/sh\necho evil\n").unwrap();
        assert!(matches!(
            store.verify(&pinned),
            Err(VersionsError::Tampered { .. })
        ));
        // No temp directories are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("state/versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["3.4.23"]);
    }
}
