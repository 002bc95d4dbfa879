//! The cold copy of etcd's data dir (`member/snap/db`, `member/snap/*.snap`,
//! `member/wal/*.wal`), taken while etcd is stopped: regular files and directories only,
//! relative layout, permission bits and (when we may) ownership kept, every file hashed (on
//! a second thread, while the kernel copies it) and fsynced.
//!
//! Anything else (a symlink, a socket, a name sha256sum would have to escape) is refused
//! rather than skipped: a backup must be exactly what it says. [`scan`] runs at `begin`,
//! while etcd still runs, so such a data dir fails the turn before etcd is stopped.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{fchown, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::sums::{drop_cache, is_safe_relative, Sums, BUF_LEN};
use crate::digest::sha256_read;
use crate::durable::start_writeback;

/// Bytes written between two starts of writeback (see [`start_writeback`]).
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

/// Copied files left open awaiting their fsync, at most.
const MAX_UNSYNCED: usize = 64;
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
    // Copied files are fsynced after the copy of the next ones has started their
    // writeback: each fsync then waits for little, instead of the disk idling while we copy.
    let mut unsynced: Vec<(File, &Path)> = Vec::new();
    let paths: Vec<_> = tree.files.iter().map(|f| dst.join(&f.rel)).collect();
    for (file, to) in tree.files.iter().zip(&paths) {
        let from = src.join(&file.rel);
        let (out, sha) = copy_file(&from, to, file, &mut buf, &mut progress)?;
        copied.sums.insert(format!("{prefix}/{}", file.rel), sha);
        copied.files += 1;
        if copied.files == 1 {
            crate::failpoint::kill_at(crate::failpoint::COLD_COPY_HALF_DONE);
        }
        unsynced.push((out, to));
        if unsynced.len() >= MAX_UNSYNCED {
            sync_files(&mut unsynced)?;
        }
    }
    sync_files(&mut unsynced)?;
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

/// Copies one file and hashes it; returns the new file (written, its writeback started,
/// not yet fsynced) and the hex sha256. The data moves inside the kernel
/// (`copy_file_range`) while a second thread hashes the source, which etcd cannot change
/// meanwhile (we hold its database lock and it is stopped); the verification pass later
/// re-reads the copy from disk against that hash. Where the kernel cannot copy between
/// the two files, a read/hash/write loop does both.
fn copy_file(
    from: &Path,
    to: &Path,
    entry: &Entry,
    buf: &mut [u8],
    progress: &mut Progress,
) -> Result<(File, String), BackupError> {
    let mut src = File::open(from).map_err(io_error("open", from))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_error("create", to))?;
    let sha = match std::thread::scope(|scope| {
        let hasher = scope.spawn(|| hash_source(from));
        let copied = kernel_copy(&src, &dst, to, progress);
        let hashed = hasher
            .join()
            .map_err(|_| BackupError::Interrupted("hashing thread panicked".to_owned()));
        (copied, hashed)
    }) {
        (Ok(true), hashed) => hashed??,
        (Ok(false), _) => {
            // Not one byte was copied by the kernel: do it here.
            copy_loop(&mut src, &mut dst, from, to, buf, progress)?
        }
        (Err(e), _) => return Err(e),
    };
    dst.set_permissions(Permissions::from_mode(entry.mode))
        .map_err(io_error("set the mode of", to))?;
    keep_owner(&dst, entry.uid, entry.gid);
    Ok((dst, sha))
}

/// `copy_file_range` of `src`'s data ranges into `dst`, starting writeback as it goes.
/// Holes and preallocated-but-unwritten ranges (etcd preallocates each 64 MB WAL segment)
/// become holes in the copy: they read as zeros all the same (and are hashed as such), and
/// writing those zeros would be most of the cost of a small member's copy. `Ok(false)` when the kernel
/// cannot copy between these files (nothing was written).
fn kernel_copy(
    src: &File,
    dst: &File,
    to: &Path,
    progress: &mut Progress,
) -> Result<bool, BackupError> {
    use nix::unistd::{lseek, Whence};
    let len = src.metadata().map_err(io_error("inspect", to))?.len();
    let mut pos = 0u64;
    let mut flushed = 0u64;
    let mut copied_any = false;
    while pos < len {
        let start = match lseek(src.as_raw_fd(), pos as i64, Whence::SeekData) {
            Ok(off) => off as u64,
            // No data after `pos`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            // No hole support: treat the whole file as data.
            Err(_) => pos,
        };
        let end = match lseek(src.as_raw_fd(), start as i64, Whence::SeekHole) {
            Ok(off) => (off as u64).min(len),
            Err(_) => len,
        };
        let (mut off_in, mut off_out) = (start as i64, start as i64);
        while (off_in as u64) < end {
            let want = (end - off_in as u64).min(WRITEBACK_WINDOW) as usize;
            match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
            {
                // The file shrank under us: it cannot (etcd is stopped), but do not spin.
                Ok(0) => break,
                Ok(n) => {
                    copied_any = true;
                    progress.add(n as u64);
                    let done = off_out as u64;
                    if done.saturating_sub(flushed) >= WRITEBACK_WINDOW {
                        start_writeback(dst, flushed, done - flushed);
                        flushed = done;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(
                    nix::errno::Errno::EXDEV
                    | nix::errno::Errno::ENOSYS
                    | nix::errno::Errno::EINVAL
                    | nix::errno::Errno::EOPNOTSUPP,
                ) if !copied_any => return Ok(false),
                Err(errno) => return Err(io_error("copy to", to)(io::Error::from(errno))),
            }
        }
        // Holes count as done for the progress lines.
        progress.add(start - pos);
        pos = end;
    }
    // The tail after the last data is a hole too.
    progress.add(len.saturating_sub(pos));
    dst.set_len(len)
        .map_err(io_error("set the length of", to))?;
    start_writeback(dst, flushed, len.saturating_sub(flushed));
    Ok(true)
}

/// sha256 of a file, read through its own descriptor.
fn hash_source(path: &Path) -> Result<String, BackupError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let (hex, _) = sha256_read(&mut file, |_| {}).map_err(io_error("read", path))?;
    Ok(hex)
}

/// Copies with read and write, hashing what it reads; returns the hex sha256. Its own loop
/// rather than `digest::sha256_read`: the bytes it reads are written out too, in one pass.
fn copy_loop(
    src: &mut File,
    dst: &mut File,
    from: &Path,
    to: &Path,
    buf: &mut [u8],
    progress: &mut Progress,
) -> Result<String, BackupError> {
    let mut hash = Sha256::new();
    let (mut written, mut flushed) = (0u64, 0u64);
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
        written += n as u64;
        // The disk writes while we go on; the fsync waits for the last window only.
        if written - flushed >= WRITEBACK_WINDOW {
            start_writeback(dst, flushed, written - flushed);
            flushed = written;
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// fsyncs the copied files and drops them from the page cache.
fn sync_files(files: &mut Vec<(File, &Path)>) -> Result<(), BackupError> {
    for (file, path) in files.drain(..) {
        file.sync_all().map_err(io_error("fsync", path))?;
        drop_cache(&file);
    }
    Ok(())
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
                crate::digest::sha256_hex(&a)
            );
            let mode = fs::metadata(dst.join(&file.rel)).unwrap().mode() & 0o7777;
            assert_eq!(mode, file.mode, "{}", file.rel);
        }
        let wal_mode = fs::metadata(dst.join("member/wal")).unwrap().mode() & 0o7777;
        assert_eq!(wal_mode, 0o750);
    }

    #[test]
    fn holes_and_preallocated_ranges_copy_as_zeros() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("d");
        fs::create_dir_all(src.join("member/wal")).unwrap();
        // Data, a hole, data, then a preallocated tail (as etcd's WAL segments).
        let path = src.join("member/wal/0.wal");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[1u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(3 * 1024 * 1024)).unwrap();
        f.write_all(&[2u8; 700]).unwrap();
        nix::fcntl::fallocate(
            f.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            12 * 1024 * 1024,
        )
        .unwrap();
        drop(f);
        let want = fs::read(&path).unwrap();
        assert_eq!(want.len(), 12 * 1024 * 1024);
        let tree = scan(&src).unwrap();
        let dst = dir.path().join("copy");
        let copied = copy_tree(&src, &dst, "data", &tree).unwrap();
        assert_eq!(fs::read(dst.join("member/wal/0.wal")).unwrap(), want);
        assert_eq!(
            copied.sums["data/member/wal/0.wal"],
            crate::digest::sha256_hex(&want)
        );
        assert_eq!(copied.bytes, want.len() as u64);
    }

    #[test]
    fn the_read_write_fallback_copies_and_hashes_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        let bytes: Vec<u8> = (0..3 * BUF_LEN + 5).map(|i| (i % 251) as u8).collect();
        fs::write(&from, &bytes).unwrap();
        let mut src = File::open(&from).unwrap();
        let mut dst = File::create(&to).unwrap();
        let mut buf = vec![0u8; BUF_LEN];
        let mut progress = Progress::new("test", bytes.len() as u64);
        let sha = copy_loop(&mut src, &mut dst, &from, &to, &mut buf, &mut progress).unwrap();
        assert_eq!(fs::read(&to).unwrap(), bytes);
        assert_eq!(sha, crate::digest::sha256_hex(&bytes));
        assert_eq!(sha, hash_source(&from).unwrap());
        assert_eq!(progress.done(), bytes.len() as u64);
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
