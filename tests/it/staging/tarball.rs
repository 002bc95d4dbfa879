//! Upstream release tarballs (`etcd-vX.Y.Z-linux-amd64.tar.gz` with a `SHA256SUMS` line):
//! a good one is pinned with its companions and rolls a supervised member; a traversal
//! entry, a symlink `etcd`, a bad checksum, a cut archive and a name that lies about the
//! version are each refused with their own reason. Tarballs are built here with the tar
//! crate, from the real etcd binaries in `.cache/etcd`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tar::{EntryType, Header};

use super::{read, sha256, Fixture};
use crate::rollout::{server_version, wait_all_on, FAST};
use crate::support::{Cluster, Release};

const GOOD: &str = "etcd-v3.5.30-linux-amd64";

/// One entry of a test tarball.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    /// A path written into the header as is (tar's builder refuses `..`).
    RawPath(&'a str, &'a [u8]),
}

fn targz(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut b = tar::Builder::new(gz);
    for entry in entries {
        let mut h = Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        match entry {
            Entry::File(path, bytes) => {
                h.set_size(bytes.len() as u64);
                h.set_entry_type(EntryType::Regular);
                b.append_data(&mut h, path, *bytes).unwrap();
            }
            Entry::Dir(path) => {
                h.set_size(0);
                h.set_entry_type(EntryType::Directory);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
            Entry::Symlink(path, target) => {
                h.set_size(0);
                h.set_entry_type(EntryType::Symlink);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::RawPath(path, bytes) => {
                h.set_size(bytes.len() as u64);
                h.set_entry_type(EntryType::Regular);
                let name = &mut h.as_gnu_mut().unwrap().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, *bytes).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Upstream's layout: the top dir, docs, and etcd/etcdctl/etcdutl of `release`.
fn release_tarball(top: &str, release: Release) -> Vec<u8> {
    let etcd = read(&release.etcd());
    let ctl = read(&release.etcdctl());
    let utl = read(&release.etcdutl().expect("3.5 has etcdutl"));
    let (readme, docs, doc) = (
        format!("{top}/README.md"),
        format!("{top}/Documentation/"),
        format!("{top}/Documentation/dev-guide.md"),
    );
    let (e, c, u) = (
        format!("{top}/etcd"),
        format!("{top}/etcdctl"),
        format!("{top}/etcdutl"),
    );
    targz(&[
        Entry::Dir(&format!("{top}/")),
        Entry::File(&readme, b"# etcd\n"),
        Entry::Dir(&docs),
        Entry::File(&doc, b"docs\n"),
        Entry::File(&c, &ctl),
        Entry::File(&e, &etcd),
        Entry::File(&u, &utl),
    ])
}

/// Drops `bytes` as `NAME.tar.gz` into `staging`, then upstream's `SHA256SUMS` (other
/// platforms' lines too) with `sum` for it, last and by rename.
fn drop_tarball(staging: &Path, name: &str, bytes: &[u8], sum: &str) {
    let file = format!("{name}.tar.gz");
    fs::write(staging.join(&file), bytes).unwrap();
    let sums = format!(
        "{}  etcd-v3.5.30-darwin-amd64.zip\n{sum}  {file}\n{}  etcd-v3.5.30-linux-arm64.tar.gz\n",
        "1".repeat(64),
        "2".repeat(64)
    );
    let tmp = staging.join(".SHA256SUMS.tmp");
    fs::write(&tmp, sums).unwrap();
    fs::rename(&tmp, staging.join("SHA256SUMS")).unwrap();
}

impl Fixture {
    /// Drops a tarball with its correct sum, waits for its refusal, checks the common
    /// promises, and returns the reason.
    async fn refused_tarball(&self, name: &str, bytes: &[u8], needle: &str) -> String {
        drop_tarball(&self.staging, name, bytes, &sha256(bytes));
        let file = format!("{name}.tar.gz");
        let reason = self.assert_refused(&file, needle).await;
        assert!(
            self.staging
                .join(format!("rejected/{file}.SHA256SUMS"))
                .exists(),
            "the sums file went along: {:?}",
            self.listing(&self.staging.join("rejected"))
        );
        assert!(self.versions().is_empty(), "{:?}", self.versions());
        reason
    }
}

#[tokio::test]
async fn good_tarball_is_pinned_with_its_companions() {
    let mut fx = Fixture::new();
    let bytes = release_tarball(GOOD, Release::V3_5Newest);
    fx.start();
    drop_tarball(&fx.staging, GOOD, &bytes, &sha256(&bytes));
    let c = fx.candidate().await;
    assert_eq!(c.version.to_string(), "3.5.30");
    assert_eq!(c.companions, ["etcdctl", "etcdutl"]);
    assert_eq!(c.staged_name, format!("{GOOD}.tar.gz"));
    assert_eq!(
        fx.listing(&c.dir),
        [
            "etcd",
            "etcd.sha256",
            "etcdctl",
            "etcdctl.sha256",
            "etcdutl",
            "etcdutl.sha256"
        ]
    );
    assert_eq!(read(&c.dir.join("etcd")), read(&Release::V3_5Newest.etcd()));
    assert_eq!(
        read(&c.dir.join("etcdutl")),
        read(&Release::V3_5Newest.etcdutl().unwrap())
    );
    let note = fx.accepted(&format!("{GOOD}.tar.gz")).await;
    assert!(
        note.contains("(etcd, etcdctl, etcdutl) pinned as"),
        "{note}"
    );
    // No scratch or install dir left, and the docs were never written anywhere.
    assert_eq!(fx.versions(), ["3.5.30"]);
    assert_eq!(fx.listing(&fx.staging), ["accepted"]);
}

#[tokio::test]
async fn traversal_entry_is_refused_and_nothing_lands_outside() {
    let mut fx = Fixture::new();
    fx.start();
    let etcd = format!("{GOOD}/etcd");
    let bytes = targz(&[
        Entry::File(&etcd, b"#!/bin/sh\n"),
        Entry::RawPath("../../../escaped", b"gotcha\n"),
    ]);
    let reason = fx
        .refused_tarball(GOOD, &bytes, "points outside the archive's directory")
        .await;
    assert!(reason.contains("\"../../../escaped\""), "{reason}");
    let root = fx.staging.parent().unwrap();
    for dir in [root, &fx.state, &fx.state.join("versions"), &fx.staging] {
        assert!(
            !dir.join("escaped").exists(),
            "written into {}",
            dir.display()
        );
    }
    fx.assert_never_ran();
}

#[tokio::test]
async fn symlink_etcd_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let bytes = targz(&[
        Entry::Dir(&format!("{GOOD}/")),
        Entry::Symlink(&format!("{GOOD}/etcd"), "/bin/sh"),
    ]);
    let reason = fx
        .refused_tarball(GOOD, &bytes, "is a symlink to \"/bin/sh\"")
        .await;
    assert!(reason.contains("link entries are refused"), "{reason}");
    fx.assert_never_ran();
}

#[tokio::test]
async fn bad_checksum_is_refused_before_the_archive_is_opened() {
    let mut fx = Fixture::new();
    fx.start();
    let bytes = release_tarball(GOOD, Release::V3_5Newest);
    let file = format!("{GOOD}.tar.gz");
    drop_tarball(&fx.staging, GOOD, &bytes, &sha256(b"another download"));
    let reason = fx.assert_refused(&file, "does not match").await;
    assert!(reason.contains("from SHA256SUMS"), "{reason}");
    assert!(fx.versions().is_empty(), "{:?}", fx.versions());
    assert!(fx.logs.text().contains("rule=\"checksum-mismatch\""));
}

#[tokio::test]
async fn truncated_archive_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let etcd = format!("{GOOD}/etcd");
    let whole = targz(&[Entry::File(&etcd, &vec![0x7f; 300_000])]);
    // The sum is of the cut file (say, a download cut short and summed again here): the
    // checksum passes, the archive itself must be caught.
    let cut = &whole[..whole.len() / 2];
    let reason = fx
        .refused_tarball(GOOD, cut, "the archive is corrupt or incomplete")
        .await;
    assert!(reason.contains("download it again"), "{reason}");
    assert!(fx.logs.text().contains("rule=\"archive-corrupt\""));
    fx.assert_never_ran();
}

#[tokio::test]
async fn tarball_named_for_another_version_is_refused() {
    let mut fx = Fixture::new();
    fx.start();
    let liar = "etcd-v3.5.16-linux-amd64";
    let bytes = release_tarball(liar, Release::V3_5Newest);
    let reason = fx
        .refused_tarball(
            liar,
            &bytes,
            "its etcd reports version 3.5.30, but the tarball is named for 3.5.16",
        )
        .await;
    assert!(
        reason.contains("archive") || reason.contains("tarball"),
        "{reason}"
    );
}

/// A supervised member on 3.5.16 rolls to 3.5.30 from a dropped release tarball.
#[test]
fn good_tarball_rolls_a_supervised_member() {
    let cluster = Cluster::start_supervised(Release::V3_5, 1, FAST);
    assert_eq!(server_version(&cluster, 0).as_deref(), Some("3.5.16"));
    let bytes = release_tarball(GOOD, Release::V3_5Newest);
    let staging = cluster.members[0].state_dir.join("staging");
    drop_tarball(&staging, GOOD, &bytes, &sha256(&bytes));
    wait_all_on(&cluster, "3.5.30", Duration::from_secs(60));
    let pinned = cluster.members[0].state_dir.join("versions/3.5.30");
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        assert!(pinned.join(tool).is_file(), "{tool} pinned");
    }
    assert!(staging
        .join(format!("accepted/{GOOD}.tar.gz.accepted"))
        .exists());
}
