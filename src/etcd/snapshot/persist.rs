//! The one way a snapshot reaches its file: [`Part`] creates a temporary file beside the
//! destination, a blocking thread checks (`check`), hashes and writes each chunk the stream
//! brings, then fsyncs; only when the stream checked out is the file renamed over the
//! destination and the directory fsynced.
//!
//! Receiving and writing overlap: the async side only moves each message (not a copy) into a
//! bounded channel; the writer thread does the rest. The async side owns the temporary
//! file's path: dropping a [`Part`] (on an error, a timeout or a cancellation) removes the
//! file at once, and the writer, which owns only the descriptor, ends when its channel
//! closes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::TempPath;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::check::{ChunkCheck, SnapshotDigest, SnapshotError};
use crate::blocking::WorkerLost;
use crate::etcd::error::EtcdError;

/// Chunks in flight between the receiving task and the writer (32 KiB each from etcd).
const CHANNEL: usize = 64;

/// Bytes written between two starts of writeback (see [`crate::durable::start_writeback`]).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

/// One message of the snapshot stream, as the writer reads it. The message itself goes to
/// the writer thread (moved, not copied): the receiving task does no more than pass it on.
pub(super) trait Chunk: Send + 'static {
    /// `remaining_bytes`: data bytes still to come after this chunk.
    fn remaining(&self) -> u64;
    /// The chunk's bytes (the last one is the sha256 trailer).
    fn blob(&self) -> &[u8];
    /// The member's storage version (3.6 on; empty before).
    fn version(&self) -> &str;
}

impl Chunk for etcd_client::SnapshotResponse {
    fn remaining(&self) -> u64 {
        self.remaining_bytes()
    }

    fn blob(&self) -> &[u8] {
        etcd_client::SnapshotResponse::blob(self)
    }

    fn version(&self) -> &str {
        etcd_client::SnapshotResponse::version(self)
    }
}

/// What the writer says once the stream ended well.
#[derive(Debug)]
pub(super) struct Ending {
    /// The whole file's size and sha256.
    pub digest: SnapshotDigest,
    /// The storage version the member sent (3.6 on).
    pub version: Option<String>,
}

/// A snapshot file being written: the temporary file and the thread that writes it.
pub(super) struct Part<C: Chunk> {
    tx: mpsc::Sender<C>,
    writer: JoinHandle<Result<Ending, WriteError>>,
    /// Removed when dropped, unless persisted.
    path: TempPath,
    dir: PathBuf,
    dest: PathBuf,
}

/// Why the writer thread stopped.
enum WriteError {
    Io(&'static str, std::io::Error),
    Stream(SnapshotError),
}

impl<C: Chunk> Part<C> {
    /// Creates the temporary file beside `dest` and starts the writer.
    pub(super) fn begin(dest: &Path) -> Result<Self, EtcdError> {
        let (dir, temp) = temp_file(dest)?;
        let (file, path) = temp.into_parts();
        let (tx, rx) = mpsc::channel::<C>(CHANNEL);
        // Not `blocking::run`: the writer runs while the stream is received, and is
        // awaited in `finish`.
        let writer = tokio::task::spawn_blocking(move || write(file, rx));
        Ok(Self {
            tx,
            writer,
            path,
            dir,
            dest: dest.to_path_buf(),
        })
    }

    /// Hands the next chunk to the writer; `false` once the writer stopped (its error comes
    /// out of [`Part::finish`]).
    pub(super) async fn send(&self, chunk: C) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Ends the stream and waits for the writer; then renames the file over the destination
    /// and fsyncs the directory. `received` is how receiving ended: its error wins over the
    /// writer's, which then only saw a stream cut short.
    pub(super) async fn finish(
        self,
        endpoint: &str,
        received: Result<(), EtcdError>,
    ) -> Result<Ending, EtcdError> {
        let Part {
            tx,
            writer,
            path,
            dir,
            dest,
        } = self;
        drop(tx);
        let temp = path.to_path_buf();
        let written = writer.await.map_err(|e| EtcdError::Io {
            action: "write",
            path: temp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        received?;
        let ending = written.map_err(|e| match e {
            WriteError::Io(action, source) => EtcdError::Io {
                action,
                path: temp,
                source,
            },
            WriteError::Stream(source) => EtcdError::Snapshot {
                endpoint: endpoint.to_owned(),
                source,
            },
        })?;
        let target = dest.clone();
        crate::blocking::run(move || Ok::<_, WorkerLost>(persist(path, &target, &dir)))
            .await
            .map_err(|e| EtcdError::Io {
                action: "rename the finished snapshot to",
                path: dest,
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(ending)
    }
}

/// The writer thread: checks, hashes and writes what arrives, then fsyncs.
fn write<C: Chunk>(mut file: File, mut rx: mpsc::Receiver<C>) -> Result<Ending, WriteError> {
    let mut check = ChunkCheck::default();
    let mut version: Option<String> = None;
    let (mut index, mut written, mut flushed) = (0u64, 0u64, 0u64);
    while let Some(chunk) = rx.blocking_recv() {
        index += 1;
        let blob = chunk.blob();
        check
            .chunk(index, chunk.remaining(), blob)
            .map_err(WriteError::Stream)?;
        if version.is_none() && !chunk.version().is_empty() {
            version = Some(chunk.version().to_owned());
        }
        file.write_all(blob)
            .map_err(|e| WriteError::Io("write", e))?;
        written += blob.len() as u64;
        if index == 1 {
            crate::failpoint::stall_at(crate::failpoint::SNAPSHOT_WRITTEN_FIRST_CHUNK);
        }
        if written - flushed >= WRITEBACK_WINDOW {
            crate::durable::start_writeback(&file, flushed, written - flushed);
            flushed = written;
        }
    }
    let truncated = SnapshotError::Truncated {
        received: check.size(),
        remaining: check.remaining(),
    };
    let digest = check.digest().ok_or(WriteError::Stream(truncated))?;
    file.sync_all().map_err(|e| WriteError::Io("fsync", e))?;
    Ok(Ending { digest, version })
}

/// Renames the finished file over `dest` and makes the rename durable.
fn persist(temp: TempPath, dest: &Path, dir: &Path) -> Result<(), EtcdError> {
    temp.persist(dest).map_err(|e| EtcdError::Io {
        action: "rename the finished snapshot to",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    crate::durable::sync_dir(dir).map_err(|e| EtcdError::Io {
        action: "fsync",
        path: dir.to_path_buf(),
        source: e.source,
    })
}

/// A new temporary file beside `dest`, and `dest`'s directory.
fn temp_file(dest: &Path) -> Result<(PathBuf, tempfile::NamedTempFile), EtcdError> {
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
