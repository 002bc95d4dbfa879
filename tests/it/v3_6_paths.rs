//! The upgrade paths operators take through 3.5, 3.6 and 3.7, on real binaries: three
//! members under three supervisors, the target staged on all three at once, a writer
//! running throughout. Every path must lose no acknowledged write, never have two members
//! down (judged from outside by [`Sampler`]: etcd processes and `/health`), stop a member
//! only while it holds the turn, and end with every member's HashKV equal.
//!
//! A minor upgrade also has the cluster version judged from outside: `/version` of every
//! member sampled every 100 ms shows the cluster version moving only once every member
//! runs the new minor; the supervisors announce the point of no return before the last
//! member stops (its log) and while the upgrade is under way (`status`); afterwards
//! `status` shows the storage version.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fast_stop::{assert_hash_kv_equal, quick_clean_stop, swap_stops};
use crate::rollout::{count_lost, stage, wait_all_on, Writer, FAST};
use crate::support::outage::Sampler;
use crate::support::{
    http_get, http_post, wait_cluster_version_decided, wait_for, Cluster, Release, SUPERVISOR,
};

/// One rollout, staged on all members at once, may take this long (minor upgrades wait for
/// etcd to move the cluster version; the machine is shared).
const ROLLOUT: Duration = Duration::from_secs(240);

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `(server, cluster)` versions member `url` reports on `/version`.
fn versions_of(url: &str) -> Option<(String, String)> {
    let (status, body) = http_get(&format!("{url}/version"), Duration::from_millis(500))?;
    (status == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((
        v["etcdserver"].as_str()?.to_owned(),
        v["etcdcluster"].as_str()?.to_owned(),
    ))
}

/// One round of `/version` over every member.
#[derive(Debug, Clone)]
struct VersionSample {
    at: Instant,
    /// Per member: `(server, cluster)`, `None` when it did not answer.
    members: Vec<Option<(String, String)>>,
}

/// `/version` of every member every 100 ms, and `etcd-supervisor status` every 1.5 s, from
/// outside the supervisors.
struct VersionWatch {
    stop: Arc<AtomicBool>,
    versions: JoinHandle<Vec<VersionSample>>,
    statuses: JoinHandle<Vec<String>>,
}

impl VersionWatch {
    fn start(cluster: &Cluster) -> VersionWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let urls = cluster.client_urls();
        let flag = stop.clone();
        let versions = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let members = urls.iter().map(|u| versions_of(u)).collect();
                out.push(VersionSample { at, members });
                if let Some(rest) = Duration::from_millis(100).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            out
        });
        let endpoints = cluster.client_urls().join(",");
        let flag = stop.clone();
        let statuses = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                if let Ok(o) = Command::new("timeout")
                    .args(["10", SUPERVISOR, "status", "--endpoints", &endpoints])
                    .output()
                {
                    out.push(String::from_utf8_lossy(&o.stdout).into_owned());
                }
                // Back to back but for a short rest: the window it must catch (first member
                // on the new minor until the cluster version moves) is a few seconds, and
                // 1.5 s between samples missed it once under CI's load (4 samples taken).
                if let Some(rest) = Duration::from_millis(250).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            out
        });
        VersionWatch {
            stop,
            versions,
            statuses,
        }
    }

    fn finish(self) -> (Vec<VersionSample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.versions.join().expect("version sampler"),
            self.statuses.join().expect("status sampler"),
        )
    }
}

/// "3.6" of "3.6.17".
fn minor(version: &str) -> &str {
    version.rsplit_once('.').map_or(version, |(m, _)| m)
}

/// Asserts, over `/version` samples, that no member reported the cluster version `to`'s
/// minor while any member still ran an older minor, and that it did move once all ran `to`.
/// Returns the index of the member that was last to report `to`.
fn assert_cluster_version_moved_last(samples: &[VersionSample], to: &str) -> usize {
    let target_cluster = format!("{}.0", minor(to));
    let mut first_on_target: Vec<Option<Instant>> = vec![None; samples[0].members.len()];
    let mut moved: Option<Instant> = None;
    for s in samples {
        let old_running = s
            .members
            .iter()
            .flatten()
            .any(|(server, _)| minor(server) != minor(to));
        let reported_moved = s
            .members
            .iter()
            .flatten()
            .any(|(_, cluster)| *cluster == target_cluster);
        assert!(
            !(old_running && reported_moved),
            "the cluster version was {target_cluster} while a member still ran an older minor: {s:?}"
        );
        for (i, m) in s.members.iter().enumerate() {
            if m.as_ref().is_some_and(|(server, _)| server == to) && first_on_target[i].is_none() {
                first_on_target[i] = Some(s.at);
            }
        }
        if reported_moved && moved.is_none() {
            moved = Some(s.at);
        }
    }
    let firsts: Vec<Instant> = first_on_target
        .iter()
        .map(|t| t.expect("every member was seen on the target"))
        .collect();
    let (last, last_at) = firsts
        .iter()
        .enumerate()
        .max_by_key(|(_, t)| **t)
        .map(|(i, t)| (i, *t))
        .expect("members");
    let moved =
        moved.unwrap_or_else(|| panic!("the cluster version never became {target_cluster}"));
    assert!(
        moved >= last_at,
        "the cluster version moved {:?} before the last member (m{}) ran {to}",
        last_at - moved,
        last + 1
    );
    eprintln!(
        "cluster version {target_cluster} first seen {:.2} s after m{} first reported {to}",
        (moved - last_at).as_secs_f64(),
        last + 1
    );
    last
}

/// The last member's supervisor announced the point of no return before it stopped etcd.
fn assert_point_of_no_return_before_stop(cluster: &Cluster, last: usize, to: &str) {
    let log = cluster.members[last].log_text();
    let name = &cluster.members[last].spec.name;
    let note = format!("{name} is the last member to move to {}", minor(to));
    let announced = log
        .lines()
        .position(|l| l.contains(&note))
        .unwrap_or_else(|| panic!("{name} never announced the point of no return:\n{log}"));
    // Its stop for this upgrade: the last `stopping` of its log (each minor is one swap).
    let stopped = log
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("upgrade state changed") && l.contains("state=\"stopping\""))
        .map(|(n, _)| n)
        .last()
        .unwrap_or_else(|| panic!("{name} never stopped:\n{log}"));
    assert!(
        announced < stopped,
        "{name} announced the point of no return after it stopped etcd:\n{log}"
    );
    let line = log.lines().nth(announced).unwrap_or_default();
    assert!(line.contains("no longer possible"), "{line}");
}

/// While the minor upgrade was under way, `status` said so (the point of no return).
fn assert_status_showed_point_of_no_return(statuses: &[String], to: &str) {
    let note = format!("note: a minor upgrade to {} is under way", minor(to));
    assert!(
        statuses.iter().any(|s| s.contains(&note)),
        "no status printed `{note}` during the rollout ({} taken); the last:\n{}",
        statuses.len(),
        statuses.last().map_or("", String::as_str)
    );
}

/// `status` (human and JSON) shows every member's storage version once etcd set it.
fn assert_status_shows_storage_version(cluster: &Cluster, to: &str) {
    let want = format!("{}.0", minor(to));
    let endpoints = cluster.client_urls().join(",");
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    // etcd writes the storage version a little after the cluster version moves.
    let json = wait_for(Duration::from_secs(60), || {
        let out = Command::new("timeout")
            .args([
                "10",
                SUPERVISOR,
                "status",
                "--json",
                "--endpoints",
                &endpoints,
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["members"]
            .as_array()?
            .iter()
            .all(|m| m["storage_version"] == want.as_str())
            .then_some(v)
    })
    .unwrap_or_else(|_| {
        panic!(
            "status never showed storage version {want}\n{}",
            cluster.logs()
        )
    });
    assert_eq!(json["cluster_version"], want.as_str(), "{json}");
    let out = Command::new("timeout")
        .args(["10", SUPERVISOR, "status", "--endpoints", &endpoints])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("storage versions: "))
        .unwrap_or_else(|| panic!("no storage versions line:\n{text}"));
    for name in &names {
        assert!(line.contains(&format!("{name} {want}")), "{line}");
    }
}

/// What every path checks once its rollouts are done: no acknowledged write lost, never
/// two members down or a stop without the turn (from outside), one stop per member and
/// rollout since the sampler started (`earlier_stops` before it), each one quick and clean,
/// and HashKV equal.
fn judge(
    cluster: &Cluster,
    sampler: Sampler,
    sampled: Instant,
    writer: Writer,
    rollouts: usize,
    earlier_stops: usize,
) {
    let urls = cluster.client_urls();
    std::thread::sleep(Duration::from_millis(300));
    let report = writer.finish();
    let lost = count_lost(&urls[0], &report.acked);
    eprintln!(
        "writes acked {}, attempts {}, failed attempts {}, longest stall {:?}, lost {lost}",
        report.acked.len(),
        report.attempts,
        report.failures,
        report.longest_stall
    );
    assert_eq!(lost, 0, "acknowledged writes lost\n{}", cluster.logs());
    assert!(report.acked.len() > 50, "writer barely ran: {report:?}");
    let seen = sampler.finish();
    eprintln!("outages: {}", seen.summary(sampled));
    assert!(
        seen.second_outages().is_empty(),
        "a member stopped while another was down: {}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    assert!(
        seen.max_out <= 1 && seen.max_down <= 1,
        "two members down at once: {}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    let names: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.name.clone())
        .collect();
    assert_eq!(
        seen.stops_without_the_turn(&names),
        [],
        "{}",
        seen.summary(sampled)
    );
    // One etcd process per version per member, one outage with the process gone per swap.
    for (i, pids) in seen.pids.iter().enumerate() {
        assert_eq!(
            pids.len(),
            rollouts + 1,
            "m{}: {pids:?}\n{}",
            i + 1,
            seen.summary(sampled)
        );
    }
    let swaps = seen.outages.iter().filter(|o| o.process_gone).count();
    assert_eq!(
        swaps,
        3 * rollouts,
        "{}\n{}",
        seen.summary(sampled),
        cluster.logs()
    );
    // Every swap stop of the cluster's life so far (a phase of a longer path follows others).
    let stops = swap_stops(cluster);
    assert_eq!(stops.len(), earlier_stops + 3 * rollouts, "{stops:#?}");
    assert!(
        stops.iter().all(|l| quick_clean_stop(l)),
        "a swap's stop waited for etcd's exit or escalated: {stops:#?}"
    );
    assert_hash_kv_equal(cluster, "the path");
}

/// Stages `to` on every member at once, waits until all run it, and returns the wall time.
fn roll(cluster: &Cluster, to: Release) -> Duration {
    for i in 0..cluster.members.len() {
        stage(cluster, i, &to.etcd());
    }
    roll_staged(cluster, to)
}

/// Waits until every member runs `to`, already staged, and every supervisor is idle.
fn roll_staged(cluster: &Cluster, to: Release) -> Duration {
    let t0 = Instant::now();
    wait_all_on(cluster, &to.version(), ROLLOUT);
    // Every supervisor idle again (the last one's consistency check included).
    let endpoints = cluster.client_urls().join(",");
    wait_for(Duration::from_secs(60), || {
        let out = Command::new("timeout")
            .args([
                "10",
                SUPERVISOR,
                "status",
                "--json",
                "--endpoints",
                &endpoints,
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let progress = v["progress"].as_object()?;
        (v["turn"]["holder"].is_null()
            && progress.len() == cluster.members.len()
            && progress
                .values()
                .all(|p| p["state"] == "idle" && p["running"] == to.version().as_str()))
        .then_some(())
    })
    .unwrap_or_else(|_| {
        panic!(
            "not every supervisor idle on {}\n{}",
            to.version(),
            cluster.logs()
        )
    });
    let took = t0.elapsed();
    eprintln!("rollout to {}: {took:?}", to.version());
    took
}

/// A minor rollout with the cluster version, the point of no return and (from 3.6 on) the
/// storage version judged from outside.
fn roll_minor(cluster: &Cluster, to: Release) {
    for i in 0..cluster.members.len() {
        stage(cluster, i, &to.etcd());
    }
    roll_minor_staged(cluster, to);
}

/// [`roll_minor`] of a version already staged.
fn roll_minor_staged(cluster: &Cluster, to: Release) {
    wait_cluster_version_decided(cluster);
    let watch = VersionWatch::start(cluster);
    roll_staged(cluster, to);
    // The cluster version moves a few seconds after the last member is up.
    let target_cluster = format!("{}.0", minor(&to.version()));
    wait_for(Duration::from_secs(60), || {
        cluster
            .client_urls()
            .iter()
            .all(|u| versions_of(u).is_some_and(|(_, c)| c == target_cluster))
            .then_some(())
    })
    .unwrap_or_else(|_| panic!("cluster version never {target_cluster}\n{}", cluster.logs()));
    let (samples, statuses) = watch.finish();
    let last = assert_cluster_version_moved_last(&samples, &to.version());
    assert_point_of_no_return_before_stop(cluster, last, &to.version());
    assert_status_showed_point_of_no_return(&statuses, &to.version());
    // Storage versions exist from 3.6 on.
    if minor(&to.version()) != "3.5" {
        assert_status_shows_storage_version(cluster, &to.version());
    }
}

/// Puts `key` = `value` through the first member that takes it.
fn put(cluster: &Cluster, key: &str, value: &str, lease: Option<i64>) {
    let lease = lease.map_or(String::new(), |l| format!(r#","lease":"{l}""#));
    let body = format!(
        r#"{{"key":"{}","value":"{}"{lease}}}"#,
        b64(key),
        b64(value)
    );
    wait_for(Duration::from_secs(20), || {
        cluster.client_urls().iter().find_map(|u| {
            let (status, _) = http_post(&format!("{u}/v3/kv/put"), &body, Duration::from_secs(2))?;
            (status == 200).then_some(())
        })
    })
    .unwrap_or_else(|_| panic!("put {key}\n{}", cluster.logs()));
}

/// The value of `key`, read through `url`.
fn get(url: &str, key: &str) -> Option<(String, Option<String>)> {
    let body = format!(r#"{{"key":"{}"}}"#, b64(key));
    let (status, answer) = http_post(&format!("{url}/v3/kv/range"), &body, Duration::from_secs(5))?;
    (status == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&answer).ok()?;
    let kv = &v["kvs"][0];
    use base64::Engine;
    let value = base64::engine::general_purpose::STANDARD
        .decode(kv["value"].as_str()?)
        .ok()?;
    Some((
        String::from_utf8_lossy(&value).into_owned(),
        kv["lease"].as_str().map(str::to_owned),
    ))
}

/// Keeps a lease alive through whichever member answers, once a second, until finished;
/// counts the keepalives that found the lease gone.
struct KeepAlive {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(usize, usize)>>,
    gone: Arc<Mutex<Vec<String>>>,
}

impl KeepAlive {
    fn start(urls: Vec<String>, id: i64) -> KeepAlive {
        let stop = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(Mutex::new(Vec::new()));
        let (flag, seen) = (stop.clone(), gone.clone());
        let handle = std::thread::spawn(move || {
            let (mut ok, mut n) = (0, 0usize);
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                for _ in 0..urls.len() {
                    n += 1;
                    let url = &urls[n % urls.len()];
                    let Some((200, body)) = http_post(
                        &format!("{url}/v3/lease/keepalive"),
                        &format!(r#"{{"ID":"{id}"}}"#),
                        Duration::from_secs(2),
                    ) else {
                        continue;
                    };
                    // An unknown lease answers 200 without a TTL.
                    if body.contains("\"TTL\"") {
                        ok += 1;
                    } else {
                        seen.lock().unwrap().push(body);
                    }
                    break;
                }
                if let Some(rest) = Duration::from_secs(1).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            (ok, n)
        });
        KeepAlive {
            stop,
            handle: Some(handle),
            gone,
        }
    }

    /// Stops; the keepalives that renewed the lease, and the answers that found it gone.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, _) = self
            .handle
            .take()
            .expect("running")
            .join()
            .expect("keepalive");
        let gone = self.gone.lock().unwrap().clone();
        (ok, gone)
    }
}

/// Path 1: the newest Debian 3.5 (3.5.30) to the newest 3.5 built from etcd's modules.
#[test]
fn path_3_5_30_to_newest_3_5_patch() {
    let cluster = Cluster::start_supervised(Release::V3_5Newest, 3, FAST);
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = Writer::start(cluster.client_urls(), "p1");
    std::thread::sleep(Duration::from_millis(300));
    wait_cluster_version_decided(&cluster);
    let watch = VersionWatch::start(&cluster);
    roll(&cluster, Release::V3_5Go);
    let (samples, _) = watch.finish();
    // A patch upgrade never moves the cluster version.
    assert!(
        samples
            .iter()
            .flat_map(|s| s.members.iter().flatten())
            .all(|(_, c)| c == "3.5.0"),
        "the cluster version moved in a patch upgrade"
    );
    judge(&cluster, sampler, sampled, writer, 1, 0);
}

/// Path 2: newest 3.5 → newest 3.6 (minor).
#[test]
fn path_newest_3_5_to_newest_3_6_minor() {
    let cluster = Cluster::start_supervised(Release::V3_5Go, 3, FAST);
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = Writer::start(cluster.client_urls(), "p2");
    std::thread::sleep(Duration::from_millis(300));
    roll_minor(&cluster, Release::V3_6);
    judge(&cluster, sampler, sampled, writer, 1, 0);
}

/// Path 3: 3.6.10 → newest 3.6 (patch), then → newest 3.7 (minor).
#[test]
fn path_3_6_10_to_newest_3_6_then_newest_3_7() {
    let cluster = Cluster::start_supervised(Release::V3_6_10, 3, FAST);
    let sampled = Instant::now();
    let sampler = Sampler::start(&cluster, Default::default());
    let writer = Writer::start(cluster.client_urls(), "p3");
    std::thread::sleep(Duration::from_millis(300));
    roll(&cluster, Release::V3_6);
    roll_minor(&cluster, Release::V3_7);
    judge(&cluster, sampler, sampled, writer, 2, 0);
}

/// Stages `release` with its etcdctl and etcdutl on member `i` (they travel with the
/// version: the v2store check before 3.6 uses the running 3.5's etcdutl).
fn stage_with_tools(cluster: &Cluster, i: usize, release: Release) {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(SUPERVISOR)
        .arg("stage")
        .arg(release.etcd());
    for tool in [Some(release.etcdctl()), release.etcdutl()]
        .into_iter()
        .flatten()
    {
        cmd.arg("--with").arg(tool);
    }
    let out = cmd
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

/// `pause` or `resume` through the real command.
fn pause(cluster: &Cluster, resume: bool) {
    let endpoints = cluster.client_urls().join(",");
    let mut cmd = Command::new("timeout");
    cmd.args(["30", SUPERVISOR]);
    if resume {
        cmd.arg("resume");
    } else {
        cmd.args(["pause", "--reason", "v2 WAL remedy"]);
    }
    let out = cmd
        .args(["--endpoints", &endpoints])
        .output()
        .expect("pause");
    assert!(out.status.success(), "{out:?}");
}

/// The operator's remedy for v2 requests left in a 3.5 member's WAL (etcd's 3.6 upgrade
/// guide), member by member with upgrades paused: stop the supervisor, run the member's own
/// 3.5 binary with its flags plus `--snapshot-count=1` until etcd logs a snapshot, stop it,
/// start the supervisor again (which checks the staged version again).
fn snapshot_remedy(cluster: &mut Cluster, release: Release) {
    pause(cluster, false);
    for i in 0..cluster.members.len() {
        let status = cluster.member(i).stop();
        assert_eq!(status.code(), Some(0), "{}", cluster.members[i].log_text());
        let spec = cluster.members[i].spec.clone();
        let log = cluster.dir().join(format!("{}-remedy.log", spec.name));
        let mut etcd = crate::support::Proc::spawn(
            Command::new(release.etcd())
                .args(spec.etcd_flags())
                .arg("--snapshot-count=1"),
            &log,
        );
        cluster.members[i].wait_healthy();
        put(cluster, &format!("remedy/{}", spec.name), "x", None);
        wait_for(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("triggering snapshot").then_some(())
        })
        .unwrap_or_else(|_| panic!("{} took no snapshot", spec.name));
        etcd.signal(nix::sys::signal::Signal::SIGTERM);
        etcd.wait_timeout(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{} did not stop", spec.name));
        drop(etcd);
        cluster.member(i).start();
        cluster.members[i].wait_healthy();
    }
    pause(cluster, true);
}

/// Path 4: one cluster through its life, 3.4.23 → newest 3.5 → newest 3.6 → newest 3.7,
/// with its data: a key written at each step is read back at the end, and a lease granted
/// at the start (kept alive by the test, its TTL far shorter than the whole path) survives
/// with its key. On the way, the supervisors refuse 3.6 before anything stops: 3.4's
/// `/health` checks left v2 requests in the WAL, on which 3.6.17 panics at replay (it did,
/// before this check: rolled back and rejected cluster-wide). The test then does what the
/// refusal says, and the path goes on.
#[test]
fn path_one_cluster_3_4_to_3_5_to_3_6_to_3_7() {
    // Long beside the keepalives (every second) and an election; shorter than the path.
    const TTL: i64 = 30;
    let mut cluster = Cluster::start_supervised(Release::V3_4, 3, FAST);
    let urls = cluster.client_urls();
    let (_, body) = http_post(
        &format!("{}/v3/lease/grant", urls[0]),
        &format!(r#"{{"TTL":"{TTL}"}}"#),
        Duration::from_secs(5),
    )
    .expect("lease grant");
    let grant: serde_json::Value = serde_json::from_str(&body).expect("grant answer");
    let lease: i64 = grant["ID"].as_str().expect("lease id").parse().expect("id");
    assert_eq!(grant["TTL"], TTL.to_string(), "{grant}");
    put(&cluster, "life/leased", "since 3.4", Some(lease));
    let keepalive = KeepAlive::start(urls.clone(), lease);
    let started = Instant::now();
    let steps = [Release::V3_4, Release::V3_5Go, Release::V3_6, Release::V3_7];
    put(&cluster, "life/3.4", &Release::V3_4.version(), None);

    // 3.4 → 3.5, its etcdutl staged with it.
    let (sampled, sampler) = (Instant::now(), Sampler::start(&cluster, Default::default()));
    let writer = Writer::start(urls.clone(), "p4-3.5");
    for i in 0..3 {
        stage_with_tools(&cluster, i, Release::V3_5Go);
    }
    roll_minor_staged(&cluster, Release::V3_5Go);
    judge(&cluster, sampler, sampled, writer, 1, 0);
    put(&cluster, "life/3.5", &Release::V3_5Go.version(), None);

    // → 3.6: refused by every member before anything stops, with the remedy.
    let pids: Vec<Vec<i32>> = (0..3)
        .map(|i| cluster.member(i).proc().group_pids())
        .collect();
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    for m in &cluster.members {
        wait_for(Duration::from_secs(60), || {
            m.log_text()
                .lines()
                .find(|l| l.contains("content in WAL records") && l.contains("refused"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|_| panic!("{} did not refuse 3.6\n{}", m.spec.name, m.log_text()));
    }
    let line = cluster.members[0]
        .log_text()
        .lines()
        .find(|l| l.contains("content in WAL records") && l.contains("refused"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("refusal: {line}");
    assert!(line.contains("--snapshot-count=1"), "{line}");
    let after: Vec<Vec<i32>> = (0..3)
        .map(|i| cluster.member(i).proc().group_pids())
        .collect();
    assert_eq!(pids, after, "an etcd was restarted by the refusal");
    for i in 0..3 {
        assert_eq!(
            crate::rollout::server_version(&cluster, i),
            Some(Release::V3_5Go.version())
        );
    }
    snapshot_remedy(&mut cluster, Release::V3_5Go);

    // → 3.6, the version still staged, then → 3.7.
    let (sampled, sampler) = (Instant::now(), Sampler::start(&cluster, Default::default()));
    let writer = Writer::start(urls.clone(), "p4-3.6");
    roll_minor_staged(&cluster, Release::V3_6);
    judge(&cluster, sampler, sampled, writer, 1, 3);
    put(&cluster, "life/3.6", &Release::V3_6.version(), None);
    let (sampled, sampler) = (Instant::now(), Sampler::start(&cluster, Default::default()));
    let writer = Writer::start(urls.clone(), "p4-3.7");
    roll_minor(&cluster, Release::V3_7);
    judge(&cluster, sampler, sampled, writer, 1, 6);
    put(&cluster, "life/3.7", &Release::V3_7.version(), None);
    assert!(
        started.elapsed() > Duration::from_secs(TTL as u64),
        "the path took less than the lease's TTL: its survival would prove nothing"
    );

    // Every step's key, from every member.
    for url in &urls {
        for from in &steps {
            let key = format!("life/{}", minor(&from.version()));
            let (value, _) = get(url, &key).unwrap_or_else(|| panic!("{key} gone on {url}"));
            assert_eq!(value, from.version(), "{key} on {url}");
        }
    }
    // The lease: alive, its TTL as granted, its key still attached.
    let (renewed, gone) = keepalive.finish();
    assert!(
        gone.is_empty(),
        "a keepalive found the lease gone: {gone:?}"
    );
    assert!(renewed > 0);
    let (_, body) = http_post(
        &format!("{}/v3/lease/timetolive", urls[2]),
        &format!(r#"{{"ID":"{lease}","keys":true}}"#),
        Duration::from_secs(5),
    )
    .expect("time to live");
    let ttl: serde_json::Value = serde_json::from_str(&body).expect("ttl answer");
    assert_eq!(ttl["grantedTTL"], TTL.to_string(), "{ttl}");
    let left: i64 = ttl["TTL"].as_str().unwrap_or("-1").parse().unwrap_or(-1);
    assert!(left > 0, "the lease expired: {ttl}");
    assert_eq!(ttl["keys"][0], b64("life/leased"), "{ttl}");
    let (value, attached) = get(&urls[1], "life/leased").expect("leased key");
    assert_eq!(value, "since 3.4");
    assert_eq!(attached, Some(lease.to_string()));
}

/// The same 3.4-era WAL when no etcdutl was staged to check it before the stop: 3.6.17
/// panics on it at the first member's start; that member rolls back to 3.5, the version
/// stays staged and is not rejected for the cluster (the member's data, not the version, is
/// at fault), and the reason names the remedy. Never two members down meanwhile.
#[test]
fn a_3_6_panic_on_the_3_4_eras_wal_rolls_back_without_rejecting_the_version() {
    let cluster = Cluster::start_supervised(Release::V3_4, 3, FAST);
    let urls = cluster.client_urls();
    roll(&cluster, Release::V3_5Go);
    let (sampled, sampler) = (Instant::now(), Sampler::start(&cluster, Default::default()));
    for i in 0..3 {
        stage(&cluster, i, &Release::V3_6.etcd());
    }
    let (member, line) = wait_for(Duration::from_secs(120), || {
        cluster.members.iter().find_map(|m| {
            m.log_text()
                .lines()
                .find(|l| l.contains("panicked replaying v2 requests"))
                .map(|l| (m.spec.name.clone(), l.to_owned()))
        })
    })
    .unwrap_or_else(|_| panic!("no member rolled back on the v2 WAL\n{}", cluster.logs()));
    eprintln!("{member}: {line}");
    assert!(line.contains("--snapshot-count=1"), "{line}");
    // Back on 3.5 everywhere, nothing rejected for the cluster.
    wait_all_on(
        &cluster,
        &Release::V3_5Go.version(),
        Duration::from_secs(60),
    );
    for m in &cluster.members {
        m.wait_healthy();
    }
    let seen = sampler.finish();
    eprintln!("outages: {}", seen.summary(sampled));
    assert!(
        seen.second_outages().is_empty() && seen.max_out <= 1,
        "{}",
        seen.summary(sampled)
    );
    let key = b64("/etcd-supervisor/rejected/3.6.17");
    let (_, body) = http_post(
        &format!("{}/v3/kv/range", urls[0]),
        &format!(r#"{{"key":"{key}"}}"#),
        Duration::from_secs(5),
    )
    .expect("range");
    assert!(!body.contains("\"kvs\""), "3.6.17 was rejected: {body}");
    let logs = cluster.logs();
    assert!(!logs.contains("rejected for the whole cluster"), "{logs}");
}
