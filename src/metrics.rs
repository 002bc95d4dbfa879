//! Prometheus metrics and the supervisor's own `/healthz`, served on `--metrics-addr`.
//!
//! The scrape endpoint is a deliberately tiny HTTP/1.0 responder (two GET paths, bounded
//! request size and time, one response per connection): a full HTTP server stack would
//! outweigh the rest of the supervisor for what Prometheus needs.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabel {
    ended: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    kind: String,
    version: String,
}

/// The supervisor's metrics; cheap to clone, clones share values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Every state the turn can be in, so a scrape shows zeros for the others.
    states: &'static [&'static str],
    state: Family<StateLabel, Gauge>,
    version: Family<VersionLabel, Gauge>,
    etcd_up: Gauge,
    restarts: Counter,
    turn_wait: Gauge<f64, AtomicU64>,
    turn_hold: Gauge<f64, AtomicU64>,
    swap_window: Gauge<f64, AtomicU64>,
    upgrades: Counter,
    rollbacks: Counter,
    backup_time: Gauge<f64, AtomicU64>,
    backup_size: Gauge,
    backup_verified: Gauge,
    held: Family<HeldLabel, Gauge>,
    consistency_checks: Counter,
    consistency_alarm: Gauge,
    stops: Family<EndedLabel, Counter>,
    last_stop: Gauge<f64, AtomicU64>,
    phases: Family<PhaseLabel, Counter<f64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabel {
    by: String,
}

/// What can hold a queued member back (`etcd_supervisor_held{by=...}`).
const HELD_BY: [&str; 3] = ["pause", "window", "alarm"];

/// How a stop can end (`process::child::StopEnd`'s names), so a scrape shows zeros too.
const STOP_ENDS: [&str; 3] = ["exited", "data_closed", "escalated"];

/// The phases of an upgrade turn whose time is counted.
pub const PHASES: [&str; 8] = [
    "turn_wait",
    "preflight",
    "backup",
    "stop",
    "switch",
    "start",
    "catch_up",
    "soak",
];

impl Metrics {
    /// A registry with every family registered; `states` are the upgrade state names
    /// (`upgrade::turn::machine::STATE_NAMES`, passed in so this module stays below `upgrade`).
    pub fn new(states: &'static [&'static str]) -> Self {
        let mut r = Registry::with_prefix("etcd_supervisor");
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            states,
            state: Family::default(),
            version: Family::default(),
            etcd_up: Gauge::default(),
            restarts: Counter::default(),
            turn_wait: Gauge::default(),
            turn_hold: Gauge::default(),
            swap_window: Gauge::default(),
            upgrades: Counter::default(),
            rollbacks: Counter::default(),
            backup_time: Gauge::default(),
            backup_size: Gauge::default(),
            backup_verified: Gauge::default(),
            held: Family::default(),
            consistency_checks: Counter::default(),
            consistency_alarm: Gauge::default(),
            stops: Family::default(),
            last_stop: Gauge::default(),
            phases: Family::default(),
        };
        r.register(
            "state",
            "1 for the upgrade state the supervisor is in",
            m.state.clone(),
        );
        r.register(
            "etcd_version_info",
            "etcd versions: kind=running or kind=staged",
            m.version.clone(),
        );
        r.register(
            "etcd_up",
            "1 while etcd answers /health true",
            m.etcd_up.clone(),
        );
        r.register(
            "etcd_restarts",
            "etcd child restarts after a crash",
            m.restarts.clone(),
        );
        r.register(
            "turn_wait_seconds",
            "time the last turn waited in the queue",
            m.turn_wait.clone(),
        );
        r.register(
            "turn_hold_seconds",
            "time the last turn was held",
            m.turn_hold.clone(),
        );
        r.register(
            "swap_window_seconds",
            "last swap: stop of the old etcd until the new one was healthy and caught up",
            m.swap_window.clone(),
        );
        r.register(
            "upgrades",
            "swaps completed on this member",
            m.upgrades.clone(),
        );
        r.register(
            "rollbacks",
            "swaps rolled back on this member",
            m.rollbacks.clone(),
        );
        r.register(
            "backup_last_timestamp_seconds",
            "unix time of the last backup",
            m.backup_time.clone(),
        );
        r.register(
            "backup_last_size_bytes",
            "size of the last backup",
            m.backup_size.clone(),
        );
        r.register(
            "backup_last_verified",
            "1 when the last backup was verified after writing",
            m.backup_verified.clone(),
        );
        r.register(
            "held",
            "1 while a queued member does not start its turn: by=pause (etcd-supervisor pause), by=window (outside --window) or by=alarm (an etcd alarm such as NOSPACE is raised)",
            m.held.clone(),
        );
        r.register(
            "consistency_checks",
            "HashKV comparisons of every member made after a rollout by this supervisor",
            m.consistency_checks.clone(),
        );
        r.register(
            "consistency_alarm",
            "1 when this supervisor found the members' HashKV differing after a rollout",
            m.consistency_alarm.clone(),
        );
        r.register(
            "etcd_stops",
            "stops of etcd the supervisor asked for, by how they ended: exited (by itself), data_closed (SIGKILL once its WAL and db were closed), escalated (SIGKILL at the stop timeout)",
            m.stops.clone(),
        );
        r.register(
            "etcd_last_stop_seconds",
            "last stop of etcd: SIGTERM until the process was gone",
            m.last_stop.clone(),
        );
        r.register(
            "upgrade_phase_seconds",
            "time spent in each phase of upgrade turns: turn_wait, preflight, backup, stop (incl. a cold copy), switch, start, catch_up (healthy, on the target and caught up), soak",
            m.phases.clone(),
        );
        for ended in STOP_ENDS {
            m.stops
                .get_or_create(&EndedLabel {
                    ended: ended.to_owned(),
                })
                .inc_by(0);
        }
        for phase in PHASES {
            m.phases
                .get_or_create(&PhaseLabel {
                    phase: phase.to_owned(),
                })
                .inc_by(0.0);
        }
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m.set_state("idle");
        m.set_held(None);
        m
    }

    /// What holds a queued member back now (`pause`, `window`, `alarm`), or nothing.
    pub fn set_held(&self, by: Option<&str>) {
        for b in HELD_BY {
            self.held
                .get_or_create(&HeldLabel { by: b.to_owned() })
                .set(i64::from(Some(b) == by));
        }
    }

    /// A consistency check after a rollout ran; `mismatch` raises the alarm.
    pub fn consistency_checked(&self, mismatch: bool) {
        self.consistency_checks.inc();
        if mismatch {
            self.consistency_alarm.set(1);
        }
    }

    /// The upgrade state changed.
    pub fn set_state(&self, state: &str) {
        for s in self.states {
            self.state
                .get_or_create(&StateLabel {
                    state: (*s).to_owned(),
                })
                .set(i64::from(*s == state));
        }
    }

    /// The running and staged versions.
    pub fn set_versions(&self, running: &str, staged: Option<&str>) {
        self.version.clear();
        self.version
            .get_or_create(&VersionLabel {
                kind: "running".into(),
                version: running.into(),
            })
            .set(1);
        if let Some(staged) = staged {
            self.version
                .get_or_create(&VersionLabel {
                    kind: "staged".into(),
                    version: staged.into(),
                })
                .set(1);
        }
    }

    /// etcd's health.
    pub fn set_etcd_up(&self, up: bool) {
        self.etcd_up.set(i64::from(up));
    }

    /// etcd crashed and is restarted.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// A turn was acquired after waiting `waited`.
    pub fn turn_acquired(&self, waited: Duration) {
        self.turn_wait.set(waited.as_secs_f64());
    }

    /// A turn was released after `held`.
    pub fn turn_released(&self, held: Duration) {
        self.turn_hold.set(held.as_secs_f64());
    }

    /// A swap completed (forward) in `window`.
    pub fn upgraded(&self, window: Duration) {
        self.swap_window.set(window.as_secs_f64());
        self.upgrades.inc();
    }

    /// A stop of etcd that was asked for ended (`ended`: see [`STOP_ENDS`]) after `took`.
    pub fn stopped(&self, ended: &str, took: Duration) {
        self.stops
            .get_or_create(&EndedLabel {
                ended: ended.to_owned(),
            })
            .inc();
        self.last_stop.set(took.as_secs_f64());
    }

    /// `took` was spent in `phase` of a turn (one of [`PHASES`]).
    pub fn phase(&self, phase: &str, took: Duration) {
        self.phases
            .get_or_create(&PhaseLabel {
                phase: phase.to_owned(),
            })
            .inc_by(took.as_secs_f64());
    }

    /// A swap was rolled back.
    pub fn rolled_back(&self) {
        self.rollbacks.inc();
    }

    /// A backup of `bytes` was written (and verified or not).
    pub fn backup_taken(&self, bytes: u64, verified: bool) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.backup_time.set(now);
        self.backup_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.backup_verified.set(i64::from(verified));
    }

    /// The scrape text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the runtime ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, metrics)
}

/// Serves on a socket already listening (bound by [`serve`], or kept across a re-exec).
pub fn serve_on(listener: TcpListener, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut len = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while len < buf.len() {
                        let n = stream.read(&mut buf[len..]).await?;
                        if n == 0 {
                            break;
                        }
                        len += n;
                        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok::<(), std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let request = String::from_utf8_lossy(&buf[..len]);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = match (request.starts_with("GET "), path) {
                    (true, "/metrics") => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        metrics.encode(),
                    ),
                    (true, "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                    stream.shutdown().await
                })
                .await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_encoded_and_state_is_one_hot() {
        let m = Metrics::new(&["idle", "queued", "verifying"]);
        m.set_state("verifying");
        m.set_versions("3.4.23", Some("3.5.16"));
        m.restarted();
        m.upgraded(Duration::from_millis(1500));
        m.backup_taken(4096, true);
        m.stopped("data_closed", Duration::from_millis(20));
        m.phase("stop", Duration::from_millis(250));
        m.phase("stop", Duration::from_millis(250));
        let text = m.encode();
        for family in [
            "etcd_supervisor_state",
            "etcd_supervisor_etcd_version_info",
            "etcd_supervisor_etcd_up",
            "etcd_supervisor_etcd_restarts_total",
            "etcd_supervisor_turn_wait_seconds",
            "etcd_supervisor_turn_hold_seconds",
            "etcd_supervisor_swap_window_seconds",
            "etcd_supervisor_upgrades_total",
            "etcd_supervisor_rollbacks_total",
            "etcd_supervisor_backup_last_timestamp_seconds",
            "etcd_supervisor_backup_last_size_bytes",
            "etcd_supervisor_backup_last_verified",
            "etcd_supervisor_etcd_stops_total",
            "etcd_supervisor_etcd_last_stop_seconds",
            "etcd_supervisor_upgrade_phase_seconds_total",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        assert!(
            text.contains("etcd_supervisor_state{state=\"verifying\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_state{state=\"idle\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_etcd_restarts_total 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_swap_window_seconds 1.5"),
            "{text}"
        );
        assert!(
            text.contains("kind=\"staged\",version=\"3.5.16\""),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_etcd_stops_total{ended=\"data_closed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_etcd_stops_total{ended=\"escalated\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("etcd_supervisor_upgrade_phase_seconds_total{phase=\"stop\"} 0.5"),
            "{text}"
        );
    }
}
