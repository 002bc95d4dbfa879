//! Entry point, and the one exit-code policy:
//! - 0: etcd stopped as asked, or a command succeeded;
//! - etcd's own exit code, or 128+N when etcd died of signal N;
//! - 1: a runtime failure the supervisor could not get past (one log line says which);
//! - 2: usage or configuration error.

use std::process::ExitCode;

use clap::Parser;
use etcd_supervisor::cli::Cli;
use etcd_supervisor::commands::{self, Outcome};
use etcd_supervisor::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    ExitCode::from(match commands::dispatch(cli) {
        Outcome::Success => 0,
        Outcome::Failed => 1,
        Outcome::Usage => 2,
        Outcome::Etcd(code) => code,
    })
}
