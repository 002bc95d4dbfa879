use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::cluster::records::{MemberRecord, Stored};
use crate::cluster::view::{MemberView, TurnView};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

const OLD: &str = "3.5.16";
const NEW: &str = "3.5.30";
const BOUND: Duration = Duration::from_secs(60);

fn record(state: &str, staged: Option<&str>) -> PeerRecord {
    PeerRecord {
        state: state.into(),
        running: Some(v(OLD)),
        staged: staged.map(v),
        candidate: None,
        last_error: None,
    }
}

fn peer(name: &str, record: Option<PeerRecord>) -> Peer {
    Peer {
        name: name.into(),
        healthy: true,
        version: Some(v(OLD)),
        record,
        queued: false,
    }
}

fn facts(leader: &str, peers: Vec<Peer>) -> LeaderLastFacts {
    LeaderLastFacts {
        me: "m1".into(),
        leader: Some(leader.into()),
        target: v(NEW),
        staged_for: Duration::from_secs(3600),
        target_rejected: false,
        holder: None,
        peers,
    }
}

fn decide(f: &LeaderLastFacts) -> Assessment {
    assess(f, &BTreeSet::new(), Duration::ZERO, BOUND)
}

fn queued_follower(name: &str) -> Peer {
    peer(name, Some(record("queued", Some(NEW))))
}

#[test]
fn a_follower_takes_its_turn_in_queue_order() {
    let f = facts("m2", vec![queued_follower("m2"), queued_follower("m3")]);
    assert_eq!(decide(&f).decision, TurnOrder::Go(Go::NotLeader));
    let mut f = f;
    f.leader = None;
    assert_eq!(decide(&f).decision, TurnOrder::Go(Go::NoLeader));
}

#[test]
fn the_leader_leaves_the_turn_to_followers_waiting_for_the_same_target() {
    let f = facts("m1", vec![queued_follower("m2"), queued_follower("m3")]);
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Wait(vec!["m2".into(), "m3".into()]));
    assert!(a.skipped.is_empty());
    assert!(!a.holder_waited);
}

#[test]
fn every_state_of_a_turn_under_way_holds_the_leader_back() {
    for state in [
        "queued",
        "preflight",
        "backup",
        "stopping",
        "swapping",
        "starting",
        "verifying",
        "restoring",
    ] {
        let f = facts("m1", vec![peer("m2", Some(record(state, Some(NEW))))]);
        assert_eq!(
            decide(&f).decision,
            TurnOrder::Wait(vec!["m2".into()]),
            "{state}"
        );
    }
}

#[test]
fn a_follower_still_vetting_the_same_target_is_waited_for() {
    let mut vetting = record("idle", None);
    vetting.candidate = Some(v(NEW));
    let f = facts("m1", vec![peer("m2", Some(vetting.clone()))]);
    assert_eq!(decide(&f).decision, TurnOrder::Wait(vec!["m2".into()]));
    // After a failed swap, a new candidate is vetted too.
    vetting.state = "failed".into();
    let f = facts("m1", vec![peer("m2", Some(vetting))]);
    assert_eq!(decide(&f).decision, TurnOrder::Wait(vec!["m2".into()]));

    let mut other = record("idle", None);
    other.candidate = Some(v("3.5.29"));
    let f = facts("m1", vec![peer("m2", Some(other))]);
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(a.skipped, [("m2".into(), Skip::OtherTarget(v("3.5.29")))]);
}

#[test]
fn followers_that_cannot_move_do_not_hold_the_leader_back_and_say_why() {
    let mut on_target = peer("m2", Some(record("idle", None)));
    on_target.version = Some(v(NEW));
    let mut refused = record("idle", Some(NEW));
    refused.last_error = Some("flag --foo is gone".into());
    let f = facts(
        "m1",
        vec![
            on_target,
            peer("m3", None),
            peer("m4", Some(record("queued", Some("3.5.29")))),
            peer("m5", Some(refused)),
            peer("m6", Some(record("rolling-back", Some(NEW)))),
            peer("m8", Some(record("failed", Some(NEW)))),
            peer("m9", Some(record("idle", None))),
        ],
    );
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(
        a.skipped,
        [
            ("m2".into(), Skip::OnTarget),
            ("m3".into(), Skip::NotStaged),
            ("m4".into(), Skip::OtherTarget(v("3.5.29"))),
            ("m5".into(), Skip::Refused("flag --foo is gone".into())),
            ("m6".into(), Skip::Failed("rolling-back".into())),
            ("m8".into(), Skip::Failed("failed".into())),
            ("m9".into(), Skip::NotStaged),
        ]
    );
    assert_eq!(
        Skip::OtherTarget(v("3.5.29")).to_string(),
        "staged for 3.5.29 instead"
    );
}

#[test]
fn a_follower_down_in_its_own_swap_is_still_waited_for() {
    let mut swapping = peer("m2", Some(record("starting", Some(NEW))));
    swapping.healthy = false;
    swapping.version = None;
    let f = facts("m1", vec![swapping]);
    assert_eq!(decide(&f).decision, TurnOrder::Wait(vec!["m2".into()]));
}

#[test]
fn the_supervisors_record_says_on_target_when_etcd_does_not_answer() {
    let mut r = record("verifying", Some(NEW));
    r.running = Some(v(NEW));
    let mut p = peer("m2", Some(r));
    p.version = None;
    p.healthy = false;
    let a = decide(&facts("m1", vec![p]));
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(a.skipped, [("m2".into(), Skip::OnTarget)]);
}

#[test]
fn an_unknown_state_counts_only_while_the_member_is_in_the_lock_queue() {
    let mut newer = peer("m2", Some(record("draining", Some(NEW))));
    assert_eq!(
        decide(&facts("m1", vec![newer.clone()])).decision,
        TurnOrder::Go(Go::NoneWaiting)
    );
    newer.queued = true;
    assert_eq!(
        decide(&facts("m1", vec![newer])).decision,
        TurnOrder::Wait(vec!["m2".into()])
    );
}

#[test]
fn a_rejected_target_is_nothing_to_wait_for() {
    let mut f = facts("m1", vec![queued_follower("m2")]);
    f.target_rejected = true;
    assert_eq!(decide(&f).decision, TurnOrder::Go(Go::Rejected));
}

#[test]
fn the_bound_ends_the_wait_unless_a_waited_for_member_holds_the_turn() {
    let f = facts("m1", vec![queued_follower("m2"), queued_follower("m3")]);
    let a = assess(
        &f,
        &BTreeSet::new(),
        BOUND - Duration::from_millis(1),
        BOUND,
    );
    assert!(matches!(a.decision, TurnOrder::Wait(_)));
    let a = assess(&f, &BTreeSet::new(), BOUND, BOUND);
    assert_eq!(
        a.decision,
        TurnOrder::Go(Go::GaveUp(vec!["m2".into(), "m3".into()]))
    );

    let mut held = f.clone();
    held.holder = Some("m3".into());
    let a = assess(&held, &BTreeSet::new(), BOUND * 2, BOUND);
    assert!(a.holder_waited);
    assert_eq!(a.decision, TurnOrder::Wait(vec!["m2".into(), "m3".into()]));

    // Once given up on, a member no longer counts for this target.
    let given_up: BTreeSet<String> = ["m2".to_owned()].into();
    let a = assess(&f, &given_up, Duration::ZERO, BOUND);
    assert_eq!(a.decision, TurnOrder::Wait(vec!["m3".into()]));
    assert_eq!(a.skipped, [("m2".into(), Skip::GaveUp)]);
}

#[test]
fn stalling_accumulates_pauses_while_a_waited_member_holds_the_turn_and_resets_on_progress() {
    let s = |secs| Duration::from_secs(secs);
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut stall = Stall::default();
    assert_eq!(stall.observe(s(100), &names(&["m2", "m3"]), false), s(0));
    assert_eq!(stall.observe(s(105), &names(&["m2", "m3"]), false), s(5));
    // m2 holds the turn: no time counts.
    assert_eq!(stall.observe(s(130), &names(&["m2", "m3"]), true), s(5));
    assert_eq!(stall.observe(s(131), &names(&["m2", "m3"]), false), s(6));
    // m2 is done: progress.
    assert_eq!(stall.observe(s(140), &names(&["m3"]), false), s(0));
    // A member newly staged is no progress.
    assert_eq!(stall.observe(s(143), &names(&["m3", "m4"]), false), s(3));
}

fn member_view(name: &str, id: u64, version: &str, lag: u64) -> MemberView {
    MemberView {
        name: name.into(),
        id: format!("{id:x}"),
        client_url: None,
        server_version: Some(v(version)),
        healthy: true,
        leader: false,
        learner: false,
        storage_version: None,
        raft_applied_index: Some(1000 - lag),
        lag: Some(lag),
        error: None,
    }
}

fn view(leader: &str, members: Vec<MemberView>) -> ClusterView {
    ClusterView {
        healthy: true,
        cluster_id: None,
        cluster_version: Some(v("3.5.0")),
        leader: Some(leader.into()),
        members,
        alarms: Vec::new(),
        turn: TurnView::default(),
        progress: BTreeMap::new(),
        rejected: BTreeMap::new(),
        auth_enabled: None,
        rejections_read: true,
        error: None,
        pause: None,
    }
}

#[test]
fn leadership_goes_to_the_most_caught_up_voter_on_the_target() {
    let mut learner = member_view("m4", 0x44, NEW, 0);
    learner.learner = true;
    let mut sick = member_view("m5", 0x55, NEW, 0);
    sick.healthy = false;
    let members = vec![
        member_view("m1", 0x11, OLD, 0),
        member_view("m2", 0xab12_0000_0000_0001, NEW, 7),
        member_view("m3", 0x33, NEW, 2),
        learner,
        sick,
        member_view("m6", 0x66, OLD, 0),
    ];
    let t = transferee(&view("m1", members.clone()), "m1", &v(NEW));
    assert_eq!(
        t,
        Some(Transferee {
            name: "m3".into(),
            id: 0x33
        })
    );
    // Only m2 left on the target: its id is parsed from hex in full.
    let fewer: Vec<_> = members.iter().filter(|m| m.name != "m3").cloned().collect();
    assert_eq!(
        transferee(&view("m1", fewer), "m1", &v(NEW)).map(|t| t.id),
        Some(0xab12_0000_0000_0001)
    );
    // Equally caught up: by name, so every run picks the same.
    let tied = vec![
        member_view("m1", 0x11, OLD, 0),
        member_view("m3", 0x33, NEW, 0),
        member_view("m2", 0x22, NEW, 0),
    ];
    assert_eq!(
        transferee(&view("m1", tied), "m1", &v(NEW)).map(|t| t.name),
        Some("m2".into())
    );
}

#[test]
fn no_transfer_when_not_leading_or_nobody_is_on_the_target() {
    let members = vec![
        member_view("m1", 0x11, OLD, 0),
        member_view("m2", 0x22, NEW, 0),
        member_view("m3", 0x33, OLD, 0),
    ];
    assert_eq!(
        transferee(&view("m2", members.clone()), "m1", &v(NEW)),
        None
    );
    assert_eq!(transferee(&view("m1", members), "m1", &v("3.5.31")), None);
}

#[test]
fn facts_come_from_the_view_records_and_queue() {
    let mut vw = view(
        "m1",
        vec![
            member_view("m1", 0x11, OLD, 0),
            member_view("m2", 0x22, OLD, 0),
            member_view("m3", 0x33, OLD, 0),
        ],
    );
    vw.turn = TurnView {
        holder: Some("m3".into()),
        waiting: vec!["m2".into()],
    };
    let mut rec = MemberRecord::new(
        "m2",
        &v(OLD),
        Some(&v(NEW)),
        "queued",
        std::time::SystemTime::UNIX_EPOCH,
        None,
    );
    rec.candidate = None;
    vw.progress
        .insert("m2".into(), Stored::decode(rec.encode().as_bytes()));
    vw.progress
        .insert("m3".into(), Stored::<MemberRecord>::decode(b"junk"));
    vw.rejected
        .insert(v(NEW), Stored::decode(br#"{"member":"m9","reason":"r"}"#));
    let f = LeaderLastFacts::from_view(&vw, "m1", &v(NEW));
    assert_eq!(f.leader.as_deref(), Some("m1"));
    assert_eq!(f.holder.as_deref(), Some("m3"));
    assert!(f.target_rejected);
    assert_eq!(f.peers.len(), 2);
    assert_eq!(f.peers[0].name, "m2");
    assert!(f.peers[0].queued);
    assert_eq!(f.peers[0].record, Some(record("queued", Some(NEW))));
    assert!(f.peers[1].queued);
    assert_eq!(f.peers[1].record, None);
}

#[test]
fn members_not_staged_yet_are_expected_for_a_few_seconds_after_the_leaders_own_staging() {
    let mut f = facts(
        "m1",
        vec![peer("m2", None), peer("m3", Some(record("idle", None)))],
    );
    f.staged_for = SETTLE - Duration::from_millis(1);
    assert_eq!(
        decide(&f).decision,
        TurnOrder::Wait(vec!["m2".into(), "m3".into()])
    );
    // Never longer than the bound.
    let a = assess(&f, &BTreeSet::new(), Duration::ZERO, Duration::from_secs(1));
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    f.staged_for = SETTLE;
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(
        a.skipped,
        [
            ("m2".into(), Skip::NotStaged),
            ("m3".into(), Skip::NotStaged)
        ]
    );
    // Other reasons are believed at once.
    let mut f = facts("m1", vec![peer("m2", Some(record("failed", Some(NEW))))]);
    f.staged_for = Duration::ZERO;
    assert_eq!(decide(&f).decision, TurnOrder::Go(Go::NoneWaiting));
}

#[test]
fn a_member_down_outside_its_swap_ends_the_wait_for_preflight_to_judge() {
    let mut down = peer("m3", None);
    down.healthy = false;
    down.version = None;
    let f = facts("m1", vec![queued_follower("m2"), down.clone()]);
    assert_eq!(
        decide(&f).decision,
        TurnOrder::Go(Go::MemberDown("m3".into()))
    );
    // Down while holding the turn (stopped for its swap) is no reason to go.
    let mut held = f.clone();
    held.holder = Some("m3".into());
    assert_eq!(decide(&held).decision, TurnOrder::Wait(vec!["m2".into()]));
}

#[test]
fn an_idle_follower_staged_for_another_version_is_skipped_as_such_not_as_refused() {
    let mut other = record("idle", Some("3.5.29"));
    other.last_error = Some("flag --foo is gone".into());
    let a = decide(&facts("m1", vec![peer("m2", Some(other))]));
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(a.skipped, [("m2".into(), Skip::OtherTarget(v("3.5.29")))]);
}

#[test]
fn an_unknown_state_staged_for_the_target_outside_the_queue_counts_as_not_staged() {
    // Not "staged for 3.5.30 instead": that is the target. And like any member not staged
    // yet, it is expected while the leader's own staging settles.
    let mut f = facts("m1", vec![peer("m2", Some(record("draining", Some(NEW))))]);
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(a.skipped, [("m2".into(), Skip::NotStaged)]);
    f.staged_for = Duration::ZERO;
    assert_eq!(decide(&f).decision, TurnOrder::Wait(vec!["m2".into()]));
}

#[test]
fn an_unknown_state_with_the_target_as_candidate_counts_as_not_staged() {
    // Vetting counts only from idle or failed; a candidate equal to the target is still
    // not another version.
    let mut vetting = record("draining", None);
    vetting.candidate = Some(v(NEW));
    let mut f = facts("m1", vec![peer("m2", Some(vetting))]);
    let a = decide(&f);
    assert_eq!(a.decision, TurnOrder::Go(Go::NoneWaiting));
    assert_eq!(a.skipped, [("m2".into(), Skip::NotStaged)]);
    f.staged_for = Duration::ZERO;
    assert_eq!(decide(&f).decision, TurnOrder::Wait(vec!["m2".into()]));
}
