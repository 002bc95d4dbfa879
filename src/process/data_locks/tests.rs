use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use super::*;

/// A data dir laid out like etcd's: `member/snap/db`, two WAL segments and a `.tmp`.
fn layout() -> (tempfile::TempDir, DataLocks) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("member/snap")).unwrap();
    std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
    std::fs::write(dir.path().join("member/snap/db"), b"db").unwrap();
    for f in [
        "0000000000000000-0000000000000000.wal",
        "0000000000000001-0000000000000010.wal",
        "0.tmp",
    ] {
        std::fs::write(dir.path().join("member/wal").join(f), b"wal").unwrap();
    }
    let locks = DataLocks::new(dir.path(), None);
    (dir, locks)
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Takes a whole-file OFD write lock on a new open file description of `path`, as etcd's
/// WAL does; held until the returned file is closed.
fn ofd_lock(path: &Path) -> File {
    let file = open_rw(path);
    let lock = whole_file(libc::F_WRLCK);
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)).unwrap();
    file
}

fn wal(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join("member/wal").join(name)
}

const OLD_SEGMENT: &str = "0000000000000000-0000000000000000.wal";
const NEW_SEGMENT: &str = "0000000000000001-0000000000000010.wal";

#[test]
fn nothing_held_is_closed() {
    let (_dir, locks) = layout();
    let state = locks.probe().unwrap();
    assert_eq!(
        state,
        LockState {
            db_held: false,
            wal_held: false
        }
    );
    assert!(state.closed());
}

#[test]
fn a_flock_on_the_db_from_another_fd_is_seen_and_left_alone() {
    let (dir, locks) = layout();
    let held = Flock::lock(
        File::open(dir.path().join("member/snap/db")).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let state = locks.probe().unwrap();
    assert!(state.db_held && !state.wal_held, "{state:?}");
    assert!(!state.closed());
    // The probe took nothing away: the holder still holds, and releasing frees it.
    drop(held);
    assert!(locks.probe().unwrap().closed());
}

#[test]
fn a_flock_held_by_another_process_is_seen() {
    let (dir, locks) = layout();
    let db = dir.path().join("member/snap/db");
    // util-linux flock(1) takes the lock, then execs the shell in its place (--no-fork),
    // which says so on stdout and becomes `sleep`: one process holds the lock.
    let mut child = Command::new("flock")
        .args(["--exclusive", "--no-fork"])
        .arg(&db)
        .args(["sh", "-c", "echo locked && exec sleep 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let state = locks.probe().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(state.db_held, "{state:?}");
    assert!(locks.probe().unwrap().closed());
}

#[test]
fn an_ofd_lock_on_any_wal_file_is_seen_and_never_taken() {
    for name in [OLD_SEGMENT, NEW_SEGMENT, "0.tmp"] {
        let (dir, locks) = layout();
        let held = ofd_lock(&wal(&dir, name));
        let state = locks.probe().unwrap();
        assert!(state.wal_held && !state.db_held, "{name}: {state:?}");
        drop(held);
        assert!(locks.probe().unwrap().closed(), "{name}");
        // GETLK only asks: the probe left no lock of its own behind.
        let again = ofd_lock(&wal(&dir, name));
        drop(again);
    }
}

#[test]
fn the_lock_kinds_are_not_confused() {
    let (dir, locks) = layout();
    // A flock on a WAL segment and an OFD lock on the db are not what etcd takes there:
    // a probe that asked the wrong kind would report them.
    let flocked_wal = Flock::lock(
        File::open(wal(&dir, NEW_SEGMENT)).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .unwrap();
    let ofd_db = ofd_lock(&dir.path().join("member/snap/db"));
    assert!(locks.probe().unwrap().closed());
    drop((flocked_wal, ofd_db));
}

#[test]
fn a_removed_tmp_file_holds_nothing_and_other_files_are_ignored() {
    let (dir, locks) = layout();
    std::fs::remove_file(wal(&dir, "0.tmp")).unwrap();
    std::fs::write(wal(&dir, "notes.txt"), b"x").unwrap();
    let unrelated = ofd_lock(&wal(&dir, "notes.txt"));
    assert!(locks.probe().unwrap().closed());
    drop(unrelated);
}

#[test]
fn a_wal_dir_elsewhere_is_probed_there() {
    let (dir, _) = layout();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join(NEW_SEGMENT), b"wal").unwrap();
    let locks = DataLocks::new(dir.path(), Some(elsewhere.path()));
    assert_eq!(locks.wal_dir(), elsewhere.path());
    let held = ofd_lock(&elsewhere.path().join(NEW_SEGMENT));
    assert!(locks.probe().unwrap().wal_held);
    // The member/wal lock is not the one that counts now.
    drop(held);
    let _ignored = ofd_lock(&wal(&dir, NEW_SEGMENT));
    assert!(locks.probe().unwrap().closed());
}

#[test]
fn a_data_dir_without_wal_or_db_cannot_be_told() {
    let (dir, locks) = layout();
    std::fs::remove_file(dir.path().join("member/snap/db")).unwrap();
    assert!(matches!(locks.probe(), Err(ProbeError::Io { .. })));

    let (dir, locks) = layout();
    for f in [OLD_SEGMENT, NEW_SEGMENT] {
        std::fs::remove_file(wal(&dir, f)).unwrap();
    }
    assert!(matches!(locks.probe(), Err(ProbeError::NoWal(_))));

    let empty = tempfile::tempdir().unwrap();
    assert!(DataLocks::new(empty.path(), None).probe().is_err());
}
