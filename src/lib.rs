//! etcd-supervisor: runs etcd as a supervised child and rolling-upgrades the cluster.
//!
//! Layout:
//! - `app`: subcommand dispatch; `cli`, `config`: command line, and settings resolved
//!   against etcd's own flags/env.
//! - `reaper`, `child`, `datadir`: the etcd process (the only place that waits for children).
//! - `supervisor`: the `run` loop (restart policy, health, signals, systemd).
//! - `notify`: systemd notifications; `logging`: tracing setup; `metrics`: Prometheus.
//! - `version`, `versions`: version numbers and the pinned-binaries store.
//! - `staging`: the staging directory (watch, checks, quarantine) and the `stage` command.
//! - `etcd`: the HTTP/JSON gateway client; `turn`: the cluster-wide upgrade lock.
//! - `upgrade_path`: the upgrade-path rules; `upgrade`: one member's turn (state machine,
//!   driver, preflight, plan, state.json); `backup`: verified backups; `status`: the report.

pub mod app;
pub mod backup;
pub mod child;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod etcd;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reaper;
pub mod staging;
pub mod status;
pub mod supervisor;
pub mod turn;
pub mod upgrade;
pub mod upgrade_path;
pub mod version;
pub mod versions;
