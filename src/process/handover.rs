//! What one supervisor process hands to the binary it re-executes in place (SIGHUP,
//! `systemctl reload`): which etcd it runs, how healthy it was, and the descriptors that
//! survive the exec (etcd's stderr pipe, the metrics listener).
//!
//! The record is JSON in `<state-dir>/handover.json`. The new binary reads it twice: first
//! as a subprocess (`run --handover-check FILE`), which proves it can parse its arguments
//! and this record while the old process keeps running; then, after the exec, as the same
//! process (`run --handover FILE`), which adopts etcd. Both check that the etcd named is
//! the one the supervisor started (its parent and its start time), so a recycled pid is
//! never adopted.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;

/// Version of the record's layout; a binary refuses a layout it does not know.
pub const FORMAT: u32 = 1;

/// The record's file name in the state dir.
pub const FILE_NAME: &str = "handover.json";

/// The handover record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The supervisor's pid, which the exec keeps.
    pub supervisor_pid: u32,
    /// The writer's own version (`CARGO_PKG_VERSION`), for the log of the new one.
    pub supervisor_version: String,
    /// The etcd child, when one runs.
    pub etcd: Option<HandedEtcd>,
    /// The metrics listener, when `--metrics-addr` is set.
    pub metrics: Option<HandedListener>,
}

/// The etcd child as the old process knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedEtcd {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// The etcd version it runs.
    pub version: String,
    /// The read end of its stderr pipe, kept open across the exec.
    pub stderr_fd: Option<RawFd>,
    /// It has answered /health true since the supervisor first started it.
    pub ever_healthy: bool,
    /// It was healthy at the last poll.
    pub healthy: bool,
    /// Crashes counted towards the restart backoff.
    pub crashes: u32,
}

/// A listening socket kept open across the exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedListener {
    /// The descriptor.
    pub fd: RawFd,
    /// The address it is bound to (for the log).
    pub addr: String,
}

/// Why a handover record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] durable::IoError),
    /// The file is not a handover record.
    #[error("handover record {}: {source}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a binary with another layout.
    #[error("handover record format {found}, this binary reads format {FORMAT}")]
    Format {
        /// The writer's format.
        found: u32,
    },
    /// It names another supervisor process.
    #[error("handover record of supervisor pid {recorded}, expected {expected}")]
    OtherSupervisor {
        /// The pid in the record.
        recorded: u32,
        /// The supervisor that should have written it.
        expected: u32,
    },
    /// The etcd it names is not (or no longer) the supervisor's child.
    #[error("etcd pid {pid} of the handover record: {why}")]
    NotOurEtcd {
        /// The pid in the record.
        pid: u32,
        /// What did not match.
        why: String,
    },
}

impl Handover {
    /// Where the record lives for a state dir.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Reads and parses a record; a record of another format is refused.
    pub fn load(path: &Path) -> Result<Self, HandoverError> {
        let text = std::fs::read(path).map_err(durable::io_err("reading", path))?;
        let record: Self =
            serde_json::from_slice(&text).map_err(|source| HandoverError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if record.format != FORMAT {
            return Err(HandoverError::Format {
                found: record.format,
            });
        }
        Ok(record)
    }

    /// Writes the record atomically (a reader never sees half of it).
    pub fn save(&self, path: &Path) -> Result<(), HandoverError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| HandoverError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        durable::replace_atomically(path, &bytes)?;
        Ok(())
    }

    /// Checks the record against the process tree: written by `supervisor`, and its etcd
    /// (if any) is `supervisor`'s child started at the recorded time. Zombies count: an
    /// etcd that exited in the exec window is still the supervisor's to reap.
    pub fn validate(&self, supervisor: u32) -> Result<(), HandoverError> {
        if self.supervisor_pid != supervisor {
            return Err(HandoverError::OtherSupervisor {
                recorded: self.supervisor_pid,
                expected: supervisor,
            });
        }
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let not_ours = |why: String| HandoverError::NotOurEtcd { pid: etcd.pid, why };
        let stat = proc_stat(etcd.pid).map_err(|e| not_ours(e.to_string()))?;
        if stat.ppid != supervisor {
            return Err(not_ours(format!(
                "its parent is {}, not {supervisor}",
                stat.ppid
            )));
        }
        if stat.start_time != etcd.start_time {
            return Err(not_ours(format!(
                "started at tick {}, not {} (a recycled pid)",
                stat.start_time, etcd.start_time
            )));
        }
        Ok(())
    }
}

/// The fields of `/proc/<pid>/stat` the handover relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (R, S, Z, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`.
pub fn proc_stat(pid: u32) -> std::io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/stat"),
        )
    })
}

/// Parses a stat line; the command name may hold spaces and parentheses, so the fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... starttime(22), so index 0 is field 3.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Lets `fd` survive an exec (`inherit`) or not (clears or sets FD_CLOEXEC).
pub fn set_inherit(fd: BorrowedFd<'_>, inherit: bool) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller borrows; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let wanted = if inherit {
        flags & !libc::FD_CLOEXEC
    } else {
        flags | libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, wanted) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn record(etcd: Option<HandedEtcd>) -> Handover {
        Handover {
            format: FORMAT,
            supervisor_pid: std::process::id(),
            supervisor_version: "0.1.0".into(),
            etcd,
            metrics: Some(HandedListener {
                fd: 9,
                addr: "127.0.0.1:9379".into(),
            }),
        }
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (etc (d) x) S 17 4242 4242 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 12 0 987654 1 2";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                ppid: 17,
                start_time: 987654
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_record_round_trips_and_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Handover::path(dir.path());
        let r = record(None);
        r.save(&path).unwrap();
        assert_eq!(Handover::load(&path).unwrap(), r);
        let newer = Handover {
            format: FORMAT + 1,
            ..r
        };
        newer.save(&path).unwrap();
        let err = Handover::load(&path).unwrap_err();
        assert!(matches!(err, HandoverError::Format { found } if found == FORMAT + 1));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Handover::load(&path).unwrap_err(),
            HandoverError::Parse { .. }
        ));
    }

    #[test]
    fn validate_wants_our_child_started_when_recorded() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = proc_stat(pid).unwrap().start_time;
        let etcd = |start_time| HandedEtcd {
            pid,
            start_time,
            version: "3.5.16".into(),
            stderr_fd: None,
            ever_healthy: true,
            healthy: true,
            crashes: 0,
        };
        assert!(record(Some(etcd(started))).validate(me).is_ok());
        let recycled = record(Some(etcd(started + 1))).validate(me).unwrap_err();
        assert!(recycled.to_string().contains("recycled"), "{recycled}");
        let other = record(Some(etcd(started))).validate(me + 1).unwrap_err();
        assert!(matches!(other, HandoverError::OtherSupervisor { .. }));
        let mut not_child = record(Some(etcd(started)));
        not_child.etcd.as_mut().unwrap().pid = 1;
        assert!(not_child.validate(me).is_err());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn inherit_toggles_close_on_exec() {
        let file = tempfile::tempfile().unwrap();
        let cloexec = || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_ne!(cloexec(), 0);
        set_inherit(file.as_fd(), true).unwrap();
        assert_eq!(cloexec(), 0);
        set_inherit(file.as_fd(), false).unwrap();
        assert_ne!(cloexec(), 0);
    }
}
