//! Snapshots over gRPC (`Maintenance/Snapshot`) from real etcd 3.4.23 to 3.7: the same
//! database as `etcdctl snapshot save` (by `snapshot status`: snapshots differ in bolt's
//! page layout every time on 3.5+), the storage version 3.6 and 3.7
//! send with every message, a backup taken with it verifies, TLS with client
//! certificates and etcd auth (the token as `token` metadata) work, a stream cut off
//! in the middle is a clear error that leaves no file and stops nothing, and a snapshot
//! stalled on its disk does not stall a lease renewed on the same client.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_supervisor::backup::{verify, BackupPlan, SNAPSHOT};
use etcd_supervisor::etcd::{Client, ClientConfig, Credentials, EtcdError, PutRequest, Txn, TxnOp};
use sha2::{Digest, Sha256};

use crate::support::{pki, snapshot_status, Cluster, Mode, Proc, Release};

const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// ~1.2 MB in 300 KiB transactions: dozens of 32 KiB messages.
async fn load(c: &Client) {
    let value = vec![b'g'; 1024];
    for t in 0..12 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| TxnOp::Put(PutRequest::new(format!("g/{t}/{i}"), value.clone())))
            .collect();
        assert!(c.txn(&Txn::new().and_then(ops)).await.unwrap().succeeded);
    }
}

/// The file is what `info` says, and what etcd would restore (its own trailer).
fn assert_whole(info: &etcd_supervisor::etcd::SnapshotInfo) {
    let bytes = std::fs::read(&info.path).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.sha256[..], Sha256::digest(&bytes)[..]);
    let (data, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(&Sha256::digest(data)[..], trailer);
}

/// `etcdctl snapshot save` of the member at `url` into `file`.
fn etcdctl_save(release: Release, url: &str, file: &Path) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(release.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["snapshot", "save"])
        .arg(file)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn snapshot_matches_etcdctl_and_backup_verifies(release: Release) {
    let cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let c = Client::new(ClientConfig::new(vec![url.clone()])).unwrap();
    load(&c).await;
    let storage = match release {
        Release::V3_6 | Release::V3_6_10 | Release::V3_7 => {
            let version = release.version();
            let want = format!("{}.0", version.rsplit_once('.').unwrap().0);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.status_of(&url).await.unwrap().storage_version != want {
                assert!(Instant::now() < deadline, "no storage version {want}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(want)
        }
        _ => None,
    };

    // "The same database" holds only while the member's db does not move between the
    // snapshots: each snapshot commits the backend first (3.5+ writes its consistent
    // index with every commit), which can grow the file by a page (3.7's grew 4 KiB
    // between ours and etcdctl's under CI), so the three snapshots count only when the
    // member's applied index and db size are the same before and after them.
    let mut attempt = 0;
    let (dir, ours, backup_dir) = loop {
        attempt += 1;
        let before = c.status_of(&url).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ours = c
            .snapshot_from(&url, &dir.path().join("ours.db"), SNAPSHOT_TIMEOUT)
            .await
            .expect("snapshot");
        etcdctl_save(release, &url, &dir.path().join("etcdctl.db"));
        let backup_dir = dir.path().join("backup");
        let backup = BackupPlan::exact(backup_dir.clone())
            .begin(&c)
            .await
            .expect("begin")
            .snapshot(&c)
            .await
            .expect("snapshot step")
            .finish()
            .await
            .expect("finish");
        let after = c.status_of(&url).await.unwrap();
        if crate::support::unmoved(&before, &after) {
            // A backup (whose snapshot takes the same path) verifies from disk.
            let verified = verify(&backup.dir).expect("verifies");
            assert_eq!(
                verified.meta.snapshot.as_ref().unwrap().size,
                ours.size,
                "same database, same size"
            );
            break (dir, ours, backup_dir);
        }
        crate::support::again_unless_last(&before, &after, attempt);
    };
    // From 3.6 on every message carries the member's storage version (once etcd has
    // written it, a few seconds after a new cluster's version is decided); none before.
    assert_eq!(ours.storage_version, storage);
    assert!(ours.size > 1_000_000, "{}", ours.size);
    assert_whole(&ours);
    let theirs = std::fs::metadata(dir.path().join("etcdctl.db"))
        .unwrap()
        .len();
    assert_eq!(ours.size, theirs, "same database, same size");
    assert_eq!(
        snapshot_status(release, &ours.path),
        snapshot_status(release, &dir.path().join("etcdctl.db"))
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["backup", "etcdctl.db", "ours.db"],
        "nothing left beside the files"
    );
    assert_eq!(
        snapshot_status(release, &backup_dir.join(SNAPSHOT)),
        snapshot_status(release, &ours.path)
    );
}

/// A TCP proxy to `upstream` that closes both sides once `cut_after` bytes came back from
/// it: a member that closes the stream in the middle of a snapshot.
async fn cutting_proxy(upstream: String, cut_after: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while sent < cut_after {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            sent += n;
                        }
                    }
                }
                up.abort();
                // Dropping both halves closes both connections mid-stream.
            });
        }
    });
    format!("http://{addr}")
}

/// A member that closes the connection mid-snapshot: a clear error naming it, no file
/// left, and the member itself untouched (it keeps serving).
async fn stream_cut_mid_snapshot(release: Release) {
    let cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let c = Client::new(ClientConfig::new(vec![url.clone()])).unwrap();
    load(&c).await;
    let proxy = cutting_proxy(url.trim_start_matches("http://").to_owned(), 512 * 1024).await;
    let via_proxy = Client::new(ClientConfig::new(vec![proxy.clone()])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cut.db");
    std::fs::write(&dest, b"old").unwrap();
    let started = Instant::now();
    let err = via_proxy
        .snapshot_from(&proxy, &dest, SNAPSHOT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a cut stream fails at once, not at the timeout: {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        matches!(err, EtcdError::Grpc { .. } | EtcdError::Snapshot { .. }),
        "{text}"
    );
    assert!(text.contains(&proxy), "names the member: {text}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old", "the old file stays");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cut.db"], "no partial file left");
    // Nothing was stopped: the member serves on, and a direct snapshot works.
    assert_eq!(c.health_of(&url).await.ok(), Some(true));
    c.snapshot_from(&url, &dir.path().join("whole.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("direct snapshot after the cut");
}

/// etcdctl against the TLS member (server TLS: the CA only).
fn etcdctl_tls(release: Release, dir: &Path, https: &str, args: &[&str]) {
    let out = Command::new("timeout")
        .arg("30")
        .arg(release.etcdctl())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={https}"))
        .arg(format!("--cacert={}", dir.join("ca.pem").display()))
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_healthy(c: &Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.health_of(url).await.ok() != Some(true) {
        assert!(Instant::now() < deadline, "{url} not healthy within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TLS with client certificates (etcd's --client-cert-auth), no auth.
async fn grpc_over_tls_with_client_certificates(release: Release) {
    let cluster = Cluster::new(release, 1, Mode::Bare);
    let dir = cluster.dir().to_path_buf();
    let (_etcd, https) = pki::start_tls_member(&cluster);
    let config = |cert: bool, cacert: &str| ClientConfig {
        cacert: Some(dir.join(cacert)),
        cert: cert.then(|| dir.join("client.pem")),
        key: cert.then(|| dir.join("client-key.pem")),
        ..ClientConfig::new(vec![https.clone()])
    };
    let c = Client::new(config(true, "ca.pem")).unwrap();
    wait_healthy(&c, &https).await;
    load(&c).await;
    let grpc = c
        .snapshot_from(&https, &dir.join("grpc.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gRPC snapshot over TLS");
    assert_whole(&grpc);
    assert!(snapshot_status(release, &grpc.path).contains("totalKey"));
    // Without a client certificate, or trusting another CA: refused at TLS, with the
    // member named and no file left.
    for (name, config) in [
        ("no client cert", config(false, "ca.pem")),
        ("other CA", config(true, "other-ca.pem")),
    ] {
        let err = Client::new(config)
            .unwrap()
            .snapshot_from(&https, &dir.join("refused.db"), SNAPSHOT_TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, EtcdError::Grpc { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&https), "{name}: {err}");
        assert!(!dir.join("refused.db").exists(), "{name}");
    }
}

/// Server TLS plus etcd auth (user and password; the token in gRPC metadata).
async fn grpc_over_tls_with_auth(release: Release) {
    let cluster = Cluster::new(release, 1, Mode::Bare);
    let dir = cluster.dir().to_path_buf();
    let spec = cluster.members[0].spec.clone();
    pki::make_pki(&dir, &spec.ip);
    let https = format!("https://{}:{}", spec.ip, spec.client_port);
    let mut flags: Vec<String> = spec
        .etcd_flags()
        .into_iter()
        .map(|f| f.replace(&spec.client_url(), &https))
        .collect();
    flags.extend([
        format!("--cert-file={}", dir.join("server.pem").display()),
        format!("--key-file={}", dir.join("server-key.pem").display()),
    ]);
    let _etcd = Proc::spawn(
        Command::new(release.etcd()).args(&flags),
        &dir.join("tls.log"),
    );
    let config = |credentials: Option<Credentials>| ClientConfig {
        cacert: Some(dir.join("ca.pem")),
        credentials,
        ..ClientConfig::new(vec![https.clone()])
    };
    let anonymous = Client::new(config(None)).unwrap();
    wait_healthy(&anonymous, &https).await;
    load(&anonymous).await;
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        etcdctl_tls(release, &dir, &https, args);
    }

    let root = Client::new(config(Some(Credentials {
        user: "root".into(),
        password: "rootpw".into(),
    })))
    .unwrap();
    let grpc = root
        .snapshot_from(&https, &dir.join("grpc.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gRPC snapshot over TLS with auth");
    assert_whole(&grpc);
    assert!(snapshot_status(release, &grpc.path).contains("totalKey"));

    // Without a token: refused by etcd itself, and no file is left.
    let err = anonymous
        .snapshot_from(&https, &dir.join("anon.db"), SNAPSHOT_TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Api { .. }), "{err}");
    assert!(!dir.join("anon.db").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".part").then_some(name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// How long the failpoint holds the snapshot's writer: twice the lease's TTL.
const STALL: Duration = Duration::from_secs(6);
const LEASE_TTL: i64 = 3;

/// A snapshot whose writer stalls (a busy disk: the failpoint holds the writer after the
/// first chunk) does not hold up a lease renewed on the same client, as the turn's lease is
/// while its backup streams: the snapshot's connection is its own. On a shared connection
/// the stalled stream fills the connection's receive window and the keepalive's answers
/// wait behind it until the lease expires.
async fn a_stalled_snapshot_does_not_stall_a_lease_on_the_same_client(release: Release) {
    std::env::set_var(
        "ETCD_SUPERVISOR_FAILPOINT_STALL",
        format!("snapshot-written-first-chunk:{}s", STALL.as_secs()),
    );
    let cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let c = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(vec![url])
    })
    .unwrap();
    // 16 MiB: more than the stream's and the connection's receive windows (4 MiB each) and
    // the writer's channel (2 MiB) together.
    let value = vec![b's'; 64 * 1024];
    for t in 0..16 {
        let ops: Vec<TxnOp> = (0..16)
            .map(|i| TxnOp::Put(PutRequest::new(format!("s/{t}/{i}"), value.clone())))
            .collect();
        assert!(c.txn(&Txn::new().and_then(ops)).await.unwrap().succeeded);
    }
    let lease = c.lease_grant(LEASE_TTL).await.unwrap();
    // The keepalive stream is open before the snapshot starts.
    assert!(c.lease_keep_alive(lease.id).await.unwrap().is_some());

    // Two at once: a stalled stream holds between half and all of its 4 MiB window
    // (depending on the window updates already announced), so two surely fill a shared
    // connection's 4 MiB.
    let dir = tempfile::tempdir().unwrap();
    let snaps: Vec<_> = (0..2)
        .map(|i| {
            let c = c.clone();
            let dest = dir.path().join(format!("stalled-{i}.db"));
            tokio::spawn(async move { c.snapshot(&dest, SNAPSHOT_TIMEOUT).await })
        })
        .collect();
    let t = Instant::now();
    let mut renewed = 0;
    while t.elapsed() + Duration::from_secs(1) < STALL {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            snaps.iter().all(|s| !s.is_finished()),
            "a snapshot ended within {:?}: the failpoint did not stall it",
            t.elapsed()
        );
        let ttl = tokio::time::timeout(Duration::from_secs(3), c.lease_keep_alive(lease.id))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no keepalive answer within 3 s, {:?} into the stall",
                    t.elapsed()
                )
            })
            .unwrap_or_else(|e| panic!("keepalive failed {:?} into the stall: {e}", t.elapsed()));
        assert!(
            ttl.is_some(),
            "the lease expired {:?} into the stall",
            t.elapsed()
        );
        renewed += 1;
    }
    for snap in snaps {
        assert_whole(&snap.await.unwrap().unwrap());
    }
    assert!(renewed >= 4, "{renewed} renewals");
    assert!(c.lease_keep_alive(lease.id).await.unwrap().is_some());
}

macro_rules! per_release {
    ($($test:ident: [$($release:ident),*]),* $(,)?) => {
        $(
            mod $test {
                $(
                    #[allow(non_snake_case)]
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $release() {
                        super::$test(crate::support::Release::$release).await;
                    }
                )*
            }
        )*
    };
}

per_release!(
    snapshot_matches_etcdctl_and_backup_verifies: [V3_4, V3_5, V3_5Newest, V3_6, V3_7],
    grpc_over_tls_with_client_certificates: [V3_4, V3_5Newest, V3_6, V3_7],
    grpc_over_tls_with_auth: [V3_4, V3_5Newest, V3_6, V3_7],
    stream_cut_mid_snapshot: [V3_5Newest],
    a_stalled_snapshot_does_not_stall_a_lease_on_the_same_client: [V3_5Newest, V3_6, V3_7],
);
