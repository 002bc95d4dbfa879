//! Whether the cluster has auth enabled: a rolling upgrade from 3.4 to 3.5 with auth on is
//! not supported by etcd, so preflight has to know before anything stops.
//!
//! Not `Auth/AuthStatus`: 3.4 does not have it, and 3.5 proposes it through raft, so in a
//! mixed 3.4/3.5 cluster the 3.4 members apply an entry they do not know and crash
//! ("panic: not implemented", seen in this project's crash tests). A serializable range
//! without a token is answered locally by every version: served while auth is off,
//! refused with "user name is empty" once it is on.

use etcd_client::GetOptions;

use super::client::{classify_simple, Client, Fail, Retry};
use super::error::EtcdError;

impl Client {
    /// True when etcd's auth is enabled.
    pub async fn auth_enabled(&self) -> Result<bool, EtcdError> {
        let timeout = self.request_timeout();
        let mut tried = Vec::new();
        for endpoint in self.attempt_order() {
            // Key "\0", counted only, from the member's own state: no raft round, nothing read.
            let probe = |rpc| async move {
                Client::kv(&rpc)
                    .get(
                        vec![0u8],
                        Some(GetOptions::new().with_serializable().with_count_only()),
                    )
                    .await
            };
            match self.attempt(&endpoint, true, timeout, &probe).await {
                Ok(_) => return Ok(false),
                Err(Fail::Answer(e))
                    if e.is_unauthenticated()
                        || e.code() == Some(super::code::PERMISSION_DENIED) =>
                {
                    return Ok(true)
                }
                Err(fail) => match classify_simple(fail, &endpoint, timeout) {
                    Ok(reason) => tried.push((endpoint, reason)),
                    Err(err) => return Err(err),
                },
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }

    /// The roles of etcd user `name` (`Auth/UserGet`): vetting checks that the supervisor's
    /// own user holds `root` before any turn.
    pub async fn user_roles(&self, name: &str) -> Result<Vec<String>, EtcdError> {
        self.call(
            "user get",
            Retry::Idempotent,
            self.request_timeout(),
            |rpc| async move {
                let resp = rpc.auth_client().user_get(name).await?;
                Ok(resp.roles().to_vec())
            },
        )
        .await
    }
}
