//! Notifications to systemd (`sd_notify`): READY, RELOADING, STATUS, WATCHDOG, STOPPING.
//!
//! All calls are no-ops when `NOTIFY_SOCKET` is not set, so the supervisor behaves the same
//! under systemd, in a container, or in a terminal.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    fn send(&self, state: &[NotifyState<'_>]) {
        // A lost notification must not take the supervisor down; systemd's own timeouts
        // report what went missing.
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// Tells systemd the service is up (etcd answered /health true).
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Tells systemd a reload began; `READY=1` ends it (whether it re-executed or not).
    /// `MONOTONIC_USEC` is what `Type=notify-reload` (systemd 253+) requires with it.
    pub fn reloading(&self, status: &str) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            Err(e) => {
                tracing::debug!(error = %e, "no monotonic clock for MONOTONIC_USEC");
                self.send(&[NotifyState::Reloading, NotifyState::Status(status)]);
            }
        }
    }

    /// Updates the one-line status `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Pets the watchdog.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Tells systemd the service is shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping etcd")]);
    }

    /// The interval at which to pet the watchdog (half its timeout), if systemd enabled it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            Some(Duration::from_micros(usec / 2))
        } else {
            None
        }
    }
}
