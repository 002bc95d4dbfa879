//! Upstream release tarballs dropped into staging (`etcd-vX.Y.Z-linux-ARCH.tar.gz`, verified
//! by its own `.sha256` or a line in upstream's `SHA256SUMS`).
//!
//! The tarball itself passes checks 1-5 like any staged file (regular file, owner, mode,
//! not empty, sha256). Only then is it read, entry by entry, from the same open descriptor:
//! every entry is checked ([`check_entry`]) before anything of it is written, and only
//! `etcd`, `etcdctl` and `etcdutl` in the top directory `etcd-vX.Y.Z-linux-ARCH/` are
//! written out, into a private (0700) scratch dir under `versions/` (the same filesystem as
//! the pinned versions). Everything else (README, Documentation/) is read past, never
//! written. Refused, naming the entry:
//!
//! - a path that is absolute or has a `..` component (traversal);
//! - any link entry, symbolic or hard, wherever it is: a link is never a file we could
//!   use, and refusing every one keeps the rule simple to state;
//! - device files, fifos, sparse files and any other special entry;
//! - an entry over [`MAX_ENTRY`], more than [`MAX_TOTAL`] in all, or more than
//!   [`MAX_ENTRIES`] entries; the decompressed stream itself is capped a little above
//!   [`MAX_TOTAL`] (a decompression bomb stops there, not at a full disk or memory);
//! - a member of ours twice (which one would run?), an archive without `etcd`, and an
//!   archive that is cut short or corrupt (the gzip stream is read to its end, so its CRC
//!   and length are checked too).
//!
//! The extracted files then go through the bare binary's path: copied into the pending
//! version dir and hashed again, the private copy of `etcd` probed with `--version`, and
//! the version it reports must be the one in the tarball's name.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::protocol::COMPANIONS;

/// Largest single entry (etcd itself is 20-30 MB).
pub const MAX_ENTRY: u64 = 256 * 1024 * 1024;
/// Largest sum of all entries (an upstream tarball unpacks to well under 100 MB).
pub const MAX_TOTAL: u64 = 512 * 1024 * 1024;
/// Most entries (an upstream tarball has a few dozen).
pub const MAX_ENTRIES: usize = 10_000;
/// Decompressed bytes allowed beyond the entries' sizes: headers, padding, end blocks.
/// tar reads a GNU long name or PAX header whole, before we see its entry: the cap on the
/// decompressed stream is what bounds those.
const STREAM_SLACK: u64 = 16 * 1024 * 1024;

/// The limits one archive is read under.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Sum of the entries' sizes.
    pub total: u64,
    /// Number of entries.
    pub entries: usize,
    /// Decompressed bytes in all.
    pub stream: u64,
}

impl Limits {
    /// The limits of a staged release tarball.
    pub(super) const RELEASE: Limits = Limits {
        total: MAX_TOTAL,
        entries: MAX_ENTRIES,
        stream: MAX_TOTAL + STREAM_SLACK,
    };
}

/// A reader that fails once more than `left` bytes would come out of it, and says so in
/// `tripped` (the error itself goes through tar and gzip, which may reword it).
struct Capped<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the cap: only a true end of stream is fine.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.tripped.set(true);
            return Err(io::Error::other(
                "the archive unpacks to more than its limit",
            ));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The server binary's name inside the tarball; companions are [`COMPANIONS`].
pub(super) const SERVER: &str = "etcd";

/// What is wrong with a tarball's contents: one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveProblem {
    /// An absolute path or a `..` component.
    #[error("entry {entry:?} points outside the archive's directory (absolute path or `..`); refused without extracting anything: use upstream's tarball as downloaded")]
    Traversal {
        /// The entry's path.
        entry: String,
    },
    /// A symbolic or hard link.
    #[error("entry {entry:?} is a {kind} to {target:?}; link entries are refused (an upstream tarball has none): use upstream's tarball as downloaded")]
    Link {
        /// The entry's path.
        entry: String,
        /// "symlink" or "hard link".
        kind: &'static str,
        /// What it points at.
        target: String,
    },
    /// A device, fifo, sparse file or unknown entry type.
    #[error("entry {entry:?} is a {kind}, not a regular file or directory; refused: use upstream's tarball as downloaded")]
    Special {
        /// The entry's path.
        entry: String,
        /// What it is.
        kind: &'static str,
    },
    /// One entry is larger than [`MAX_ENTRY`].
    #[error("entry {entry:?} is {size} bytes, over the limit of {limit} per entry; refused: is this an etcd release tarball?")]
    EntryTooLarge {
        /// The entry's path.
        entry: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The entries add up to more than [`MAX_TOTAL`].
    #[error(
        "the archive unpacks to more than {limit} bytes; refused: is this an etcd release tarball?"
    )]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// More than [`MAX_ENTRIES`] entries.
    #[error(
        "the archive has more than {limit} entries; refused: is this an etcd release tarball?"
    )]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// A member we use appears twice.
    #[error("entry {entry:?} appears twice; refused, as it is unclear which one would run")]
    Duplicate {
        /// The entry's path.
        entry: String,
    },
    /// Not a gzip-compressed tar archive, or cut short.
    #[error("the archive is corrupt or incomplete ({detail}); download it again and stage it with its checksum")]
    Corrupt {
        /// What the reader said.
        detail: String,
    },
    /// No `etcd` in the top directory.
    #[error("the archive has no {top}/etcd; stage upstream's etcd-vX.Y.Z-linux-ARCH.tar.gz unchanged (or extract etcd and stage the binary)")]
    NoEtcd {
        /// The expected top directory.
        top: String,
    },
    /// The binary reports another version than the tarball's name.
    #[error("its etcd reports version {reported}, but the tarball is named for {named}; refused: rename nothing, stage upstream's tarball as downloaded")]
    VersionMismatch {
        /// The version in the file name.
        named: String,
        /// What `etcd --version` printed.
        reported: String,
    },
}

impl ArchiveProblem {
    /// A short name of the rule, for logs and tests.
    pub fn rule(&self) -> &'static str {
        match self {
            ArchiveProblem::Traversal { .. } => "archive-traversal",
            ArchiveProblem::Link { .. } => "archive-link",
            ArchiveProblem::Special { .. } => "archive-special-file",
            ArchiveProblem::EntryTooLarge { .. } => "archive-entry-too-large",
            ArchiveProblem::TooLarge { .. } => "archive-too-large",
            ArchiveProblem::TooManyEntries { .. } => "archive-too-many-entries",
            ArchiveProblem::Duplicate { .. } => "archive-duplicate",
            ArchiveProblem::Corrupt { .. } => "archive-corrupt",
            ArchiveProblem::NoEtcd { .. } => "archive-no-etcd",
            ArchiveProblem::VersionMismatch { .. } => "archive-version-mismatch",
        }
    }
}

/// What [`check_entry`] makes of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryUse {
    /// Read past, never written (a directory, docs, a PAX global header).
    Skip,
    /// One of ours, written out under this name.
    Extract(&'static str),
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The rules for one entry, from its header alone: path, type and size. `link` is the
/// link target, when the header has one.
pub fn check_entry(
    top: &str,
    path: &[u8],
    kind: EntryType,
    size: u64,
    link: Option<&[u8]>,
) -> Result<EntryUse, ArchiveProblem> {
    let entry = lossy(path);
    let as_path = Path::new(OsStr::from_bytes(path));
    let mut parts = Vec::new();
    for component in as_path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveProblem::Traversal { entry })
            }
        }
    }
    let link_kind = match kind {
        EntryType::Symlink => Some("symlink"),
        EntryType::Link => Some("hard link"),
        _ => None,
    };
    if let Some(link_kind) = link_kind {
        return Err(ArchiveProblem::Link {
            entry,
            kind: link_kind,
            target: link.map(lossy).unwrap_or_default(),
        });
    }
    let special = match kind {
        EntryType::Regular | EntryType::Continuous => None,
        EntryType::Directory | EntryType::XGlobalHeader => return Ok(EntryUse::Skip),
        EntryType::Char | EntryType::Block => Some("device file"),
        EntryType::Fifo => Some("fifo"),
        EntryType::GNUSparse => Some("sparse file"),
        _ => Some("special entry"),
    };
    if let Some(kind) = special {
        return Err(ArchiveProblem::Special { entry, kind });
    }
    if size > MAX_ENTRY {
        return Err(ArchiveProblem::EntryTooLarge {
            entry,
            size,
            limit: MAX_ENTRY,
        });
    }
    let ours = match parts.as_slice() {
        [dir, file] if dir.as_encoded_bytes() == top.as_bytes() => std::iter::once(SERVER)
            .chain(COMPANIONS)
            .find(|tool| file.as_encoded_bytes() == tool.as_bytes()),
        _ => None,
    };
    Ok(ours.map_or(EntryUse::Skip, EntryUse::Extract))
}

/// A member written out of the archive.
#[derive(Debug)]
pub(super) struct Extracted {
    /// `etcd`, `etcdctl` or `etcdutl`.
    pub tool: &'static str,
    /// Where it was written.
    pub path: PathBuf,
    /// Its sha256, computed while it was written.
    pub sha256: String,
}

/// Reads the whole archive from `source`, checking every entry, and writes our members
/// into `scratch` (0700 files, created fresh). The gzip stream is read to its end.
pub(super) fn extract(
    source: impl Read,
    top: &str,
    scratch: &Path,
    limits: Limits,
) -> Result<Result<Vec<Extracted>, ArchiveProblem>, io::Error> {
    let tripped = Rc::new(Cell::new(false));
    let corrupt = |e: io::Error| {
        if tripped.get() {
            ArchiveProblem::TooLarge {
                limit: limits.total,
            }
        } else {
            ArchiveProblem::Corrupt {
                detail: e.to_string(),
            }
        }
    };
    let mut archive = tar::Archive::new(Capped {
        inner: flate2::read::GzDecoder::new(BufReader::new(source)),
        left: limits.stream,
        tripped: tripped.clone(),
    });
    let mut out: Vec<Extracted> = Vec::new();
    let mut total = 0u64;
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return Ok(Err(corrupt(e))),
    };
    for (n, entry) in entries.enumerate() {
        if n >= limits.entries {
            return Ok(Err(ArchiveProblem::TooManyEntries {
                limit: limits.entries,
            }));
        }
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Ok(Err(corrupt(e))),
        };
        let size = entry.size();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let tool = match check_entry(top, &path, kind, size, link.as_deref()) {
            Ok(EntryUse::Skip) => None,
            Ok(EntryUse::Extract(tool)) => Some(tool),
            Err(problem) => return Ok(Err(problem)),
        };
        total = total.saturating_add(size);
        if total > limits.total {
            return Ok(Err(ArchiveProblem::TooLarge {
                limit: limits.total,
            }));
        }
        let Some(tool) = tool else {
            // Read past it (tar does), so a corrupt stream is found wherever it is.
            if let Err(e) = io::copy(&mut entry, &mut io::sink()) {
                return Ok(Err(corrupt(e)));
            }
            continue;
        };
        if out.iter().any(|x| x.tool == tool) {
            return Ok(Err(ArchiveProblem::Duplicate {
                entry: lossy(&path),
            }));
        }
        let dest = scratch.join(tool);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&dest)?;
        let mut writer = HashingWriter {
            inner: file,
            hasher: Sha256::new(),
        };
        let written = match io::copy(&mut entry, &mut writer) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::StorageFull => return Err(e),
            Err(e) => return Ok(Err(corrupt(e))),
        };
        if written != size {
            return Ok(Err(ArchiveProblem::Corrupt {
                detail: format!("{} ends after {written} of its {size} bytes", lossy(&path)),
            }));
        }
        out.push(Extracted {
            tool,
            path: dest,
            sha256: hex::encode(writer.hasher.finalize()),
        });
    }
    // The rest of the stream (tar's end blocks, the gzip trailer with its CRC and length):
    // an archive cut short fails here even when it was cut between two entries.
    if let Err(e) = io::copy(&mut archive.into_inner(), &mut io::sink()) {
        return Ok(Err(corrupt(e)));
    }
    if !out.iter().any(|x| x.tool == SERVER) {
        return Ok(Err(ArchiveProblem::NoEtcd {
            top: top.to_owned(),
        }));
    }
    Ok(Ok(out))
}

/// Hashes what is extracted as it is written (rather than `digest::sha256_of` on the file
/// afterwards): each tool is read once, out of the archive.
struct HashingWriter {
    inner: File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
