//! Soak (`--soak`, `--canary-soak`): after a member verifies on the new version it keeps the
//! turn a while longer and is watched; a failure then rolls it back and rejects the version,
//! as a failed verify does.
//!
//! What is watched, sampled about twice a second ([`SoakWatch`], pure, over plain samples):
//! - the etcd child keeps running (the driver checks its pid; an exit fails at once);
//! - `/health` of this member: unhealthy (or not answering) for longer than
//!   [`HEALTH_GRACE`] fails; shorter dips (a leader election) are ridden out;
//! - alarms raised on this member (NOSPACE, CORRUPT) fail at once;
//! - the applied index never goes back, and keeps up: the member must reach, within
//!   [`LAG_GRACE`], the index the leader had applied when it was sampled. A member that
//!   applies nothing while the cluster moves on fails; one that merely trails by the usual
//!   few entries does not.
//!
//! "First member of a rollout" for `--canary-soak`: no other member reports the target
//! version yet when this one has verified ([`first_on_target`]).

use std::collections::VecDeque;
use std::time::Duration;

use crate::cluster::view::ClusterView;
use crate::versions::Version;

use super::window::Window;

/// How long this member may be unhealthy (or silent) in a row during a soak.
pub const HEALTH_GRACE: Duration = Duration::from_secs(3);

/// How far behind the leader's applied index, in time, this member may fall.
pub const LAG_GRACE: Duration = Duration::from_secs(5);

/// When turns may start and how long a verified member is kept under watch (`--window`,
/// `--soak`, `--canary-soak`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pacing {
    /// Maintenance windows; empty: any time.
    pub windows: Vec<Window>,
    /// Soak after every member's verify.
    pub soak: Duration,
    /// Soak after the first member's verify (the canary); the longer of the two applies.
    pub canary_soak: Duration,
}

impl Pacing {
    /// How long to soak a member that just verified; `first` says whether it is the first
    /// member on the target.
    pub fn soak_for(&self, first: bool) -> Duration {
        if first {
            self.soak.max(self.canary_soak)
        } else {
            self.soak
        }
    }
}

/// True when no member but `member` reports `target`: this member is the rollout's first.
pub fn first_on_target(view: &ClusterView, member: &str, target: &Version) -> bool {
    !view
        .members
        .iter()
        .any(|m| m.name != member && m.server_version.as_ref() == Some(target))
}

/// What the cluster view says about `member` for the soak.
pub fn sample_of(view: &ClusterView, member: &str) -> Sample {
    let me = view.members.iter().find(|m| m.name == member);
    let leader = view.members.iter().find(|m| m.leader);
    Sample {
        healthy: me.is_some_and(|m| m.healthy),
        applied: me.and_then(|m| m.raft_applied_index),
        leader_applied: leader.and_then(|m| m.raft_applied_index),
        alarms: view
            .alarms
            .iter()
            .filter(|a| a.member == member)
            .map(|a| a.alarm.clone())
            .collect(),
    }
}

/// One look at the soaking member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// `/health` answered true.
    pub healthy: bool,
    /// Its applied index, when it answered.
    pub applied: Option<u64>,
    /// The leader's applied index, when known.
    pub leader_applied: Option<u64>,
    /// Alarms raised on this member (NOSPACE, CORRUPT).
    pub alarms: Vec<String>,
}

/// The soak's verdict so far, fed one sample at a time.
#[derive(Debug, Default)]
pub struct SoakWatch {
    unhealthy_since: Option<Duration>,
    last_applied: Option<u64>,
    /// Leader applied indexes still within [`LAG_GRACE`], oldest first, plus the newest
    /// one past it (the one the member must have reached).
    leader_marks: VecDeque<(Duration, u64)>,
}

impl SoakWatch {
    /// A fresh watch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the sample made `at` (time since the soak began); `Err` says why the soak failed.
    pub fn observe(&mut self, at: Duration, sample: &Sample) -> Result<(), String> {
        if let Some(alarm) = sample.alarms.first() {
            return Err(format!(
                "alarm {alarm} raised on this member during the soak"
            ));
        }
        if sample.healthy && sample.applied.is_some() {
            self.unhealthy_since = None;
        } else {
            let since = *self.unhealthy_since.get_or_insert(at);
            if at.saturating_sub(since) >= HEALTH_GRACE {
                return Err(format!(
                    "unhealthy or not answering for {} during the soak",
                    humantime::format_duration(at.saturating_sub(since))
                ));
            }
        }
        if let Some(applied) = sample.applied {
            if let Some(last) = self.last_applied.filter(|last| applied < *last) {
                return Err(format!(
                    "applied index went back from {last} to {applied} during the soak"
                ));
            }
            self.last_applied = Some(applied);
        }
        if let Some(leader) = sample.leader_applied {
            self.leader_marks.push_back((at, leader));
        }
        // Keep only the newest mark older than the grace, and the ones within it.
        while self.leader_marks.len() > 1 && at.saturating_sub(self.leader_marks[1].0) >= LAG_GRACE
        {
            self.leader_marks.pop_front();
        }
        if let (Some(&(when, wanted)), Some(applied)) =
            (self.leader_marks.front(), self.last_applied)
        {
            if at.saturating_sub(when) >= LAG_GRACE && applied < wanted {
                return Err(format!(
                    "fell behind the leader during the soak: applied index {applied} has not \
                     reached in {} the index {wanted} the leader had applied",
                    humantime::format_duration(LAG_GRACE)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_millis(n * 500)
    }

    fn ok(applied: u64, leader: u64) -> Sample {
        Sample {
            healthy: true,
            applied: Some(applied),
            leader_applied: Some(leader),
            alarms: Vec::new(),
        }
    }

    #[test]
    fn a_member_that_keeps_up_passes() {
        let mut w = SoakWatch::new();
        for i in 0..40 {
            // Trails the leader by a couple of entries, always catching up.
            w.observe(s(i), &ok(100 + i * 10, 102 + i * 10)).unwrap();
        }
    }

    #[test]
    fn a_short_dip_is_ridden_out_and_a_long_one_fails() {
        let mut w = SoakWatch::new();
        let down = Sample {
            healthy: false,
            ..ok(10, 10)
        };
        w.observe(s(0), &ok(10, 10)).unwrap();
        w.observe(s(1), &down).unwrap();
        w.observe(s(4), &down).unwrap();
        w.observe(s(5), &ok(10, 10)).unwrap();
        w.observe(s(6), &down).unwrap();
        w.observe(s(11), &down).unwrap();
        let err = w.observe(s(12), &down).unwrap_err();
        assert!(err.contains("unhealthy or not answering for 3s"), "{err}");
        // Not answering at all counts as unhealthy.
        let mut w = SoakWatch::new();
        let silent = Sample::default();
        w.observe(s(0), &silent).unwrap();
        assert!(w.observe(s(6), &silent).is_err());
    }

    #[test]
    fn an_alarm_on_the_member_fails_at_once() {
        let mut w = SoakWatch::new();
        let alarmed = Sample {
            alarms: vec!["NOSPACE".into()],
            ..ok(10, 10)
        };
        let err = w.observe(s(0), &alarmed).unwrap_err();
        assert!(err.contains("alarm NOSPACE"), "{err}");
    }

    #[test]
    fn the_applied_index_may_not_go_back() {
        let mut w = SoakWatch::new();
        w.observe(s(0), &ok(50, 50)).unwrap();
        let err = w.observe(s(1), &ok(40, 52)).unwrap_err();
        assert!(err.contains("went back from 50 to 40"), "{err}");
    }

    #[test]
    fn a_member_that_stops_applying_while_the_leader_moves_fails_after_the_grace() {
        let mut w = SoakWatch::new();
        for i in 0..11 {
            // Stuck at 100 while the leader moves on: within the grace, still fine (the
            // leader's 100 at 0 s was reached).
            w.observe(s(i), &ok(100, 100 + i * 5)).unwrap();
        }
        // 5.5 s in: the leader's 105 from 0.5 s ago is still not reached.
        let err = w.observe(s(11), &ok(100, 155)).unwrap_err();
        assert!(err.contains("fell behind the leader"), "{err}");
        assert!(err.contains("index 105"), "{err}");
    }

    #[test]
    fn an_idle_cluster_never_counts_as_lag() {
        let mut w = SoakWatch::new();
        for i in 0..40 {
            w.observe(s(i), &ok(77, 77)).unwrap();
        }
        // The leader not answering for a while is not this member's fault.
        let mut w = SoakWatch::new();
        for i in 0..40 {
            let sample = Sample {
                leader_applied: None,
                ..ok(77, 0)
            };
            w.observe(s(i), &sample).unwrap();
        }
    }

    /// A view of members `(name, version, applied)`, m1 the leader; `alarms` by member id.
    fn view(members: &[(&str, &str, u64)], alarms: &[(u64, &str)]) -> ClusterView {
        use crate::cluster::view::{build_view, Gathered, Probe};
        use crate::etcd::maintenance::{Alarm, AlarmKind, EtcdVersion, Status};
        use crate::etcd::{Member, ResponseHeader};
        let list: Vec<Member> = members
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| Member {
                id: i as u64 + 1,
                name: (*name).into(),
                client_urls: vec![format!("http://127.0.0.1:{}", i + 1)],
                ..Default::default()
            })
            .collect();
        let probes = members
            .iter()
            .enumerate()
            .map(|(i, (_, version, applied))| Probe {
                status: Ok(Status {
                    header: ResponseHeader {
                        member_id: i as u64 + 1,
                        ..Default::default()
                    },
                    leader: 1,
                    raft_applied_index: *applied,
                    ..Default::default()
                }),
                health: Ok(true),
                version: Ok(EtcdVersion {
                    server: (*version).into(),
                    cluster: "3.4.0".into(),
                    storage: String::new(),
                }),
            })
            .collect();
        let gathered = Gathered {
            alarms: alarms
                .iter()
                .map(|(id, kind)| Alarm {
                    member_id: *id,
                    alarm: match *kind {
                        "NOSPACE" => AlarmKind::NoSpace,
                        _ => AlarmKind::Corrupt,
                    },
                })
                .collect(),
            ..Gathered::default()
        };
        build_view(&list, probes, gathered)
    }

    #[test]
    fn the_first_member_is_the_one_no_other_member_shares_the_target_with() {
        let target: Version = "3.5.16".parse().unwrap();
        let first = view(
            &[
                ("m1", "3.4.23", 9),
                ("m2", "3.5.16", 9),
                ("m3", "3.4.23", 9),
            ],
            &[],
        );
        assert!(first_on_target(&first, "m2", &target));
        let second = view(
            &[
                ("m1", "3.5.16", 9),
                ("m2", "3.5.16", 9),
                ("m3", "3.4.23", 9),
            ],
            &[],
        );
        assert!(!first_on_target(&second, "m2", &target));
    }

    #[test]
    fn the_sample_is_this_members_health_progress_and_own_alarms() {
        let v = view(
            &[("m1", "3.4.23", 120), ("m2", "3.5.16", 117)],
            &[(2, "NOSPACE"), (1, "CORRUPT")],
        );
        let sample = sample_of(&v, "m2");
        assert_eq!(
            sample,
            Sample {
                healthy: true,
                applied: Some(117),
                leader_applied: Some(120),
                alarms: vec!["NOSPACE".into()],
            }
        );
        assert_eq!(
            sample_of(&v, "m9"),
            Sample {
                leader_applied: Some(120),
                ..Sample::default()
            }
        );
    }

    #[test]
    fn canary_soak_applies_to_the_first_member_only_and_the_longer_wins() {
        let p = Pacing {
            soak: Duration::from_secs(5),
            canary_soak: Duration::from_secs(60),
            ..Pacing::default()
        };
        assert_eq!(p.soak_for(true), Duration::from_secs(60));
        assert_eq!(p.soak_for(false), Duration::from_secs(5));
        let p = Pacing {
            soak: Duration::from_secs(30),
            canary_soak: Duration::from_secs(10),
            ..Pacing::default()
        };
        assert_eq!(p.soak_for(true), Duration::from_secs(30));
        assert_eq!(Pacing::default().soak_for(true), Duration::ZERO);
    }
}
