//! Backup directory names: `<UTC time>-<member>-<from>-to-<to>` for a turn's backup,
//! `<UTC time>-<member>-<version>` for an on-demand one, and the pattern retention and
//! clean-up match before they touch anything.
//!
//! The time is ISO 8601 basic format with milliseconds (`20250102T030405.678Z`): fixed
//! width, so names sort by time, no `:` (awkward in shells and some tools), and two backups
//! of one member in the same second still get different names.

use std::time::SystemTime;

use crate::versions::Version;

/// Length of the time prefix (`20250102T030405.678Z`).
const TIME_LEN: usize = 20;

/// Prefix of a backup being written (beside its final name, same filesystem).
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Prefix of a backup being deleted (renamed first, so a crash mid-delete never leaves a
/// half-deleted directory under a backup's name).
pub(crate) const DELETING_PREFIX: &str = ".deleting-";

/// The parts of a backup directory's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupName {
    /// The time prefix as written.
    pub time: String,
    /// The member's name (sanitized).
    pub member: String,
    /// The version the member ran (`from` of a turn).
    pub from: Version,
    /// The version a turn upgrades to; `None` for an on-demand backup.
    pub to: Option<Version>,
}

/// The time prefix for `now`, and the same instant as RFC 3339 (for meta.json).
pub(crate) fn timestamps(now: SystemTime) -> (String, String) {
    let rfc3339 = humantime::format_rfc3339_millis(now).to_string();
    let compact = rfc3339.replace(['-', ':'], "");
    (compact, rfc3339)
}

/// A member name made safe for a directory name: anything but `[A-Za-z0-9._-]` becomes `_`.
pub(crate) fn sanitize_member(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "member".to_owned()
    } else {
        clean
    }
}

/// The name of a turn's backup.
pub(crate) fn turn_name(time: &str, member: &str, from: &Version, to: &Version) -> String {
    format!("{time}-{}-{from}-to-{to}", sanitize_member(member))
}

/// The name of an on-demand backup.
pub(crate) fn on_demand_name(time: &str, member: &str, version: &str) -> String {
    // The version comes from etcd's status; a missing one must not break the pattern.
    let version = version
        .parse::<Version>()
        .map_or_else(|_| "0.0.0".to_owned(), |v| v.to_string());
    format!("{time}-{}-{version}", sanitize_member(member))
}

/// Reads a backup directory's name; `None` for anything that is not one of ours.
pub(crate) fn parse(name: &str) -> Option<BackupName> {
    let time = name.get(..TIME_LEN)?;
    if !is_time(time) || name.as_bytes().get(TIME_LEN) != Some(&b'-') {
        return None;
    }
    let rest = &name[TIME_LEN + 1..];
    // A turn's backup ends with `-to-<version>`; a member name may contain `-to-` too,
    // so the split is accepted only when both sides parse.
    if let Some((head, to)) = rest.rsplit_once("-to-") {
        if let (Ok(to), Some((member, from))) = (to.parse::<Version>(), split_version(head)) {
            return Some(BackupName {
                time: time.to_owned(),
                member,
                from,
                to: Some(to),
            });
        }
    }
    let (member, from) = split_version(rest)?;
    Some(BackupName {
        time: time.to_owned(),
        member,
        from,
        to: None,
    })
}

/// True for the name of a turn's backup (the only ones retention deletes).
pub(crate) fn is_turn_backup(name: &str) -> bool {
    parse(name).is_some_and(|n| n.to.is_some())
}

/// `<member>-<version>` → (member, version), with the shortest version suffix that parses
/// (a pre-release such as `3.6.0-rc.1` contains a dash itself).
fn split_version(s: &str) -> Option<(String, Version)> {
    s.char_indices()
        .rev()
        .filter(|&(_, c)| c == '-')
        .find_map(|(i, _)| {
            let member = &s[..i];
            let version = s[i + 1..].parse::<Version>().ok()?;
            (!member.is_empty()).then(|| (member.to_owned(), version))
        })
}

/// `YYYYMMDDTHHMMSS.mmmZ`.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == TIME_LEN
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn timestamps_are_fixed_width_and_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_735_787_045_678);
        let (compact, rfc) = timestamps(t);
        assert_eq!(compact, "20250102T030405.678Z");
        assert_eq!(rfc, "2025-01-02T03:04:05.678Z");
        let (later, _) = timestamps(t + Duration::from_millis(1));
        assert!(later > compact);
        assert!(is_time(&compact));
    }

    #[test]
    fn names_round_trip() {
        let time = "20250102T030405.678Z";
        let name = turn_name(time, "m1", &v("3.4.23"), &v("3.5.16"));
        assert_eq!(name, "20250102T030405.678Z-m1-3.4.23-to-3.5.16");
        let parsed = parse(&name).unwrap();
        assert_eq!(parsed.member, "m1");
        assert_eq!(parsed.from, v("3.4.23"));
        assert_eq!(parsed.to, Some(v("3.5.16")));
        assert!(is_turn_backup(&name));

        let od = on_demand_name(time, "etcd-a", "3.5.16");
        assert_eq!(od, "20250102T030405.678Z-etcd-a-3.5.16");
        let parsed = parse(&od).unwrap();
        assert_eq!((parsed.member.as_str(), parsed.to), ("etcd-a", None));
        assert!(!is_turn_backup(&od));
    }

    #[test]
    fn awkward_members_and_pre_releases() {
        let time = "20250102T030405.678Z";
        // Dashes, "-to-" and a version-like tail in the member name; pre-release versions.
        for member in ["go-to-3.5.0", "a-b", "m-3.5.0", "x/y z"] {
            let name = turn_name(time, member, &v("3.6.0-rc.0"), &v("3.6.0-rc.1"));
            let parsed = parse(&name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(parsed.member, sanitize_member(member), "{name}");
            assert_eq!(parsed.from, v("3.6.0-rc.0"), "{name}");
            assert_eq!(parsed.to, Some(v("3.6.0-rc.1")), "{name}");
        }
        assert_eq!(sanitize_member("x/y z"), "x_y_z");
        assert_eq!(sanitize_member(""), "member");
    }

    #[test]
    fn foreign_names_do_not_match() {
        for name in [
            "notes",
            "20250102T030405.678Z",
            "20250102T030405.678Z-",
            "20250102T030405Z-m1-3.4.23-to-3.5.16",
            "20250102T030405.678Z-3.4.23-to-3.5.16",
            "20250102T030405.678Z-m1-latest",
            "x20250102T030405.678Z-m1-3.4.23-to-3.5.16",
            ".tmp-20250102T030405.678Z-m1-3.4.23-to-3.5.16",
        ] {
            assert!(!is_turn_backup(name), "{name}");
        }
        assert!(parse("20250102T030405.678Z-m1-latest").is_none());
    }
}
