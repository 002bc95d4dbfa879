//! The result of a snapshot ([`SnapshotInfo`]), its errors, and what a snapshot stream must
//! satisfy: each chunk's `remaining_bytes` counts down by the chunk's size to 0,
//! then exactly one more chunk comes, the 32-byte sha256 of everything before it, and
//! nothing after. `ChunkCheck` takes the decoded chunks in order and hashes as they pass,
//! so the file's sha256 costs no second pass.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// A snapshot written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Where it is.
    pub path: PathBuf,
    /// The member it came from.
    pub endpoint: String,
    /// Its size in bytes (the sha256 trailer included).
    pub size: u64,
    /// sha256 of the whole file.
    pub sha256: [u8; 32],
    /// The storage version the member sent with every message (3.6 on; `None` before 3.6,
    /// and on a new 3.6 member before etcd has written its storage version).
    pub storage_version: Option<String>,
}

impl SnapshotInfo {
    /// The sha256 as lower-case hex (as `sha256sum` prints it).
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// What was wrong with a snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// etcd ended the stream with an error status.
    #[error("etcd reported an error in the middle of the stream: {message} (code {code})")]
    Server {
        /// The gRPC code.
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// `remaining_bytes` does not count down by the size of each chunk.
    #[error("message {line} of the stream says {remaining} bytes remain, but {expected} were expected: the stream is inconsistent")]
    Inconsistent {
        /// 1-based message number.
        line: u64,
        /// What the message said.
        remaining: u64,
        /// What the previous messages imply.
        expected: u64,
    },
    /// The stream ended before the sha256 trailer.
    #[error("the stream ended early: {received} bytes received, {remaining} more expected, then the sha256 trailer")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// Bytes the last message said remain.
        remaining: u64,
    },
    /// The last chunk is not a 32-byte sha256.
    #[error("the last chunk should be the 32-byte sha256 of the snapshot, but it has {len} bytes")]
    BadTrailer {
        /// Its length.
        len: usize,
    },
    /// The sha256 trailer does not match the data.
    #[error("the snapshot's sha256 trailer {expected} does not match its data ({actual}): corrupted in transit")]
    ChecksumMismatch {
        /// The trailer, hex.
        expected: String,
        /// The sha256 of the data received, hex.
        actual: String,
    },
    /// More chunks after the trailer.
    #[error("message {line} of the stream comes after the sha256 trailer")]
    AfterTrailer {
        /// 1-based message number.
        line: u64,
    },
}

/// The size and sha256 of a whole snapshot file (its trailer included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotDigest {
    /// Bytes in the file.
    pub size: u64,
    /// sha256 of the whole file.
    pub sha256: [u8; 32],
}

/// Length of the sha256 trailer.
pub(crate) const TRAILER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Data chunks; the next one may be the first.
    Data,
    /// The last data chunk said 0 bytes remain: the next chunk is the trailer.
    Trailer,
    /// The trailer was received and checked.
    Done,
}

/// Checks a snapshot chunk by chunk: the count-down, the trailer, and nothing after it.
#[derive(Debug, Clone)]
pub(crate) struct ChunkCheck {
    /// sha256 of the data chunks (what the trailer must equal).
    data_hash: Sha256,
    /// sha256 of everything (the file), set once the trailer checked out.
    file_hash: Option<Sha256>,
    size: u64,
    remaining: Option<u64>,
    phase: Phase,
}

impl Default for ChunkCheck {
    fn default() -> Self {
        Self {
            data_hash: Sha256::new(),
            file_hash: None,
            size: 0,
            remaining: None,
            phase: Phase::Data,
        }
    }
}

impl ChunkCheck {
    /// Takes chunk number `index` (1-based, for messages); `blob` goes into the file as it
    /// is when this returns `Ok`.
    pub(crate) fn chunk(
        &mut self,
        index: u64,
        remaining_bytes: u64,
        blob: &[u8],
    ) -> Result<(), SnapshotError> {
        match self.phase {
            Phase::Data => {
                let len = blob.len() as u64;
                if let Some(before) = self.remaining {
                    let expected = before.checked_sub(len).ok_or(SnapshotError::Inconsistent {
                        line: index,
                        remaining: remaining_bytes,
                        expected: 0,
                    })?;
                    if remaining_bytes != expected {
                        return Err(SnapshotError::Inconsistent {
                            line: index,
                            remaining: remaining_bytes,
                            expected,
                        });
                    }
                }
                self.remaining = Some(remaining_bytes);
                if remaining_bytes == 0 {
                    self.phase = Phase::Trailer;
                }
                self.data_hash.update(blob);
            }
            Phase::Trailer => {
                if blob.len() != TRAILER_LEN {
                    return Err(SnapshotError::BadTrailer { len: blob.len() });
                }
                let actual: [u8; 32] = self.data_hash.clone().finalize().into();
                if actual[..] != blob[..] {
                    return Err(SnapshotError::ChecksumMismatch {
                        expected: hex::encode(blob),
                        actual: hex::encode(actual),
                    });
                }
                // The file's hash is the data's, continued over the trailer: one pass.
                let mut file_hash = self.data_hash.clone();
                file_hash.update(blob);
                self.file_hash = Some(file_hash);
                self.phase = Phase::Done;
            }
            Phase::Done => return Err(SnapshotError::AfterTrailer { line: index }),
        }
        self.size += blob.len() as u64;
        Ok(())
    }

    /// Bytes accepted so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// What the last data chunk said remains (0 before the first).
    pub(crate) fn remaining(&self) -> u64 {
        self.remaining.unwrap_or(0)
    }

    /// The file's size and sha256 once whole; `None` while the trailer is still missing.
    pub(crate) fn digest(self) -> Option<SnapshotDigest> {
        let size = self.size;
        self.file_hash.map(|hash| SnapshotDigest {
            size,
            sha256: hash.finalize().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 251) as u8).collect()
    }

    /// Feeds `data` in `chunk`-byte messages, then `trailer`.
    fn check(data: &[u8], chunk: usize, trailer: &[u8]) -> Result<ChunkCheck, SnapshotError> {
        let mut check = ChunkCheck::default();
        let mut sent = 0;
        let mut index = 0;
        for piece in data.chunks(chunk) {
            sent += piece.len();
            index += 1;
            check.chunk(index, (data.len() - sent) as u64, piece)?;
        }
        check.chunk(index + 1, 0, trailer)?;
        Ok(check)
    }

    #[test]
    fn a_whole_stream_gives_the_file_digest() {
        let data = data(100_000);
        let trailer = Sha256::digest(&data);
        let digest = check(&data, 32 * 1024, &trailer).unwrap().digest().unwrap();
        let mut file = data.clone();
        file.extend_from_slice(&trailer);
        assert_eq!(digest.size, file.len() as u64);
        assert_eq!(digest.sha256[..], Sha256::digest(&file)[..]);
    }

    #[test]
    fn bad_trailers_counts_and_extra_chunks_are_refused() {
        let data = data(70_000);
        let trailer = Sha256::digest(&data);
        assert!(matches!(
            check(&data, 32 * 1024, &[7u8; 32]),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            check(&data, 32 * 1024, &trailer[..31]),
            Err(SnapshotError::BadTrailer { len: 31 })
        ));
        let mut c = check(&data, 32 * 1024, &trailer).unwrap();
        assert!(matches!(
            c.chunk(9, 0, b"x"),
            Err(SnapshotError::AfterTrailer { line: 9 })
        ));
        let mut c = ChunkCheck::default();
        c.chunk(1, 100, &[0u8; 10]).unwrap();
        assert!(matches!(
            c.chunk(2, 95, &[0u8; 10]),
            Err(SnapshotError::Inconsistent { expected: 90, .. })
        ));
    }

    #[test]
    fn a_stream_without_its_trailer_has_no_digest() {
        let mut c = ChunkCheck::default();
        c.chunk(1, 0, b"abc").unwrap();
        assert_eq!(c.size(), 3);
        assert!(c.digest().is_none());
    }
}
