//! Disk and state faults: a state.json that is not one, the state dir's disk full in the
//! middle of a swap, and the staging dir on a read-only mount. The mounts are made by the
//! test (tmpfs, as root) and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::rollout::{server_version, stage, FAST};
use crate::support::mounts::Tmpfs;
use crate::support::{wait_for, Cluster, Mode, Release};

const PAUSE_ENV: &str = "ETCD_SUPERVISOR_FAILPOINT_PAUSE";

/// Fills the filesystem at `dir`: every block, then every inode.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    std::fs::create_dir_all(&filler).unwrap();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.join("blocks").display()))
        .output();
    for i in 0..100_000 {
        if std::fs::write(filler.join(format!("i{i}")), b"").is_err() {
            break;
        }
    }
    assert!(
        std::os::unix::fs::symlink("x", dir.join("probe")).is_err(),
        "the disk is not full"
    );
    filler
}

#[test]
fn corrupt_state_json_refuses_to_start_and_says_how_out() {
    let mut cluster = Cluster::new(
        Release::V3_4,
        1,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    // A first run pins the version and leaves a state dir.
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    assert_eq!(cluster.members[0].stop().code(), Some(0));
    let state = cluster.members[0].state_dir.join("state.json");
    for garbage in [&b"{\"phase\":\"swapp"[..], b"", b"\x00\x00\x00garbage"] {
        std::fs::write(&state, garbage).unwrap();
        cluster.members[0].start();
        let status = cluster.members[0]
            .proc()
            .wait_timeout(Duration::from_secs(30))
            .expect("the supervisor exits");
        let log = cluster.members[0].log_text();
        // Exit 2: systemd's RestartPreventExitStatus keeps it from looping.
        assert_eq!(status.code(), Some(2), "{log}");
        assert!(log.contains(&state.display().to_string()), "{log}");
        assert!(log.contains("move the file aside"), "{log}");
        assert!(log.contains("etcd was not started"), "{log}");
        // Never reset silently: the file is left as it was, and no etcd serves.
        assert_eq!(std::fs::read(&state).unwrap(), garbage);
        assert_eq!(server_version(&cluster, 0), None);
        drop(cluster.members[0].kill());
    }
    // The way out works: moved aside, the pinned version runs again.
    std::fs::rename(&state, state.with_extension("json.bad")).unwrap();
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
}

#[test]
fn state_dir_full_during_a_swap_ends_on_a_known_good_version() {
    if !cfg!(feature = "failpoints") {
        panic!("needs the supervisor's test-only failpoint: run with `--features failpoints`");
    }
    let mut cluster = Cluster::new(
        Release::V3_4,
        1,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    let state_dir = cluster.members[0].state_dir.clone();
    // Room for two pinned versions, the staged file and a snapshot; few spare inodes.
    let disk = Tmpfs::mount(&state_dir, "size=160m,nr_inodes=2000,mode=0755");
    cluster.members[0]
        .env
        .push((PAUSE_ENV.into(), "stopping:3s".into()));
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    stage(&cluster, 0, &Release::V3_5.etcd());
    let m = &cluster.members[0];
    // Held in `stopping` (backup done, etcd not stopped yet): the disk fills up now.
    wait_for(Duration::from_secs(60), || {
        m.log_text().contains("failpoint: pausing").then_some(())
    })
    .unwrap_or_else(|_| panic!("never reached stopping\n{}", m.log_text()));
    let filler = fill(&state_dir);
    // The switch to 3.5 fails; `current` still names 3.4, which is started and verified.
    wait_for(Duration::from_secs(60), || {
        let log = m.log_text();
        (log.contains("switching `current` failed")
            && server_version(&cluster, 0) == Some(Release::V3_4.version()))
        .then_some(())
    })
    .unwrap_or_else(|_| panic!("not back on 3.4\n{}", m.log_text()));
    m.wait_healthy();
    // Nothing was rejected: a full disk is not the version's fault.
    assert!(
        !m.log_text().contains("rejected for the whole cluster"),
        "{}",
        m.log_text()
    );
    assert_eq!(
        std::fs::read_link(state_dir.join("current")).unwrap(),
        Path::new("versions/3.4.23")
    );
    // Space back: the retry takes the turn again and the upgrade goes through.
    std::fs::remove_dir_all(&filler).unwrap();
    let _ = std::fs::remove_file(state_dir.join("probe"));
    wait_for(Duration::from_secs(90), || {
        (server_version(&cluster, 0) == Some(Release::V3_5.version())).then_some(())
    })
    .unwrap_or_else(|_| panic!("never upgraded after the disk was freed\n{}", m.log_text()));
    drop(cluster);
    drop(disk);
}

#[test]
fn read_only_staging_dir_is_a_clear_error_and_etcd_keeps_running() {
    let mut cluster = Cluster::new(
        Release::V3_4,
        1,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    let staging = cluster.members[0].state_dir.join("staging");
    let mount = Tmpfs::mount(&staging, "size=64m,mode=0755");
    // A drop made while it was writable, then the mount turns read-only.
    stage(&cluster, 0, &Release::V3_5.etcd());
    mount.remount("ro");
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    let m = &cluster.members[0];
    wait_for(Duration::from_secs(60), || {
        m.log_text()
            .contains(&format!(
                "the staging directory {} is on a read-only mount",
                staging.display()
            ))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("no clear error\n{}", m.log_text()));
    let pids = cluster.members[0].proc().group_pids();
    // etcd keeps serving the pinned version, untouched; the drop waits (said once within
    // the minute before the retry says it again).
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            server_version(&cluster, 0).is_some(),
            "{}",
            cluster.members[0].log_text()
        );
        assert!(cluster.members[0].is_running(), "the supervisor exited");
    }
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));
    assert_eq!(
        cluster.members[0].proc().group_pids(),
        pids,
        "etcd was restarted"
    );
    let log = cluster.members[0].log_text();
    assert_eq!(log.matches("is on a read-only mount").count(), 1, "{log}");
    assert!(!log.contains("accepted as etcd"), "{log}");
    // Read-write again: the drop is taken (the version is installed).
    mount.remount("rw");
    // Any change wakes the watcher (else the retry comes within a minute).
    std::fs::write(staging.join(".wake"), b"").unwrap();
    wait_for(Duration::from_secs(60), || {
        cluster.members[0]
            .log_text()
            .contains("accepted as etcd")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("drop not taken after rw\n{}", cluster.members[0].log_text()));
    drop(cluster);
    drop(mount);
}
