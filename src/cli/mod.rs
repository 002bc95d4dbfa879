//! Command-line definitions (clap types only).
//!
//! Every supervisor option also reads `ETCD_SUPERVISOR_<OPTION>` from the environment.
//! Raw values are turned into validated settings by [`crate::config`]; nothing else
//! reads argv or the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod man;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backup::BackupMode;
use crate::rehearsal::RehearsalMode;
use crate::upgrade::rules::pacing::window::Window;
use crate::upgrade::rules::path::Policy;
use crate::versions::version::ParseVersionError;

/// Runs etcd as a supervised child and rolling-upgrades the cluster from a staging directory.
#[derive(Debug, Parser)]
#[command(name = "etcd-supervisor", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format of the supervisor's own events (etcd's output passes through unchanged).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Human,
        env = "ETCD_SUPERVISOR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format of the supervisor's log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The supervisor's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run etcd as a supervised child (use as ExecStart= or container entrypoint).
    Run(Box<RunArgs>),
    /// Show members, versions, health, the cluster version, alarms and the upgrade turn.
    Status(StatusArgs),
    /// Copy a new etcd binary into the staging directory, checksum last.
    Stage(StageArgs),
    /// Take a verified backup of the local member now.
    Backup(BackupArgs),
    /// Check a backup directory against its SHA256SUMS and snapshot trailer.
    VerifyBackup(VerifyBackupArgs),
    /// Dry run: what the local member would do with what is staged now, and why.
    Plan(PlanArgs),
    /// Pause upgrades cluster-wide: no member starts a new turn until `resume`.
    Pause(PauseArgs),
    /// Resume upgrades paused with `pause`.
    Resume(ResumeArgs),
    /// Go back one minor (3.7 -> 3.6, 3.6 -> 3.5) through etcd's downgrade API; the
    /// members take their turns, the leader last. `--cancel` aborts it.
    Downgrade(DowngradeArgs),
    /// Clear the record of members' stores that differed after a rollout, once checked;
    /// upgrade turns resume.
    AcknowledgeInconsistency(AcknowledgeArgs),
    /// Print a shell completion script to stdout (packaging; hidden from --help).
    #[command(hide = true)]
    Completions(CompletionsArgs),
    /// Print a man page (roff) to stdout (packaging; hidden from --help).
    #[command(hide = true)]
    Man(ManArgs),
}

/// Options of the hidden `etcd-supervisor completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of the hidden `etcd-supervisor man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Print the page of this subcommand (`etcd-supervisor-SUBCOMMAND(1)`) instead of the
    /// main page.
    pub subcommand: Option<String>,

    /// List the page names (`etcd-supervisor`, `etcd-supervisor-run`, ...), one a line.
    #[arg(long, conflicts_with = "subcommand")]
    pub list: bool,
}

/// Options of `etcd-supervisor plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub state: StateDirArg,

    #[command(flatten)]
    pub staging: StagingDirArg,

    /// This member's name. Default: the running daemon's (recorded in the state dir), else
    /// ETCD_NAME, else "default".
    #[arg(long)]
    pub member: Option<String>,

    /// Judge this target instead of the one staged and accepted (state.json).
    #[arg(long)]
    pub target: Option<String>,

    /// Prefix of the supervisor's keys in etcd; left at its default, the running daemon's
    /// own is used.
    #[command(flatten)]
    pub prefix: KeyPrefixArg,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub window: WindowArgs,
}

/// Options of `etcd-supervisor pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,

    /// Why, for whoever looks at `status` next (recorded with the user, host and time).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Options of `etcd-supervisor downgrade`.
#[derive(Debug, Args)]
pub struct DowngradeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,

    /// The version to go back to, one minor below the cluster version (e.g. 3.6.17),
    /// staged on every member first.
    #[arg(value_name = "VERSION", required_unless_present = "cancel")]
    pub target: Option<String>,

    /// Cancel the downgrade under way: members already downgraded go back to the version
    /// they came from.
    #[arg(long, conflicts_with = "target")]
    pub cancel: bool,

    /// Return once the downgrade is enabled instead of following the members' turns.
    #[arg(long)]
    pub no_wait: bool,

    /// How long to follow the members' turns before giving up watching (the downgrade
    /// itself goes on; `status` shows it). Generous: each member's turn includes a backup.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// Options of `etcd-supervisor resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,
}

/// `--window` (shared by run and plan).
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// Maintenance window: a member starts an upgrade turn only inside one (a turn that
    /// started inside finishes even if the window closes). A cron expression in UTC (5
    /// fields: minute hour day-of-month month day-of-week; or 6 with seconds first) and
    /// how long the window stays open, e.g. "0 2 * * SAT 4h" (Saturdays 02:00-06:00 UTC).
    /// Repeatable; in the environment, separate several with ';'. None: any time.
    #[arg(long = "window", value_name = "CRON LENGTH", env = "ETCD_SUPERVISOR_WINDOW", value_delimiter = ';', value_parser = parse_window)]
    pub windows: Vec<Window>,
}

/// What the operator accepts beyond etcd's own upgrade rules (shared by run and plan).
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Accept a version on the known-bad list (repeatable, or comma-separated).
    #[arg(long, env = "ETCD_SUPERVISOR_ALLOW_KNOWN_BAD", value_delimiter = ',')]
    pub allow_known_bad: Vec<String>,

    /// Roll 3.4 -> 3.5 although auth is enabled. etcd does not support this rolling upgrade
    /// (3.5 changed the WAL format of auth entries, etcd PR #11943): take a backup first.
    #[arg(
        long = "allow-auth-upgrade-from-3.4",
        env = "ETCD_SUPERVISOR_ALLOW_AUTH_UPGRADE_FROM_3_4"
    )]
    pub allow_auth_upgrade_from_34: bool,
}

impl PolicyArgs {
    /// The typed policy; a malformed version is an error naming it.
    pub fn resolve(&self) -> Result<Policy, ParseVersionError> {
        Ok(Policy {
            allow_known_bad: self
                .allow_known_bad
                .iter()
                .map(|v| v.parse())
                .collect::<Result<_, _>>()?,
            allow_auth_upgrade_from_34: self.allow_auth_upgrade_from_34,
        })
    }
}

/// `--state-dir` (shared by run, plan, stage and backup).
#[derive(Debug, Clone, Args)]
pub struct StateDirArg {
    /// Directory for pinned versions, backups and state.json.
    #[arg(
        long,
        env = "ETCD_SUPERVISOR_STATE_DIR",
        default_value = "/var/lib/etcd-supervisor"
    )]
    pub state_dir: PathBuf,
}

/// `--staging-dir` (shared by run, plan and stage).
#[derive(Debug, Clone, Args)]
pub struct StagingDirArg {
    /// Staging directory watched for new etcd binaries (default `<state-dir>/staging`).
    #[arg(long, env = "ETCD_SUPERVISOR_STAGING_DIR")]
    pub staging_dir: Option<PathBuf>,
}

impl StagingDirArg {
    /// The staging directory: the one given, else `<state-dir>/staging`.
    pub fn resolve(&self, state_dir: &Path) -> PathBuf {
        self.staging_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("staging"))
    }
}

/// `--key-prefix` (shared by run, status and plan).
#[derive(Debug, Clone, Args)]
pub struct KeyPrefixArg {
    /// Prefix of the supervisor's keys in etcd.
    #[arg(
        long,
        env = "ETCD_SUPERVISOR_KEY_PREFIX",
        default_value = "/etcd-supervisor/"
    )]
    pub key_prefix: String,
}

/// How to reach the cluster: endpoints, TLS and auth (shared by several subcommands).
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Cluster client URLs, comma-separated. Default: the local member's client URLs, then
    /// the member list.
    #[arg(long, env = "ETCD_SUPERVISOR_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// CA bundle that signed etcd's client certificates.
    #[arg(long, env = "ETCD_SUPERVISOR_CACERT")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (etcd with --client-cert-auth).
    #[arg(long, env = "ETCD_SUPERVISOR_CERT", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Key of the client certificate.
    #[arg(long, env = "ETCD_SUPERVISOR_KEY", requires = "cert")]
    pub key: Option<PathBuf>,

    /// etcd user (auth enabled); the password is read from ETCD_SUPERVISOR_PASSWORD.
    #[arg(long, env = "ETCD_SUPERVISOR_USER")]
    pub user: Option<String>,

    /// Upper bound of one request to etcd.
    #[arg(long, env = "ETCD_SUPERVISOR_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// Options of `etcd-supervisor status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// The daemon's state dir: its recorded endpoints, TLS, user and key prefix are used
    /// where none are given here (a state dir without a record adds nothing).
    #[arg(
        long,
        env = "ETCD_SUPERVISOR_STATE_DIR",
        default_value = "/var/lib/etcd-supervisor"
    )]
    pub state_dir: PathBuf,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,

    /// Print stable JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,

    /// Keep watching until Ctrl-C: redrawn in place on a terminal, otherwise one block
    /// each time something other than an age or an index changes.
    #[arg(long)]
    pub watch: bool,

    /// How often `--watch` asks the cluster (default 1s: live enough to follow a turn, a
    /// handful of small requests per member each time).
    #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
    pub interval: std::time::Duration,
}

/// Options of `etcd-supervisor acknowledge-inconsistency`.
#[derive(Debug, Args)]
pub struct AcknowledgeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,
}

/// Options of `etcd-supervisor stage`.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// The etcd binary to stage.
    pub binary: PathBuf,

    /// etcdctl / etcdutl (or other files) to stage beside it; they travel with the version.
    #[arg(long = "with", value_name = "FILE")]
    pub with: Vec<PathBuf>,

    #[command(flatten)]
    pub state: StateDirArg,

    #[command(flatten)]
    pub staging: StagingDirArg,
}

/// Options of `etcd-supervisor backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub state: StateDirArg,

    /// Where to write the backup (default `<state-dir>/backups/<time>-<member>-...`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `etcd-supervisor verify-backup`.
#[derive(Debug, Args)]
pub struct VerifyBackupArgs {
    /// The backup directory.
    pub dir: PathBuf,
}

/// Options of `etcd-supervisor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub state: StateDirArg,

    /// etcd binary to install as the first version when `<state-dir>/versions` is empty.
    /// Later starts run the pinned version; a different binary here is logged and ignored,
    /// because upgrades go through the staging directory.
    #[arg(long, env = "ETCD_SUPERVISOR_ETCD_BINARY")]
    pub etcd_binary: Option<PathBuf>,

    /// How long etcd may take to stop after SIGTERM before it is killed.
    /// etcd 3.5 needs about 1 s; SIGKILL skips its leadership hand-off, so the default is generous.
    #[arg(long, env = "ETCD_SUPERVISOR_STOP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// First delay before restarting a crashed etcd; doubles per crash up to --restart-delay-max.
    #[arg(long, env = "ETCD_SUPERVISOR_RESTART_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub restart_delay: Duration,

    /// Cap of the restart backoff.
    #[arg(long, env = "ETCD_SUPERVISOR_RESTART_DELAY_MAX", default_value = "30s", value_parser = parse_duration)]
    pub restart_delay_max: Duration,

    /// After etcd has been healthy this long, the backoff starts again from --restart-delay.
    #[arg(long, env = "ETCD_SUPERVISOR_HEALTHY_RESET", default_value = "60s", value_parser = parse_duration)]
    pub healthy_reset: Duration,

    /// How often etcd's /health is polled once it is up (for STATUS= and the etcd_up
    /// metric; an exit is noticed at once regardless). Kept slow so an idle supervisor
    /// costs next to nothing.
    #[arg(long, env = "ETCD_SUPERVISOR_HEALTH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,

    #[command(flatten)]
    pub staging: StagingDirArg,

    /// Poll the staging directory at this interval instead of relying on inotify alone
    /// (for filesystems without inotify, such as some network mounts).
    #[arg(long, env = "ETCD_SUPERVISOR_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,

    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub prefix: KeyPrefixArg,

    /// TTL of the upgrade turn's lease. Short enough that a dead holder frees the turn
    /// quickly, long enough to ride out a leader election (~1-2 s) between keepalives.
    #[arg(long, env = "ETCD_SUPERVISOR_LOCK_TTL", default_value = "10s", value_parser = parse_duration)]
    pub lock_ttl: Duration,

    /// Leader last: how long the leader waits, without progress, for the other members
    /// staged for the same version to take their turns before it takes its own (one leader
    /// change per rollout instead of one per leader that stops). Long enough for a
    /// follower's retry backoff (up to 60 s); `0` takes turns in queue order.
    #[arg(long, env = "ETCD_SUPERVISOR_LEADER_LAST_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub leader_last_wait: Duration,

    /// How long a started etcd may take to be healthy and caught up before the swap is
    /// rolled back.
    #[arg(long, env = "ETCD_SUPERVISOR_READY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// What to back up before a swap.
    #[arg(long, env = "ETCD_SUPERVISOR_BACKUP", default_value = "snapshot", value_parser = backup_mode_parser())]
    pub backup: BackupMode,

    /// Backups to keep; never fewer than one verified backup.
    #[arg(long, env = "ETCD_SUPERVISOR_BACKUP_KEEP", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,

    /// How old the verified backup taken for the dress rehearsal may be when the turn comes
    /// for the turn to reuse it as its own; an older one is retaken; 0s: every turn takes its own.
    #[arg(long, env = "ETCD_SUPERVISOR_BACKUP_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub backup_max_age: Duration,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub window: WindowArgs,

    /// After a member verifies on the new version, keep the turn this long while watching
    /// its health, alarms and applied index; a failure then rolls it back and rejects the
    /// version. 0 (the default): release at once.
    #[arg(long, env = "ETCD_SUPERVISOR_SOAK", default_value = "0s", value_parser = parse_duration)]
    pub soak: Duration,

    /// Soak for the first member of a rollout only (the canary: no other member runs the
    /// target yet); the longer of --soak and this applies to it.
    #[arg(long, env = "ETCD_SUPERVISOR_CANARY_SOAK", default_value = "0s", value_parser = parse_duration)]
    pub canary_soak: Duration,

    /// The dress rehearsal before a member queues: the staged version opens a restored copy
    /// of this member's data on loopback. `auto` runs it when it can and skips it with a
    /// mark when it cannot (no restore tool pinned, no room, db too large); `always` holds
    /// the upgrade when it cannot run; `never` skips it.
    #[arg(long, env = "ETCD_SUPERVISOR_REHEARSAL", default_value = "auto", value_parser = rehearsal_mode_parser())]
    pub rehearsal: RehearsalMode,

    /// Largest db rehearsed: a copy costs its size in disk and its restore time.
    #[arg(long, env = "ETCD_SUPERVISOR_REHEARSAL_MAX_DB", default_value = "2GiB", value_parser = parse_bytes)]
    pub rehearsal_max_db: u64,

    /// Serve Prometheus metrics and /healthz here (e.g. 127.0.0.1:9379); off by default.
    #[arg(long, env = "ETCD_SUPERVISOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Reload (SIGHUP) internals: check that this binary can take over from the running
    /// supervisor's handover record FILE, then exit (0: it can).
    #[arg(long, hide = true, value_name = "FILE", conflicts_with = "handover")]
    pub handover_check: Option<PathBuf>,

    /// Reload (SIGHUP) internals: take over etcd from the handover record FILE (set by the
    /// supervisor when it re-executes itself).
    #[arg(long, hide = true, value_name = "FILE")]
    pub handover: Option<PathBuf>,

    /// Arguments passed to etcd unchanged (after `--`); ETCD_* variables pass through too.
    #[arg(last = true, value_name = "ETCD_FLAGS")]
    pub etcd_args: Vec<String>,
}

/// `--backup`: one of [`BackupMode::NAMES`], listed in `--help` and completions.
fn backup_mode_parser() -> impl clap::builder::TypedValueParser<Value = BackupMode> {
    clap::builder::PossibleValuesParser::new(BackupMode::NAMES).try_map(|s| s.parse::<BackupMode>())
}

/// `--rehearsal`: auto, always or never.
fn rehearsal_mode_parser() -> impl clap::builder::TypedValueParser<Value = RehearsalMode> {
    clap::builder::PossibleValuesParser::new(["auto", "always", "never"])
        .try_map(|s| s.parse::<RehearsalMode>())
}

/// Parses a size such as `2GiB`, `512MB` or `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{e} (examples: 2GiB, 512MB)"))
}

/// Parses a `--window` such as `0 2 * * SAT 4h`.
pub fn parse_window(s: &str) -> Result<Window, String> {
    s.parse()
        .map_err(|e: crate::upgrade::rules::pacing::window::WindowError| e.to_string())
}

/// Parses a human duration such as `10s`, `500ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn etcd_flags_after_double_dash_are_kept_verbatim() {
        let cli = Cli::try_parse_from([
            "etcd-supervisor",
            "run",
            "--state-dir",
            "/tmp/x",
            "--",
            "--name",
            "m1",
            "--data-dir=/d",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.etcd_args, ["--name", "m1", "--data-dir=/d"]);
        assert_eq!(run.state.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn windows_repeat_and_soak_defaults_to_zero() {
        let cli = Cli::try_parse_from([
            "etcd-supervisor",
            "run",
            "--window",
            "0 2 * * SAT 4h",
            "--window=30 22 * * 1-5 90m",
            "--canary-soak",
            "10m",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let specs: Vec<&str> = run.window.windows.iter().map(Window::spec).collect();
        assert_eq!(specs, ["0 2 * * SAT 4h", "30 22 * * 1-5 90m"]);
        assert_eq!(run.soak, Duration::ZERO);
        assert_eq!(run.canary_soak, Duration::from_secs(600));
        let err =
            Cli::try_parse_from(["etcd-supervisor", "run", "--window", "0 2 * * SAT"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["etcd-supervisor", "run", "--stop-timeout", "soon"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
