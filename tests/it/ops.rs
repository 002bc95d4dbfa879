//! Operators in control of a rollout, on real 3-member clusters under three supervisors:
//! `pause`/`resume`, `--window`, `--soak` and `--canary-soak`.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::rollout::{server_version, stage, wait_all_on};
use crate::support::outage::Sampler;
use crate::support::{self, http_get, wait_for_every, Cluster, Mode, Release};

/// The supervisor's command line, bounded at 60 s.
fn sup(args: &[&str]) -> Output {
    support::run_supervisor(args, 60)
}

/// Three supervised 3.4 members with fast options (but a 10 s turn lease) plus `extra`, and
/// no dress rehearsal:
/// these tests are about when turns start and end, not about vetting.
/// m1 serves its metrics on the allocation's port 9 ([`m1_metric`]).
fn start(extra: &[&str]) -> Cluster {
    // FAST, but a turn here is held for long soaks on a loaded machine: a lease of FAST's
    // 3 s can lapse between keepalives there, and a lapsed turn lets a second member start.
    let mut opts: Vec<String> = [
        "--lock-ttl",
        "10s",
        "--ready-timeout",
        "20s",
        "--health-interval",
        "200ms",
        "--rehearsal",
        "never",
    ]
    .map(String::from)
    .to_vec();
    opts.extend(extra.iter().map(|s| s.to_string()));
    let mut cluster = Cluster::new(Release::V3_4, 3, Mode::Supervised(opts));
    let addr = format!("{}:{}", cluster.net.ip, cluster.net.port(9));
    cluster.members[0]
        .env
        .push(("ETCD_SUPERVISOR_METRICS_ADDR".into(), addr));
    for m in &mut cluster.members {
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    // A fresh cluster reports 3.0 for a moment, and the path rules refuse to move from that.
    poll(Duration::from_secs(30), || {
        let (_, body) = http_get(
            &format!("{}/version", cluster.members[0].client_url()),
            Duration::from_secs(1),
        )?;
        body.contains("\"etcdcluster\":\"3.4.0\"").then_some(())
    })
    .unwrap_or_else(|_| panic!("cluster version never settled\n{}", cluster.logs()));
    cluster
}

/// The value of `series` in m1's metrics.
fn m1_metric(cluster: &Cluster, series: &str) -> Option<f64> {
    let url = format!("http://{}:{}/metrics", cluster.net.ip, cluster.net.port(9));
    let (_, body) = http_get(&url, Duration::from_secs(2))?;
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` every 250 ms (each look runs `status`, a process) for up to `timeout`.
fn poll<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Result<T, String> {
    wait_for_every(timeout, Duration::from_millis(250), f)
}

fn endpoints(cluster: &Cluster) -> String {
    cluster.client_urls().join(",")
}

fn pause(cluster: &Cluster, reason: &str) -> String {
    let out = sup(&[
        "pause",
        "--reason",
        reason,
        "--endpoints",
        &endpoints(cluster),
    ]);
    assert!(
        out.status.success(),
        "pause failed: {}",
        support::output_text(&out)
    );
    support::output_text(&out)
}

fn resume(cluster: &Cluster) -> String {
    let out = sup(&["resume", "--endpoints", &endpoints(cluster)]);
    assert!(
        out.status.success(),
        "resume failed: {}",
        support::output_text(&out)
    );
    support::output_text(&out)
}

fn status_json(cluster: &Cluster) -> serde_json::Value {
    let out = sup(&["status", "--json", "--endpoints", &endpoints(cluster)]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn status_text(cluster: &Cluster) -> String {
    support::output_text(&sup(&["status", "--endpoints", &endpoints(cluster)]))
}

fn plan_m1(cluster: &Cluster, extra: &[&str]) -> String {
    let m = &cluster.members[0];
    let state_dir = m.state_dir.display().to_string();
    let mut args = vec![
        "plan",
        "--state-dir",
        &state_dir,
        "--member",
        "m1",
        "--endpoints",
    ];
    let urls = endpoints(cluster);
    args.push(&urls);
    args.extend_from_slice(extra);
    support::output_text(&sup(&args))
}

/// Each member's (state, held) from its progress record.
fn records(cluster: &Cluster) -> Vec<(String, String)> {
    let status = status_json(cluster);
    ["m1", "m2", "m3"]
        .iter()
        .map(|name| {
            let p = &status["progress"][name];
            (
                p["state"].as_str().unwrap_or("-").to_owned(),
                p["held"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until every member is queued and held for a reason containing `needle`.
fn wait_all_held(cluster: &Cluster, needle: &str) {
    poll(Duration::from_secs(40), || {
        records(cluster)
            .iter()
            .all(|(state, held)| state == "queued" && held.contains(needle))
            .then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "not every member held by {needle:?} at {}: {:?}\n{}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            records(cluster),
            cluster.logs()
        )
    });
}

/// The first member whose record says `state`.
fn wait_member_in(cluster: &Cluster, state: &str, timeout: Duration) -> usize {
    poll(timeout, || {
        records(cluster).iter().position(|(s, _)| s == state)
    })
    .unwrap_or_else(|_| panic!("no member reached {state}\n{}", cluster.logs()))
}

fn versions(cluster: &Cluster) -> Vec<Option<String>> {
    (0..cluster.members.len())
        .map(|i| server_version(cluster, i))
        .collect()
}

#[test]
fn pause_holds_a_staged_cluster_and_resume_rolls_it() {
    let cluster = start(&[]);
    let old = Release::V3_4.version();
    let new = Release::V3_5.version();
    let said = pause(&cluster, "investigating a slow disk");
    assert!(said.contains("paused by"), "{said}");
    // A second pause keeps the first one's who and why.
    let again = sup(&[
        "pause",
        "--reason",
        "other",
        "--endpoints",
        &endpoints(&cluster),
    ]);
    assert!(again.status.success(), "{}", support::output_text(&again));
    assert!(
        support::output_text(&again).contains("already paused")
            && support::output_text(&again).contains("slow disk"),
        "{}",
        support::output_text(&again)
    );
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    wait_all_held(&cluster, "investigating a slow disk");
    assert_eq!(
        m1_metric(&cluster, "etcd_supervisor_held{by=\"pause\"}"),
        Some(1.0)
    );
    assert_eq!(
        m1_metric(&cluster, "etcd_supervisor_held{by=\"window\"}"),
        Some(0.0)
    );
    let status = status_text(&cluster);
    assert!(
        status.contains("upgrades PAUSED: paused by") && status.contains("m2: held: paused by"),
        "{status}"
    );
    let plan = plan_m1(&cluster, &[]);
    assert!(
        plan.contains(&format!("decision for {new}: wait: upgrades are paused by"))
            && plan.contains("investigating a slow disk"),
        "{plan}"
    );
    // Held for 15 s: nothing moves.
    let held_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < held_until {
        assert_eq!(
            versions(&cluster),
            vec![Some(old.clone()); 3],
            "{}",
            cluster.logs()
        );
        for (state, held) in records(&cluster) {
            assert_eq!(state, "queued", "{}", cluster.logs());
            assert!(held.contains("paused by"), "{held}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for m in &cluster.members {
        let log = m.log_text();
        assert!(log.contains("not starting a turn: paused by"), "{log}");
        assert!(!log.contains("state=\"preflight\""), "{log}");
    }
    let said = resume(&cluster);
    assert!(said.contains("upgrades resumed"), "{said}");
    wait_all_on(&cluster, &new, Duration::from_secs(120));
    assert!(resume(&cluster).contains("were not paused"));
    poll(Duration::from_secs(20), || {
        records(&cluster)
            .iter()
            .all(|(state, held)| state == "idle" && held.is_empty())
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("{:?}", records(&cluster)));
    assert_eq!(
        m1_metric(&cluster, "etcd_supervisor_held{by=\"pause\"}"),
        Some(0.0)
    );
}

#[test]
fn a_pause_mid_turn_lets_that_turn_finish_and_no_other_start() {
    let cluster = start(&["--soak", "8s"]);
    let old = Release::V3_4.version();
    let new = Release::V3_5.version();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    // Past its stop: verified, soaking.
    let first = wait_member_in(&cluster, "soaking", Duration::from_secs(60));
    pause(&cluster, "hold after this one");
    poll(Duration::from_secs(30), || {
        let (state, _) = records(&cluster)[first].clone();
        (state == "idle").then_some(())
    })
    .unwrap_or_else(|_| panic!("the soaking member did not finish\n{}", cluster.logs()));
    assert_eq!(server_version(&cluster, first), Some(new.clone()));
    assert!(cluster.members[first].log_text().contains("soak passed"));
    // The others are held, some after acquiring the turn and giving it back.
    poll(Duration::from_secs(15), || {
        records(&cluster)
            .iter()
            .enumerate()
            .all(|(i, (_, held))| i == first || held.contains("hold after this one"))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("{:?}\n{}", records(&cluster), cluster.logs()));
    // And no other member starts.
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        for (i, (state, held)) in records(&cluster).into_iter().enumerate() {
            if i != first {
                assert_eq!(state, "queued", "{}", cluster.logs());
                assert!(held.contains("hold after this one"), "{held}");
                assert_eq!(server_version(&cluster, i), Some(old.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (i, m) in cluster.members.iter().enumerate() {
        if i != first {
            let log = m.log_text();
            assert!(!log.contains("state=\"preflight\""), "{log}");
        }
    }
    resume(&cluster);
    wait_all_on(&cluster, &new, Duration::from_secs(120));
}

/// A cron spec (with seconds, UTC) that opens at `at` and stays open an hour.
fn window_at(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{s} {m} {h} * * * 1h")
}

/// How long the test watches the whole cluster held by the closed window before it opens:
/// a hold seen for less would prove little (30+ looks at the versions, 300 ms apart, and
/// the sampler's 200 looks at every member's etcd).
const HELD_BEFORE_OPEN: Duration = Duration::from_secs(10);

/// How long after the test starts the window opens: the start of three members, three
/// stagings and every member reporting itself held (about 20 s on a loaded 2-core
/// machine), plus [`HELD_BEFORE_OPEN`], with room to spare. A run slower than that fails,
/// saying so, rather than proving less.
const WINDOW_LEAD: Duration = Duration::from_secs(50);

#[test]
fn a_closed_window_holds_a_staged_cluster_until_it_opens() {
    // A whole second: the window's cron spec has no finer grain, so a fractional `opens`
    // would open the window up to a second before the test's idea of it.
    let lead = (SystemTime::now() + WINDOW_LEAD)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(lead.as_secs() + 1);
    let spec = window_at(opens);
    let cluster = start(&["--window", &spec]);
    let sampler = Sampler::start(&cluster, Default::default());
    let old = Release::V3_4.version();
    let new = Release::V3_5.version();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    wait_all_held(
        &cluster,
        "outside the maintenance windows; the next opens at",
    );
    let held_at = SystemTime::now();
    assert!(
        held_at + HELD_BEFORE_OPEN <= opens,
        "the cluster was held only {:?} before the window opened (the setup took too long): \
         the test cannot show the hold; raise WINDOW_LEAD",
        opens.duration_since(held_at).unwrap_or_default()
    );
    assert_eq!(
        m1_metric(&cluster, "etcd_supervisor_held{by=\"window\"}"),
        Some(1.0)
    );
    let plan = plan_m1(&cluster, &["--window", &spec]);
    let at = humantime::format_rfc3339_seconds(opens).to_string();
    assert!(
        plan.contains(&format!(
            "windows: outside the maintenance windows; the next opens at {at}"
        )) && plan.contains(&format!("decision for {new}: wait: outside")),
        "{plan}"
    );
    while SystemTime::now() + Duration::from_millis(500) < opens {
        assert_eq!(
            versions(&cluster),
            vec![Some(old.clone()); 3],
            "{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_all_on(&cluster, &new, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    let report = sampler.finish();
    // `opens` on the sampler's clock.
    let opens_at = Instant::now()
        - SystemTime::now()
            .duration_since(opens)
            .expect("the window is open");
    // Seen from outside: nobody stopped before the window opened, each member once.
    for i in 0..3 {
        let stops = report.stops_of(i);
        assert_eq!(stops.len(), 1, "m{}: {}", i + 1, report.summary(opens_at));
        assert!(stops[0].from >= opens_at, "{}", report.summary(opens_at));
        assert_eq!(report.pids[i].len(), 2, "{}", report.summary(opens_at));
    }
    assert!(
        report.second_outages().is_empty(),
        "{}",
        report.summary(opens_at)
    );
}

/// The pid of member `i`'s etcd child (the supervisor's process group, minus itself).
fn etcd_child(cluster: &mut Cluster, i: usize) -> i32 {
    let sup_pid = cluster.members[i].proc().pid().as_raw();
    let pids = cluster.members[i].proc().group_pids();
    pids.into_iter()
        .find(|pid| {
            *pid != sup_pid
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "etcd")
        })
        .unwrap_or_else(|| panic!("no etcd child under m{}", i + 1))
}

#[test]
fn a_member_killed_during_its_canary_soak_is_rolled_back_and_the_version_rejected() {
    let mut cluster = start(&["--canary-soak", "30s"]);
    let sampler = Sampler::start(&cluster, Default::default());
    let t0 = Instant::now();
    let old = Release::V3_4.version();
    let new = Release::V3_5.version();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_5.etcd());
    }
    let first = wait_member_in(&cluster, "soaking", Duration::from_secs(60));
    assert_eq!(server_version(&cluster, first), Some(new.clone()));
    let pid = etcd_child(&mut cluster, first);
    // That process's end is the test's doing.
    sampler.kills().lock().unwrap().push((first, pid));
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let rejected = poll(Duration::from_secs(60), || {
        let status = status_json(&cluster);
        let r = status["rejected"][new.as_str()].clone();
        (!r.is_null()).then_some(r)
    })
    .unwrap_or_else(|_| panic!("{new} never rejected\n{}", cluster.logs()));
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failed during the soak") && reason.contains("exited"),
        "{rejected}"
    );
    assert_eq!(
        rejected["member"],
        cluster.members[first].spec.name.as_str()
    );
    poll(Duration::from_secs(30), || {
        (versions(&cluster) == vec![Some(old.clone()); 3]).then_some(())
    })
    .unwrap_or_else(|_| panic!("not every member on {old}\n{}", cluster.logs()));
    cluster.members[first].wait_healthy();
    let log = cluster.members[first].log_text();
    assert!(log.contains("soak failed"), "{log}");
    let report = sampler.finish();
    eprintln!("figures: {}", report.summary(t0));
    // Seen from outside: the others never stopped (one etcd process each, the first
    // one); the canary ran 3.4, 3.5 (killed by the test), 3.4 again; every stop but the
    // test's was made with the turn, and none while another member was down.
    for i in (0..3).filter(|i| *i != first) {
        assert_eq!(report.pids[i].len(), 1, "{}", report.summary(t0));
        assert!(report.stops_of(i).is_empty(), "{}", report.summary(t0));
    }
    // (4 when its run loop restarted the killed 3.5 before the rollback stopped it.)
    assert!(
        [3, 4].contains(&report.pids[first].len()),
        "{}",
        report.summary(t0)
    );
    let names: Vec<String> = cluster
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
    assert!(report.second_outages().is_empty(), "{}", report.summary(t0));
}

#[test]
fn pause_and_resume_fail_clearly_when_the_cluster_is_unreachable() {
    let net = support::Net::allocate();
    let url = format!("http://{}:{}", net.ip, net.port(0));
    for cmd in ["pause", "resume"] {
        let out = sup(&[cmd, "--endpoints", &url, "--request-timeout", "1s"]);
        support::assert_fails_saying(
            &out,
            &[
                &format!("cannot {cmd} upgrades: the cluster did not answer"),
                &url,
                "nothing was changed",
            ],
        );
    }
    let out = sup(&["run", "--window", "0 2 * * SAT"]);
    assert_eq!(out.status.code(), Some(2), "{}", support::output_text(&out));
    assert!(
        support::output_text(&out).contains("is not a duration"),
        "{}",
        support::output_text(&out)
    );
}
