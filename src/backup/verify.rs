//! Verification of a backup directory, as `verify-backup` and the writer itself run it.
//!
//! A backup verifies when, in this order (the first failure is the one reported, naming the
//! file):
//! 1. the directory and `SHA256SUMS` exist and every line of it is well formed;
//! 2. the files present are exactly the files listed (nothing missing, nothing extra, no
//!    symlinks or special files), in path order;
//! 3. every listed file hashes to its line, in path order; `snapshot.db`'s last 32 bytes
//!    are also the sha256 of everything before them (etcd's own trailer, which
//!    `snapshot status` never checks but `snapshot restore` does);
//! 4. `meta.json` reads, and agrees with the files (its mode, the snapshot's sha256 and size).
//!
//! An extra file fails verification rather than warning: a backup must be exactly what its
//! checksum list says, or nobody can tell what a restore would use.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::meta::{self, Meta};
use super::progress::Progress;
use super::sums::{self, hash_file, DATA, META, SNAPSHOT, SUMS};

/// Why a backup does not verify. Each message starts with the file it is about (relative to
/// the backup directory).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory does not exist.
    #[error("{}: no such backup directory", .0.display())]
    NoDir(PathBuf),
    /// The path is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADir(PathBuf),
    /// No checksum list: an unfinished backup, or not a backup at all.
    #[error("SHA256SUMS: missing (an unfinished backup, or not a backup directory)")]
    MissingSums,
    /// A malformed line in the checksum list.
    #[error("SHA256SUMS: line {line}: {reason}")]
    BadSums {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A listed file is not there.
    #[error("{file}: listed in SHA256SUMS but missing")]
    Missing {
        /// The file.
        file: String,
    },
    /// A file that the checksum list does not mention.
    #[error("{file}: not listed in SHA256SUMS (a backup holds exactly what it lists)")]
    Unlisted {
        /// The file.
        file: String,
    },
    /// A symlink, socket, fifo or device inside the backup.
    #[error("{file}: not a regular file or directory")]
    NotRegular {
        /// The entry.
        file: String,
    },
    /// The file's content differs from what was written.
    #[error("{file}: sha256 mismatch (SHA256SUMS says {expected}, the file has {actual})")]
    Mismatch {
        /// The file.
        file: String,
        /// The sha256 listed.
        expected: String,
        /// The sha256 found.
        actual: String,
    },
    /// The snapshot's own sha256 trailer does not match its data.
    #[error("{file}: bad sha256 trailer (the last 32 bytes are not the sha256 of the rest): the snapshot is corrupt")]
    BadTrailer {
        /// The file.
        file: String,
    },
    /// meta.json is missing, unreadable or from a newer layout.
    #[error("meta.json: {reason}")]
    Meta {
        /// What is wrong.
        reason: String,
    },
    /// meta.json and the files disagree.
    #[error("{file}: {reason}")]
    Inconsistent {
        /// The file in question.
        file: String,
        /// How they disagree.
        reason: String,
    },
    /// A file or directory could not be read.
    #[error("{file}: cannot read it: {source}")]
    Io {
        /// The file (relative) or the directory.
        file: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A backup that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its directory.
    pub dir: PathBuf,
    /// Its meta.json.
    pub meta: Meta,
    /// Files listed and checked (SHA256SUMS itself not counted).
    pub files: usize,
    /// Bytes checked.
    pub bytes: u64,
}

impl Verified {
    /// One line for an operator.
    pub fn summary(&self) -> String {
        let m = &self.meta;
        let versions = match &m.to_version {
            Some(to) => format!("{} -> {to}", m.from_version),
            None => m.from_version.clone(),
        };
        let snapshot = m.snapshot.as_ref().map_or(String::new(), |s| {
            format!(", snapshot sha256 {}", &s.sha256[..s.sha256.len().min(16)])
        });
        format!(
            "backup {} verified: member {} ({}), cluster {}, etcd {versions}, mode {}, revision {}, {} files, {}{snapshot}, taken {}",
            self.dir.display(),
            m.member,
            m.member_id,
            m.cluster_id,
            m.mode,
            m.revision,
            self.files,
            super::human_size(self.bytes),
            m.time,
        )
    }
}

/// Verifies the backup in `dir` (see the module header for what that means).
pub fn verify(dir: &Path) -> Result<Verified, VerifyError> {
    verify_dir(dir, true)
}

/// [`verify`], leaving the files in the page cache (`drop_cache` false): another reader
/// of the same files runs beside it (the rehearsal's restore), and dropping them as this
/// pass ends would make that reader fetch them from the disk a second time.
pub(crate) fn verify_dir(dir: &Path, drop_cache: bool) -> Result<Verified, VerifyError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(VerifyError::NotADir(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::NoDir(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(VerifyError::Io {
                file: dir.display().to_string(),
                source,
            })
        }
    }
    let text = match fs::read(dir.join(SUMS)) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| VerifyError::BadSums {
            line: 0,
            reason: "not UTF-8 text".to_owned(),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(VerifyError::MissingSums),
        Err(source) => {
            return Err(VerifyError::Io {
                file: SUMS.to_owned(),
                source,
            })
        }
    };
    let listed =
        sums::parse(&text).map_err(|(line, reason)| VerifyError::BadSums { line, reason })?;

    let mut present = BTreeMap::new();
    list_files(dir, "", &mut present)?;
    present.remove(SUMS);
    let all: std::collections::BTreeSet<&String> = listed.keys().chain(present.keys()).collect();
    for file in all {
        match (listed.contains_key(file), present.contains_key(file)) {
            (true, false) => return Err(VerifyError::Missing { file: file.clone() }),
            (false, true) => return Err(VerifyError::Unlisted { file: file.clone() }),
            _ => {}
        }
    }

    let total = present.values().sum();
    let mut progress = Progress::new("verifying", total);
    for (file, expected) in &listed {
        let is_snapshot = file == SNAPSHOT;
        let got = hash_file(&dir.join(file), is_snapshot, drop_cache, &mut progress).map_err(
            |source| VerifyError::Io {
                file: file.clone(),
                source,
            },
        )?;
        if &got.sha256 != expected {
            return Err(VerifyError::Mismatch {
                file: file.clone(),
                expected: expected.clone(),
                actual: got.sha256,
            });
        }
        if got.trailer_ok == Some(false) {
            return Err(VerifyError::BadTrailer { file: file.clone() });
        }
    }

    let meta = read_meta(dir)?;
    check_meta(&meta, &listed, &present)?;
    Ok(Verified {
        dir: dir.to_path_buf(),
        meta,
        files: listed.len(),
        bytes: progress.done(),
    })
}

/// Every regular file under `dir`, relative path → size; anything else is an error.
fn list_files(dir: &Path, rel: &str, out: &mut BTreeMap<String, u64>) -> Result<(), VerifyError> {
    let io_err = |file: String| move |source| VerifyError::Io { file, source };
    let shown = || {
        if rel.is_empty() {
            dir.display().to_string()
        } else {
            rel.to_owned()
        }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(shown()))?
        .collect::<Result<_, _>>()
        .map_err(io_err(shown()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().map_err(io_err(child.clone()))?;
        if kind.is_dir() {
            list_files(&entry.path(), &child, out)?;
        } else if kind.is_file() {
            let len = entry.metadata().map_err(io_err(child.clone()))?.len();
            out.insert(child, len);
        } else {
            return Err(VerifyError::NotRegular { file: child });
        }
    }
    Ok(())
}

fn read_meta(dir: &Path) -> Result<Meta, VerifyError> {
    let bytes = fs::read(dir.join(META)).map_err(|e| VerifyError::Meta {
        reason: if e.kind() == io::ErrorKind::NotFound {
            "missing".to_owned()
        } else {
            format!("cannot read it: {e}")
        },
    })?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| VerifyError::Meta {
        reason: format!("unreadable: {e}"),
    })?;
    if meta.format > meta::FORMAT {
        return Err(VerifyError::Meta {
            reason: format!(
                "format {} is newer than this etcd-supervisor understands ({}); verify with a newer one",
                meta.format,
                meta::FORMAT
            ),
        });
    }
    Ok(meta)
}

fn check_meta(
    m: &Meta,
    listed: &sums::Sums,
    present: &BTreeMap<String, u64>,
) -> Result<(), VerifyError> {
    let mode = m
        .mode
        .parse::<crate::backup::BackupMode>()
        .ok()
        .ok_or_else(|| VerifyError::Meta {
            reason: format!("unknown mode {:?}", m.mode),
        })?;
    let inconsistent = |file: &str, reason: String| VerifyError::Inconsistent {
        file: file.to_owned(),
        reason,
    };
    if meta::has_snapshot(mode) {
        let sha = listed.get(SNAPSHOT).ok_or_else(|| {
            inconsistent(
                SNAPSHOT,
                format!("missing, but meta.json says mode {}", m.mode),
            )
        })?;
        let snap = m.snapshot.as_ref().ok_or_else(|| {
            inconsistent(META, format!("mode {} but no \"snapshot\" section", m.mode))
        })?;
        if &snap.sha256 != sha || present.get(SNAPSHOT) != Some(&snap.size) {
            return Err(inconsistent(
                META,
                "its snapshot sha256 or size differs from snapshot.db".to_owned(),
            ));
        }
    } else if listed.contains_key(SNAPSHOT) {
        return Err(inconsistent(
            SNAPSHOT,
            format!("present, but meta.json says mode {}", m.mode),
        ));
    }
    let db = format!("{DATA}/member/snap/db");
    let has_data = listed.keys().any(|f| f.starts_with(&format!("{DATA}/")));
    if meta::has_data_dir(mode) {
        if !listed.contains_key(&db) {
            return Err(inconsistent(
                &db,
                format!("missing, but meta.json says mode {}", m.mode),
            ));
        }
        if m.data_dir.is_none() {
            return Err(inconsistent(
                META,
                format!("mode {} but no \"data_dir\" section", m.mode),
            ));
        }
    } else if has_data {
        return Err(inconsistent(
            DATA,
            format!("present, but meta.json says mode {}", m.mode),
        ));
    }
    Ok(())
}
