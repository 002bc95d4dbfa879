//! Endpoints, failover, timeouts, TLS and auth: the raw HTTP calls every operation goes through.
//!
//! Theory of operation:
//! - A [`Client`] holds a list of endpoints (client URLs). Clones share it, together with the
//!   endpoint that answered last (the next call starts there) and the auth token.
//! - Every `/v3` call is a `POST` of a JSON body. The answer's body decides success or error
//!   (`code`/`message`, read by `wire::api_error`); the HTTP status is never trusted,
//!   because it differs between etcd versions for the same error.
//! - A call moves on to the next endpoint when the current one cannot be reached, does not
//!   answer within the per-call timeout, or answers gRPC "Unavailable" (code 14). What may be
//!   repeated depends on the call (`Retry`): a transaction is not repeated once it may have
//!   reached etcd. When no endpoint could serve the call, the error lists each one and why.
//! - Every HTTP exchange has a timeout, so a call is bounded by
//!   `endpoints × request_timeout` (calls that block by design take their own limit).
//! - With credentials, a token from `/v3/auth/authenticate` goes in the `Authorization`
//!   header (the raw token, no "Bearer"); when etcd rejects it, a new one is fetched once.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::error::{code, describe_transport, EtcdError};
use super::grpc::TlsFiles;
use super::transport::{build_http, normalize_endpoint};
pub use super::transport::{ClientConfig, Credentials};
use super::wire::{self, api_error, first_value};

/// What a call may do when an endpoint fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to repeat: move on after connect errors, timeouts, broken answers and
    /// "Unavailable".
    Idempotent,
    /// Not safe to repeat (a transaction): move on only when the request cannot have reached
    /// etcd (connect error). Otherwise report [`EtcdError::OutcomeUnknown`].
    AtMostOnce,
    /// Blocks by design (lock): the timeout is the caller's, for the whole call; running out
    /// of it is [`EtcdError::Timeout`], not a reason to try another endpoint.
    Blocking,
}

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One JSON object.
    Unary,
    /// A server stream (NDJSON `{"result":..}` lines): the first line's `result`.
    StreamFirst,
}

/// A client for etcd's HTTP/JSON gateway. Cheap to clone; clones share endpoints and state.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    // No token, no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("request_timeout", &self.inner.request_timeout)
            .field("user", &self.inner.credentials.as_ref().map(|c| &c.user))
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    /// The configured endpoints, normalized; always first in `endpoints`.
    configured: Vec<String>,
    /// The endpoints in use: configured ones, then members' client URLs after a refresh.
    endpoints: RwLock<Vec<String>>,
    /// The endpoint that answered last.
    preferred: Mutex<Option<String>>,
    request_timeout: Duration,
    connect_timeout: Duration,
    tls: bool,
    /// For the gRPC snapshot, which connects on its own.
    tls_files: TlsFiles,
    credentials: Option<Credentials>,
    token: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct AuthenticateResponse {
    #[serde(default)]
    token: String,
}

#[derive(Serialize)]
struct AuthenticateRequest<'a> {
    name: &'a str,
    password: &'a str,
}

/// A failed attempt, and whether the request itself may have reached etcd.
struct RequestFailure {
    err: EtcdError,
    sent: bool,
}

impl RequestFailure {
    fn sent(err: EtcdError) -> Self {
        Self { err, sent: true }
    }

    fn not_sent(err: EtcdError) -> Self {
        Self { err, sent: false }
    }
}

/// What the failover loop does with an endpoint's failure.
enum Next {
    /// Try the next endpoint; the reason goes into [`EtcdError::AllEndpointsFailed`].
    Failover(String),
    /// Give up with this error.
    Stop(EtcdError),
}

impl Client {
    /// Builds a client; no connection is made yet. Fails on bad endpoint URLs and on
    /// unreadable or invalid TLS material.
    pub fn new(config: ClientConfig) -> Result<Self, EtcdError> {
        let tls = config.cacert.is_some() || config.cert.is_some();
        let mut configured: Vec<String> = Vec::new();
        for raw in &config.endpoints {
            let endpoint = normalize_endpoint(raw, tls)?;
            if !configured.contains(&endpoint) {
                configured.push(endpoint);
            }
        }
        if configured.is_empty() {
            return Err(EtcdError::Setup(
                "no etcd endpoints configured (--endpoints, or the member's client URLs)"
                    .to_owned(),
            ));
        }
        let http = build_http(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: RwLock::new(configured.clone()),
                configured,
                preferred: Mutex::new(None),
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout.min(config.request_timeout),
                tls,
                tls_files: TlsFiles {
                    cacert: config.cacert.clone(),
                    cert: config.cert.clone(),
                    key: config.key.clone(),
                },
                credentials: config.credentials,
                token: Mutex::new(None),
            }),
        })
    }

    /// The endpoints in use, configured ones first.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The local member's endpoint: the first configured one.
    pub fn local_endpoint(&self) -> &str {
        // `new` refuses an empty list.
        self.inner.configured.first().map_or("", String::as_str)
    }

    /// The per-call timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The TLS files and connect timeout, for connections made outside the HTTP client.
    pub(crate) fn connect_settings(&self) -> (&TlsFiles, Duration) {
        (&self.inner.tls_files, self.inner.connect_timeout)
    }

    /// Replaces the endpoints in use: configured ones first, then every other client URL
    /// in `urls`, in order, without duplicates. Returns the new list.
    pub(crate) fn set_discovered_endpoints(&self, urls: &[String]) -> Vec<String> {
        let mut list = self.inner.configured.clone();
        for url in urls {
            match normalize_endpoint(url, self.inner.tls) {
                Ok(endpoint) if !list.contains(&endpoint) => list.push(endpoint),
                Ok(_) => {}
                Err(err) => tracing::warn!(url, %err, "ignoring a member's client URL"),
            }
        }
        let mut endpoints = self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints.clone_from(&list);
        list
    }

    /// The endpoints in the order to try them: the one that answered last, then the rest.
    pub(crate) fn attempt_order(&self) -> Vec<String> {
        let endpoints = self.endpoints();
        let preferred = self
            .inner
            .preferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let start = preferred
            .and_then(|p| endpoints.iter().position(|e| *e == p))
            .unwrap_or(0);
        let mut order = endpoints[start..].to_vec();
        order.extend_from_slice(&endpoints[..start]);
        order
    }

    pub(crate) fn remember(&self, endpoint: &str) {
        let mut preferred = self
            .inner
            .preferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if preferred.as_deref() != Some(endpoint) {
            *preferred = Some(endpoint.to_owned());
        }
    }

    /// POSTs `req` to `path`, failing over as `retry` allows, and decodes the answer.
    pub(crate) async fn call<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        retry: Retry,
    ) -> Result<Resp, EtcdError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let (endpoint, value) = self
            .call_value(path, req, retry, Shape::Unary, self.inner.request_timeout)
            .await?;
        decode(&endpoint, path, value)
    }

    /// Like [`Client::call`] with an answer framed as `shape` and a timeout: per attempt for
    /// [`Retry::Idempotent`] and [`Retry::AtMostOnce`], for the whole call for
    /// [`Retry::Blocking`]. Returns the endpoint that answered and the answer.
    pub(crate) async fn call_value<Req>(
        &self,
        path: &str,
        req: &Req,
        retry: Retry,
        shape: Shape,
        timeout: Duration,
    ) -> Result<(String, Value), EtcdError>
    where
        Req: Serialize + ?Sized,
    {
        let body = encode(req)?;
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<(String, String)> = Vec::new();
        for endpoint in self.attempt_order() {
            let attempt_timeout = match retry {
                Retry::Blocking => deadline.saturating_duration_since(Instant::now()),
                Retry::Idempotent | Retry::AtMostOnce => timeout,
            };
            if attempt_timeout.is_zero() {
                return Err(EtcdError::Timeout {
                    endpoint,
                    operation: operation_name(path),
                    after: timeout,
                });
            }
            let result = self
                .exchange(&endpoint, path, &body, shape, attempt_timeout)
                .await;
            match result {
                Ok(value) => {
                    self.remember(&endpoint);
                    return Ok((endpoint, value));
                }
                Err(err) => match classify(err, retry, path, timeout) {
                    Next::Failover(reason) => {
                        tracing::debug!(%endpoint, path, %reason, "etcd endpoint failed; trying the next one");
                        tried.push((endpoint, reason));
                    }
                    Next::Stop(err) => return Err(err),
                },
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }

    /// POSTs `req` to `path` on one endpoint only (no failover) and decodes the answer.
    pub(crate) async fn call_endpoint<Req, Resp>(
        &self,
        endpoint: &str,
        path: &str,
        req: &Req,
    ) -> Result<Resp, EtcdError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let endpoint = &self.endpoint_url(endpoint)?;
        let body = encode(req)?;
        let value = self
            .exchange(
                endpoint,
                path,
                &body,
                Shape::Unary,
                self.inner.request_timeout,
            )
            .await
            .map_err(|failure| failure.err)?;
        decode(endpoint, path, value)
    }

    /// One request to one endpoint, with auth: a token is fetched when there is none, and
    /// fetched again once when etcd rejects it.
    async fn exchange(
        &self,
        endpoint: &str,
        path: &str,
        body: &[u8],
        shape: Shape,
        timeout: Duration,
    ) -> Result<Value, RequestFailure> {
        let mut fresh_token = false;
        loop {
            // Until the request itself goes out, nothing can have been applied.
            let token = self
                .token(endpoint)
                .await
                .map_err(RequestFailure::not_sent)?;
            let (status, bytes) = self
                .send(endpoint, path, body.to_vec(), timeout, token.as_deref())
                .await
                .map_err(RequestFailure::sent)?;
            match decode_body(endpoint, path, status, &bytes, shape) {
                Err(err)
                    if err.is_unauthenticated()
                        && self.inner.credentials.is_some()
                        && !fresh_token =>
                {
                    tracing::debug!(endpoint, %err, "etcd rejected the auth token; fetching a new one");
                    self.forget_token(token.as_deref());
                    fresh_token = true;
                }
                other => return other.map_err(RequestFailure::sent),
            }
        }
    }

    /// Sends one POST and reads the whole answer.
    async fn send(
        &self,
        endpoint: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<(u16, Vec<u8>), EtcdError> {
        let resp = self.post(endpoint, path, body, timeout, token).await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        Ok((status, bytes.to_vec()))
    }

    /// Sends one POST and returns the response with its body unread (for streams).
    pub(crate) async fn post(
        &self,
        endpoint: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<reqwest::Response, EtcdError> {
        let mut request = self
            .inner
            .http
            .post(format!("{endpoint}{path}"))
            .timeout(timeout)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token).map_err(|_| EtcdError::Auth {
                endpoint: endpoint.to_owned(),
                user: self.user().to_owned(),
                message: "etcd returned a token that is not a valid HTTP header value".to_owned(),
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        request.send().await.map_err(|source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        })
    }

    /// A `GET` of a plain path (`/health`, `/version`) on one endpoint, decoded as JSON
    /// whatever the status (etcd answers 503 with a JSON body when unhealthy).
    pub(crate) async fn get_json<Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
    ) -> Result<Resp, EtcdError> {
        let endpoint = &self.endpoint_url(endpoint)?;
        let transport = |source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let resp = self
            .inner
            .http
            .get(format!("{endpoint}{path}"))
            .timeout(self.inner.request_timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        let value = decode_body(endpoint, path, status, &bytes, Shape::Unary)?;
        decode(endpoint, path, value)
    }

    /// An endpoint given by a caller, normalized like the configured ones.
    pub(crate) fn endpoint_url(&self, endpoint: &str) -> Result<String, EtcdError> {
        normalize_endpoint(endpoint, self.inner.tls)
    }

    fn user(&self) -> &str {
        self.inner
            .credentials
            .as_ref()
            .map_or("", |c| c.user.as_str())
    }

    /// The auth token to send: `None` without credentials; fetched from `endpoint` when
    /// there is none yet.
    pub(crate) async fn token(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(None);
        };
        if let Some(token) = self
            .inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(Some(token));
        }
        let path = "/v3/auth/authenticate";
        let body = encode(&AuthenticateRequest {
            name: &credentials.user,
            password: &credentials.password,
        })?;
        let (status, bytes) = self
            .send(endpoint, path, body, self.inner.request_timeout, None)
            .await?;
        let answer = decode_body(endpoint, path, status, &bytes, Shape::Unary)
            .and_then(|value| decode::<AuthenticateResponse>(endpoint, path, value));
        let token = match answer {
            Ok(resp) if !resp.token.is_empty() => resp.token,
            Ok(_) => {
                return Err(EtcdError::Auth {
                    endpoint: endpoint.to_owned(),
                    user: credentials.user.clone(),
                    message: "etcd returned no token".to_owned(),
                })
            }
            // Unavailable: this member cannot serve now; let failover try another one.
            Err(err) if err.is_unavailable() => return Err(err),
            Err(EtcdError::Api { message, code, .. }) => {
                return Err(EtcdError::Auth {
                    endpoint: endpoint.to_owned(),
                    user: credentials.user.clone(),
                    message: format!("{message} (code {code}, {})", code::name(code)),
                })
            }
            Err(err) => return Err(err),
        };
        *self
            .inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        Ok(Some(token))
    }

    /// Drops the cached token if it is still `used` (another call may have replaced it).
    pub(crate) fn forget_token(&self, used: Option<&str>) {
        let mut token = self
            .inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if token.as_deref() == used {
            *token = None;
        }
    }
}

/// Serializes a request body.
pub(crate) fn encode<Req: Serialize + ?Sized>(req: &Req) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(req).map_err(|e| EtcdError::Setup(format!("cannot encode a request: {e}")))
}

/// Decodes an answer (already checked for errors) into its type.
pub(crate) fn decode<Resp: DeserializeOwned>(
    endpoint: &str,
    path: &str,
    value: Value,
) -> Result<Resp, EtcdError> {
    let text = value.to_string();
    serde_json::from_value(value).map_err(|e| EtcdError::Decode {
        endpoint: endpoint.to_owned(),
        path: path.to_owned(),
        reason: format!("{e}; body: {}", wire::excerpt(text.as_bytes())),
    })
}

/// Reads a body: an etcd error (from `code`/`message`, whatever the HTTP status) becomes
/// [`EtcdError::Api`]; a body that is not JSON becomes [`EtcdError::Http`] (non-2xx) or
/// [`EtcdError::Decode`].
pub(crate) fn decode_body(
    endpoint: &str,
    path: &str,
    status: u16,
    body: &[u8],
    shape: Shape,
) -> Result<Value, EtcdError> {
    let value = match first_value(body) {
        Ok(value) => value,
        Err(e) if (200..300).contains(&status) => {
            return Err(EtcdError::Decode {
                endpoint: endpoint.to_owned(),
                path: path.to_owned(),
                reason: format!("not JSON ({e}): {:?}", wire::excerpt(body)),
            })
        }
        Err(_) => {
            return Err(EtcdError::Http {
                endpoint: endpoint.to_owned(),
                path: path.to_owned(),
                status,
                body: wire::excerpt(body),
            })
        }
    };
    if let Some((code, message)) = api_error(&value) {
        return Err(EtcdError::Api {
            endpoint: endpoint.to_owned(),
            code,
            message,
        });
    }
    match shape {
        Shape::Unary => Ok(value),
        Shape::StreamFirst => match value {
            Value::Object(mut obj) => match obj.remove("result") {
                Some(result) => Ok(result),
                None => Err(EtcdError::Decode {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    reason: format!("a stream line without \"result\": {}", wire::excerpt(body)),
                }),
            },
            _ => Err(EtcdError::Decode {
                endpoint: endpoint.to_owned(),
                path: path.to_owned(),
                reason: format!("not a JSON object: {}", wire::excerpt(body)),
            }),
        },
    }
}

/// Decides whether a failed attempt moves on to the next endpoint.
fn classify(failure: RequestFailure, retry: Retry, path: &str, timeout: Duration) -> Next {
    let RequestFailure { err, sent } = failure;
    // Refused before it was executed, whatever it was: a voter can serve it.
    if err.is_learner_refusal() {
        return Next::Failover("a learner serves no such request".to_owned());
    }
    if !sent {
        // Fetching the token failed: the request never left, so any call may move on when
        // the member is unreachable or unavailable.
        return match err {
            EtcdError::Transport { source, .. } => Next::Failover(describe_transport(&source)),
            err if err.is_unavailable() => Next::Failover(format!(
                "unavailable: {}",
                err.api_message().unwrap_or_default()
            )),
            other => Next::Stop(other),
        };
    }
    match err {
        EtcdError::Transport { source, endpoint } => {
            let mut reason = describe_transport(&source);
            if source.is_timeout() && retry != Retry::Blocking {
                reason = format!("{reason} after {}", humantime::format_duration(timeout));
            }
            if source.is_connect() {
                return Next::Failover(reason);
            }
            match retry {
                Retry::Idempotent => Next::Failover(reason),
                Retry::Blocking if source.is_timeout() => Next::Stop(EtcdError::Timeout {
                    endpoint,
                    operation: operation_name(path),
                    after: timeout,
                }),
                Retry::Blocking => Next::Failover(reason),
                Retry::AtMostOnce => Next::Stop(EtcdError::OutcomeUnknown { endpoint, reason }),
            }
        }
        err @ EtcdError::Api { .. } if err.is_unavailable() && retry != Retry::AtMostOnce => {
            let message = err.api_message().unwrap_or_default().to_owned();
            Next::Failover(format!("unavailable: {message}"))
        }
        other => Next::Stop(other),
    }
}

/// A short name of the operation behind a path, for timeout messages.
fn operation_name(path: &str) -> &'static str {
    match path {
        "/v3/lock/lock" => "lock",
        "/v3/lock/unlock" => "unlock",
        "/v3/maintenance/snapshot" => "snapshot",
        _ => "the request",
    }
}

#[cfg(test)]
mod tests;
