//! The cold copy of etcd's data dir (`member/snap/db`, `member/snap/*.snap`,
//! `member/wal/*.wal`), taken while etcd is stopped: regular files and directories only,
//! relative layout, permission bits and (when we may) ownership kept, every file hashed while
//! it is copied and fsynced.
//!
//! Anything else (a symlink, a socket, a name sha256sum would have to escape) is refused
//! rather than skipped: a backup must be exactly what it says. [`scan`] runs at `begin`,
//! while etcd still runs, so such a data dir fails the turn before etcd is stopped.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{fchown, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::sums::{drop_cache, is_safe_relative, Sums, BUF_LEN};
use super::{io_error, BackupError};

/// One directory or file of the data dir.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path relative to the data dir, `/`-separated.
    pub rel: String,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes (files).
    pub len: u64,
}

/// What a data dir holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    /// Directories below the root, parents before children.
    pub dirs: Vec<Entry>,
    /// Regular files, in path order.
    pub files: Vec<Entry>,
    /// Total bytes of the files.
    pub bytes: u64,
}

/// What a copy produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Copied {
    /// `<prefix>/<rel>` → sha256 of every file, as read while copying.
    pub sums: Sums,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// Lists the data dir at `root` (a symlink to it is followed; nothing inside is).
pub(crate) fn scan(root: &Path) -> Result<Tree, BackupError> {
    let mut tree = Tree::default();
    walk(root, "", &mut tree)?;
    Ok(tree)
}

fn walk(dir: &Path, rel: &str, tree: &mut Tree) -> Result<(), BackupError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_error("read the directory", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_error("read the directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .filter(|n| is_safe_relative(n))
            .ok_or_else(|| BackupError::Unsupported {
                path: path.clone(),
                what: "a file name SHA256SUMS cannot list".to_owned(),
            })?;
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_error("inspect", &path))?;
        let item = Entry {
            rel: child.clone(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            len: meta.len(),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            tree.dirs.push(item);
            walk(&path, &child, tree)?;
        } else if kind.is_file() {
            tree.bytes += item.len;
            tree.files.push(item);
        } else {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else {
                "a special file (socket, fifo or device)"
            };
            return Err(BackupError::Unsupported {
                path,
                what: what.to_owned(),
            });
        }
    }
    Ok(())
}

/// Copies `tree` (scanned from `src`) into the new directory `dst`; sums are keyed
/// `<prefix>/<rel>`. Directories get their modes and are fsynced after their contents.
pub(crate) fn copy_tree(
    src: &Path,
    dst: &Path,
    prefix: &str,
    tree: &Tree,
) -> Result<Copied, BackupError> {
    let root_meta = fs::metadata(src).map_err(io_error("inspect", src))?;
    // Private while being filled; the modes etcd gave them are set at the end.
    make_dir(dst)?;
    for dir in &tree.dirs {
        make_dir(&dst.join(&dir.rel))?;
    }
    let mut progress = Progress::new("copying the data dir", tree.bytes);
    let mut copied = Copied::default();
    let mut buf = vec![0u8; BUF_LEN];
    for file in &tree.files {
        let from = src.join(&file.rel);
        let to = dst.join(&file.rel);
        let sha = copy_file(&from, &to, file, &mut buf, &mut progress)?;
        copied.sums.insert(format!("{prefix}/{}", file.rel), sha);
        copied.files += 1;
    }
    copied.bytes = progress.done();
    // Children before parents, the root last: a directory's entries are durable only once
    // the directory itself is fsynced.
    for dir in tree.dirs.iter().rev() {
        finish_dir(&dst.join(&dir.rel), dir.mode, dir.uid, dir.gid)?;
    }
    finish_dir(
        dst,
        root_meta.mode() & 0o7777,
        root_meta.uid(),
        root_meta.gid(),
    )?;
    tracing::info!(
        files = copied.files,
        bytes = copied.bytes,
        secs = format!("{:.2}", progress.elapsed().as_secs_f64()),
        rate_mib_s = format!("{:.1}", progress.rate_mib_s()),
        "backup: data dir copied"
    );
    Ok(copied)
}

fn make_dir(path: &Path) -> Result<(), BackupError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_error("create the directory", path))
}

/// Copies one file, hashing what it reads; returns the hex sha256.
fn copy_file(
    from: &Path,
    to: &Path,
    entry: &Entry,
    buf: &mut [u8],
    progress: &mut Progress,
) -> Result<String, BackupError> {
    let mut src = File::open(from).map_err(io_error("open", from))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_error("create", to))?;
    let mut hash = Sha256::new();
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read", from)(e)),
        };
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_error("write", to))?;
        progress.add(n as u64);
    }
    dst.set_permissions(Permissions::from_mode(entry.mode))
        .map_err(io_error("set the mode of", to))?;
    keep_owner(&dst, entry.uid, entry.gid);
    dst.sync_all().map_err(io_error("fsync", to))?;
    drop_cache(&dst);
    Ok(hex::encode(hash.finalize()))
}

fn finish_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), BackupError> {
    let dir = File::open(path).map_err(io_error("open", path))?;
    keep_owner(&dir, uid, gid);
    dir.set_permissions(Permissions::from_mode(mode))
        .map_err(io_error("set the mode of", path))?;
    dir.sync_all().map_err(io_error("fsync", path))
}

/// Gives the copy the original's owner, so a restore can move it back as it is. Only root
/// may; anyone else gets their own files, which is all they could restore anyway.
fn keep_owner(file: &File, uid: u32, gid: u32) {
    if nix::unistd::geteuid().is_root() {
        if let Err(e) = fchown(file, Some(uid), Some(gid)) {
            tracing::debug!("backup: cannot keep the owner of a copied file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_data_dir(root: &Path) {
        fs::create_dir_all(root.join("member/snap")).unwrap();
        fs::create_dir_all(root.join("member/wal")).unwrap();
        fs::write(root.join("member/snap/db"), vec![7u8; 3 * BUF_LEN + 5]).unwrap();
        fs::write(
            root.join("member/wal/0000000000000000-0000000000000000.wal"),
            b"wal",
        )
        .unwrap();
        fs::write(
            root.join("member/snap/0000000000000002-0000000000000010.snap"),
            b"snap",
        )
        .unwrap();
        fs::set_permissions(root.join("member/snap/db"), Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(root.join("member"), Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(root.join("member/wal"), Permissions::from_mode(0o750)).unwrap();
    }

    #[test]
    fn copies_layout_modes_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m1.etcd");
        fake_data_dir(&src);
        let tree = scan(&src).unwrap();
        assert_eq!(tree.files.len(), 3);
        assert_eq!(tree.bytes, 3 * BUF_LEN as u64 + 5 + 3 + 4);
        let rels: Vec<&str> = tree.dirs.iter().map(|d| d.rel.as_str()).collect();
        assert_eq!(rels, ["member", "member/snap", "member/wal"]);

        let dst = dir.path().join("backup/data");
        fs::create_dir(dir.path().join("backup")).unwrap();
        let copied = copy_tree(&src, &dst, "data", &tree).unwrap();
        assert_eq!(copied.files, 3);
        assert_eq!(copied.bytes, tree.bytes);
        for file in &tree.files {
            let a = fs::read(src.join(&file.rel)).unwrap();
            let b = fs::read(dst.join(&file.rel)).unwrap();
            assert_eq!(a, b, "{}", file.rel);
            assert_eq!(
                copied.sums[&format!("data/{}", file.rel)],
                super::super::sums::sha256_hex(&a)
            );
            let mode = fs::metadata(dst.join(&file.rel)).unwrap().mode() & 0o7777;
            assert_eq!(mode, file.mode, "{}", file.rel);
        }
        let wal_mode = fs::metadata(dst.join("member/wal")).unwrap().mode() & 0o7777;
        assert_eq!(wal_mode, 0o750);
    }

    #[test]
    fn refuses_symlinks_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d");
        fake_data_dir(&src);
        symlink("/etc/hostname", src.join("member/link")).unwrap();
        let err = scan(&src).unwrap_err();
        assert!(matches!(err, BackupError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("member/link"), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        fs::remove_file(src.join("member/link")).unwrap();
        nix::unistd::mkfifo(&src.join("member/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = scan(&src).unwrap_err();
        assert!(err.to_string().contains("special file"), "{err}");
    }

    #[test]
    fn a_symlinked_data_dir_itself_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fake_data_dir(&real);
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        assert_eq!(scan(&link).unwrap().files.len(), 3);
    }
}
