//! Verification and retention on hand-made backup directories (no etcd: milliseconds).
//! Real backups from real etcd are in `tests/it/backup.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::meta::{DataDirMeta, Kind, Meta, SnapshotMeta, FORMAT};
use super::retention::clean_stale;
use super::sums::{render, Sums};
use super::*;
use crate::backup::BackupMode;
use crate::digest::sha256_hex;
use crate::versions::Version;

fn snapshot_bytes() -> Vec<u8> {
    let mut data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let sha = Sha256::digest(&data);
    data.extend_from_slice(&sha);
    data
}

/// Writes a backup by hand into `dir`: the files of `mode`, meta.json, SHA256SUMS.
fn fake_backup(dir: &Path, mode: BackupMode) {
    fs::create_dir_all(dir).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut meta = Meta {
        format: FORMAT,
        kind: Kind::Turn,
        time: "2025-01-02T03:04:05.678Z".into(),
        member: "m1".into(),
        member_id: "8e9e05c52164694d".into(),
        cluster_id: "cdf818194e3a8c32".into(),
        endpoint: "http://127.0.0.1:2379".into(),
        from_version: "3.4.23".into(),
        to_version: Some("3.5.16".into()),
        etcd_version: "3.4.23".into(),
        mode: mode.name().into(),
        revision: 42,
        db_size: 70_000,
        snapshot: None,
        data_dir: None,
        supervisor_version: "0.1.0".into(),
    };
    if meta::has_snapshot(mode) {
        let snap = snapshot_bytes();
        meta.snapshot = Some(SnapshotMeta {
            file: SNAPSHOT.into(),
            size: snap.len() as u64,
            sha256: sha256_hex(&snap),
        });
        files.push((SNAPSHOT.into(), snap));
    }
    if meta::has_data_dir(mode) {
        files.push(("data/member/snap/db".into(), vec![1u8; 5000]));
        files.push((
            "data/member/wal/0000000000000000-0000000000000000.wal".into(),
            vec![2u8; 300],
        ));
        meta.data_dir = Some(DataDirMeta {
            source: "/var/lib/etcd".into(),
            dir: DATA.into(),
            files: 2,
            bytes: 5300,
        });
    }
    files.push((META.into(), serde_json::to_vec_pretty(&meta).unwrap()));
    let mut sums = Sums::new();
    for (rel, bytes) in &files {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        sums.insert(rel.clone(), sha256_hex(bytes));
    }
    fs::write(dir.join(SUMS), render(&sums)).unwrap();
}

/// Recomputes SHA256SUMS from what is in `dir` now (to reach the checks after the hashes).
fn resum(dir: &Path) {
    let text = fs::read_to_string(dir.join(SUMS)).unwrap();
    let mut sums = sums::parse(&text).unwrap();
    for (rel, hex) in sums.iter_mut() {
        *hex = sha256_hex(&fs::read(dir.join(rel)).unwrap());
    }
    fs::write(dir.join(SUMS), render(&sums)).unwrap();
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

fn err(dir: &Path) -> String {
    verify(dir).unwrap_err().to_string()
}

#[test]
fn hand_made_backups_verify_in_every_mode() {
    let root = tempfile::tempdir().unwrap();
    for mode in [BackupMode::Snapshot, BackupMode::DataDir, BackupMode::Both] {
        let dir = root.path().join(mode.name());
        fake_backup(&dir, mode);
        let v = verify(&dir).unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
        assert_eq!(v.meta.mode, mode.name());
        let summary = v.summary();
        assert!(
            summary.contains("member m1 (8e9e05c52164694d)"),
            "{summary}"
        );
        assert!(summary.contains("3.4.23 -> 3.5.16"), "{summary}");
    }
}

#[test]
fn the_first_bad_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = root.path().join(name);
        fake_backup(&dir, BackupMode::Both);
        dir
    };

    let missing = root.path().join("nope");
    assert!(err(&missing).ends_with("nope: no such backup directory"));
    let file = root.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(err(&file).contains("not a directory"));

    let d = fresh("no-sums");
    fs::remove_file(d.join(SUMS)).unwrap();
    assert!(err(&d).starts_with("SHA256SUMS: missing"), "{}", err(&d));

    let d = fresh("bad-sums");
    let mut text = fs::read_to_string(d.join(SUMS)).unwrap();
    text.push_str("garbage\n");
    fs::write(d.join(SUMS), text).unwrap();
    assert!(err(&d).starts_with("SHA256SUMS: line 5:"), "{}", err(&d));

    let d = fresh("listed-missing");
    fs::remove_file(d.join("data/member/wal/0000000000000000-0000000000000000.wal")).unwrap();
    assert_eq!(
        err(&d),
        "data/member/wal/0000000000000000-0000000000000000.wal: listed in SHA256SUMS but missing"
    );

    let d = fresh("extra");
    fs::write(d.join("data/member/snap/extra"), b"?").unwrap();
    assert!(
        err(&d).starts_with("data/member/snap/extra: not listed in SHA256SUMS"),
        "{}",
        err(&d)
    );

    let d = fresh("symlink");
    std::os::unix::fs::symlink("/etc/hostname", d.join("link")).unwrap();
    assert!(
        err(&d).starts_with("link: not a regular file"),
        "{}",
        err(&d)
    );

    let d = fresh("flipped-snapshot");
    flip(&d.join(SNAPSHOT), 1000);
    assert!(
        err(&d).starts_with("snapshot.db: sha256 mismatch"),
        "{}",
        err(&d)
    );

    let d = fresh("flipped-data");
    flip(&d.join("data/member/snap/db"), 10);
    assert!(
        err(&d).starts_with("data/member/snap/db: sha256 mismatch"),
        "{}",
        err(&d)
    );

    // A consistent SHA256SUMS over a snapshot whose own trailer is wrong.
    let d = fresh("bad-trailer");
    let len = fs::metadata(d.join(SNAPSHOT)).unwrap().len() as usize;
    flip(&d.join(SNAPSHOT), len - 1);
    resum(&d);
    assert!(
        err(&d).starts_with("snapshot.db: bad sha256 trailer"),
        "{}",
        err(&d)
    );

    let d = fresh("bad-meta");
    fs::write(d.join(META), b"{not json").unwrap();
    resum(&d);
    assert!(err(&d).starts_with("meta.json: unreadable"), "{}", err(&d));

    // meta.json that disagrees with the files.
    let d = fresh("meta-disagrees");
    let snap_sha = sha256_hex(b"something else");
    let mut meta: Meta = serde_json::from_slice(&fs::read(d.join(META)).unwrap()).unwrap();
    meta.snapshot.as_mut().unwrap().sha256 = snap_sha;
    fs::write(d.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
    resum(&d);
    assert!(
        err(&d).starts_with("meta.json: its snapshot sha256"),
        "{}",
        err(&d)
    );

    let d = fresh("mode-says-both");
    fs::remove_dir_all(d.join(DATA)).unwrap();
    let text = fs::read_to_string(d.join(SUMS)).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("  data/"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(d.join(SUMS), kept).unwrap();
    assert!(
        err(&d).starts_with("data/member/snap/db: missing, but meta.json says mode both"),
        "{}",
        err(&d)
    );
}

/// Turn backups named at times t0 < t1 < ... in `dir`, oldest first.
fn turn_backups(dir: &Path, n: usize) -> Vec<PathBuf> {
    let v = |s: &str| s.parse::<Version>().unwrap();
    (0..n)
        .map(|i| {
            let time = format!("20250102T0304{:02}.000Z", i);
            let path = dir.join(naming::turn_name(&time, "m1", &v("3.4.23"), &v("3.5.16")));
            fake_backup(&path, BackupMode::Snapshot);
            path
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn retention_keeps_the_newest_and_touches_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let all = turn_backups(root.path(), 5);
    let on_demand = root.path().join(naming::on_demand_name(
        "20240101T000000.000Z",
        "m1",
        "3.4.23",
    ));
    fake_backup(&on_demand, BackupMode::Snapshot);
    fs::create_dir(root.path().join("notes")).unwrap();
    fs::write(
        root.path().join("20240101T000000.000Z-m1-3.4.23-to-3.5.16"),
        b"a file",
    )
    .unwrap();

    let pruned = prune(root.path(), 2, None).unwrap();
    assert_eq!(pruned.kept, [all[4].clone(), all[3].clone()]);
    assert_eq!(
        pruned.deleted,
        [all[2].clone(), all[1].clone(), all[0].clone()]
    );
    assert!(pruned.failed_verification.is_empty());
    let left = names(root.path());
    assert_eq!(left.len(), 5, "{left:?}");
    assert!(on_demand.is_dir() && root.path().join("notes").is_dir());

    // Nothing more to do the second time.
    let again = prune(root.path(), 2, None).unwrap();
    assert!(again.deleted.is_empty());
}

#[test]
fn retention_never_deletes_the_last_verified_backup() {
    let root = tempfile::tempdir().unwrap();
    let all = turn_backups(root.path(), 4);
    for dir in &all[1..] {
        flip(&dir.join(SNAPSHOT), 100);
    }
    let pruned = prune(root.path(), 2, None).unwrap();
    // The two newest (corrupt) stay by age; the oldest stays as the last verified one.
    assert_eq!(
        pruned.kept,
        [all[3].clone(), all[2].clone(), all[0].clone()]
    );
    assert_eq!(pruned.deleted, [all[1].clone()]);
    assert_eq!(pruned.failed_verification.len(), 3);
    assert!(pruned.failed_verification[0]
        .1
        .contains("snapshot.db: sha256 mismatch"));
    assert!(verify(&all[0]).is_ok());

    // When nothing verifies, nothing is deleted.
    flip(&all[0].join(SNAPSHOT), 100);
    let pruned = prune(root.path(), 1, None).unwrap();
    assert!(pruned.deleted.is_empty());
    assert_eq!(pruned.kept.len(), 3);
}

#[test]
fn stale_leftovers_are_cleaned_but_not_live_ones() {
    use nix::fcntl::{Flock, FlockArg};
    use nix::sys::stat::utimes;
    use nix::sys::time::{TimeVal, TimeValLike};

    let root = tempfile::tempdir().unwrap();
    let name = "20250102T030405.678Z-m1-3.4.23-to-3.5.16";
    let old = TimeVal::seconds(1_000_000_000);
    let mk = |n: &str, age_old: bool| {
        let p = root.path().join(n);
        fs::create_dir(&p).unwrap();
        fs::write(p.join("snapshot.db"), b"partial").unwrap();
        if age_old {
            utimes(&p, &old, &old).unwrap();
        }
        p
    };
    let abandoned = mk(&format!(".tmp-{name}"), true);
    let live = mk(&format!(".tmp-{}", name.replace("m1", "m2")), true);
    let young = mk(&format!(".tmp-{}", name.replace("m1", "m3")), false);
    let deleting = mk(&format!(".deleting-{name}"), false);
    let foreign = mk(".tmp-something-else", true);
    let _held = Flock::lock(
        fs::File::open(&live).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .unwrap();

    clean_stale(root.path());
    assert!(!abandoned.exists());
    assert!(!deleting.exists());
    assert!(live.exists(), "a locked one is being written");
    assert!(young.exists(), "a young one may not be locked yet");
    assert!(foreign.exists(), "not ours");
}
