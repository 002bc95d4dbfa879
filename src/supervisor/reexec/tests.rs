//! Unit tests of the reload: how the binary is found and called again, and what a failing
//! check reports.

use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn the_path_started_from_is_kept_links_and_all() {
    let exe = Some(PathBuf::from("/usr/bin/etcd-supervisor"));
    let cwd = Some(Path::new("/srv"));
    let abs = Relaunch::from_parts(os(&["/usr/local/bin/sup", "run"]), cwd, exe.clone()).unwrap();
    assert_eq!(abs.exe(), Path::new("/usr/local/bin/sup"));
    let rel = Relaunch::from_parts(os(&["./bin/sup", "run"]), cwd, exe.clone()).unwrap();
    assert_eq!(rel.exe(), Path::new("/srv/bin/sup"));
    let bare = Relaunch::from_parts(os(&["etcd-supervisor", "run"]), cwd, exe).unwrap();
    assert_eq!(bare.exe(), Path::new("/usr/bin/etcd-supervisor"));
    assert!(Relaunch::from_parts(Vec::new(), cwd, None).is_none());
}

#[test]
fn the_flag_goes_after_run_and_a_previous_handover_is_dropped() {
    let r = Relaunch::from_parts(
        os(&[
            "/usr/bin/etcd-supervisor",
            "--log-format",
            "json",
            "run",
            "--handover",
            "/old",
            "--handover=/older",
            "--state-dir",
            "/s",
            "--",
            "--handover",
            "etcd-keeps-this",
        ]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        r.argv_with("--handover-check", Path::new("/s/handover.json")),
        os(&[
            "/usr/bin/etcd-supervisor",
            "--log-format",
            "json",
            "run",
            "--handover-check",
            "/s/handover.json",
            "--state-dir",
            "/s",
            "--",
            "--handover",
            "etcd-keeps-this",
        ])
    );
}

#[tokio::test]
async fn a_failing_check_says_why_in_the_binarys_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("sup");
    std::fs::write(
        &bad,
        "#!/bin/sh\necho \"error: unexpected argument '$2'\" >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = Relaunch::from_parts(os(&[bad.to_str().unwrap(), "run"]), None, None).unwrap();
    let argv = r.argv_with("--handover-check", Path::new("/x"));
    let why = check(Reaper::start().unwrap(), r.exe().to_path_buf(), argv)
        .await
        .unwrap_err();
    assert!(why.contains("exit code 2"), "{why}");
    assert!(
        why.contains("unexpected argument '--handover-check'"),
        "{why}"
    );
}
