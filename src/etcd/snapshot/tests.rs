//! The path to the file (`persist`) fed chunk by chunk as the gRPC call hands them over:
//! a whole stream becomes the file; a broken one, a receive error or a cancellation leaves
//! no file behind and the old one as it was.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::check::SnapshotError;
use super::persist::{Chunk, Part};
use crate::etcd::EtcdError;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

/// A message as the test makes it (etcd-client's cannot be built outside it).
#[derive(Debug, Clone)]
struct TestChunk {
    remaining: u64,
    blob: Vec<u8>,
    version: String,
}

impl Chunk for TestChunk {
    fn remaining(&self) -> u64 {
        self.remaining
    }

    fn blob(&self) -> &[u8] {
        &self.blob
    }

    fn version(&self) -> &str {
        &self.version
    }
}

/// The messages etcd sends for `data`: 32 KiB chunks counting down, then the sha256.
fn chunks(data: &[u8], version: &str) -> Vec<TestChunk> {
    let mut out = Vec::new();
    let mut sent = 0;
    for piece in data.chunks(32 * 1024) {
        sent += piece.len();
        out.push(TestChunk {
            remaining: (data.len() - sent) as u64,
            blob: piece.to_vec(),
            version: version.to_owned(),
        });
    }
    out.push(TestChunk {
        remaining: 0,
        blob: Sha256::digest(data).to_vec(),
        version: version.to_owned(),
    });
    out
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn run(
    dest: &Path,
    chunks: Vec<TestChunk>,
    received: Result<(), EtcdError>,
) -> Result<super::persist::Ending, EtcdError> {
    let part = Part::<TestChunk>::begin(dest).unwrap();
    for chunk in chunks {
        if !part.send(chunk).await {
            break;
        }
    }
    part.finish("http://127.0.0.1:2379", received).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_stream_becomes_the_file() {
    let data = data(100_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("snap.db");
    let ending = run(&dest, chunks(&data, "3.6.0"), Ok(())).await.unwrap();
    let mut file = data.clone();
    file.extend_from_slice(&Sha256::digest(&data));
    assert_eq!(std::fs::read(&dest).unwrap(), file);
    assert_eq!(ending.digest.size, file.len() as u64);
    assert_eq!(ending.digest.sha256[..], Sha256::digest(&file)[..]);
    assert_eq!(ending.version.as_deref(), Some("3.6.0"));
    assert_eq!(entries(dir.path()), ["snap.db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_leave_no_file_and_keep_the_old_one() {
    let data = data(100_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("snap.db");
    std::fs::write(&dest, b"old").unwrap();

    // Cut before the trailer.
    let mut cut = chunks(&data, "");
    cut.truncate(2);
    let err = run(&dest, cut, Ok(())).await.unwrap_err();
    assert!(
        matches!(
            &err,
            EtcdError::Snapshot {
                source: SnapshotError::Truncated { .. },
                ..
            }
        ),
        "{err}"
    );
    // A corrupt chunk: the trailer does not match.
    let mut corrupt = chunks(&data, "");
    corrupt[1].blob[5] ^= 1;
    let err = run(&dest, corrupt, Ok(())).await.unwrap_err();
    assert!(
        matches!(
            &err,
            EtcdError::Snapshot {
                source: SnapshotError::ChecksumMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    // The connection broke mid-stream (the member closed it): its error wins.
    let broken = EtcdError::Grpc {
        endpoint: "http://127.0.0.1:2379".into(),
        reason: "h2 protocol error: stream closed".into(),
    };
    let mut half = chunks(&data, "");
    half.truncate(1);
    let err = run(&dest, half, Err(broken)).await.unwrap_err();
    assert!(matches!(&err, EtcdError::Grpc { .. }), "{err}");

    assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    assert_eq!(entries(dir.path()), ["snap.db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_part_removes_its_file() {
    let data = data(100_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("snap.db");
    let part = Part::<TestChunk>::begin(&dest).unwrap();
    let mut all = chunks(&data, "");
    assert!(part.send(all.remove(0)).await);
    assert_eq!(
        entries(dir.path()).len(),
        1,
        "the temporary file exists meanwhile"
    );
    // A timeout or a cancellation drops the receiving future, and with it the part.
    drop(part);
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}
