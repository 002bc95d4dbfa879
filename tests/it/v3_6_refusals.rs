//! etcd 3.6 and 3.7 on real binaries (3.5.36, 3.6.10, 3.6.17 and 3.7.4 built from etcd's Go
//! modules): the refusals an operator meets on the way 3.5 -> 3.6 -> 3.7, auth, TLS with
//! client certificates, a learner, and the dress rehearsal across each minor (driven
//! directly, and through the supervisor's vetting on one member taken 3.5.36 -> 3.6.17 ->
//! 3.7.4). The rollouts run under a writer: 0 acknowledged writes lost, HashKV equal.
//!
//! A refusal is judged from outside: every member's process group (supervisor and etcd) is
//! exactly what it was before the drop, every member still reports its old version, and the
//! reason the operator reads (`<staging-dir>/rejected/etcd-<version>.reason` and the log's
//! `staged etcd <version> refused` line) names the fix. Each reason is printed
//! (`REFUSAL <test>: ...`) so a run shows what the supervisor said.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig, Credentials};
use etcd_supervisor::process::reaper::Reaper;
use etcd_supervisor::rehearsal::{
    choose_restore_tool, rehearse, Outcome, PinnedTools, RehearsalMode, Request, DEFAULT_MAX_DB,
};
use etcd_supervisor::versions::Version;

use crate::rollout::{server_version, stage, wait_all_on, FAST};
use crate::support::outage::Sampler;
use crate::support::{
    http_get, http_post, pki, wait_for, Cluster, Member, Mode, Release, SUPERVISOR,
};

/// Every member's live process group (supervisor, etcd, and any tool it runs right now).
fn groups(cluster: &mut Cluster) -> Vec<Vec<i32>> {
    cluster
        .members
        .iter_mut()
        .map(|m| {
            let mut pids = m.proc().group_pids();
            pids.sort_unstable();
            pids
        })
        .collect()
}

/// Waits (bounded) until every member's group is back to `before`: tools the vetting runs
/// come and go, a stopped or restarted etcd never comes back with its old pid.
fn assert_nothing_stopped(cluster: &mut Cluster, before: &[Vec<i32>]) {
    let mut last = Vec::new();
    let same = wait_for(Duration::from_secs(20), || {
        last = groups(cluster);
        (last == before).then_some(())
    });
    assert!(
        same.is_ok(),
        "an etcd was stopped or restarted: pids {before:?} -> {last:?}\n{}",
        cluster.logs()
    );
}

/// Waits (bounded) for member `i` to refuse `version`; returns the reason file's text after
/// checking that the log's refusal line says the same.
fn wait_refused(cluster: &Cluster, i: usize, version: &str) -> String {
    let m = &cluster.members[i];
    let path = m
        .state_dir
        .join(format!("staging/rejected/etcd-{version}.reason"));
    wait_for(Duration::from_secs(90), || path.exists().then_some(()))
        .unwrap_or_else(|_| panic!("{version} not refused on {}\n{}", m.spec.name, m.log_text()));
    let reason = std::fs::read_to_string(&path).unwrap();
    let needle = format!("staged etcd {version} refused");
    let line = wait_for(Duration::from_secs(10), || {
        m.log_text()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_owned)
    })
    .unwrap_or_else(|_| panic!("no {needle:?} in the log\n{}", m.log_text()));
    eprintln!("REFUSAL {} reason file: {}", m.spec.name, reason.trim());
    eprintln!("REFUSAL {} log line: {line}", m.spec.name);
    reason
}

/// Asserts that `text` contains every needle.
fn names_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
}

/// Stages the binaries of `release` on member `i`: etcd, with etcdctl and etcdutl.
fn stage_with_tools(cluster: &Cluster, i: usize, release: Release) {
    let dir = release.dir();
    let out = Command::new("timeout")
        .arg("60")
        .arg(SUPERVISOR)
        .arg("stage")
        .arg(release.etcd())
        .arg("--with")
        .arg(dir.join("etcdctl"))
        .arg("--with")
        .arg(dir.join("etcdutl"))
        .arg("--state-dir")
        .arg(&cluster.members[i].state_dir)
        .output()
        .expect("run stage");
    assert!(
        out.status.success(),
        "stage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A supervised cluster whose members are adjusted by `adjust` before anything starts.
fn start_supervised_with(
    release: Release,
    n: usize,
    extra: &[&str],
    adjust: impl FnOnce(&mut Cluster),
) -> Cluster {
    let mode = Mode::Supervised(extra.iter().map(|s| s.to_string()).collect());
    let mut cluster = Cluster::new(release, n, mode);
    adjust(&mut cluster);
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    cluster
}

/// Stages `target` on every member and waits for every member to refuse it; then checks from
/// outside that nothing stopped and every member still runs `running`. Returns the reasons.
fn refused_everywhere(cluster: &mut Cluster, target: Release, running: Release) -> Vec<String> {
    let before = groups(cluster);
    for i in 0..cluster.members.len() {
        stage(cluster, i, &target.etcd());
    }
    let reasons = (0..cluster.members.len())
        .map(|i| wait_refused(cluster, i, &target.version()))
        .collect();
    assert_nothing_stopped(cluster, &before);
    for i in 0..cluster.members.len() {
        assert_eq!(
            server_version(cluster, i),
            Some(running.version()),
            "m{}",
            i + 1
        );
    }
    reasons
}

// ---- 5. refused before any etcd stops ----

#[test]
fn v3_6_refused_on_3_5_30_below_the_3_5_32_floor_before_anything_stops() {
    let mut cluster = Cluster::start_supervised(Release::V3_5Newest, 3, FAST);
    assert_eq!(Release::V3_5Newest.version(), "3.5.30");
    let reasons = refused_everywhere(&mut cluster, Release::V3_6, Release::V3_5Newest);
    for reason in &reasons {
        names_all(
            reason,
            &[
                "3.6.17 needs every member on 3.5.32 or later first",
                "this member runs 3.5.30",
                "stage 3.5.32 (or a later 3.5 patch) on those members first",
            ],
        );
    }
}

#[test]
fn v3_7_refused_on_3_6_10_below_the_3_6_11_floor_before_anything_stops() {
    let mut cluster = Cluster::start_supervised(Release::V3_6_10, 3, FAST);
    let reasons = refused_everywhere(&mut cluster, Release::V3_7, Release::V3_6_10);
    for reason in &reasons {
        names_all(
            reason,
            &[
                "3.7.4 needs every member on 3.6.11 or later first",
                "this member runs 3.6.10",
                "stage 3.6.11 (or a later 3.6 patch) on those members first",
            ],
        );
    }
}

#[test]
fn v3_6_refused_on_a_3_5_36_member_with_enable_v2_naming_the_v2store_check() {
    let mut cluster = start_supervised_with(Release::V3_5Go, 1, FAST, |c| {
        c.members[0].etcd_extra = vec!["--enable-v2".into()];
    });
    // With the running version's etcdutl pinned, the reason also says what the v2store
    // check found. Nothing was written through the v2 API, yet the WAL holds v2 requests:
    // with --enable-v2, 3.5 serves GET /health by proposing a v2 QGET through raft
    // (etcdhttp.HandleHealthForV2), so every health poll (the supervisor's own included)
    // leaves one, and 3.6.17 panics on them ("detected disallowed v2 WAL"; seen on a bare
    // 3.5.36 polled three times). The remedy is the WAL one.
    stage_with_tools(&cluster, 0, Release::V3_5Go);
    let etcdutl = cluster.members[0]
        .state_dir
        .join(format!("versions/{}/etcdutl", Release::V3_5Go.version()));
    wait_for(Duration::from_secs(30), || etcdutl.exists().then_some(()))
        .unwrap_or_else(|_| panic!("etcdutl not pinned\n{}", cluster.logs()));
    let reasons = refused_everywhere(&mut cluster, Release::V3_6, Release::V3_5Go);
    names_all(
        &reasons[0],
        &[
            "--enable-v2 is not a flag of etcd 3.6.17",
            "etcdutl check v2store",
            "remove it from this member's etcd flags",
            "Also: etcdutl check v2store: detected custom v2 content in WAL records",
            "add --snapshot-count=1 to this member's etcd flags",
        ],
    );
}

#[test]
fn v3_7_refused_on_a_3_6_17_member_with_experimental_flags_naming_their_replacements() {
    let mut cluster = start_supervised_with(Release::V3_6, 1, FAST, |c| {
        c.members[0].etcd_extra = vec![
            "--experimental-initial-corrupt-check=true".into(),
            "--experimental-compact-hash-check-time=2m".into(),
        ];
    });
    let reasons = refused_everywhere(&mut cluster, Release::V3_7, Release::V3_6);
    names_all(
        &reasons[0],
        &[
            "--experimental-initial-corrupt-check is not a flag of etcd 3.7.4",
            "use --feature-gates=InitialCorruptCheck=true instead",
            "--experimental-compact-hash-check-time is not a flag of etcd 3.7.4",
            "use --compact-hash-check-time=2m instead",
        ],
    );
}

/// An etcd config file carrying the member's identity and addresses, plus `extra` lines.
fn write_config(m: &Member, dir: &Path, extra: &str) -> PathBuf {
    let s = &m.spec;
    let text = format!(
        "name: \"{}\"\ndata-dir: \"{}\"\nlisten-client-urls: \"{}\"\nadvertise-client-urls: \"{}\"\nlisten-peer-urls: \"{}\"\ninitial-advertise-peer-urls: \"{}\"\ninitial-cluster: \"{}\"\ninitial-cluster-token: \"{}\"\ninitial-cluster-state: \"new\"\nlogger: zap\nlog-outputs: [stderr]\nenable-grpc-gateway: true\n{extra}",
        s.name,
        s.data_dir.display(),
        s.client_url(),
        s.client_url(),
        s.peer_url(),
        s.peer_url(),
        s.initial_cluster,
        s.token,
    );
    let path = dir.join(format!("{}-etcd.yml", s.name));
    std::fs::write(&path, text).unwrap();
    path
}

/// etcd 3.7 does not fail on these keys: it ignores them and starts without the setting
/// (3.7.4 on this file logs `"feature-gates":""` and `"compact-check-time-interval":"1m0s"`),
/// so the supervisor refuses, naming the line to write instead.
#[test]
fn v3_7_refused_on_a_3_6_17_member_with_experimental_keys_in_its_config_file() {
    let mut cluster = start_supervised_with(Release::V3_6, 1, FAST, |c| {
        let file = write_config(
            &c.members[0],
            c.dir(),
            // A duration in a config file is in nanoseconds (Go's time.Duration from JSON).
            "experimental-initial-corrupt-check: true\nexperimental-compact-hash-check-time: 120000000000\n",
        );
        c.members[0].etcd_extra = vec![format!("--config-file={}", file.display())];
    });
    // 3.6.17 reads the file and honours the deprecated key.
    let log = cluster.members[0].log_text();
    assert!(
        log.contains("\"feature-gates\":\"InitialCorruptCheck=true\""),
        "{log}"
    );
    assert!(
        log.contains("\"compact-check-time-interval\":\"2m0s\""),
        "{log}"
    );
    let reasons = refused_everywhere(&mut cluster, Release::V3_7, Release::V3_6);
    names_all(
        &reasons[0],
        &[
            "config-file key experimental-initial-corrupt-check is no longer read by etcd 3.7.4",
            "write `feature-gates: InitialCorruptCheck=true` instead",
            "config-file key experimental-compact-hash-check-time is no longer read",
            "write `compact-hash-check-time: 120000000000` instead",
            "this member's etcd config file",
        ],
    );
}

/// `PUT /v2/keys/<key>` with `value=bar`, form-encoded (the v2 API's own encoding).
fn v2_put(url: &str, key: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let authority = url.strip_prefix("http://")?;
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = "value=bar";
    let req = format!(
        "PUT /v2/keys/{key} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp))
}

/// The v2 keys were written through 3.5.36's v2 API while `--enable-v2` was on, before the
/// supervisor ran this member; it now runs without the flag, so nothing on its command line
/// hints at v2. With the default snapshot count the keys sit only in the WAL, which
/// `etcdutl check v2store` reads from 3.5.32 on.
#[test]
fn v3_6_refused_on_a_3_5_36_member_whose_wal_holds_custom_v2_data() {
    let mut cluster = Cluster::new(Release::V3_5Go, 1, Mode::Bare);
    {
        let m = &mut cluster.members[0];
        m.etcd_extra = vec!["--enable-v2".into()];
        m.start();
        m.wait_healthy();
        for n in 0..3 {
            let answer = v2_put(&m.client_url(), &format!("app/k{n}"));
            assert!(matches!(answer, Some((200 | 201, _))), "v2 put: {answer:?}");
        }
        m.stop();
        m.etcd_extra.clear();
        m.mode = Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect());
        m.start();
        m.wait_healthy();
    }
    // The running version's etcdutl (only 3.5's has `check v2store`), as an operator adds it.
    stage_with_tools(&cluster, 0, Release::V3_5Go);
    let etcdutl = cluster.members[0]
        .state_dir
        .join(format!("versions/{}/etcdutl", Release::V3_5Go.version()));
    wait_for(Duration::from_secs(30), || etcdutl.exists().then_some(()))
        .unwrap_or_else(|_| panic!("etcdutl not pinned\n{}", cluster.logs()));
    let reasons = refused_everywhere(&mut cluster, Release::V3_6, Release::V3_5Go);
    names_all(
        &reasons[0],
        &[
            "etcdutl check v2store: detected custom v2 content in WAL records",
            "etcd 3.6.17 cannot start on custom v2 data",
            "in the WAL: it goes with the next v2 snapshot",
            "add --snapshot-count=1 to this member's etcd flags",
            "remove --enable-v2 / ETCD_ENABLE_V2",
        ],
    );
}

// ---- a writer through the supervisor's own client (auth, TLS) ----

/// Puts `<tag>/<n>` in a loop from a thread of its own through the crate's client (so with
/// credentials or client certificates), keeping the keys etcd acknowledged.
pub struct ClientWriter {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ClientWriter {
    pub fn start(config: ClientConfig, tag: &'static str) -> ClientWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let client = Client::new(config).expect("writer client");
                let mut acked = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(600);
                let mut n = 0u32;
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let key = format!("{tag}/{n:06}");
                    let put = client.put(key.clone(), "v", None);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), put).await {
                        acked.push(key);
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        });
        ClientWriter {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Reads every acknowledged key back and compares every member's HashKV at one revision;
/// returns how many acknowledged writes are missing.
pub fn lost_and_hashes(config: ClientConfig, urls: &[String], acked: &[String]) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::new(config).expect("client");
        let mut lost = 0;
        for key in acked {
            if client.get(key.as_str()).await.expect("read back").is_none() {
                lost += 1;
            }
        }
        let rev = client.status().await.expect("status").header.revision;
        let mut hashes = Vec::new();
        for url in urls {
            let deadline = Instant::now() + Duration::from_secs(30);
            let hash = loop {
                match client.hash_kv_of(url, rev).await {
                    Ok(h) => break h,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("hashkv {url} at {rev}: {e}; again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("hashkv {url} at {rev}: {e}"),
                }
            };
            hashes.push((hash.hash, hash.compact_revision));
        }
        eprintln!(
            "HashKV at {rev}: {hashes:?}; {} writes acknowledged",
            acked.len()
        );
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "members differ at {rev}: {hashes:?}"
        );
        lost
    })
}

// ---- 6. auth on 3.6 and 3.7 ----

/// `POST` of an auth admin call as root (token from `/v3/auth/authenticate`).
fn as_root(url: &str, path: &str, body: &str) {
    let (status, text) = http_post(
        &format!("{url}/v3/auth/authenticate"),
        r#"{"name":"root","password":"rootpw"}"#,
        Duration::from_secs(5),
    )
    .expect("authenticate");
    assert_eq!(status, 200, "{text}");
    let token: serde_json::Value = serde_json::from_str(&text).unwrap();
    let token = token["token"].as_str().expect("token").to_owned();
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-H"])
        .arg(format!("Authorization: {token}"))
        .args(["-d", body])
        .arg(format!("{url}{path}"))
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !answer.contains("\"code\""),
        "{path}: {answer}"
    );
}

/// Supervisor options for a member logging in as `user` (password from the environment).
fn with_user(m: &mut Member, user: &str, password: &str) {
    let mut opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    opts.extend(["--user".to_owned(), user.to_owned()]);
    m.mode = Mode::Supervised(opts);
    m.env
        .push(("ETCD_SUPERVISOR_PASSWORD".into(), password.into()));
}

/// Since 3.6.9 a lease and the member list need a logged-in user. A 3-member rollout with
/// auth on: the lock's lease and its keepalive, the member list (how each supervisor finds
/// the others) and the snapshot backup (admin only) all go through `--user root`; judged
/// from outside: one member down at a time, all on the target, auth still on, under a writer.
fn auth_rollout(from: Release, to: Release) {
    let mut cluster = Cluster::start(from, 3);
    pki::enable_auth(&cluster.members[0].client_url());
    for m in &mut cluster.members {
        m.stop();
        with_user(m, "root", "rootpw");
    }
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    // Unauthenticated, 3.6.9+ refuses the member list and leases (CVE-2026-33413).
    let url = cluster.members[0].client_url();
    for path in ["/v3/cluster/member/list", "/v3/lease/grant"] {
        let body = if path.ends_with("grant") {
            r#"{"TTL":5}"#
        } else {
            "{}"
        };
        let answer = http_post(&format!("{url}{path}"), body, Duration::from_secs(5));
        assert!(
            !matches!(answer, Some((200, _))),
            "{path} without a user: {answer:?}"
        );
    }
    let root = || ClientConfig {
        credentials: Some(Credentials {
            user: "root".into(),
            password: "rootpw".into(),
        }),
        ..ClientConfig::new(cluster.client_urls())
    };
    let sampled = Instant::now();
    let outside = Sampler::start(&cluster, Default::default());
    let writer = ClientWriter::start(root(), "auth");
    for i in 0..3 {
        stage(&cluster, i, &to.etcd());
    }
    wait_all_on(&cluster, &to.version(), Duration::from_secs(180));
    let acked = writer.finish();
    let seen = outside.finish();
    assert!(acked.len() > 20, "the writer barely wrote: {}", acked.len());
    assert_eq!(lost_and_hashes(root(), &cluster.client_urls(), &acked), 0);
    eprintln!("outages: {}", seen.summary(sampled));
    assert!(
        seen.second_outages().is_empty() && seen.max_out <= 1,
        "{}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    // Each member backed itself up (the snapshot needs the root role) before its stop.
    for m in &cluster.members {
        let backups: Vec<_> = std::fs::read_dir(m.state_dir.join("backups"))
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        assert_eq!(backups.len(), 1, "{}: {backups:?}", m.spec.name);
        assert!(backups[0].path().join("snapshot.db").is_file());
    }
    let answer = http_post(
        &format!("{}/v3/kv/range", cluster.members[1].client_url()),
        r#"{"key":"eA=="}"#,
        Duration::from_secs(5),
    );
    assert!(
        !matches!(answer, Some((200, _))),
        "auth is off after the upgrade: {answer:?}"
    );
}

#[test]
fn auth_on_a_3_6_17_to_3_7_4_rollout_the_lease_keepalive_member_list_and_snapshot_work() {
    auth_rollout(Release::V3_6, Release::V3_7);
}

#[test]
fn auth_on_a_3_6_10_to_3_6_17_rollout_the_lease_keepalive_member_list_and_snapshot_work() {
    auth_rollout(Release::V3_6_10, Release::V3_6);
}

/// A user who may log in but holds no role: a lease and the member list work for it on
/// 3.6.17, the supervisor's keys do not. The drop is refused with a reason naming the user
/// and what it lacks, and nothing stops.
#[test]
fn auth_a_user_without_the_needed_role_is_refused_clearly_and_nothing_stops() {
    let mut cluster = Cluster::start(Release::V3_6, 1);
    let url = cluster.members[0].client_url();
    pki::enable_auth(&url);
    as_root(
        &url,
        "/v3/auth/user/add",
        r#"{"name":"viewer","password":"viewpw"}"#,
    );
    let m = &mut cluster.members[0];
    m.stop();
    with_user(m, "viewer", "viewpw");
    m.start();
    m.wait_healthy();
    let reasons = refused_everywhere(&mut cluster, Release::V3_7, Release::V3_6);
    names_all(
        &reasons[0],
        &[
            "etcd user viewer lacks the root role (its roles: none)",
            "etcdctl user grant-role viewer root",
        ],
    );
    // Not shown as a pause: the vetting refused before the member queued.
    let log = cluster.members[0].log_text();
    assert!(!log.contains("not starting a turn: paused"), "{log}");
}

// ---- 7. TLS with client certificates on 3.7.4; a learner on 3.6.17 ----

/// `etcdctl endpoint status` over TLS with the client certificate: the server version.
pub fn tls_version(release: Release, dir: &Path, https: &str) -> Option<String> {
    let out = Command::new("timeout")
        .arg("10")
        .arg(release.etcdctl())
        .arg(format!("--endpoints={https}"))
        .arg(format!("--cacert={}", dir.join("ca.pem").display()))
        .arg(format!("--cert={}", dir.join("client.pem").display()))
        .arg(format!("--key={}", dir.join("client-key.pem").display()))
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["Status"]["version"].as_str().map(str::to_owned)
}

/// One supervised member serving clients only over TLS with `--client-cert-auth`: the
/// supervisor talks to it with `--cacert`, `--cert` and `--key`, rolls it 3.6.17 -> 3.7.4
/// (health, lock, lease keepalive, snapshot backup, verify, all over mutual TLS), then
/// `status` and `backup` work against 3.7.4.
#[test]
fn tls_with_client_certificates_rolls_3_6_17_to_3_7_4_and_serves_status_and_backup() {
    let mut cluster = Cluster::new(Release::V3_6, 1, Mode::Bare);
    let dir = cluster.dir().to_path_buf();
    let spec = cluster.members[0].spec.clone();
    pki::make_pki(&dir, &spec.ip);
    let https = format!("https://{}:{}", spec.ip, spec.client_port);
    let tls_opts: Vec<String> = vec![
        format!("--cacert={}", dir.join("ca.pem").display()),
        format!("--cert={}", dir.join("client.pem").display()),
        format!("--key={}", dir.join("client-key.pem").display()),
    ];
    let m = &mut cluster.members[0];
    let mut opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    opts.extend(tls_opts.iter().cloned());
    m.mode = Mode::Supervised(opts);
    m.etcd_extra = vec![
        format!("--listen-client-urls={https}"),
        format!("--advertise-client-urls={https}"),
        format!("--cert-file={}", dir.join("server.pem").display()),
        format!("--key-file={}", dir.join("server-key.pem").display()),
        format!("--trusted-ca-file={}", dir.join("ca.pem").display()),
        "--client-cert-auth".to_owned(),
    ];
    m.start();
    wait_for(Duration::from_secs(60), || {
        tls_version(Release::V3_6, &dir, &https).filter(|v| v == &Release::V3_6.version())
    })
    .unwrap_or_else(|_| panic!("3.6.17 over TLS not up\n{}", cluster.logs()));
    let tls_client = || ClientConfig {
        cacert: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
        ..ClientConfig::new(vec![https.clone()])
    };
    let writer = ClientWriter::start(tls_client(), "tls");
    stage(&cluster, 0, &Release::V3_7.etcd());
    wait_for(Duration::from_secs(120), || {
        tls_version(Release::V3_7, &dir, &https).filter(|v| v == &Release::V3_7.version())
    })
    .unwrap_or_else(|_| panic!("not on 3.7.4 over TLS\n{}", cluster.logs()));
    let acked = writer.finish();
    assert!(acked.len() > 5, "the writer barely wrote: {}", acked.len());
    assert_eq!(
        lost_and_hashes(tls_client(), std::slice::from_ref(&https), &acked),
        0
    );
    // The supervisor verified it and went idle (its record says so).
    let state = cluster.members[0].state_dir.join("state.json");
    wait_for(Duration::from_secs(60), || {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        (v["phase"] == "idle" && v["from"] == Release::V3_7.version().as_str()).then_some(())
    })
    .unwrap_or_else(|_| panic!("not idle on 3.7.4\n{}", cluster.logs()));

    let run = |args: &[&str], tls: bool| {
        let out = Command::new("timeout")
            .arg("60")
            .arg(SUPERVISOR)
            .args(args)
            .args(tls_opts.iter().filter(|_| tls))
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = run(&["status", "--endpoints", &https], true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("3.7.4"), "{text}");
    let out_dir = dir.join("on-demand");
    let state_dir = cluster.members[0].state_dir.display().to_string();
    let (code, text) = run(
        &[
            "backup",
            "--state-dir",
            &state_dir,
            "--endpoints",
            &https,
            "--out",
            &out_dir.display().to_string(),
        ],
        true,
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["verify-backup", &out_dir.display().to_string()], false);
    assert_eq!(code, Some(0), "{text}");
    // Without a client certificate etcd refuses the TLS client.
    let out = Command::new("timeout")
        .arg("10")
        .arg(Release::V3_7.etcdctl())
        .arg(format!("--endpoints={https}"))
        .arg(format!("--cacert={}", dir.join("ca.pem").display()))
        .args(["--dial-timeout=2s", "get", "x"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
}

#[test]
fn a_learner_on_3_6_rolls_3_6_10_to_3_6_17_with_at_most_one_voter_down() {
    crate::compat::learner_rollout_between(Release::V3_6_10, Release::V3_6, true);
}

// ---- 8. the dress rehearsal across each minor ----

/// Runs the rehearsal of `target` on a copy of member 0's data (a bare `running` member
/// holding a few hundred keys, some overwritten, compacted), with the tools the supervisor
/// would choose (the running version's etcdutl restores).
fn rehearse_across(running: Release, target: Release) {
    let cluster = Cluster::start(running, 1);
    let member = &cluster.members[0];
    let url = member.client_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let live = Client::new(ClientConfig {
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::new(vec![url.clone()])
        })
        .expect("client");
        for i in 0..200 {
            live.put(format!("k/{i:04}"), format!("v{i}"), None)
                .await
                .expect("put");
        }
        for i in 0..20 {
            live.put(format!("k/{i:04}"), "again", None)
                .await
                .expect("put");
        }
        let rev = live.status().await.expect("status").header.revision;
        let (status, body) = http_post(
            &format!("{url}/v3/kv/compaction"),
            &format!(r#"{{"revision":"{}","physical":true}}"#, rev - 5),
            Duration::from_secs(10),
        )
        .expect("compaction");
        assert_eq!(status, 200, "{body}");
        let running_v: Version = running.version().parse().unwrap();
        let target_v: Version = target.version().parse().unwrap();
        let tool = choose_restore_tool(
            &PinnedTools::in_dir(running_v.clone(), &running.dir()),
            &PinnedTools::in_dir(target_v.clone(), &target.dir()),
        );
        assert_eq!(
            tool.as_ref().map(|t| t.version.to_string()),
            Some(running.version()),
            "the running version's etcdutl restores"
        );
        let scratch = cluster.dir().join("state/rehearsal");
        let req = Request {
            member: member.spec.name.clone(),
            running: running_v,
            running_binary: running.etcd(),
            target: target_v,
            target_binary: target.etcd(),
            restore_tool: tool,
            mode: RehearsalMode::Always,
            etcd_args: member.spec.etcd_flags(),
            scratch_parent: scratch.clone(),
            snapshot: None,
            ready_timeout: Duration::from_secs(60),
            max_db: DEFAULT_MAX_DB,
            endpoint: url.clone(),
            credentials: None::<Credentials>,
            config_file: None,
        };
        let reaper = Reaper::start().expect("reaper");
        let report = tokio::time::timeout(
            Duration::from_secs(240),
            rehearse(&req, &live, &reaper, std::future::pending()),
        )
        .await
        .expect("the rehearsal ended within 240 s");
        eprintln!(
            "REHEARSAL {} on {} data: {:?} in {:?}",
            report.version, req.running, report.outcome, report.duration
        );
        match &report.outcome {
            Outcome::Passed {
                hash_compared,
                hash_note,
                ..
            } => assert!(*hash_compared, "{hash_note}"),
            other => panic!("{other:?}\n{}", report.log_tail),
        }
        let left: Vec<_> = std::fs::read_dir(&scratch)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    });
    // The live member was not touched.
    assert_eq!(
        http_get(&format!("{url}/version"), Duration::from_secs(2))
            .map(|(s, b)| (s, b.contains(&running.version()))),
        Some((200, true))
    );
}

#[test]
fn rehearsal_of_3_6_17_on_a_3_5_36_members_data_passes_with_hashkv_equal() {
    rehearse_across(Release::V3_5Go, Release::V3_6);
}

#[test]
fn rehearsal_of_3_7_4_on_a_3_6_17_members_data_passes_with_hashkv_equal() {
    rehearse_across(Release::V3_6, Release::V3_7);
}

/// `<state-dir>/vetting.json` once it is about `version`: (result, detail).
fn vetting_of(m: &Member, version: &str) -> (String, String) {
    let path = m.state_dir.join("vetting.json");
    wait_for(Duration::from_secs(120), || {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        (v["version"] == version).then(|| {
            (
                v["result"].as_str().unwrap_or("").to_owned(),
                v["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
    })
    .unwrap_or_else(|_| panic!("no vetting of {version}\n{}", m.log_text()))
}

/// Through the supervisor, with `--rehearsal always` (a rehearsal that cannot run holds the
/// member instead of being skipped): a 3.5.36 member, its etcdutl staged beside it, takes
/// 3.6.17 after the v2store check found its data clean and the rehearsal passed with HashKV
/// equal; then 3.7.4, rehearsed on its 3.6.17 data restored by 3.6.17's etcdutl.
#[test]
fn supervised_3_5_36_to_3_6_17_to_3_7_4_each_checked_and_rehearsed_before_its_turn() {
    let mut opts: Vec<&str> = FAST.to_vec();
    opts.extend(["--rehearsal", "always"]);
    let cluster = Cluster::start_supervised(Release::V3_5Go, 1, &opts);
    let url = cluster.members[0].client_url();
    for i in 0..50 {
        let put = http_post(
            &format!("{url}/v3/kv/put"),
            &format!(
                r#"{{"key":"{}","value":"dg=="}}"#,
                b64(&format!("life/{i}"))
            ),
            Duration::from_secs(5),
        );
        assert!(matches!(put, Some((200, _))), "{put:?}");
    }
    stage_with_tools(&cluster, 0, Release::V3_5Go);
    let etcdutl = cluster.members[0]
        .state_dir
        .join(format!("versions/{}/etcdutl", Release::V3_5Go.version()));
    wait_for(Duration::from_secs(30), || etcdutl.exists().then_some(()))
        .unwrap_or_else(|_| panic!("etcdutl not pinned\n{}", cluster.logs()));
    for (target, v2store) in [(Release::V3_6, true), (Release::V3_7, false)] {
        stage_with_tools(&cluster, 0, target);
        let (result, detail) = vetting_of(&cluster.members[0], &target.version());
        eprintln!("VETTING {}: {result}: {detail}", target.version());
        assert_eq!(result, "passed", "{detail}");
        names_all(&detail, &["flags fit", "rehearsal passed", "HashKV equal"]);
        assert_eq!(detail.contains("v2store clean"), v2store, "{detail}");
        wait_all_on(&cluster, &target.version(), Duration::from_secs(120));
    }
    // The data came along: every key reads back on 3.7.4.
    let (status, body) = http_post(
        &format!("{url}/v3/kv/range"),
        &format!(
            r#"{{"key":"{}","range_end":"{}","count_only":true}}"#,
            b64("life/"),
            b64("life0")
        ),
        Duration::from_secs(5),
    )
    .expect("range");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"count\":\"50\""), "{body}");
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
