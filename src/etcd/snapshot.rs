//! Snapshots (`Maintenance/Snapshot`), written to a file only when whole and verified.
//!
//! The stream: `SnapshotResponse { remaining_bytes, blob }` with 32 KiB of the database
//! each, counting down to 0, then one message whose blob is the sha256 of all the data; on
//! 3.6 each message also carries the storage `version`. The file is every blob in order,
//! the trailer included, as `etcdctl snapshot save` writes it. `snapshot_check` checks the
//! chunks as they pass.
//!
//! Receiving and writing overlap: the async side moves each message's blob into a bounded
//! channel; a blocking thread checks, hashes and writes, then fsyncs. The file is renamed
//! into place only once the stream ended with status OK and the check accepted the trailer;
//! on any failure, timeout or cancellation the temporary file is removed (the writer owns
//! it, and dropping its result removes it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempPath;
use tokio::sync::mpsc;

use super::client::{convert, Client, Fail};
use super::error::EtcdError;
pub use super::snapshot_check::SnapshotInfo;
use super::snapshot_check::{ChunkCheck, SnapshotDigest, SnapshotError};

/// Data chunks in flight between the receiving task and the writer.
const CHANNEL: usize = 64;

/// Bytes written between two starts of writeback (see [`crate::durable::start_writeback`]).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

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
            match self.snapshot_attempt(&endpoint, dest, left).await {
                Ok(info) => {
                    self.remember(&endpoint);
                    return Ok(info);
                }
                // Only a member that could not be reached (or is unavailable) is skipped;
                // a stream that broke is reported as it is.
                Err(Snap::Skip(err)) => tried.push((endpoint, err.to_string())),
                Err(Snap::Stop(err)) => return Err(err),
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }

    /// Streams a snapshot of the member at `endpoint` into `dest`, within `timeout` for the
    /// whole transfer. The data goes to a temporary file in `dest`'s directory, is checked
    /// against its sha256 trailer, fsynced, and renamed over `dest` only when whole and
    /// correct; on any failure no file is left behind. Returns the file's size and sha256.
    pub async fn snapshot_from(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        self.snapshot_attempt(endpoint, dest, timeout)
            .await
            .map_err(EtcdError::from)
    }

    async fn snapshot_attempt(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, Snap> {
        let endpoint = &self.endpoint_url(endpoint).map_err(Snap::Stop)?;
        match tokio::time::timeout(timeout, self.snapshot_inner(endpoint, dest)).await {
            Ok(result) => result,
            // Dropping the work dropped the writer's result, which removed its file.
            Err(_) => Err(Snap::Stop(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation: "snapshot",
                after: timeout,
            })),
        }
    }

    async fn snapshot_inner(&self, endpoint: &str, dest: &Path) -> Result<SnapshotInfo, Snap> {
        let rpc = self.rpc(endpoint, false).await.map_err(|err| {
            if err.is_transport() || err.is_unavailable() {
                Snap::Skip(err)
            } else {
                Snap::Stop(err)
            }
        })?;
        let mut stream = match rpc.maintenance_client().snapshot().await {
            Ok(stream) => stream,
            Err(err) => {
                return Err(match convert(endpoint, err) {
                    Fail::NotSent(err) => Snap::Skip(err),
                    Fail::Answer(err) if err.is_unavailable() => Snap::Skip(err),
                    Fail::Answer(err) | Fail::Broken(err) => Snap::Stop(err),
                    Fail::TimedOut => Snap::Stop(EtcdError::Grpc {
                        endpoint: endpoint.to_owned(),
                        reason: "timed out".to_owned(),
                    }),
                })
            }
        };

        let (dir, temp) = temp_file(dest).map_err(Snap::Stop)?;
        let temp_path = temp.path().to_path_buf();
        let (tx, rx) = mpsc::channel::<(u64, Vec<u8>, String)>(CHANNEL);
        let writer = tokio::task::spawn_blocking(move || write(temp, rx));
        let received = async {
            let mut any = false;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        any = true;
                        let item = (
                            chunk.remaining_bytes(),
                            chunk.blob().to_vec(),
                            chunk.version().to_owned(),
                        );
                        if tx.send(item).await.is_err() {
                            // The writer stopped: its error says why.
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(err) => {
                        return Err(match convert(endpoint, err) {
                            // etcd refused the call (auth) before sending anything: its answer.
                            Fail::Answer(err) if !any => err,
                            // etcd ended the stream with an error status.
                            Fail::Answer(EtcdError::Api { code, message, .. }) => {
                                EtcdError::Snapshot {
                                    endpoint: endpoint.to_owned(),
                                    source: SnapshotError::Server { code, message },
                                }
                            }
                            Fail::Answer(err) | Fail::NotSent(err) | Fail::Broken(err) => err,
                            Fail::TimedOut => EtcdError::Grpc {
                                endpoint: endpoint.to_owned(),
                                reason: "timed out".to_owned(),
                            },
                        });
                    }
                }
            }
        }
        .await;
        drop(tx);
        let written = writer.await.map_err(|e| {
            Snap::Stop(EtcdError::Io {
                action: "write",
                path: temp_path.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        received.map_err(Snap::Stop)?;
        let (temp, digest, version) = written
            .map_err(|e| match e {
                WriteError::Io(source) => EtcdError::Io {
                    action: "write",
                    path: temp_path.clone(),
                    source,
                },
                WriteError::Stream(source) => EtcdError::Snapshot {
                    endpoint: endpoint.to_owned(),
                    source,
                },
            })
            .map_err(Snap::Stop)?;
        let target = dest.to_path_buf();
        tokio::task::spawn_blocking(move || persist(temp, &target, &dir))
            .await
            .map_err(|e| EtcdError::Io {
                action: "rename the finished snapshot to",
                path: dest.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
            .and_then(|r| r)
            .map_err(Snap::Stop)?;
        tracing::info!(
            endpoint,
            path = %dest.display(),
            size = digest.size,
            storage_version = version.as_deref().unwrap_or(""),
            "snapshot written"
        );
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            endpoint: endpoint.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            storage_version: version,
        })
    }
}

/// A failed snapshot from one member, and whether [`Client::snapshot`] may try the next:
/// only when the member could not be reached or is unavailable, before any data came.
enum Snap {
    /// The member could not serve it; another may.
    Skip(EtcdError),
    /// The snapshot failed as it is (a broken stream, the disk, a timeout).
    Stop(EtcdError),
}

impl From<Snap> for EtcdError {
    fn from(snap: Snap) -> Self {
        match snap {
            Snap::Skip(err) | Snap::Stop(err) => err,
        }
    }
}

enum WriteError {
    Io(std::io::Error),
    Stream(SnapshotError),
}

/// The writer thread: checks, hashes and writes what arrives, then fsyncs. Returns the
/// temporary file (removed when dropped), the digest and the storage version.
fn write(
    temp: tempfile::NamedTempFile,
    mut rx: mpsc::Receiver<(u64, Vec<u8>, String)>,
) -> Result<(TempPath, SnapshotDigest, Option<String>), WriteError> {
    let (mut file, path) = temp.into_parts();
    let mut check = ChunkCheck::default();
    let mut version: Option<String> = None;
    let (mut index, mut written, mut flushed) = (0u64, 0u64, 0u64);
    while let Some((remaining, blob, chunk_version)) = rx.blocking_recv() {
        index += 1;
        check
            .chunk(index, remaining, &blob)
            .map_err(WriteError::Stream)?;
        if version.is_none() && !chunk_version.is_empty() {
            version = Some(chunk_version);
        }
        file.write_all(&blob).map_err(WriteError::Io)?;
        written += blob.len() as u64;
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
    file.sync_all().map_err(WriteError::Io)?;
    Ok((path, digest, version))
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
