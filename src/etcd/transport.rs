//! How to reach etcd: the endpoints, credentials and TLS material of a [`ClientConfig`],
//! and the HTTP client built from them.

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
    /// Upper bound of one HTTP exchange with one endpoint (connect, send, whole answer).
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
