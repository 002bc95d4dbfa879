//! etcd's lock service (`/v3/lock/...`): the raw lock and unlock calls.
//!
//! The "turn" logic on top (checking the key really exists under a live lease, keeping the
//! lease alive) lives elsewhere. Facts it must design against:
//! - `lock` blocks until the lock is acquired; nothing is sent back meanwhile. The caller's
//!   timeout bounds it; when the call is abandoned, etcd removes the waiter's key.
//! - 3.4 answers a waiter whose lease expired while waiting with a key that does not exist;
//!   3.5 answers "mutex: session is expired" ([`EtcdError::is_lock_session_expired`]).
//! - With a lease that does not exist: [`EtcdError::is_lease_not_found`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{decode, Client, Retry, Shape};
use super::error::EtcdError;
use super::wire::{b64, int, ResponseHeader};

/// A lock held: its key (`name/<lease id in hex>`), owned by the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LockResponse {
    /// The response header.
    pub header: ResponseHeader,
    /// The key that holds the lock; give it to [`Client::unlock`].
    #[serde(with = "b64")]
    pub key: Vec<u8>,
}

#[derive(Serialize)]
struct LockRequest<'a> {
    #[serde(with = "b64")]
    name: &'a [u8],
    #[serde(with = "int")]
    lease: i64,
}

#[derive(Serialize)]
struct UnlockRequest<'a> {
    #[serde(with = "b64")]
    key: &'a [u8],
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UnlockResponse {
    header: ResponseHeader,
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
        let path = "/v3/lock/lock";
        if lease == 0 {
            return Err(EtcdError::InvalidRequest(
                "a lock needs a lease (lease 0 would make etcd grant one nobody keeps alive)"
                    .to_owned(),
            ));
        }
        let request = LockRequest {
            name: name.as_ref(),
            lease,
        };
        let (endpoint, value) = self
            .call_value(path, &request, Retry::Blocking, Shape::Unary, timeout)
            .await?;
        decode(&endpoint, path, value)
    }

    /// Releases a lock by its key (also succeeds when the key is already gone).
    pub async fn unlock(&self, key: impl AsRef<[u8]>) -> Result<ResponseHeader, EtcdError> {
        let request = UnlockRequest { key: key.as_ref() };
        let resp: UnlockResponse = self
            .call("/v3/lock/unlock", &request, Retry::Idempotent)
            .await?;
        Ok(resp.header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lock_request_and_answer() {
        assert_eq!(
            serde_json::to_value(LockRequest {
                name: b"upgrade-lock",
                lease: 2_501_646_281_165_512_483
            })
            .unwrap(),
            json!({"name":"dXBncmFkZS1sb2Nr","lease":"2501646281165512483"})
        );
        let resp: LockResponse = serde_json::from_value(json!({
            "header":{"revision":"10"},"key":"dXBncmFkZS1sb2NrLzIyYjdhMjA5ZDY4YzFmMjM="
        }))
        .unwrap();
        assert_eq!(resp.key, b"upgrade-lock/22b7a209d68c1f23");
        assert_eq!(resp.header.revision, 10);
    }
}
