//! sha256 of files and bytes as lower-case hex (as `sha256sum` prints it): the one
//! read-and-hash loop, [`sha256_read`], and [`sha256_of`] for a file by path.
//!
//! Code that hashes bytes while it does something else with them keeps its own hasher, so
//! the data is read once: the cold copy's read/write fallback (`backup::copy`), staging's
//! copy into the versions store (`staging::stage`), the tarball extraction
//! (`staging::tarball`), and the snapshot stream check (`etcd::snapshot::check`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::durable::{io_err, IoError};

/// Bytes read at a time: large enough that the syscalls cost nothing next to the hashing.
const BUF_LEN: usize = 1024 * 1024;

/// Hex sha256 of the file at `path`.
pub fn sha256_of(path: &Path) -> Result<String, IoError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let (hex, _) = sha256_read(&mut file, |_| {}).map_err(io_err("reading", path))?;
    Ok(hex)
}

/// Hex sha256 and length of everything `reader` yields. `each` sees every piece as it
/// passes (a second check, progress), so nothing has to be read twice.
pub fn sha256_read(
    reader: &mut impl Read,
    mut each: impl FnMut(&[u8]),
) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_LEN];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        each(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}

/// Hex sha256 of bytes in memory.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_hashes_as_its_bytes_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, BUF_LEN - 1, BUF_LEN, 2 * BUF_LEN + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(sha256_of(&path).unwrap(), sha256_hex(&bytes), "{len} bytes");
            let mut seen = Vec::new();
            let (hex, read) = sha256_read(&mut File::open(&path).unwrap(), |c| {
                seen.extend_from_slice(c)
            })
            .unwrap();
            assert_eq!((hex, read), (sha256_hex(&bytes), len as u64));
            assert_eq!(seen, bytes, "{len} bytes");
        }
        // As `sha256sum` prints it.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = sha256_of(&path).unwrap_err();
        assert_eq!(err.action, "opening");
        assert_eq!(err.path, path);
    }
}
