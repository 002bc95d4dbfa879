//! Snapshots over gRPC, `etcdserverpb.Maintenance/Snapshot`: the messages (written by hand,
//! four fields), [`GrpcSnapshotStream`] (the pure decoder: framing, protobuf, and the checks
//! every snapshot stream gets, `check`), and [`Client::snapshot_grpc_from`]. The connection
//! and the call's framing and status are `etcd::grpc`'s.
//!
//! The stream: `SnapshotResponse { remaining_bytes, blob }` with 32 KiB of the database
//! each, counting down to 0, then one message whose blob is the sha256 of all the data;
//! on 3.6 each message also carries the storage `version`. The file is every blob in order,
//! the trailer included, as `etcdctl snapshot save` writes it. The async side moves HTTP/2
//! data to the writer (`persist`), releasing flow-control window as it goes; the file is
//! renamed into place only once the call's status said OK and the decoder accepted the
//! trailer.

use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

use super::check::{ChunkCheck, SnapshotDigest, SnapshotError, SnapshotInfo, SnapshotVia};
use super::persist::{Decoder, Ending, Part};
use crate::etcd::client::Client;
use crate::etcd::error::EtcdError;
use crate::etcd::grpc::{self as call, connect, GrpcError};

/// The method's path.
const METHOD: &str = "/etcdserverpb.Maintenance/Snapshot";

/// Largest message accepted: etcd sends 32 KiB chunks; anything near this is not a chunk.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// `etcdserverpb.SnapshotRequest`: no fields.
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotRequest {}

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, Message)]
pub struct ResponseHeader {
    /// Cluster id.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// Member id.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// Store revision.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// Raft term.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.SnapshotResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SnapshotResponse {
    /// Header (etcd leaves it empty).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Blob bytes still to come after this message.
    #[prost(uint64, tag = "2")]
    pub remaining_bytes: u64,
    /// This chunk.
    #[prost(bytes = "bytes", tag = "3")]
    pub blob: Bytes,
    /// The member's storage version (3.6 on).
    #[prost(string, tag = "4")]
    pub version: String,
}

/// Reassembles a snapshot from the gRPC answer's body, chunk by chunk.
#[derive(Debug, Default)]
pub struct GrpcSnapshotStream {
    partial: BytesMut,
    check: ChunkCheck,
    messages: u64,
    version: Option<String>,
}

impl GrpcSnapshotStream {
    /// A stream with nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the body (split anywhere) and returns the blobs of the
    /// messages it completed, in order, to be appended to the file.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Bytes>, SnapshotError> {
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        while self.partial.len() >= 5 {
            let compressed = self.partial[0];
            let len = u32::from_be_bytes([
                self.partial[1],
                self.partial[2],
                self.partial[3],
                self.partial[4],
            ]) as usize;
            let index = self.messages + 1;
            let bad = |reason: String| SnapshotError::BadMessage {
                message: index,
                reason,
            };
            if compressed != 0 {
                return Err(bad(format!(
                    "compressed (flag {compressed}), but no compression was offered"
                )));
            }
            if len > MAX_MESSAGE {
                return Err(bad(format!("{len} bytes long")));
            }
            if self.partial.len() < 5 + len {
                break;
            }
            self.partial.advance(5);
            let body = self.partial.split_to(len).freeze();
            let response = SnapshotResponse::decode(body).map_err(|e| bad(e.to_string()))?;
            self.messages = index;
            self.check
                .chunk(index, response.remaining_bytes, &response.blob)?;
            if !response.version.is_empty() && self.version.is_none() {
                self.version = Some(response.version);
            }
            out.push(response.blob);
        }
        Ok(out)
    }

    /// Ends the stream (the call's status was OK): the file's size and sha256, or why the
    /// stream is not a whole, correct snapshot.
    pub fn finish(self) -> Result<SnapshotDigest, SnapshotError> {
        let truncated = SnapshotError::Truncated {
            received: self.check.size(),
            remaining: self.check.remaining(),
            partial_line: !self.partial.is_empty(),
        };
        if !self.partial.is_empty() {
            return Err(truncated);
        }
        self.check.digest().ok_or(truncated)
    }

    /// The storage version the member sent (3.6 on).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// A failed gRPC snapshot, and whether it means the endpoint serves no gRPC.
pub(super) struct GrpcSnapshotFailure {
    /// What went wrong.
    pub(super) err: EtcdError,
    /// Set when the gateway should be tried instead: why.
    pub(super) no_grpc: Option<String>,
}

impl From<EtcdError> for GrpcSnapshotFailure {
    fn from(err: EtcdError) -> Self {
        Self { err, no_grpc: None }
    }
}

impl Client {
    /// Streams a snapshot of the member at `endpoint` into `dest` over gRPC only (no
    /// gateway fallback), within `timeout`; otherwise as [`Client::snapshot_from`].
    pub async fn snapshot_grpc_from(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let endpoint = &self.endpoint_url(endpoint)?;
        self.snapshot_grpc_attempt(endpoint, dest, timeout)
            .await
            .map_err(|f| f.err)
    }

    /// One gRPC snapshot of a normalized endpoint, within `timeout`.
    pub(super) async fn snapshot_grpc_attempt(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, GrpcSnapshotFailure> {
        match tokio::time::timeout(timeout, self.snapshot_grpc_inner(endpoint, dest)).await {
            Ok(result) => result,
            // Dropping the work dropped the part, which removed its file.
            Err(_) => Err(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation: "snapshot",
                after: timeout,
            }
            .into()),
        }
    }

    async fn snapshot_grpc_inner(
        &self,
        endpoint: &str,
        dest: &Path,
    ) -> Result<SnapshotInfo, GrpcSnapshotFailure> {
        let grpc = |source| EtcdError::Grpc {
            endpoint: endpoint.to_owned(),
            source,
        };
        let (files, connect_timeout) = self.connect_settings();
        let request = SnapshotRequest {}.encode_to_vec();
        let mut fresh_token = false;
        let (_connection, first, mut body) = loop {
            let token = self.token(endpoint).await?;
            let mut connection = connect(endpoint, files, connect_timeout)
                .await
                .map_err(|e| match e {
                    GrpcError::Setup(text) => EtcdError::Setup(text),
                    other => grpc(other),
                })?;
            match connection
                .server_stream(METHOD, &request, token.as_deref())
                .await
            {
                Ok(stream) => break (connection, stream.first, stream.body),
                Err(GrpcError::Status { code, message }) => {
                    let no_grpc = GrpcError::Status {
                        code,
                        message: message.clone(),
                    }
                    .no_grpc_here();
                    let err = EtcdError::Api {
                        endpoint: endpoint.to_owned(),
                        code,
                        message,
                    };
                    if err.is_unauthenticated() && token.is_some() && !fresh_token {
                        tracing::debug!(endpoint, %err, "etcd rejected the auth token; fetching a new one");
                        self.forget_token(token.as_deref());
                        fresh_token = true;
                        continue;
                    }
                    return Err(GrpcSnapshotFailure { err, no_grpc });
                }
                Err(other) => {
                    let no_grpc = other.no_grpc_here();
                    return Err(GrpcSnapshotFailure {
                        err: grpc(other),
                        no_grpc,
                    });
                }
            }
        };

        let part = Part::begin(dest, GrpcSnapshotStream::new())?;
        let received = async {
            let Some(first) = first else {
                // Ended OK without a message: the writer finds the stream truncated.
                return Ok(());
            };
            if !part.send(first).await {
                return Ok(());
            }
            while let Some(data) = body.data().await {
                let data = data.map_err(|e| grpc(GrpcError::Http2(e)))?;
                let _ = body.flow_control().release_capacity(data.len());
                if !part.send(data).await {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
            }
            let trailers = body
                .trailers()
                .await
                .map_err(|e| grpc(GrpcError::Http2(e)))?
                .unwrap_or_default();
            call::status(&trailers).map_err(|e| match e {
                GrpcError::Status { code, message } => EtcdError::Snapshot {
                    endpoint: endpoint.to_owned(),
                    source: SnapshotError::Server { code, message },
                },
                other => grpc(other),
            })
        }
        .await;
        let Ending {
            digest, version, ..
        } = part.finish(endpoint, received).await?;
        tracing::info!(
            endpoint,
            path = %dest.display(),
            size = digest.size,
            storage_version = version.as_deref().unwrap_or(""),
            via = "gRPC",
            "snapshot written"
        );
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            endpoint: endpoint.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            via: SnapshotVia::Grpc,
            storage_version: version,
        })
    }
}

impl Decoder for GrpcSnapshotStream {
    fn pieces(&mut self, data: &[u8]) -> Result<Vec<Bytes>, SnapshotError> {
        self.feed(data)
    }

    fn end(self) -> Result<Ending, SnapshotError> {
        let version = self.version.clone();
        Ok(Ending {
            tail: Vec::new(),
            digest: self.finish()?,
            version,
        })
    }
}

#[cfg(test)]
mod tests;
