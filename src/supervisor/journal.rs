//! Writes the lifecycle's [`Note`]s as `tracing` events: one event per state change, with
//! the member, the version and durations as fields.

use super::lifecycle::Note;
use crate::versions::Version;

/// Logs `note` for `member`, whose etcd runs (or last ran) `version`.
pub fn write(note: &Note, member: &str, version: &Version) {
    match note {
        Note::Preparing => tracing::debug!(member, "preparing to start etcd"),
        Note::StartAbandoned(why) => {
            tracing::info!(member, reason = why.as_str(), "start of etcd abandoned")
        }
        Note::CannotStartForUpgrade(why) => {
            tracing::error!(member, error = %why, "cannot start etcd for the upgrade")
        }
        Note::CannotStartRetrying {
            why,
            crashes,
            delay,
        } => {
            tracing::error!(member, error = %why, crashes, delay_ms = delay.as_millis() as u64, "cannot start etcd; retrying after backoff")
        }
        Note::Started { pid } => tracing::info!(member, %version, pid, "etcd started"),
        Note::Adopted { pid, from } => tracing::info!(
            member,
            %version,
            etcd_pid = pid,
            from,
            to = env!("CARGO_PKG_VERSION"),
            "supervisor re-executed in place; etcd adopted, still running"
        ),
        Note::NoFastStop => {
            tracing::debug!(
                member,
                "etcd was never healthy; its stop is not ended early"
            )
        }
        Note::DataClosed(after) => tracing::debug!(
            member,
            after_ms = after.as_millis() as u64,
            "etcd's data is closed; ending the rest with SIGKILL"
        ),
        Note::CannotTell(why) => {
            tracing::info!(member, reason = %why, "cannot tell when etcd's data is closed; waiting for it to exit")
        }
        Note::Forwarding(sig) => {
            tracing::info!(member, signal = sig.as_str(), "forwarding signal to etcd")
        }
        Note::Dropped(sig) => tracing::info!(
            member,
            signal = sig.as_str(),
            "etcd is not running; signal dropped"
        ),
        Note::StopWhileDown { sig, starting } => tracing::info!(
            member,
            signal = sig.as_str(),
            starting,
            "stop requested while etcd is down; exiting"
        ),
        Note::Ready { took } => {
            let took_ms = took.as_millis() as u64;
            tracing::info!(member, %version, took_ms, "etcd is healthy; ready")
        }
        Note::HealthyAgain => tracing::info!(member, %version, "etcd is healthy again"),
        Note::Unhealthy => tracing::warn!(member, %version, "etcd is unhealthy"),
        Note::StoppedForUpgrade {
            stopped,
            data_closed,
        } => {
            let data_closed_ms = data_closed.map(|d| d.as_millis() as u64);
            let (exit, ended) = (stopped.exit, stopped.ended.as_str());
            let took_ms = stopped.took.as_millis() as u64;
            tracing::info!(member, %version, %exit, ended, took_ms, data_closed_ms, "etcd stopped for the upgrade");
        }
        Note::ExitedDuringTurn(exit) => {
            tracing::warn!(member, %version, %exit, "etcd exited during the upgrade")
        }
        Note::StoppedExiting {
            exit,
            code,
            ended,
            took,
            data_closed,
        } => {
            let data_closed_ms = data_closed.map(|d| d.as_millis() as u64);
            let took_ms = took.map(|t| t.as_millis() as u64);
            tracing::info!(member, %version, %exit, code, ended = ended.as_str(), took_ms, data_closed_ms, "etcd stopped; exiting");
        }
        Note::NeverHealthy { exit, code } => tracing::error!(member, %version, %exit, code,
            "etcd exited before it ever became healthy; not restarting (check etcd's log above for the cause)"),
        Note::Restarting {
            exit,
            crashes,
            delay,
        } => {
            tracing::error!(member, %version, %exit, crashes, delay_ms = delay.as_millis() as u64, "etcd exited unexpectedly; restarting after backoff")
        }
        Note::StopTimedOut(timeout) => {
            tracing::warn!(member, timeout = %humantime::format_duration(*timeout), "etcd did not stop in time; sending SIGKILL")
        }
        Note::ReloadIgnored => {
            tracing::info!(member, "reload ignored: the supervisor is stopping")
        }
        Note::ReloadUnderWay => tracing::info!(member, "reload already under way"),
        Note::CanTakeOver(said) => {
            tracing::info!(member, new = %said, "the new binary can take over; waiting until no upgrade turn is held")
        }
        Note::ReloadRefused(why) => tracing::error!(
            member,
            reason = why.as_str(),
            "reload refused: the new binary cannot take over; this supervisor keeps running"
        ),
        Note::DriverStandsDown(phase) => tracing::info!(
            member,
            phase = ?phase,
            "reload: the upgrade driver stands down; etcd keeps running"
        ),
        Note::ReloadWaits { phase, settled } => tracing::info!(
            member,
            phase = ?phase,
            etcd_settled = settled,
            "reload waits until no upgrade turn is held and etcd runs"
        ),
        Note::DriverLate => tracing::warn!(
            member,
            "the upgrade driver did not stand down in time; re-executing anyway"
        ),
    }
}
