//! The consistency rule after a rollout: every member's `HashKV` at one common revision
//! must agree. [`compare`] is the verdict over the hashes, [`common_revision`] the revision
//! every member can hash, and [`InconsistencyRecord`] what a mismatch leaves under
//! `consistency/alarm` for the operator (while it exists no supervisor takes a turn).
//! Fetching the hashes and recording a mismatch are [`crate::upgrade::turn::consistency`]'s;
//! the block is the driver's, before it queues for a turn.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One member's answer at the common revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    /// The member's name.
    pub member: String,
    /// Its HashKV at the revision.
    pub hash: u32,
    /// The compaction revision the hash starts after.
    pub compact_revision: i64,
}

/// What the comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsistencyVerdict {
    /// Every member has the same hash at `revision`.
    Consistent {
        /// The common revision.
        revision: i64,
        /// The hash they share.
        hash: u32,
        /// How many members were compared.
        members: usize,
    },
    /// The hashes differ: the stores diverged.
    Mismatch {
        /// The common revision.
        revision: i64,
        /// Every member's answer.
        hashes: Vec<MemberHash>,
    },
    /// The members' compaction revisions differ (a compaction in flight): the hashes
    /// cover different histories and say nothing yet.
    NotComparable,
}

/// The verdict on hashes taken at `revision`; two members or more are needed to disagree.
pub fn compare(revision: i64, hashes: &[MemberHash]) -> ConsistencyVerdict {
    let Some(first) = hashes.first() else {
        return ConsistencyVerdict::Consistent {
            revision,
            hash: 0,
            members: 0,
        };
    };
    if hashes
        .iter()
        .any(|h| h.compact_revision != first.compact_revision)
    {
        return ConsistencyVerdict::NotComparable;
    }
    if hashes.iter().all(|h| h.hash == first.hash) {
        ConsistencyVerdict::Consistent {
            revision,
            hash: first.hash,
            members: hashes.len(),
        }
    } else {
        ConsistencyVerdict::Mismatch {
            revision,
            hashes: hashes.to_vec(),
        }
    }
}

/// The revision every member can hash: the lowest current revision among them (each has
/// applied at least that far, and a compaction is a raft entry, so none has compacted
/// past it unless it moved on meanwhile, which [`crate::upgrade::turn::consistency::fetch`] retries).
pub fn common_revision(current: &[i64]) -> Option<i64> {
    current.iter().copied().min()
}

/// `consistency/alarm`: what a mismatch left for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InconsistencyRecord {
    /// The supervisor that found it.
    pub found_by: String,
    /// The rollout's target.
    pub version: String,
    /// The common revision hashed.
    pub revision: i64,
    /// Every member's hash.
    pub hashes: Vec<MemberHash>,
    /// When (RFC 3339).
    pub time: String,
}

impl InconsistencyRecord {
    /// One line for `status` and the logs: which members hold which hash.
    pub fn summary(&self) -> String {
        let mut groups: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for h in &self.hashes {
            groups.entry(h.hash).or_default().push(&h.member);
        }
        let parts: Vec<String> = groups
            .iter()
            .map(|(hash, members)| format!("{} hash {hash}", members.join(",")))
            .collect();
        format!(
            "members' key-value stores differ at revision {} after the rollout to {} ({}; found by {} at {})",
            self.revision,
            self.version,
            parts.join("; "),
            self.found_by,
            self.time
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(member: &str, hash: u32, compact: i64) -> MemberHash {
        MemberHash {
            member: member.into(),
            hash,
            compact_revision: compact,
        }
    }

    #[test]
    fn equal_hashes_agree_and_one_differing_member_is_a_mismatch() {
        let same = [h("m1", 7, 3), h("m2", 7, 3), h("m3", 7, 3)];
        assert_eq!(
            compare(40, &same),
            ConsistencyVerdict::Consistent {
                revision: 40,
                hash: 7,
                members: 3
            }
        );
        let diverged = [h("m1", 7, 3), h("m2", 7, 3), h("m3", 8, 3)];
        assert_eq!(
            compare(40, &diverged),
            ConsistencyVerdict::Mismatch {
                revision: 40,
                hashes: diverged.to_vec()
            }
        );
        // Hashes over different compaction points say nothing either way.
        assert_eq!(
            compare(40, &[h("m1", 7, 3), h("m2", 9, 5)]),
            ConsistencyVerdict::NotComparable
        );
    }

    #[test]
    fn the_common_revision_is_the_lowest_current_one() {
        assert_eq!(common_revision(&[52, 50, 51]), Some(50));
        assert_eq!(common_revision(&[]), None);
    }

    #[test]
    fn the_record_names_who_holds_which_hash() {
        let r = InconsistencyRecord {
            found_by: "m2".into(),
            version: "3.5.16".into(),
            revision: 40,
            hashes: vec![h("m1", 7, 3), h("m2", 7, 3), h("m3", 8, 3)],
            time: "2026-01-01T00:00:00Z".into(),
        };
        let s = r.summary();
        assert!(s.contains("m1,m2 hash 7; m3 hash 8"), "{s}");
        assert!(s.contains("revision 40") && s.contains("3.5.16"), "{s}");
    }
}
