//! Staged versions the upgrade-path rules refuse: each gets its reason file, the running
//! etcd is never stopped, and the staged binary never runs as a server (only its
//! `--version` is probed, from the private copy). Plus `plan`, the dry run.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::rollout::{server_version, stage};
use crate::support::{self, http_post, wait_for, Cluster, Release, SUPERVISOR};

const FAST: &[&str] = &["--lock-ttl", "3s", "--ready-timeout", "20s"];

/// A stand-in etcd reporting `version` that leaves `marker` if it is ever run as a server.
pub fn fake_etcd(dir: &Path, version: &str, marker: &Path) -> std::path::PathBuf {
    let path = dir.join(format!("etcd-fake-{version}"));
    support::write_script(
        &path,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'etcd Version: {version}'; exit 0; fi\ntouch {}\nexit 1\n",
            marker.display()
        ),
    );
    path
}

fn refused(cluster: &mut Cluster, version: &str, needle: &str) {
    let m = &cluster.members[0];
    let reason = m
        .state_dir
        .join(format!("staging/rejected/etcd-{version}.reason"));
    wait_for(Duration::from_secs(30), || reason.exists().then_some(()))
        .unwrap_or_else(|_| panic!("{version} not refused\n{}", m.log_text()));
    let text = std::fs::read_to_string(&reason).unwrap();
    assert!(text.contains(needle), "reason {text:?} lacks {needle:?}");
    assert!(
        m.log_text()
            .contains(&format!("staged etcd {version} refused")),
        "{}",
        m.log_text()
    );
}

/// state.json's bytes (`None`: absent) and every name under the staging dir.
fn snapshot(state: &Path) -> (Option<Vec<u8>>, Vec<String>) {
    let json = std::fs::read(state.join("state.json")).ok();
    let mut names = Vec::new();
    let mut dirs = vec![state.join("staging")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            names.push(entry.path().display().to_string());
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    names.sort();
    (json, names)
}

fn plan(cluster: &Cluster, extra: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(SUPERVISOR)
        .arg("plan")
        .arg("--state-dir")
        .arg(&cluster.members[0].state_dir)
        .args([
            "--member",
            "m1",
            "--endpoints",
            &cluster.members[0].client_url(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn skipping_a_minor_is_refused_and_never_run() {
    let mut cluster = Cluster::start_supervised(Release::V3_4, 1, FAST);
    let pids = cluster.members[0].proc().group_pids();
    let marker = cluster.dir().join("ran");
    let fake = fake_etcd(cluster.dir(), "3.6.0", &marker);
    stage(&cluster, 0, &fake);
    refused(&mut cluster, "3.6.0", "skips");
    assert!(!marker.exists(), "the staged binary ran as a server");
    assert_eq!(
        cluster.members[0].proc().group_pids(),
        pids,
        "etcd was restarted"
    );
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
}

#[test]
fn downgrade_after_the_cluster_version_moved_is_refused_and_never_run() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    let pids = cluster.members[0].proc().group_pids();
    let marker = cluster.dir().join("ran");
    let fake = fake_etcd(cluster.dir(), "3.4.99", &marker);
    stage(&cluster, 0, &fake);
    // The rule's own words: "3.5" alone would match the running version in any message.
    refused(
        &mut cluster,
        "3.4.99",
        "the cluster version is 3.5; etcd cannot go back to 3.4",
    );
    assert!(!marker.exists(), "the staged binary ran as a server");
    assert_eq!(
        cluster.members[0].proc().group_pids(),
        pids,
        "etcd was restarted"
    );
}

#[test]
fn a_version_rejected_in_etcd_is_refused() {
    let mut cluster = Cluster::start_supervised(Release::V3_4, 1, FAST);
    let pids = cluster.members[0].proc().group_pids();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = format!("/etcd-supervisor/rejected/{}", Release::V3_5.version());
    let body = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        b64(&key),
        b64(r#"{"member":"m9","reason":"did not come up"}"#)
    );
    let put = http_post(
        &format!("{}/v3/kv/put", cluster.members[0].client_url()),
        &body,
        Duration::from_secs(5),
    );
    assert!(matches!(put, Some((200, _))), "{put:?}");
    stage(&cluster, 0, &Release::V3_5.etcd());
    refused(&mut cluster, &Release::V3_5.version(), "m9");
    assert_eq!(
        cluster.members[0].proc().group_pids(),
        pids,
        "etcd was restarted"
    );
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
}

#[test]
fn plan_says_what_would_happen_and_changes_nothing() {
    let cluster = Cluster::start_supervised(Release::V3_4, 1, FAST);
    let state = cluster.members[0].state_dir.clone();
    let before = snapshot(&state);
    let out = plan(&cluster, &["--target", &Release::V3_5.version()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("runs etcd 3.4.23"), "{text}");
    assert!(text.contains("proceed"), "{text}");
    let out = plan(&cluster, &["--target", "3.6.0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refuse") && text.contains("skips"), "{text}");
    let out = plan(&cluster, &["--target", "3.5.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("known-bad"), "{text}");
    let out = plan(
        &cluster,
        &["--target", "3.5.1", "--allow-known-bad", "3.5.1"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was staged, queued or written: the state dir's state.json and staging dir
    // are exactly as they were before the first `plan` (absent stays absent).
    assert_eq!(snapshot(&state), before, "plan changed the state dir");
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
}
