//! `etcd-supervisor stage`: copies a binary into the staging dir, checksum last.

use crate::cli::StageArgs;
use crate::staging::stage;

/// `etcd-supervisor stage`: stages the files and prints one line; returns the exit code.
pub fn command(args: &StageArgs) -> i32 {
    let dir = args
        .staging_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join("staging"));
    match stage(&args.binary, &args.with, &dir) {
        Ok(staged) => {
            println!("{staged}");
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    }
}
