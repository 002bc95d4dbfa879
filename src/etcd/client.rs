//! Endpoints, failover, timeouts, TLS and auth: every gRPC call goes through [`Client::call`].
//!
//! Theory of operation:
//! - A [`Client`] holds a list of endpoints (client URLs). Clones share it, together with the
//!   endpoint that answered last (the next call starts there), one gRPC channel per member
//!   and its auth token.
//! - Each member has its own `etcd_client::Client` on its own tonic channel (connected on
//!   first use, again after a break): which member a call goes to, and whether it is repeated
//!   on another one, is decided here, never by a load balancer.
//! - A call moves on to the next endpoint when the current one cannot be reached, does not
//!   answer within the per-call timeout, or answers gRPC "Unavailable" (code 14). What may be
//!   repeated depends on the call (`Retry`): a transaction is not repeated once it may have
//!   reached etcd. When no endpoint could serve the call, the error lists each one and why.
//! - Every attempt has a timeout, so a call is bounded by `endpoints × request_timeout`
//!   (calls that block by design take their own limit). Dropping an attempt resets its
//!   HTTP/2 stream, which cancels the call in etcd.
//! - With credentials, a member's client authenticates when it is first used (a wrong
//!   password is [`EtcdError::Auth`]); etcd-client puts the token in every request's
//!   metadata and, when etcd answers "invalid auth token" (expired), authenticates again and
//!   repeats the request once (a request refused for its token was not applied).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::{code, describe_transport, EtcdError};
use super::placement::{Seat, StreamPlacement};
use super::transport::{build_http, grpc_channel, grpc_tls, normalize_endpoint};
pub use super::transport::{ClientConfig, Credentials};

/// Largest answer accepted from etcd (a range over many keys). etcd's own limit on what it
/// sends is 2 GiB; tonic's default, 4 MiB, would refuse a large prefix read.
const MAX_ANSWER: usize = 512 * 1024 * 1024;

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

/// The gRPC client of one member.
pub(crate) type Rpc = etcd_client::Client;

/// A client for etcd's gRPC API. Cheap to clone; clones share endpoints and state.
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
    /// For the plain HTTP paths (`/health`, `/version`).
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
    grpc_tls: Option<tonic::transport::ClientTlsConfig>,
    credentials: Option<Credentials>,
    /// Each member's gRPC client, by (endpoint, anonymous).
    rpcs: Mutex<HashMap<(String, bool), Rpc>>,
    /// The open keepalive stream of each lease kept alive through this client.
    keepalives: tokio::sync::Mutex<HashMap<i64, KeepAlive>>,
    /// Where long-lived calls sit (see [`placement`]).
    placement: StreamPlacement,
}

/// An open keepalive stream of one lease.
pub(crate) struct KeepAlive {
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
    /// Its place; the stream moves when the placement says so.
    pub(crate) seat: Seat,
}

impl KeepAlive {
    pub(crate) fn new(
        keeper: etcd_client::LeaseKeeper,
        stream: etcd_client::LeaseKeepAliveStream,
        seat: Seat,
    ) -> Self {
        Self {
            keeper,
            stream,
            seat,
        }
    }

    /// One renewal on the stream: `Some(ttl)`, `None` when the lease is gone.
    pub(crate) async fn renew(&mut self) -> Result<Option<i64>, etcd_client::Error> {
        self.keeper.keep_alive().await?;
        match self.stream.message().await? {
            Some(resp) => Ok((resp.ttl() > 0).then_some(resp.ttl())),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "etcd closed the keepalive stream".to_owned(),
            )),
        }
    }
}

/// An attempt on one endpoint that failed, and what that allows.
pub(crate) enum Fail {
    /// The request cannot have reached etcd (no connection, TLS refused, no token).
    NotSent(EtcdError),
    /// No answer within the attempt's time.
    TimedOut,
    /// The connection broke after the request went out.
    Broken(EtcdError),
    /// etcd answered with an error.
    Answer(EtcdError),
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
        // reqwest checks the PEM files (and says which one is wrong); the gRPC side reads
        // the same files.
        let http = build_http(&config)?;
        let grpc_tls = grpc_tls(&config)?;
        let placement = StreamPlacement::new(configured.first().cloned().unwrap_or_default());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: RwLock::new(configured.clone()),
                configured,
                preferred: Mutex::new(None),
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout.min(config.request_timeout),
                tls,
                grpc_tls,
                credentials: config.credentials,
                rpcs: Mutex::new(HashMap::new()),
                keepalives: tokio::sync::Mutex::new(HashMap::new()),
                placement,
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

    /// Where this client's long-lived calls sit; shared with whoever stops the local member
    /// (see [`placement`]).
    pub fn placement(&self) -> StreamPlacement {
        self.inner.placement.clone()
    }

    /// The order for a long-lived call (a watch, a lease keepalive, a queued lock): the
    /// local member first, never the one the placement avoids (see `placement::order`).
    pub(crate) fn stream_order(&self) -> Vec<String> {
        self.inner.placement.order(self.attempt_order())
    }

    /// The seat of a long-lived call opened on `endpoint`, ordered under the placement of
    /// `epoch`.
    pub(crate) fn seat(&self, endpoint: &str, epoch: u64) -> Seat {
        self.inner.placement.seat(endpoint, epoch)
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

    /// Runs `op` against the members in attempt order, failing over as `retry` allows,
    /// within `timeout` per attempt ([`Retry::Idempotent`], [`Retry::AtMostOnce`]) or for
    /// the whole call ([`Retry::Blocking`]). `operation` names it in timeout messages.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        retry: Retry,
        timeout: Duration,
        op: F,
    ) -> Result<T, EtcdError>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(self.attempt_order(), operation, retry, timeout, |_, rpc| {
            op(rpc)
        })
        .await
    }

    /// [`Self::call`] over the endpoints in `order`; `op` is also told which endpoint it
    /// runs on.
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        order: Vec<String>,
        operation: &'static str,
        retry: Retry,
        timeout: Duration,
        op: F,
    ) -> Result<T, EtcdError>
    where
        F: Fn(String, Rpc) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<(String, String)> = Vec::new();
        for endpoint in order {
            let attempt_timeout = match retry {
                Retry::Blocking => deadline.saturating_duration_since(Instant::now()),
                Retry::Idempotent | Retry::AtMostOnce => timeout,
            };
            if attempt_timeout.is_zero() {
                return Err(EtcdError::Timeout {
                    endpoint,
                    operation,
                    after: timeout,
                });
            }
            let here = |rpc| op(endpoint.clone(), rpc);
            match self.attempt(&endpoint, false, attempt_timeout, &here).await {
                Ok(value) => {
                    self.remember(&endpoint);
                    return Ok(value);
                }
                Err(fail) => match classify(fail, retry, &endpoint, operation, timeout) {
                    Next::Failover(reason) => {
                        tracing::debug!(%endpoint, operation, %reason, "etcd endpoint failed; trying the next one");
                        tried.push((endpoint, reason));
                    }
                    Next::Stop(err) => return Err(err),
                },
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }

    /// Runs `op` on one endpoint only (no failover), within the per-call timeout.
    pub(crate) async fn call_endpoint<T, F, Fut>(
        &self,
        endpoint: &str,
        operation: &'static str,
        op: F,
    ) -> Result<T, EtcdError>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let endpoint = &self.endpoint_url(endpoint)?;
        let timeout = self.inner.request_timeout;
        self.attempt(endpoint, false, timeout, &op)
            .await
            .map_err(|fail| match fail {
                Fail::TimedOut => EtcdError::Timeout {
                    endpoint: endpoint.clone(),
                    operation,
                    after: timeout,
                },
                Fail::NotSent(e) | Fail::Broken(e) | Fail::Answer(e) => e,
            })
    }

    /// One attempt on one endpoint: its client (authenticated first when needed), then `op`,
    /// all within `timeout`.
    pub(crate) async fn attempt<T, F, Fut>(
        &self,
        endpoint: &str,
        anonymous: bool,
        timeout: Duration,
        op: &F,
    ) -> Result<T, Fail>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let rpc = match tokio::time::timeout(timeout, self.rpc(endpoint, anonymous)).await {
            Ok(Ok(rpc)) => rpc,
            Ok(Err(err)) => return Err(Fail::NotSent(err)),
            Err(_) => return Err(Fail::TimedOut),
        };
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, op(rpc)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(tls_hint(convert(endpoint, err))),
            Err(_) => Err(Fail::TimedOut),
        }
    }

    /// The gRPC client of `endpoint`: made (and, with credentials, authenticated) on first
    /// use, then shared. `anonymous`: one that never sends a token.
    pub(crate) async fn rpc(&self, endpoint: &str, anonymous: bool) -> Result<Rpc, EtcdError> {
        let anonymous = anonymous || self.inner.credentials.is_none();
        let key = (endpoint.to_owned(), anonymous);
        if let Some(rpc) = self.rpcs().get(&key) {
            return Ok(rpc.clone());
        }
        // Not under the lock: authenticating is a call to etcd, and another member's
        // client must not wait for it.
        let rpc = self.connect(endpoint, anonymous).await?;
        let mut rpcs = self.rpcs();
        Ok(rpcs.entry(key).or_insert(rpc).clone())
    }

    /// A gRPC client of `endpoint` on a connection of its own, not shared, for a transfer
    /// that may stall on its reader: one HTTP/2 connection's receive window is shared by its
    /// streams, so a snapshot whose writer waits on a busy disk would hold up the turn
    /// lease's keepalive answers on the same connection until the lease expired.
    pub(crate) async fn rpc_own(&self, endpoint: &str) -> Result<Rpc, EtcdError> {
        self.connect(endpoint, self.inner.credentials.is_none())
            .await
    }

    /// A new connection to `endpoint`, authenticated unless `anonymous`.
    async fn connect(&self, endpoint: &str, anonymous: bool) -> Result<Rpc, EtcdError> {
        let channel = grpc_channel(
            endpoint,
            self.inner.grpc_tls.as_ref(),
            self.inner.connect_timeout,
        )?;
        let mut options = etcd_client::ConnectOptions::new();
        if let (Some(credentials), false) = (&self.inner.credentials, anonymous) {
            options = options
                .with_user(credentials.user.clone(), credentials.password.clone())
                .with_auto_token_refresh(true);
        }
        Rpc::from_channel(etcd_client::Channel::Tonic(channel), Some(options))
            .await
            .map_err(|err| self.auth_error(endpoint, err))
    }

    /// The open keepalive streams, by lease.
    pub(crate) fn keepalives(&self) -> &tokio::sync::Mutex<HashMap<i64, KeepAlive>> {
        &self.inner.keepalives
    }

    fn rpcs(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Rpc>> {
        self.inner
            .rpcs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An authentication that failed: etcd's refusal is [`EtcdError::Auth`]; a member that
    /// cannot be reached or cannot serve stays what it is, so that failover moves on.
    fn auth_error(&self, endpoint: &str, err: etcd_client::Error) -> EtcdError {
        let err = match convert(endpoint, err) {
            Fail::Answer(err) => err,
            Fail::NotSent(err) | Fail::Broken(err) => return err,
            Fail::TimedOut => {
                return EtcdError::Timeout {
                    endpoint: endpoint.to_owned(),
                    operation: "authentication",
                    after: self.inner.request_timeout,
                }
            }
        };
        match err {
            err if err.is_unavailable() => err,
            EtcdError::Api { code, message, .. } => EtcdError::Auth {
                endpoint: endpoint.to_owned(),
                user: self.user().to_owned(),
                message: format!("{message} (code {code}, {})", code::name(code)),
            },
            other => other,
        }
    }

    /// The tonic settings every member's KV client gets.
    pub(crate) fn kv(rpc: &Rpc) -> etcd_client::KvClient {
        rpc.kv_client().max_decoding_message_size(MAX_ANSWER)
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
        serde_json::from_slice(&bytes).map_err(|e| {
            let body = excerpt(&bytes);
            if (200..300).contains(&status) {
                EtcdError::Decode {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    reason: format!("{e}; body: {body}"),
                }
            } else {
                EtcdError::Http {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    status,
                    body,
                }
            }
        })
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
}

/// An excerpt of a body for messages: at most 200 characters, lossy UTF-8.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Sorts an etcd-client error into what it allows: etcd's own answer (a status without a
/// cause below it), or a failure of the connection, before or after the request left.
pub(crate) fn convert(endpoint: &str, err: etcd_client::Error) -> Fail {
    let grpc = |reason: String| EtcdError::Grpc {
        endpoint: endpoint.to_owned(),
        reason,
    };
    match err {
        etcd_client::Error::GRpcStatus(status) => match std::error::Error::source(&status) {
            // tonic puts the transport's error below the status it made of it.
            Some(cause) => {
                let reason = describe_cause(status.message(), cause);
                if is_connect_failure(cause) {
                    Fail::NotSent(grpc(reason))
                } else {
                    Fail::Broken(grpc(reason))
                }
            }
            None => Fail::Answer(EtcdError::Api {
                endpoint: endpoint.to_owned(),
                code: status.code() as i32,
                message: status.message().to_owned(),
            }),
        },
        etcd_client::Error::TransportError(e) => {
            Fail::NotSent(grpc(describe_cause("transport error", &e)))
        }
        etcd_client::Error::InvalidArgs(text) | etcd_client::Error::EndpointError(text) => {
            Fail::Answer(EtcdError::InvalidRequest(text))
        }
        etcd_client::Error::InvalidUri(e) => Fail::Answer(EtcdError::Setup(e.to_string())),
        etcd_client::Error::InvalidMetadataValue(_) => Fail::Answer(EtcdError::Auth {
            endpoint: endpoint.to_owned(),
            user: String::new(),
            message: "etcd returned a token that is not valid metadata".to_owned(),
        }),
        other => Fail::Broken(grpc(other.to_string())),
    }
}

/// A TLS member that drops the connection right after the handshake (TLS 1.3 sends the
/// refusal of a missing client certificate only then, and HTTP/2 sees a broken pipe first):
/// says so, so that the message points at the certificate.
fn tls_hint(fail: Fail) -> Fail {
    let hint = |err: EtcdError| {
        match err {
        EtcdError::Grpc { endpoint, reason }
            if endpoint.starts_with("https://")
                && ["broken pipe", "connection reset", "closed", "eof"]
                    .iter()
                    .any(|n| reason.to_lowercase().contains(n)) =>
        {
            EtcdError::Grpc {
                endpoint,
                reason: format!(
                    "{reason} (the member closed the TLS connection: does it require a client certificate, --cert and --key?)"
                ),
            }
        }
        other => other,
    }
    };
    match fail {
        Fail::NotSent(err) => Fail::NotSent(hint(err)),
        Fail::Broken(err) => Fail::Broken(hint(err)),
        other => other,
    }
}

/// True when the chain of causes says the connection was never made: the request did not
/// leave (refused, unreachable, TLS handshake refused, connect timeout).
fn is_connect_failure(cause: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(cause);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable
            ) {
                return true;
            }
        }
        let text = err.to_string().to_lowercase();
        if text.contains("tcp connect") || text.contains("error trying to connect") {
            return true;
        }
        next = err.source();
    }
    false
}

/// A status's message and the causes below it, each once: "tcp connect error: Connection
/// refused (os error 111)".
fn describe_cause(message: &str, cause: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |text: String| {
        let text = text.trim().to_owned();
        if !text.is_empty()
            && text != "transport error"
            && !parts.iter().any(|p: &String| p.contains(&text))
        {
            parts.push(text);
        }
    };
    push(message.to_owned());
    let mut next = Some(cause);
    while let Some(err) = next {
        push(err.to_string());
        next = err.source();
    }
    if parts.is_empty() {
        return "transport error".to_owned();
    }
    parts.join(": ")
}

/// For callers with their own loop over endpoints: `Ok(reason)` to try the next one (as an
/// idempotent call would), `Err` to give up.
pub(crate) fn classify_simple(
    fail: Fail,
    endpoint: &str,
    timeout: Duration,
) -> Result<String, EtcdError> {
    match classify(fail, Retry::Idempotent, endpoint, "the request", timeout) {
        Next::Failover(reason) => Ok(reason),
        Next::Stop(err) => Err(err),
    }
}

/// Decides whether a failed attempt moves on to the next endpoint.
fn classify(
    fail: Fail,
    retry: Retry,
    endpoint: &str,
    operation: &'static str,
    timeout: Duration,
) -> Next {
    let timed_out = || {
        if retry == Retry::Blocking {
            "timed out".to_owned()
        } else {
            format!("timed out after {}", humantime::format_duration(timeout))
        }
    };
    // Refused before it was executed, whatever it was ("rpc not supported for learner"):
    // a voter can serve it, even an at-most-once call.
    if let Fail::Answer(err) | Fail::NotSent(err) = &fail {
        if err.is_learner_refusal() {
            return Next::Failover("a learner serves no such request".to_owned());
        }
    }
    match fail {
        Fail::NotSent(err) => match err {
            EtcdError::Grpc { reason, .. } => Next::Failover(reason),
            EtcdError::Transport { source, .. } => Next::Failover(describe_transport(&source)),
            EtcdError::Timeout { .. } => Next::Failover(timed_out()),
            err if err.is_unavailable() => Next::Failover(format!(
                "unavailable: {}",
                err.api_message().unwrap_or_default()
            )),
            other => Next::Stop(other),
        },
        Fail::TimedOut => match retry {
            Retry::Idempotent => Next::Failover(timed_out()),
            Retry::Blocking => Next::Stop(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation,
                after: timeout,
            }),
            Retry::AtMostOnce => Next::Stop(EtcdError::OutcomeUnknown {
                endpoint: endpoint.to_owned(),
                reason: timed_out(),
            }),
        },
        Fail::Broken(err) => match (retry, err) {
            (Retry::AtMostOnce, EtcdError::Grpc { endpoint, reason }) => {
                Next::Stop(EtcdError::OutcomeUnknown { endpoint, reason })
            }
            (_, EtcdError::Grpc { reason, .. }) => Next::Failover(reason),
            (_, other) => Next::Stop(other),
        },
        Fail::Answer(err) if err.is_unavailable() && retry != Retry::AtMostOnce => {
            let message = err.api_message().unwrap_or_default().to_owned();
            Next::Failover(format!("unavailable: {message}"))
        }
        Fail::Answer(err) => Next::Stop(err),
    }
}

#[cfg(test)]
mod tests;
