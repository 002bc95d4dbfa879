//! Whether the cluster has auth enabled: a rolling upgrade from 3.4 to 3.5 with auth on is
//! not supported by etcd, so preflight has to know before anything stops.

use serde::Deserialize;

use super::client::{decode_body, Shape};
use super::error::EtcdError;
use super::Client;

#[derive(Deserialize)]
struct AuthStatus {
    #[serde(default)]
    enabled: bool,
}

impl Client {
    /// True when etcd's auth is enabled.
    ///
    /// 3.5 and later answer `/v3/auth/status`. 3.4 has no such path (404), so there an
    /// unauthenticated `/v3/auth/role/list` tells: it is served only while auth is off,
    /// and refused with "user name is empty" once it is on.
    pub async fn auth_enabled(&self) -> Result<bool, EtcdError> {
        match self
            .call_endpoint::<_, AuthStatus>(
                &self.attempt_order().first().cloned().unwrap_or_default(),
                "/v3/auth/status",
                &serde_json::json!({}),
            )
            .await
        {
            Ok(status) => return Ok(status.enabled),
            // Only a cluster with auth on asks who is calling.
            Err(e) if e.is_unauthenticated() => return Ok(true),
            Err(EtcdError::Http { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let mut last = None;
        for endpoint in self.attempt_order() {
            let path = "/v3/auth/role/list";
            let answer = self
                .post(
                    &endpoint,
                    path,
                    b"{}".to_vec(),
                    self.request_timeout(),
                    None,
                )
                .await;
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|source| EtcdError::Transport {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            return match decode_body(&endpoint, path, status, &body, Shape::Unary) {
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
