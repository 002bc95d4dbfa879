//! The one-line notes the staging dir keeps beside its files (`NAME.reason` under
//! `rejected/`, `NAME.accepted` under `accepted/`), written whole: a temp file beside the
//! note, fsync, rename, so a reader (an operator, a test) never sees half a note. The
//! acceptance writes them as a drop's files move ([`write_note`]); the upgrade driver leaves
//! `rejected/etcd-<version>.reason` for a version it refused or rejected
//! ([`write_reason`]). Both block: async callers run them on the blocking pool.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{io_err, StagingError, REJECTED_DIR};
use crate::durable::{sync_dir, write_synced};
use crate::versions::Version;

/// Writes `line` as `dest/<stem>.<ext>` whole (temp file, fsync, rename), replacing a note
/// of that name; the caller fsyncs `dest` once its notes are written.
pub(super) fn write_note(
    dest: &Path,
    stem: &str,
    ext: &str,
    line: &str,
) -> Result<PathBuf, StagingError> {
    let tmp = dest.join(format!(".{stem}.{ext}.tmp"));
    write_synced(&tmp, format!("{line}\n").as_bytes())?;
    let to = dest.join(format!("{stem}.{ext}"));
    fs::rename(&tmp, &to).map_err(io_err("renaming into", &to))?;
    Ok(to)
}

/// Writes `<staging-dir>/rejected/etcd-<version>.reason`: when (`at`) and why this member
/// does not take `version` (refused here, or rejected for the cluster), replacing an
/// earlier note for it. Returns the note's path.
pub fn write_reason(
    staging_dir: &Path,
    version: &Version,
    why: &str,
    at: SystemTime,
) -> Result<PathBuf, StagingError> {
    let dest = staging_dir.join(REJECTED_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dest)
        .map_err(io_err("creating", &dest))?;
    let line = format!("{} {why}", humantime::format_rfc3339_seconds(at));
    let to = write_note(&dest, &format!("etcd-{version}"), "reason", &line)?;
    sync_dir(&dest)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_written_whole_and_replaces_the_last_one_for_that_version() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("staging");
        let v = Version::new(3, 5, 16);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let path = write_reason(&staging, &v, "refused: no", at).unwrap();
        assert_eq!(path, staging.join("rejected/etcd-3.5.16.reason"));
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "1970-01-02T00:00:00Z refused: no\n"
        );
        write_reason(&staging, &v, "rejected: exited", at).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "1970-01-02T00:00:00Z rejected: exited\n"
        );
        // No temp file is left beside it.
        let names: Vec<_> = fs::read_dir(staging.join("rejected"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["etcd-3.5.16.reason"]);
    }
}
