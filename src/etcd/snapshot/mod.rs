//! Snapshots, written to a file only when whole and verified: over gRPC first
//! (`Maintenance/Snapshot`, about twice as fast), through the gateway
//! (`POST /v3/maintenance/snapshot`) when the endpoint serves no gRPC.
//!
//! Whatever carries it, a snapshot stream is checked the same way and reaches its file the
//! same way: the data goes into a temporary file in the destination's directory, is
//! checked against its sha256 trailer, fsynced, and renamed into place only when the
//! stream checked out; on any error, timeout or cancellation the temporary file is removed.
//!
//! Layout:
//! - this file: [`Client::snapshot`] and [`Client::snapshot_from`] (which endpoint, which
//!   API, the fallback from gRPC to the gateway);
//! - `check`: what every stream must satisfy (`ChunkCheck`), the
//!   result ([`SnapshotInfo`]) and the errors;
//! - `grpc`: the gRPC messages, their decoder [`GrpcSnapshotStream`] and
//!   [`Client::snapshot_grpc_from`];
//! - `gateway`: the gateway's JSON lines, their decoder [`SnapshotStream`] and
//!   [`Client::snapshot_gateway_from`];
//! - `persist`: the one path to the file (temporary file, writer thread, fsync, rename,
//!   fsync of the directory), used by both.

pub(super) mod check;
mod gateway;
mod grpc;
mod persist;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::client::Client;
use super::error::EtcdError;
pub use check::{SnapshotDigest, SnapshotError, SnapshotInfo, SnapshotVia};
pub use gateway::SnapshotStream;
pub use grpc::GrpcSnapshotStream;

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
    /// the endpoint serves no gRPC (see [`crate::etcd::grpc::GrpcError::no_grpc_here`]), logged.
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
fn log_fallback(endpoint: &str, reason: &str) {
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

#[cfg(test)]
mod tests;
