//! Wakes a waiter when anything under the key prefix changes (the pause key, the lock's
//! keys, the members' records), by one etcd watch, instead of a fixed poll.
//!
//! A waiter always names a bound ([`Changes::wait`]): the watch makes it return as soon as
//! something changed; the bound is the poll it falls back to. When the watch breaks (every
//! member unreachable, the revision compacted, a refusal), the feed says so once, the
//! waiter's bound applies alone, and the feed opens a new watch after a backoff; the first
//! wake after that counts as a change, since changes may have been missed meanwhile. So a
//! broken watch costs at most the bound, never a missed change.
//!
//! Changes are counted, not kept: a waiter re-reads what it cares about after each wake.
//! A change between a waiter's read and its next wait is not lost: it counts against the
//! change seen last (see [`Changes::wait`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::etcd::Client;

/// First wait before a broken watch is opened again; doubled up to [`REOPEN_MAX`].
const REOPEN_FIRST: Duration = Duration::from_millis(500);

/// Longest wait before a broken watch is opened again.
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// Why [`Changes::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// Something under the prefix changed (or the watch came back after a break).
    Change,
    /// The bound passed first: the poll.
    Bound,
}

/// A watch of the key prefix feeding waiters; see the module header. Cheap to clone;
/// the watch ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Changes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The number of changes seen by the feed.
    count: watch::Receiver<u64>,
    /// The count the waiters have seen.
    seen: Mutex<u64>,
    /// Whether the watch is up now (for logs and tests).
    up: watch::Receiver<bool>,
    feed: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

impl Changes {
    /// Starts watching everything under `prefix` through `client` (from now on).
    pub fn start(client: &Client, prefix: &str) -> Self {
        let (count_tx, count) = watch::channel(0u64);
        let (up_tx, up) = watch::channel(false);
        let feed = tokio::spawn(feed(
            client.clone(),
            prefix.as_bytes().to_vec(),
            count_tx,
            up_tx,
        ));
        Self {
            inner: Arc::new(Inner {
                count,
                seen: Mutex::new(0),
                up,
                feed,
            }),
        }
    }

    /// Waits until something changed since the last wait returned, or `bound` passed.
    pub async fn wait(&self, bound: Duration) -> Woke {
        let mut count = self.inner.count.clone();
        let woke = tokio::time::timeout(bound, async {
            loop {
                let now = *count.borrow_and_update();
                {
                    let mut seen = self
                        .inner
                        .seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if now != *seen {
                        *seen = now;
                        return;
                    }
                }
                if count.changed().await.is_err() {
                    // The feed ended (it never does while `Inner` lives): poll only.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match woke {
            Ok(()) => Woke::Change,
            Err(_) => Woke::Bound,
        }
    }

    /// Whether the watch is up now.
    pub fn is_up(&self) -> bool {
        *self.inner.up.borrow()
    }

    /// Resolves once the watch is up (or never, while it cannot be opened).
    pub async fn until_up(&self) {
        let mut up = self.inner.up.clone();
        let _ = up.wait_for(|up| *up).await;
    }
}

/// The feed: counts every batch of events; when the watch fails, says so, waits, opens a
/// new one and counts one change for what may have been missed.
async fn feed(client: Client, prefix: Vec<u8>, count: watch::Sender<u64>, up: watch::Sender<bool>) {
    let mut backoff = REOPEN_FIRST;
    let mut broken_before = false;
    loop {
        let mut watch = client.watch_prefix(prefix.clone(), 0);
        let err = match watch.start().await {
            Err(err) => err,
            Ok(()) => {
                up.send_replace(true);
                backoff = REOPEN_FIRST;
                if broken_before {
                    tracing::info!(prefix = %String::from_utf8_lossy(&prefix), "watch of the supervisors' keys is back");
                    // What changed while it was down is unknown: wake the waiters.
                    count.send_modify(|c| *c += 1);
                    broken_before = false;
                }
                loop {
                    match watch.next().await {
                        Ok(_) => count.send_modify(|c| *c += 1),
                        Err(err) => break err,
                    }
                }
            }
        };
        up.send_replace(false);
        if !broken_before {
            tracing::warn!(prefix = %String::from_utf8_lossy(&prefix), error = %err, retry_ms = backoff.as_millis() as u64, "watch of the supervisors' keys broke; polling until it is back");
        } else {
            tracing::debug!(error = %err, "watch of the supervisors' keys still broken");
        }
        broken_before = true;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(REOPEN_MAX);
    }
}
