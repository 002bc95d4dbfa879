//! Snapshots over gRPC (`Maintenance/Snapshot`) from real etcd 3.4.23 to 3.7.x: the same
//! database as the gateway's snapshot (byte for byte on 3.4; by `snapshot status` on 3.5,
//! whose snapshots differ in bolt's page layout every time), the storage version 3.6 and
//! 3.7 send with every message, a backup taken with it verifies, and TLS with client certificates plus etcd auth (the token as `token`
//! metadata) works as for the gateway.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_supervisor::backup::{verify, BackupPlan, SNAPSHOT};
use etcd_supervisor::etcd::{
    Client, ClientConfig, Credentials, EtcdError, PutRequest, SnapshotVia, Txn, TxnOp,
};
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

async fn grpc_matches_gateway_and_backup_verifies(release: Release) {
    let cluster = Cluster::start(release, 1);
    let url = cluster.client_urls()[0].clone();
    let c = Client::new(ClientConfig::new(vec![url.clone()])).unwrap();
    load(&c).await;
    let dir = tempfile::tempdir().unwrap();
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

    let grpc = c
        .snapshot_grpc_from(&url, &dir.path().join("grpc.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gRPC snapshot");
    let gateway = c
        .snapshot_gateway_from(&url, &dir.path().join("gateway.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gateway snapshot");
    assert_eq!(grpc.via, SnapshotVia::Grpc);
    assert_eq!(gateway.via, SnapshotVia::Gateway);
    // From 3.6 on every message carries the member's storage version (once etcd has
    // written it, a few seconds after a new cluster's version is decided); none before.
    assert_eq!(grpc.storage_version, storage);
    assert!(grpc.size > 1_000_000, "{}", grpc.size);
    assert_whole(&grpc);
    assert_whole(&gateway);
    assert_eq!(grpc.size, gateway.size);
    assert_eq!(
        snapshot_status(release, &grpc.path),
        snapshot_status(release, &gateway.path)
    );
    if release == Release::V3_4 {
        // 3.4 snapshots of an idle member are byte-identical.
        assert_eq!(grpc.sha256, gateway.sha256);
    }
    // The default path is gRPC, with nothing left beside the file.
    let default = c
        .snapshot_from(&url, &dir.path().join("default.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("snapshot");
    assert_eq!(default.via, SnapshotVia::Grpc);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["default.db", "gateway.db", "grpc.db"]);

    // A backup (whose snapshot takes the default path) verifies from disk.
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
    let verified = verify(&backup.dir).expect("verifies");
    assert_eq!(
        verified.meta.snapshot.as_ref().unwrap().size,
        grpc.size,
        "same database, same size"
    );
    assert_eq!(
        snapshot_status(release, &backup_dir.join(SNAPSHOT)),
        snapshot_status(release, &grpc.path)
    );
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
        .snapshot_grpc_from(&https, &dir.join("grpc.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gRPC snapshot over TLS");
    let gateway = c
        .snapshot_gateway_from(&https, &dir.join("gateway.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gateway snapshot over TLS");
    assert_whole(&grpc);
    assert_eq!(
        snapshot_status(release, &grpc.path),
        snapshot_status(release, &gateway.path)
    );
    // Without a client certificate, or trusting another CA: refused at TLS, and not a
    // reason to try the gateway (it would meet the same TLS).
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
        assert!(!dir.join("refused.db").exists(), "{name}");
    }
}

/// Server TLS plus etcd auth. Not with client certificates: once auth is on, etcd's gateway
/// refuses any request that presents one ("CommonName of client sending a request against
/// gateway will be ignored"), and the token comes from the gateway.
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
        .snapshot_grpc_from(&https, &dir.join("grpc.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gRPC snapshot over TLS with auth");
    let gateway = root
        .snapshot_gateway_from(&https, &dir.join("gateway.db"), SNAPSHOT_TIMEOUT)
        .await
        .expect("gateway snapshot over TLS with auth");
    assert_whole(&grpc);
    assert_eq!(grpc.via, SnapshotVia::Grpc);
    assert_eq!(
        snapshot_status(release, &grpc.path),
        snapshot_status(release, &gateway.path)
    );

    // Without a token: refused by etcd itself, which is no reason to try the gateway,
    // and no file is left.
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
    grpc_matches_gateway_and_backup_verifies: [V3_4, V3_5, V3_5Newest, V3_6, V3_7],
    grpc_over_tls_with_client_certificates: [V3_4, V3_5Newest, V3_6, V3_7],
    grpc_over_tls_with_auth: [V3_4, V3_5Newest, V3_6, V3_7],
);
