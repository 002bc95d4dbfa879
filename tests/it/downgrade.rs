//! Going back one minor through etcd's downgrade API, on real 3.7.4, 3.6.17 and 3.5.36:
//! three supervised members, the older binary staged on all three (parked until
//! `etcd-supervisor downgrade`), a writer and the outside sampler running throughout.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fast_stop::assert_hash_kv_equal;
use crate::rollout::{count_lost, server_version, stage, wait_all_on, Writer, FAST};
use crate::support::outage::{etcd_pid_of, Sampler};
use crate::support::{
    cluster_version, wait_cluster_version, wait_for, Cluster, Release, SUPERVISOR,
};

/// Runs `etcd-supervisor ARGS --endpoints URLS`, bounded by `timeout` seconds.
fn supervisor(cluster: &Cluster, args: &[&str], timeout: u64) -> Output {
    let urls = cluster.client_urls().join(",");
    let mut all = args.to_vec();
    all.extend(["--endpoints", &urls]);
    crate::support::run_supervisor(&all, timeout)
}

/// Waits until every member's supervisor parked `version` (the reason file says the
/// command to run), proving the staged older minor is refused before any stop.
fn wait_parked(cluster: &Cluster, version: &str) {
    for m in &cluster.members {
        let reason = m
            .state_dir
            .join(format!("staging/rejected/etcd-{version}.reason"));
        wait_for(Duration::from_secs(60), || reason.exists().then_some(()))
            .unwrap_or_else(|_| panic!("{} did not park {version}\n{}", m.spec.name, m.log_text()));
        let why = std::fs::read_to_string(&reason).unwrap();
        assert!(
            why.contains(&format!("etcd-supervisor downgrade {version}")),
            "{why}"
        );
    }
}

/// `status` every second while the downgrade runs; keeps the outputs that show it.
struct StatusWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl StatusWatch {
    fn start(urls: String) -> StatusWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (stop.clone(), seen.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(o) = Command::new("timeout")
                    .args(["10", SUPERVISOR, "status", "--endpoints", &urls])
                    .output()
                {
                    let s = String::from_utf8_lossy(&o.stdout).into_owned();
                    if s.contains("downgrade to") {
                        out.lock().unwrap().push(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(700));
            }
        });
        StatusWatch {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// `status --watch` running beside the test, its stdout (not a terminal) in a file; killed
/// on drop.
struct LiveWatch(std::process::Child);

impl LiveWatch {
    fn start(urls: &str, out: &std::path::Path) -> LiveWatch {
        let file = std::fs::File::create(out).expect("watch output file");
        let child = Command::new("timeout")
            .args([
                "600",
                SUPERVISOR,
                "status",
                "--watch",
                "--interval",
                "500ms",
            ])
            .args(["--endpoints", urls])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start status --watch");
        LiveWatch(child)
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        // SIGTERM: the watch exits by itself, flushing what it printed.
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

/// When a member was down for a swap, from its supervisor's log: from the move to `stopping`
/// to "healthy and caught up". A figure only; "never two down" is judged by the sampler.
fn swap_intervals(log: &str) -> Vec<(std::time::SystemTime, std::time::SystemTime)> {
    let ts = |line: &str| {
        line.split_whitespace()
            .next()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    };
    let mut out = Vec::new();
    let mut down_since = None;
    for line in log.lines() {
        if line.contains("upgrade state changed") && line.contains("state=\"stopping\"") {
            down_since = down_since.or_else(|| ts(line));
        } else if line.contains("etcd healthy and caught up") {
            if let (Some(start), Some(end)) = (down_since.take(), ts(line)) {
                out.push((start, end));
            }
        }
    }
    out
}

/// Per-member turn times from the supervisors' logs: `stopping` to "healthy and caught up".
fn turn_times(cluster: &Cluster) -> Vec<(String, Duration)> {
    cluster
        .members
        .iter()
        .flat_map(|m| {
            swap_intervals(&m.log_text())
                .into_iter()
                .filter_map(|(a, b)| b.duration_since(a).ok())
                .map(|d| (m.spec.name.clone(), d))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The whole round trip: parked without the command, the downgrade under writes, the
/// figures, then a plain staging upgrades it again.
fn round_trip(from: Release, to: Release, cluster_from: &str, cluster_to: &str) {
    let cluster = Cluster::start_supervised(from, 3, FAST);
    let urls = cluster.client_urls();
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = Writer::start(urls.clone(), "downgrade");
    std::thread::sleep(Duration::from_millis(500));

    for i in 0..3 {
        stage(&cluster, i, &to.etcd());
    }
    wait_parked(&cluster, &to.version());
    for i in 0..3 {
        assert_eq!(server_version(&cluster, i), Some(from.version()));
    }

    let leader_before = crate::fast_stop::leader(&cluster);
    let watch = StatusWatch::start(urls.join(","));
    let watching = cluster.dir().join("status-watch.out");
    let live = LiveWatch::start(&urls.join(","), &watching);
    let t0 = Instant::now();
    let out = supervisor(&cluster, &["downgrade", &to.version()], 600);
    let took = t0.elapsed();
    let statuses = watch.finish();
    drop(live);
    // `status --watch` (off a terminal: a block per change) showed the downgrade too.
    let watched = std::fs::read_to_string(&watching).unwrap_or_default();
    assert!(
        watched.contains(&format!("downgrade to {}", to.version()))
            && watched.contains("storage version"),
        "status --watch never showed the downgrade:\n{watched}"
    );
    assert!(
        out.status.success(),
        "downgrade failed: {}\n{}",
        crate::support::output_text(&out),
        cluster.logs()
    );
    assert!(
        crate::support::output_text(&out).contains("the cluster finished the downgrade"),
        "{}",
        crate::support::output_text(&out)
    );
    wait_all_on(&cluster, &to.version(), Duration::from_secs(30));
    wait_cluster_version(&cluster, cluster_to, Duration::from_secs(30));

    std::thread::sleep(Duration::from_millis(500));
    let report = writer.finish();
    let lost = count_lost(&urls[0], &report.acked);
    let seen = sampler.finish();
    eprintln!(
        "downgrade command output:\n{}",
        crate::support::output_text(&out)
    );
    if let Some(s) = statuses
        .iter()
        .find(|s| s.contains("done 1/3"))
        .or(statuses.first())
    {
        eprintln!("status during the downgrade:\n{s}");
    }
    eprintln!(
        "downgrade {} -> {}: {took:?}; per member {:?}; writes acked {}, failed attempts {}, longest stall {:?}, lost {lost}",
        from.version(),
        to.version(),
        turn_times(&cluster),
        report.acked.len(),
        report.failures,
        report.longest_stall
    );
    eprintln!("outages: {}", seen.summary(sampled));
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(report.acked.len() > 50, "writer barely ran: {report:?}");
    assert!(
        seen.second_outages().is_empty() && seen.max_down <= 1 && seen.max_out <= 1,
        "two members down at once: {}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    let swaps = seen.outages.iter().filter(|o| o.process_gone).count();
    assert_eq!(swaps, 3, "{}\n{}", seen.summary(sampled), cluster.logs());
    assert!(
        statuses.iter().any(|s| s.contains("storage version")),
        "status never showed the downgrade: {statuses:?}"
    );
    assert_hash_kv_equal(&cluster, "the downgrade");
    // Leader last, judged from outside: the member that led when the downgrade began was
    // the last one stopped.
    let last_stopped = seen
        .outages
        .iter()
        .filter(|o| o.process_gone)
        .max_by_key(|o| o.from)
        .map(|o| o.member);
    assert_eq!(
        last_stopped,
        Some(leader_before),
        "the leader did not go last: {}",
        seen.summary(sampled)
    );

    // Back up again by a plain staging of the newer binary.
    for i in 0..3 {
        stage(&cluster, i, &from.etcd());
    }
    wait_all_on(&cluster, &from.version(), Duration::from_secs(240));
    wait_cluster_version(&cluster, cluster_from, Duration::from_secs(30));
    for m in &cluster.members {
        m.wait_healthy();
    }
}

#[test]
fn downgrade_3_7_to_3_6_under_writes_then_upgraded_again() {
    round_trip(Release::V3_7, Release::V3_6, "3.7.0", "3.6.0");
}

#[test]
fn downgrade_3_6_to_3_5_under_writes_then_upgraded_again() {
    round_trip(Release::V3_6, Release::V3_5Go, "3.6.0", "3.5.0");
}

#[test]
fn a_cancel_midway_takes_the_downgraded_members_back() {
    let cluster = Cluster::start_supervised(Release::V3_7, 3, FAST);
    let (from, to) = (Release::V3_7.version(), Release::V3_6.version());
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    wait_parked(&cluster, &to);
    let out = supervisor(&cluster, &["downgrade", &to, "--no-wait"], 60);
    assert!(
        out.status.success(),
        "{}",
        crate::support::output_text(&out)
    );
    // Once one member runs the older minor, cancel.
    wait_for(Duration::from_secs(180), || {
        (0..3)
            .any(|i| server_version(&cluster, i).as_deref() == Some(to.as_str()))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("no member was downgraded\n{}", cluster.logs()));
    let out = supervisor(&cluster, &["downgrade", "--cancel"], 60);
    assert!(
        out.status.success(),
        "{}",
        crate::support::output_text(&out)
    );
    assert!(
        crate::support::output_text(&out).contains("cancelled"),
        "{}",
        crate::support::output_text(&out)
    );
    wait_all_on(&cluster, &from, Duration::from_secs(240));
    wait_cluster_version(&cluster, "3.7.0", Duration::from_secs(60));
    let status = supervisor(&cluster, &["status"], 20);
    eprintln!(
        "after the cancel:\n{}",
        crate::support::output_text(&status)
    );
    assert_hash_kv_equal(&cluster, "the cancelled downgrade");
}

#[test]
fn bad_downgrades_are_refused_and_change_nothing() {
    let cluster = Cluster::start_supervised(Release::V3_7, 3, FAST);
    // A new cluster answers cluster version 3.0 until its members agree on one; the
    // refusals below are judged against the decided 3.7.
    wait_cluster_version(&cluster, "3.7.0", Duration::from_secs(60));
    // Two minors down.
    let out = supervisor(&cluster, &["downgrade", &Release::V3_5Go.version()], 60);
    crate::support::assert_fails_saying(&out, &["one minor at a time"]);
    // Not staged anywhere.
    let out = supervisor(&cluster, &["downgrade", &Release::V3_6.version()], 60);
    crate::support::assert_fails_saying(&out, &["not staged on m1, m2, m3"]);
    // Staged on one member only.
    stage(&cluster, 0, &Release::V3_6.etcd());
    let reason = cluster.members[0].state_dir.join(format!(
        "staging/rejected/etcd-{}.reason",
        Release::V3_6.version()
    ));
    wait_for(Duration::from_secs(60), || reason.exists().then_some(()))
        .unwrap_or_else(|_| panic!("m1 did not park\n{}", cluster.logs()));
    let out = supervisor(&cluster, &["downgrade", &Release::V3_6.version()], 60);
    crate::support::assert_fails_saying(&out, &["not staged on m2, m3"]);
    // Nothing changed: cluster version, every member's version, no downgrade in etcd.
    assert_eq!(cluster_version(&cluster).as_deref(), Some("3.7.0"));
    for i in 0..3 {
        assert_eq!(server_version(&cluster, i), Some(Release::V3_7.version()));
    }
    let status = supervisor(&cluster, &["status"], 20);
    assert!(
        !crate::support::output_text(&status).contains("downgrade to"),
        "{}",
        crate::support::output_text(&status)
    );
}

#[test]
fn a_target_that_fails_on_the_migrated_data_is_rolled_back_and_the_downgrade_cancelled() {
    // The swap's own line of defence: with the rehearsal (on by default) the broken target
    // is refused before any stop, so it is off here.
    let opts: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--rehearsal", "never"])
        .collect();
    let cluster = Cluster::start_supervised(Release::V3_7, 3, &opts);
    let to = Release::V3_6.version();
    // Reports the real target version, but exits instead of serving.
    let fake = cluster.dir().join("etcd-broken");
    crate::support::write_script(
        &fake,
        &format!("#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'etcd Version: {to}'; exit 0; fi\necho 'broken etcd' >&2\nexit 3\n"),
    );
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    for i in 0..3 {
        stage(&cluster, i, &fake);
    }
    wait_parked(&cluster, &to);
    let out = supervisor(&cluster, &["downgrade", &to], 400);
    if out.status.code() != Some(1) {
        eprintln!("{}", cluster.logs());
    }
    crate::support::assert_fails_saying(&out, &["the downgrade was cancelled", "failed on"]);
    // Every member on the newer binary again, and the cluster version back on 3.7.
    wait_all_on(&cluster, &Release::V3_7.version(), Duration::from_secs(120));
    wait_cluster_version(&cluster, "3.7.0", Duration::from_secs(60));
    let seen = sampler.finish();
    eprintln!("outages: {}", seen.summary(sampled));
    assert_eq!(
        seen.outages.iter().filter(|o| o.process_gone).count(),
        1,
        "one member tried: {}",
        seen.summary(sampled)
    );
    assert!(
        cluster.logs().contains("cancelling the downgrade"),
        "{}",
        cluster.logs()
    );
}

/// m1's state as its record says (`status --json`).
fn record_state(cluster: &Cluster, name: &str) -> Option<String> {
    let out = supervisor(cluster, &["status", "--json"], 20);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["progress"][name]["state"].as_str().map(str::to_owned)
}

/// m1's supervisor is held in `state` (the failpoint) during the downgrade's turns,
/// SIGKILLed there and restarted; the downgrade must finish, never two members down.
fn killed_in(state: &str) {
    if !cfg!(feature = "failpoints") {
        panic!("the crash tests need `--features failpoints` (scripts/test enables it)");
    }
    let mut cluster = Cluster::new(
        Release::V3_7,
        3,
        crate::support::Mode::Supervised(FAST.iter().map(|s| s.to_string()).collect()),
    );
    cluster.members[0].env.push((
        "ETCD_SUPERVISOR_FAILPOINT_PAUSE".into(),
        format!("{state}:5s"),
    ));
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let t0 = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let to = Release::V3_6.version();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    wait_parked(&cluster, &to);
    let out = supervisor(&cluster, &["downgrade", &to, "--no-wait"], 60);
    assert!(
        out.status.success(),
        "{}",
        crate::support::output_text(&out)
    );
    // The driver writes state.json, then its record in etcd, then pauses: the pause's log
    // line is the trigger (a file read; `status --json` took longer than the pause on a
    // loaded host, and the kill then landed a state later).
    wait_for(Duration::from_secs(120), || {
        cluster.members[0]
            .log_text()
            .contains("failpoint: pausing")
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 never reached {state}\n{}", cluster.logs()));
    let on_disk = std::fs::read_to_string(cluster.members[0].state_dir.join("state.json"))
        .expect("state.json");
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).expect("JSON");
    assert_eq!(
        on_disk["phase"], state,
        "killed in another state: {on_disk}"
    );
    // The etcd that dies with its supervisor is the test's doing, not a turn's stop.
    if let Some(pid) = etcd_pid_of(&cluster.members[0].spec.data_dir) {
        sampler.kills().lock().unwrap().push((0, pid));
    }
    drop(cluster.members[0].kill());
    assert_eq!(
        record_state(&cluster, "m1").as_deref(),
        Some(state),
        "m1's record in etcd when it was killed"
    );
    cluster.members[0].env.clear();
    cluster.members[0].start();
    // Running the command again follows the downgrade to its end.
    let out = supervisor(&cluster, &["downgrade", &to], 400);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::support::output_text(&out),
        cluster.logs()
    );
    wait_all_on(&cluster, &to, Duration::from_secs(60));
    wait_cluster_version(&cluster, "3.6.0", Duration::from_secs(30));
    for m in &cluster.members {
        m.wait_healthy();
    }
    let report = sampler.finish();
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    // The test's kill may land while another member is in its turn's stop (seen: m1
    // killed while queued, 0.1 s into m3's stop): two out, by the test's doing.
    assert!(
        report.second_outages().is_empty() && report.max_out_but_kills <= 1,
        "two members down at once: {}",
        report.summary(t0)
    );
    assert_eq!(
        report.stops_without_the_turn(&names),
        [],
        "{}",
        report.summary(t0)
    );
    assert_hash_kv_equal(&cluster, "the downgrade");
}

#[test]
fn downgrade_survives_a_supervisor_killed_while_queued() {
    killed_in("queued");
}

#[test]
fn downgrade_survives_a_supervisor_killed_while_stopping() {
    killed_in("stopping");
}

#[test]
fn downgrade_survives_a_supervisor_killed_while_starting() {
    killed_in("starting");
}

#[test]
fn downgrade_survives_a_supervisor_killed_while_verifying() {
    killed_in("verifying");
}

#[test]
fn downgrade_survives_a_supervisor_killed_in_preflight() {
    killed_in("preflight");
}

#[test]
fn downgrade_survives_a_supervisor_killed_during_backup() {
    killed_in("backup");
}

#[test]
fn downgrade_survives_a_supervisor_killed_while_swapping() {
    killed_in("swapping");
}

/// A 3-member 3.7.4 cluster serving clients only over mutual TLS (`--client-cert-auth`):
/// `downgrade 3.6.17` given `--cacert/--cert/--key` validates, enables, follows every
/// supervisor's turn (each over the same TLS) and confirms the end; a writer holding the
/// client certificate loses nothing, and HashKV, read over TLS, is equal.
#[test]
fn downgrade_over_mutual_tls_3_7_to_3_6_loses_nothing() {
    use crate::support::{pki, Mode};
    use crate::v3_6_refusals::{lost_and_hashes, tls_version, ClientWriter};
    use etcd_supervisor::etcd::ClientConfig;

    let mut cluster = Cluster::new(Release::V3_7, 3, Mode::Bare);
    let dir = cluster.dir().to_path_buf();
    let ip = cluster.members[0].spec.ip.clone();
    assert!(
        cluster.members.iter().all(|m| m.spec.ip == ip),
        "one certificate covers one address"
    );
    pki::make_pki(&dir, &ip);
    let tls_opts: Vec<String> = vec![
        format!("--cacert={}", dir.join("ca.pem").display()),
        format!("--cert={}", dir.join("client.pem").display()),
        format!("--key={}", dir.join("client-key.pem").display()),
    ];
    let mut opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    opts.extend(tls_opts.iter().cloned());
    let https: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("https://{}:{}", m.spec.ip, m.spec.client_port))
        .collect();
    for (m, url) in cluster.members.iter_mut().zip(&https) {
        m.mode = Mode::Supervised(opts.clone());
        m.etcd_extra = vec![
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--cert-file={}", dir.join("server.pem").display()),
            format!("--key-file={}", dir.join("server-key.pem").display()),
            format!("--trusted-ca-file={}", dir.join("ca.pem").display()),
            "--client-cert-auth".to_owned(),
        ];
        m.start();
    }
    let (from, to) = (Release::V3_7.version(), Release::V3_6.version());
    for url in &https {
        wait_for(Duration::from_secs(60), || {
            tls_version(Release::V3_7, &dir, url).filter(|v| v == &from)
        })
        .unwrap_or_else(|_| panic!("{url} not on {from} over TLS\n{}", cluster.logs()));
    }
    let tls_client = || ClientConfig {
        cacert: Some(dir.join("ca.pem")),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
        ..ClientConfig::new(https.clone())
    };
    let writer = ClientWriter::start(tls_client(), "tls-downgrade");
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    wait_parked(&cluster, &to);
    let out = Command::new("timeout")
        .args(["400", SUPERVISOR, "downgrade", &to, "--endpoints"])
        .arg(https.join(","))
        .args(&tls_opts)
        .output()
        .expect("run downgrade");
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::support::output_text(&out),
        cluster.logs()
    );
    assert!(
        crate::support::output_text(&out).contains("the cluster finished the downgrade"),
        "{}",
        crate::support::output_text(&out)
    );
    for url in &https {
        wait_for(Duration::from_secs(60), || {
            tls_version(Release::V3_6, &dir, url).filter(|v| v == &to)
        })
        .unwrap_or_else(|_| panic!("{url} not on {to} over TLS\n{}", cluster.logs()));
    }
    let acked = writer.finish();
    assert!(acked.len() > 20, "the writer barely wrote: {}", acked.len());
    assert_eq!(lost_and_hashes(tls_client(), &https, &acked), 0);
}

#[test]
fn downgrade_with_auth_enabled_runs_as_the_admin_user() {
    let mut cluster = Cluster::start_supervised(Release::V3_7, 3, FAST);
    crate::support::pki::enable_auth(&cluster.members[0].client_url());
    let mut opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    opts.extend(["--user".to_owned(), "root".to_owned()]);
    for m in &mut cluster.members {
        m.env
            .push(("ETCD_SUPERVISOR_PASSWORD".into(), "rootpw".into()));
        m.stop();
        m.mode = crate::support::Mode::Supervised(opts.clone());
        m.start();
        m.wait_healthy();
    }
    let to = Release::V3_6.version();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    wait_parked(&cluster, &to);
    // Without credentials the command cannot even read the cluster: nothing changes.
    let out = supervisor(&cluster, &["downgrade", &to], 60);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::support::output_text(&out)
    );
    assert_eq!(cluster_version(&cluster).as_deref(), Some("3.7.0"));
    let out = Command::new("timeout")
        .args([
            "400",
            SUPERVISOR,
            "downgrade",
            &to,
            "--user",
            "root",
            "--endpoints",
        ])
        .arg(cluster.client_urls().join(","))
        .env("ETCD_SUPERVISOR_PASSWORD", "rootpw")
        .output()
        .expect("run downgrade");
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::support::output_text(&out),
        cluster.logs()
    );
    wait_all_on(&cluster, &to, Duration::from_secs(60));
    wait_cluster_version(&cluster, "3.6.0", Duration::from_secs(30));
}

/// A member cut off from the others (its own network namespace) while the first member
/// verifies on the older minor: no member stops while it is cut off, it is neither stopped
/// twice nor left behind, and the downgrade finishes after the heal.
#[test]
fn a_member_partitioned_mid_downgrade_is_neither_double_stopped_nor_left_behind() {
    use crate::support::netns::NsCluster;
    if !cfg!(feature = "failpoints") {
        panic!("needs `--features failpoints` (scripts/test enables it)");
    }
    let opts: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    let mut ns = NsCluster::new(Release::V3_7, 3, crate::support::Mode::Supervised(opts));
    ns.cluster.members[0].env.push((
        "ETCD_SUPERVISOR_FAILPOINT_PAUSE".into(),
        "verifying:6s".into(),
    ));
    ns.start_all();
    let t0 = Instant::now();
    let sampler = Sampler::start(&ns.cluster, ns.hosts.partitions.clone());
    let writer = Writer::start(ns.cluster.client_urls(), "partition");
    let to = Release::V3_6.version();
    for i in 0..3 {
        stage(&ns.cluster, i, &Release::V3_6.etcd());
    }
    wait_parked(&ns.cluster, &to);
    let out = supervisor(&ns.cluster, &["downgrade", &to, "--no-wait"], 60);
    assert!(
        out.status.success(),
        "{}",
        crate::support::output_text(&out)
    );
    wait_for(Duration::from_secs(120), || {
        (record_state(&ns.cluster, "m1").as_deref() == Some("verifying")).then_some(())
    })
    .unwrap_or_else(|_| panic!("m1 never verified\n{}", ns.cluster.logs()));
    // m3 is cut off while m1 verifies, for longer than the lock's lease.
    ns.hosts.partition(2);
    std::thread::sleep(Duration::from_secs(8));
    ns.hosts.heal(2);
    let healed = Instant::now();
    wait_all_on(&ns.cluster, &to, Duration::from_secs(240));
    wait_cluster_version(&ns.cluster, "3.6.0", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let urls = ns.cluster.client_urls();
    let writes = writer.finish();
    let report = sampler.finish();
    let lost = count_lost(&urls[0], &writes.acked);
    eprintln!(
        "partition mid-downgrade: {}; writes acked {}, lost {lost}; done {:?} after the heal",
        report.summary(t0),
        writes.acked.len(),
        healed.elapsed()
    );
    assert_eq!(lost, 0);
    assert!(
        report.second_outages().is_empty(),
        "a member went down while another was down: {}\n{}",
        report.summary(t0),
        ns.cluster.logs()
    );
    let names: Vec<String> = ns
        .cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(
        report.stops_without_the_turn(&names),
        [],
        "{}",
        report.summary(t0)
    );
    // Each member stopped exactly once: m3 was not stopped twice, nor skipped.
    for (i, pids) in report.pids.iter().enumerate() {
        assert_eq!(
            pids.len(),
            2,
            "m{}: {pids:?}\n{}",
            i + 1,
            report.summary(t0)
        );
    }
}
