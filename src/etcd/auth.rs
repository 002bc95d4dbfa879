//! Whether the cluster has auth enabled: a rolling upgrade from 3.4 to 3.5 with auth on is
//! not supported by etcd, so preflight has to know before anything stops. And the roles of
//! the user the supervisor logs in as (etcd lets a user read its own record).
//!
//! Not `/v3/auth/status`: 3.4 does not have it, and 3.5 proposes it through raft, so in a
//! mixed 3.4/3.5 cluster the 3.4 members apply an entry they do not know and crash
//! ("panic: not implemented", seen in this project's crash tests). A serializable range
//! without credentials is answered locally by every version: served while auth is off,
//! refused with "user name is empty" once it is on.

use super::client::{decode_body, Retry, Shape};
use super::error::EtcdError;
use super::Client;

impl Client {
    /// True when etcd's auth is enabled.
    pub async fn auth_enabled(&self) -> Result<bool, EtcdError> {
        let path = "/v3/kv/range";
        // Key "\0", counted only, from the member's own state: no raft round, nothing read.
        let body = br#"{"key":"AA==","serializable":true,"count_only":true}"#.to_vec();
        let mut last = None;
        for endpoint in self.attempt_order() {
            let response = match self
                .post(&endpoint, path, body.clone(), self.request_timeout(), None)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let status = response.status().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|source| EtcdError::Transport {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            return match decode_body(&endpoint, path, status, &bytes, Shape::Unary) {
                Ok(_) => Ok(false),
                Err(e)
                    if e.is_unauthenticated()
                        || e.code() == Some(super::code::PERMISSION_DENIED) =>
                {
                    Ok(true)
                }
                Err(e) => Err(e),
            };
        }
        Err(last.unwrap_or_else(|| EtcdError::InvalidRequest("no endpoint to ask".into())))
    }
}

/// The answer of `/v3/auth/user/get`: only the roles are read.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct UserGet {
    roles: Vec<String>,
}

impl Client {
    /// The roles of etcd user `name` (etcd answers a user about itself without the admin
    /// role: `authApplierV3.UserGet`, 3.4-3.7).
    pub async fn user_roles(&self, name: &str) -> Result<Vec<String>, EtcdError> {
        let answer: UserGet = self
            .call(
                "/v3/auth/user/get",
                &serde_json::json!({ "name": name }),
                Retry::Idempotent,
            )
            .await?;
        Ok(answer.roles)
    }
}
