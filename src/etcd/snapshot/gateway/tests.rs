use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A body as etcd streams it: 32 KiB per line (or `chunk`), then the sha256 line.
pub(crate) fn body(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sent = 0;
    for piece in data.chunks(chunk) {
        sent += piece.len();
        let remaining = data.len() - sent;
        let line = if remaining > 0 {
            format!(
                "{{\"result\":{{\"remaining_bytes\":\"{remaining}\",\"blob\":\"{}\"}}}}\n",
                STANDARD.encode(piece)
            )
        } else {
            format!(
                "{{\"result\":{{\"blob\":\"{}\"}}}}\n",
                STANDARD.encode(piece)
            )
        };
        out.extend_from_slice(line.as_bytes());
    }
    let sha = Sha256::digest(data);
    out.extend_from_slice(
        format!("{{\"result\":{{\"blob\":\"{}\"}}}}\n", STANDARD.encode(sha)).as_bytes(),
    );
    out
}

pub(crate) fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Feeds `body` in pieces of `split` bytes; returns the output and the result.
fn run(body: &[u8], split: usize) -> Result<(Vec<u8>, SnapshotDigest), SnapshotError> {
    let mut stream = SnapshotStream::new();
    let mut out = Vec::new();
    for piece in body.chunks(split.max(1)) {
        out.extend(stream.feed(piece)?);
    }
    let (last, digest) = stream.finish()?;
    out.extend(last);
    Ok((out, digest))
}

pub(crate) fn expected_file(data: &[u8]) -> Vec<u8> {
    let mut file = data.to_vec();
    file.extend_from_slice(&Sha256::digest(data));
    file
}

#[test]
fn reassembles_across_any_chunking() {
    let data = data(100_000);
    let body = body(&data, 32 * 1024);
    let want = expected_file(&data);
    for split in [1, 7, 4096, 43_693, body.len()] {
        let (out, digest) = run(&body, split).unwrap();
        assert_eq!(out, want, "split {split}");
        assert_eq!(digest.size, want.len() as u64);
        assert_eq!(digest.sha256[..], Sha256::digest(&want)[..]);
    }
}

#[test]
fn small_snapshot_in_one_line_and_no_final_newline() {
    let data = data(1000);
    let mut body = body(&data, 32 * 1024);
    body.pop(); // the last newline
    let (out, _) = run(&body, 100).unwrap();
    assert_eq!(out, expected_file(&data));
}

#[test]
fn exact_multiple_of_the_chunk_size() {
    let data = data(2 * 512);
    let (out, _) = run(&body(&data, 512), 333).unwrap();
    assert_eq!(out, expected_file(&data));
}

#[test]
fn truncated_streams_are_refused() {
    let data = data(70_000);
    let body = body(&data, 32 * 1024);
    let lines: Vec<&[u8]> = body.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 4);
    // Cut after whole lines: before the last data line, and before the trailer.
    for keep in [0, 1, 2, 3] {
        let cut: Vec<u8> = lines[..keep].concat();
        let err = run(&cut, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Truncated {
                    partial_line: false,
                    ..
                }
            ),
            "keep {keep}: {err}"
        );
    }
    // Cut in the middle of a line.
    let err = run(&body[..body.len() - 20], 1000).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Truncated {
                partial_line: true,
                ..
            }
        ),
        "{err}"
    );
    let err = run(&body[..50_000], 1000).unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("ended early"), "{err}");
}

#[test]
fn corrupt_data_or_trailer_is_refused() {
    let data = data(70_000);
    let good = body(&data, 32 * 1024);
    // Flip one byte of data inside the second line's base64 (still valid base64).
    let mut corrupt = data.clone();
    corrupt[40_000] ^= 0x55;
    let corrupt_body = body(&corrupt, 32 * 1024);
    // ... but keep the original sha256 line.
    let good_trailer = good.split_inclusive(|&b| b == b'\n').next_back().unwrap();
    let lines: Vec<&[u8]> = corrupt_body.split_inclusive(|&b| b == b'\n').collect();
    let mut mixed: Vec<u8> = lines[..lines.len() - 1].concat();
    mixed.extend_from_slice(good_trailer);
    let err = run(&mixed, 4096).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { .. }),
        "{err}"
    );

    // A trailer of the wrong length.
    let mut short = lines[..lines.len() - 1].concat();
    short.extend_from_slice(b"{\"result\":{\"blob\":\"AAAA\"}}\n");
    let err = run(&short, 4096).unwrap_err();
    assert_eq!(err, SnapshotError::BadTrailer { len: 3 });

    // Something after the trailer.
    let mut extra = good.clone();
    extra.extend_from_slice(b"{\"result\":{\"blob\":\"AAAA\"}}\n");
    let err = run(&extra, 4096).unwrap_err();
    assert_eq!(err, SnapshotError::AfterTrailer { line: 5 });

    // Bad base64 and not-JSON lines.
    let err = run(b"{\"result\":{\"blob\":\"!!\"}}\n", 10).unwrap_err();
    assert!(
        matches!(err, SnapshotError::BadLine { line: 1, .. }),
        "{err}"
    );
    let err = run(b"garbage\n", 10).unwrap_err();
    assert!(
        matches!(err, SnapshotError::BadLine { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn remaining_bytes_must_count_down() {
    let a = STANDARD.encode([1u8; 10]);
    let body = format!(
        "{{\"result\":{{\"remaining_bytes\":\"20\",\"blob\":\"{a}\"}}}}\n{{\"result\":{{\"remaining_bytes\":\"5\",\"blob\":\"{a}\"}}}}\n"
    );
    let err = run(body.as_bytes(), 1000).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::Inconsistent {
            line: 2,
            remaining: 5,
            expected: 10
        }
    );
}

#[test]
fn error_line_is_an_error() {
    let data = data(40_000);
    let body = body(&data, 32 * 1024);
    let first = body.split_inclusive(|&b| b == b'\n').next().unwrap();
    let mut broken = first.to_vec();
    broken.extend_from_slice(
        b"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: server stopped\",\"http_status\":\"Service Unavailable\"}}\n",
    );
    let err = run(&broken, 999).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::Server {
            code: 14,
            message: "etcdserver: server stopped".into()
        }
    );
    let err = run(b"{\"code\":2, \"message\":\"boom\"}\n", 5).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Server { code: 2, .. }),
        "{err}"
    );
}

#[test]
fn empty_stream_is_truncated() {
    let err = run(b"", 1).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { received: 0, .. }),
        "{err}"
    );
    let err = run(b"\n\n", 1).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { received: 0, .. }),
        "{err}"
    );
}
