//! The one way a snapshot reaches its file, whichever API carried it: [`Part`] creates a
//! temporary file beside the destination, a blocking thread decodes, checks, hashes and
//! writes what the answer's body brings, then fsyncs; only when the stream checked out is
//! the file renamed over the destination and the directory fsynced.
//!
//! Receiving and writing overlap: the async side only moves the body's pieces into a
//! bounded channel; the writer thread does the rest. The async side owns the temporary
//! file's path: dropping a [`Part`] (on an error, a timeout or a cancellation) removes the
//! file at once, and the writer, which owns only the descriptor, ends when its channel
//! closes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tempfile::TempPath;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::check::{SnapshotDigest, SnapshotError};
use crate::blocking::WorkerLost;
use crate::etcd::error::EtcdError;

/// Body pieces in flight between the receiving task and the writer.
const CHANNEL: usize = 64;

/// Bytes written between two starts of writeback (see [`crate::durable::start_writeback`]).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

/// Turns an answer's body (the gateway's JSON lines, gRPC's messages) into the file's bytes.
pub(super) trait Decoder: Send + 'static {
    /// Takes the next piece of the body (split anywhere) and returns the snapshot bytes of
    /// what it completed, in order, to be appended to the file.
    fn pieces(&mut self, data: &[u8]) -> Result<Vec<Bytes>, SnapshotError>;

    /// Ends the stream: the last bytes to append, or why the stream is not a whole,
    /// correct snapshot.
    fn end(self) -> Result<Ending, SnapshotError>;
}

/// What a decoder says once the body ended well.
pub(super) struct Ending {
    /// Bytes still to append (a gateway's last line without its newline).
    pub tail: Vec<u8>,
    /// The whole file's size and sha256.
    pub digest: SnapshotDigest,
    /// The storage version the member sent (3.6 on, over gRPC).
    pub version: Option<String>,
}

/// A snapshot file being written: the temporary file and the thread that writes it.
pub(super) struct Part {
    tx: mpsc::Sender<Bytes>,
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

impl Part {
    /// Creates the temporary file beside `dest` and starts the writer with `decoder`.
    pub(super) fn begin(dest: &Path, decoder: impl Decoder) -> Result<Self, EtcdError> {
        let (dir, temp) = temp_file(dest)?;
        let (file, path) = temp.into_parts();
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
        // Not `blocking::run`: the writer runs while the body is received, and is awaited
        // in `finish`.
        let writer = tokio::task::spawn_blocking(move || write(file, decoder, rx));
        Ok(Self {
            tx,
            writer,
            path,
            dir,
            dest: dest.to_path_buf(),
        })
    }

    /// Hands the next piece of the body to the writer; `false` once the writer stopped
    /// (its error comes out of [`Part::finish`]).
    pub(super) async fn send(&self, data: Bytes) -> bool {
        self.tx.send(data).await.is_ok()
    }

    /// Ends the body and waits for the writer; then renames the file over the destination
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

/// The writer thread: decodes, checks, hashes and writes what arrives, then fsyncs.
fn write(
    mut file: File,
    mut decoder: impl Decoder,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Ending, WriteError> {
    let (mut written, mut flushed) = (0u64, 0u64);
    while let Some(data) = rx.blocking_recv() {
        for piece in decoder.pieces(&data).map_err(WriteError::Stream)? {
            file.write_all(&piece)
                .map_err(|e| WriteError::Io("write", e))?;
            written += piece.len() as u64;
        }
        if written - flushed >= WRITEBACK_WINDOW {
            crate::durable::start_writeback(&file, flushed, written - flushed);
            flushed = written;
        }
    }
    let ending = decoder.end().map_err(WriteError::Stream)?;
    file.write_all(&ending.tail)
        .map_err(|e| WriteError::Io("write", e))?;
    file.sync_all().map_err(|e| WriteError::Io("fsync", e))?;
    Ok(ending)
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
