//! The exit policy: what an exit of etcd means for the supervisor (leave with a code, or
//! restart after a backoff). A plain function, so the policy is tested without processes.

use std::time::Duration;

use crate::config::Backoff;
use crate::process::reaper::ChildExit;

/// What the loop does after the child exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Leave with this process exit code.
    Exit(i32),
    /// Start etcd again after this delay.
    Restart(Duration),
}

/// Facts about the run that decide what an exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitContext {
    /// A stop was requested (SIGTERM/SIGINT to the supervisor).
    pub stop_requested: bool,
    /// The stop had to be escalated to SIGKILL.
    pub escalated: bool,
    /// We sent SIGKILL after seeing etcd's data closed (WAL and db locks free).
    pub data_closed: bool,
    /// etcd has answered /health true at least once since the supervisor started.
    pub ever_healthy: bool,
    /// Crashes since the last healthy period, including this one.
    pub crashes: u32,
}

/// The exit policy: a requested stop ends the supervisor with 0 when etcd stopped as asked
/// (code 0, death by the signal we forwarded, or death by the SIGKILL we sent once its data
/// was closed) and with etcd's own code otherwise; an etcd
/// that never became healthy fails fast, so a bad flag surfaces as a failed unit instead of
/// a restart loop; any other exit is a crash and is restarted with backoff.
pub fn on_exit(exit: ChildExit, ctx: ExitContext, backoff: &Backoff) -> AfterExit {
    if ctx.stop_requested {
        let clean = (exit.stopped_as_asked() && !ctx.escalated)
            || (ctx.data_closed && exit.is_signal(nix::sys::signal::Signal::SIGKILL));
        return AfterExit::Exit(if clean { 0 } else { exit.exit_code() });
    }
    if !ctx.ever_healthy {
        return AfterExit::Exit(exit.exit_code());
    }
    AfterExit::Restart(backoff.delay(ctx.crashes.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
    };

    fn ctx(stop_requested: bool, escalated: bool, ever_healthy: bool, crashes: u32) -> ExitContext {
        ExitContext {
            stop_requested,
            escalated,
            data_closed: false,
            ever_healthy,
            crashes,
        }
    }

    #[test]
    fn our_sigkill_after_the_data_was_closed_is_a_clean_stop() {
        let c = ExitContext {
            data_closed: true,
            ..ctx(true, false, true, 0)
        };
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGKILL), c, &BACKOFF),
            AfterExit::Exit(0)
        );
        // It may still have exited by itself first: also clean; its own failure is not.
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGTERM), c, &BACKOFF),
            AfterExit::Exit(0)
        );
        assert_eq!(on_exit(ChildExit::Code(3), c, &BACKOFF), AfterExit::Exit(3));
        // A SIGKILL nobody saw the data closed before is not.
        assert_eq!(
            on_exit(
                ChildExit::Signal(libc::SIGKILL),
                ctx(true, false, true, 0),
                &BACKOFF
            ),
            AfterExit::Exit(137)
        );
    }

    #[test]
    fn requested_stop_that_ends_by_our_sigterm_is_exit_zero() {
        let c = ctx(true, false, true, 0);
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGTERM), c, &BACKOFF),
            AfterExit::Exit(0)
        );
        assert_eq!(on_exit(ChildExit::Code(0), c, &BACKOFF), AfterExit::Exit(0));
        assert_eq!(on_exit(ChildExit::Code(3), c, &BACKOFF), AfterExit::Exit(3));
    }

    #[test]
    fn escalated_stop_reports_the_kill() {
        let c = ctx(true, true, true, 0);
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGKILL), c, &BACKOFF),
            AfterExit::Exit(137)
        );
    }

    #[test]
    fn never_healthy_fails_fast_with_etcds_code() {
        let c = ctx(false, false, false, 1);
        assert_eq!(on_exit(ChildExit::Code(2), c, &BACKOFF), AfterExit::Exit(2));
        assert_eq!(
            on_exit(ChildExit::Signal(libc::SIGSEGV), c, &BACKOFF),
            AfterExit::Exit(139)
        );
    }

    #[test]
    fn crash_after_healthy_restarts_with_growing_delay() {
        let delays: Vec<AfterExit> = (1..=3)
            .map(|n| {
                on_exit(
                    ChildExit::Signal(libc::SIGKILL),
                    ctx(false, false, true, n),
                    &BACKOFF,
                )
            })
            .collect();
        assert_eq!(
            delays,
            [
                AfterExit::Restart(Duration::from_secs(1)),
                AfterExit::Restart(Duration::from_secs(2)),
                AfterExit::Restart(Duration::from_secs(4)),
            ]
        );
    }
}
