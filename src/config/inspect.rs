//! Settings of the commands that look at a daemon (`plan`, `status`): a flag given here
//! wins, else the daemon's own from its record in the state dir ([`super::record`]), else
//! the default. Each value says where it came from, so `plan` run from a shell without the
//! unit's environment describes the daemon that runs, and says so. Pure over plain data.

use std::fmt;
use std::path::{Path, PathBuf};

use super::record::{DaemonRecord, Liveness};
use crate::cli::ConnArgs;
use crate::upgrade::rules::pacing::window::Window;

/// Where a setting shown by `plan` came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// A flag (or its `ETCD_SUPERVISOR_*` variable) given to this command.
    Given,
    /// The daemon's record; `running` says whether that daemon still runs.
    Daemon {
        /// The recorded daemon still runs.
        running: bool,
    },
    /// The default.
    Default,
}

impl fmt::Display for From {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            From::Given => f.write_str("given here"),
            From::Daemon { running: true } => f.write_str("the running daemon"),
            From::Daemon { running: false } => {
                f.write_str("the daemon that last ran (not running)")
            }
            From::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub from: From,
}

/// The daemon behind a state dir, as far as its record tells.
#[derive(Debug, Clone)]
pub enum Daemon {
    /// A record whose daemon runs (or ran).
    Recorded {
        /// The record.
        record: Box<DaemonRecord>,
        /// It still runs.
        running: bool,
    },
    /// No record: no daemon has started with this state dir since records are kept.
    None {
        /// The state dir looked in.
        state_dir: PathBuf,
    },
    /// A record that cannot be read.
    Unreadable(String),
}

impl Daemon {
    /// Reads the record in `state_dir` and whether its daemon runs.
    pub fn look(state_dir: &Path) -> Self {
        match DaemonRecord::load(state_dir) {
            Ok(Some(record)) => {
                let running = record.liveness() == Liveness::Running;
                Daemon::Recorded {
                    record: Box::new(record),
                    running,
                }
            }
            Ok(None) => Daemon::None {
                state_dir: state_dir.to_path_buf(),
            },
            Err(e) => Daemon::Unreadable(e),
        }
    }

    /// The record, if there is one.
    pub fn record(&self) -> Option<(&DaemonRecord, bool)> {
        match self {
            Daemon::Recorded { record, running } => Some((record, *running)),
            _ => None,
        }
    }

    fn from(&self) -> From {
        From::Daemon {
            running: self.record().is_some_and(|(_, r)| r),
        }
    }

    /// A value: `given` when present, else the record's (`from_record`), else `default`.
    pub fn pick<T>(
        &self,
        given: Option<T>,
        from_record: impl FnOnce(&DaemonRecord) -> Option<T>,
        default: T,
    ) -> Sourced<T> {
        if let Some(value) = given {
            return Sourced {
                value,
                from: From::Given,
            };
        }
        match self.record().and_then(|(r, _)| from_record(r)) {
            Some(value) => Sourced {
                value,
                from: self.from(),
            },
            None => Sourced {
                value: default,
                from: From::Default,
            },
        }
    }

    /// Connection settings: each one given here wins, else the daemon's.
    pub fn conn(&self, given: &ConnArgs) -> (ConnArgs, From) {
        let Some((r, _)) = self.record() else {
            return (given.clone(), From::Given);
        };
        let mut conn = given.clone();
        let from = if conn.endpoints.is_empty() {
            conn.endpoints = r.endpoints.clone();
            self.from()
        } else {
            From::Given
        };
        conn.cacert = conn.cacert.or_else(|| r.cacert.clone());
        if conn.cert.is_none() && conn.key.is_none() {
            conn.cert = r.cert.clone();
            conn.key = r.key.clone();
        }
        conn.user = conn.user.or_else(|| r.user.clone());
        (conn, from)
    }

    /// The recorded windows, parsed (a spec the daemon accepted parses here too).
    pub fn windows(&self, given: &[Window]) -> Sourced<Vec<Window>> {
        self.pick(
            (!given.is_empty()).then(|| given.to_vec()),
            |r| {
                (!r.windows.is_empty())
                    .then(|| r.windows.iter().filter_map(|w| w.parse().ok()).collect())
            },
            Vec::new(),
        )
    }

    /// One line saying what the record says about the daemon.
    pub fn describe(&self) -> String {
        match self {
            Daemon::Recorded {
                record,
                running: true,
            } => format!(
                "daemon: running (pid {}, started {}); settings not given here are its own",
                record.pid, record.started
            ),
            Daemon::Recorded {
                record,
                running: false,
            } => format!(
                "daemon: NOT RUNNING for this state dir (the last one, pid {}, started {}, has exited); settings not given here are the ones it ran with",
                record.pid, record.started
            ),
            Daemon::None { state_dir } => format!(
                "daemon: no daemon has recorded its settings in {} (`run` does when it starts): flags and defaults only",
                state_dir.display()
            ),
            Daemon::Unreadable(why) => format!("daemon: {why}; flags and defaults only"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> DaemonRecord {
        DaemonRecord {
            schema: 1,
            pid: 1,
            start_time: 1,
            started: "2026-12-07T00:00:00Z".into(),
            member: "m1".into(),
            data_dir: "/d".into(),
            wal_dir: None,
            config_file: Some("/etc/etcd.yml".into()),
            client_urls: vec!["https://10.0.0.1:2379".into()],
            sources: Default::default(),
            endpoints: vec!["https://10.0.0.1:2379".into()],
            cacert: Some("/ca.pem".into()),
            cert: None,
            key: None,
            user: Some("root".into()),
            key_prefix: "/p/".into(),
            staging_dir: "/s".into(),
            windows: vec!["0 2 * * SAT 4h".into()],
            soak: "0s".into(),
            canary_soak: "0s".into(),
            rehearsal: "always".into(),
            allow_known_bad: vec![],
            allow_auth_upgrade_from_34: false,
        }
    }

    fn conn(endpoints: &[&str]) -> ConnArgs {
        ConnArgs {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            cacert: None,
            cert: None,
            key: None,
            user: None,
            request_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_flag_wins_then_the_daemon_then_the_default() {
        let d = Daemon::Recorded {
            record: Box::new(record()),
            running: true,
        };
        let name = d.pick(None, |r| Some(r.member.clone()), "default".into());
        assert_eq!(name.value, "m1");
        assert_eq!(name.from, From::Daemon { running: true });
        let given = d.pick(
            Some("m9".to_owned()),
            |r| Some(r.member.clone()),
            "default".into(),
        );
        assert_eq!((given.value.as_str(), given.from), ("m9", From::Given));
        let (c, from) = d.conn(&conn(&[]));
        assert_eq!(c.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(c.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.user.as_deref(), Some("root"));
        assert_eq!(from, From::Daemon { running: true });
        let (c, from) = d.conn(&conn(&["http://x:1"]));
        assert_eq!(
            (c.endpoints, from),
            (vec!["http://x:1".to_owned()], From::Given)
        );
        let w = d.windows(&[]);
        assert_eq!(w.value.len(), 1);
        assert_eq!(w.value[0].spec(), "0 2 * * SAT 4h");
    }

    #[test]
    fn no_record_means_defaults_and_says_so() {
        let d = Daemon::None {
            state_dir: "/var/lib/x".into(),
        };
        let name = d.pick(None, |r| Some(r.member.clone()), "default".into());
        assert_eq!((name.value.as_str(), name.from), ("default", From::Default));
        assert!(d.describe().contains("/var/lib/x"));
        let gone = Daemon::Recorded {
            record: Box::new(record()),
            running: false,
        };
        assert!(
            gone.describe().contains("NOT RUNNING"),
            "{}",
            gone.describe()
        );
        assert_eq!(
            gone.pick(None, |r| Some(r.member.clone()), String::new())
                .from,
            From::Daemon { running: false }
        );
    }
}
