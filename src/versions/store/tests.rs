use super::*;

fn fake_etcd(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-etcd");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn probe_reads_version_and_refuses_liars_and_hangs() {
    let reaper = Reaper::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = fake_etcd(dir.path(), "echo 'etcd Version: 3.5.16'; echo 'Git SHA: x'");
    assert_eq!(
        probe_version(&reaper, &good, PROBE_TIMEOUT).await.unwrap(),
        Version::new(3, 5, 16)
    );
    let liar = fake_etcd(dir.path(), "echo 'etcdctl version: 3.5.16'");
    assert!(matches!(
        probe_version(&reaper, &liar, PROBE_TIMEOUT).await,
        Err(VersionsError::NotEtcd { .. })
    ));
    let hang = fake_etcd(dir.path(), "exec sleep 30");
    assert!(matches!(
        probe_version(&reaper, &hang, Duration::from_millis(300)).await,
        Err(VersionsError::ProbeTimeout { .. })
    ));
    assert!(matches!(
        probe_version(&reaper, &dir.path().join("nope"), PROBE_TIMEOUT).await,
        Err(VersionsError::Missing(_))
    ));
}

#[test]
fn install_pins_and_current_switches_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let src = fake_etcd(dir.path(), "echo 'etcd Version: 3.4.23'");
    let sum = crate::digest::sha256_of(&src).unwrap();
    let store = VersionStore::new(&dir.path().join("state"));
    assert_eq!(store.current().unwrap(), None);
    let v = Version::new(3, 4, 23);
    let pinned = store.install(&src, &v, &sum).unwrap();
    store.set_current(&v).unwrap();
    assert_eq!(store.current().unwrap(), Some(pinned.clone()));
    store.verify(&pinned).unwrap();
    // Installing the same bytes again is a no-op; other bytes under the same version are not.
    store.install(&src, &v, &sum).unwrap();
    assert!(matches!(
        store.install(&src, &v, "00"),
        Err(VersionsError::Tampered { .. })
    ));
    // A pinned binary changed after install is caught before it runs.
    fs::write(&pinned.binary, "#!/bin/sh\necho evil\n").unwrap();
    assert!(matches!(
        store.verify(&pinned),
        Err(VersionsError::Tampered { .. })
    ));
    // No temp directories are left behind.
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("state/versions"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["3.4.23"]);
}

fn add_bytes(pending: &mut PendingInstall, name: &str, bytes: &[u8]) -> String {
    let sum = crate::digest::sha256_hex(bytes);
    pending
        .add(name, &mut &bytes[..], Path::new(name), &sum)
        .unwrap();
    sum
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn pending_install_commits_once_and_compares_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let store = VersionStore::new(dir.path());
    let v = Version::new(3, 5, 16);

    let mut first = store.begin_install().unwrap();
    assert_eq!(
        fs::metadata(first.dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let sum = add_bytes(&mut first, "etcd", b"server");
    let done = first.commit(&v).unwrap();
    assert!(!done.already_pinned);
    assert_eq!(done.sha256, sum);
    assert_eq!(done.pinned.binary, store.dir_of(&v).join("etcd"));
    store.verify(&done.pinned).unwrap();
    assert_eq!(
        fs::read_to_string(store.dir_of(&v).join("etcd.sha256")).unwrap(),
        format!("{sum}  etcd\n")
    );

    // Same bytes again, plus a companion the pinned version lacks: no-op plus the addition.
    let mut again = store.begin_install().unwrap();
    add_bytes(&mut again, "etcd", b"server");
    add_bytes(&mut again, "etcdctl", b"client");
    let done = again.commit(&v).unwrap();
    assert!(done.already_pinned);
    assert_eq!(done.added, ["etcdctl"]);
    assert_eq!(
        entries(&store.dir_of(&v)),
        ["etcd", "etcd.sha256", "etcdctl", "etcdctl.sha256"]
    );

    // Other bytes under the same version are refused and change nothing.
    let mut other = store.begin_install().unwrap();
    add_bytes(&mut other, "etcd", b"server");
    add_bytes(&mut other, "etcdctl", b"another client");
    let err = other.commit(&v).unwrap_err();
    assert!(
        matches!(&err, VersionsError::PinnedDifferent { file, .. } if file == "etcdctl"),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("3.5.16 is already pinned with different contents"));
    assert_eq!(
        fs::read(store.dir_of(&v).join("etcdctl")).unwrap(),
        b"client"
    );

    // Dropped without commit: the temp dir goes away.
    let mut abandoned = store.begin_install().unwrap();
    add_bytes(&mut abandoned, "etcd", b"whatever");
    drop(abandoned);
    assert_eq!(entries(&dir.path().join("versions")), ["3.5.16"]);
}

#[test]
fn pending_install_checks_the_copy_and_needs_an_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let store = VersionStore::new(dir.path());
    let mut pending = store.begin_install().unwrap();
    let err = pending
        .add(
            "etcd",
            &mut &b"changed"[..],
            Path::new("/staged/etcd"),
            "00",
        )
        .unwrap_err();
    assert!(
        matches!(err, VersionsError::Tampered { ref path, .. } if path == Path::new("/staged/etcd"))
    );
    assert!(pending
        .add("../x", &mut &b""[..], Path::new("x"), "00")
        .is_err());
    let mut only_ctl = store.begin_install().unwrap();
    add_bytes(&mut only_ctl, "etcdctl", b"client");
    assert!(matches!(
        only_ctl.commit(&Version::new(3, 5, 16)),
        Err(VersionsError::Missing(_))
    ));
    drop(pending);
    assert!(entries(&dir.path().join("versions")).is_empty());
}
