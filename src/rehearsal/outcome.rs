//! Whose fault a rehearsal's result is: the pure classification from what was observed
//! (plain data: an exit status, a log tail, the step that failed) to an [`Outcome`], and
//! the `--rehearsal` mode.
//!
//! The caller acts on the answer cluster-wide: a [`Outcome::VersionFault`] rejects the
//! version for every member, so only what the target binary itself did on good data may
//! land there. A usage error from this member's flags, a full disk, a missing tool or a
//! refused snapshot is this member's problem and says how to fix it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::process::reaper::ChildExit;
use crate::versions::Version;

/// `--rehearsal`: whether a target version opens a copy of the data before any member stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RehearsalMode {
    /// Rehearse when it can run; when it cannot (no tool, no space), say so and go on.
    #[default]
    Auto,
    /// Rehearse, and treat not being able to as this member's fault.
    Always,
    /// Never rehearse.
    Never,
}

impl FromStr for RehearsalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "--rehearsal {other:?}: expected auto, always or never"
            )),
        }
    }
}

impl fmt::Display for RehearsalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        })
    }
}

/// The result of a rehearsal, by whose fault a failure is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target served a copy of this member's data.
    Passed {
        /// True when the target's HashKV of the copy equalled the running version's.
        hash_compared: bool,
        /// Why the hash was not compared, or what was compared.
        hash_note: String,
        /// What the range read checked (a key of the snapshot, or an empty keyspace).
        read_note: String,
        /// The revision both sides were compared at.
        revision: i64,
    },
    /// The target version cannot serve this data: reject it cluster-wide. The reason
    /// carries the rehearsal etcd's log tail.
    VersionFault(String),
    /// This member's own problem; the reason says how to fix it.
    MemberFault(String),
    /// The rehearsal could not run; the caller logs and marks it.
    Skipped(String),
    /// `cancel` resolved (the supervisor is stopping).
    Cancelled,
}

impl Outcome {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Passed { .. } => "passed",
            Self::VersionFault(_) => "version_fault",
            Self::MemberFault(_) => "member_fault",
            Self::Skipped(_) => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What went wrong, as plain data: the input of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `--rehearsal never`.
    Disabled,
    /// Neither the running nor the target version has a restore tool pinned.
    NoRestoreTool {
        /// The versions whose directories were looked in.
        looked_in: Vec<Version>,
    },
    /// The database is larger than `--rehearsal-max-db`.
    DbOverMax {
        /// The live member's db size.
        db_size: u64,
        /// The bound.
        max_db: u64,
    },
    /// The scratch filesystem cannot hold a second copy.
    NotEnoughSpace {
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// The scratch parent dir.
        dir: String,
    },
    /// The member's flags cannot be given to a private etcd (`--config-file`).
    UnsupportedFlags(String),
    /// The live member could not be asked (status, range, snapshot).
    LiveMember(String),
    /// A local file operation failed (scratch dir, log file).
    Local(String),
    /// The restore tool failed.
    Restore {
        /// Its exit.
        exit: Option<ChildExit>,
        /// Its output's tail, or the spawn error.
        output: String,
    },
    /// The target binary could not be started at all.
    Spawn(String),
    /// The target etcd exited before it passed.
    Exited(ChildExit),
    /// It never became healthy within the ready timeout.
    NeverHealthy(Duration),
    /// `/version` named another version.
    WrongVersion {
        /// What it reported.
        reported: String,
    },
    /// It answered `/version` or the range read of the snapshot's key with an error, or
    /// read something else than the live member had.
    NotServing(String),
    /// The running version could not give the reference HashKV of the copy (it would not
    /// start, serve or hash it): not the target's doing.
    Reference(String),
    /// HashKV at the same revision differs.
    HashMismatch {
        /// The revision compared at.
        revision: i64,
        /// The running version's hash of the copy.
        running: u32,
        /// The rehearsal's hash.
        rehearsal: u32,
    },
    /// `cancel` resolved.
    Cancelled,
}

/// Log lines that mean etcd refused its command line: the member's flags, not the version.
const USAGE_MARKERS: &[&str] = &[
    "flag provided but not defined",
    "failed to verify flags",
    "is not a valid flag",
];

/// A full disk is the host's problem wherever it shows up.
const DISK_FULL_MARKERS: &[&str] = &["no space left on device", "disk quota exceeded"];

/// A loopback port taken between choosing and binding it: nobody's fault, try again.
const PORT_TAKEN_MARKERS: &[&str] = &["address already in use"];

/// The exit code Go's flag package uses for a usage error.
const USAGE_EXIT_CODE: i32 = 2;

/// Lines of output quoted in a reason.
const QUOTED_LINES: usize = 20;

/// Whose fault `finding` is, given the `target` version, the `mode`, and the end of the
/// rehearsal etcd's (or the restore tool's) output: all of `log` is searched (a usage
/// message can push the offending line far up), its last lines are quoted.
pub fn classify(finding: &Finding, target: &Version, mode: RehearsalMode, log: &str) -> Outcome {
    let lines: Vec<&str> = log.lines().collect();
    let log_tail = &lines[lines.len().saturating_sub(QUOTED_LINES)..].join("\n");
    let with_log = |what: String| {
        if log_tail.trim().is_empty() {
            format!("{what} (it wrote no output)")
        } else {
            format!("{what}; last lines of its output:\n{log_tail}")
        }
    };
    // Not being able to run is the member's fault only when a rehearsal is required.
    let cannot_run = |why: String, fix: &str| match mode {
        RehearsalMode::Always => Outcome::MemberFault(format!(
            "{why}; --rehearsal=always requires a rehearsal: {fix}"
        )),
        RehearsalMode::Auto | RehearsalMode::Never => Outcome::Skipped(why),
    };
    match finding {
        Finding::Disabled => Outcome::Skipped("rehearsal disabled (--rehearsal=never)".to_owned()),
        Finding::NoRestoreTool { looked_in } => cannot_run(
            format!(
                "no snapshot restore tool is pinned beside {} (etcdutl for 3.5+, etcdctl for 3.4)",
                join_versions(looked_in)
            ),
            "stage the release with its etcdutl (or etcdctl for 3.4) beside etcd",
        ),
        Finding::DbOverMax { db_size, max_db } => cannot_run(
            format!("the database ({db_size} bytes) is larger than --rehearsal-max-db ({max_db} bytes)"),
            "raise --rehearsal-max-db, or defragment/compact the database",
        ),
        Finding::NotEnoughSpace { needed, free, dir } => cannot_run(
            format!("{dir} has {free} bytes free; a rehearsal copy needs {needed}"),
            "free space on that filesystem",
        ),
        Finding::UnsupportedFlags(why) => cannot_run(why.clone(), "pass etcd's settings as flags"),
        Finding::Reference(why) => cannot_run(
            why.clone(),
            "check that the running version's pinned binary starts on this member's flags",
        ),
        Finding::LiveMember(why) => cannot_run(
            format!("cannot copy the live member's data: {why}"),
            "check that the local member is healthy and reachable",
        ),
        Finding::Local(why) => Outcome::MemberFault(format!(
            "{why}; fix the permissions or space of the state dir"
        )),
        Finding::Restore { exit, output } => {
            let what = match exit {
                Some(exit) => format!("snapshot restore failed ({exit})"),
                None => "snapshot restore did not run to its end".to_owned(),
            };
            if contains_any(output, DISK_FULL_MARKERS) {
                Outcome::MemberFault(format!(
                    "{what}: the disk is full; free space under the state dir. Output:\n{output}"
                ))
            } else {
                Outcome::MemberFault(format!(
                    "{what}; check the pinned restore tool and the snapshot. Output:\n{output}"
                ))
            }
        }
        Finding::Spawn(why) => Outcome::MemberFault(format!(
            "cannot start the target etcd {target}: {why}; check the pinned binary and the host"
        )),
        Finding::Exited(exit) => classify_exit(*exit, target, log, log_tail, with_log),
        Finding::NeverHealthy(after) => {
            if contains_any(log, DISK_FULL_MARKERS) {
                return disk_full(log_tail);
            }
            Outcome::VersionFault(with_log(format!(
                "etcd {target} did not become healthy on a copy of this member's data within {}",
                humantime::format_duration(*after)
            )))
        }
        Finding::WrongVersion { reported } => Outcome::VersionFault(with_log(format!(
            "the binary pinned as {target} reports version {reported:?} on /version"
        ))),
        Finding::NotServing(why) => Outcome::VersionFault(with_log(format!(
            "etcd {target} does not serve a copy of this member's data: {why}"
        ))),
        Finding::HashMismatch {
            revision,
            running,
            rehearsal,
        } => Outcome::VersionFault(with_log(format!(
            "etcd {target} computes HashKV {rehearsal} at revision {revision} on a copy of this member's data; the running version computes {running} on the same copy"
        ))),
        Finding::Cancelled => Outcome::Cancelled,
    }
}

fn classify_exit(
    exit: ChildExit,
    target: &Version,
    log: &str,
    log_tail: &str,
    with_log: impl Fn(String) -> String,
) -> Outcome {
    if let Some(flag) = usage_error(log) {
        return Outcome::MemberFault(format!(
            "etcd {target} refuses this member's flags ({exit}): {flag}; remove or rename it in the member's etcd arguments before upgrading. Last lines of its output:\n{log_tail}"
        ));
    }
    // Go's runtime exits with 2 on a panic too: only a clean exit 2 is a usage error.
    if exit == ChildExit::Code(USAGE_EXIT_CODE) && !contains_any(log, CRASH_MARKERS) {
        return Outcome::MemberFault(format!(
            "etcd {target} exited with code 2, a usage error from this member's flags; check them against etcd {target}'s --help. Last lines of its output:\n{log_tail}"
        ));
    }
    if contains_any(log, DISK_FULL_MARKERS) {
        return disk_full(log_tail);
    }
    if contains_any(log, PORT_TAKEN_MARKERS) {
        return Outcome::Skipped(format!(
            "a loopback port chosen for the rehearsal was taken meanwhile ({exit}); it will be tried again next time. Output:\n{log_tail}"
        ));
    }
    Outcome::VersionFault(with_log(format!(
        "etcd {target} exited ({exit}) on a copy of this member's data"
    )))
}

fn disk_full(log_tail: &str) -> Outcome {
    Outcome::MemberFault(format!(
        "the disk under the rehearsal dir is full; free space under the state dir. Output:\n{log_tail}"
    ))
}

/// The offending flag or message of a usage error in etcd's output, if any.
pub fn usage_error(log_tail: &str) -> Option<String> {
    for line in log_tail.lines() {
        if let Some((_, rest)) = line.split_once("flag provided but not defined:") {
            let name = rest.trim().trim_start_matches('-');
            return Some(format!("flag --{name} is not defined"));
        }
        if !contains_any(line, USAGE_MARKERS) {
            continue;
        }
        // zap JSON: {"msg":"failed to verify flags","error":"--logger=capnslog is removed in v3.5"}
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
                return Some(error.to_owned());
            }
        }
        return Some(line.trim().to_owned());
    }
    None
}

/// A Go panic or fatal runtime error: the version's fault, whatever the exit code.
const CRASH_MARKERS: &[&str] = &["panic:", "fatal error:", "goroutine "];

fn contains_any(text: &str, markers: &[&str]) -> bool {
    let lower = text.to_lowercase();
    markers.iter().any(|m| lower.contains(m))
}

fn join_versions(versions: &[Version]) -> String {
    if versions.is_empty() {
        return "any version".to_owned();
    }
    versions
        .iter()
        .map(Version::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3530() -> Version {
        Version::new(3, 5, 30)
    }

    fn classify_auto(finding: &Finding, tail: &str) -> Outcome {
        classify(finding, &v3530(), RehearsalMode::Auto, tail)
    }

    #[test]
    fn mode_round_trips_and_refuses_other_words() {
        for mode in [
            RehearsalMode::Auto,
            RehearsalMode::Always,
            RehearsalMode::Never,
        ] {
            assert_eq!(mode.to_string().parse::<RehearsalMode>(), Ok(mode));
        }
        assert!("sometimes".parse::<RehearsalMode>().is_err());
        assert!("AUTO".parse::<RehearsalMode>().is_err());
        assert_eq!(RehearsalMode::default(), RehearsalMode::Auto);
    }

    #[test]
    fn removed_flag_is_the_members_fault_and_names_it() {
        let tail = "flag provided but not defined: -debug\nUsage:\n\n  etcd [flags]";
        match classify_auto(&Finding::Exited(ChildExit::Code(2)), tail) {
            Outcome::MemberFault(reason) => assert!(reason.contains("--debug"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_flag_verification_is_the_members_fault_with_etcds_words() {
        let tail = r#"{"level":"warn","msg":"failed to verify flags","error":"--logger=capnslog is removed in v3.5"}"#;
        match classify_auto(&Finding::Exited(ChildExit::Code(1)), tail) {
            Outcome::MemberFault(reason) => {
                assert!(reason.contains("--logger=capnslog is removed"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let tail = r#"{"msg":"failed to verify flags","error":"'foo' is not a valid flag"}"#;
        assert!(matches!(
            classify_auto(&Finding::Exited(ChildExit::Code(1)), tail),
            Outcome::MemberFault(r) if r.contains("'foo' is not a valid flag")
        ));
    }

    #[test]
    fn a_usage_line_above_a_long_usage_text_is_found_and_the_quote_is_short() {
        let mut log = "flag provided but not defined: -debug\n".to_owned();
        for i in 0..300 {
            log.push_str(&format!("  usage line {i}\n"));
        }
        match classify_auto(&Finding::Exited(ChildExit::Code(2)), &log) {
            Outcome::MemberFault(reason) => {
                assert!(reason.contains("flag --debug is not defined"), "{reason}");
                assert!(reason.contains("usage line 299"), "{reason}");
                assert!(!reason.contains("usage line 200"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_code_two_without_a_message_is_still_a_usage_error() {
        assert!(matches!(
            classify_auto(&Finding::Exited(ChildExit::Code(2)), ""),
            Outcome::MemberFault(_)
        ));
    }

    #[test]
    fn crash_and_panic_are_the_versions_fault_with_the_log_tail() {
        let tail = "panic: runtime error: index out of range\ngoroutine 1 [running]:";
        // Go exits with 2 on a panic: still the version's fault, not a usage error.
        for exit in [
            ChildExit::Code(1),
            ChildExit::Code(2),
            ChildExit::Signal(libc::SIGSEGV),
        ] {
            match classify_auto(&Finding::Exited(exit), tail) {
                Outcome::VersionFault(reason) => {
                    assert!(reason.contains("index out of range"), "{reason}");
                    assert!(reason.contains("3.5.30"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn what_the_running_target_did_wrong_is_the_versions_fault() {
        for finding in [
            Finding::NeverHealthy(Duration::from_secs(30)),
            Finding::WrongVersion {
                reported: "3.5.16".into(),
            },
            Finding::NotServing("no key".into()),
            Finding::HashMismatch {
                revision: 56,
                running: 1,
                rehearsal: 2,
            },
        ] {
            assert!(
                matches!(classify_auto(&finding, "x"), Outcome::VersionFault(_)),
                "{finding:?}"
            );
        }
    }

    #[test]
    fn a_full_disk_is_the_members_fault_wherever_it_shows() {
        let restore = Finding::Restore {
            exit: Some(ChildExit::Code(1)),
            output: "Error: write /x/member/snap/db: no space left on device".into(),
        };
        assert!(matches!(
            classify_auto(&restore, ""),
            Outcome::MemberFault(r) if r.contains("disk is full")
        ));
        let tail = r#"{"level":"fatal","msg":"failed to open backend","error":"write: no space left on device"}"#;
        assert!(matches!(
            classify_auto(&Finding::Exited(ChildExit::Code(1)), tail),
            Outcome::MemberFault(_)
        ));
        assert!(matches!(
            classify_auto(&Finding::NeverHealthy(Duration::from_secs(1)), tail),
            Outcome::MemberFault(_)
        ));
    }

    #[test]
    fn cannot_run_is_skipped_in_auto_and_the_members_fault_in_always() {
        let no_tool = Finding::NoRestoreTool {
            looked_in: vec![Version::new(3, 5, 16), v3530()],
        };
        let over = Finding::DbOverMax {
            db_size: 3 << 30,
            max_db: 2 << 30,
        };
        let space = Finding::NotEnoughSpace {
            needed: 10,
            free: 1,
            dir: "/s".into(),
        };
        // The running version failing on the copy is never the target's fault, whatever the
        // target's log says (it did not run).
        let reference = Finding::Reference(
            "the running version 3.5.16 did not serve the restored copy: it exited".into(),
        );
        assert!(matches!(
            classify_auto(&reference, "panic: something"),
            Outcome::Skipped(r) if r.contains("3.5.16 did not serve")
        ));
        for finding in [&no_tool, &over, &space, &reference] {
            assert!(matches!(classify_auto(finding, ""), Outcome::Skipped(_)));
            assert!(matches!(
                classify(finding, &v3530(), RehearsalMode::Always, ""),
                Outcome::MemberFault(r) if r.contains("--rehearsal=always")
            ));
        }
        assert!(matches!(
            classify_auto(&no_tool, ""),
            Outcome::Skipped(r) if r.contains("3.5.16 or 3.5.30")
        ));
        assert!(matches!(
            classify_auto(&Finding::Disabled, ""),
            Outcome::Skipped(_)
        ));
        assert_eq!(classify_auto(&Finding::Cancelled, ""), Outcome::Cancelled);
    }

    #[test]
    fn a_port_taken_meanwhile_blames_nobody() {
        let tail =
            r#"{"level":"fatal","msg":"listen tcp 127.0.0.1:40001: bind: address already in use"}"#;
        assert!(matches!(
            classify_auto(&Finding::Exited(ChildExit::Code(1)), tail),
            Outcome::Skipped(_)
        ));
    }

    /// The label is the outcome's word in the logs: one per outcome, as documented.
    #[test]
    fn each_outcome_is_labelled_by_its_own_word() {
        let outcomes = [
            Outcome::Passed {
                hash_compared: true,
                hash_note: String::new(),
                read_note: String::new(),
                revision: 1,
            },
            Outcome::VersionFault("v".into()),
            Outcome::MemberFault("m".into()),
            Outcome::Skipped("s".into()),
            Outcome::Cancelled,
        ];
        let labels: Vec<&str> = outcomes.iter().map(Outcome::label).collect();
        assert_eq!(
            labels,
            [
                "passed",
                "version_fault",
                "member_fault",
                "skipped",
                "cancelled"
            ]
        );
    }

    #[test]
    fn a_failed_restore_is_the_members_fault() {
        let restore = Finding::Restore {
            exit: Some(ChildExit::Code(1)),
            output: "Error: expected sha256".into(),
        };
        assert!(matches!(
            classify_auto(&restore, ""),
            Outcome::MemberFault(_)
        ));
    }
}
