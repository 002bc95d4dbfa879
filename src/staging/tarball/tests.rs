use super::*;
use crate::staging::parse_tarball_name;
use crate::versions::Version;

const TOP: &str = "etcd-v3.5.30-linux-amd64";

fn check(path: &str, kind: EntryType) -> Result<EntryUse, ArchiveProblem> {
    check_entry(TOP, path.as_bytes(), kind, 10, None)
}

#[test]
fn names_as_upstream_spells_them() {
    let t = parse_tarball_name("etcd-v3.5.30-linux-amd64.tar.gz").unwrap();
    assert_eq!(t.version, Version::new(3, 5, 30));
    assert_eq!(t.top, TOP);
    let rc = parse_tarball_name("etcd-v3.6.0-rc.1-linux-arm64.tar.gz").unwrap();
    assert_eq!(rc.version.pre.as_deref(), Some("rc.1"));
    for other in [
        "etcd-v3.5.30-linux-amd64.zip",
        "etcd-v3.5.30-darwin-amd64.tar.gz",
        "etcd-3.5.30-linux-amd64.tar.gz",
        "etcd-vX-linux-amd64.tar.gz",
        "etcd-v3.5.30-linux-.tar.gz",
        "etcd-v3.5.30-linux-AMD64.tar.gz",
        "etcd.tar.gz",
    ] {
        assert_eq!(parse_tarball_name(other), None, "{other}");
    }
}

#[test]
fn our_members_are_extracted_and_the_rest_skipped() {
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        assert_eq!(
            check(&format!("{TOP}/{tool}"), EntryType::Regular),
            Ok(EntryUse::Extract(tool))
        );
        assert_eq!(
            check(&format!("./{TOP}/{tool}"), EntryType::Regular),
            Ok(EntryUse::Extract(tool))
        );
    }
    for skip in [
        format!("{TOP}/"),
        format!("{TOP}/README.md"),
        format!("{TOP}/Documentation/etcd"),
        "etcd".to_owned(),
        format!("other/{TOP}/etcd"),
        format!("{TOP}/etcd.bak"),
    ] {
        assert_eq!(
            check(&skip, EntryType::Regular),
            Ok(EntryUse::Skip),
            "{skip}"
        );
    }
    assert_eq!(check(TOP, EntryType::Directory), Ok(EntryUse::Skip));
    assert_eq!(
        check(&format!("{TOP}/etcd"), EntryType::Directory),
        Ok(EntryUse::Skip)
    );
}

#[test]
fn traversal_is_refused_wherever_it_is() {
    for bad in [
        "../etcd",
        "/etc/passwd",
        "etcd-v3.5.30-linux-amd64/../../x",
        "a/b/../../../c",
    ] {
        for kind in [EntryType::Regular, EntryType::Directory, EntryType::Symlink] {
            let r = check(bad, kind);
            assert!(
                matches!(&r, Err(ArchiveProblem::Traversal { entry }) if entry == bad),
                "{bad} {kind:?}: {r:?}"
            );
        }
    }
}

#[test]
fn every_link_is_refused_with_its_target() {
    let r = check_entry(
        TOP,
        format!("{TOP}/etcd").as_bytes(),
        EntryType::Symlink,
        0,
        Some(b"/bin/sh"),
    );
    assert_eq!(
        r,
        Err(ArchiveProblem::Link {
            entry: format!("{TOP}/etcd"),
            kind: "symlink",
            target: "/bin/sh".into()
        })
    );
    let r = check_entry(TOP, b"docs/x", EntryType::Link, 0, Some(b"README"));
    assert!(
        matches!(
            r,
            Err(ArchiveProblem::Link {
                kind: "hard link",
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(r.unwrap_err().rule(), "archive-link");
}

#[test]
fn special_files_are_refused() {
    for (kind, name) in [
        (EntryType::Char, "device file"),
        (EntryType::Block, "device file"),
        (EntryType::Fifo, "fifo"),
        (EntryType::GNUSparse, "sparse file"),
        (EntryType::new(b'Z'), "special entry"),
    ] {
        assert_eq!(
            check(&format!("{TOP}/etcd"), kind),
            Err(ArchiveProblem::Special {
                entry: format!("{TOP}/etcd"),
                kind: name
            })
        );
    }
}

#[test]
fn entry_size_limit() {
    let path = format!("{TOP}/README.md");
    assert_eq!(
        check_entry(TOP, path.as_bytes(), EntryType::Regular, MAX_ENTRY, None),
        Ok(EntryUse::Skip)
    );
    let r = check_entry(
        TOP,
        path.as_bytes(),
        EntryType::Regular,
        MAX_ENTRY + 1,
        None,
    );
    assert_eq!(r.as_ref().unwrap_err().rule(), "archive-entry-too-large");
}

/// A gzip'd tar of `(path, bytes)` regular files, built with tar's own builder.
fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, path, *bytes).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn extraction_writes_only_our_members() {
    let scratch = tempfile::tempdir().unwrap();
    let bytes = targz(&[
        (&format!("{TOP}/README.md"), b"hello"),
        (&format!("{TOP}/etcd"), b"server"),
        (&format!("{TOP}/etcdctl"), b"client"),
    ]);
    let out = extract(&bytes[..], TOP, scratch.path(), Limits::RELEASE)
        .unwrap()
        .unwrap();
    let tools: Vec<_> = out.iter().map(|x| x.tool).collect();
    assert_eq!(tools, ["etcd", "etcdctl"]);
    assert_eq!(fs::read(scratch.path().join("etcd")).unwrap(), b"server");
    assert_eq!(out[0].sha256, hex::encode(Sha256::digest(b"server")));
    let mut names: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["etcd", "etcdctl"]);
}

#[test]
fn extraction_refuses_duplicates_missing_etcd_and_cut_archives() {
    let etcd = format!("{TOP}/etcd");
    let dup = targz(&[(&etcd, b"one"), (&etcd, b"two")]);
    let s = tempfile::tempdir().unwrap();
    assert_eq!(
        extract(&dup[..], TOP, s.path(), Limits::RELEASE)
            .unwrap()
            .unwrap_err()
            .rule(),
        "archive-duplicate"
    );
    let none = targz(&[(&format!("{TOP}/etcdctl"), b"client")]);
    let s = tempfile::tempdir().unwrap();
    assert_eq!(
        extract(&none[..], TOP, s.path(), Limits::RELEASE)
            .unwrap()
            .unwrap_err(),
        ArchiveProblem::NoEtcd { top: TOP.into() }
    );
    let big = vec![7u8; 200_000];
    let whole = targz(&[(&etcd, &big)]);
    for cut in [whole.len() - 4, whole.len() / 2, 20, 5] {
        let s = tempfile::tempdir().unwrap();
        let r = extract(&whole[..cut], TOP, s.path(), Limits::RELEASE).unwrap();
        assert_eq!(r.unwrap_err().rule(), "archive-corrupt", "cut at {cut}");
    }
    let s = tempfile::tempdir().unwrap();
    assert_eq!(
        extract(&b"not a gzip"[..], TOP, s.path(), Limits::RELEASE)
            .unwrap()
            .unwrap_err()
            .rule(),
        "archive-corrupt"
    );
}

#[test]
fn limits_stop_big_and_crowded_archives() {
    let small = Limits {
        total: 1000,
        entries: 3,
        stream: 8192,
    };
    let etcd = format!("{TOP}/etcd");
    let run = |bytes: &[u8]| {
        let s = tempfile::tempdir().unwrap();
        extract(bytes, TOP, s.path(), small).unwrap()
    };
    assert!(run(&targz(&[(&etcd, &[1u8; 600][..])])).is_ok());
    let docs = format!("{TOP}/docs.md");
    assert_eq!(
        run(&targz(&[
            (&etcd, &[1u8; 600][..]),
            (&docs, &[2u8; 600][..])
        ]))
        .unwrap_err(),
        ArchiveProblem::TooLarge { limit: 1000 }
    );
    let names: Vec<String> = (0..4).map(|i| format!("{TOP}/doc{i}")).collect();
    let crowd: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    assert_eq!(
        run(&targz(&crowd)).unwrap_err(),
        ArchiveProblem::TooManyEntries { limit: 3 }
    );
    // A GNU long name is read whole by tar before its entry is ours to check: the cap on
    // the decompressed stream stops it.
    let long = format!("{TOP}/{}", "a/".repeat(10_000));
    assert_eq!(
        run(&targz(&[(&format!("{long}x"), &b"x"[..])])).unwrap_err(),
        ArchiveProblem::TooLarge { limit: 1000 }
    );
}
