//! Running a short-lived tool (`etcd --help`, `etcdutl check v2store`) through the reaper:
//! output captured up to a limit, the run bounded by a timeout, the process killed when the
//! bound is hit. Only for binaries that already passed the staging checks.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::reaper::{ChildExit, Reaper};

/// What a tool printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// How it exited.
    pub exit: ChildExit,
    /// Its standard output (up to the limit).
    pub stdout: String,
    /// Its standard error (up to the limit).
    pub stderr: String,
}

/// Why a tool did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It could not be started.
    #[error("cannot run {program}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// It ran past the timeout and was killed.
    #[error("{program} did not finish within {}; killed", humantime::format_duration(*.timeout))]
    Timeout {
        /// The program.
        program: String,
        /// The bound.
        timeout: Duration,
    },
}

/// Bytes kept of each stream: a hostile or broken binary could print forever.
const LIMIT: u64 = 1024 * 1024;

/// Runs `cmd` (stdin closed) and collects its output within `timeout`.
pub async fn run(
    reaper: &Reaper,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<ToolOutput, ToolError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let failed = |reason: String| ToolError::Spawn {
        program: program.clone(),
        reason,
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut spawned = reaper.spawn(cmd).map_err(|e| failed(e.to_string()))?;
    let pipe = |fd: Option<std::os::fd::OwnedFd>| {
        fd.ok_or_else(|| failed("no pipe".to_owned()))
            .and_then(|fd| {
                tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                    .map_err(|e| failed(e.to_string()))
            })
    };
    let mut out = pipe(spawned.child.stdout.take().map(Into::into))?;
    let mut err = pipe(spawned.child.stderr.take().map(Into::into))?;
    let collect = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (mut out_limited, mut err_limited) = ((&mut out).take(LIMIT), (&mut err).take(LIMIT));
        let _ = tokio::join!(
            out_limited.read_to_end(&mut o),
            err_limited.read_to_end(&mut e)
        );
        let exit = (&mut spawned.exit).await;
        (o, e, exit)
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok((o, e, exit)) => Ok(ToolOutput {
            exit: exit.map_err(|_| failed("its exit status was lost".to_owned()))?,
            stdout: String::from_utf8_lossy(&o).into_owned(),
            stderr: String::from_utf8_lossy(&e).into_owned(),
        }),
        Err(_) => {
            let _ = nix::sys::signal::kill(spawned.pid, nix::sys::signal::Signal::SIGKILL);
            Err(ToolError::Timeout { program, timeout })
        }
    }
}
