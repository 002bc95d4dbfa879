//! Resolved settings: supervisor options merged with what etcd itself will be told.
//!
//! The supervisor never asks for the member name, data dir or client URLs twice: it reads
//! them from what etcd reads, with etcd's precedence ([`member`]: a config file replaces
//! every flag and variable; else a flag beats the environment, which beats etcd's
//! default). Every consumer (data-dir lock, stop probe, cold copy, rehearsal, vetting,
//! `plan`, `status`) uses that one [`Member`]. [`record`] keeps the daemon's effective
//! settings in the state dir for `plan` and `status`.

pub mod inspect;
pub mod member;
pub mod record;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::BackupMode;
use crate::cli::{ConnArgs, RunArgs};
use crate::etcd::client::Credentials;
use crate::etcd::ClientConfig;
use crate::rehearsal::RehearsalMode;
use crate::upgrade::rules::pacing::soak::Pacing;
use crate::upgrade::rules::path::Policy;
pub use member::{Member, MemberConfigError, Source, Tls};

/// The state dir's default (`--state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/etcd-supervisor";

/// The key prefix's default (`--key-prefix`).
pub const DEFAULT_KEY_PREFIX: &str = "/etcd-supervisor/";

/// Where commands other than `run` look for etcd without `--endpoints` (etcdctl's default).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Test hook variable, see [`RunSettings::failpoint_pause`]; only in builds with the
/// `failpoints` feature (the tests'), never in a shipped binary.
#[cfg(feature = "failpoints")]
pub const FAILPOINT_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_PAUSE";

/// The environment variable holding the password of `--user` (never a flag: `ps` shows flags).
pub const PASSWORD_ENV: &str = "ETCD_SUPERVISOR_PASSWORD";

/// Client settings from `--endpoints`, TLS and auth options; `fallback` endpoints are used
/// when none were given (the local member's client URLs, or etcdctl's default).
pub fn client_config(
    conn: &ConnArgs,
    fallback: &[String],
    env: &HashMap<String, String>,
) -> ClientConfig {
    let endpoints = if conn.endpoints.is_empty() {
        fallback.to_vec()
    } else {
        conn.endpoints.clone()
    };
    ClientConfig {
        request_timeout: conn.request_timeout,
        cacert: conn.cacert.clone(),
        cert: conn.cert.clone(),
        key: conn.key.clone(),
        credentials: conn.user.as_ref().map(|user| Credentials {
            user: user.clone(),
            password: env.get(PASSWORD_ENV).cloned().unwrap_or_default(),
        }),
        ..ClientConfig::new(endpoints)
    }
}

/// Errors in the configuration given to the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--allow-known-bad` names something that is not a version.
    #[error("--allow-known-bad: {0}")]
    BadAllow(#[from] crate::versions::version::ParseVersionError),
    /// A relative state dir would move with the working directory of whoever starts us.
    #[error("--state-dir must be an absolute path, got {0}")]
    RelativeStateDir(PathBuf),
    /// etcd's config file cannot be read.
    #[error("etcd's config file {path} (from {source_of}) cannot be read: {error}; etcd would not start: create it, or point {source_of} at the right file")]
    ConfigFileUnreadable {
        /// The file.
        path: PathBuf,
        /// Where its name came from.
        source_of: Source,
        /// The I/O error.
        error: std::io::Error,
    },
    /// etcd's config file is not usable.
    #[error(transparent)]
    MemberConfig(#[from] MemberConfigError),
    /// The configuration names another data dir than the state dir was used with.
    #[error("this configuration gives data dir {now} (from {from}), but {state_dir} was used by member {recorded_member} with data dir {recorded}, which still holds its data: fix data-dir (or --state-dir) so that it names this member's data again; if the member's data really moved, move {state_dir}/daemon.json aside first")]
    DataDirDisagrees {
        /// The state dir.
        state_dir: PathBuf,
        /// The data dir recorded there.
        recorded: PathBuf,
        /// The member recorded there.
        recorded_member: String,
        /// The data dir of this configuration.
        now: PathBuf,
        /// Where that one came from.
        from: String,
    },
    /// The state dir's daemon record cannot be read.
    #[error("{0}; move the file aside (the daemon writes it again when it starts)")]
    BadRecord(String),
    /// A cold data-dir copy would leave out a WAL kept outside the data dir.
    #[error("--backup {mode} copies the data dir {data_dir} while etcd is stopped, but this member keeps its WAL outside it, in {wal_dir} (wal-dir): such a copy could not be restored. Use --backup snapshot (the snapshot holds everything a restore needs), or keep the WAL inside the data dir")]
    ColdCopyWithoutWal {
        /// The backup mode asked for.
        mode: BackupMode,
        /// The member's data dir.
        data_dir: PathBuf,
        /// Its WAL dir, outside the data dir.
        wal_dir: PathBuf,
    },
}

/// The WAL dir a cold copy of `data_dir` would leave out: `wal_dir` when `mode` copies the
/// data dir and the WAL is kept outside it.
pub fn wal_outside_cold_copy<'a>(
    mode: BackupMode,
    data_dir: &Path,
    wal_dir: Option<&'a Path>,
) -> Option<&'a Path> {
    wal_dir.filter(|w| crate::backup::meta::has_data_dir(mode) && !w.starts_with(data_dir))
}

/// Settings of `etcd-supervisor run`, validated.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Root of versions/, backups/ and state.json.
    pub state_dir: PathBuf,
    /// Binary to install when no version is pinned yet.
    pub etcd_binary: Option<PathBuf>,
    /// Grace period between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// Restart backoff: first delay, cap, and healthy time that resets it.
    pub backoff: Backoff,
    /// How often /health is polled once etcd is up.
    pub health_interval: Duration,
    /// Directory watched for staged binaries.
    pub staging_dir: PathBuf,
    /// Staging poll interval for filesystems without inotify.
    pub poll_interval: Option<Duration>,
    /// How to reach the cluster (endpoints default to the local member's client URLs).
    pub cluster: ClientConfig,
    /// Prefix of the supervisor's keys in etcd.
    pub key_prefix: String,
    /// TTL of the upgrade turn's lease.
    pub lock_ttl: Duration,
    /// `--leader-last-wait` (zero: queue order).
    pub leader_last_wait: Duration,
    /// Bound on a started etcd becoming healthy and caught up.
    pub ready_timeout: Duration,
    /// What a turn backs up.
    pub backup: BackupMode,
    /// Backups kept.
    pub backup_keep: u32,
    /// `--backup-max-age` (zero: never reuse the rehearsal's backup).
    pub backup_max_age: Duration,
    /// What the operator accepts beyond etcd's own upgrade rules.
    pub policy: Policy,
    /// `--rehearsal`.
    pub rehearsal: RehearsalMode,
    /// `--rehearsal-max-db`, in bytes.
    pub rehearsal_max_db: u64,
    /// Where to serve /metrics and /healthz.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Test hook: pause the upgrade driver in this state for this long
    /// (`ETCD_SUPERVISOR_FAILPOINT_PAUSE=<state>:<duration>`), so crash tests can kill the
    /// supervisor at a chosen point. Unset in production.
    pub failpoint_pause: Option<(String, Duration)>,
    /// `--window`, `--soak`, `--canary-soak`.
    pub pacing: Pacing,
    /// Arguments etcd is started with (the user's, plus `--data-dir` when we chose it).
    pub etcd_args: Vec<String>,
    /// The `ETCD_*` variables etcd inherits (the supervisor's own excluded), sorted.
    pub etcd_env: Vec<(String, String)>,
    /// The member as etcd will see it.
    pub member: Member,
}

/// Restart backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first crash.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Healthy time after which the delay starts again from `initial`.
    pub reset_after: Duration,
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based): initial * 2^(attempt-1), capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl RunSettings {
    /// Resolves `run` options against etcd's flags and the given environment.
    pub fn resolve(args: &RunArgs, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        if !args.state.state_dir.is_absolute() {
            return Err(ConfigError::RelativeStateDir(args.state.state_dir.clone()));
        }
        let flags = EtcdFlags::parse(&args.etcd_args);
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let file = member::config_file(&flags.values, env, &cwd);
        let text = match &file {
            None => None,
            Some((path, source_of)) => Some(std::fs::read_to_string(path).map_err(|error| {
                ConfigError::ConfigFileUnreadable {
                    path: path.clone(),
                    source_of: source_of.clone(),
                    error,
                }
            })?),
        };
        let member = member::read(
            &flags.values,
            env,
            file.as_ref()
                .zip(text.as_deref())
                .map(|((path, _), text)| (path.as_path(), text)),
            &cwd,
            &args.state.state_dir,
        )?;
        if let Some(previous) =
            record::DaemonRecord::load(&args.state.state_dir).map_err(ConfigError::BadRecord)?
        {
            record::check_agrees(&previous, &member, &args.state.state_dir)?;
        }
        if let Some(wal_dir) =
            wal_outside_cold_copy(args.backup, &member.data_dir, member.wal_dir.as_deref())
        {
            return Err(ConfigError::ColdCopyWithoutWal {
                mode: args.backup,
                data_dir: member.data_dir.clone(),
                wal_dir: wal_dir.to_path_buf(),
            });
        }
        let mut etcd_args = args.etcd_args.clone();
        if member.data_dir_added {
            etcd_args.push(format!("--data-dir={}", member.data_dir.display()));
        }
        let client_urls = member.client_urls.clone();
        let policy = args.policy.resolve()?;
        let mut cluster = client_config(&args.conn, &client_urls, env);
        // TLS towards etcd defaults to etcd's own client TLS: its CA, and (with client
        // certificate auth) its own certificate, which operators issue for both uses.
        let tls = &member.client_tls;
        if cluster.cacert.is_none() {
            cluster.cacert = tls.trusted_ca_file.clone();
        }
        if cluster.cert.is_none() && tls.client_cert_auth {
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                cluster.cert = Some(cert.clone());
                cluster.key = Some(key.clone());
            }
        }
        #[cfg(feature = "failpoints")]
        let failpoint_pause = env.get(FAILPOINT_ENV).and_then(|v| {
            let (state, pause) = v.split_once(':')?;
            Some((state.to_owned(), humantime::parse_duration(pause).ok()?))
        });
        #[cfg(not(feature = "failpoints"))]
        let failpoint_pause = None;
        Ok(Self {
            failpoint_pause,
            pacing: Pacing {
                windows: args.window.windows.clone(),
                soak: args.soak,
                canary_soak: args.canary_soak,
            },
            cluster,
            key_prefix: args.prefix.key_prefix.clone(),
            lock_ttl: args.lock_ttl,
            leader_last_wait: args.leader_last_wait,
            ready_timeout: args.ready_timeout,
            backup: args.backup,
            backup_keep: args.backup_keep,
            backup_max_age: args.backup_max_age,
            policy,
            rehearsal: args.rehearsal,
            rehearsal_max_db: args.rehearsal_max_db,
            metrics_addr: args.metrics_addr,
            state_dir: args.state.state_dir.clone(),
            etcd_binary: args.etcd_binary.clone(),
            stop_timeout: args.stop_timeout,
            backoff: Backoff {
                initial: args.restart_delay,
                max: args.restart_delay_max.max(args.restart_delay),
                reset_after: args.healthy_reset,
            },
            health_interval: args.health_interval,
            staging_dir: args.staging.resolve(&args.state.state_dir),
            poll_interval: args.poll_interval,
            etcd_args,
            etcd_env: {
                let mut vars: Vec<(String, String)> = env
                    .iter()
                    .filter(|(k, _)| k.starts_with("ETCD_") && !k.starts_with("ETCD_SUPERVISOR_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                vars.sort();
                vars
            },
            member,
        })
    }

    /// Where pinned etcd versions live.
    pub fn versions_dir(&self) -> PathBuf {
        self.state_dir.join("versions")
    }
}

/// etcd's flags as given on the command line, in Go `flag` syntax.
#[derive(Debug, Default)]
struct EtcdFlags {
    values: HashMap<String, String>,
}

/// etcd flags that are booleans and so never consume the next argument.
const BOOL_FLAGS: &[&str] = &[
    "version",
    "h",
    "help",
    "enable-v2",
    "enable-pprof",
    "strict-reconfig-check",
    "client-cert-auth",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
    "force-new-cluster",
    "debug",
    "enable-grpc-gateway",
    "experimental-initial-corrupt-check",
    "experimental-enable-lease-checkpoint",
    "experimental-memory-mlock",
    "socket-reuse-port",
    "socket-reuse-address",
    "pre-vote",
];

impl EtcdFlags {
    fn parse(args: &[String]) -> Self {
        let mut values = HashMap::new();
        let mut iter = args.iter().peekable();
        while let Some(arg) = iter.next() {
            // Go's flag package stops at the first non-flag argument or a bare "--".
            if arg == "--" || !arg.starts_with('-') || arg == "-" {
                break;
            }
            let body = arg.trim_start_matches('-');
            if let Some((key, value)) = body.split_once('=') {
                values.insert(key.to_owned(), value.to_owned());
            } else if BOOL_FLAGS.contains(&body)
                || iter.peek().is_none_or(|next| next.starts_with('-'))
            {
                // A flag we do not know, with nothing after it, is etcd's to judge: it
                // rejects bad flags with its own message, and we exit with its code.
                values.insert(body.to_owned(), "true".to_owned());
            } else if let Some(value) = iter.next() {
                values.insert(body.to_owned(), value.clone());
            }
        }
        Self { values }
    }
}

#[cfg(test)]
mod wal_tests {
    use super::*;

    #[test]
    fn a_cold_copy_refuses_a_wal_outside_the_data_dir() {
        let data = Path::new("/var/lib/etcd/m1");
        let outside = Path::new("/srv/wal");
        let inside = Path::new("/var/lib/etcd/m1/wal2");
        for mode in [BackupMode::DataDir, BackupMode::Both] {
            assert_eq!(
                wal_outside_cold_copy(mode, data, Some(outside)),
                Some(outside)
            );
            assert_eq!(wal_outside_cold_copy(mode, data, Some(inside)), None);
            assert_eq!(wal_outside_cold_copy(mode, data, None), None);
        }
        // A snapshot holds everything: where the WAL lives does not matter.
        assert_eq!(
            wal_outside_cold_copy(BackupMode::Snapshot, data, Some(outside)),
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn settings(argv: &[&str], env: &[(&str, &str)]) -> RunSettings {
        let mut full = vec!["etcd-supervisor", "run", "--state-dir", "/var/lib/es"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RunSettings::resolve(&run, &env).unwrap()
    }

    #[test]
    fn v2_and_the_config_file_come_from_flags_before_the_environment() {
        let m = |argv: &[&str], env: &[(&str, &str)]| settings(argv, env).member;
        assert!(m(&["--", "--enable-v2"], &[]).v2_enabled);
        assert!(m(&["--", "--enable-v2=true"], &[]).v2_enabled);
        assert!(!m(&["--", "--enable-v2=false"], &[("ETCD_ENABLE_V2", "true")]).v2_enabled);
        assert!(m(&[], &[("ETCD_ENABLE_V2", "true")]).v2_enabled);
        assert!(!m(&["--", "--name", "m1"], &[]).v2_enabled);
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yml"), dir.path().join("b.yml"));
        std::fs::write(&a, "name: from-a\n").unwrap();
        std::fs::write(&b, "name: from-b\n").unwrap();
        let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
        let both = settings(
            &["--", "--config-file", a_s, "--name", "ignored"],
            &[("ETCD_CONFIG_FILE", b_s), ("ETCD_NAME", "ignored")],
        );
        assert_eq!(both.member.config_file, Some(a.clone()));
        assert_eq!(both.member.name, "from-a");
        // etcd ignores flags beside a config file; the supervisor adds none.
        assert!(!both.etcd_args.iter().any(|a| a.starts_with("--data-dir")));
        assert_eq!(
            m(&[], &[("ETCD_CONFIG_FILE", b_s)]).config_file,
            Some(b.clone())
        );
        assert_eq!(m(&["--", "--name=m1"], &[]).config_file, None);
    }

    #[test]
    fn no_etcd_flags_gives_etcd_defaults_with_data_under_state_dir() {
        let s = settings(&[], &[]);
        assert_eq!(s.member.name, "default");
        assert_eq!(s.member.data_dir, PathBuf::from("/var/lib/es/default.etcd"));
        assert_eq!(s.member.client_urls, ["http://localhost:2379"]);
        assert_eq!(s.etcd_args, ["--data-dir=/var/lib/es/default.etcd"]);
    }

    #[test]
    fn flag_beats_env_and_both_syntaxes_parse() {
        let s = settings(
            &[
                "--",
                "-name",
                "m1",
                "--data-dir=/d",
                "--enable-pprof",
                "--listen-client-urls",
                "http://0.0.0.0:2379",
            ],
            &[("ETCD_NAME", "from-env"), ("ETCD_DATA_DIR", "/env")],
        );
        assert_eq!(s.member.name, "m1");
        assert_eq!(s.member.data_dir, PathBuf::from("/d"));
        assert_eq!(s.member.client_urls, ["http://127.0.0.1:2379"]);
        // Nothing is added when the user chose the data dir.
        assert_eq!(s.etcd_args.len(), 6);
    }

    #[test]
    fn env_is_used_when_no_flag() {
        let s = settings(
            &[],
            &[
                ("ETCD_NAME", "m2"),
                ("ETCD_DATA_DIR", "/srv/etcd"),
                ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.2:2379"),
                (
                    "ETCD_LISTEN_CLIENT_URLS",
                    "http://127.0.0.1:2379,http://10.0.0.2:2379",
                ),
            ],
        );
        assert_eq!(s.member.name, "m2");
        assert_eq!(s.member.data_dir, PathBuf::from("/srv/etcd"));
        assert!(s.etcd_args.is_empty());
        assert_eq!(
            s.member.client_urls,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
    }

    #[test]
    fn unknown_flags_are_left_to_etcd() {
        let s = settings(
            &[
                "--",
                "--name",
                "m1",
                "--no-such-flag",
                "--data-dir",
                "/d",
                "--last",
            ],
            &[],
        );
        assert_eq!(s.member.name, "m1");
        assert_eq!(s.member.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn a_missing_or_broken_config_file_is_a_configuration_error_naming_it() {
        let cli = |file: &str| {
            let cli = Cli::try_parse_from([
                "etcd-supervisor",
                "run",
                "--state-dir",
                "/var/lib/es",
                "--",
                "--config-file",
                file,
            ])
            .unwrap();
            let Command::Run(run) = cli.command else {
                panic!("not run")
            };
            RunSettings::resolve(&run, &HashMap::new())
                .unwrap_err()
                .to_string()
        };
        let missing = cli("/no/such/etcd.yml");
        assert!(
            missing.contains("/no/such/etcd.yml") && missing.contains("flag --config-file"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("etcd.yml");
        std::fs::write(&bad, "name: m1\nlisten-client-urls: 'unclosed\n").unwrap();
        let err = cli(bad.to_str().unwrap());
        assert!(
            err.contains(bad.to_str().unwrap()) && err.contains("line"),
            "{err}"
        );
    }

    #[test]
    fn relative_state_dir_is_refused() {
        let cli = Cli::try_parse_from(["etcd-supervisor", "run", "--state-dir", "rel"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(matches!(
            RunSettings::resolve(&run, &HashMap::new()),
            Err(ConfigError::RelativeStateDir(_))
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.delay(100), Duration::from_secs(30));
    }
}
