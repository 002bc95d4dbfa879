//! Endpoints, per-call timeouts, and the raw HTTP calls every operation goes through.

use std::time::Duration;

use serde::Deserialize;

/// Errors talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The HTTP client could not be built (bad TLS material and the like).
    #[error("cannot set up the etcd client: {0}")]
    Setup(String),
    /// No endpoint answered.
    #[error("{endpoint}: {source}")]
    Transport {
        /// The endpoint that failed last.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client URLs, tried in order.
    pub endpoints: Vec<String>,
    /// Upper bound of one HTTP call.
    pub request_timeout: Duration,
}

/// A client for etcd's HTTP/JSON gateway.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

#[derive(Deserialize)]
struct HealthBody {
    health: String,
}

impl Client {
    /// Builds a client; no connection is made yet.
    pub fn new(config: ClientConfig) -> Result<Self, EtcdError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout.min(Duration::from_secs(2)))
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| EtcdError::Setup(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.config.endpoints
    }

    /// `GET /health` on one endpoint: `Ok(true)` only for `{"health":"true"}`.
    pub async fn health_of(&self, endpoint: &str) -> Result<bool, EtcdError> {
        let url = format!("{}/health", endpoint.trim_end_matches('/'));
        let transport = |source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let resp = self.http.get(url).send().await.map_err(transport)?;
        // /health answers 503 with a JSON body when unhealthy; the body decides, not the status.
        let body: HealthBody = resp.json().await.map_err(transport)?;
        Ok(body.health == "true")
    }
}
