//! Vetting a staged version against this member before it queues: this member's command
//! line (flags, config file) judged against the target's own `--help`, the path rules that
//! need facts from the cluster (the 3.5.32 floor before 3.6, auth on 3.4 -> 3.5), the v2store
//! check before 3.6 on real data, and a roll with a learner in the cluster.
//!
//! A refusal for this member's configuration is its own fault: the etcd it runs never
//! stops, nothing is rejected for the cluster, the version stays staged and is taken once
//! the supervisor restarts with the fix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig};
use etcd_supervisor::process::reaper::Reaper;
use etcd_supervisor::rehearsal::RehearsalMode;
use etcd_supervisor::upgrade::rules::vet::Vetted;
use etcd_supervisor::upgrade::turn::ports::Vetter;
use etcd_supervisor::upgrade::turn::vet::{LiveVetter, MemberConfig, RehearsalSettings};
use etcd_supervisor::versions::Version;

use crate::refusals::fake_etcd;
use crate::rollout::{server_version, stage, wait_all_on, FAST};
use crate::support::outage::Sampler;
use crate::support::{
    self, http_get, http_post, pki, wait_for, Cluster, Member, Mode, Release, SUPERVISOR,
};

const PREFIX: &str = "/etcd-supervisor/";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &str) -> String {
    use base64::Engine;
    String::from_utf8_lossy(
        &base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 from etcd"),
    )
    .into_owned()
}

/// The value of `key`: `Ok(None)` when etcd answered that it does not exist, `Err` when
/// etcd did not answer (so an absent key is never mistaken for a failed read).
fn kv_get(url: &str, key: &str) -> Result<Option<String>, String> {
    let body = format!(r#"{{"key":"{}"}}"#, b64(key));
    match http_post(&format!("{url}/v3/kv/range"), &body, Duration::from_secs(5)) {
        Some((200, text)) => {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            Ok(v["kvs"][0]["value"].as_str().map(unb64))
        }
        other => Err(format!("range {key}: {other:?}")),
    }
}

/// `<state-dir>/state.json` of a member.
fn state_json(m: &Member) -> serde_json::Value {
    let path = m.state_dir.join("state.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), m.log_text()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// The reason file a refusal of `version` leaves in the member's staging dir.
fn reason_file(m: &Member, version: &str) -> PathBuf {
    m.state_dir
        .join(format!("staging/rejected/etcd-{version}.reason"))
}

/// Waits (bounded) for the refusal of `version` on `m`; returns the reason file's text.
fn wait_refused(m: &Member, version: &str) -> String {
    let path = reason_file(m, version);
    wait_for(Duration::from_secs(40), || path.exists().then_some(()))
        .unwrap_or_else(|_| panic!("{version} not refused on {}\n{}", m.spec.name, m.log_text()));
    let needle = format!("staged etcd {version} refused");
    wait_for(Duration::from_secs(5), || {
        m.log_text().contains(&needle).then_some(())
    })
    .unwrap_or_else(|_| panic!("no {needle:?} in the log\n{}", m.log_text()));
    std::fs::read_to_string(&path).unwrap()
}

/// The log lines that refuse `version`.
fn refusal_lines(m: &Member, version: &str) -> String {
    let needle = format!("staged etcd {version} refused");
    m.log_text()
        .lines()
        .filter(|l| l.contains(&needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the member's process group is back to exactly `before` (tools the vetter
/// runs come and go; a restarted etcd has a new pid and never matches).
fn assert_same_pids(m: &mut Member, before: &[i32]) {
    let mut before = before.to_vec();
    before.sort_unstable();
    let mut last = Vec::new();
    let same = wait_for(Duration::from_secs(10), || {
        last = m.proc().group_pids();
        last.sort_unstable();
        (last == before).then_some(())
    });
    assert!(
        same.is_ok(),
        "{}: etcd was restarted (pids {before:?} -> {last:?})\n{}",
        m.spec.name,
        m.log_text()
    );
}

/// Stops a member's supervisor and starts it again with `mode`.
fn restart_with(m: &mut Member, mode: Mode) {
    m.stop();
    m.mode = mode;
    m.start();
    m.wait_healthy();
}

/// A supervised cluster described by `Cluster::new`, with per-member adjustments made by
/// `adjust` before anything starts; waits until every member is healthy.
fn start_adjusted(
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

#[test]
fn debug_flag_is_refused_here_and_the_same_drop_rolls_after_the_fix() {
    let target = Release::V3_5Newest.version();
    let mut cluster = start_adjusted(Release::V3_4, 3, FAST, |c| {
        c.members[0].etcd_extra = vec!["--debug".to_owned()];
    });
    let m1_pids = cluster.members[0].proc().group_pids();
    let sampled = std::time::Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5Newest.etcd());
    }

    // m1 refuses it for its own flags.
    let reason = wait_refused(&cluster.members[0], &target);
    assert!(reason.contains("--debug"), "reason names --debug: {reason}");
    let lines = refusal_lines(&cluster.members[0], &target);
    assert!(lines.contains("--debug"), "log names --debug: {lines}");

    // The version is fine: the others roll to it while m1 keeps running 3.4.
    wait_for(Duration::from_secs(120), || {
        (1..3)
            .all(|i| server_version(&cluster, i).as_deref() == Some(target.as_str()))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("m2 and m3 did not reach {target}\n{}", cluster.logs()));
    assert_same_pids(&mut cluster.members[0], &m1_pids);
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));

    // Not rejected for the cluster; still staged on m1, with the reason on its record.
    let url = cluster.members[1].client_url();
    let rejected = kv_get(&url, &format!("{PREFIX}rejected/{target}")).unwrap();
    assert_eq!(rejected, None, "{target} was rejected cluster-wide");
    let state = state_json(&cluster.members[0]);
    assert_eq!(state["phase"], "idle", "{state}");
    assert_eq!(state["to"], target.as_str(), "{state}");
    let record = kv_get(&url, &format!("{PREFIX}members/m1"))
        .unwrap()
        .expect("m1's progress record");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert!(
        record["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("--debug")),
        "{record}"
    );

    // The operator drops --debug and restarts the supervisor: the same drop is taken.
    let staged_before = staged_files(&cluster.members[0]);
    let m1 = &mut cluster.members[0];
    m1.etcd_extra.clear();
    let mode = m1.mode.clone();
    restart_with(m1, mode);
    wait_all_on(&cluster, &target, Duration::from_secs(90));
    assert_eq!(
        staged_files(&cluster.members[0]),
        staged_before,
        "nothing new was staged"
    );
    // Verification ends after the server answers with the new version: wait for idle.
    let m1 = &cluster.members[0];
    wait_for(Duration::from_secs(60), || {
        let state = state_json(m1);
        (state["phase"] == "idle" && state["from"] == target.as_str()).then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 not idle on {target}: {}", state_json(m1)));
    // Judged from outside (m1's restart by the operator is one of the outages).
    let seen = sampler.finish();
    assert!(
        seen.second_outages().is_empty() && seen.max_out <= 1,
        "{}",
        seen.summary(sampled)
    );
}

/// Every file under the member's staging dir, recursively (the audit trail of drops).
fn staged_files(m: &Member) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_none_or(|e| e != "reason") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&m.state_dir.join("staging"), &mut out);
    out.sort();
    out
}

/// An etcd config file carrying everything the member's flags say, plus `extra` lines. The
/// gRPC gateway is named: its flag defaults to on, but a config file defaults it to off.
fn write_config(m: &Member, dir: &Path, extra: &str) -> PathBuf {
    let s = &m.spec;
    let text = format!(
        "name: \"{}\"\ndata-dir: \"{}\"\nlisten-client-urls: \"{}\"\nadvertise-client-urls: \"{}\"\nlisten-peer-urls: \"{}\"\ninitial-advertise-peer-urls: \"{}\"\ninitial-cluster: \"{}\"\ninitial-cluster-token: \"{}\"\ninitial-cluster-state: \"new\"\nlog-outputs: [stderr]\nenable-grpc-gateway: true\n{extra}",
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

#[test]
fn config_file_with_a_removed_value_is_refused_and_an_unknown_key_is_not() {
    let target = Release::V3_5Newest.version();
    let mode = || Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect());
    let mut bad = Cluster::new(Release::V3_4, 1, mode());
    let mut good = Cluster::new(Release::V3_4, 1, mode());
    let file = write_config(&bad.members[0], bad.dir(), "logger: capnslog\n");
    bad.members[0].etcd_extra = vec![format!("--config-file={}", file.display())];
    let file = write_config(
        &good.members[0],
        good.dir(),
        "logger: zap\nnot-an-etcd-key: 1\n",
    );
    good.members[0].etcd_extra = vec![format!("--config-file={}", file.display())];
    bad.members[0].start();
    good.members[0].start();
    bad.members[0].wait_healthy();
    good.members[0].wait_healthy();
    // etcd 3.4 really runs from the file.
    for c in [&bad, &good] {
        let log = c.members[0].log_text();
        assert!(
            log.contains("Loading server configuration from")
                || log.contains("loaded server configuration"),
            "{log}"
        );
    }
    let pids = bad.members[0].proc().group_pids();
    stage(&bad, 0, &Release::V3_5Newest.etcd());
    stage(&good, 0, &Release::V3_5Newest.etcd());

    let reason = wait_refused(&bad.members[0], &target);
    assert!(
        reason.contains("logger") && reason.contains("capnslog"),
        "reason names logger: capnslog: {reason}"
    );
    assert!(reason.contains("config file"), "{reason}");

    wait_all_on(&good, &target, Duration::from_secs(60));
    let log = good.members[0].log_text();
    let warned = log
        .lines()
        .any(|l| l.contains("WARN") && l.contains("not-an-etcd-key"));
    assert!(warned, "no warning naming the unknown key\n{log}");
    assert!(!reason_file(&good.members[0], &target).exists());

    assert_same_pids(&mut bad.members[0], &pids);
    assert_eq!(server_version(&bad, 0), Some(Release::V3_4.version()));
    let state = state_json(&bad.members[0]);
    assert_eq!(state["to"], target.as_str(), "{state}");
}

#[test]
fn a_3_6_target_is_refused_on_3_5_30_naming_3_5_32_and_never_runs() {
    let mut cluster = Cluster::start_supervised(Release::V3_5Newest, 1, FAST);
    let pids = cluster.members[0].proc().group_pids();
    let marker = cluster.dir().join("ran");
    let fake = fake_etcd(cluster.dir(), "3.6.1", &marker);
    stage(&cluster, 0, &fake);
    let reason = wait_refused(&cluster.members[0], "3.6.1");
    assert!(reason.contains("3.5.32"), "{reason}");
    assert!(
        refusal_lines(&cluster.members[0], "3.6.1").contains("3.5.32"),
        "{}",
        cluster.members[0].log_text()
    );
    assert!(
        !marker.exists(),
        "the staged 3.6.1 was run beyond --version"
    );
    assert_same_pids(&mut cluster.members[0], &pids);
    assert_eq!(
        server_version(&cluster, 0),
        Some(Release::V3_5Newest.version())
    );
}

#[test]
fn auth_enabled_3_4_to_3_5_is_refused_without_the_opt_in_and_rolls_with_it() {
    let target = Release::V3_5Newest.version();
    let mut cluster = Cluster::start_supervised(Release::V3_4, 1, FAST);
    pki::enable_auth(&cluster.members[0].client_url());
    let with = |more: &[&str]| {
        let mut opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        opts.extend(["--user".to_owned(), "root".to_owned()]);
        opts.extend(more.iter().map(|s| s.to_string()));
        Mode::Supervised(opts)
    };
    let m = &mut cluster.members[0];
    m.env
        .push(("ETCD_SUPERVISOR_PASSWORD".into(), "rootpw".into()));
    restart_with(m, with(&[]));
    let pids = m.proc().group_pids();
    stage(&cluster, 0, &Release::V3_5Newest.etcd());
    let reason = wait_refused(&cluster.members[0], &target);
    assert!(reason.contains("auth"), "{reason}");
    assert!(reason.contains("--allow-auth-upgrade-from-3.4"), "{reason}");
    assert_same_pids(&mut cluster.members[0], &pids);
    assert_eq!(server_version(&cluster, 0), Some(Release::V3_4.version()));

    // With the opt-in the drop is offered again (a path refusal is not kept staged, so the
    // operator stages it again: already pinned, nothing copied) and taken.
    restart_with(
        &mut cluster.members[0],
        with(&["--allow-auth-upgrade-from-3.4"]),
    );
    stage(&cluster, 0, &Release::V3_5Newest.etcd());
    wait_all_on(&cluster, &target, Duration::from_secs(60));
    // Auth is still on: an unauthenticated read is refused.
    let body = format!(r#"{{"key":"{}"}}"#, b64("x"));
    let answer = http_post(
        &format!("{}/v3/kv/range", cluster.members[0].client_url()),
        &body,
        Duration::from_secs(5),
    );
    assert!(
        !matches!(answer, Some((200, _))),
        "auth is off after the upgrade: {answer:?}"
    );
}

/// `PUT /v2/keys/<key>` with `value=bar`, form-encoded (the v2 API's own encoding).
fn v2_put(url: &str, key: &str) -> Option<u16> {
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
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a bare 3.5.30 with the v2 API on and a tiny snapshot count, writes `keys` v2 keys,
/// stops it; returns its data dir.
fn v2_data(cluster: &mut Cluster, keys: usize) -> PathBuf {
    let m = &mut cluster.members[0];
    m.etcd_extra = vec!["--enable-v2".into(), "--snapshot-count=5".into()];
    m.start();
    m.wait_healthy();
    for n in 0..keys {
        let status = v2_put(&m.client_url(), &format!("foo{n}"));
        assert!(
            matches!(status, Some(200 | 201)),
            "v2 put foo{n}: {status:?}"
        );
    }
    if keys > 0 {
        let (status, body) = http_get(
            &format!("{}/v2/keys/foo0", m.client_url()),
            Duration::from_secs(2),
        )
        .expect("v2 get");
        assert_eq!(status, 200, "{body}");
    }
    m.stop();
    m.spec.data_dir.clone()
}

/// A state dir with 3.5.30's etcdutl pinned and a 3.6.1 stand-in whose `--help` lists
/// nothing (the command-line comparison is then skipped with a warning).
fn vetter_state_dir(dir: &Path) -> PathBuf {
    let state = dir.join("vet-state");
    let v35 = state.join("versions/3.5.30");
    let v36 = state.join("versions/3.6.1");
    std::fs::create_dir_all(&v35).unwrap();
    std::fs::create_dir_all(&v36).unwrap();
    std::fs::copy(
        Release::V3_5Newest.etcdutl().expect("3.5.30 has etcdutl"),
        v35.join("etcdutl"),
    )
    .unwrap();
    support::write_script(&v36.join("etcd"), "#!/bin/sh\nexit 0\n");
    state
}

fn vet_v2(state: &Path, data_dir: &Path) -> Vetted {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Started only now: it reaps any child of this process, and the bare etcd is gone.
        let reaper = Reaper::start().expect("reaper");
        let vetter = LiveVetter::new(
            reaper,
            state,
            MemberConfig {
                name: "m1".into(),
                config_file: None,
                v2_enabled: true,
                quota_backend_bytes: None,
                args: vec!["--enable-v2".into(), "--snapshot-count=5".into()],
                env: Vec::new(),
                data_dir: data_dir.to_path_buf(),
                wal_dir: None,
            },
            // The rehearsal is not under test here (and needs a live member).
            RehearsalSettings {
                mode: RehearsalMode::Never,
                max_db: 0,
                ready_timeout: Duration::from_secs(10),
                endpoint: "http://127.0.0.1:9".into(),
                credentials: None,
                client: Client::new(ClientConfig::new(vec!["http://127.0.0.1:9".into()]))
                    .expect("client"),
            },
        );
        let running = Version::new(3, 5, 30);
        let target = Version::new(3, 6, 1);
        tokio::time::timeout(Duration::from_secs(60), vetter.vet(&running, &target))
            .await
            .expect("vetting finished within 60 s")
    })
}

#[test]
fn v2store_check_finds_custom_v2_data_on_real_3_5_30() {
    assert_eq!(Release::V3_5Newest.version(), "3.5.30");
    let mut custom = Cluster::new(Release::V3_5Newest, 1, Mode::Bare);
    let mut clean = Cluster::new(Release::V3_5Newest, 1, Mode::Bare);
    let custom_dir = v2_data(&mut custom, 12);
    let clean_dir = v2_data(&mut clean, 0);
    let snaps = std::fs::read_dir(custom_dir.join("member/snap"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .count();
    assert!(
        snaps >= 1,
        "12 writes with --snapshot-count=5 made no v2 snapshot"
    );

    let state = vetter_state_dir(custom.dir());
    match vet_v2(&state, &custom_dir) {
        Vetted::MemberFault(why) => {
            assert!(why.contains("detected custom content"), "{why}");
            assert!(why.contains("--enable-v2"), "{why}");
        }
        other => panic!("custom v2 data passed: {other:?}"),
    }
    // The check ran on a copy: the member's data dir holds only what etcd wrote.
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("v2store-check"))
        .collect();
    assert!(left.is_empty(), "scratch copies left behind: {left:?}");

    let state = vetter_state_dir(clean.dir());
    match vet_v2(&state, &clean_dir) {
        Vetted::Pass { .. } => {}
        other => panic!("membership-only v2 data refused: {other:?}"),
    }
}

/// Samples every voter's client port (the one `/health` is served on) about every 50 ms
/// from a thread. A voter is down when the port refuses the connection: etcd is not
/// running. A `/health` answer would say less: every member answers "false", or late, for
/// a moment during any leader election, and a probe that hangs up early makes etcd log a
/// cancelled health check each time; so the sampler only connects.
struct DownSampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Sampled>>,
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Sampled {
    /// Sampling rounds.
    rounds: u64,
    /// The most voters down in one round, and which.
    worst: Vec<String>,
    /// Voters seen down at least once.
    ever_down: std::collections::BTreeSet<String>,
}

/// True unless `url`'s port refuses a connection.
fn port_up(url: &str) -> bool {
    let Some(addr) = url
        .strip_prefix("http://")
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
    else {
        return false;
    };
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(40)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::ConnectionRefused,
    }
}

impl DownSampler {
    fn start(urls: Vec<String>) -> DownSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Sampled::default();
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let started = Instant::now();
                let down: Vec<String> = urls.iter().filter(|u| !port_up(u)).cloned().collect();
                seen.ever_down.extend(down.iter().cloned());
                if down.len() > seen.worst.len() {
                    seen.worst = down;
                }
                seen.rounds += 1;
                std::thread::sleep(Duration::from_millis(50).saturating_sub(started.elapsed()));
            }
            seen
        });
        DownSampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// The learner's supervisor started like the others: it learns the other members from
/// its own etcd.
#[test]
fn a_cluster_with_a_learner_rolls_with_at_most_one_voter_down() {
    learner_rollout(false);
}

/// The same, with the learner's supervisor given every member's client URL by the operator
/// (`--endpoints`): a learner's etcd refuses the member list and everything but serializable
/// reads and status, so its supervisor cannot learn the other endpoints from it.
#[test]
fn a_learner_given_the_endpoints_rolls_with_at_most_one_voter_down() {
    learner_rollout(true);
}

fn learner_rollout(learner_gets_endpoints: bool) {
    learner_rollout_between(Release::V3_5, Release::V3_5Newest, learner_gets_endpoints);
}

/// Three voters and a learner on `from`, `to` staged on all four, under a writer: each swaps
/// once, never two voters down at once, the learner stays a learner, no acknowledged write is
/// lost and the voters' HashKV agree (a learner serves no HashKV).
pub fn learner_rollout_between(from: Release, to: Release, learner_gets_endpoints: bool) {
    let target = to.version();
    let mode = Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect());
    let mut cluster = Cluster::new(from, 4, mode);
    let all = cluster.members[0].spec.initial_cluster.clone();
    let voters = all.split(',').take(3).collect::<Vec<_>>().join(",");
    for m in &mut cluster.members[..3] {
        m.spec.initial_cluster = voters.clone();
        m.start();
    }
    for m in &cluster.members[..3] {
        m.wait_healthy();
    }
    // etcd refuses a member add until the leader has seen every peer for a few seconds.
    let add_url = format!("{}/v3/cluster/member/add", cluster.members[0].client_url());
    let add_body = format!(
        r#"{{"peerURLs":["{}"],"isLearner":true}}"#,
        cluster.members[3].spec.peer_url()
    );
    let mut last = None;
    wait_for(Duration::from_secs(30), || {
        last = http_post(&add_url, &add_body, Duration::from_secs(5));
        matches!(last, Some((200, _))).then_some(())
    })
    .unwrap_or_else(|_| panic!("member add: {last:?}"));
    let urls = cluster.client_urls();
    let m4 = &mut cluster.members[3];
    m4.etcd_extra = vec!["--initial-cluster-state=existing".into()];
    if learner_gets_endpoints {
        let Mode::Supervised(opts) = &mut m4.mode else {
            unreachable!()
        };
        opts.extend(["--endpoints".to_owned(), urls.join(",")]);
    }
    m4.start();
    m4.wait_healthy();

    let status = || {
        let out = std::process::Command::new("timeout")
            .arg("30")
            .arg(SUPERVISOR)
            .args(["status", "--json", "--endpoints", &urls.join(",")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let learner_flags = |s: &serde_json::Value| {
        s["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["name"].as_str().unwrap_or("").to_owned(),
                            m["learner"].clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let before = status();
    let flags = learner_flags(&before);
    assert_eq!(flags.len(), 4, "{before}");
    for (name, learner) in &flags {
        assert_eq!(*learner, serde_json::json!(name == "m4"), "{before}");
    }

    let sampled = std::time::Instant::now();
    let outside = Sampler::start(&cluster, Default::default());
    let sampler = DownSampler::start(urls[..3].to_vec());
    let writer = crate::rollout::Writer::start(urls[..3].to_vec(), "learner");
    for i in 0..4 {
        stage(&cluster, i, &to.etcd());
    }
    wait_all_on(&cluster, &target, Duration::from_secs(120));
    let written = writer.finish();
    let seen = sampler.finish();
    assert!(
        written.acked.len() > 20,
        "the writer barely wrote: {written:?}"
    );
    assert_eq!(
        crate::v3_6_refusals::lost_and_hashes(
            ClientConfig::new(urls[..3].to_vec()),
            &urls[..3],
            &written.acked
        ),
        0,
        "acknowledged writes lost"
    );
    eprintln!("voters sampled: {seen:?}");
    assert!(seen.rounds > 50, "the sampler barely ran: {seen:?}");
    assert!(
        seen.worst.len() <= 1,
        "voters down at the same time: {seen:?}\n{}",
        cluster.logs()
    );
    // The sampler is fast enough to see each voter's swap.
    assert_eq!(
        seen.ever_down.len(),
        3,
        "a voter's swap went unseen: {seen:?}"
    );
    // Each of the four swapped once (a second etcd process each), and none overlapped,
    // judged from outside: processes and /health.
    let out = outside.finish();
    eprintln!("outages: {}", out.summary(sampled));
    for (i, pids) in out.pids.iter().enumerate() {
        assert_eq!(pids.len(), 2, "m{}: {}", i + 1, out.summary(sampled));
    }
    assert!(
        out.second_outages().is_empty() && out.max_out <= 1,
        "{}\n{}",
        out.summary(sampled),
        cluster.logs()
    );
    // etcd reports the new version before its supervisor has verified it (and, on the last
    // member, compared the members' hashes): wait, bounded, for the records to say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = status();
        let settled = ["m1", "m2", "m3", "m4"].iter().all(|n| {
            s["progress"][n]["running"] == target.as_str() && s["progress"][n]["state"] == "idle"
        });
        if settled {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the records never said every member is idle on {target}: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(learner_flags(&after), flags, "{after}");
    for name in ["m1", "m2", "m3", "m4"] {
        assert_eq!(
            after["progress"][name]["running"],
            target.as_str(),
            "{after}"
        );
    }
}

/// The second line of defence: a version whose start is a usage error (exit code 2) after
/// the swap is rolled back as this member's problem: no cluster-wide rejection, and the
/// version stays staged here. (`--rehearsal never`, so the swap really happens: the
/// rehearsal, with the etcdutl pinned beside the first binary, would refuse it first.)
#[test]
fn a_usage_error_after_the_swap_rolls_back_here_without_rejecting() {
    let mut opts = FAST.to_vec();
    opts.extend(["--rehearsal", "never"]);
    let cluster = Cluster::start_supervised(Release::V3_5, 1, &opts);
    let fake = cluster.dir().join("etcd-3.5.30");
    support::write_script(
        &fake,
        &format!(
            "#!/bin/sh\ncase \"$1\" in --version|--help) exec {} \"$1\";; esac\necho 'flag provided but not defined: -not-a-flag' >&2\nexit 2\n",
            Release::V3_5Newest.etcd().display()
        ),
    );
    stage(&cluster, 0, &fake);
    let m = &cluster.members[0];
    wait_for(Duration::from_secs(90), || {
        let state = std::fs::read_to_string(m.state_dir.join("state.json")).ok()?;
        let state: serde_json::Value = serde_json::from_str(&state).ok()?;
        (state["phase"] == "idle"
            && state["from"] == "3.5.16"
            && state["to"] == "3.5.30"
            && state["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("usage")))
        .then_some(())
    })
    .unwrap_or_else(|_| panic!("no local rollback\n{}", cluster.logs()));
    let url = m.client_url();
    assert_eq!(
        kv_get(&url, &format!("{PREFIX}rejected/3.5.30")),
        Ok(None),
        "a member's usage error rejected the version for the cluster"
    );
    assert!(
        m.log_text().contains("exit code 2, a usage"),
        "{}",
        m.log_text()
    );
    wait_for(Duration::from_secs(30), || {
        (server_version(&cluster, 0).as_deref() == Some("3.5.16")).then_some(())
    })
    .unwrap_or_else(|_| panic!("the old version is not back\n{}", cluster.logs()));
}
