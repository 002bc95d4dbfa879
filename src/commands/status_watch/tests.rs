use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::cluster::records::MemberRecord;
use crate::cluster::view::{MemberView, TurnView};

fn member(name: &str, version: &str, leader: bool, applied: u64) -> MemberView {
    MemberView {
        name: name.into(),
        id: "1".into(),
        client_url: None,
        server_version: version.parse().ok(),
        healthy: true,
        leader,
        learner: false,
        storage_version: None,
        raft_applied_index: Some(applied),
        lag: Some(0),
        error: None,
    }
}

fn record(json: &str) -> Stored<MemberRecord> {
    Stored::decode(json.as_bytes())
}

fn view(applied: u64) -> ClusterView {
    let mut progress = BTreeMap::new();
    progress.insert(
        "m1".to_string(),
        record(r#"{"member":"m1","running":"3.5.16","staged":"3.5.30","state":"swapping","since":"2026-11-29T10:00:00Z"}"#),
    );
    progress.insert(
        "m2".to_string(),
        record(r#"{"member":"m2","running":"3.5.16","staged":"3.5.30","state":"queued","since":"2026-11-29T09:58:55Z","last_error":"m1 holds the turn"}"#),
    );
    ClusterView {
        healthy: true,
        cluster_id: Some("abc".into()),
        cluster_version: Some(Version::new(3, 5, 0)),
        leader: Some("m2".into()),
        members: vec![
            member("m1", "3.5.30", false, applied),
            member("m2", "3.5.16", true, applied),
        ],
        alarms: Vec::new(),
        turn: TurnView {
            holder: Some("m1".into()),
            waiting: vec!["m2".into()],
        },
        progress,
        rejected: BTreeMap::new(),
        auth_enabled: None,
        rejections_read: true,
        error: None,
        pause: None,
    }
}

fn at(t: &str) -> SystemTime {
    humantime::parse_rfc3339(t).unwrap()
}

#[test]
fn ages_are_short() {
    let now = at("2026-11-29T10:00:00Z");
    assert_eq!(age("2026-11-29T09:59:18Z", now).as_deref(), Some("42s"));
    assert_eq!(age("2026-11-29T09:56:55Z", now).as_deref(), Some("3m05s"));
    assert_eq!(age("2026-11-29T07:50:00Z", now).as_deref(), Some("2h10m"));
    // A clock behind the writer's: zero, not a panic.
    assert_eq!(age("2026-11-29T10:00:09Z", now).as_deref(), Some("0s"));
    assert_eq!(age("yesterday", now), None);
}

#[test]
fn a_frame_shows_members_versions_phases_ages_and_the_turn() {
    let now = at("2026-11-29T10:00:12Z");
    let frame = render_frame(&view(7), None, now, Duration::from_secs(1));
    let lines: Vec<&str> = frame.lines().collect();
    assert!(lines[0].contains("2026-11-29T10:00:12Z"), "{frame}");
    assert!(lines[0].contains("every 1s"), "{frame}");
    assert_eq!(lines[1], "cluster abc  version 3.5.0  leader m2  healthy");
    let header = lines[3].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        header,
        ["NAME", "VERSION", "HEALTHY", "ROLE", "PHASE", "FOR", "STAGED", "APPLIED", "LAG"]
    );
    let m1: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        m1,
        ["m1", "3.5.30", "yes", "swapping", "12s", "3.5.30", "7", "0"]
    );
    let m2: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(
        m2,
        ["m2", "3.5.16", "yes", "leader", "queued", "1m17s", "3.5.30", "7", "0"]
    );
    assert!(
        frame.contains("upgrade turn: held by m1; queue: m2\n"),
        "{frame}"
    );
    assert!(
        frame.contains("m2: last problem: m1 holds the turn\n"),
        "{frame}"
    );
}

#[test]
fn the_change_key_ignores_what_moves_on_its_own() {
    let (a, b) = (view(7), view(9000));
    assert_ne!(
        render_table(&a, Some(SystemTime::now())),
        render_table(&b, Some(SystemTime::now()))
    );
    assert_eq!(render_table(&a, None), render_table(&b, None));
    let mut c = view(7);
    c.turn = TurnView {
        holder: Some("m2".into()),
        waiting: Vec::new(),
    };
    assert_ne!(render_table(&a, None), render_table(&c, None));
    assert!(render_table(&c, None).contains("upgrade turn: held by m2\n"));
    assert!(!render_table(&c, None).contains("FOR"));
}

#[test]
fn an_unreachable_cluster_is_one_line() {
    let mut v = view(1);
    v.error = Some("connection refused".into());
    assert_eq!(
        render_table(&v, None),
        "cluster unreachable: connection refused\n"
    );
}

#[test]
fn a_pause_and_a_held_member_are_shown() {
    let mut v = view(7);
    assert!(!render_table(&v, None).contains("paused"));
    v.pause = Some(Stored::Read(crate::cluster::records::PauseRecord::new(
        "ana",
        "ops1",
        SystemTime::now(),
        Some("investigating latency"),
    )));
    v.progress.insert(
        "m3".to_string(),
        record(r#"{"member":"m3","running":"3.5.16","state":"queued","held":"outside the maintenance windows"}"#),
    );
    let table = render_table(&v, None);
    assert!(table.contains("ana@ops1"), "{table}");
    assert!(table.contains("investigating latency"), "{table}");
    assert!(
        table.contains("m3 held: outside the maintenance windows\n"),
        "{table}"
    );
}

#[test]
fn a_frame_ends_with_the_downgrade_line_when_one_is_under_way() {
    let now = at("2026-11-29T10:00:12Z");
    let line = "downgrade to 3.6.17: enabled in etcd; done 1/3 (m1); storage version: m1 3.6, m2 3.6, m3 3.6";
    let frame = render_frame(&view(7), Some(line), now, Duration::from_secs(1));
    assert!(frame.ends_with(&format!("{line}\n")), "{frame}");
    let without = render_frame(&view(7), None, now, Duration::from_secs(1));
    assert!(!without.contains("downgrade"), "{without}");
    // A changed downgrade line alone is a change worth a new block off a terminal.
    assert_ne!(
        with_downgrade(render_table(&view(7), None), Some(line)),
        with_downgrade(render_table(&view(7), None), None)
    );
}

#[test]
fn a_member_parked_before_the_downgrade_shows_as_waiting_once_it_is_enabled() {
    let parked = r#"{"member":"m2","running":"3.7.4","staged":"3.6.17","state":"idle","since":"2026-11-29T09:58:55Z","last_error":"3.6.17 is a lower minor than 3.7.4 ...; run `etcd-supervisor downgrade 3.6.17`"}"#;
    let mut v = view(7);
    v.progress.insert("m2".to_string(), record(parked));
    let now = at("2026-11-29T10:00:12Z");
    // Before `downgrade` the cluster version is 3.7: the refusal, with the command, stands.
    v.cluster_version = Some(Version::new(3, 7, 0));
    for text in [
        render_frame(&v, None, now, Duration::from_secs(1)),
        super::super::status::render(&v),
    ] {
        assert!(
            text.contains("run `etcd-supervisor downgrade 3.6.17`"),
            "{text}"
        );
        assert!(!text.contains("waiting for its turn"), "{text}");
    }
    // Enabled: the cluster version is on 3.6, and the old reason would tell the operator to
    // run a command that is already under way.
    v.cluster_version = Some(Version::new(3, 6, 0));
    for text in [
        render_frame(&v, None, now, Duration::from_secs(1)),
        super::super::status::render(&v),
    ] {
        assert!(!text.contains("run `etcd-supervisor downgrade"), "{text}");
        assert!(
            text.contains("m2: waiting for its turn in the downgrade to 3.6.17"),
            "{text}"
        );
    }
    // Any other problem of a queued member is still shown as it was recorded.
    assert!(render_frame(&view(7), None, now, Duration::from_secs(1))
        .contains("m2: last problem: m1 holds the turn\n"));
    assert!(super::super::status::render(&view(7))
        .contains("m2: last problem (3.5.30 staged): m1 holds the turn\n"));
}

#[test]
fn the_watch_stays_off_the_turn_holders_member() {
    let mut v = view(5);
    v.members[0].client_url = Some("http://127.0.0.1:2379".into());
    v.members[1].client_url = Some("http://127.0.0.1:2479".into());
    assert_eq!(turn_holder_url(&v), Some("http://127.0.0.1:2379"));
    v.turn.holder = Some("m2".into());
    assert_eq!(turn_holder_url(&v), Some("http://127.0.0.1:2479"));
    // No turn, or a holder the member list does not name (lease id): nothing to avoid.
    v.turn.holder = None;
    assert_eq!(turn_holder_url(&v), None);
    v.turn.holder = Some("lease 7587".into());
    assert_eq!(turn_holder_url(&v), None);
}
