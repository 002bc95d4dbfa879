//! etcd-supervisor: runs etcd as a supervised child and rolling-upgrades the cluster.
//!
//! Layout, one concern per module:
//! - `cli`: clap definitions (shared argument groups), man page and completions.
//! - `commands`: one file per subcommand; `commands::run` wires up the daemon.
//! - `config`: raw inputs (flags, env, etcd's own flags) resolved into typed settings.
//! - `process`: the reaper, the etcd child, the data-dir lock: the only code that forks or waits.
//! - `supervisor`: the run loop (exit policy, backoff, health, signals, systemd, starts
//!   prepared off the runtime thread) and the control interface the upgrade driver uses.
//! - `cluster`: keys and typed records under the prefix, the upgrade lock, a typed view of
//!   the cluster that `status` renders and preflight judges.
//! - `upgrade`: one member's turn: state machine, path rules, preflight, driver, state file.
//! - `rehearsal`: the dress rehearsal: a target version opens a private copy of this
//!   member's data before any member stops; says whose fault a failure is.
//! - `versions`: version numbers and the pinned-binary store.
//! - `staging`: the staging directory (watch, checks, quarantine, `stage`).
//! - `backup`: verified backups; `etcd`: the etcd client (gRPC through etcd-client; plain
//!   HTTP for `/health` and `/version`).
//! - `durable`: atomic writes and fsync; `digest`: sha256 of files and bytes; `blocking`:
//!   blocking work on tokio's blocking pool; `metrics`: Prometheus; `logging`: tracing
//!   setup; `failpoint`: test-only kill points.

pub mod backup;
pub mod blocking;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod digest;
pub mod durable;
pub mod etcd;
pub mod failpoint;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod rehearsal;
pub mod staging;
pub mod supervisor;
pub mod upgrade;
pub mod versions;
