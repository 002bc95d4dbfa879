//! Snapshots, written to a file only when whole and verified: over gRPC first
//! (`grpc::snapshot`), through the gateway (`POST /v3/maintenance/snapshot`, here) when the
//! endpoint serves no gRPC. The gateway's stream is checked by [`SnapshotStream`]; the
//! snapshot goes into a temporary file in the destination directory, fsynced and renamed
//! into place only when the stream checked out; on any error, timeout or cancellation, the
//! temporary file is removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::client::{decode_body, Client, Shape};
use super::error::EtcdError;
pub use super::snapshot_check::{SnapshotInfo, SnapshotVia};
use super::snapshot_decode::SnapshotStream;
use super::wire;
use std::sync::atomic::{AtomicBool, Ordering};

impl Client {
    /// Streams a snapshot from the first endpoint that answers (the one that answered last
    /// first) into `dest`. See [`Client::snapshot_from`].
    pub async fn snapshot(
        &self,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tried = Vec::new();
        for endpoint in self.attempt_order() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.snapshot_from(&endpoint, dest, left).await {
                Ok(info) => {
                    self.remember(&endpoint);
                    return Ok(info);
                }
                // Only a member that could not be reached (or is unavailable) is skipped;
                // a stream that broke is reported as it is.
                Err(err) if moves_on(&err) => tried.push((endpoint, err.to_string())),
                Err(err) => return Err(err),
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }

    /// Streams a snapshot of the member at `endpoint` into `dest`, within `timeout` for the
    /// whole transfer. The data goes to a temporary file in `dest`'s directory, is checked
    /// against its sha256 trailer, fsynced, and renamed over `dest` only when whole and
    /// correct; on any failure no file is left behind. Returns the file's size and sha256.
    ///
    /// Over gRPC (`Maintenance/Snapshot`, about twice as fast); through the gateway when
    /// the endpoint serves no gRPC (see `grpc::GrpcError::no_grpc_here`), logged.
    pub async fn snapshot_from(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let endpoint = &self.endpoint_url(endpoint)?;
        let started = tokio::time::Instant::now();
        match self.snapshot_grpc_attempt(endpoint, dest, timeout).await {
            Ok(info) => Ok(info),
            Err(failure) => match failure.no_grpc {
                Some(reason) => {
                    log_fallback(endpoint, &reason);
                    let left = timeout.saturating_sub(started.elapsed());
                    self.snapshot_gateway_from(endpoint, dest, left).await
                }
                None => Err(failure.err),
            },
        }
    }

    /// Like [`Client::snapshot_from`], through the HTTP/JSON gateway only.
    pub async fn snapshot_gateway_from(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let endpoint = &self.endpoint_url(endpoint)?;
        let work = self.snapshot_inner(endpoint, dest, timeout);
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            // Dropping the work removed its temporary file.
            Err(_) => Err(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation: "snapshot",
                after: timeout,
            }),
        }
    }

    async fn snapshot_inner(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let path = "/v3/maintenance/snapshot";
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| EtcdError::Io {
                action,
                path,
                source,
            }
        };

        let mut response = self.open_snapshot(endpoint, path, timeout).await?;

        let (dir, temp) = temp_file(dest)?;
        let (std_file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let transport = |source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        };
        let broken = |source| EtcdError::Snapshot {
            endpoint: endpoint.to_owned(),
            source,
        };
        let mut stream = SnapshotStream::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            let bytes = stream.feed(&chunk).map_err(broken)?;
            file.write_all(&bytes)
                .await
                .map_err(io("write", &temp_path))?;
        }
        let (last, digest) = stream.finish().map_err(broken)?;
        file.write_all(&last)
            .await
            .map_err(io("write", &temp_path))?;
        file.flush().await.map_err(io("write", &temp_path))?;
        file.sync_all().await.map_err(io("fsync", &temp_path))?;
        drop(file);
        temp_path.persist(dest).map_err(|e| EtcdError::Io {
            action: "rename the finished snapshot to",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        // The rename is durable only once the directory is.
        let dir_handle = tokio::fs::File::open(&dir)
            .await
            .map_err(io("open", &dir))?;
        dir_handle.sync_all().await.map_err(io("fsync", &dir))?;
        tracing::info!(endpoint, path = %dest.display(), size = digest.size, via = "gateway", "snapshot written");
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            endpoint: endpoint.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            via: SnapshotVia::Gateway,
            storage_version: None,
        })
    }

    /// Starts the snapshot stream: an error before the first line (including auth) is read
    /// from the body; a token etcd rejects is fetched again once.
    async fn open_snapshot(
        &self,
        endpoint: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, EtcdError> {
        let mut fresh_token = false;
        loop {
            let token = self.token(endpoint).await?;
            let response = self
                .post(endpoint, path, b"{}".to_vec(), timeout, token.as_deref())
                .await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|source| EtcdError::Transport {
                    endpoint: endpoint.to_owned(),
                    source,
                })?;
            let err = match decode_body(endpoint, path, status, &body, Shape::Unary) {
                Err(err) => err,
                Ok(_) => EtcdError::Http {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    status,
                    body: wire::excerpt(&body),
                },
            };
            if err.is_unauthenticated() && token.is_some() && !fresh_token {
                self.forget_token(token.as_deref());
                fresh_token = true;
                continue;
            }
            return Err(err);
        }
    }
}

/// Whether a snapshot failure on one endpoint lets [`Client::snapshot`] try the next: only
/// when the member could not be reached or is unavailable, before any data came.
fn moves_on(err: &EtcdError) -> bool {
    match err {
        EtcdError::Transport { source, .. } => source.is_connect(),
        EtcdError::Grpc { source, .. } => source.is_connect(),
        other => other.is_unavailable(),
    }
}

/// Set once the fallback was logged at warn; later ones go to debug.
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs that a snapshot takes the gateway because gRPC is not reachable: once per process
/// at warn (the setting will not change by itself), at debug after that.
pub(crate) fn log_fallback(endpoint: &str, reason: &str) {
    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            endpoint,
            reason,
            "snapshot: gRPC not reachable, taking the HTTP/JSON gateway (about 2x slower); logged once"
        );
    } else {
        tracing::debug!(
            endpoint,
            reason,
            "snapshot: gRPC not reachable, taking the gateway"
        );
    }
}

/// A new temporary file beside `dest`, and `dest`'s directory.
pub(crate) fn temp_file(dest: &Path) -> Result<(PathBuf, tempfile::NamedTempFile), EtcdError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| EtcdError::Io {
            action: "write a snapshot to",
            path: dest.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|source| EtcdError::Io {
            action: "create a temporary file in",
            path: dir.clone(),
            source,
        })?;
    Ok((dir, temp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::ClientConfig;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::super::snapshot_decode::tests::{body, data, expected_file};
    use sha2::{Digest, Sha256};
    async fn serve(body: Vec<u8>, stall_after: Option<usize>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            match stall_after {
                None => {
                    let _ = conn.write_all(&body).await;
                }
                Some(n) => {
                    let _ = conn.write_all(&body[..n]).await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        });
        format!("http://{addr}")
    }

    /// Like `serve`, for every connection: an HTTP/1.1-only server, as a proxy in front of
    /// etcd might be.
    async fn serve_http1_only(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn no_http2_falls_back_to_the_gateway() {
        let data = data(100_000);
        let endpoint = serve_http1_only(body(&data, 32 * 1024)).await;
        let client = Client::new(ClientConfig::new(vec![endpoint.clone()])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap.db");
        // gRPC alone fails: the answer to the HTTP/2 preface is not HTTP/2.
        let err = client
            .snapshot_grpc_from(&endpoint, &dest, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(err, EtcdError::Grpc { .. }), "{err}");
        assert_eq!(entries(dir.path()), Vec::<String>::new());
        let info = client
            .snapshot_from(&endpoint, &dest, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(info.via, crate::etcd::SnapshotVia::Gateway);
        assert_eq!(std::fs::read(&dest).unwrap(), expected_file(&data));
        assert_eq!(entries(dir.path()), ["snap.db"]);
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn whole_stream_becomes_the_file() {
        let data = data(100_000);
        let endpoint = serve(body(&data, 32 * 1024), None).await;
        let client = Client::new(ClientConfig::new(vec![endpoint.clone()])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap.db");
        std::fs::write(&dest, b"old").unwrap();
        let info = client
            .snapshot_gateway_from(&endpoint, &dest, Duration::from_secs(10))
            .await
            .unwrap();
        let want = expected_file(&data);
        assert_eq!(std::fs::read(&dest).unwrap(), want);
        assert_eq!(info.size, want.len() as u64);
        assert_eq!(info.sha256[..], Sha256::digest(&want)[..]);
        assert_eq!(info.endpoint, endpoint);
        assert_eq!(entries(dir.path()), ["snap.db"]);
    }

    #[tokio::test]
    async fn broken_streams_leave_no_file_and_keep_the_old_one() {
        let data = data(100_000);
        let good = body(&data, 32 * 1024);
        let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
        let without_trailer = lines[..lines.len() - 1].concat();
        let mut corrupt_trailer = without_trailer.clone();
        corrupt_trailer.extend_from_slice(
            format!(
                "{{\"result\":{{\"blob\":\"{}\"}}}}\n",
                STANDARD.encode([7u8; 32])
            )
            .as_bytes(),
        );
        let mut error_line = lines[0].to_vec();
        error_line.extend_from_slice(
            b"{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: server stopped\"}}\n",
        );
        let cut_mid_line = good[..good.len() / 2].to_vec();
        for (name, body) in [
            ("no trailer", without_trailer),
            ("bad trailer", corrupt_trailer),
            ("error line", error_line),
            ("cut in a line", cut_mid_line),
        ] {
            let endpoint = serve(body, None).await;
            let client = Client::new(ClientConfig::new(vec![endpoint.clone()])).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("snap.db");
            std::fs::write(&dest, b"old").unwrap();
            let err = client
                .snapshot_gateway_from(&endpoint, &dest, Duration::from_secs(10))
                .await
                .unwrap_err();
            assert!(matches!(err, EtcdError::Snapshot { .. }), "{name}: {err}");
            assert_eq!(entries(dir.path()), ["snap.db"], "{name}: {err}");
            assert_eq!(std::fs::read(&dest).unwrap(), b"old", "{name}");
        }
    }

    #[tokio::test]
    async fn stalled_stream_times_out_and_leaves_no_file() {
        let data = data(100_000);
        let endpoint = serve(body(&data, 32 * 1024), Some(50_000)).await;
        let client = Client::new(ClientConfig::new(vec![endpoint.clone()])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap.db");
        let started = std::time::Instant::now();
        let err = client
            .snapshot_gateway_from(&endpoint, &dest, Duration::from_millis(700))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                err,
                EtcdError::Timeout {
                    operation: "snapshot",
                    ..
                }
            ) || matches!(&err, EtcdError::Transport { source, .. } if source.is_timeout()),
            "{err}"
        );
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[tokio::test]
    async fn failed_snapshot_leaves_no_file() {
        // Nothing listens on this port: the call fails before any file is created.
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(ClientConfig::new(vec!["http://127.0.0.1:9".into()])).unwrap();
        let dest = dir.path().join("snap.db");
        let err = client
            .snapshot(&dest, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, EtcdError::AllEndpointsFailed { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
