//! Snapshots (`Maintenance/Snapshot` over gRPC), written to a file only when whole and
//! verified.
//!
//! The stream: `SnapshotResponse { remaining_bytes, blob }` with 32 KiB of the database
//! each, counting down to 0, then one message whose blob is the sha256 of all the data; on
//! 3.6 each message also carries the storage `version`. The file is every blob in order,
//! the trailer included, as `etcdctl snapshot save` writes it. The data goes into a
//! temporary file in the destination's directory, is checked against its sha256 trailer,
//! fsynced, and renamed into place only when the stream ended with status OK and checked
//! out; on any error, timeout or cancellation the temporary file is removed.
//!
//! Layout:
//! - this file: [`Client::snapshot`] and [`Client::snapshot_from`] (which endpoint; which
//!   failures move on to the next);
//! - `grpc`: the call through etcd-client, its messages handed to the writer;
//! - `check`: what every stream must satisfy (`ChunkCheck`), the result ([`SnapshotInfo`])
//!   and the errors;
//! - `persist`: the one path to the file (temporary file, writer thread, fsync, rename,
//!   fsync of the directory).

pub(super) mod check;
mod grpc;
mod persist;

use std::path::Path;
use std::time::Duration;

use super::client::Client;
use super::error::EtcdError;
pub use check::{SnapshotDigest, SnapshotError, SnapshotInfo};

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
        match tokio::time::timeout(timeout, self.snapshot_grpc(endpoint, dest)).await {
            Ok(result) => result,
            // Dropping the work dropped the part, which removed its file.
            Err(_) => Err(Snap::Stop(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation: "snapshot",
                after: timeout,
            })),
        }
    }
}

/// A failed snapshot from one member, and whether [`Client::snapshot`] may try the next:
/// only when the member could not be reached or is unavailable, before any data came.
pub(super) enum Snap {
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

#[cfg(test)]
mod tests;
