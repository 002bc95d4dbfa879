//! Lease calls: grant, keepalive, revoke, time-to-live, list (`etcdserverpb.Lease`).
//!
//! A lease is renewed over etcd's keepalive stream: the first renewal of a lease opens one
//! (on whichever member answers), later ones send one request on it and read one answer,
//! and a stream that broke or stopped answering is dropped and opened again, on another
//! member if need be. A lease that is gone is `None`: the keepalive answers TTL 0,
//! time-to-live answers TTL -1.

use std::time::Duration;

use etcd_client::{LeaseGrantOptions, LeaseTimeToLiveOptions};

use super::client::{Client, KeepAlive, Retry};
use super::error::EtcdError;
use super::kv::{header, ResponseHeader};

/// A lease granted by etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The response header.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// The TTL etcd granted, in seconds (etcd raises a TTL below its minimum).
    pub ttl: i64,
}

/// A live lease's remaining and granted time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// The response header.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// Seconds left.
    pub ttl: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// Keys attached to it (when asked for).
    pub keys: Vec<Vec<u8>>,
}

impl Client {
    /// Grants a lease of `ttl_secs` seconds with an id chosen by etcd.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant, EtcdError> {
        self.lease_grant_with_id(ttl_secs, 0).await
    }

    /// Grants a lease with a caller-chosen id (0: etcd chooses). When an answer is lost and
    /// the grant is repeated on another member, the first lease (if it was granted) simply
    /// expires after its TTL.
    pub async fn lease_grant_with_id(
        &self,
        ttl_secs: i64,
        id: i64,
    ) -> Result<LeaseGrant, EtcdError> {
        self.call(
            "lease grant",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc
                    .lease_client()
                    .grant(ttl_secs, Some(LeaseGrantOptions::new().with_id(id)))
                    .await?;
                Ok(LeaseGrant {
                    header: header(resp.header()),
                    id: resp.id(),
                    ttl: resp.ttl(),
                })
            },
        )
        .await
    }

    /// Renews a lease once: `Some(ttl_secs)` with its renewed TTL, `None` when the lease is
    /// gone (expired, revoked, unknown). Over the lease's keepalive stream (see the module
    /// header); bounded by the per-call timeout per member tried.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let timeout = self.request_timeout();
        let mut streams = self.keepalives().lock().await;
        if streams
            .get(&id)
            .is_some_and(|open| open.seat.should_move(&self.placement().mode()))
        {
            tracing::debug!(lease = id, "moving the keepalive stream (see `placement`)");
            streams.remove(&id);
        }
        if let Some(open) = streams.get_mut(&id) {
            match tokio::time::timeout(timeout, open.renew()).await {
                Ok(Ok(ttl)) => {
                    if ttl.is_none() {
                        streams.remove(&id);
                    }
                    return Ok(ttl);
                }
                Ok(Err(err)) => {
                    tracing::debug!(lease = id, %err, "keepalive stream broke; opening another");
                    streams.remove(&id);
                }
                Err(_) => {
                    tracing::debug!(
                        lease = id,
                        "keepalive stream did not answer; opening another"
                    );
                    streams.remove(&id);
                }
            }
        }
        // The stream stays open: on the local member, never while it steps aside (see
        // `placement`).
        let epoch = self.placement().mode().epoch;
        let opened = self
            .call_on(
                self.stream_order(),
                "lease keepalive",
                Retry::Idempotent,
                timeout,
                |endpoint, rpc| async move {
                    let (keeper, stream) = match rpc.lease_client().keep_alive(id).await {
                        Ok(open) => open,
                        // etcd-client's word for a first answer with TTL 0.
                        Err(etcd_client::Error::LeaseKeepAliveError(text))
                            if text.contains("not found") =>
                        {
                            return Ok(None)
                        }
                        Err(err) => return Err(err),
                    };
                    // Opening consumed the first answer; one more renewal says the TTL.
                    let mut open = KeepAlive::new(keeper, stream, self.seat(&endpoint, epoch));
                    let ttl = open.renew().await?;
                    Ok(ttl.map(|ttl| (open, ttl)))
                },
            )
            .await?;
        Ok(opened.map(|(open, ttl)| {
            streams.insert(id, open);
            ttl
        }))
    }

    /// Revokes a lease; its keys are deleted. A lease that is already gone is an error for
    /// which [`EtcdError::is_lease_not_found`] is true (also after a repeat on another
    /// member whose first attempt did revoke it: treat it as revoked).
    pub async fn lease_revoke(&self, id: i64) -> Result<ResponseHeader, EtcdError> {
        self.keepalives().lock().await.remove(&id);
        self.call(
            "lease revoke",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc.lease_client().revoke(id).await?;
                Ok(header(resp.header()))
            },
        )
        .await
    }

    /// A lease's remaining time (and its keys when `keys`); `None` when the lease is gone
    /// (etcd answers TTL -1).
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<LeaseTimeToLive>, EtcdError> {
        let resp = self
            .call(
                "lease time-to-live",
                Retry::Idempotent,
                self.request_timeout(),
                |rpc| async move {
                    let options = if keys {
                        LeaseTimeToLiveOptions::new().with_keys()
                    } else {
                        LeaseTimeToLiveOptions::new()
                    };
                    let resp = rpc.lease_client().time_to_live(id, Some(options)).await?;
                    Ok(LeaseTimeToLive {
                        header: header(resp.header()),
                        id: resp.id(),
                        ttl: resp.ttl(),
                        granted_ttl: resp.granted_ttl(),
                        keys: resp.keys().to_vec(),
                    })
                },
            )
            .await?;
        Ok((resp.ttl >= 0).then_some(resp))
    }

    /// The ids of every live lease.
    pub async fn lease_list(&self) -> Result<Vec<i64>, EtcdError> {
        self.call(
            "lease list",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc.lease_client().leases().await?;
                Ok(resp.leases().iter().map(|l| l.id()).collect())
            },
        )
        .await
    }
}

/// Seconds for a lease TTL, rounded up (a lease never lasts shorter than asked).
pub fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(10)), 10);
        assert_eq!(ttl_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(ttl_secs(Duration::ZERO), 0);
    }
}
