//! The consistency check after a rollout: it runs once the last member verified and
//! compares every member's HashKV; a recorded inconsistency stops every upgrade turn until
//! `acknowledge-inconsistency` deletes it. The test reads every member's HashKV itself, at
//! the revision the check names, and holds the check's verdict to it. (The mismatch
//! verdict itself is unit-tested with the pure comparison: real members that diverge
//! cannot be made on purpose.)

use std::process::Command;
use std::time::Duration;

use crate::rollout::{server_version, stage, wait_all_on, FAST};
use crate::support::{http_post, wait_for, Cluster, Release, SUPERVISOR};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

const ALARM_KEY: &str = "/etcd-supervisor/consistency/alarm";

/// The member at `url`'s HashKV at `revision`, read by the test.
fn hash_kv(url: &str, revision: u64) -> Option<u64> {
    let (code, body) = http_post(
        &format!("{url}/v3/maintenance/hashkv"),
        &format!(r#"{{"revision":"{revision}"}}"#),
        Duration::from_secs(5),
    )?;
    (code == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["hash"].as_u64()
}

/// The value of `field=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))?
        .trim_matches('"')
        .parse()
        .ok()
}

#[test]
fn consistency_check_compares_every_member_after_a_rollout() {
    let cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    // Some history to hash.
    for i in 0..20 {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(&format!("k{i}")),
            b64("v")
        );
        let put = http_post(
            &format!("{}/v3/kv/put", cluster.members[i % 3].client_url()),
            &body,
            Duration::from_secs(5),
        );
        assert!(matches!(put, Some((200, _))), "{put:?}");
    }
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }
    let target = Release::V3_5Newest.version();
    wait_all_on(&cluster, &target, Duration::from_secs(180));
    // The member that verified last compared all three hashes, and they agreed.
    let passed = wait_for(Duration::from_secs(60), || {
        cluster.members.iter().find_map(|m| {
            m.log_text()
                .lines()
                .find(|l| l.contains("consistency check after the rollout passed"))
                .map(str::to_owned)
        })
    })
    .unwrap_or_else(|_| panic!("no consistency check ran\n{}", cluster.logs()));
    assert!(passed.contains("members=3"), "{passed}");
    assert!(passed.contains(&format!("version={target}")), "{passed}");
    // From outside: every member's HashKV at the check's revision, read by the test, is
    // the one hash the check reported.
    let revision = field(&passed, "revision").unwrap_or_else(|| panic!("{passed}"));
    let hash = field(&passed, "hash").unwrap_or_else(|| panic!("{passed}"));
    let hashes: Vec<u64> = cluster
        .client_urls()
        .iter()
        .map(|u| {
            wait_for(Duration::from_secs(20), || hash_kv(u, revision))
                .unwrap_or_else(|_| panic!("no HashKV from {u} at {revision}"))
        })
        .collect();
    assert_eq!(hashes, [hash; 3], "{passed}");
    // Exactly one check (by the last member), none failed, nothing recorded.
    let checks: usize = cluster
        .members
        .iter()
        .map(|m| {
            m.log_text()
                .matches("consistency check after the rollout")
                .count()
        })
        .sum();
    assert_eq!(checks, 1, "{}", cluster.logs());
    let (_, body) = http_post(
        &format!("{}/v3/kv/range", cluster.members[0].client_url()),
        &format!(r#"{{"key":"{}"}}"#, b64(ALARM_KEY)),
        Duration::from_secs(5),
    )
    .expect("range");
    assert!(!body.contains("\"kvs\""), "{body}");
}

#[test]
fn a_recorded_inconsistency_blocks_every_turn_until_acknowledged() {
    let cluster = Cluster::start_supervised(Release::V3_4, 1, FAST);
    let url = cluster.members[0].client_url();
    let record = r#"{"found_by":"m9","version":"3.4.23","revision":12,"hashes":[{"member":"m9","hash":1,"compact_revision":-1},{"member":"m8","hash":2,"compact_revision":-1}],"time":"2026-01-01T00:00:00Z"}"#;
    let put = http_post(
        &format!("{url}/v3/kv/put"),
        &format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(ALARM_KEY),
            b64(record)
        ),
        Duration::from_secs(5),
    );
    assert!(matches!(put, Some((200, _))), "{put:?}");
    stage(&cluster, 0, &Release::V3_5.etcd());
    let m = &cluster.members[0];
    wait_for(Duration::from_secs(60), || {
        m.log_text()
            .contains("not taking the upgrade turn")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("the turn was not refused\n{}", m.log_text()));
    // Held off for several polls: still on 3.4, nothing stopped.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
    assert!(
        !m.log_text().contains("upgrade turn acquired"),
        "{}",
        m.log_text()
    );
    // `status` shows it as a line, and fails.
    let out = Command::new(SUPERVISOR)
        .args(["status", "--endpoints", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Grouped by hash: m9 holds 1, m8 holds 2.
    assert!(text.contains("INCONSISTENT"), "{text}");
    assert!(text.contains("m9 hash 1; m8 hash 2"), "{text}");
    assert_ne!(out.status.code(), Some(0), "{text}");
    // The operator acknowledges; the turn is taken and the upgrade goes through.
    let out = Command::new(SUPERVISOR)
        .args(["acknowledge-inconsistency", "--endpoints", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("acknowledged"), "{text}");
    wait_all_on(&cluster, &Release::V3_5.version(), Duration::from_secs(120));
    assert!(m.log_text().contains("the inconsistency was acknowledged"));
    // A second acknowledgement finds nothing, and says so.
    let out = Command::new(SUPERVISOR)
        .args(["acknowledge-inconsistency", "--endpoints", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no inconsistency is recorded"));
}
