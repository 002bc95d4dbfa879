//! Entry point. Exit codes, in one place:
//! - 0: etcd stopped as asked (or a command succeeded);
//! - etcd's own exit code, or 128+N when etcd died of signal N;
//! - 1: a runtime failure the supervisor could not get past (one log line says which);
//! - 2: usage or configuration error.

use std::process::ExitCode;

use clap::Parser;
use etcd_supervisor::cli::{Cli, Command};
use etcd_supervisor::config::RunSettings;
use etcd_supervisor::{logging, supervisor};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let code = match cli.command {
        Command::Run(args) => {
            let env = std::env::vars().collect();
            match RunSettings::resolve(&args, &env) {
                Ok(settings) => block_on(async move {
                    supervisor::run(settings).await.unwrap_or_else(|e| {
                        tracing::error!("{e}");
                        if e.is_config() {
                            2
                        } else {
                            1
                        }
                    })
                }),
                Err(e) => {
                    tracing::error!("{e}");
                    2
                }
            }
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs `fut` on a current-thread runtime: etcd is spawned from this (main) thread, which
/// lives as long as the process, so PR_SET_PDEATHSIG fires only when the supervisor dies.
fn block_on<F: std::future::Future<Output = i32>>(fut: F) -> i32 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            1
        }
    }
}
