//! Bad input to `run`: each gives one clear line, the documented exit code, and leaves no
//! half-created state behind.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{self, Cluster, Mode, Release, SUPERVISOR};

fn run_supervisor(args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg(SUPERVISOR).args(args);
    cmd.output().expect("run supervisor")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

fn no_versions(state: &Path) {
    let installed = std::fs::read_dir(state.join("versions"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(installed, 0, "a version was installed despite the error");
    assert!(
        !state.join("current").exists(),
        "current was created despite the error"
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    let out = run_supervisor(&["run", "--no-such-option"]);
    assert_fails(&out, 2, "--no-such-option");
}

#[test]
fn missing_binary_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let out = run_supervisor(&[
        "run",
        "--state-dir",
        s,
        "--etcd-binary",
        "/nonexistent/etcd",
    ]);
    assert_fails(&out, 2, "/nonexistent/etcd does not exist");
    no_versions(&state);
}

#[test]
fn nothing_installed_and_no_binary_says_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    let out = run_supervisor(&["run", "--state-dir", s.to_str().unwrap()]);
    assert_fails(&out, 2, "pass --etcd-binary PATH");
}

#[test]
fn non_executable_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("etcd");
    std::fs::write(&bin, "not a program").unwrap();
    let state = dir.path().join("state");
    let out = run_supervisor(&[
        "run",
        "--state-dir",
        state.to_str().unwrap(),
        "--etcd-binary",
        bin.to_str().unwrap(),
    ]);
    assert_fails(&out, 2, "is not an executable file");
    no_versions(&state);
}

#[test]
fn binary_that_is_not_etcd_is_refused_and_never_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("etcd");
    support::write_script(&bin, "#!/bin/sh\necho 'etcdctl version: 3.5.16'\n");
    let state = dir.path().join("state");
    let out = run_supervisor(&[
        "run",
        "--state-dir",
        state.to_str().unwrap(),
        "--etcd-binary",
        bin.to_str().unwrap(),
    ]);
    assert_fails(&out, 2, "is not an etcd server binary");
    no_versions(&state);
}

#[test]
fn unwritable_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory is needed: unwritable even for root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let state = blocker.join("state");
    let out = run_supervisor(&[
        "run",
        "--state-dir",
        state.to_str().unwrap(),
        "--etcd-binary",
        Release::V3_5.etcd().to_str().unwrap(),
    ]);
    assert_fails(&out, 2, "is not writable");
}

#[test]
fn relative_state_dir_is_a_usage_error() {
    let out = run_supervisor(&["run", "--state-dir", "relative/dir"]);
    assert_fails(&out, 2, "must be an absolute path");
}

#[test]
fn data_dir_locked_by_another_etcd_is_refused() {
    // A bare etcd holds the data dir; a supervisor pointed at the same dir must not start a second.
    let mut cluster = Cluster::start(Release::V3_5, 1);
    let mut intruder = Cluster::new(
        Release::V3_5,
        1,
        Mode::Supervised(vec!["--stop-timeout".into(), "1s".into()]),
    );
    intruder.member(0).spec.data_dir = cluster.member(0).spec.data_dir.clone();
    let cmd = intruder.member(0).command();
    let out = Command::new("timeout")
        .arg("60")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap();
    assert_fails(&out, 1, "is in use by another etcd process");
    // The original member is untouched.
    cluster.member(0).wait_healthy();
    let pid = cluster.member(0).proc().pid();
    assert!(!support::process_gone(pid.as_raw()));
}

#[test]
fn etcd_that_fails_at_startup_fails_the_supervisor_with_its_code() {
    // A bad etcd flag: etcd exits 2 at once; restarting it forever would hide the mistake.
    let mut cluster = Cluster::new(Release::V3_5, 1, Mode::Supervised(vec![]));
    let m = cluster.member(0);
    let mut cmd = m.command();
    cmd.arg("--no-such-etcd-flag");
    let out = Command::new("timeout")
        .arg("60")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .unwrap();
    assert_fails(&out, 2, "exited before it ever became healthy");
}

#[test]
fn a_cold_copy_with_the_wal_outside_the_data_dir_is_refused_before_etcd_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let data = dir.path().join("m1.etcd");
    let wal = dir.path().join("wal");
    let out = run_supervisor(&[
        "run",
        "--state-dir",
        state.to_str().unwrap(),
        "--etcd-binary",
        Release::V3_5.etcd().to_str().unwrap(),
        "--backup",
        "both",
        "--",
        "--name=m1",
        &format!("--data-dir={}", data.display()),
        &format!("--wal-dir={}", wal.display()),
    ]);
    assert_fails(&out, 2, "such a copy could not be restored");
    assert!(
        stderr(&out).contains("--backup snapshot"),
        "{}",
        stderr(&out)
    );
    no_versions(&state);
    assert!(!data.exists(), "etcd was started");
}
