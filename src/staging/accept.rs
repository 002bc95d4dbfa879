//! Acceptance of one ready drop: checks 1-5 on every file (`lstat`, then the open
//! descriptor; owner, mode, size, sha256), the copy into a private temp dir under
//! `versions/` ([`store::PendingInstall`]), the `--version` probe of that copy and the
//! commit; then the drop's files move to `accepted/` or `rejected/` with a one-line note,
//! never overwriting anything there. A release tarball is checked as one file, then
//! unpacked by `tarball` into a scratch dir, and its members copied on from there.

use std::fs::{self, File, Metadata};
use std::io::{self, Seek};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use super::note::write_note;
use super::protocol::{
    names_in_sums, parse_tarball_name, Bundle, StagedFile, TarballName, ACCEPTED_DIR,
    CHECKSUM_SUFFIX, REJECTED_DIR, SUMS_FILE,
};
use super::scan::{open_no_follow, read_checksum_file};
use super::tarball;
use super::{io_err, ArchiveProblem, Candidate, Refusal, StagingError, WatchOptions};
use crate::blocking;
use crate::digest::sha256_read;
use crate::durable::sync_dir;
use crate::process::reaper::Reaper;
use crate::versions::store::{self, VersionStore, VersionsError};

/// How processing one drop ended.
pub(super) enum Outcome {
    Accepted(Box<(Candidate, Bundle)>),
    Refused(Refusal),
    /// A file went away (or was replaced) under us; the next scan sees what is there now.
    Vanished,
    /// Our side failed; nothing is refused, the drop is retried later.
    Failed(StagingError),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Self {
        Outcome::Refused(r)
    }
}

impl From<StagingError> for Outcome {
    fn from(e: StagingError) -> Self {
        Outcome::Failed(e)
    }
}

impl From<VersionsError> for Outcome {
    fn from(e: VersionsError) -> Self {
        Outcome::Failed(e.into())
    }
}

/// Processes one ready drop: checks 1-5 and the copy (off the runtime thread), the
/// `--version` probe of the private copy, then the commit into `versions/`.
pub(super) async fn process(
    opts: &WatchOptions,
    store: &VersionStore,
    reaper: &Reaper,
    bundle: &Bundle,
) -> Outcome {
    let dir = opts.staging_dir.clone();
    let copy_store = store.clone();
    let b = bundle.clone();
    let tarball = parse_tarball_name(&bundle.binary.name);
    let t = tarball.clone();
    let copied = blocking::run(move || {
        Ok::<_, StagingError>(match &t {
            Some(name) => verify_and_extract(&dir, &copy_store, &b, name),
            None => verify_and_copy(&dir, &copy_store, &b).map(|p| {
                let companions = b.companions.iter().map(|c| c.tool.to_owned()).collect();
                (p, companions)
            }),
        })
    })
    .await;
    let (pending, companions) = match copied {
        Ok(Ok(pending)) => pending,
        Ok(Err(outcome)) => return outcome,
        Err(e) => return e.into(),
    };
    let file = bundle.binary.name.clone();
    let binary = pending.binary();
    let version = match store::probe_version(reaper, &binary, opts.probe_timeout).await {
        Ok(v) => v,
        Err(VersionsError::NotEtcd { output, .. }) => {
            return Refusal::NotEtcd { file, output }.into()
        }
        Err(VersionsError::ProbeTimeout { timeout, .. }) => {
            return Refusal::ProbeTimeout { file, timeout }.into()
        }
        Err(VersionsError::ProbeFailed { reason, .. }) => {
            return Refusal::ProbeFailed { file, reason }.into()
        }
        Err(e) => return e.into(),
    };
    if let Some(named) = tarball.filter(|t| t.version != version) {
        return Refusal::Archive {
            file,
            problem: ArchiveProblem::VersionMismatch {
                named: named.version.to_string(),
                reported: version.to_string(),
            },
        }
        .into();
    }
    // Companions are pinned only when they are of the same release (as beside a first
    // binary): another version's etcdutl would restore the rehearsal's copy with the wrong
    // tool. The drop itself goes on without them.
    let mut pending = pending;
    let mut companions = companions;
    let mut kept = Vec::new();
    for tool in companions.drain(..) {
        let path = pending.dir().join(&tool);
        match crate::versions::companions::probe(reaper, &tool, &path).await {
            Ok(v) if v == version => kept.push(tool),
            reported => {
                let why = match reported {
                    Ok(v) => format!("it reports {v}"),
                    Err(e) => e,
                };
                tracing::warn!(file = %file, tool = %tool, version = %version, why, "companion staged with the binary is not pinned: not of the same release");
                if let Err(e) = pending.remove(&tool) {
                    return e.into();
                }
            }
        }
    }
    let companions = kept;
    let v = version.clone();
    let committed = match blocking::run(move || Ok::<_, StagingError>(pending.commit(&v))).await {
        Ok(committed) => committed,
        Err(e) => return e.into(),
    };
    let installed = match committed {
        Ok(installed) => installed,
        Err(VersionsError::PinnedDifferent {
            version,
            file: tool,
            pinned,
            new,
        }) => {
            return Refusal::PinnedDifferent {
                file,
                version: version.to_string(),
                tool,
                pinned,
                staged: new,
            }
            .into()
        }
        Err(e) => return e.into(),
    };
    Outcome::Accepted(Box::new((
        Candidate {
            dir: store.dir_of(&version),
            binary: installed.pinned.binary,
            version,
            sha256: installed.sha256,
            companions,
            staged_name: file,
            already_pinned: installed.already_pinned,
        },
        bundle.clone(),
    )))
}

/// Checks 1-5 on the tarball, then extracts our members and copies them into a pending
/// install (hashed again there). Returns the install and the companions found.
fn verify_and_extract(
    dir: &Path,
    store: &VersionStore,
    bundle: &Bundle,
    name: &TarballName,
) -> Result<(store::PendingInstall, Vec<String>), Outcome> {
    let file_name = bundle.binary.name.clone();
    let refuse = |problem| -> Outcome {
        Refusal::Archive {
            file: file_name.clone(),
            problem,
        }
        .into()
    };
    let tarball = inspect(dir, &bundle.binary)?;
    let scratch = store.scratch_dir()?;
    let extracted =
        match tarball::extract(tarball, &name.top, scratch.path(), tarball::Limits::RELEASE) {
            Ok(Ok(extracted)) => extracted,
            Ok(Err(problem)) => return Err(refuse(problem)),
            Err(e) => {
                return Err(VersionsError::from(crate::durable::io_err(
                    "extracting into",
                    scratch.path(),
                )(e))
                .into())
            }
        };
    let mut pending = store.begin_install()?;
    let mut companions = Vec::new();
    for x in &extracted {
        let mut file = File::open(&x.path).map_err(|e| {
            Outcome::from(VersionsError::from(crate::durable::io_err(
                "opening", &x.path,
            )(e)))
        })?;
        pending.add(x.tool, &mut file, &x.path, &x.sha256)?;
        if x.tool != tarball::SERVER {
            companions.push(x.tool.to_owned());
        }
    }
    Ok((pending, companions))
}

pub(super) fn create_dir_0755(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask may have taken bits away; the mode is part of the contract.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

pub(super) fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Rules 1-3: regular file, owner, not group/world-writable.
fn check_meta(file: &str, meta: &Metadata) -> Result<(), Refusal> {
    if meta.file_type().is_symlink() {
        return Err(Refusal::Symlink {
            file: file.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(Refusal::NotRegular {
            file: file.to_owned(),
            kind: kind_of(meta),
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(Refusal::Owner {
            file: file.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    let who = if mode & 0o002 != 0 {
        Some("world")
    } else if mode & 0o020 != 0 {
        Some("group")
    } else {
        None
    };
    if let Some(who) = who {
        return Err(Refusal::Writable {
            file: file.to_owned(),
            who,
            mode,
        });
    }
    Ok(())
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Rules 1-5 for one staged file: returns it open (rewound), its checks bound to that inode.
pub(super) fn inspect(dir: &Path, staged: &StagedFile) -> Result<File, Outcome> {
    let name = &staged.name;
    let path = dir.join(name);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("reading", &path)(e).into()),
    };
    check_meta(name, &meta)?;
    let mut file = match open_no_follow(&path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Refusal::Symlink { file: name.clone() }.into())
        }
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("opening", &path)(e).into()),
    };
    let opened = file
        .metadata()
        .map_err(|e| Outcome::from(io_err("reading", &path)(e)))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(Outcome::Vanished); // replaced between lstat and open
    }
    check_meta(name, &opened)?;
    if opened.len() == 0 {
        return Err(Refusal::Empty { file: name.clone() }.into());
    }
    let expected = match &staged.checksum {
        Ok(expected) => expected,
        Err(detail) => {
            return Err(Refusal::MalformedChecksum {
                file: name.clone(),
                detail: detail.clone(),
            }
            .into())
        }
    };
    let sums_path = dir.join(&expected.checksum_file);
    match fs::symlink_metadata(&sums_path) {
        Ok(m) => check_meta(&expected.checksum_file, &m)?,
        Err(e) if vanished(&e) => return Err(Outcome::Vanished),
        Err(e) => return Err(io_err("reading", &sums_path)(e).into()),
    }
    let (actual, _) = sha256_read(&mut file, |_| {}).map_err(io_err("reading", &path))?;
    if actual != expected.sha256 {
        return Err(Refusal::Mismatch {
            file: name.clone(),
            expected: expected.sha256.clone(),
            actual,
            checksum_file: expected.checksum_file.clone(),
        }
        .into());
    }
    file.rewind()
        .map_err(|e| Outcome::from(io_err("rewinding", &path)(e)))?;
    Ok(file)
}

/// Checks every file of the drop, then copies them into a private temp dir under
/// `versions/`, each hashed again after the copy.
fn verify_and_copy(
    dir: &Path,
    store: &VersionStore,
    bundle: &Bundle,
) -> Result<store::PendingInstall, Outcome> {
    let mut opened = Vec::new();
    for staged in bundle.files() {
        opened.push((staged, inspect(dir, staged)?));
    }
    let mut pending = store.begin_install()?;
    for (staged, mut file) in opened {
        let expected = staged
            .checksum
            .as_ref()
            .map(|e| e.sha256.as_str())
            .unwrap_or_default();
        match pending.add(staged.tool, &mut file, &dir.join(&staged.name), expected) {
            Ok(_) => {}
            Err(VersionsError::Tampered { actual, .. }) => {
                return Err(Refusal::ChangedDuringCopy {
                    file: staged.name.clone(),
                    expected: expected.to_owned(),
                    actual,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pending)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A stem in `dest` free for `name`, its checksum and its note: `name`, `name.2`, ...
fn free_stem(dest: &Path, name: &str, note_ext: &str) -> String {
    let taken = |stem: &str| {
        [
            stem.to_owned(),
            format!("{stem}{CHECKSUM_SUFFIX}"),
            format!("{stem}.{note_ext}"),
            format!("{stem}.{SUMS_FILE}"),
        ]
        .iter()
        .any(|f| fs::symlink_metadata(dest.join(f)).is_ok())
    };
    let mut stem = name.to_owned();
    let mut n = 2;
    while taken(&stem) {
        stem = format!("{name}.{n}");
        n += 1;
    }
    stem
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), StagingError> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if vanished(&e) => Ok(()),
        Err(e) => Err(io_err("moving", from)(e)),
    }
}

/// Moves a drop's files, with their checksum files, into `dest_name/`, then writes a
/// one-line note per file (`NAME.<note_ext>`) last: a note means its file is in place.
/// `SHA256SUMS` is copied beside the server binary, or moved there once it lists nothing
/// still staged.
fn move_bundle(
    dir: &Path,
    bundle: &Bundle,
    dest_name: &str,
    note_ext: &str,
    note: impl Fn(&StagedFile) -> String,
) -> Result<(), StagingError> {
    let dest = dir.join(dest_name);
    create_dir_0755(&dest).map_err(io_err("creating", &dest))?;
    let mut stems = Vec::new();
    let mut uses_sums = false;
    for staged in bundle.files() {
        let stem = free_stem(&dest, &staged.name, note_ext);
        rename_if_present(&dir.join(&staged.name), &dest.join(&stem))?;
        rename_if_present(
            &dir.join(format!("{}{CHECKSUM_SUFFIX}", staged.name)),
            &dest.join(format!("{stem}{CHECKSUM_SUFFIX}")),
        )?;
        uses_sums |= matches!(&staged.checksum, Ok(e) if e.checksum_file == SUMS_FILE)
            || matches!(&staged.checksum, Err(d) if d.starts_with(SUMS_FILE));
        stems.push((staged, stem));
    }
    let sums = dir.join(SUMS_FILE);
    if let (true, Some((_, stem))) = (uses_sums, stems.first()) {
        let to = dest.join(format!("{stem}.{SUMS_FILE}"));
        let still_needed = read_checksum_file(&sums)
            .ok()
            .flatten()
            .map(|text| {
                names_in_sums(&text)
                    .iter()
                    .any(|n| fs::symlink_metadata(dir.join(n)).is_ok())
            })
            .unwrap_or(false);
        if still_needed {
            fs::copy(&sums, &to).map_err(io_err("copying", &sums))?;
        } else {
            rename_if_present(&sums, &to)?;
        }
    }
    sync_dir(dir)?;
    for (staged, stem) in stems {
        write_note(&dest, &stem, note_ext, &note(staged))?;
    }
    sync_dir(&dest)?;
    Ok(())
}

pub(super) fn reject_files(
    dir: &Path,
    bundle: &Bundle,
    refusal: &Refusal,
) -> Result<(), StagingError> {
    let time = now_rfc3339();
    let binary = &bundle.binary.name;
    move_bundle(dir, bundle, REJECTED_DIR, "reason", |staged| {
        if staged.name == *binary {
            format!("{time} refused: {refusal}")
        } else {
            format!("{time} refused together with {binary}: {refusal}")
        }
    })
}

pub(super) fn accept_files(
    dir: &Path,
    bundle: &Bundle,
    candidate: &Candidate,
) -> Result<(), StagingError> {
    let time = now_rfc3339();
    let target = candidate.dir.display();
    let how = if candidate.already_pinned {
        "was already pinned as"
    } else {
        "pinned as"
    };
    let is_tarball = parse_tarball_name(&bundle.binary.name).is_some();
    move_bundle(dir, bundle, ACCEPTED_DIR, "accepted", |staged| {
        if is_tarball {
            let tools = std::iter::once("etcd")
                .chain(candidate.companions.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{time} accepted: {} ({tools}) {how} {target}", staged.name)
        } else {
            format!(
                "{time} accepted: {} {how} {target}/{}",
                staged.name, staged.tool
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_stems_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd");
        fs::write(dir.path().join("etcd.reason"), "x").unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd.2");
        fs::write(dir.path().join("etcd.2"), "x").unwrap();
        assert_eq!(free_stem(dir.path(), "etcd", "reason"), "etcd.3");
    }
}
