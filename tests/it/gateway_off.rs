//! A cluster whose members run with `--enable-grpc-gateway=false` (etcd's own flag, which
//! some hardened deployments set): the supervisor speaks only gRPC (and plain `/health`,
//! `/version`), so everything works as with the gateway on. And what a gRPC client meets
//! when something is wrong: a server without the gRPC service, a wrong CA, no client
//! certificate, a token that expires mid-turn. Each is a clear error, and nothing is
//! stopped.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig, Credentials, EtcdError};

use crate::rollout::{stage, wait_all_on, FAST};
use crate::support::outage::Sampler;
use crate::support::{http_post, pki, wait_for, Cluster, Mode, Release};

/// The supervisor's command line, bounded at 120 s.
fn sup(args: &[&str]) -> Output {
    crate::support::run_supervisor(args, 120)
}

/// Puts unique keys over gRPC (the gateway is off) from a thread of its own.
struct GrpcWriter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl GrpcWriter {
    fn start(urls: Vec<String>) -> GrpcWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = Client::new(ClientConfig {
                request_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
                ..ClientConfig::new(urls)
            })
            .unwrap();
            let mut acked = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let key = format!("w/off/{n}");
                // A failed put is tried again (the client moves on to another member).
                if rt
                    .block_on(client.put(key.clone(), n.to_string(), None))
                    .is_ok()
                {
                    acked.push(key);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            acked
        });
        GrpcWriter {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().expect("running").join().expect("writer")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_off_cluster_rolls_under_a_writer_and_every_command_works() {
    let extra: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    let mut cluster = Cluster::new(Release::V3_5, 3, Mode::Supervised(extra));
    for m in &mut cluster.members {
        m.etcd_extra.push("--enable-grpc-gateway=false".into());
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let urls = cluster.client_urls();
    let endpoints = urls.join(",");
    // The gateway really is off: a JSON range is not served.
    let answer = http_post(
        &format!("{}/v3/kv/range", urls[0]),
        r#"{"key":"AA=="}"#,
        Duration::from_secs(5),
    );
    assert!(!matches!(answer, Some((200, _))), "{answer:?}");

    // status, pause, plan, resume, backup.
    let out = sup(&["status", "--json", "--endpoints", &endpoints]);
    assert!(
        out.status.success(),
        "status: {}",
        crate::support::output_text(&out)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("status: {status}");
    let out = sup(&[
        "pause",
        "--reason",
        "gateway off",
        "--endpoints",
        &endpoints,
    ]);
    assert!(
        out.status.success(),
        "pause: {}",
        crate::support::output_text(&out)
    );
    let out = sup(&["status", "--endpoints", &endpoints]);
    assert!(
        crate::support::output_text(&out).contains("PAUSED")
            && crate::support::output_text(&out).contains("gateway off"),
        "{}",
        crate::support::output_text(&out)
    );
    // 3.5.30 staged everywhere while paused: plan says why m1 waits.
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }
    let state_dir = cluster.members[0].state_dir.display().to_string();
    let plan = || {
        sup(&[
            "plan",
            "--state-dir",
            &state_dir,
            "--member",
            "m1",
            "--endpoints",
            &endpoints,
        ])
    };
    let said = wait_for(Duration::from_secs(60), || {
        let t = crate::support::output_text(&plan());
        t.contains("upgrades are paused by").then_some(t)
    })
    .unwrap_or_else(|_| {
        panic!(
            "plan never said paused: {}",
            crate::support::output_text(&plan())
        )
    });
    assert!(said.contains("gateway off"), "{said}");

    // resume: the rolling upgrade 3.5.16 -> 3.5.30 under a writer.
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = GrpcWriter::start(urls.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = sup(&["resume", "--endpoints", &endpoints]);
    assert!(
        out.status.success(),
        "resume: {}",
        crate::support::output_text(&out)
    );
    wait_all_on(
        &cluster,
        &Release::V3_5Newest.version(),
        Duration::from_secs(180),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = writer.finish();
    assert!(acked.len() > 100, "the writer barely ran: {}", acked.len());
    let seen = sampler.finish();
    eprintln!("gateway-off rollout outages: {}", seen.summary(sampled));
    assert!(
        seen.max_down <= 1 && seen.max_out <= 1 && seen.second_outages().is_empty(),
        "two members down at once: {}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    let swaps = seen.outages.iter().filter(|o| o.process_gone).count();
    assert_eq!(swaps, 3, "{}", seen.summary(sampled));
    let out = sup(&["status", "--endpoints", &endpoints]);
    assert!(
        !crate::support::output_text(&out).contains("PAUSED"),
        "{}",
        crate::support::output_text(&out)
    );

    // An on-demand backup of the upgraded member, verified.
    let backup_state = cluster.dir().join("backup-state");
    let out = sup(&[
        "backup",
        "--endpoints",
        &urls[0],
        "--state-dir",
        &backup_state.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "backup: {}",
        crate::support::output_text(&out)
    );
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let out = sup(&["verify-backup", &dir]);
    assert!(
        out.status.success(),
        "verify-backup: {}",
        crate::support::output_text(&out)
    );

    // Every acknowledged write is there, and the members agree (HashKV at one revision).
    let c = Client::new(ClientConfig::new(urls.clone())).unwrap();
    let mut lost = 0;
    for key in &acked {
        if c.get(key.clone()).await.expect("read back").is_none() {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    let revision = c.status().await.expect("status").header.revision;
    let mut hashes = Vec::new();
    for url in &urls {
        let hash = wait_for(Duration::from_secs(30), || {
            let c = c.clone();
            let url = url.clone();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    c.hash_kv_of(&url, revision).await.ok().map(|h| h.hash)
                })
            })
        })
        .expect("HashKV");
        hashes.push(hash);
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    let out = sup(&["status", "--json", "--endpoints", &endpoints]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["turn"]["holder"],
        serde_json::Value::Null,
        "{status}"
    );
}

/// A plain HTTP/1.1 listener where an etcd client URL is expected: every call fails with
/// the endpoint named, within the timeout, and says what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_grpc_is_a_clear_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
                    .await;
            });
        }
    });
    let c = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(vec![url.clone()])
    })
    .unwrap();
    let started = Instant::now();
    let err = c.get("k").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(err.is_transport(), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let err = c
        .snapshot(&dir.path().join("s.db"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The `status` command says the cluster is unreachable and names it; exit 1.
    let out = sup(&["status", "--endpoints", &url, "--request-timeout", "2s"]);
    crate::support::assert_fails_saying(&out, &[&url]);
}

/// TLS refused either way (a CA that did not sign etcd's certificate; no client
/// certificate where etcd asks for one): a clear error naming the member and the TLS
/// files, and the member keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_and_missing_client_certificate_are_clear_errors() {
    let cluster = Cluster::new(Release::V3_5Newest, 1, Mode::Bare);
    let dir = cluster.dir().to_path_buf();
    let (_etcd, https) = pki::start_tls_member(&cluster);
    let config = |cacert: &str, cert: bool| ClientConfig {
        request_timeout: Duration::from_secs(3),
        cacert: Some(dir.join(cacert)),
        cert: cert.then(|| dir.join("client.pem")),
        key: cert.then(|| dir.join("client-key.pem")),
        ..ClientConfig::new(vec![https.clone()])
    };
    let good = Client::new(config("ca.pem", true)).unwrap();
    wait_for(Duration::from_secs(30), || {
        let good = good.clone();
        let https = https.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(async move { good.health_of(&https).await.ok()?.then_some(()) })
        })
    })
    .expect("TLS member healthy");
    for (name, config) in [
        ("wrong CA", config("other-ca.pem", true)),
        ("no client certificate", config("ca.pem", false)),
    ] {
        let c = Client::new(config).unwrap();
        let started = Instant::now();
        let err = c.put("k", "v", None).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(15), "{name}");
        let text = err.to_string();
        assert!(err.is_transport(), "{name}: {text}");
        assert!(text.contains(&https), "{name}: {text}");
        assert!(
            text.contains("--cacert") || text.contains("certificate"),
            "{name}: says what to check: {text}"
        );
        eprintln!("{name}: {text}");
    }
    // Nothing was stopped.
    good.put("k", "v", None)
        .await
        .expect("the member still serves");
}

/// Tokens that live 2 s (`--auth-token-ttl`) while a supervisor queues for and holds a turn:
/// the client authenticates again when etcd says the token expired, so the turn's lease
/// keepalive, lock and fence go on; no error reaches the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_mid_turn_is_fetched_again() {
    use etcd_supervisor::cluster::lock::{acquire, LockConfig};
    let mut cluster = Cluster::new(Release::V3_5Newest, 1, Mode::Bare);
    for m in &mut cluster.members {
        m.etcd_extra.push("--auth-token-ttl=2".into());
        m.start();
    }
    cluster.members[0].wait_healthy();
    let urls = cluster.client_urls();
    pki::enable_auth(&urls[0]);
    let c = Client::new(ClientConfig {
        credentials: Some(Credentials {
            user: "root".into(),
            password: "rootpw".into(),
        }),
        ..ClientConfig::new(urls.clone())
    })
    .unwrap();
    let cfg = LockConfig {
        key_prefix: "/etcd-supervisor/".into(),
        ttl: Duration::from_secs(3),
        member: "m1".into(),
    };
    let held = acquire(&c, &cfg, std::future::pending())
        .await
        .expect("turn");
    // Three token lifetimes: the keepalive renews through them, and the fence holds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(held.lost_reason(), None);
    held.confirm().await.expect("the turn is still ours");
    c.put("after", "expiry", None)
        .await
        .expect("put after expiry");
    held.release().await.expect("release");
    // Anonymous: refused by etcd with its own words, not a transport error.
    let anonymous = Client::new(ClientConfig::new(urls.clone())).unwrap();
    let err = anonymous.get("after").await.unwrap_err();
    assert!(matches!(err, EtcdError::Api { .. }), "{err}");
    assert!(err.is_unauthenticated(), "{err}");
}
