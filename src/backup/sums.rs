//! The files of a backup directory, `SHA256SUMS` (sha256sum's format), and hashing: plain
//! files, and `snapshot.db` with its own sha256 trailer checked in the same pass.
//!
//! `SHA256SUMS` lists every other file of the backup, one `HEX  relative/path` line each,
//! sorted by path, so `sha256sum -c SHA256SUMS` run inside the directory checks it with
//! standard tools too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::digest::sha256_read;
pub(crate) use crate::durable::drop_cache;
use crate::durable::IoError;

use super::progress::Progress;

/// The checksum list, written last.
pub const SUMS: &str = "SHA256SUMS";
/// What, whose and when.
pub const META: &str = "meta.json";
/// The snapshot through the API.
pub const SNAPSHOT: &str = "snapshot.db";
/// The cold copy of the data dir.
pub const DATA: &str = "data";

/// Length of a snapshot's sha256 trailer.
const TRAILER_LEN: usize = 32;

/// Read buffer: large enough that syscalls do not dominate, small enough to stay in cache.
pub(crate) const BUF_LEN: usize = 1024 * 1024;

/// Relative path → lower-case hex sha256, sorted by path.
pub(crate) type Sums = BTreeMap<String, String>;

/// `SHA256SUMS` text for `sums`.
pub(crate) fn render(sums: &Sums) -> String {
    sums.iter()
        .map(|(path, hex)| format!("{hex}  {path}\n"))
        .collect()
}

/// Reads `SHA256SUMS` text; on error, the 1-based line and what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<Sums, (usize, String)> {
    let mut sums = Sums::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (hex, rest) = line
            .split_at_checked(64)
            .ok_or_else(|| (n, "too short for a sha256 and a file name".to_owned()))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err((n, "does not start with a 64-digit hex sha256".to_owned()));
        }
        // sha256sum writes two spaces, or " *" for binary mode.
        let path = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| {
                (
                    n,
                    "expected two spaces between the sha256 and the name".to_owned(),
                )
            })?;
        if !is_safe_relative(path) || path == SUMS {
            return Err((n, format!("{path:?} is not a file inside the backup")));
        }
        if sums
            .insert(path.to_owned(), hex.to_ascii_lowercase())
            .is_some()
        {
            return Err((n, format!("{path} is listed twice")));
        }
    }
    Ok(sums)
}

/// A relative path with no `.`/`..`/empty components, and nothing sha256sum would escape.
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains(['\\', '\n', '\r'])
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A file's sha256 and length; for a snapshot, also whether its trailer matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileHash {
    /// Lower-case hex sha256 of the whole file.
    pub sha256: String,
    /// Bytes read.
    pub len: u64,
    /// For a snapshot: whether the last 32 bytes are the sha256 of everything before them.
    pub trailer_ok: Option<bool>,
}

/// Hashes `path` (checking the snapshot trailer when `snapshot`), counting into `progress`,
/// then drops the file from the page cache when `drop` (a verification pass must not evict
/// etcd's data).
pub(crate) fn hash_file(
    path: &Path,
    snapshot: bool,
    drop: bool,
    progress: &mut Progress,
) -> io::Result<FileHash> {
    let mut file = File::open(path)?;
    let mut trailer = snapshot.then(TrailerCheck::default);
    let (sha256, len) = sha256_read(&mut file, |piece| {
        if let Some(t) = trailer.as_mut() {
            t.update(piece);
        }
        progress.add(piece.len() as u64);
    })?;
    if drop {
        drop_cache(&file);
    }
    Ok(FileHash {
        sha256,
        len,
        trailer_ok: trailer.map(TrailerCheck::matches),
    })
}

/// sha256 of everything but the last 32 bytes, and those 32 bytes, in one streaming pass.
#[derive(Default)]
struct TrailerCheck {
    data: Sha256,
    /// The last (up to) 32 bytes seen: not yet known to be data.
    tail: Vec<u8>,
}

impl TrailerCheck {
    fn update(&mut self, chunk: &[u8]) {
        let total = self.tail.len() + chunk.len();
        if total <= TRAILER_LEN {
            self.tail.extend_from_slice(chunk);
            return;
        }
        // Everything but the last 32 bytes of tail+chunk is data.
        let feed = total - TRAILER_LEN;
        if feed <= self.tail.len() {
            self.data.update(&self.tail[..feed]);
            self.tail.drain(..feed);
            self.tail.extend_from_slice(chunk);
        } else {
            self.data.update(&self.tail);
            let from_chunk = feed - self.tail.len();
            self.data.update(&chunk[..from_chunk]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[from_chunk..]);
        }
    }

    fn matches(self) -> bool {
        self.tail.len() == TRAILER_LEN && self.data.finalize()[..] == self.tail[..]
    }
}

/// Drops every file directly in `dir` from the page cache. Best effort.
pub(crate) fn drop_cached_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Ok(file) = File::open(entry.path()) {
            drop_cache(&file);
        }
    }
}

/// Writes a new file (never replaces one) with `mode`, fsyncs it and drops it from the cache.
pub(crate) fn write_new_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoError> {
    let file = crate::durable::write_new_synced(path, bytes, mode)?;
    drop_cache(&file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    fn snapshot_bytes(data_len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..data_len).map(|i| (i * 31 % 251) as u8).collect();
        let sha = Sha256::digest(&data);
        data.extend_from_slice(&sha);
        data
    }

    fn check(bytes: &[u8], chunk: usize) -> bool {
        let mut t = TrailerCheck::default();
        for piece in bytes.chunks(chunk.max(1)) {
            t.update(piece);
        }
        t.matches()
    }

    #[test]
    fn trailer_check_any_chunking() {
        for data_len in [0, 1, 31, 32, 33, 1000, 70_000] {
            let good = snapshot_bytes(data_len);
            for chunk in [1, 7, 31, 32, 33, 4096, good.len()] {
                assert!(check(&good, chunk), "len {data_len} chunk {chunk}");
                let mut bad = good.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(
                    !check(&bad, chunk),
                    "trailer flip, len {data_len} chunk {chunk}"
                );
                if data_len > 0 {
                    let mut bad = good.clone();
                    bad[0] ^= 1;
                    assert!(
                        !check(&bad, chunk),
                        "data flip, len {data_len} chunk {chunk}"
                    );
                }
            }
        }
        assert!(!check(&[0u8; 31], 5), "shorter than a trailer");
    }

    #[test]
    fn hash_file_reports_sha_len_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.db");
        let bytes = snapshot_bytes(3 * BUF_LEN + 17);
        std::fs::write(&path, &bytes).unwrap();
        let mut p = Progress::new("test", bytes.len() as u64);
        let h = hash_file(&path, true, true, &mut p).unwrap();
        assert_eq!(h.sha256, sha256_hex(&bytes));
        assert_eq!(h.len, bytes.len() as u64);
        assert_eq!(h.trailer_ok, Some(true));
        assert_eq!(p.done(), bytes.len() as u64);
        let plain = hash_file(&path, false, true, &mut p).unwrap();
        assert_eq!(plain.trailer_ok, None);
    }

    #[test]
    fn sums_round_trip_and_refuse_bad_lines() {
        let mut sums = Sums::new();
        sums.insert("snapshot.db".into(), "a".repeat(64));
        sums.insert("data/member/snap/db".into(), "b".repeat(64));
        sums.insert("meta.json".into(), "c".repeat(64));
        let text = render(&sums);
        assert_eq!(
            text.lines().map(|l| &l[66..]).collect::<Vec<_>>(),
            ["data/member/snap/db", "meta.json", "snapshot.db"]
        );
        assert_eq!(parse(&text).unwrap(), sums);
        // Upper case and sha256sum's binary marker are accepted.
        let upper = format!("{}  x\n{} *y\n", "A".repeat(64), "b".repeat(64));
        let parsed = parse(&upper).unwrap();
        assert_eq!(parsed["x"], "a".repeat(64));
        assert!(parsed.contains_key("y"));

        let h = "0".repeat(64);
        for (text, line) in [
            (format!("{h}  ok\nshort\n"), 2),
            (format!("{}  x\n", "g".repeat(64)), 1),
            (format!("{h} x\n"), 1),
            (format!("{h}  /etc/passwd\n"), 1),
            (format!("{h}  ../x\n"), 1),
            (format!("{h}  a//b\n"), 1),
            (format!("{h}  SHA256SUMS\n"), 1),
            (format!("{h}  x\n{h}  x\n"), 2),
        ] {
            assert_eq!(parse(&text).unwrap_err().0, line, "{text}");
        }
    }
}
