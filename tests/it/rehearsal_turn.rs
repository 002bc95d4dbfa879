//! The dress rehearsal through the supervisor: a staged version is rehearsed on every member
//! before it queues, so a version that cannot serve this data is rejected for the whole
//! cluster without any member's etcd being stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::rollout::{server_version, wait_all_on, FAST};
use crate::support::{self, http_post, wait_for, write_script, Cluster, Release, SUPERVISOR};

/// Stages `binary` with companions on member `i` (the real `stage` command).
fn stage_with(cluster: &Cluster, i: usize, binary: &Path, with: &[PathBuf]) {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(SUPERVISOR)
        .arg("stage")
        .arg(binary)
        .arg("--state-dir")
        .arg(&cluster.members[i].state_dir);
    for w in with {
        cmd.arg("--with").arg(w);
    }
    let out = cmd.output().expect("run stage");
    assert!(
        out.status.success(),
        "stage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 3.5.30's etcdutl, named as the drop's companion.
fn etcdutl_3_5_30(dir: &Path, suffix: &str) -> PathBuf {
    let to = dir.join(format!("etcdutl{suffix}"));
    std::fs::copy(
        Release::V3_5Newest.etcdutl().expect("3.5.30 has etcdutl"),
        &to,
    )
    .unwrap();
    to
}

/// True when `rejected/<version>` exists under the default prefix.
fn rejected_in_etcd(url: &str, version: &str) -> bool {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .encode(format!("/etcd-supervisor/rejected/{version}"));
    http_post(
        &format!("{url}/v3/kv/range"),
        &format!(r#"{{"key":"{key}"}}"#),
        Duration::from_secs(2),
    )
    .is_some_and(|(status, body)| status == 200 && body.contains("\"kvs\""))
}

/// Nothing of a rehearsal is left: its scratch dir is empty and no process names it.
fn assert_no_rehearsal_left(state_dir: &Path) {
    let scratch = state_dir.join("rehearsal");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", scratch.display());
    let needle = scratch.to_string_lossy().into_owned();
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect();
    assert!(procs.is_empty(), "rehearsal processes left: {procs:?}");
}

#[test]
fn a_version_that_dies_when_served_is_rejected_by_the_rehearsal_and_no_member_stops() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    let pids: Vec<_> = (0..3)
        .map(|i| cluster.members[i].proc().group_pids())
        .collect();
    let fake = cluster.dir().join("etcd-3.5.30");
    write_script(
        &fake,
        "#!/bin/sh\ncase \"$1\" in --version) echo 'etcd Version: 3.5.30'; exit 0;; --help) exit 0;; esac\necho 'panic: cannot open this data (a fake)' >&2\nexit 1\n",
    );
    let tool = etcdutl_3_5_30(cluster.dir(), "-3.5.30");
    for i in 0..3 {
        stage_with(&cluster, i, &fake, std::slice::from_ref(&tool));
    }
    let url = cluster.members[0].client_url();
    wait_for(Duration::from_secs(90), || {
        rejected_in_etcd(&url, "3.5.30").then_some(())
    })
    .unwrap_or_else(|_| panic!("3.5.30 was not rejected\n{}", cluster.logs()));
    // Every member has refused it (its own rehearsal, or the rejection it found).
    for i in 0..3 {
        let reason = cluster.members[i]
            .state_dir
            .join("staging/rejected/etcd-3.5.30.reason");
        wait_for(Duration::from_secs(60), || reason.exists().then_some(()))
            .unwrap_or_else(|_| panic!("m{} never refused 3.5.30\n{}", i + 1, cluster.logs()));
    }
    let logs = cluster.logs();
    assert!(
        logs.contains("dress rehearsal of etcd 3.5.30"),
        "no rehearsal verdict in the logs\n{logs}"
    );
    for (i, before) in pids.iter().enumerate() {
        eprintln!(
            "m{}: supervisor and etcd pids before {before:?}, after {:?}",
            i + 1,
            cluster.members[i].proc().group_pids()
        );
        assert_eq!(
            &cluster.members[i].proc().group_pids(),
            before,
            "m{}'s etcd was restarted",
            i + 1
        );
        assert_eq!(server_version(&cluster, i), Some(Release::V3_5.version()));
        assert_no_rehearsal_left(&cluster.members[i].state_dir);
    }
}

#[test]
fn a_real_3_5_30_rehearses_on_every_member_and_rolls() {
    let cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    for n in 0..50 {
        let key = support_b64(&format!("k{n}"));
        let answer = http_post(
            &format!("{}/v3/kv/put", cluster.members[0].client_url()),
            &format!(r#"{{"key":"{key}","value":"dmFsdWU="}}"#),
            Duration::from_secs(2),
        );
        assert!(matches!(answer, Some((200, _))), "{answer:?}");
    }
    let binary = cluster.dir().join("etcd-3.5.30");
    std::fs::copy(Release::V3_5Newest.etcd(), &binary).unwrap();
    let tool = etcdutl_3_5_30(cluster.dir(), "-3.5.30");
    for i in 0..3 {
        stage_with(&cluster, i, &binary, std::slice::from_ref(&tool));
    }
    wait_all_on(&cluster, "3.5.30", Duration::from_secs(180));
    for m in &cluster.members {
        let log = m.log_text();
        assert!(
            log.contains("rehearsal passed"),
            "{} did not rehearse\n{log}",
            m.spec.name
        );
        assert_no_rehearsal_left(&m.state_dir);
    }
}

#[test]
fn sigterm_during_the_rehearsal_stops_it_and_exits_0() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    let pid_file = cluster.dir().join("rehearsal.pid");
    let slow = cluster.dir().join("etcd-3.5.30");
    // Serves nothing and never exits by itself: the rehearsal waits for it.
    write_script(
        &slow,
        &format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo 'etcd Version: 3.5.30'; exit 0;; --help) exit 0;; esac\necho $$ > {}\nexec sleep 300\n",
            pid_file.display()
        ),
    );
    let tool = etcdutl_3_5_30(cluster.dir(), "-3.5.30");
    stage_with(&cluster, 0, &slow, &[tool]);
    let pid: i32 = wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .unwrap_or_else(|_| panic!("the rehearsal never started\n{}", cluster.logs()));
    let status = cluster.members[0].stop();
    assert_eq!(status.code(), Some(0), "{}", cluster.logs());
    wait_for(Duration::from_secs(10), || {
        support::process_gone(pid).then_some(())
    })
    .unwrap_or_else(|_| panic!("the rehearsal's etcd {pid} outlived the supervisor"));
    assert_no_rehearsal_left(&cluster.members[0].state_dir);
    // The backup written for the cancelled rehearsal was never put in place as verified
    // (an unfinished `.tmp-` one is the next backup's stale clean-up).
    let kept: Vec<_> = std::fs::read_dir(cluster.members[0].state_dir.join("backups"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        kept.iter().all(|n| n.to_string_lossy().starts_with('.')),
        "a backup was kept from a cancelled rehearsal: {kept:?}"
    );
}

fn support_b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_backup_failing_its_verification_beside_the_rehearsal_refuses_locally_and_nothing_stops() {
    if !cfg!(feature = "failpoints") {
        panic!("this test needs `--features failpoints` (scripts/test enables it)");
    }
    let mut cluster = Cluster::new(
        Release::V3_5,
        1,
        support::Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    // A disk that returns what it was not given: one byte of the backup's snapshot changes
    // after its sha256 was recorded, while the rehearsal restores it.
    cluster.members[0].env.push((
        "ETCD_SUPERVISOR_FAILPOINT_CORRUPT".into(),
        "backup-snapshot-written".into(),
    ));
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    let url = cluster.members[0].client_url();
    for n in 0..50 {
        let key = support_b64(&format!("k{n}"));
        let answer = http_post(
            &format!("{url}/v3/kv/put"),
            &format!(r#"{{"key":"{key}","value":"dmFsdWU="}}"#),
            Duration::from_secs(2),
        );
        assert!(matches!(answer, Some((200, _))), "{answer:?}");
    }
    let pids = cluster.members[0].proc().group_pids();
    let binary = cluster.dir().join("etcd-3.5.30");
    std::fs::copy(Release::V3_5Newest.etcd(), &binary).unwrap();
    let tool = etcdutl_3_5_30(cluster.dir(), "-3.5.30");
    stage_with(&cluster, 0, &binary, &[tool]);
    let m = &cluster.members[0];
    wait_for(Duration::from_secs(90), || {
        m.log_text()
            .contains("failed its verification from disk")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("no refusal on the corrupted backup\n{}", cluster.logs()));
    // A little longer: nothing may follow the refusal.
    std::thread::sleep(Duration::from_secs(3));
    let log = m.log_text();
    assert!(
        log.contains("failpoint: corrupting"),
        "the failpoint never ran\n{log}"
    );
    assert!(
        !log.contains("backup taken for the rehearsal and the turn"),
        "the corrupted backup was kept for the turn\n{log}"
    );
    let state_dir = m.state_dir.clone();
    assert_eq!(
        cluster.members[0].proc().group_pids(),
        pids,
        "etcd was restarted\n{log}"
    );
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_5.version()));
    // This member's fault: the version is not rejected for the cluster.
    assert!(!rejected_in_etcd(&url, "3.5.30"), "3.5.30 rejected\n{log}");
    // The unverified backup is gone, finished or not.
    let backups: Vec<_> = std::fs::read_dir(state_dir.join("backups"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(backups.is_empty(), "backups left: {backups:?}");
    assert_no_rehearsal_left(&state_dir);
}
