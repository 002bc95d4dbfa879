use super::*;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn listing(files: &[(&str, Option<&str>)]) -> Listing {
    let mut l = Listing::default();
    for (name, text) in files {
        l.files.insert(name.to_string());
        if let Some(text) = text {
            l.checksum_texts.insert(name.to_string(), text.to_string());
        }
    }
    l
}

fn ready_names(p: &Plan) -> Vec<(String, Vec<String>)> {
    p.ready
        .iter()
        .map(|b| {
            (
                b.binary.name.clone(),
                b.companions.iter().map(|c| c.name.clone()).collect(),
            )
        })
        .collect()
}

#[test]
fn parses_every_checksum_format() {
    let upper = A.to_ascii_uppercase();
    for (line, name) in [
        (format!("{A}  etcd"), Some("etcd")),
        (format!("{A} *etcd"), Some("etcd")),
        (format!("{A} etcd"), Some("etcd")),
        (format!("{A}\tetcd"), Some("etcd")),
        (format!("{A}  ./bin/etcd\r\n"), Some("etcd")),
        (A.to_string(), None),
        (format!("  {upper}  "), None),
        (format!("SHA256 (etcd) = {A}"), Some("etcd")),
    ] {
        let parsed = parse_checksum_line(&line).unwrap_or_else(|| panic!("{line:?}"));
        assert_eq!(parsed.sha256, A, "{line:?}");
        assert_eq!(parsed.name.as_deref(), name, "{line:?}");
    }
    for bad in [
        "",
        "abc  etcd",
        &A[..63],
        &format!("{A}0  etcd"),
        "MD5 (x) = 00",
    ] {
        assert_eq!(parse_checksum_line(bad), None, "{bad:?}");
    }
}

#[test]
fn own_checksum_file_must_be_for_its_file() {
    assert_eq!(
        expected_from_own(&format!("{A}  etcd\n"), "etcd"),
        Ok(Some(A.into()))
    );
    assert_eq!(expected_from_own(A, "etcd"), Ok(Some(A.into())));
    assert_eq!(expected_from_own("", "etcd"), Ok(None));
    assert_eq!(expected_from_own("\n  \n", "etcd"), Ok(None));
    // A multi-line file is fine when it has a line for the file.
    let multi = format!("# sums\n{B}  etcdctl\n{A}  etcd\n");
    assert_eq!(expected_from_own(&multi, "etcd"), Ok(Some(A.into())));
    assert!(expected_from_own(&format!("{A}  etcd-3.5.15"), "etcd")
        .unwrap_err()
        .contains("etcd-3.5.15, not etcd"));
    assert!(expected_from_own("deadbeef  etcd", "etcd")
        .unwrap_err()
        .contains("line 1"));
}

#[test]
fn sums_file_lines_are_looked_up_by_name() {
    let text = format!("{A}  etcd\n{B} *etcdctl\nnot a line\n");
    assert_eq!(expected_from_sums(&text, "etcd"), Ok(Some(A.into())));
    assert_eq!(expected_from_sums(&text, "etcdctl"), Ok(Some(B.into())));
    assert_eq!(expected_from_sums(&text, "etcdutl"), Ok(None));
    let twice = format!("{A}  etcd\n{B}  etcd\n");
    assert!(expected_from_sums(&twice, "etcd").is_err());
    assert_eq!(
        names_in_sums(&text).into_iter().collect::<Vec<_>>(),
        ["etcd", "etcdctl"]
    );
}

#[test]
fn a_file_is_ready_only_with_its_checksum() {
    let own = format!("{A}  etcd");
    let p = plan(&listing(&[("etcd", None), ("etcd.sha256", Some(&own))]));
    assert_eq!(ready_names(&p), [("etcd".to_string(), vec![])]);
    assert_eq!(
        p.ready[0].binary.checksum,
        Ok(Expected {
            sha256: A.into(),
            checksum_file: "etcd.sha256".into()
        })
    );
    assert!(p.waiting.is_empty() && p.ignored.is_empty());

    let p = plan(&listing(&[("etcd-3.5.16", None)]));
    assert!(p.ready.is_empty());
    assert_eq!(p.waiting, [("etcd-3.5.16".to_string(), Waiting::Checksum)]);

    // An empty checksum file is still being written.
    let p = plan(&listing(&[("etcd", None), ("etcd.sha256", Some(""))]));
    assert_eq!(p.waiting, [("etcd".to_string(), Waiting::Checksum)]);

    // A checksum file without its file: nothing to do yet, nothing to say.
    let p = plan(&listing(&[("etcd.sha256", Some(&own))]));
    assert_eq!(p, Plan::default());
}

#[test]
fn malformed_or_unreadable_checksums_make_a_drop_ready_to_refuse() {
    let p = plan(&listing(&[
        ("etcd", None),
        ("etcd.sha256", Some("nonsense")),
    ]));
    assert!(p.ready[0]
        .binary
        .checksum
        .as_ref()
        .unwrap_err()
        .contains("etcd.sha256"));
    // In `files` without text: a symlink or fifo named like a checksum file.
    let p = plan(&listing(&[("etcd", None), ("etcd.sha256", None)]));
    assert!(p.ready[0]
        .binary
        .checksum
        .as_ref()
        .unwrap_err()
        .contains("not a readable regular file"));
}

#[test]
fn sums_file_makes_files_ready_and_own_file_wins() {
    let sums = format!("{A}  etcd\n{B}  etcdctl\n");
    let p = plan(&listing(&[
        ("etcd", None),
        ("etcdctl", None),
        ("SHA256SUMS", Some(&sums)),
    ]));
    assert_eq!(
        ready_names(&p),
        [("etcd".to_string(), vec!["etcdctl".to_string()])]
    );
    assert_eq!(
        p.ready[0].companions[0]
            .checksum
            .as_ref()
            .unwrap()
            .checksum_file,
        "SHA256SUMS"
    );
    let own = format!("{B}  etcd");
    let p = plan(&listing(&[
        ("etcd", None),
        ("etcd.sha256", Some(&own)),
        ("SHA256SUMS", Some(&sums)),
    ]));
    assert_eq!(p.ready[0].binary.checksum.as_ref().unwrap().sha256, B);
}

#[test]
fn companions_go_with_the_binary_of_the_same_suffix() {
    let s = |n: &str| format!("{A}  {n}");
    let (a, b, c, d) = (
        s("etcd-3.5.16"),
        s("etcdctl-3.5.16"),
        s("etcdutl-3.5.16"),
        s("etcdctl"),
    );
    let p = plan(&listing(&[
        ("etcd-3.5.16", None),
        ("etcd-3.5.16.sha256", Some(&a)),
        ("etcdctl-3.5.16", None),
        ("etcdctl-3.5.16.sha256", Some(&b)),
        ("etcdutl-3.5.16", None),
        ("etcdutl-3.5.16.sha256", Some(&c)),
        ("etcdctl", None),
        ("etcdctl.sha256", Some(&d)),
    ]));
    assert_eq!(
        ready_names(&p),
        [(
            "etcd-3.5.16".to_string(),
            vec!["etcdctl-3.5.16".to_string(), "etcdutl-3.5.16".to_string()]
        )]
    );
    assert_eq!(p.ready[0].companions[1].tool, "etcdutl");
    assert_eq!(
        p.waiting,
        [("etcdctl".to_string(), Waiting::Binary("etcd".into()))]
    );

    // A companion still being written holds its binary back.
    let p = plan(&listing(&[
        ("etcd-3.5.16", None),
        ("etcd-3.5.16.sha256", Some(&a)),
        ("etcdctl-3.5.16", None),
    ]));
    assert!(p.ready.is_empty());
    assert_eq!(
        p.waiting,
        [
            (
                "etcd-3.5.16".to_string(),
                Waiting::Companion("etcdctl-3.5.16".into())
            ),
            ("etcdctl-3.5.16".to_string(), Waiting::Checksum),
        ]
    );
}

#[test]
fn other_names_are_ignored_and_ours_are_quiet() {
    let p = plan(&listing(&[
        ("README", None),
        ("etcd-3.5.16.tgz", None),
        (".stage-XYZ", None),
        ("etcd.part", None),
        ("etcd.reason", None),
        ("etcd.sha256.tmp", None),
    ]));
    assert!(p.ready.is_empty() && p.waiting.is_empty());
    assert_eq!(
        p.ignored,
        [
            ("README".to_string(), Ignored::NotEtcd),
            ("etcd-3.5.16.tgz".to_string(), Ignored::Archive),
        ]
    );
}

#[test]
fn release_tarball_is_a_drop_ready_with_its_sums_line() {
    let t = "etcd-v3.5.30-linux-amd64.tar.gz";
    let p = plan(&listing(&[(t, None)]));
    assert_eq!(p.waiting, [(t.to_string(), Waiting::Checksum)]);
    assert!(p.ready.is_empty() && p.ignored.is_empty());
    let a = "a".repeat(64);
    let sums = format!(
        "{}  etcd-v3.5.30-darwin-amd64.zip\n{a}  {t}\n",
        "b".repeat(64)
    );
    let p = plan(&listing(&[(t, None), ("SHA256SUMS", Some(&sums))]));
    assert!(p.waiting.is_empty() && p.ignored.is_empty(), "{p:?}");
    assert_eq!(p.ready.len(), 1);
    let drop = &p.ready[0];
    assert_eq!(drop.binary.name, t);
    assert!(drop.companions.is_empty());
    assert_eq!(
        drop.binary.checksum,
        Ok(Expected {
            sha256: a,
            checksum_file: "SHA256SUMS".into()
        })
    );
}

/// What acceptance leaves beside a staged binary (its `.accepted` note, its copy of the
/// sums file) is ours: never taken for a new etcd binary waiting for its checksum.
#[test]
fn acceptance_leftovers_are_quiet_not_binaries() {
    let p = plan(&listing(&[
        ("etcd-v3.5.16.accepted", None),
        ("etcd-v3.5.16.SHA256SUMS", None),
    ]));
    assert_eq!(p, Plan::default());
}

/// A `SHA256SUMS` that repeats a line (same name, same sum) is no conflict; two sums are.
#[test]
fn a_repeated_sums_line_with_the_same_sum_is_no_conflict() {
    let same = format!("{A}  etcd\n{A}  etcd\n");
    assert_eq!(expected_from_sums(&same, "etcd"), Ok(Some(A.to_string())));
    let different = format!("{A}  etcd\n{B}  etcd\n");
    assert!(expected_from_sums(&different, "etcd").is_err());
}

/// A ready drop's files are its server binary first, then its companions.
#[test]
fn a_bundles_files_are_the_binary_then_its_companions() {
    let sums = format!("{A}  etcd\n{B}  etcdctl\n");
    let p = plan(&listing(&[
        ("etcd", None),
        ("etcdctl", None),
        (SUMS_FILE, Some(sums.as_str())),
    ]));
    let names: Vec<&str> = p.ready[0].files().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["etcd", "etcdctl"]);
}

/// Why a file waits or is left alone is logged for the operator: each reason says what to do.
#[test]
fn waiting_and_ignored_reasons_say_what_is_missing() {
    assert!(Waiting::Checksum.to_string().contains("NAME.sha256"));
    assert!(Waiting::Companion("etcdctl".into())
        .to_string()
        .contains("checksum of etcdctl"));
    assert!(Waiting::Binary("etcd".into())
        .to_string()
        .contains("waiting for etcd"));
    assert!(Ignored::NotEtcd.to_string().contains("left alone"));
    assert!(Ignored::Archive
        .to_string()
        .contains("extract the etcd binary"));
}
