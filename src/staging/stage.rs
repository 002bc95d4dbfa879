//! `etcd-supervisor stage`: writes a drop into the staging dir by the protocol
//! (content-addressed names, each file through a synced temp file and a rename, checksum
//! files last, the server binary's very last). It never executes anything.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::accept::kind_of;
use super::protocol::{CHECKSUM_SUFFIX, COMPANIONS};
use super::{io_err, StagingError};
use crate::durable::sync_dir;

/// Hex digits of the sha256 in names written by `stage`.
const STAGE_NAME_HEX: usize = 12;

/// What [`stage`] put into the staging dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDrop {
    /// The staging dir.
    pub dir: PathBuf,
    /// The server binary's name there (`etcd-<12 hex>`).
    pub binary: String,
    /// Its sha256.
    pub sha256: String,
    /// Names of the companions staged with it.
    pub companions: Vec<String>,
    /// True when the same drop was already staged and still waiting (nothing was written).
    pub already_staged: bool,
}

impl fmt::Display for StagedDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.already_staged {
            "already staged"
        } else {
            "staged"
        };
        write!(f, "{verb} {} (sha256 {})", self.binary, self.sha256)?;
        if !self.companions.is_empty() {
            write!(f, " with {}", self.companions.join(", "))?;
        }
        write!(f, " in {}", self.dir.display())
    }
}

fn bad_source(path: &Path, why: impl Into<String>) -> StagingError {
    StagingError::BadSource {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Opens a file to stage: it must be a non-empty regular file we can read.
fn open_source(path: &Path) -> Result<File, StagingError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => bad_source(path, "it does not exist"),
        _ => bad_source(path, format!("cannot read it ({e})")),
    })?;
    if !meta.is_file() {
        return Err(bad_source(
            path,
            format!("it is a {}, not a regular file", kind_of(&meta)),
        ));
    }
    if meta.len() == 0 {
        return Err(bad_source(path, "it is empty"));
    }
    File::open(path).map_err(|e| bad_source(path, format!("cannot read it ({e})")))
}

/// The tool a `--with` file is, by its file name.
fn companion_tool(path: &Path) -> Result<&'static str, StagingError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    COMPANIONS
        .into_iter()
        .find(|tool| name.starts_with(tool))
        .ok_or_else(|| {
            bad_source(
                path,
                "--with takes etcdctl and etcdutl (the file name must start with one of them)",
            )
        })
}

/// Copies `source` into a hidden temp file in `dir` with `mode`, hashing what it writes,
/// and fsyncs it. Its own loop rather than `digest::sha256_read`: the bytes it reads are
/// written out too, so the file is read once.
fn copy_to_temp(
    source: &mut File,
    source_path: &Path,
    dir: &Path,
    mode: u32,
) -> Result<(tempfile::NamedTempFile, String), StagingError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".stage-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temp file in", dir))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading", source_path)(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(io_err("writing into", dir))?;
    }
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions in", dir))?;
    file.sync_all()
        .map_err(io_err("syncing a temp file in", dir))?;
    Ok((tmp, hex::encode(hasher.finalize())))
}

/// Stages `binary` (and `with`: etcdctl/etcdutl) into `dir` by the staging protocol: names
/// `etcd-<12 hex>` / `etcdctl-<12 hex>` from the binary's sha256, each file through a temp
/// file + fsync + rename, then the checksum files, the binary's last. Creates `dir` (0755)
/// when missing. Never executes anything.
pub fn stage(binary: &Path, with: &[PathBuf], dir: &Path) -> Result<StagedDrop, StagingError> {
    let binary_name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if let Some(tool) = COMPANIONS.into_iter().find(|t| binary_name.starts_with(t)) {
        return Err(bad_source(
            binary,
            format!(
                "this looks like {tool}; stage the etcd server binary and pass {tool} with --with"
            ),
        ));
    }
    let mut source = open_source(binary)?;
    let mut companions = Vec::new();
    for path in with {
        let tool = companion_tool(path)?;
        if companions.iter().any(|(t, _, _)| *t == tool) {
            return Err(bad_source(path, format!("{tool} is given twice")));
        }
        companions.push((tool, path.clone(), open_source(path)?));
    }
    let create_err = |source| StagingError::Create {
        dir: dir.to_path_buf(),
        source,
    };
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(create_err)?;
        // The umask may have taken bits away; the mode is part of the contract.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(create_err)?;
    }
    if !dir.is_dir() {
        return Err(StagingError::NotADirectory(dir.to_path_buf()));
    }

    let (binary_tmp, sha256) = copy_to_temp(&mut source, binary, dir, 0o755)?;
    let suffix = format!("-{}", &sha256[..STAGE_NAME_HEX]);
    let binary_final = format!("etcd{suffix}");
    let mut staged = StagedDrop {
        dir: dir.to_path_buf(),
        binary: binary_final.clone(),
        sha256: sha256.clone(),
        companions: Vec::new(),
        already_staged: false,
    };
    let committed = dir.join(format!("{binary_final}{CHECKSUM_SUFFIX}"));
    if dir.join(&binary_final).is_file() && committed.is_file() {
        // Same bytes, same name, checksum written: an earlier stage is still waiting to be
        // processed. (Without its checksum, an earlier stage died half-way: redo it.)
        staged.already_staged = true;
        return Ok(staged);
    }
    let mut copies = Vec::new();
    for (tool, path, mut file) in companions {
        let (tmp, sum) = copy_to_temp(&mut file, &path, dir, 0o755)?;
        copies.push((format!("{tool}{suffix}"), tmp, sum));
    }
    // Data first (companions, then the binary), then checksums, the binary's last: the
    // binary's checksum is the commit marker of the whole drop.
    let mut sums = Vec::new();
    for (name, tmp, sum) in copies {
        persist(tmp, &dir.join(&name))?;
        sums.push((name, sum));
    }
    persist(binary_tmp, &dir.join(&binary_final))?;
    sync_dir(dir)?;
    for (name, sum) in sums {
        write_checksum_file(dir, &name, &sum)?;
        staged.companions.push(name);
    }
    write_checksum_file(dir, &binary_final, &sha256)?;
    Ok(staged)
}

/// Renames a synced temp file into place. Replacing an earlier file of the same name is
/// safe: names are content-addressed, and nothing is processed before its checksum lands.
fn persist(tmp: tempfile::NamedTempFile, to: &Path) -> Result<(), StagingError> {
    tmp.persist(to)
        .map(|_| ())
        .map_err(|e| io_err("renaming into", to)(e.error))
}

/// Writes `NAME.sha256` (`HEX  NAME`, mode 0644) through a temp file, fsync, rename.
fn write_checksum_file(dir: &Path, name: &str, sha256: &str) -> Result<(), StagingError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".stage-")
        .tempfile_in(dir)
        .map_err(io_err("creating a temp file in", dir))?;
    tmp.write_all(format!("{sha256}  {name}\n").as_bytes())
        .map_err(io_err("writing into", dir))?;
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting permissions in", dir))?;
    file.sync_all()
        .map_err(io_err("syncing a temp file in", dir))?;
    persist(tmp, &dir.join(format!("{name}{CHECKSUM_SUFFIX}")))?;
    sync_dir(dir)?;
    Ok(())
}
