//! What the upgrade benchmarks watch from outside the supervisors: a member's progress
//! record, a new version healthy and caught up, the leader as the members report it, and
//! the supervisors' own per-phase metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{self, http_get, http_post, wait_for_every, Cluster, Mode, Net, Release};

/// How often the outside pollers look.
pub const POLL: Duration = Duration::from_millis(5);

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn status(url: &str) -> Option<serde_json::Value> {
    let (code, body) = http_post(
        &format!("{url}/v3/maintenance/status"),
        "{}",
        Duration::from_secs(1),
    )?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The member's raft applied index.
pub fn applied(url: &str) -> Option<u64> {
    status(url)?["raftAppliedIndex"].as_str()?.parse().ok()
}

fn server_version(url: &str) -> Option<String> {
    let (_, body) = http_get(&format!("{url}/version"), Duration::from_secs(1))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["etcdserver"].as_str().map(str::to_owned)
}

/// Waits until the member at `url` reports the cluster version `X.Y.0` of `version`: the
/// last step of etcd's upgrade guides ("verify the cluster version"), which a careful
/// operator takes by hand too. etcd's leader moves it within one monitor interval (4 s).
pub fn wait_cluster_version(url: &str, version: &str) -> Instant {
    let minor: Vec<&str> = version.split('.').take(2).collect();
    let want = format!("{}.0", minor.join("."));
    wait_for_every(Duration::from_secs(60), POLL, || {
        let (_, body) = http_get(&format!("{url}/version"), Duration::from_secs(1))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["etcdcluster"].as_str()? == want).then_some(())
    })
    .expect("cluster version moved");
    Instant::now()
}

/// Waits until the member at `url` answers /health true on `version` and has applied as
/// much as the others had when it became healthy; when that was seen.
pub fn wait_new_caught_up(url: &str, others: &[String], version: &str) -> Instant {
    let health = format!("{url}/health");
    wait_for_every(Duration::from_secs(120), POLL, || {
        support::is_healthy(&health)?;
        (server_version(url)? == version).then_some(())
    })
    .expect("new version healthy");
    let want = others.iter().filter_map(|u| applied(u)).max().unwrap_or(0);
    wait_for_every(Duration::from_secs(60), POLL, || {
        (applied(url)? >= want).then_some(())
    })
    .expect("caught up");
    Instant::now()
}

/// The state in `member`'s progress record, read through `url` (another member).
pub fn record_state(url: &str, member: &str) -> Option<String> {
    let key = format!("/etcd-supervisor/members/{member}");
    let body = format!(r#"{{"key":"{}"}}"#, b64(&key));
    let (code, resp) = http_post(&format!("{url}/v3/kv/range"), &body, Duration::from_secs(1))?;
    (code == 200).then_some(())?;
    let v: serde_json::Value = serde_json::from_str(&resp).ok()?;
    let raw = v["kvs"][0]["value"].as_str()?;
    use base64::Engine;
    let json = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    let record: serde_json::Value = serde_json::from_slice(&json).ok()?;
    record["state"].as_str().map(str::to_owned)
}

/// Samples every member's reported leader every ~20 ms and counts the changes.
pub struct LeaderSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<usize>>,
}

impl LeaderSampler {
    /// Starts sampling; the leader seen at the start is the baseline.
    pub fn start(urls: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut last: Option<String> = None;
            let mut changes = 0;
            while !flag.load(Ordering::Relaxed) {
                // The first member that answers with a leader speaks for the cluster; a
                // member without one (mid-election) is skipped.
                let leader = urls.iter().find_map(|u| {
                    let l = status(u)?["leader"].as_str()?.to_owned();
                    (l != "0").then_some(l)
                });
                if let Some(l) = leader {
                    if last.as_ref().is_some_and(|p| *p != l) {
                        changes += 1;
                    }
                    last = Some(l);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            changes
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the number of leader changes seen.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map_or(0, |h| h.join().expect("leader sampler"))
    }
}

/// A supervised cluster whose supervisors serve metrics (on a second address block).
pub struct Observed {
    /// The cluster.
    pub cluster: Cluster,
    /// Each supervisor's metrics address.
    pub metrics: Vec<String>,
    _net: Net,
}

impl Observed {
    /// Starts `n` supervised members on `release` with `extra` options and metrics.
    pub fn start(release: Release, n: usize, extra: &[&str]) -> Self {
        let net = Net::allocate();
        let mut cluster = Cluster::new(release, n, Mode::Bare);
        let mut metrics = Vec::new();
        for (i, m) in cluster.members.iter_mut().enumerate() {
            let addr = format!("{}:{}", net.ip, net.port(i as u16));
            let mut opts: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            opts.extend(["--metrics-addr".to_owned(), addr.clone()]);
            m.mode = Mode::Supervised(opts);
            metrics.push(addr);
        }
        for m in &mut cluster.members {
            m.start();
        }
        for m in &cluster.members {
            m.wait_healthy();
        }
        Self {
            cluster,
            metrics,
            _net: net,
        }
    }

    /// The phase totals summed over every supervisor.
    pub fn phases(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for addr in &self.metrics {
            let Some((_, text)) =
                http_get(&format!("http://{addr}/metrics"), Duration::from_secs(2))
            else {
                continue;
            };
            for line in text.lines() {
                let Some(rest) =
                    line.strip_prefix("etcd_supervisor_upgrade_phase_seconds_total{phase=\"")
                else {
                    continue;
                };
                let Some((phase, value)) = rest.split_once("\"} ") else {
                    continue;
                };
                if let Ok(v) = value.trim().parse::<f64>() {
                    *out.entry(phase.to_owned()).or_insert(0.0) += v;
                }
            }
        }
        out
    }

    /// Stops counted by how they ended, summed over every supervisor.
    pub fn stops(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for addr in &self.metrics {
            let Some((_, text)) =
                http_get(&format!("http://{addr}/metrics"), Duration::from_secs(2))
            else {
                continue;
            };
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("etcd_supervisor_etcd_stops_total{ended=\"")
                else {
                    continue;
                };
                let Some((ended, value)) = rest.split_once("\"} ") else {
                    continue;
                };
                if let Ok(v) = value.trim().parse::<f64>() {
                    *out.entry(ended.to_owned()).or_insert(0.0) += v;
                }
            }
        }
        out
    }
}

/// `after - before` per key.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}
