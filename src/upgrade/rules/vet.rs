//! The vetting rules: what a staged version's checks against this member mean, as plain
//! data in and a [`Vetted`] out. The root role a turn needs ([`judge_roles`]), whether the
//! v2 store must be checked before 3.6 and what happens when it cannot be
//! ([`v2store_check`]), and what `etcdutl check v2store` said, with etcd's remedies
//! ([`judge_v2store`]). The checks themselves (running `--help`, `etcdutl`, the dress
//! rehearsal) are the live vetter's, in [`crate::upgrade::turn::vet`].

use crate::process::reaper::ChildExit;
use crate::versions::Version;

/// What vetting a staged version against this member found, before it queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vetted {
    /// Nothing against it; the warnings are logged.
    Pass {
        /// Things worth an operator's look that do not stop the upgrade.
        warnings: Vec<String>,
        /// What was checked, one line (shown by `status` and `plan`).
        summary: String,
    },
    /// This member cannot take it as it is configured (flags, disk, missing tool): the
    /// reason says what to fix. Nothing is rejected for the cluster.
    MemberFault(String),
    /// The version itself failed (the dress rehearsal): reject it for the whole cluster.
    VersionFault(String),
}

/// Whether the v2 store is checked before `target`, and what happens when it cannot be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2StoreCheck {
    /// Not needed: the move does not cross from before 3.6 to 3.6 or later.
    None,
    /// With the running version's etcdutl (3.5.32+ also reads the WAL).
    WithRunning,
    /// No etcdutl of the running version is pinned and this member ran with v2: refused.
    RefuseUnchecked,
    /// No etcdutl of the running version is pinned and v2 was never seen: a warning.
    WarnUnchecked,
}

/// The v2 store is checked on every move from before 3.6 to 3.6 or later, with the running
/// version's `etcdutl` only: 3.6's and 3.7's etcdutl have no `check` ("unknown command").
/// v2 data can predate the supervisor (written while `--enable-v2` was on, then the flag
/// dropped), and a member that never enabled v2 can still hold v2 requests in its WAL since
/// the last v2 snapshot (3.4 writes a QGET for every `/health`), on which 3.6 panics at
/// replay ("detected disallowed v2 WAL"; seen on 3.4.23 → 3.5.36 → 3.6.17).
pub fn v2store_check(
    running: &Version,
    target: &Version,
    v2_seen: bool,
    running_etcdutl: bool,
) -> V2StoreCheck {
    if target.minor_version() < (3, 6) || running.minor_version() >= (3, 6) {
        V2StoreCheck::None
    } else if running_etcdutl {
        V2StoreCheck::WithRunning
    } else if v2_seen {
        V2StoreCheck::RefuseUnchecked
    } else {
        V2StoreCheck::WarnUnchecked
    }
}

/// Whether `user`, with these roles (or the error reading them), may take a turn.
pub fn judge_roles(user: &str, roles: Result<Vec<String>, String>) -> Vetted {
    match roles {
        Ok(roles) if roles.iter().any(|r| r == "root") => Vetted::Pass {
            warnings: Vec::new(),
            summary: format!("user {user} has the root role"),
        },
        Ok(roles) => Vetted::MemberFault(format!(
            "etcd user {user} lacks the root role (its roles: {}): an upgrade turn needs it \
             for the snapshot backup, HashKV and the leader hand-off (admin-only in etcd) and \
             for the lock and records under the supervisor's key prefix. Grant it (etcdctl \
             user grant-role {user} root) or give --user a user that has it, then restart the \
             supervisor",
            if roles.is_empty() {
                "none".to_owned()
            } else {
                roles.join(", ")
            }
        )),
        Err(e) => Vetted::Pass {
            warnings: vec![format!(
                "the roles of etcd user {user} could not be read: {e}"
            )],
            summary: "roles not checked".into(),
        },
    }
}

/// What `etcdutl check v2store` said, as a verdict with etcd's remedies.
pub fn judge_v2store(target: &Version, exit: ChildExit, output: &str) -> Vetted {
    let custom = output
        .lines()
        .find(|l| l.contains("detected custom"))
        .map(|l| l.trim().trim_start_matches("Error: ").to_owned());
    match (exit, custom) {
        (ChildExit::Code(0), None) => Vetted::Pass {
            warnings: Vec::new(),
            summary: "v2store clean".into(),
        },
        (_, Some(found)) => {
            // The guide's remedies by where the check found the data: "content in v2store"
            // (the v2 snapshot), "content in WAL records", or "in both v2store and WAL records".
            let in_snapshot = found.contains("in v2store") || found.contains("both");
            let in_wal = found.contains("WAL");
            let mut remedies = Vec::new();
            if in_snapshot {
                remedies.push(
                    "in the v2 snapshot: migrate it to v3 if you need it (etcd's v2 migration \
                     guide), otherwise remove it, or start etcd (3.5.32+) with \
                     --v2-deprecation=write-only-skip-check at your own risk",
                );
            }
            if in_wal || !in_snapshot {
                remedies.push(
                    "in the WAL: it goes with the next v2 snapshot; to force one, add \
                     --snapshot-count=1 to this member's etcd flags and restart the supervisor, \
                     then, once a snapshot is taken, remove the flag and restart again",
                );
            }
            Vetted::MemberFault(format!(
                "etcdutl check v2store: {found}; etcd {target} cannot start on custom v2 data. \
                 Per etcd's 3.6 upgrade guide ('V2 Store'): {}. The supervisor checks again \
                 when it restarts; once clean, remove --enable-v2 / ETCD_ENABLE_V2 from every \
                 member",
                remedies.join("; ")
            ))
        }
        (other, None) => Vetted::MemberFault(format!(
            "etcdutl check v2store failed ({other}): {}",
            output.trim().lines().last().unwrap_or("no output")
        )),
    }
}

/// etcd's quota when `--quota-backend-bytes` is 0 or not given (`DefaultQuotaBytes`).
pub const ETCD_DEFAULT_QUOTA: u64 = 2 << 30;

/// The share of the quota, in percent, from which the vetting warns.
pub const QUOTA_WARN_PERCENT: u64 = 90;

/// A warning when this member's db file is at [`QUOTA_WARN_PERCENT`] or more of its quota.
///
/// `db_size` is the file's size (`dbSize` of endpoint status), which is what etcd's quota
/// counts (free pages included); `quota` is `--quota-backend-bytes` as given (absent or 0:
/// etcd's default; negative: no quota). The upgrade goes on: its own writes are a few
/// hundred bytes and a restart does not grow the file, so it is no likelier to raise
/// NOSPACE than the applications' next writes; but an operator about to change versions
/// should know that etcd is close to taking only reads and deletes.
pub fn quota_headroom(db_size: u64, quota: Option<i64>) -> Option<String> {
    let quota = match quota {
        Some(q) if q < 0 => return None,
        Some(q) if q > 0 => q as u64,
        _ => ETCD_DEFAULT_QUOTA,
    };
    let percent = db_size.saturating_mul(100) / quota;
    (percent >= QUOTA_WARN_PERCENT).then(|| {
        format!(
            "the db file is {} MiB, {percent} % of its quota of {} MiB (--quota-backend-bytes): \
             the upgrade goes on (it adds a few hundred bytes and a restart does not grow the \
             file), but etcd raises NOSPACE and takes only reads and deletes once a write would \
             pass the quota: free space soon as etcd's maintenance guide says (etcdctl compact, \
             then etcdctl defrag on each member) or raise --quota-backend-bytes on every member",
            db_size >> 20,
            quota >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2store_check_runs_before_3_6_also_without_v2_when_the_running_etcdutl_reads_the_wal() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        use V2StoreCheck::*;
        let cases = [
            // (running, target, v2 seen, running etcdutl pinned) -> check
            ("3.5.36", "3.6.17", false, true, WithRunning),
            ("3.5.32", "3.6.17", false, true, WithRunning),
            ("3.5.16", "3.6.17", true, true, WithRunning),
            ("3.5.36", "3.6.17", false, false, WarnUnchecked),
            ("3.5.36", "3.6.17", true, false, RefuseUnchecked),
            ("3.5.36", "3.5.40", true, true, None),
            ("3.4.23", "3.5.36", false, true, None),
            ("3.6.17", "3.7.4", false, true, None),
            ("3.6.17", "3.7.4", true, true, None),
        ];
        for (running, target, seen, pinned, want) in cases {
            assert_eq!(
                v2store_check(&v(running), &v(target), seen, pinned),
                want,
                "{running} -> {target}, v2 seen {seen}, etcdutl {pinned}"
            );
        }
    }

    #[test]
    fn a_user_without_the_root_role_is_refused_here_naming_the_grant() {
        assert!(matches!(
            judge_roles("root", Ok(vec!["root".into()])),
            Vetted::Pass { .. }
        ));
        let Vetted::MemberFault(why) = judge_roles("viewer", Ok(vec!["reader".into()])) else {
            panic!("a user without root must be refused");
        };
        assert!(why.contains("etcd user viewer lacks the root role (its roles: reader)"));
        assert!(why.contains("etcdctl user grant-role viewer root"), "{why}");
        let Vetted::MemberFault(why) = judge_roles("viewer", Ok(Vec::new())) else {
            panic!("a user without roles must be refused");
        };
        assert!(why.contains("(its roles: none)"), "{why}");
        // Not knowing is not a refusal: the turn's own calls will say what is wrong.
        assert!(matches!(
            judge_roles("x", Err("timeout".into())),
            Vetted::Pass { warnings, .. } if warnings[0].contains("timeout")
        ));
    }

    #[test]
    fn v2store_output_is_judged_with_the_guides_remedies() {
        let t = Version::new(3, 6, 1);
        assert_eq!(
            judge_v2store(
                &t,
                ChildExit::Code(0),
                "No custom content found in both v2store and WAL records"
            ),
            Vetted::Pass {
                warnings: Vec::new(),
                summary: "v2store clean".into(),
            }
        );
        let Vetted::MemberFault(why) = judge_v2store(
            &t,
            ChildExit::Code(1),
            "Error: detected custom content in v2store\n",
        ) else {
            panic!("custom data must refuse");
        };
        assert!(why.contains("detected custom content in v2store"), "{why}");
        assert!(why.contains("--enable-v2"), "{why}");
        assert!(why.contains("write-only-skip-check"), "{why}");
        assert!(!why.contains("--snapshot-count=1"), "{why}");
        let Vetted::MemberFault(why) = judge_v2store(
            &t,
            ChildExit::Code(1),
            "Error: detected custom v2 content in WAL records\n",
        ) else {
            panic!("custom data must refuse");
        };
        assert!(why.contains("--snapshot-count=1"), "{why}");
        assert!(!why.contains("write-only-skip-check"), "{why}");
        let Vetted::MemberFault(why) = judge_v2store(
            &t,
            ChildExit::Code(1),
            "Error: detected custom v2 content in both v2store and WAL records\n",
        ) else {
            panic!("custom data must refuse");
        };
        assert!(why.contains("--snapshot-count=1"), "{why}");
        assert!(why.contains("write-only-skip-check"), "{why}");
        assert!(matches!(
            judge_v2store(&t, ChildExit::Code(2), "unknown command"),
            Vetted::MemberFault(w) if w.contains("unknown command")
        ));
    }

    #[test]
    fn the_quota_warning_starts_at_ninety_percent_of_the_quota_etcd_applies() {
        let mib = 1u64 << 20;
        // An explicit quota of 100 MiB: 89 MiB is quiet, 90 MiB warns, with both sizes.
        assert_eq!(quota_headroom(89 * mib, Some(100 * mib as i64)), None);
        let w = quota_headroom(90 * mib, Some(100 * mib as i64)).expect("a warning at 90 %");
        for said in [
            "90 MiB",
            "90 %",
            "100 MiB",
            "compact",
            "defrag",
            "--quota-backend-bytes",
        ] {
            assert!(w.contains(said), "{said}: {w}");
        }
        assert!(quota_headroom(120 * mib, Some(100 * mib as i64)).is_some());
        // Absent or 0: etcd's 2 GiB default.
        let default = ETCD_DEFAULT_QUOTA;
        for q in [None, Some(0)] {
            assert_eq!(quota_headroom(default / 10 * 8, q), None, "{q:?}");
            let w = quota_headroom(default / 100 * 95, q).expect("95 % of the default");
            assert!(w.contains("2048 MiB"), "{w}");
        }
        // Negative: etcd runs without a quota.
        assert_eq!(quota_headroom(u64::MAX / 200, Some(-1)), None);
    }
}
