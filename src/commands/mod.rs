//! One file per subcommand; this one dispatches the parsed command line to them.

use std::future::Future;

use crate::cli::{man, Cli, Command};
use crate::config::RunSettings;

pub mod backup;
pub mod plan;
pub mod run;
pub mod stage;
pub mod status;

/// Runs the parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => {
            let env = std::env::vars().collect();
            match RunSettings::resolve(&args, &env) {
                Ok(settings) => block_on(async move {
                    run::run(settings).await.unwrap_or_else(|e| {
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
        Command::Stage(args) => stage::command(&args),
        Command::Status(args) => block_on(async move { status::command(&args).await }),
        Command::Plan(args) => block_on(async move { plan::command(&args).await }),
        Command::Backup(args) => block_on(async move { backup::backup(&args).await }),
        Command::VerifyBackup(args) => backup::verify_backup(&args),
        Command::Completions(args) => man::completions(args.shell),
        Command::Man(args) => man::man(&args),
    }
}

/// Runs `fut` on a current-thread runtime: etcd is spawned from this (main) thread, which
/// lives as long as the process, so PR_SET_PDEATHSIG fires only when the supervisor dies.
pub fn block_on<F: Future<Output = i32>>(fut: F) -> i32 {
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
