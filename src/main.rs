//! Entry point. Exit codes, in one place:
//! - 0: etcd stopped as asked (or a command succeeded);
//! - etcd's own exit code, or 128+N when etcd died of signal N;
//! - 1: a runtime failure the supervisor could not get past (one log line says which);
//! - 2: usage or configuration error.

use std::process::ExitCode;

use clap::Parser;
use etcd_supervisor::cli::Cli;
use etcd_supervisor::{commands, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let code = commands::dispatch(cli);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
