//! Whether a turn reuses the verified backup taken while this member vetted the target (the
//! snapshot the dress rehearsal restored), or takes a new one.
//!
//! The backup a turn needs is a verified snapshot of this member from shortly before its
//! stop. The rehearsal needs a snapshot too; taking it as a turn backup (same place, same
//! `meta.json` and `SHA256SUMS`, fsynced and re-read) lets one file serve both, and the
//! rehearsal then proves it restores. What a reused backup lacks are the writes between it
//! and the stop; `--backup-max-age` bounds that gap (a by-hand operator's snapshot is some
//! seconds old at the restart; a turn queued behind others waits minutes). Pure: the
//! driver gathers the facts and acts.

use std::time::Duration;

use crate::versions::Version;

/// Default of `--backup-max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// The backup taken while vetting, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The version the member ran when it was taken.
    pub from: Version,
    /// The target it was taken for.
    pub to: Version,
    /// Time since it was taken.
    pub age: Duration,
}

/// What the turn does about its backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The prepared backup is this turn's backup.
    Reuse,
    /// Take a new one; why the prepared one (if any) does not serve.
    Take(Option<String>),
}

/// Decides for a turn `from` → `to` with `--backup-max-age` `max_age` (zero: never reuse).
/// `snapshot_only` is false when the turn's backup also copies the data dir (that copy is
/// taken with etcd stopped, so nothing prepared can stand in for it).
pub fn decide(
    prepared: Option<&Prepared>,
    from: &Version,
    to: &Version,
    max_age: Duration,
    snapshot_only: bool,
) -> Decision {
    let Some(p) = prepared else {
        return Decision::Take(None);
    };
    let why = if max_age.is_zero() {
        "--backup-max-age is 0".to_owned()
    } else if !snapshot_only {
        "the backup mode copies the data dir with etcd stopped".to_owned()
    } else if &p.from != from || &p.to != to {
        format!(
            "the prepared backup was taken for {} -> {}, this turn is {from} -> {to}",
            p.from, p.to
        )
    } else if p.age > max_age {
        format!(
            "the prepared backup is {} s old, over --backup-max-age {} s",
            p.age.as_secs(),
            max_age.as_secs()
        )
    } else {
        return Decision::Reuse;
    };
    Decision::Take(Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    fn prepared(age: u64) -> Prepared {
        Prepared {
            from: v("3.5.16"),
            to: v("3.5.30"),
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn a_fresh_backup_of_the_same_turn_is_reused() {
        let d = decide(
            Some(&prepared(30)),
            &v("3.5.16"),
            &v("3.5.30"),
            DEFAULT_MAX_AGE,
            true,
        );
        assert_eq!(d, Decision::Reuse);
    }

    #[test]
    fn nothing_prepared_takes_one_without_a_reason() {
        let d = decide(None, &v("3.5.16"), &v("3.5.30"), DEFAULT_MAX_AGE, true);
        assert_eq!(d, Decision::Take(None));
    }

    #[test]
    fn a_stale_one_is_retaken_saying_how_old() {
        let d = decide(
            Some(&prepared(601)),
            &v("3.5.16"),
            &v("3.5.30"),
            DEFAULT_MAX_AGE,
            true,
        );
        assert!(
            matches!(d, Decision::Take(Some(ref w)) if w.contains("601 s old")),
            "{d:?}"
        );
    }

    #[test]
    fn another_turn_or_mode_or_zero_max_age_retakes() {
        let p = prepared(1);
        for (from, to, max, snap) in [
            ("3.5.16", "3.5.36", DEFAULT_MAX_AGE, true),
            ("3.5.30", "3.5.30", DEFAULT_MAX_AGE, true),
            ("3.5.16", "3.5.30", Duration::ZERO, true),
            ("3.5.16", "3.5.30", DEFAULT_MAX_AGE, false),
        ] {
            let d = decide(Some(&p), &v(from), &v(to), max, snap);
            assert!(
                matches!(d, Decision::Take(Some(_))),
                "{from} {to} {max:?} {snap}: {d:?}"
            );
        }
    }

    proptest! {
        /// Reused exactly when it is of this turn, snapshot-only, and no older than the bound.
        #[test]
        fn reuse_iff_same_turn_fresh_and_snapshot(age in 0u64..2000, max in 0u64..2000, same in any::<bool>(), snap in any::<bool>()) {
            let p = prepared(age);
            let to = if same { v("3.5.30") } else { v("3.5.36") };
            let d = decide(Some(&p), &v("3.5.16"), &to, Duration::from_secs(max), snap);
            let want = same && snap && max > 0 && age <= max;
            prop_assert_eq!(d == Decision::Reuse, want);
        }
    }
}
