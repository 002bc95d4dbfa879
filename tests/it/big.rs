//! The paths big databases meet, kept honest at a small size on real etcd: a NOSPACE alarm
//! holds every member before any stop (with the fix said) and the upgrade goes on once the
//! space is freed as etcd's maintenance guide says; and a rollout whose turns reuse the
//! verified backup their dress rehearsal restored; backups on another filesystem; a db
//! near its quota; a backups filesystem too small, which holds that member before any stop
//! and lets it go on once there is room. (The sizes themselves are `scripts/bench big`.)

use std::process::Command;
use std::time::Duration;

use crate::rollout::{count_lost, server_version, stage, wait_all_on, Writer, FAST};
use crate::support::mounts::Tmpfs;
use crate::support::outage::etcd_pid_of;
use crate::support::{http_post, wait_for, Cluster, Mode, Release, SUPERVISOR};

const REUSED: &str = "the turn's backup is the verified one taken for the rehearsal";

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Puts `k/<n>` = `value` (base64) through the gateway; the put must succeed.
fn put_value(url: &str, n: usize, value: &str) {
    let body = format!(
        r#"{{"key":"{}","value":"{value}"}}"#,
        b64(format!("k/{n}").as_bytes())
    );
    let put = http_post(&format!("{url}/v3/kv/put"), &body, Duration::from_secs(10));
    assert!(matches!(&put, Some((200, _))), "a put failed: {put:?}");
}

/// `etcdctl` of the running release against `endpoints`; its stdout (it must succeed).
fn etcdctl(endpoints: &[String], args: &[&str]) -> String {
    let out = Command::new(Release::V3_5.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The supervisors' own lines (etcd's JSON lines left out: under an alarm its /health
/// warnings drown them).
fn supervisor_lines(cluster: &Cluster) -> String {
    cluster
        .members
        .iter()
        .map(|m| {
            let lines: Vec<String> = m
                .log_text()
                .lines()
                .filter(|l| !l.starts_with('{'))
                .map(str::to_owned)
                .collect();
            let keep = lines.len().saturating_sub(40);
            format!("==== {} ====\n{}", m.spec.name, lines[keep..].join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `backup=` path of the last line of `log` containing `event`.
fn backup_named(log: &str, event: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(event))?;
    Some(
        line.split("backup=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// Stages the newest 3.5 on every member while a writer runs, waits until all run it, and
/// requires every acknowledged write to be there.
fn roll_to_newest_3_5_under_a_writer(cluster: &Cluster, tag: &str) {
    let urls = cluster.client_urls();
    let writer = Writer::start(urls.clone(), tag);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..cluster.members.len() {
        stage(cluster, i, &Release::V3_5Newest.etcd());
    }
    wait_all_on(
        cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(300),
    );
    let report = writer.finish();
    assert_eq!(
        count_lost(&urls[0], &report.acked),
        0,
        "acknowledged writes lost"
    );
}

#[test]
fn a_nospace_alarm_holds_every_member_before_any_stop_until_space_is_freed() {
    let mut cluster = Cluster::new(
        Release::V3_5,
        3,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    for m in &mut cluster.members {
        m.etcd_extra = vec!["--quota-backend-bytes=4194304".into()];
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let urls = cluster.client_urls();
    // 256 KiB values until etcd refuses a put for space.
    let value = b64(&vec![b'x'; 256 << 10]);
    let mut refused = false;
    for n in 0..200 {
        let body = format!(
            r#"{{"key":"{}","value":"{value}"}}"#,
            b64(format!("k/{n}").as_bytes())
        );
        if let Some((code, text)) = http_post(
            &format!("{}/v3/kv/put", urls[0]),
            &body,
            Duration::from_secs(10),
        ) {
            if code != 200 && text.contains("database space exceeded") {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "etcd never said NOSPACE with a 4 MiB quota");
    assert!(etcdctl(&urls, &["alarm", "list"]).contains("NOSPACE"));
    let pids: Vec<_> = (0..3)
        .map(|i| cluster.members[i].proc().group_pids())
        .collect();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }
    // Vetting (the rehearsal) runs first; then every member holds before the queue.
    for i in 0..3 {
        wait_for(Duration::from_secs(180), || {
            let log = cluster.members[i].log_text();
            log.contains("not starting a turn: alarm NOSPACE")
                .then_some(())
        })
        .unwrap_or_else(|_| {
            panic!(
                "m{} did not hold for NOSPACE\n{}",
                i + 1,
                supervisor_lines(&cluster)
            )
        });
    }
    let log = cluster.members[0].log_text();
    for fix in ["etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"] {
        assert!(log.contains(fix), "the hold does not say {fix:?}\n{log}");
    }
    for (i, before) in pids.iter().enumerate() {
        assert_eq!(
            &cluster.members[i].proc().group_pids(),
            before,
            "m{}'s etcd was stopped under NOSPACE",
            i + 1
        );
        assert_eq!(server_version(&cluster, i), Some(Release::V3_5.version()));
    }
    // The guide's fix: delete, compact, defragment every member, disarm.
    etcdctl(&urls, &["del", "--prefix", "k/"]);
    let rev = etcdctl(&urls[..1], &["endpoint", "status", "-w", "json"]);
    let rev: i64 = rev
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {rev}"));
    etcdctl(&urls[..1], &["compact", &rev.to_string(), "--physical"]);
    for u in &urls {
        etcdctl(std::slice::from_ref(u), &["defrag"]);
    }
    etcdctl(&urls, &["alarm", "disarm"]);
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(300),
    );
}

#[test]
fn a_rollout_reuses_the_verified_backup_its_rehearsal_restored_and_loses_nothing() {
    let cluster = Cluster::start_supervised(Release::V3_5, 3, FAST);
    roll_to_newest_3_5_under_a_writer(&cluster, "reuse");
    crate::fast_stop::assert_hash_kv_equal(&cluster, "the rollout");
    for (i, m) in cluster.members.iter().enumerate() {
        let log = wait_for(Duration::from_secs(30), || {
            let log = m.log_text();
            log.contains(REUSED).then_some(log)
        })
        .unwrap_or_else(|_| {
            panic!(
                "m{}'s turn did not reuse a backup\n{}",
                i + 1,
                cluster.logs()
            )
        });
        let taken = backup_named(&log, "backup taken for the rehearsal and the turn")
            .expect("the rehearsal's backup is logged");
        let used = backup_named(&log, REUSED).expect("the reused backup is named");
        assert_eq!(taken, used, "m{}: the turn recorded another backup", i + 1);
        assert!(
            used.starts_with(&m.state_dir.join("backups").display().to_string()),
            "{used} is not in the member's backups dir"
        );
        let out = Command::new(SUPERVISOR)
            .args(["verify-backup", &used])
            .output()
            .expect("verify-backup");
        assert!(
            out.status.success(),
            "verify-backup {used}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = std::fs::read_to_string(std::path::Path::new(&used).join("meta.json"))
            .expect("meta.json");
        assert!(
            meta.contains(&Release::V3_5.version())
                && meta.contains(&Release::V3_5Newest.version()),
            "{meta}"
        );
        // The rehearsal restored this very file and compared HashKV.
        assert!(log.contains("rehearsal passed"), "{log}");
        assert!(!log.contains("taking a new backup for the turn"), "{log}");
    }
}

/// A member whose db is past the read-ahead's floor (256 MiB) reads it into memory once it
/// queues (the driver's tests pin when): the whole file, said once, and the rollout loses
/// nothing (the speed-up itself is `scripts/bench big`'s).
#[test]
fn a_queued_member_with_a_db_over_256_mib_reads_all_of_it_into_memory() {
    let cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    let url = cluster.client_urls()[0].clone();
    let value = b64(&vec![b'r'; 1 << 20]);
    let mut n = 0;
    while db_size(&url) < 272 << 20 {
        assert!(
            n < 400,
            "the db stayed under 272 MiB after {n} puts of 1 MiB"
        );
        put_value(&url, n, &value);
        n += 1;
    }
    let file = std::fs::metadata(cluster.members[0].spec.data_dir.join("member/snap/db"))
        .expect("the db file")
        .len();
    roll_to_newest_3_5_under_a_writer(&cluster, "read-ahead");
    let log = supervisor_lines(&cluster);
    let read: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("db read into memory ahead of the restart"))
        .collect();
    assert_eq!(read.len(), 1, "one read ahead per queue entry\n{log}");
    let bytes: u64 = read[0]
        .split("bytes=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|b| b.parse().ok())
        .expect("bytes=");
    assert!(
        bytes >= file && read[0].contains("whole=true"),
        "read {bytes} of a {file}-byte db: {}",
        read[0]
    );
}

/// Backups on another filesystem than the data dir, in each mode: the state dir (where
/// backups go) of every member is a tmpfs of its own while etcd's data stays on the test's
/// disk, so nothing may rename or link across the two. m1 backs up by snapshot, m2 both
/// ways, m3 by a cold copy of its data dir (which crosses the filesystems while etcd is
/// stopped); the rollout completes, loses nothing, and every backup verifies where it lies.
#[test]
fn backups_on_another_filesystem_than_the_data_dir_work_in_every_mode() {
    use std::os::unix::fs::MetadataExt;
    let mut cluster = Cluster::new(
        Release::V3_5,
        3,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    let mut mounts = Vec::new();
    for (m, mode) in cluster
        .members
        .iter_mut()
        .zip(["snapshot", "both", "data-dir"])
    {
        mounts.push(Tmpfs::mount(&m.state_dir, "size=512m,mode=0700"));
        m.env.push(("ETCD_SUPERVISOR_BACKUP".into(), mode.into()));
    }
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    roll_to_newest_3_5_under_a_writer(&cluster, "other-fs");
    for (i, m) in cluster.members.iter().enumerate() {
        let data_dev = std::fs::metadata(&m.spec.data_dir).expect("data dir").dev();
        let backups: Vec<_> = std::fs::read_dir(m.state_dir.join("backups"))
            .expect("backups dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.join("meta.json").exists())
            .collect();
        assert!(!backups.is_empty(), "m{} kept no backup", i + 1);
        for b in &backups {
            let dev = std::fs::metadata(b).expect("backup").dev();
            assert_ne!(
                dev,
                data_dev,
                "{} is on the data dir's filesystem",
                b.display()
            );
            let out = Command::new(SUPERVISOR)
                .arg("verify-backup")
                .arg(b)
                .output()
                .expect("verify-backup");
            assert!(
                out.status.success(),
                "verify-backup {}: {}{}",
                b.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let modes: Vec<String> = backups
            .iter()
            .map(|b| {
                let meta = std::fs::read_to_string(b.join("meta.json")).expect("meta.json");
                let meta: serde_json::Value = serde_json::from_str(&meta).expect("meta json");
                meta["mode"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        let want = ["snapshot", "both", "data-dir"][i];
        assert!(
            modes.iter().any(|m| m == want),
            "m{}: no {want} backup among {modes:?}",
            i + 1
        );
    }
    drop(cluster);
    drop(mounts);
}

/// `dbSize` of `url` (the db file, what etcd's quota counts), from `endpoint status`.
fn db_size(url: &str) -> u64 {
    let json = etcdctl(&[url.to_owned()], &["endpoint", "status", "-w", "json"]);
    json.split("\"dbSize\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no dbSize in {json}"))
}

/// A db near its quota: the upgrade goes on, says so, and does not itself raise NOSPACE.
/// The quota is set from the db file etcd actually has (bbolt grows it about as fast as the
/// data, in steps of ~1.8 MiB here): the member first runs without a quota until its file
/// passes 24 MiB, and is restarted with the file at 91 % of its quota, ~2.4 MiB short of
/// it: far more than the writer's small puts and the supervisor's records add during one
/// member's turn, so an alarm would be the upgrade's doing.
#[test]
fn a_db_near_its_quota_is_upgraded_with_a_warning_and_no_alarm() {
    let mut cluster = Cluster::new(
        Release::V3_5,
        1,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    let urls = cluster.client_urls();
    let value = b64(&vec![b'x'; 256 << 10]);
    for n in 0..400 {
        if db_size(&urls[0]) >= 24 << 20 {
            break;
        }
        put_value(&urls[0], n, &value);
    }
    // etcd commits its backend every 100 ms: the file's size is read after the last puts'.
    std::thread::sleep(Duration::from_millis(500));
    let size = db_size(&urls[0]);
    assert!(size >= 24 << 20, "the db file stayed at {size} bytes");
    let quota = size * 100 / 91;
    let m = &mut cluster.members[0];
    m.stop();
    m.etcd_extra = vec![format!("--quota-backend-bytes={quota}")];
    m.start();
    m.wait_healthy();
    let after = db_size(&urls[0]);
    assert!(
        (90..100).contains(&(after * 100 / quota)),
        "after the restart the db file is {after} bytes, the quota {quota}"
    );
    assert!(!etcdctl(&urls, &["alarm", "list"]).contains("NOSPACE"));
    roll_to_newest_3_5_under_a_writer(&cluster, "near-quota");
    let alarms = etcdctl(&urls, &["alarm", "list"]);
    assert!(
        !alarms.contains("NOSPACE"),
        "the upgrade raised NOSPACE: {alarms}"
    );
    crate::fast_stop::assert_hash_kv_equal(&cluster, "the rollout near the quota");
    for (i, m) in cluster.members.iter().enumerate() {
        let log = m.log_text();
        let warned = log
            .lines()
            .find(|l| l.contains(&format!("% of its quota of {} MiB", quota >> 20)))
            .unwrap_or_else(|| panic!("m{} did not warn about the quota\n{log}", i + 1));
        assert!(
            warned.contains("WARN") && warned.contains("etcdctl defrag"),
            "{warned}"
        );
    }
}

/// A backups filesystem too small for this member's backup: its turn is refused before any
/// stop, saying the size it needs and the fix; the other members go on; once there is room
/// it goes on by itself.
#[test]
fn a_backups_filesystem_too_small_holds_that_member_before_any_stop_until_there_is_room() {
    let mut cluster = Cluster::new(
        Release::V3_5,
        3,
        Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    let tiny = Tmpfs::mount(
        &cluster.members[0].state_dir.join("backups"),
        "size=1m,mode=0700",
    );
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let urls = cluster.client_urls();
    // ~4 MiB of data: a backup of it does not fit in m1's 1 MiB.
    let value = b64(&vec![b'x'; 256 << 10]);
    for n in 0..16 {
        put_value(&urls[0], n, &value);
    }
    let m1_etcd = etcd_pid_of(&cluster.members[0].spec.data_dir).expect("m1's etcd");
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }
    let newest = Some(Release::V3_5Newest.version());
    wait_for(Duration::from_secs(300), || {
        (server_version(&cluster, 1) == newest && server_version(&cluster, 2) == newest)
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("m2 and m3 did not upgrade\n{}", supervisor_lines(&cluster)));
    wait_for(Duration::from_secs(120), || {
        cluster.members[0]
            .log_text()
            .contains("backup needs ~")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 did not say the size\n{}", supervisor_lines(&cluster)));
    let log = cluster.members[0].log_text();
    assert!(
        log.contains("free space or lower --backup-keep"),
        "the refusal does not say the fix\n{log}"
    );
    assert_eq!(
        etcd_pid_of(&cluster.members[0].spec.data_dir),
        Some(m1_etcd),
        "m1's etcd was stopped without room for its backup"
    );
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_5.version()));
    tiny.remount("size=64m");
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(300),
    );
}
