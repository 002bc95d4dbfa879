//! One file per subcommand; this one dispatches the parsed command line to them.

use std::future::Future;

use crate::cli::{man, Cli, Command};
use crate::config::RunSettings;

pub mod acknowledge;
pub mod backup;
pub mod downgrade;
pub mod pause;
pub mod plan;
pub mod reload;
pub mod run;
pub mod stage;
pub mod status;
mod status_watch;

/// How a command ended. `main` turns it into the process exit code, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked (0), or etcd stopped as asked.
    Success,
    /// A runtime failure it could not get past (1); one log line says which.
    Failed,
    /// A usage or configuration error (2).
    Usage,
    /// etcd's own exit, passed on: its code, or 128+N when it died of signal N.
    Etcd(u8),
}

impl Outcome {
    /// Logs `e` as the one line that says what happened, and classifies it.
    pub fn error(e: &dyn std::fmt::Display, usage: bool) -> Self {
        tracing::error!("{e}");
        if usage {
            Outcome::Usage
        } else {
            Outcome::Failed
        }
    }
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> Outcome {
    match cli.command {
        Command::Run(args) => {
            let env = std::env::vars().collect();
            match RunSettings::resolve(&args, &env) {
                Ok(settings) if args.handover_check.is_some() => {
                    reload::check(&settings, args.handover_check.as_deref())
                }
                Ok(settings) => block_on(async move {
                    match run::run(settings, args.handover.clone()).await {
                        Ok(0) => Outcome::Success,
                        Ok(code) => Outcome::Etcd(u8::try_from(code).unwrap_or(1)),
                        Err(e) => Outcome::error(&e, e.is_usage()),
                    }
                }),
                Err(e) => {
                    tracing::error!("{e}");
                    Outcome::Usage
                }
            }
        }
        Command::Stage(args) => stage::command(&args),
        Command::Status(args) => block_on(async move { status::command(&args).await }),
        Command::Plan(args) => block_on(async move { plan::command(&args).await }),
        Command::Pause(args) => block_on(async move { pause::pause(&args).await }),
        Command::Resume(args) => block_on(async move { pause::resume(&args).await }),
        Command::Downgrade(args) => block_on(async move { downgrade::command(&args).await }),
        Command::AcknowledgeInconsistency(args) => {
            block_on(async move { acknowledge::command(&args).await })
        }
        Command::Backup(args) => block_on(async move { backup::backup(&args).await }),
        Command::VerifyBackup(args) => backup::verify_backup(&args),
        Command::Completions(args) => write_stdout(&man::completions(args.shell)),
        Command::Man(args) => match man::man(&args) {
            Ok(page) => write_stdout(&page),
            Err(e @ man::ManError::NoSuchPage(_)) => {
                tracing::error!("{e}");
                Outcome::Usage
            }
            Err(e) => {
                tracing::error!("{e}");
                Outcome::Failed
            }
        },
    }
}

/// Writes generated text to stdout; a closed pipe or full disk is a runtime failure.
fn write_stdout(bytes: &[u8]) -> Outcome {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Outcome::Success,
        Err(e) => {
            tracing::error!("cannot write to stdout: {e}");
            Outcome::Failed
        }
    }
}

/// Runs `fut` on a current-thread runtime: etcd is spawned from this (main) thread, which
/// lives as long as the process, so PR_SET_PDEATHSIG fires only when the supervisor dies.
pub fn block_on<F: Future<Output = Outcome>>(fut: F) -> Outcome {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            Outcome::Failed
        }
    }
}
