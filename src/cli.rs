//! Command-line definitions (clap types only).
//!
//! Every supervisor option also reads `ETCD_SUPERVISOR_<OPTION>` from the environment.
//! Raw values are turned into validated settings by [`crate::config`]; nothing else
//! reads argv or the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
}

/// Options of `etcd-supervisor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory for pinned versions, backups and state.json.
    #[arg(
        long,
        env = "ETCD_SUPERVISOR_STATE_DIR",
        default_value = "/var/lib/etcd-supervisor"
    )]
    pub state_dir: PathBuf,

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

    /// How often etcd's /health is polled once it is up.
    #[arg(long, env = "ETCD_SUPERVISOR_HEALTH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// Arguments passed to etcd unchanged (after `--`); ETCD_* variables pass through too.
    #[arg(last = true, value_name = "ETCD_FLAGS")]
    pub etcd_args: Vec<String>,
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
        let Command::Run(run) = cli.command;
        assert_eq!(run.etcd_args, ["--name", "m1", "--data-dir=/d"]);
        assert_eq!(run.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_duration_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["etcd-supervisor", "run", "--stop-timeout", "soon"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
