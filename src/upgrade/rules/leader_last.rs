//! Leader last: the order of turns that costs one leader change per rollout, not one per
//! leader that happens to stop.
//!
//! The lock queue alone orders turns by who queued first, so the leader may stop while
//! followers still wait for the same target: that costs an election (or etcd's own
//! hand-off on SIGTERM) and, once a follower on the old version takes over, another one.
//! Instead the leader leaves the turn to every non-leader member that waits for the same
//! target ([`assess`]), and when it goes it hands leadership to a member already on the
//! target ([`transferee`]), so its stop needs no election.
//!
//! A follower holds the leader back only while it can still move: one not staged for this
//! target, refused here, failed or rolling back does not count, nor one that stalls; and
//! while any member is down outside its own swap no turn can pass preflight, so the
//! leader queues at once and its preflight says what it waits for. "Not staged" is believed only
//! [`SETTLE`] after the leader's own staging: a rollout stages on every host, but not at
//! the same instant, and a leader that vets in 60 ms would otherwise go before followers
//! staged a second later. Stalling is measured by [`Stall`]:
//! time in which no waited-for follower held the turn and none of them finished or
//! dropped out. After the bound the leader stops waiting for the followers it waited for
//! (and says so); leadership moving elsewhere ends the wait at once.
//!
//! Everything here is plain data in, decision out; the driver gathers the
//! [`ClusterView`], waits and logs ([`crate::upgrade::turn::driver`]'s `leader_last`).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::cluster::records::MemberRecord;
use crate::cluster::view::ClusterView;
use crate::versions::Version;

/// Record states of a member on its way to its staged target before its swap (queued, or
/// holding the turn).
const UNDER_WAY: &[&str] = &["queued", "preflight", "backup"];

/// Record states of a member in its swap: its etcd is expected to be down.
const IN_SWAP: &[&str] = &["stopping", "swapping", "starting", "verifying", "restoring"];

/// How long after its own staging the leader still expects members not staged yet to be
/// staged for the same target (never longer than the bound).
pub const SETTLE: Duration = Duration::from_secs(5);

/// What one other member's supervisor and etcd say, as far as leader-last cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Member name.
    pub name: String,
    /// `/health` answered true.
    pub healthy: bool,
    /// The version its etcd reports (`None` when it did not answer).
    pub version: Option<Version>,
    /// Its supervisor's progress record (`None`: absent or unreadable).
    pub record: Option<PeerRecord>,
    /// It holds the upgrade turn or waits in the lock queue.
    pub queued: bool,
}

/// The parts of a `members/<name>` record that tell where a member is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerRecord {
    /// Its state name (`idle`, `queued`, ... `verifying`).
    pub state: String,
    /// The version it runs according to its supervisor.
    pub running: Option<Version>,
    /// Its staged target.
    pub staged: Option<Version>,
    /// A staged version it is vetting before it queues.
    pub candidate: Option<Version>,
    /// Why its last attempt did not go through.
    pub last_error: Option<String>,
}

impl From<&MemberRecord> for PeerRecord {
    fn from(r: &MemberRecord) -> Self {
        Self {
            state: r.state.clone(),
            running: r.running.clone(),
            staged: r.staged.clone(),
            candidate: r.candidate.clone(),
            last_error: r.last_error.clone(),
        }
    }
}

/// Everything the decision looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderLastFacts {
    /// This member's name.
    pub me: String,
    /// The leader's name, if there is one.
    pub leader: Option<String>,
    /// The version this member is about to take.
    pub target: Version,
    /// How long this member has had `target` staged (see [`SETTLE`]).
    pub staged_for: Duration,
    /// `rejected/<target>` exists: nobody will take it.
    pub target_rejected: bool,
    /// Who holds the upgrade turn.
    pub holder: Option<String>,
    /// Every other member of the cluster.
    pub peers: Vec<Peer>,
}

impl LeaderLastFacts {
    /// The facts in a gathered view, for `me` heading to `target`.
    pub fn from_view(view: &ClusterView, me: &str, target: &Version) -> Self {
        let in_queue = |name: &str| {
            view.turn.holder.as_deref() == Some(name) || view.turn.waiting.iter().any(|w| w == name)
        };
        let peers = view
            .members
            .iter()
            .filter(|m| m.name != me)
            .map(|m| Peer {
                name: m.name.clone(),
                healthy: m.healthy,
                version: m.server_version.clone(),
                record: view
                    .progress
                    .get(&m.name)
                    .and_then(|s| s.record())
                    .map(PeerRecord::from),
                queued: in_queue(&m.name),
            })
            .collect();
        Self {
            me: me.to_owned(),
            leader: view.leader.clone(),
            target: target.clone(),
            staged_for: Duration::ZERO,
            target_rejected: view.rejected.contains_key(target),
            holder: view.turn.holder.clone(),
            peers,
        }
    }
}

/// Why a member does not hold the leader back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It already runs the target.
    OnTarget,
    /// No staged target (or no readable record).
    NotStaged,
    /// It is staged for another version.
    OtherTarget(Version),
    /// Its supervisor refused the target for it (its flags, its disk).
    Refused(String),
    /// Its last swap failed or is being rolled back.
    Failed(String),
    /// It was waited for until the bound, without progress.
    GaveUp,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::OnTarget => f.write_str("already on the target"),
            Skip::NotStaged => f.write_str("not staged for it"),
            Skip::OtherTarget(v) => write!(f, "staged for {v} instead"),
            Skip::Refused(why) => write!(f, "refused it: {why}"),
            Skip::Failed(state) => write!(f, "its swap failed ({state})"),
            Skip::GaveUp => f.write_str("made no progress within the bound"),
        }
    }
}

/// Why this member may take the turn now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Go {
    /// It does not lead: order does not matter for it.
    NotLeader,
    /// No leader is known (preflight will wait for one).
    NoLeader,
    /// The target is rejected for the cluster (preflight will refuse it).
    Rejected,
    /// This member is down outside a swap: no turn can pass preflight until it is back,
    /// and this member's own preflight says so.
    MemberDown(String),
    /// It leads, and no other member waits for the same target.
    NoneWaiting,
    /// It leads, and gave up on these members after the bound.
    GaveUp(Vec<String>),
}

/// Take the turn, or leave it to the followers first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOrder {
    /// Take the turn.
    Go(Go),
    /// Leave it to these members first (names in member-list order).
    Wait(Vec<String>),
}

/// The decision, with the members that were not waited for and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// What to do.
    pub decision: TurnOrder,
    /// Members that do not hold the leader back, and why (when it leads).
    pub skipped: Vec<(String, Skip)>,
    /// The turn is held by a member that is waited for (the wait is making progress).
    pub holder_waited: bool,
}

/// Whether `facts.me` may take the turn now. `given_up` are members already waited for
/// until the bound for this target; `stalled` is how long the wait has gone without
/// progress (from [`Stall`]), and at `bound` the leader stops waiting.
pub fn assess(
    facts: &LeaderLastFacts,
    given_up: &BTreeSet<String>,
    stalled: Duration,
    bound: Duration,
) -> Assessment {
    let go = |why| Assessment {
        decision: TurnOrder::Go(why),
        skipped: Vec::new(),
        holder_waited: false,
    };
    match &facts.leader {
        None => return go(Go::NoLeader),
        Some(leader) if *leader != facts.me => return go(Go::NotLeader),
        Some(_) => {}
    }
    if facts.target_rejected {
        return go(Go::Rejected);
    }
    let holder = facts.holder.as_deref();
    if let Some(down) = facts
        .peers
        .iter()
        .find(|p| !p.healthy && !in_swap(p, holder))
    {
        return go(Go::MemberDown(down.name.clone()));
    }
    let mut waiting = Vec::new();
    let mut skipped = Vec::new();
    let settling = facts.staged_for < SETTLE.min(bound);
    for peer in &facts.peers {
        let verdict = match hold_back(peer, &facts.target, facts.holder.as_deref()) {
            Err(Skip::NotStaged) if settling => Ok(()),
            other => other,
        };
        match verdict {
            Ok(()) if given_up.contains(&peer.name) => {
                skipped.push((peer.name.clone(), Skip::GaveUp));
            }
            Ok(()) => waiting.push(peer.name.clone()),
            Err(skip) => skipped.push((peer.name.clone(), skip)),
        }
    }
    let holder_waited = facts.holder.as_ref().is_some_and(|h| waiting.contains(h));
    let decision = if waiting.is_empty() {
        TurnOrder::Go(Go::NoneWaiting)
    } else if stalled >= bound && !holder_waited {
        TurnOrder::Go(Go::GaveUp(waiting))
    } else {
        TurnOrder::Wait(waiting)
    };
    Assessment {
        decision,
        skipped,
        holder_waited,
    }
}

/// `Ok` when `peer` waits for `target` and can still get there; otherwise why not.
fn hold_back(peer: &Peer, target: &Version, holder: Option<&str>) -> Result<(), Skip> {
    let record = peer.record.as_ref();
    let running = peer
        .version
        .as_ref()
        .or_else(|| record.and_then(|r| r.running.as_ref()));
    if running == Some(target) {
        return Err(Skip::OnTarget);
    }
    let Some(record) = record else {
        return Err(Skip::NotStaged);
    };
    let state = record.state.as_str();
    let holds_turn = holder == Some(peer.name.as_str());
    // Vetting happens before the queue, from `idle` or after a `failed` swap.
    let vetting = matches!(state, "idle" | "failed") && record.candidate.as_ref() == Some(target);
    if !vetting && (state == "rolling-back" || state == "failed") {
        return Err(Skip::Failed(state.to_owned()));
    }
    let staged_here = record.staged.as_ref() == Some(target);
    // A state this release does not know (a newer supervisor) counts while it is queued.
    let under_way = staged_here
        && (UNDER_WAY.contains(&state) || IN_SWAP.contains(&state) || peer.queued || holds_turn);
    if !(vetting || under_way) {
        return Err(match (&record.staged, state) {
            (Some(v), "idle") if v == target => Skip::Refused(
                record
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no reason recorded".into()),
            ),
            (Some(v), _) if v != target => Skip::OtherTarget(v.clone()),
            _ => match &record.candidate {
                Some(v) if v != target => Skip::OtherTarget(v.clone()),
                _ => Skip::NotStaged,
            },
        });
    }
    Ok(())
}

/// `peer` holds the turn or its record says it is in its swap (its etcd may be down).
fn in_swap(peer: &Peer, holder: Option<&str>) -> bool {
    holder == Some(peer.name.as_str())
        || peer
            .record
            .as_ref()
            .is_some_and(|r| IN_SWAP.contains(&r.state.as_str()))
}

/// How long the leader's wait has gone without progress: time in which no waited-for
/// member held the turn and the set waited for did not shrink. Times are offsets from
/// any fixed start (the driver passes `Instant` differences).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stall {
    waiting: BTreeSet<String>,
    stalled: Duration,
    last: Option<Duration>,
}

impl Stall {
    /// Takes one look at `now`: the members waited for and whether one of them holds the
    /// turn. Returns the time without progress so far.
    pub fn observe(&mut self, now: Duration, waiting: &[String], holder_waited: bool) -> Duration {
        let seen: BTreeSet<String> = waiting.iter().cloned().collect();
        let shrank = seen.len() < self.waiting.len() && seen.is_subset(&self.waiting);
        if shrank {
            self.stalled = Duration::ZERO;
        } else if let Some(last) = self.last {
            if !holder_waited {
                self.stalled += now.saturating_sub(last);
            }
        }
        self.waiting = seen;
        self.last = Some(now);
        self.stalled
    }
}

/// A member to hand leadership to before the leader stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferee {
    /// Its name.
    pub name: String,
    /// Its member id.
    pub id: u64,
}

/// When `me` leads: the member to hand leadership to before its stop, one already on
/// `target`, healthy and voting, the most caught-up first (least lag, then the highest
/// applied index, then by name). `None` when `me` does not lead or nobody is on the target:
/// etcd then hands leadership over by itself on SIGTERM.
pub fn transferee(view: &ClusterView, me: &str, target: &Version) -> Option<Transferee> {
    if view.leader.as_deref() != Some(me) {
        return None;
    }
    view.members
        .iter()
        .filter(|m| {
            m.name != me
                && m.healthy
                && !m.learner
                && m.error.is_none()
                && m.server_version.as_ref() == Some(target)
        })
        .filter_map(|m| Some((m, u64::from_str_radix(&m.id, 16).ok()?)))
        .min_by(|(a, _), (b, _)| {
            let lag = |m: &crate::cluster::view::MemberView| m.lag.unwrap_or(u64::MAX);
            lag(a)
                .cmp(&lag(b))
                .then(b.raft_applied_index.cmp(&a.raft_applied_index))
                .then(a.name.cmp(&b.name))
        })
        .map(|(m, id)| Transferee {
            name: m.name.clone(),
            id,
        })
}

#[cfg(test)]
mod tests;
