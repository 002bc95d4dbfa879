use sha2::{Digest, Sha256};

use super::*;
use crate::etcd::grpc::frame;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 251) as u8).collect()
}

fn message(remaining: u64, blob: &[u8], version: &str) -> Vec<u8> {
    let m = SnapshotResponse {
        header: None,
        remaining_bytes: remaining,
        blob: Bytes::copy_from_slice(blob),
        version: version.to_owned(),
    };
    frame(&m.encode_to_vec()).to_vec()
}

/// The framed messages etcd sends for `data` in `chunk`-byte pieces, the trailer last.
fn messages(data: &[u8], chunk: usize, version: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut sent = 0;
    for piece in data.chunks(chunk) {
        sent += piece.len();
        out.push(message((data.len() - sent) as u64, piece, version));
    }
    out.push(message(0, &Sha256::digest(data), version));
    out
}

fn file(data: &[u8]) -> Vec<u8> {
    let mut f = data.to_vec();
    f.extend_from_slice(&Sha256::digest(data));
    f
}

fn run(body: &[u8], split: usize) -> Result<(Vec<u8>, SnapshotDigest), SnapshotError> {
    let mut stream = GrpcSnapshotStream::new();
    let mut out = Vec::new();
    for piece in body.chunks(split.max(1)) {
        for blob in stream.feed(piece)? {
            out.extend_from_slice(&blob);
        }
    }
    Ok((out, stream.finish()?))
}

#[test]
fn reassembles_across_any_split() {
    let data = data(100_000);
    let body = messages(&data, 32 * 1024, "").concat();
    let want = file(&data);
    for split in [1, 5, 7, 4096, 16_384, 32_779, body.len()] {
        let (out, digest) = run(&body, split).unwrap();
        assert_eq!(out, want, "split {split}");
        assert_eq!(digest.size, want.len() as u64);
        assert_eq!(digest.sha256[..], Sha256::digest(&want)[..]);
    }
}

#[test]
fn exact_multiple_of_the_chunk_and_the_version() {
    let data = data(4 * 512);
    let body = messages(&data, 512, "3.6.0").concat();
    let mut stream = GrpcSnapshotStream::new();
    let blobs = stream.feed(&body).unwrap();
    assert_eq!(blobs.len(), 5);
    assert_eq!(stream.version(), Some("3.6.0"));
    assert_eq!(stream.finish().unwrap().size, 4 * 512 + 32);
}

#[test]
fn truncated_streams_are_refused() {
    let data = data(70_000);
    let msgs = messages(&data, 32 * 1024, "");
    assert_eq!(msgs.len(), 4);
    for keep in 0..4 {
        let err = run(&msgs[..keep].concat(), 1000).unwrap_err();
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
    let body = msgs.concat();
    for cut in [3, 5, 40_000, body.len() - 1] {
        let err = run(&body[..cut], 999).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Truncated {
                    partial_line: true,
                    ..
                }
            ),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn corrupt_streams_are_refused() {
    let data = data(70_000);
    let good = messages(&data, 32 * 1024, "");

    // A flipped data byte under the original trailer.
    let mut corrupt = data.clone();
    corrupt[40_000] ^= 0x55;
    let mut mixed = messages(&corrupt, 32 * 1024, "");
    *mixed.last_mut().unwrap() = good.last().unwrap().clone();
    let err = run(&mixed.concat(), 4096).unwrap_err();
    assert!(
        matches!(err, SnapshotError::ChecksumMismatch { .. }),
        "{err}"
    );

    // A trailer of the wrong length.
    let mut short = good[..3].to_vec();
    short.push(message(0, &[1, 2, 3], ""));
    assert_eq!(
        run(&short.concat(), 4096).unwrap_err(),
        SnapshotError::BadTrailer { len: 3 }
    );

    // A message after the trailer.
    let mut extra = good.clone();
    extra.push(message(0, &[1], ""));
    assert_eq!(
        run(&extra.concat(), 4096).unwrap_err(),
        SnapshotError::AfterTrailer { line: 5 }
    );

    // remaining_bytes that does not count down.
    let bad_count = [message(20, &[1; 10], ""), message(5, &[1; 10], "")].concat();
    assert_eq!(
        run(&bad_count, 4096).unwrap_err(),
        SnapshotError::Inconsistent {
            line: 2,
            remaining: 5,
            expected: 10
        }
    );

    // A compressed message, an absurd length, and bytes that are not protobuf.
    let mut compressed = good[0].clone();
    compressed[0] = 1;
    let too_long = [0u8, 0xff, 0xff, 0xff, 0xff];
    let not_protobuf = frame(&[0xff, 0xff, 0xff]).to_vec();
    for (name, body) in [
        ("compressed", compressed),
        ("too long", too_long.to_vec()),
        ("not protobuf", not_protobuf),
    ] {
        let err = run(&body, 4096).unwrap_err();
        assert!(
            matches!(err, SnapshotError::BadMessage { message: 1, .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn empty_stream_is_truncated() {
    let err = run(b"", 1).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { received: 0, .. }),
        "{err}"
    );
}
