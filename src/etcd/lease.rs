//! Lease calls: grant, one-shot keepalive, revoke, time-to-live, list (`/v3/lease/...`).
//!
//! A lease that is gone shows differently per call, and both are turned into `None` here:
//! keepalive answers 200 with no (or a 0) TTL, time-to-live answers TTL -1.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{decode, Client, Retry, Shape};
use super::error::EtcdError;
use super::wire::{b64_list, int, is_false, is_zero, ResponseHeader};

/// A lease granted by etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseGrant {
    /// The response header.
    pub header: ResponseHeader,
    /// The lease id.
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
    /// The TTL etcd granted, in seconds (etcd raises a TTL below its minimum).
    #[serde(rename = "TTL", with = "int")]
    pub ttl: i64,
}

/// A live lease's remaining and granted time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseTimeToLive {
    /// The response header.
    pub header: ResponseHeader,
    /// The lease id.
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
    /// Seconds left.
    #[serde(rename = "TTL", with = "int")]
    pub ttl: i64,
    /// The TTL it was granted with, in seconds.
    #[serde(rename = "grantedTTL", with = "int")]
    pub granted_ttl: i64,
    /// Keys attached to it (when asked for).
    #[serde(deserialize_with = "b64_list::deserialize")]
    pub keys: Vec<Vec<u8>>,
}

#[derive(Serialize)]
struct GrantRequest {
    #[serde(rename = "TTL", with = "int")]
    ttl: i64,
    #[serde(rename = "ID", with = "int", skip_serializing_if = "is_zero")]
    id: i64,
}

#[derive(Serialize)]
struct IdRequest {
    #[serde(rename = "ID", with = "int")]
    id: i64,
}

#[derive(Serialize)]
struct TimeToLiveRequest {
    #[serde(rename = "ID", with = "int")]
    id: i64,
    #[serde(skip_serializing_if = "is_false")]
    keys: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeepAliveResult {
    #[serde(rename = "TTL", with = "int")]
    ttl: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RevokeResponse {
    header: ResponseHeader,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeasesResponse {
    leases: Vec<LeaseStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeaseStatus {
    #[serde(rename = "ID", with = "int")]
    id: i64,
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
        let request = GrantRequest { ttl: ttl_secs, id };
        self.call("/v3/lease/grant", &request, Retry::Idempotent)
            .await
    }

    /// Renews a lease once: `Some(ttl_secs)` with its renewed TTL, `None` when the lease is
    /// gone (expired, revoked, unknown).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        let path = "/v3/lease/keepalive";
        // The keepalive is a stream; one POST with one message is answered with one line.
        let (endpoint, value) = self
            .call_value(
                path,
                &IdRequest { id },
                Retry::Idempotent,
                Shape::StreamFirst,
                self.request_timeout(),
            )
            .await?;
        let result: KeepAliveResult = decode(&endpoint, path, value)?;
        Ok((result.ttl > 0).then_some(result.ttl))
    }

    /// Revokes a lease; its keys are deleted. A lease that is already gone is an error for
    /// which [`EtcdError::is_lease_not_found`] is true (also after a repeat on another
    /// member whose first attempt did revoke it: treat it as revoked).
    pub async fn lease_revoke(&self, id: i64) -> Result<ResponseHeader, EtcdError> {
        let resp: RevokeResponse = self
            .call("/v3/lease/revoke", &IdRequest { id }, Retry::Idempotent)
            .await?;
        Ok(resp.header)
    }

    /// A lease's remaining time (and its keys when `keys`); `None` when the lease is gone
    /// (etcd answers TTL -1).
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<LeaseTimeToLive>, EtcdError> {
        let resp: LeaseTimeToLive = self
            .call(
                "/v3/lease/timetolive",
                &TimeToLiveRequest { id, keys },
                Retry::Idempotent,
            )
            .await?;
        Ok((resp.ttl >= 0).then_some(resp))
    }

    /// The ids of every live lease.
    pub async fn lease_list(&self) -> Result<Vec<i64>, EtcdError> {
        let resp: LeasesResponse = self
            .call(
                "/v3/lease/leases",
                &serde_json::json!({}),
                Retry::Idempotent,
            )
            .await?;
        Ok(resp.leases.into_iter().map(|l| l.id).collect())
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
    use serde_json::json;

    #[test]
    fn requests_use_upper_case_ttl_and_id() {
        assert_eq!(
            serde_json::to_value(GrantRequest { ttl: 10, id: 0 }).unwrap(),
            json!({"TTL":"10"})
        );
        assert_eq!(
            serde_json::to_value(GrantRequest { ttl: 30, id: 12345 }).unwrap(),
            json!({"TTL":"30","ID":"12345"})
        );
        assert_eq!(
            serde_json::to_value(TimeToLiveRequest { id: 7, keys: true }).unwrap(),
            json!({"ID":"7","keys":true})
        );
    }

    #[test]
    fn answers_parse() {
        let grant: LeaseGrant = serde_json::from_value(
            json!({"header":{"revision":"2"},"ID":"2501646281165512471","TTL":"10"}),
        )
        .unwrap();
        assert_eq!((grant.id, grant.ttl), (2_501_646_281_165_512_471, 10));
        let ttl: LeaseTimeToLive = serde_json::from_value(json!({
            "header":{},"ID":"2501646281165512471","TTL":"6","grantedTTL":"10","keys":["bGVhc2Vk"]
        }))
        .unwrap();
        assert_eq!((ttl.ttl, ttl.granted_ttl), (6, 10));
        assert_eq!(ttl.keys, vec![b"leased".to_vec()]);
        // Unknown lease on keepalive: no TTL field.
        let gone: KeepAliveResult =
            serde_json::from_value(json!({"header":{},"ID":"999"})).unwrap();
        assert_eq!(gone.ttl, 0);
        let gone: LeaseTimeToLive =
            serde_json::from_value(json!({"header":{},"ID":"12345","TTL":"-1"})).unwrap();
        assert_eq!(gone.ttl, -1);
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_secs(Duration::from_secs(10)), 10);
        assert_eq!(ttl_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(ttl_secs(Duration::ZERO), 0);
    }
}
