//! etcd's lock service (`v3lockpb.Lock`): the raw lock and unlock calls.
//!
//! The "turn" logic on top (checking the key really exists under a live lease, keeping the
//! lease alive) lives elsewhere. Facts it must design against:
//! - `lock` blocks until the lock is acquired; nothing is sent back meanwhile. The caller's
//!   timeout bounds it; when the call is abandoned, etcd removes the waiter's key.
//! - 3.4 answers a waiter whose lease expired while waiting with a key that does not exist;
//!   3.5 answers "mutex: session is expired" ([`EtcdError::is_lock_session_expired`]).
//! - With a lease that does not exist: [`EtcdError::is_lease_not_found`].
use std::time::Duration;

use etcd_client::LockOptions;

use super::client::{Client, Retry};
use super::error::EtcdError;
use super::kv::{header, ResponseHeader};

/// A lock held: its key (`name/<lease id in hex>`), owned by the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockResponse {
    /// The response header.
    pub header: ResponseHeader,
    /// The key that holds the lock; give it to [`Client::unlock`].
    pub key: Vec<u8>,
}

impl Client {
    /// Acquires the lock `name` for `lease`, waiting up to `timeout` while another lease
    /// holds it ([`EtcdError::Timeout`] then). Moves to another member only when one cannot
    /// be reached or is unavailable; the lease's waiter key makes a repeat harmless.
    ///
    /// `lease` must be a live lease the caller keeps alive. Lease 0 is refused: etcd would
    /// grant its own 60 s lease that nobody keeps alive.
    pub async fn lock(
        &self,
        name: impl AsRef<[u8]>,
        lease: i64,
        timeout: Duration,
    ) -> Result<LockResponse, EtcdError> {
        if lease == 0 {
            return Err(EtcdError::InvalidRequest(
                "a lock needs a lease (lease 0 would make etcd grant one nobody keeps alive)"
                    .to_owned(),
            ));
        }
        let name = name.as_ref();
        // A queued lock call stays open until the turn comes: like a stream, on the local
        // member, whose stop never waits for another supervisor (see `placement`).
        self.call_on(
            self.stream_order(),
            "lock",
            Retry::Blocking,
            timeout,
            |_, rpc| async move {
                let resp = rpc
                    .lock_client()
                    .lock(name.to_vec(), Some(LockOptions::new().with_lease(lease)))
                    .await?;
                Ok(LockResponse {
                    header: header(resp.header()),
                    key: resp.key().to_vec(),
                })
            },
        )
        .await
    }

    /// Releases a lock by its key (also succeeds when the key is already gone).
    pub async fn unlock(&self, key: impl AsRef<[u8]>) -> Result<ResponseHeader, EtcdError> {
        let key = key.as_ref();
        self.call(
            "unlock",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc.lock_client().unlock(key.to_vec()).await?;
                Ok(header(resp.header()))
            },
        )
        .await
    }
}
