//! `etcd-supervisor stage`: copies a binary into the staging dir, checksum last.

use super::Outcome;
use crate::cli::StageArgs;
use crate::staging::stage;

/// `etcd-supervisor stage`: stages the files and prints one line; returns the exit code.
pub fn command(args: &StageArgs) -> Outcome {
    let dir = args.staging.resolve(&args.state.state_dir);
    match stage(&args.binary, &args.with, &dir) {
        Ok(staged) => {
            println!("{staged}");
            Outcome::Success
        }
        Err(e) => Outcome::error(&e, e.is_usage()),
    }
}
