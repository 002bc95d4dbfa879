use super::*;

fn hash(hash: u32, compact_revision: i64) -> HashKv {
    HashKv {
        hash,
        compact_revision,
        ..HashKv::default()
    }
}

#[test]
fn equal_hashes_at_the_same_compaction_are_compared() {
    let (compared, note) = hash_verdict(&hash(7, 41), &hash(7, 41), 56).unwrap();
    assert!(compared);
    assert!(note.contains("56"), "{note}");
}

#[test]
fn different_hashes_at_the_same_compaction_are_a_finding() {
    assert_eq!(
        hash_verdict(&hash(7, 41), &hash(8, 41), 56).unwrap_err(),
        Finding::HashMismatch {
            revision: 56,
            running: 7,
            rehearsal: 8
        }
    );
}

#[test]
fn different_compactions_are_not_compared_and_say_so() {
    let (compared, note) = hash_verdict(&hash(7, 50), &hash(8, 41), 56).unwrap();
    assert!(!compared);
    assert!(note.starts_with("not compared"), "{note}");
}

#[test]
fn transfer_time_grows_with_the_db() {
    assert_eq!(transfer_timeout(0), Duration::from_secs(60));
    assert_eq!(transfer_timeout(2 << 30), Duration::from_secs(60 + 204));
}

#[test]
fn the_store_offers_the_running_versions_tool_first() {
    let state = tempfile::tempdir().unwrap();
    let store = VersionStore::new(state.path());
    let running = Version::new(3, 4, 23);
    let target = Version::new(3, 5, 30);
    let touch = |v: &Version, name: &str| {
        let dir = store.dir_of(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), b"").unwrap();
    };
    assert_eq!(
        Request::restore_tool_from_store(&store, &running, &target),
        None
    );
    touch(&target, "etcdutl");
    let tool = Request::restore_tool_from_store(&store, &running, &target).unwrap();
    assert_eq!(
        (tool.kind, tool.version.clone()),
        (ToolKind::Etcdutl, target.clone())
    );
    touch(&running, "etcdctl");
    let tool = Request::restore_tool_from_store(&store, &running, &target).unwrap();
    assert_eq!(tool.kind, ToolKind::Etcdctl34);
    assert_eq!(tool.path, store.dir_of(&running).join("etcdctl"));
}
