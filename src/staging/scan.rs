//! Reading the staging dir: [`scan`] lists it into a [`Listing`] (its files and the text of
//! its checksum files) for the pure [`plan`](super::plan), and staged files are opened here
//! without following a final symlink and without blocking on a fifo.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::protocol::{role, Listing, Role};
use super::{io_err, StagingError};

/// Largest checksum file read (a SHA256SUMS of a whole release is a few KiB).
const MAX_CHECKSUM_FILE: u64 = 1024 * 1024;

/// Reads the staging dir into a [`Listing`].
/// Lists the staging dir: its files and the text of its checksum files.
pub fn scan(dir: &Path) -> Result<Listing, StagingError> {
    let unreadable = |source| StagingError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    };
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name of ours
        };
        match entry.file_type() {
            Ok(t) if t.is_dir() => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(unreadable(e)),
        }
        if role(&name) == Role::Checksum {
            match read_checksum_file(&dir.join(&name)) {
                Ok(Some(text)) => {
                    listing.checksum_texts.insert(name.clone(), text);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &dir.join(&name))(e)),
            }
        }
        listing.files.insert(name);
    }
    Ok(listing)
}

/// The text of a checksum file; `None` when it is not a regular file (a symlink, a fifo)
/// or too large to be one.
pub(super) fn read_checksum_file(path: &Path) -> io::Result<Option<String>> {
    let file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_CHECKSUM_FILE {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_CHECKSUM_FILE).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Opens without following a final symlink, and without blocking on a fifo.
pub(super) fn open_no_follow(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}
