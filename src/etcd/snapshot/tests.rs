use super::*;
use crate::etcd::ClientConfig;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::gateway::tests::{body, data, expected_file};
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
