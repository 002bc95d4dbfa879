//! etcd's gRPC API for the one call the gateway is too slow for, `Maintenance/Snapshot`
//! (the gateway base64-encodes every byte into JSON on the server: 2x `etcdctl`). Every
//! other call stays on the gateway.
//!
//! Theory of operation:
//! - One HTTP/2 connection per call, dropped when the call ends: an idle supervisor holds
//!   no connection and no buffers. It goes to the member's client URL, where etcd serves
//!   the gateway and gRPC on the same port: for `http://`, its connection multiplexer
//!   (cmux) sends an HTTP/2 preface (h2c, prior knowledge) to the gRPC server; for
//!   `https://`, TLS negotiates `h2` by ALPN and etcd's handler sends HTTP/2 requests with
//!   `content-type: application/grpc` to it. TLS material and server name are those of the
//!   gateway client (`transport.rs`), read again at each connection.
//! - Framing (gRPC over HTTP/2): a request or response message is a 1-byte compressed
//!   flag (always 0 here: we offer no compression), a 4-byte big-endian length and the
//!   protobuf bytes. The call's status is `grpc-status` (and the percent-encoded
//!   `grpc-message`) in the trailers, or in the headers of a "trailers-only" answer.
//! - Auth: the gateway client's token goes in the metadata key `token` (etcd's
//!   `rpctypes.TokenFieldNameGRPC`; its auth store also reads `authorization`).
//! - What means "no gRPC here", so that the caller takes the gateway instead, is decided
//!   by [`GrpcError::no_grpc_here`], only for failures before the answer's headers.
//!
//! Layout: this file (connection, call, status), `tls` (the rustls configuration). The
//! snapshot's messages and decoder are `etcd::snapshot`'s (its `grpc` piece).

mod tls;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub(crate) use tls::TlsFiles;

/// Receive window per stream: on loopback or a LAN, enough that etcd never waits for a
/// window update while we write; it bounds what h2 buffers for us.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Receive window of the connection (one stream per connection).
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// gRPC status codes this module acts on.
pub(crate) const UNIMPLEMENTED: i32 = 12;

/// Why a gRPC call failed below etcd's answer, or etcd's status when it did answer.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// Unusable TLS material (read when connecting).
    #[error("{0}")]
    Setup(String),
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// TCP, TLS and the HTTP/2 preface did not complete in time.
    #[error("connecting did not finish within {}", humantime::format_duration(*.0))]
    ConnectTimeout(Duration),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// TLS came up without HTTP/2.
    #[error("TLS negotiated {} instead of HTTP/2 (ALPN h2)", .0.as_deref().unwrap_or("no application protocol"))]
    NoH2(Option<String>),
    /// An HTTP/2 failure (the peer does not speak it, went away, or reset the stream).
    #[error("HTTP/2: {0}")]
    Http2(#[source] h2::Error),
    /// An answer that is not gRPC's.
    #[error("answered HTTP {status} with content-type {content_type:?}: not a gRPC server")]
    NotGrpc {
        /// HTTP status.
        status: u16,
        /// Its content-type.
        content_type: String,
    },
    /// etcd's status for the call.
    #[error("{message} (gRPC status {code})")]
    Status {
        /// The gRPC code.
        code: i32,
        /// The (decoded) message.
        message: String,
    },
    /// Trailers without a status, or a status that is not a number.
    #[error("the call ended without a gRPC status: {0}")]
    NoStatus(String),
}

impl GrpcError {
    /// When this failure, before the answer's headers, means the endpoint serves no gRPC
    /// (so the gateway on the same URL may still work): the reason, for the log. `None`
    /// for failures the gateway would meet too (TCP, TLS, timeouts) and for etcd's own
    /// refusals other than Unimplemented.
    pub fn no_grpc_here(&self) -> Option<String> {
        match self {
            GrpcError::NoH2(_) | GrpcError::NotGrpc { .. } => Some(self.to_string()),
            // We found the peer's answer is not HTTP/2 (an HTTP/1 proxy in front of etcd).
            // Not an I/O error or a closed connection: a reset, or a TLS alert that TLS 1.3
            // delivers after the handshake (a refused client certificate), would meet the
            // gateway too.
            GrpcError::Http2(e) if e.is_library() && !e.is_io() => {
                Some(format!("{self} (no HTTP/2 on this port)"))
            }
            GrpcError::Status { code, .. } if *code == UNIMPLEMENTED => Some(format!(
                "{self}: Maintenance/Snapshot is not served over gRPC"
            )),
            _ => None,
        }
    }

    /// The member could not be reached at all (another endpoint may do).
    pub fn is_connect(&self) -> bool {
        matches!(self, GrpcError::Connect(_) | GrpcError::ConnectTimeout(_))
    }
}

/// One HTTP/2 connection to one member; the connection task ends when this is dropped.
pub(crate) struct Connection {
    send: SendRequest<Bytes>,
    /// `scheme://authority`, for request URIs.
    base: String,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects to `endpoint` (a normalized `http(s)://host:port`): TCP, TLS for https, and
/// the HTTP/2 handshake, within `timeout`.
pub(crate) async fn connect(
    endpoint: &str,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<Connection, GrpcError> {
    match tokio::time::timeout(timeout, connect_inner(endpoint, tls)).await {
        Ok(result) => result,
        Err(_) => Err(GrpcError::ConnectTimeout(timeout)),
    }
}

async fn connect_inner(endpoint: &str, files: &TlsFiles) -> Result<Connection, GrpcError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| GrpcError::Setup(format!("endpoint {endpoint:?}: {e}")))?;
    let secure = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .ok_or_else(|| GrpcError::Setup(format!("endpoint {endpoint:?}: no port")))?;
    let host = match url.host_str() {
        // IPv6 literals keep their brackets in a URL.
        Some(raw) => match raw.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(raw.to_owned()),
        },
        None => return Err(GrpcError::Setup(format!("endpoint {endpoint:?}: no host"))),
    };
    let tcp = match &host {
        Host::Name(name) => TcpStream::connect((name.as_str(), port)).await,
        Host::Ip(ip) => TcpStream::connect((*ip, port)).await,
    }
    .map_err(GrpcError::Connect)?;
    // Small request frames must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let base = format!("{}://{}", url.scheme(), url.authority());
    if !secure {
        return handshake(tcp, base).await;
    }
    let config = tls::client_config(files)?;
    let server_name = match host {
        Host::Name(name) => rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| GrpcError::Setup(format!("endpoint {endpoint:?}: {e}")))?,
        Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
    };
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(GrpcError::Tls)?;
    let alpn = stream.get_ref().1.alpn_protocol();
    if alpn != Some(b"h2") {
        return Err(GrpcError::NoH2(
            alpn.map(|p| String::from_utf8_lossy(p).into_owned()),
        ));
    }
    handshake(stream, base).await
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

async fn handshake<T>(io: T, base: String) -> Result<Connection, GrpcError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(GrpcError::Http2)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("gRPC connection ended: {e}");
        }
    });
    Ok(Connection { send, base, driver })
}

/// An answer that carries data: the first piece of it, and the rest in `body`.
pub(crate) struct ServerStream {
    /// The first data received (raw gRPC framing); `None` when the call ended with status
    /// OK and no message at all.
    pub first: Option<Bytes>,
    /// The rest of the message stream, then the trailers.
    pub body: RecvStream,
}

impl Connection {
    /// Starts a server-streaming call of `method` (`/package.Service/Method`) with one
    /// request message (`message`, protobuf bytes) and waits for the first data of the
    /// answer. A status that ends the call before any data is the call's error.
    pub(crate) async fn server_stream(
        &mut self,
        method: &str,
        message: &[u8],
        token: Option<&str>,
    ) -> Result<ServerStream, GrpcError> {
        let mut builder = Request::post(format!("{}{method}", self.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header(
                "user-agent",
                concat!("etcd-supervisor/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                GrpcError::Setup("etcd returned a token that is not valid metadata".to_owned())
            })?;
            value.set_sensitive(true);
            builder = builder.header("token", value);
        }
        let request = builder
            .body(())
            .map_err(|e| GrpcError::Setup(format!("cannot build the gRPC request: {e}")))?;
        let mut send = self.send.clone().ready().await.map_err(GrpcError::Http2)?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(GrpcError::Http2)?;
        stream
            .send_data(frame(message), true)
            .map_err(GrpcError::Http2)?;
        let response = response.await.map_err(GrpcError::Http2)?;
        let (parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if parts.status != http::StatusCode::OK || !content_type.starts_with("application/grpc") {
            return Err(GrpcError::NotGrpc {
                status: parts.status.as_u16(),
                content_type: content_type.to_owned(),
            });
        }
        // A trailers-only answer: the status is already here (an error, or an empty OK).
        if parts.headers.contains_key("grpc-status") {
            status(&parts.headers)?;
            return Ok(ServerStream { first: None, body });
        }
        // etcd may also refuse after sending headers, before any message (its auth check
        // runs in the handler): then the trailers hold the answer to the call.
        let mut body = body;
        match body.data().await {
            Some(Ok(first)) => {
                let _ = body.flow_control().release_capacity(first.len());
                Ok(ServerStream {
                    first: Some(first),
                    body,
                })
            }
            Some(Err(e)) => Err(GrpcError::Http2(e)),
            None => {
                let trailers = body.trailers().await.map_err(GrpcError::Http2)?;
                status(&trailers.unwrap_or_default())?;
                Ok(ServerStream { first: None, body })
            }
        }
    }
}

/// One gRPC message: uncompressed flag, big-endian length, bytes.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    // Request messages here are a few bytes.
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The call's status from trailers (or trailers-only headers): `Ok` for code 0.
pub(crate) fn status(headers: &HeaderMap) -> Result<(), GrpcError> {
    let raw = headers
        .get("grpc-status")
        .ok_or_else(|| GrpcError::NoStatus("no grpc-status".to_owned()))?;
    let code: i32 = raw
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| GrpcError::NoStatus(format!("grpc-status {raw:?}")))?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Err(GrpcError::Status { code, message })
}

/// `grpc-message` is percent-encoded UTF-8.
fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let decoded = match (raw[i], raw.get(i + 1), raw.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_trailers() {
        let mut h = HeaderMap::new();
        assert!(matches!(status(&h), Err(GrpcError::NoStatus(_))));
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(status(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("16"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver:%20invalid%20auth%20token%zz"),
        );
        match status(&h) {
            Err(GrpcError::Status { code, message }) => {
                assert_eq!(code, 16);
                assert_eq!(message, "etcdserver: invalid auth token%zz");
            }
            other => panic!("{other:?}"),
        }
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert!(matches!(status(&h), Err(GrpcError::NoStatus(_))));
    }

    #[test]
    fn what_means_no_grpc_here() {
        let unimplemented = GrpcError::Status {
            code: UNIMPLEMENTED,
            message: "unknown service".into(),
        };
        assert!(unimplemented.no_grpc_here().is_some());
        assert!(GrpcError::NoH2(Some("http/1.1".into()))
            .no_grpc_here()
            .is_some());
        assert!(GrpcError::NotGrpc {
            status: 404,
            content_type: "text/plain".into()
        }
        .no_grpc_here()
        .is_some());
        for err in [
            GrpcError::Status {
                code: 16,
                message: "invalid auth token".into(),
            },
            GrpcError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
            GrpcError::ConnectTimeout(Duration::from_secs(1)),
            GrpcError::Tls(std::io::ErrorKind::InvalidData.into()),
        ] {
            assert!(err.no_grpc_here().is_none(), "{err}");
        }
        assert!(GrpcError::Connect(std::io::ErrorKind::ConnectionRefused.into()).is_connect());
    }

    #[test]
    fn frames_a_message() {
        assert_eq!(&frame(&[])[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&frame(&[7, 8])[..], &[0, 0, 0, 0, 2, 7, 8]);
    }
}
