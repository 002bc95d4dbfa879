//! Progress lines for long copies and re-reads: one every 64 MiB or every 2 s, whichever
//! comes first, so an operator watching a multi-GB backup sees it move (and how fast)
//! without a line per file.

use std::time::{Duration, Instant};

const EVERY_BYTES: u64 = 64 * 1024 * 1024;
const EVERY: Duration = Duration::from_secs(2);

/// Counts bytes of one long operation and logs now and then.
#[derive(Debug)]
pub(crate) struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    logged_at: Instant,
    logged_bytes: u64,
}

impl Progress {
    /// Starts counting `what` (e.g. "copying the data dir"), `total` bytes expected.
    pub(crate) fn new(what: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self {
            what,
            total,
            done: 0,
            started: now,
            logged_at: now,
            logged_bytes: 0,
        }
    }

    /// `n` more bytes done.
    pub(crate) fn add(&mut self, n: u64) {
        self.done += n;
        if self.done - self.logged_bytes >= EVERY_BYTES || self.logged_at.elapsed() >= EVERY {
            self.logged_at = Instant::now();
            self.logged_bytes = self.done;
            tracing::info!(
                bytes = self.done,
                total = self.total,
                rate_mib_s = format!("{:.1}", self.rate_mib_s()),
                "backup: {} ({} of {} MiB)",
                self.what,
                self.done / (1024 * 1024),
                self.total / (1024 * 1024),
            );
        }
    }

    /// Bytes done so far.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Average rate so far, MiB/s.
    pub(crate) fn rate_mib_s(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        self.done as f64 / (1024.0 * 1024.0) / secs
    }
}
