//! The pure part of the staging protocol: what each name in the staging dir is (server
//! binary, companion, checksum file, or something left alone), how checksum files are
//! parsed, and the [`plan`] of one [`Listing`]: which drops are ready, which wait for their
//! checksum, which names are ignored. No I/O: the watcher and `upgrade plan` feed it a
//! [`Listing`] read by [`super::scan()`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::versions::Version;

/// The shared checksum file.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// Suffix of a file's own checksum file.
pub const CHECKSUM_SUFFIX: &str = ".sha256";
/// Where refused files go, inside the staging dir.
pub const REJECTED_DIR: &str = "rejected";
/// Where accepted files go, inside the staging dir.
pub const ACCEPTED_DIR: &str = "accepted";
/// Companion tools that travel with the server binary, installed under these names.
pub const COMPANIONS: [&str; 2] = ["etcdctl", "etcdutl"];

/// A release tarball's name, read: `etcd-v3.5.30-linux-amd64.tar.gz` is version 3.5.30 with
/// top directory `etcd-v3.5.30-linux-amd64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarballName {
    /// The version in the name.
    pub version: Version,
    /// The directory every entry is under.
    pub top: String,
}

/// Reads a tarball name as upstream spells it; `None` for any other name.
pub fn parse_tarball_name(name: &str) -> Option<TarballName> {
    let top = name.strip_suffix(".tar.gz")?;
    let rest = top.strip_prefix("etcd-v")?;
    let (version, arch) = rest.rsplit_once("-linux-")?;
    if arch.is_empty()
        || !arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return None;
    }
    Some(TarballName {
        version: version.parse().ok()?,
        top: top.to_owned(),
    })
}

/// What a name in the staging dir is, by the naming convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// An etcd server binary; the suffix ties companions to it.
    Binary { suffix: String },
    /// `etcdctl<suffix>` / `etcdutl<suffix>`.
    Companion { tool: &'static str, suffix: String },
    /// `NAME.sha256` or `SHA256SUMS`.
    Checksum,
    /// Ours or an editor's/copier's: never looked at, never logged.
    Quiet,
    /// An upstream release tarball (`etcd-vX.Y.Z-linux-ARCH.tar.gz`): a drop of its own.
    Tarball,
    /// Another archive: logged once, left alone.
    Archive,
    /// Anything else: logged once, left alone.
    Other,
}

pub(super) fn role(name: &str) -> Role {
    const QUIET_SUFFIXES: [&str; 6] = [".tmp", ".part", ".partial", ".swp", "~", ".reason"];
    const ARCHIVES: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".zip"];
    if name.starts_with('.') || QUIET_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Role::Quiet;
    }
    if name == SUMS_FILE || name.ends_with(CHECKSUM_SUFFIX) {
        return Role::Checksum;
    }
    if name.ends_with(".accepted") || name.ends_with(".SHA256SUMS") {
        return Role::Quiet;
    }
    if parse_tarball_name(name).is_some() {
        return Role::Tarball;
    }
    if ARCHIVES.iter().any(|s| name.ends_with(s)) {
        return Role::Archive;
    }
    for tool in COMPANIONS {
        if let Some(suffix) = name.strip_prefix(tool) {
            return Role::Companion {
                tool,
                suffix: suffix.to_owned(),
            };
        }
    }
    match name.strip_prefix("etcd") {
        Some(suffix) => Role::Binary {
            suffix: suffix.to_owned(),
        },
        None => Role::Other,
    }
}

/// One line of a checksum file: the digest, and the file name it is for when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumLine {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// The file name (directories stripped), if the line has one.
    pub name: Option<String>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn base_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_owned()
}

/// Parses one checksum line: sha256sum's `HEX  NAME` / `HEX *NAME`, a bare `HEX`, or BSD's
/// `SHA256 (NAME) = HEX`. `None` for anything else.
pub fn parse_checksum_line(line: &str) -> Option<ChecksumLine> {
    let line = line.trim_end_matches(['\r', '\n']).trim_start();
    if let Some(rest) = line.strip_prefix("SHA256 (") {
        let (name, hex) = rest.rsplit_once(") = ")?;
        let hex = hex.trim();
        return is_sha256_hex(hex).then(|| ChecksumLine {
            sha256: hex.to_ascii_lowercase(),
            name: Some(base_name(name)),
        });
    }
    let (hex, rest) = match line.split_once([' ', '\t']) {
        Some((hex, rest)) => (hex, rest),
        None => (line, ""),
    };
    if !is_sha256_hex(hex) {
        return None;
    }
    // sha256sum: one space, then ' ' (text) or '*' (binary), then the name.
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let name = rest.strip_prefix('*').unwrap_or(rest).trim_end();
    Some(ChecksumLine {
        sha256: hex.to_ascii_lowercase(),
        name: (!name.is_empty()).then(|| base_name(name)),
    })
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// What `NAME.sha256` says about `name`: `Ok(None)` while it is empty (being written),
/// `Err` with what is wrong when it is malformed or names another file.
pub fn expected_from_own(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut lines = Vec::new();
    for (n, line) in content_lines(text) {
        lines.push(
            parse_checksum_line(line)
                .ok_or_else(|| format!("line {n} is not `HEX  NAME` with a 64-digit sha256"))?,
        );
    }
    if lines.is_empty() {
        return Ok(None);
    }
    if let Some(line) = lines.iter().find(|l| l.name.as_deref() == Some(name)) {
        return Ok(Some(line.sha256.clone()));
    }
    match lines.as_slice() {
        [ChecksumLine { sha256, name: None }] => Ok(Some(sha256.clone())),
        _ => {
            let named: Vec<&str> = lines.iter().filter_map(|l| l.name.as_deref()).collect();
            Err(format!("it is for {}, not {name}", named.join(", ")))
        }
    }
}

/// What `SHA256SUMS` says about `name`: `Ok(None)` when it has no line for it, `Err` when it
/// has two lines for it that disagree. Lines it cannot parse are skipped (such files often
/// carry other content).
pub fn expected_from_sums(text: &str, name: &str) -> Result<Option<String>, String> {
    let mut found: Option<String> = None;
    for (_, line) in content_lines(text) {
        let Some(parsed) = parse_checksum_line(line) else {
            continue;
        };
        if parsed.name.as_deref() != Some(name) {
            continue;
        }
        match &found {
            Some(earlier) if *earlier != parsed.sha256 => {
                return Err(format!(
                    "{SUMS_FILE} lists {name} twice with different sums"
                ))
            }
            _ => found = Some(parsed.sha256),
        }
    }
    Ok(found)
}

/// The names in `SHA256SUMS` (for deciding when it is used up).
pub(super) fn names_in_sums(text: &str) -> BTreeSet<String> {
    content_lines(text)
        .filter_map(|(_, l)| parse_checksum_line(l))
        .filter_map(|l| l.name)
        .collect()
}

/// A snapshot of the staging directory: all [`plan`] needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Names of the entries that are not directories (files, symlinks, fifos, ...).
    pub files: BTreeSet<String>,
    /// Text of each checksum file (`*.sha256`, `SHA256SUMS`) that is a readable regular
    /// file. One in `files` but not here could not be read as such.
    pub checksum_texts: BTreeMap<String, String>,
}

/// Where a staged file's expected sha256 comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// `NAME.sha256` or `SHA256SUMS`.
    pub checksum_file: String,
}

/// A ready file of a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Its name in the staging dir.
    pub name: String,
    /// Its name in the version dir: `etcd`, `etcdctl` or `etcdutl`.
    pub tool: &'static str,
    /// Its checksum, or what is wrong with its checksum file.
    pub checksum: Result<Expected, String>,
}

/// A drop whose files are all ready: the server binary and the companions staged with it,
/// or a release tarball (in `binary`, named by [`parse_tarball_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The etcd server binary.
    pub binary: StagedFile,
    /// etcdctl / etcdutl with the same suffix.
    pub companions: Vec<StagedFile>,
}

impl Bundle {
    /// The server binary, then the companions.
    pub fn files(&self) -> impl Iterator<Item = &StagedFile> {
        std::iter::once(&self.binary).chain(&self.companions)
    }
}

/// Why a file is not processed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// No checksum yet: the file is still being written.
    Checksum,
    /// The server binary is ready, but this companion staged with it is not.
    Companion(String),
    /// A companion whose server binary (this name) is not there.
    Binary(String),
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Checksum => write!(
                f,
                "waiting for its checksum (NAME{CHECKSUM_SUFFIX} or a line in {SUMS_FILE}), which is written last"
            ),
            Waiting::Companion(c) => write!(f, "waiting for the checksum of {c}, staged with it"),
            Waiting::Binary(b) => write!(f, "waiting for {b}, the etcd binary it goes with"),
        }
    }
}

/// Why a file is left alone for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not named like part of a drop.
    NotEtcd,
    /// An archive other than an upstream release tarball.
    Archive,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::NotEtcd => f.write_str(
                "not part of an etcd drop (names start with etcd, etcdctl or etcdutl); left alone",
            ),
            Ignored::Archive => {
                f.write_str("an archive not named like upstream's etcd-vX.Y.Z-linux-ARCH.tar.gz: extract the etcd binary and stage that; left alone")
            }
        }
    }
}

/// What one scan of the staging dir found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Drops to process now, by name.
    pub ready: Vec<Bundle>,
    /// Files to wait for, and why.
    pub waiting: Vec<(String, Waiting)>,
    /// Files left alone for good, and why.
    pub ignored: Vec<(String, Ignored)>,
}

/// Decides, from a listing alone, which drops are ready, which files are still incomplete,
/// and which are not ours.
pub fn plan(listing: &Listing) -> Plan {
    let files = &listing.files;
    let sums = files
        .contains(SUMS_FILE)
        .then(|| listing.checksum_texts.get(SUMS_FILE))
        .flatten();
    // None: not ready yet. Some(Err): ready to be refused for its checksum file.
    let checksum_of = |name: &str| -> Option<Result<Expected, String>> {
        let own = format!("{name}{CHECKSUM_SUFFIX}");
        if files.contains(&own) {
            let Some(text) = listing.checksum_texts.get(&own) else {
                return Some(Err(format!("{own} is not a readable regular file")));
            };
            return match expected_from_own(text, name) {
                Ok(Some(sha256)) => Some(Ok(Expected {
                    sha256,
                    checksum_file: own,
                })),
                // Empty: being written. It wins over SHA256SUMS, so wait for it.
                Ok(None) => None,
                Err(detail) => Some(Err(format!("{own}: {detail}"))),
            };
        }
        if files.contains(SUMS_FILE) && sums.is_none() {
            return Some(Err(format!("{SUMS_FILE} is not a readable regular file")));
        }
        match expected_from_sums(sums?, name) {
            Ok(found) => found.map(|sha256| {
                Ok(Expected {
                    sha256,
                    checksum_file: SUMS_FILE.to_owned(),
                })
            }),
            Err(detail) => Some(Err(detail)),
        }
    };
    let mut out = Plan::default();
    for name in files {
        match role(name) {
            Role::Binary { suffix } => {
                let Some(checksum) = checksum_of(name) else {
                    out.waiting.push((name.clone(), Waiting::Checksum));
                    continue;
                };
                let mut companions = Vec::new();
                let mut incomplete = None;
                for tool in COMPANIONS {
                    let companion = format!("{tool}{suffix}");
                    if !files.contains(&companion) {
                        continue;
                    }
                    match checksum_of(&companion) {
                        Some(checksum) => companions.push(StagedFile {
                            name: companion,
                            tool,
                            checksum,
                        }),
                        None => incomplete = Some(companion),
                    }
                }
                match incomplete {
                    Some(companion) => out
                        .waiting
                        .push((name.clone(), Waiting::Companion(companion))),
                    None => out.ready.push(Bundle {
                        binary: StagedFile {
                            name: name.clone(),
                            tool: "etcd",
                            checksum,
                        },
                        companions,
                    }),
                }
            }
            Role::Companion { suffix, .. } => {
                let binary = format!("etcd{suffix}");
                if !files.contains(&binary) {
                    out.waiting.push((name.clone(), Waiting::Binary(binary)));
                } else if checksum_of(name).is_none() {
                    out.waiting.push((name.clone(), Waiting::Checksum));
                }
            }
            Role::Tarball => match checksum_of(name) {
                // Its companions are inside it.
                Some(checksum) => out.ready.push(Bundle {
                    binary: StagedFile {
                        name: name.clone(),
                        tool: "etcd",
                        checksum,
                    },
                    companions: Vec::new(),
                }),
                None => out.waiting.push((name.clone(), Waiting::Checksum)),
            },
            Role::Archive => out.ignored.push((name.clone(), Ignored::Archive)),
            Role::Other => out.ignored.push((name.clone(), Ignored::NotEtcd)),
            Role::Checksum | Role::Quiet => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
