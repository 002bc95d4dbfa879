//! Re-executing the supervisor in place on SIGHUP (`systemctl reload`), so that a package
//! upgrade of the supervisor never restarts etcd.
//!
//! Theory of operation. The pid stays across an exec, so etcd stays this process's child
//! and `waitpid` keeps working; what the new image must know is in a handover record
//! ([`crate::process::handover`]) and the descriptors it needs (etcd's stderr pipe, the
//! metrics listener) stay open. A reload goes:
//! 1. `RELOADING=1`. The record is written as things are, and the binary at the path the
//!    supervisor was started from (not `/proc/self/exe`, which after a package upgrade is
//!    the old, deleted file) runs as a subprocess with `--handover-check`: it must parse the
//!    same arguments and read the record and the state. If it fails, nothing else happens:
//!    the reason is logged, `READY=1`, the running supervisor carries on.
//! 2. It waits for a quiet point: etcd running under the loop's own care (no start, stop
//!    or restart under way) and the upgrade driver holding no turn (idle, queued, failed or
//!    holding; it reports its phase on a typed channel, [`super::ChildControl::report_phase`]).
//!    A held turn is never handed over: the reload waits until the turn has ended.
//! 3. The driver stands down as on SIGTERM, but etcd is not stopped: a queued member gives
//!    up its place (the new image queues again from state.json), a vetting under way is
//!    dropped (the new staging watcher offers the staged file again).
//! 4. The stderr copy stops between two chunks, the record is written again, the kept
//!    descriptors lose `FD_CLOEXEC`, the handled signals are blocked (one that arrives
//!    before the new image has its handlers waits instead of killing it), and the binary
//!    is exec'd with `--handover FILE`. The new image registers etcd with its reaper before
//!    the first reaping pass, so an exit in the exec window is reaped and reported there,
//!    and sends `READY=1` once etcd is adopted.
//!
//! The decisions (when to check, the quiet point, when to exec) are the lifecycle's
//! ([`super::lifecycle::reload`]); this module holds the mechanics: the relaunch path, the
//! record, the check subprocess and the exec.
//!
//! The exec runs on the main thread, which spawned etcd: `PR_SET_PDEATHSIG` is tied to
//! that thread, and an exec does not end it.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use tokio::sync::oneshot;

use super::host::Handed;
use crate::process::handover::{self, HandedEtcd, HandedListener, Handover};
use crate::process::reaper::{ChildExit, Reaper};
use crate::process::tool;
use crate::versions::Version;

/// How long the new binary may take to prove it can take over.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The signals the supervisor handles; blocked across the exec.
const HANDLED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Test builds only: SIGKILL etcd right before the exec, so its exit falls in the exec
/// window and must be reaped and reported by the new image.
#[cfg(feature = "failpoints")]
const KILL_IN_EXEC_WINDOW_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_KILL_ETCD_AT_EXEC";

/// How to start this binary again: the path and arguments it was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relaunch {
    exe: PathBuf,
    /// argv, `argv[0]` included, without a `--handover FILE` of a previous reload.
    argv: Vec<OsString>,
}

impl Relaunch {
    /// From this process's argv and executable, read now (at start, before any package
    /// upgrade can replace the file).
    pub fn capture() -> Option<Self> {
        Self::from_parts(
            std::env::args_os().collect(),
            std::env::current_dir().ok().as_deref(),
            std::env::current_exe().ok(),
        )
    }

    /// `argv[0]` when it names a path (kept as given, links and all: an upgrade may move a
    /// link to a new file), made absolute against `cwd`; otherwise the executable's path.
    pub fn from_parts(
        argv: Vec<OsString>,
        cwd: Option<&Path>,
        current_exe: Option<PathBuf>,
    ) -> Option<Self> {
        let arg0 = PathBuf::from(argv.first()?);
        let exe = if arg0.as_os_str().as_bytes().contains(&b'/') {
            // Components drop the `.` of `./bin/x`, for the log's sake.
            cwd.filter(|_| arg0.is_relative())
                .map_or_else(|| arg0.clone(), |cwd| cwd.join(&arg0))
                .components()
                .collect()
        } else {
            current_exe?
        };
        Some(Self {
            exe,
            argv: strip_handover(argv),
        })
    }

    /// The binary a reload runs.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// argv with `FLAG FILE` right after the `run` subcommand.
    pub fn argv_with(&self, flag: &str, file: &Path) -> Vec<OsString> {
        let mut out = Vec::with_capacity(self.argv.len() + 2);
        let mut inserted = false;
        for (i, arg) in self.argv.iter().enumerate() {
            out.push(arg.clone());
            if !inserted && i > 0 && arg == "run" {
                out.push(flag.into());
                out.push(file.into());
                inserted = true;
            }
        }
        out
    }
}

/// argv without `--handover FILE` or `--handover=FILE` (supervisor options only, before `--`).
fn strip_handover(argv: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(argv.len());
    let (mut skip_value, mut etcd_flags) = (false, false);
    for arg in argv {
        if etcd_flags {
            out.push(arg);
        } else if skip_value {
            skip_value = false;
        } else if arg == "--handover" {
            skip_value = true;
        } else if !arg.as_bytes().starts_with(b"--handover=") {
            etcd_flags = arg == "--";
            out.push(arg);
        }
    }
    out
}

/// What a reload needs, prepared at start.
#[derive(Debug)]
pub struct ReloadSetup {
    /// How to start this binary again.
    pub relaunch: Relaunch,
    /// The handover record's path (in the state dir).
    pub record: PathBuf,
    /// A duplicate of the metrics listener, and its address.
    pub metrics: Option<(OwnedFd, String)>,
}

/// The etcd a re-executed supervisor takes over (from the record, checked).
#[derive(Debug)]
pub struct AdoptedEtcd {
    /// Its pid.
    pub pid: u32,
    /// Its exit, from [`Reaper::start_adopting`].
    pub exit: oneshot::Receiver<ChildExit>,
    /// Its stderr pipe.
    pub stderr: Option<OwnedFd>,
    /// The version it runs.
    pub version: Version,
    /// It has been healthy since the supervisor first started it.
    pub ever_healthy: bool,
    /// It was healthy at the handover.
    pub healthy: bool,
    /// Crashes counted towards the backoff.
    pub crashes: u32,
    /// The supervisor version that handed it over.
    pub from: String,
}

/// Reads and checks the record this image was exec'd with; the etcd it names must be this
/// process's child started at the recorded time.
pub fn read_record(path: &Path) -> Result<Handover, handover::HandoverError> {
    let record = Handover::load(path)?;
    record.validate(std::process::id())?;
    Ok(record)
}

/// Takes a descriptor the previous image kept open: it must be open, and it is made
/// close-on-exec again so that no child inherits it.
pub fn inherited_fd(raw: i32) -> Option<OwnedFd> {
    // SAFETY: fcntl with F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open, and this image opened nothing under this number
    // (it was taken when the image started): the handover record gives it to us alone.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    handover::set_inherit(fd.as_fd(), false).ok()?;
    Some(fd)
}

/// Blocks the handled signals (before the exec) or unblocks them (once the new image has
/// its handlers).
pub fn block_handled_signals(block: bool) -> nix::Result<()> {
    let mut set = SigSet::empty();
    for sig in HANDLED {
        set.add(sig);
    }
    let how = if block {
        SigmaskHow::SIG_BLOCK
    } else {
        SigmaskHow::SIG_UNBLOCK
    };
    nix::sys::signal::pthread_sigmask(how, Some(&set), None)
}

/// Runs the new binary with `--handover-check`; its stdout line on success, else why not.
async fn check(reaper: Reaper, exe: PathBuf, argv: Vec<OsString>) -> Result<String, String> {
    let mut cmd = std::process::Command::new(&exe);
    if let Some(arg0) = argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(argv.iter().skip(1));
    let out = tool::run(&reaper, &mut cmd, CHECK_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if out.exit == ChildExit::Code(0) {
        return Ok(out.stdout.trim().to_owned());
    }
    let said: Vec<&str> = out.stderr.lines().rev().take(3).collect();
    let said: Vec<&str> = said.into_iter().rev().collect();
    Err(format!(
        "{} --handover-check ended with {}: {}",
        exe.display(),
        out.exit,
        if said.is_empty() {
            "(no output)".to_owned()
        } else {
            said.join(" | ")
        }
    ))
}

/// `execv`, returning only when it failed.
fn exec(exe: &Path, argv: &[OsString]) -> nix::Error {
    let path = CString::new(exe.as_os_str().as_bytes());
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    match (path, args) {
        (Ok(path), Ok(args)) => match nix::unistd::execv(&path, &args) {
            Ok(never) => match never {},
            Err(e) => e,
        },
        _ => nix::Error::EINVAL,
    }
}

/// The handover record as things are now, naming `stderr` as etcd's kept stderr pipe.
pub(super) fn record(
    setup: &ReloadSetup,
    handed: &Handed,
    stderr: Option<BorrowedFd<'_>>,
) -> Handover {
    let etcd = handed.pid.and_then(|pid| {
        let stat = handover::proc_stat(pid).ok()?;
        Some(HandedEtcd {
            pid,
            start_time: stat.start_time,
            version: handed.version.to_string(),
            stderr_fd: stderr.map(|fd| fd.as_raw_fd()),
            ever_healthy: handed.ever_healthy,
            healthy: handed.healthy,
            crashes: handed.crashes,
        })
    });
    Handover {
        format: handover::FORMAT,
        supervisor_pid: std::process::id(),
        supervisor_version: env!("CARGO_PKG_VERSION").to_owned(),
        etcd,
        metrics: setup.metrics.as_ref().map(|(fd, addr)| HandedListener {
            fd: fd.as_raw_fd(),
            addr: addr.clone(),
        }),
    }
}

/// Writes the record and starts checking the new binary (step 1); the future answers its
/// line, or why it cannot take over.
pub(super) fn check_new_binary(
    setup: &ReloadSetup,
    reaper: &Reaper,
    member: &str,
    handed: &Handed,
) -> impl std::future::Future<Output = Result<String, String>> + Send + 'static {
    let exe = setup.relaunch.exe().to_path_buf();
    tracing::info!(member, binary = %exe.display(), "reload requested: checking that the new binary can take over");
    let saved = record(setup, handed, None)
        .save(&setup.record)
        .map_err(|e| format!("cannot write the handover record: {e}"));
    let argv = setup.relaunch.argv_with("--handover-check", &setup.record);
    let reaper = reaper.clone();
    async move {
        saved?;
        check(reaper, exe, argv).await
    }
}

/// Writes the record and execs (step 4); returns why not.
pub(super) fn try_exec(
    setup: &ReloadSetup,
    member: &str,
    handed: &Handed,
    stderr: Option<BorrowedFd<'_>>,
) -> String {
    let record = record(setup, handed, stderr);
    if let Err(e) = record.save(&setup.record) {
        return format!("cannot write the handover record: {e}");
    }
    let kept = stderr
        .into_iter()
        .chain(setup.metrics.iter().map(|(fd, _)| fd.as_fd()));
    for fd in kept {
        if let Err(e) = handover::set_inherit(fd, true) {
            return format!("cannot keep a descriptor open across the exec: {e}");
        }
    }
    #[cfg(feature = "failpoints")]
    kill_in_exec_window(record.etcd.as_ref());
    let argv = setup.relaunch.argv_with("--handover", &setup.record);
    tracing::info!(
        member,
        binary = %setup.relaunch.exe().display(),
        etcd_pid = record.etcd.as_ref().map(|e| e.pid),
        "re-executing the supervisor in place"
    );
    if let Err(e) = block_handled_signals(true) {
        return format!("cannot block signals for the exec: {e}");
    }
    let first = exec(setup.relaunch.exe(), &argv);
    tracing::warn!(member, binary = %setup.relaunch.exe().display(), error = %first, "exec of the new binary failed; re-executing the running one");
    let second = exec(Path::new("/proc/self/exe"), &argv);
    let _ = block_handled_signals(false);
    format!(
        "exec of {} failed ({first}), and of the running binary ({second})",
        setup.relaunch.exe().display()
    )
}

/// The test hook of [`KILL_IN_EXEC_WINDOW_ENV`]: SIGKILL etcd and wait until it is a
/// zombie, so its exit happens before the exec for sure.
#[cfg(feature = "failpoints")]
fn kill_in_exec_window(etcd: Option<&HandedEtcd>) {
    let (Some(etcd), Some(_)) = (etcd, std::env::var_os(KILL_IN_EXEC_WINDOW_ENV)) else {
        return;
    };
    tracing::warn!(
        etcd_pid = etcd.pid,
        "failpoint: killing etcd in the exec window"
    );
    let pid = nix::unistd::Pid::from_raw(etcd.pid as i32);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && handover::proc_stat(etcd.pid).is_ok_and(|s| s.state != 'Z')
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests;
