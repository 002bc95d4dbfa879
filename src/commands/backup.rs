//! `etcd-supervisor backup` and `etcd-supervisor verify-backup`.
//!
//! `backup` takes an on-demand, verified snapshot backup of the member at the first
//! endpoint (the local one), while etcd keeps running. It goes to
//! `<state-dir>/backups/<time>-<member>-<version>`, or exactly to `--out DIR`. Retention
//! does not apply: on-demand backups are the operator's, and `--backup-keep` only ever
//! deletes a turn's backups. Exit 0 with the directory and a summary on stdout; 1 with one
//! error line on failure (2 when the client options themselves are unusable).
//!
//! `verify-backup DIR` exits 0 with a one-line summary when the backup verifies, 1 with the
//! first bad file named otherwise.

use super::Outcome;
use crate::cli::{BackupArgs, VerifyBackupArgs};
use crate::etcd::Client;

use crate::backup::{verify, Backup, BackupError, BackupPlan};

/// etcdctl's default, for a local member when `--endpoints` is not given.
use crate::config::DEFAULT_ENDPOINT;

/// `etcd-supervisor backup`; returns the exit code.
pub async fn backup(args: &BackupArgs) -> Outcome {
    let env = std::env::vars().collect();
    // From an operator's shell: the daemon's TLS and its member's own client URLs (the
    // backup is of the local member) fill in what is not given.
    let daemon = crate::config::inspect::Daemon::look(&args.state.state_dir);
    let (mut conn, _) = daemon.conn(&args.conn);
    if args.conn.endpoints.is_empty() {
        if let Some((record, _)) = daemon.record() {
            conn.endpoints = record.client_urls.clone();
        }
    }
    let config = crate::config::client_config(&conn, &[DEFAULT_ENDPOINT.to_owned()], &env);
    let client = match Client::new(config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("{e}");
            return Outcome::Usage;
        }
    };
    let plan = match &args.out {
        Some(dir) => BackupPlan::exact(dir.clone()),
        None => BackupPlan::on_demand(&args.state.state_dir),
    };
    match take(&plan, &client).await {
        Ok(backup) => {
            println!("{}", backup.dir.display());
            println!("{}", backup.summary());
            Outcome::Success
        }
        Err(e) => {
            tracing::error!("{e}");
            Outcome::Failed
        }
    }
}

async fn take(plan: &BackupPlan, client: &Client) -> Result<Backup, BackupError> {
    let pending = plan.begin(client).await?;
    let pending = pending.snapshot(client).await?;
    pending.finish().await
}

/// `etcd-supervisor verify-backup DIR`; returns the exit code.
pub fn verify_backup(args: &VerifyBackupArgs) -> Outcome {
    match verify(&args.dir) {
        Ok(verified) => {
            println!("{}", verified.summary());
            Outcome::Success
        }
        Err(e) => {
            tracing::error!("backup {} does NOT verify: {e}", args.dir.display());
            Outcome::Failed
        }
    }
}
