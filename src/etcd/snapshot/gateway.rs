//! Snapshots through the gateway, for endpoints that serve no gRPC:
//! [`Client::snapshot_gateway_from`] and the pure decoder of its answer.
//!
//! The answer of `POST /v3/maintenance/snapshot` is newline-delimited JSON, one
//! `{"result":{"blob":..,"remaining_bytes":..}}` per line: 32 KiB of the member's database
//! per line, `remaining_bytes` counting down to 0 (then omitted), and one last line whose
//! blob is the 32-byte sha256 of everything before it. The file is every blob
//! concatenated, the sha256 included: byte-identical to `etcdctl snapshot save`, and
//! `etcdutl snapshot restore` checks that trailer.
//!
//! [`SnapshotStream`]: feed it body chunks as they come, write out what it returns, and
//! [`SnapshotStream::finish`] says whether the stream was whole and correct. Each line is
//! decoded on its own (every line's base64 has its own padding).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::check::{ChunkCheck, SnapshotDigest, SnapshotError, SnapshotInfo, SnapshotVia};
use super::persist::{Decoder, Ending, Part};
use crate::etcd::client::{decode_body, Client, Shape};
use crate::etcd::error::EtcdError;
use crate::etcd::wire::{self, api_error, b64, int};

#[derive(Deserialize)]
struct Line {
    result: Option<Chunk>,
}

/// A line that holds a result and nothing else (the fast path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataLine {
    result: Chunk,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Chunk {
    #[serde(with = "int")]
    remaining_bytes: u64,
    #[serde(with = "b64")]
    blob: Vec<u8>,
}

/// Reassembles a snapshot from the body of `/v3/maintenance/snapshot`, chunk by chunk.
#[derive(Debug, Clone)]
pub struct SnapshotStream {
    partial: Vec<u8>,
    check: ChunkCheck,
    lines: u64,
}

impl Default for SnapshotStream {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotStream {
    /// A stream with nothing received yet.
    pub fn new() -> Self {
        Self {
            partial: Vec::new(),
            check: ChunkCheck::default(),
            lines: 0,
        }
    }

    /// Takes the next chunk of the body (any size, split anywhere) and returns the snapshot
    /// bytes of the lines it completed, to be appended to the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(head, &mut out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line, &mut out)?;
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(out)
    }

    /// Ends the stream: returns the last bytes to write (from a final line without a
    /// newline) and the file's size and sha256, or why the stream is not a whole, correct
    /// snapshot.
    pub fn finish(mut self) -> Result<(Vec<u8>, SnapshotDigest), SnapshotError> {
        let mut out = Vec::new();
        let partial = std::mem::take(&mut self.partial);
        let partial_line = !partial.trim_ascii().is_empty();
        if partial_line {
            // A last line without its newline counts if it is complete JSON.
            if serde_json::from_slice::<serde_json::Value>(&partial).is_err() {
                return Err(self.truncated(true));
            }
            self.line(&partial, &mut out)?;
        }
        let truncated = self.truncated(false);
        let digest = self.check.digest().ok_or(truncated)?;
        Ok((out, digest))
    }

    fn truncated(&self, partial_line: bool) -> SnapshotError {
        SnapshotError::Truncated {
            received: self.check.size(),
            remaining: self.check.remaining(),
            partial_line,
        }
    }

    fn line(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), SnapshotError> {
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            return Ok(());
        }
        self.lines += 1;
        let line = self.lines;
        let bad = |reason: String| SnapshotError::BadLine { line, reason };
        // Ordinary data lines (`{"result":{...}}` and nothing else) are decoded in one pass:
        // they are 43 KB each and this is the whole cost of a snapshot beyond the network.
        let chunk = match serde_json::from_slice::<DataLine>(raw) {
            Ok(DataLine { result }) => result,
            Err(_) => {
                let value: serde_json::Value = serde_json::from_slice(raw)
                    .map_err(|e| bad(format!("not JSON ({e}): {}", wire::excerpt(raw))))?;
                if let Some((code, message)) = api_error(&value) {
                    return Err(SnapshotError::Server { code, message });
                }
                let parsed: Line = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                parsed
                    .result
                    .ok_or_else(|| bad(format!("no \"result\": {}", wire::excerpt(raw))))?
            }
        };
        self.check.chunk(line, chunk.remaining_bytes, &chunk.blob)?;
        out.extend_from_slice(&chunk.blob);
        Ok(())
    }
}

impl Decoder for SnapshotStream {
    fn pieces(&mut self, data: &[u8]) -> Result<Vec<Bytes>, SnapshotError> {
        Ok(vec![Bytes::from(self.feed(data)?)])
    }

    fn end(self) -> Result<Ending, SnapshotError> {
        let (tail, digest) = self.finish()?;
        Ok(Ending {
            tail,
            digest,
            version: None,
        })
    }
}

impl Client {
    /// Like [`Client::snapshot_from`], through the HTTP/JSON gateway only.
    pub async fn snapshot_gateway_from(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let endpoint = &self.endpoint_url(endpoint)?;
        let work = self.snapshot_inner(endpoint, dest, timeout);
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            // Dropping the work removed its temporary file.
            Err(_) => Err(EtcdError::Timeout {
                endpoint: endpoint.to_owned(),
                operation: "snapshot",
                after: timeout,
            }),
        }
    }

    async fn snapshot_inner(
        &self,
        endpoint: &str,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SnapshotInfo, EtcdError> {
        let path = "/v3/maintenance/snapshot";
        let mut response = self.open_snapshot(endpoint, path, timeout).await?;
        let part = Part::begin(dest, SnapshotStream::new())?;
        let received = async {
            while let Some(chunk) =
                response
                    .chunk()
                    .await
                    .map_err(|source| EtcdError::Transport {
                        endpoint: endpoint.to_owned(),
                        source,
                    })?
            {
                if !part.send(chunk).await {
                    // The writer stopped: its error says why.
                    break;
                }
            }
            Ok(())
        }
        .await;
        let Ending { digest, .. } = part.finish(endpoint, received).await?;
        tracing::info!(endpoint, path = %dest.display(), size = digest.size, via = "gateway", "snapshot written");
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            endpoint: endpoint.to_owned(),
            size: digest.size,
            sha256: digest.sha256,
            via: SnapshotVia::Gateway,
            storage_version: None,
        })
    }

    /// Starts the snapshot stream: an error before the first line (including auth) is read
    /// from the body; a token etcd rejects is fetched again once.
    async fn open_snapshot(
        &self,
        endpoint: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, EtcdError> {
        let mut fresh_token = false;
        loop {
            let token = self.token(endpoint).await?;
            let response = self
                .post(endpoint, path, b"{}".to_vec(), timeout, token.as_deref())
                .await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|source| EtcdError::Transport {
                    endpoint: endpoint.to_owned(),
                    source,
                })?;
            let err = match decode_body(endpoint, path, status, &body, Shape::Unary) {
                Err(err) => err,
                Ok(_) => EtcdError::Http {
                    endpoint: endpoint.to_owned(),
                    path: path.to_owned(),
                    status,
                    body: wire::excerpt(&body),
                },
            };
            if err.is_unauthenticated() && token.is_some() && !fresh_token {
                self.forget_token(token.as_deref());
                fresh_token = true;
                continue;
            }
            return Err(err);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
