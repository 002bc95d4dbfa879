//! How to reach etcd: the endpoints, credentials and TLS material of a [`ClientConfig`], the
//! gRPC channel of one member, and the HTTP client for the plain paths (`/health`,
//! `/version`), both built from the same files with the same rules: a CA bundle replaces the
//! system's roots, a client certificate goes with its key, the server name is the URL's host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::EtcdError;

/// User name and password for etcd's auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client URLs, tried in order (`http://host:2379`; without a scheme, `http://` is assumed,
    /// or `https://` when TLS material is configured). The local member goes first.
    pub endpoints: Vec<String>,
    /// Upper bound of one call to one endpoint (connect, send, whole answer).
    pub request_timeout: Duration,
    /// Upper bound of opening a connection (TCP and TLS); at most `request_timeout` applies.
    pub connect_timeout: Duration,
    /// CA bundle (PEM) to verify the members' certificates; when set, only these CAs are
    /// trusted.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// User and password when etcd's auth is enabled.
    pub credentials: Option<Credentials>,
}

impl ClientConfig {
    /// A configuration for these endpoints with default timeouts (5 s per call, 2 s to
    /// connect), no TLS material and no auth.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            cacert: None,
            cert: None,
            key: None,
            credentials: None,
        }
    }
}

/// Normalizes an endpoint: adds a scheme when missing, drops a trailing `/`, and checks it
/// is an http(s) URL with a host and no path.
pub(crate) fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, EtcdError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EtcdError::Setup("an empty etcd endpoint".to_owned()));
    }
    let endpoint = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("{}://{trimmed}", if tls { "https" } else { "http" })
    };
    let bad = |why: &str| EtcdError::Setup(format!("etcd endpoint {raw:?}: {why}"));
    let url = reqwest::Url::parse(&endpoint).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        "unix" | "unixs" => return Err(bad("unix sockets are not supported; use an http(s) URL")),
        other => return Err(bad(&format!("scheme {other:?} is not http or https"))),
    }
    if url.host_str().unwrap_or_default().is_empty() {
        return Err(bad("no host"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(bad("a client URL has no path"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a client URL has no query or fragment"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

/// Builds the HTTP client: HTTP/1.1, no proxy from the environment (the supervisor talks to
/// its members directly), TLS from the configured files.
pub(crate) fn build_http(config: &ClientConfig) -> Result<reqwest::Client, EtcdError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout.min(config.request_timeout))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("etcd-supervisor/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .use_rustls_tls();
    if let Some(cacert) = &config.cacert {
        let pem = read_pem(cacert, "CA bundle (--cacert)")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| EtcdError::Setup(format!("CA bundle {}: {e}", cacert.display())))?;
        if certs.is_empty() {
            return Err(EtcdError::Setup(format!(
                "CA bundle {} holds no PEM certificate",
                cacert.display()
            )));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read_pem(cert, "client certificate (--cert)")?;
            pem.push(b'\n');
            pem.extend(read_pem(key, "client key (--key)")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                EtcdError::Setup(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err(EtcdError::Setup(
            "a client certificate (--cert) and its key (--key) go together: give both or neither"
                .to_owned(),
        )),
    }
    builder
        .build()
        .map_err(|e| EtcdError::Setup(format!("cannot build the HTTP client: {e}")))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Setup(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Receive window of a gRPC stream and of its connection: on loopback or a LAN, enough that
/// etcd never waits for a window update while a snapshot streams (tonic's default, 64 KiB,
/// halves the throughput).
const WINDOW: u32 = 4 * 1024 * 1024;

/// The TLS settings of the gRPC channels, read from the configured files once; `None`
/// without TLS material (https endpoints then trust the system's roots).
pub(crate) fn grpc_tls(
    config: &ClientConfig,
) -> Result<Option<tonic::transport::ClientTlsConfig>, EtcdError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if config.cacert.is_none() && config.cert.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    match &config.cacert {
        Some(cacert) => {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem(
                cacert,
                "CA bundle (--cacert)",
            )?));
        }
        None => tls = tls.with_native_roots(),
    }
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        tls = tls.identity(Identity::from_pem(
            read_pem(cert, "client certificate (--cert)")?,
            read_pem(key, "client key (--key)")?,
        ));
    }
    Ok(Some(tls))
}

/// The gRPC channel to one member (a normalized endpoint). It connects on first use and
/// again after the connection broke; no I/O happens here.
pub(crate) fn grpc_channel(
    endpoint: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, EtcdError> {
    let bad =
        |e: &dyn std::fmt::Display| EtcdError::Setup(format!("etcd endpoint {endpoint}: {e}"));
    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| bad(&e))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .user_agent(concat!("etcd-supervisor/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| bad(&e))?;
    if endpoint.starts_with("https://") {
        let tls = tls
            .cloned()
            .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
        channel = channel.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(channel.connect_lazy())
}
