//! Members down, judged from outside: each member's etcd process (found by its data dir in
//! /proc) and its `/health`, sampled every 50 ms by one thread per member, and the upgrade
//! turn's holder (the lock key with the lowest revision, named by its owner record), sampled
//! every 100 ms. Nothing here reads the supervisors' logs, so an outage they do not log is
//! seen all the same.
//!
//! A member is down while its etcd process is gone or its `/health` is not true (a request
//! that times out counts as down for its whole duration: a partitioned member is down). A
//! health-only dip shorter than [`BLIP`] with the same etcd process throughout (a leader
//! election while another member stops) is counted as a blip, not an outage, and reported.
//!
//! Every stop starts an outage of its own: a live etcd process that disappears (or is
//! replaced by another between two samples) begins a new outage at that sample, even when
//! the member was already down (cut off, unhealthy), so a stop that a cut-off member makes
//! is seen and judged like any other. A start (no process, then one) does not.
//!
//! Two figures: every member down at once ([`Report::max_down`], elections included: a
//! 3.4 member rejoining after a partition, with its raised term and no pre-vote, costs the
//! others an election), and members stopped or cut off at once ([`Report::max_out`]: what
//! the supervisors and the test did). What the supervisors must never do is a stop that
//! begins while another member is down for any reason ([`Report::second_outages`]), or a
//! stop by a member not holding the turn ([`Report::stops_without_the_turn`]). Only the
//! test's own kills ([`Sampler::kills`]: the etcd processes the test killed, or had die
//! with a supervisor it killed) are excused from these, and only the stop of exactly that
//! process.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Partitions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::{http_post, Cluster};

/// How often each member is sampled.
pub const PERIOD: Duration = Duration::from_millis(50);

/// A health-only dip shorter than this, same process throughout, is a blip.
pub const BLIP: Duration = Duration::from_millis(500);

/// A probe's connect bound: short, so a member that comes back is seen within a period or
/// two (a lost SYN is retried after a second, which would hide a return that long).
const CONNECT: Duration = Duration::from_millis(200);

/// A probe's answer bound: a busy but healthy etcd may take a while to answer.
const ANSWER: Duration = Duration::from_secs(1);

/// The longest gap between two samples of one member that still leaves the sampler
/// seeing: one sample's longest legitimate duration (a connect at [`CONNECT`], then an
/// answer at [`ANSWER`]: a single slow probe), the period, and 1 s of scheduling delay on
/// a loaded 2-core machine. A gap past this is the sampler itself stalled, and a short
/// outage could hide in it (stops cannot: a changed pid is seen whenever it is sampled).
pub const MAX_GAP: Duration = CONNECT
    .saturating_add(ANSWER)
    .saturating_add(PERIOD)
    .saturating_add(Duration::from_secs(1));

/// How long before the test's cut an outage may have begun and still be the cut's doing (a
/// probe under way when the port went down is timed from its start).
const CUT_SLACK: Duration = Duration::from_millis(1300);

/// `/health` of `addr` answers `"health":"true"`.
fn healthy(addr: SocketAddr) -> bool {
    let probe = || -> Option<bool> {
        let mut s = TcpStream::connect_timeout(&addr, CONNECT).ok()?;
        s.set_read_timeout(Some(ANSWER)).ok()?;
        s.set_write_timeout(Some(ANSWER)).ok()?;
        s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        Some(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
            .map(|ok| ok && answer.contains("\"health\":\"true\""))
    };
    probe().unwrap_or(false)
}

/// One sample of one member.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    at: Instant,
    pid: Option<i32>,
    healthy: bool,
}

/// One member's outage: from the first down sample to the next up one.
#[derive(Debug, Clone)]
pub struct Outage {
    /// Member index.
    pub member: usize,
    /// First sample down.
    pub from: Instant,
    /// First sample up again (or the end of sampling).
    pub until: Instant,
    /// Last sample down: the outage surely lasted this long (it ended somewhere before
    /// `until`; a probe that times out while a cut heals leaves up to its timeout unknown).
    pub last_down: Instant,
    /// The etcd process was gone at some point (not only unhealthy).
    pub process_gone: bool,
    /// Began with a stop: a live etcd process disappeared (or was replaced).
    pub stop: bool,
    /// Began while the test had the member cut off.
    pub partitioned: bool,
    /// A stop of an etcd process the test killed (or had die with a supervisor it killed).
    pub killed: bool,
}

/// The turn's holder at one time.
#[derive(Debug, Clone)]
pub struct TurnSample {
    /// When.
    pub at: Instant,
    /// Holder's member name (the owner of the lowest lock key); `None` when free.
    pub holder: Option<String>,
    /// How many lock keys (holder and waiters).
    pub keys: usize,
}

/// What the samplers saw.
#[derive(Debug)]
pub struct Report {
    /// Outages, by start time.
    pub outages: Vec<Outage>,
    /// Health-only dips shorter than [`BLIP`]: count and the longest.
    pub blips: (usize, Duration),
    /// The most members down at one time, for any reason.
    pub max_down: usize,
    /// The most members stopped (etcd process gone) or cut off by the test at one time.
    pub max_out: usize,
    /// The same without the test's own kills: a member killed while another is in its
    /// turn's stop is two out at once by the test's doing, which no supervisor can prevent
    /// (the supervisors' part, no stop begun while another is down, is
    /// [`Report::second_outages`]).
    pub max_out_but_kills: usize,
    /// The turn's holder over time.
    pub turn: Vec<TurnSample>,
    /// Samples taken, and the longest gap between two samples of one member.
    pub samples: usize,
    /// Longest gap between two samples of one member.
    pub longest_gap: Duration,
    /// etcd processes each member ran (distinct pids, in order).
    pub pids: Vec<Vec<i32>>,
}

/// Samples every member until [`Sampler::finish`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    members: Vec<JoinHandle<Vec<Sample>>>,
    turn: JoinHandle<Vec<TurnSample>>,
    partitions: Partitions,
    kills: Kills,
}

/// The etcd processes the test killed: `(member, pid)`.
pub type Kills = Arc<Mutex<Vec<(usize, i32)>>>;

/// The live etcd process serving `data_dir`, if any: what a test records before a kill.
pub fn etcd_pid_of(data_dir: &std::path::Path) -> Option<i32> {
    etcd_pid(&data_dir.display().to_string(), None)
}

/// The live etcd process serving `data_dir`, if any (not a zombie, not the rehearsal's).
fn etcd_pid(data_dir: &str, last: Option<i32>) -> Option<i32> {
    let matches = |pid: i32| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        if state == 'Z' {
            return None;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != "etcd" {
            return None;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let flag = format!("--data-dir={data_dir}");
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == flag.as_bytes())
            .then_some(pid)
    };
    if let Some(pid) = last.and_then(matches) {
        return Some(pid);
    }
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find_map(matches)
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// The turn's holder and the number of lock keys, read through the first member that
/// answers; `None` when none does.
pub fn turn_holder(urls: &[String]) -> Option<(Option<String>, usize)> {
    let prefix = |p: &str| {
        let end = {
            let mut b = p.as_bytes().to_vec();
            *b.last_mut().unwrap() += 1;
            String::from_utf8(b).unwrap()
        };
        format!(r#"{{"key":"{}","range_end":"{}"}}"#, b64(p), b64(&end))
    };
    for url in urls {
        let get = |p: &str| {
            let (status, body) = http_post(
                &format!("{url}/v3/kv/range"),
                &prefix(p),
                Duration::from_millis(500),
            )?;
            (status == 200).then_some(())?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            Some(v["kvs"].as_array().cloned().unwrap_or_default())
        };
        let Some(mut keys) = get("/etcd-supervisor/lock/upgrade/") else {
            continue;
        };
        let Some(owners) = get("/etcd-supervisor/lock/owners/") else {
            continue;
        };
        let rev = |kv: &serde_json::Value| {
            kv["create_revision"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        keys.sort_by_key(rev);
        let holder = keys.first().map(|kv| {
            let lease = kv["lease"].as_str().unwrap_or("");
            owners
                .iter()
                .find(|o| o["lease"].as_str() == Some(lease))
                .and_then(|o| {
                    // The bare name (a later release may write a JSON record).
                    let raw = unb64(o["value"].as_str()?);
                    match serde_json::from_slice::<serde_json::Value>(&raw) {
                        Ok(rec) => rec["member"].as_str().map(str::to_owned),
                        Err(_) => Some(String::from_utf8_lossy(&raw).into_owned()),
                    }
                })
                .unwrap_or_else(|| format!("lease {lease}"))
        });
        return Some((holder, keys.len()));
    }
    None
}

impl Sampler {
    /// Starts sampling `cluster`'s members; `partitions` names the test's own cuts.
    pub fn start(cluster: &Cluster, partitions: Partitions) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let members = cluster
            .members
            .iter()
            .map(|m| {
                let stop = stop.clone();
                let data_dir: PathBuf = m.spec.data_dir.clone();
                let addr: SocketAddr = format!("{}:{}", m.spec.ip, m.spec.client_port)
                    .parse()
                    .expect("member address");
                std::thread::spawn(move || {
                    let data_dir = data_dir.display().to_string();
                    let mut samples = Vec::new();
                    let mut last = None;
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let pid = etcd_pid(&data_dir, last);
                        last = pid.or(last);
                        let healthy = pid.is_some() && healthy(addr);
                        samples.push(Sample { at, pid, healthy });
                        if let Some(rest) = PERIOD.checked_sub(at.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                    samples
                })
            })
            .collect();
        let urls = cluster.client_urls();
        let flag = stop.clone();
        let turn = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                if let Some((holder, keys)) = turn_holder(&urls) {
                    out.push(TurnSample { at, holder, keys });
                }
                if let Some(rest) = Duration::from_millis(100).checked_sub(at.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            out
        });
        Sampler {
            stop,
            members,
            turn,
            partitions,
            kills: Kills::default(),
        }
    }

    /// Where the test records its own kills: `(member, pid)` of each etcd process it
    /// killed, or had die with a supervisor it killed. That process's stop is the test's
    /// doing, not a supervisor's; every other stop is judged.
    pub fn kills(&self) -> Kills {
        self.kills.clone()
    }

    /// Stops sampling and sums up.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let end = Instant::now();
        let per_member: Vec<Vec<Sample>> = self
            .members
            .into_iter()
            .map(|h| h.join().expect("sampler"))
            .collect();
        let turn = self.turn.join().expect("turn sampler");
        let partitions = self.partitions.lock().unwrap().clone();
        let kills = self.kills.lock().unwrap().clone();
        summarize(&per_member, turn, &partitions, &kills, end)
    }
}

/// Test windows: `(member, from, until)`.
type Windows = [(usize, Instant, Option<Instant>)];

/// Sums up the samples of each member (a pure function of what was sampled, so its
/// rules are unit-checked on made-up samples).
fn summarize(
    per_member: &[Vec<Sample>],
    turn: Vec<TurnSample>,
    partitions: &Windows,
    kills: &[(usize, i32)],
    end: Instant,
) -> Report {
    {
        let cut_off = |i: usize, t: Instant| {
            partitions.iter().any(|&(m, from, until)| {
                m == i && from <= t + CUT_SLACK && until.is_none_or(|u| t <= u)
            })
        };
        let mut outages = Vec::new();
        let mut blips = (0usize, Duration::ZERO);
        let mut samples = 0;
        let mut longest_gap = Duration::ZERO;
        let mut pids = Vec::new();
        for (i, s) in per_member.iter().enumerate() {
            samples += s.len();
            let mut seen: Vec<i32> = Vec::new();
            for w in s.windows(2) {
                longest_gap = longest_gap.max(w[1].at - w[0].at);
            }
            let mut open: Option<Open> = None;
            // The etcd process last seen alive: its disappearance is a stop.
            let mut live: Option<i32> = None;
            let mut before: Option<Instant> = None;
            for x in s {
                if let Some(p) = x.pid {
                    if seen.last() != Some(&p) {
                        seen.push(p);
                    }
                }
                let stopped = live.is_some() && x.pid != live;
                let by_test = live.is_some_and(|p| kills.contains(&(i, p)));
                live = x.pid;
                if stopped {
                    // A down spell of the same process shorter than a blip is the stop's
                    // own beginning (SIGTERM, then the process goes); a longer one (cut
                    // off, unhealthy) is an outage of its own, and the stop starts anew.
                    let merge = open.as_ref().is_some_and(|o| x.at - o.from < BLIP);
                    match open.take() {
                        Some(mut o) if merge => {
                            o.gone = true;
                            o.stop = true;
                            o.killed = by_test;
                            if !x.healthy {
                                o.last_down = x.at;
                            }
                            open = Some(o);
                        }
                        other => {
                            if let Some(o) = other {
                                o.close(&mut outages, &mut blips, i, x.at);
                            }
                            open = Some(Open {
                                from: x.at,
                                last_down: x.at,
                                gone: true,
                                stop: true,
                                partitioned: cut_off(i, x.at),
                                killed: by_test,
                            });
                        }
                    }
                    if x.healthy {
                        // Replaced and healthy within one period: a stop all the same.
                        let from = before.unwrap_or(x.at);
                        if let Some(mut o) = open.take() {
                            o.from = o.from.min(from);
                            // Not seen down at this sample: at most at the one before.
                            o.last_down = o.last_down.min(from);
                            o.close(&mut outages, &mut blips, i, x.at);
                        }
                    }
                    before = Some(x.at);
                    continue;
                }
                before = Some(x.at);
                match (&mut open, x.healthy) {
                    (None, false) => {
                        open = Some(Open {
                            from: x.at,
                            last_down: x.at,
                            gone: x.pid.is_none(),
                            stop: false,
                            partitioned: cut_off(i, x.at),
                            killed: false,
                        });
                    }
                    (Some(o), false) => {
                        o.gone |= x.pid.is_none();
                        o.last_down = x.at;
                    }
                    (Some(_), true) => {
                        if let Some(o) = open.take() {
                            o.close(&mut outages, &mut blips, i, x.at);
                        }
                    }
                    (None, true) => {}
                }
            }
            if let Some(o) = open {
                o.close(&mut outages, &mut blips, i, end);
            }
            pids.push(seen);
        }
        outages.sort_by_key(|o| o.from);
        let at_once = |keep: &dyn Fn(&Outage) -> bool| {
            outages
                .iter()
                .filter(|o| keep(o))
                .map(|o| outages.iter().filter(|p| keep(p) && overlaps(p, o)).count())
                .max()
                .unwrap_or(0)
        };
        let max_down = at_once(&|_| true);
        let max_out = at_once(&|o| o.process_gone || o.partitioned);
        let max_out_but_kills = at_once(&|o| (o.process_gone && !o.killed) || o.partitioned);
        Report {
            outages,
            blips,
            max_down,
            max_out,
            max_out_but_kills,
            turn,
            samples,
            longest_gap,
            pids,
        }
    }
}

/// `o` began while `p` was seen down: a sample saw `p` down at or after `o`'s first down
/// sample. Judged on what was seen, not on `p.until`: under load a probe of a member whose
/// cut is healing can time out after it healed, and the next sample is a period later.
fn overlaps(p: &Outage, o: &Outage) -> bool {
    p.from <= o.from && o.from <= p.last_down
}

/// An outage under way while summing up.
struct Open {
    from: Instant,
    last_down: Instant,
    gone: bool,
    stop: bool,
    partitioned: bool,
    killed: bool,
}

impl Open {
    /// Ends the outage at `until`: an outage, or a blip when it is a short health-only dip.
    fn close(
        self,
        outages: &mut Vec<Outage>,
        blips: &mut (usize, Duration),
        member: usize,
        until: Instant,
    ) {
        if !self.gone && !self.partitioned && until - self.from < BLIP {
            blips.0 += 1;
            blips.1 = blips.1.max(until - self.from);
            return;
        }
        outages.push(Outage {
            member,
            from: self.from,
            until,
            last_down: self.last_down,
            process_gone: self.gone,
            stop: self.stop,
            partitioned: self.partitioned,
            killed: self.killed,
        });
    }
}

/// How long before a stop is seen another member's health drop counts as caused by it.
const STOP_LEAD: Duration = Duration::from_millis(300);

impl Report {
    /// The supervisors' stops: every stop but the test's own kills (a cut-off member's
    /// stops included).
    pub fn supervisor_stops(&self) -> impl Iterator<Item = &Outage> {
        self.outages.iter().filter(|o| o.stop && !o.killed)
    }

    /// Stops (not the test's kills) that began while another member was already down for
    /// any reason: what the supervisors must never do.
    pub fn second_outages(&self) -> Vec<(Outage, Outage)> {
        let mut out = Vec::new();
        for o in self.supervisor_stops() {
            if let Some(other) = self.outages.iter().find(|p| {
                // A member that turned unhealthy just before the stop was seen is the
                // stop's own doing: a stopping leader leaves the others without one
                // between SIGTERM and the process's end (~100 ms with the fast stop),
                // which the sampler cannot see begin. A process gone is never excused.
                let caused =
                    !p.process_gone && o.from.saturating_duration_since(p.from) < STOP_LEAD;
                p.member != o.member && overlaps(p, o) && !caused
            }) {
                out.push((o.clone(), other.clone()));
            }
        }
        out
    }

    /// Member `i`'s stops (the supervisors' and the test's), in order.
    pub fn stops_of(&self, i: usize) -> Vec<&Outage> {
        self.outages
            .iter()
            .filter(|o| o.member == i && o.stop)
            .collect()
    }

    /// Member names that held the turn, in order (consecutive repeats collapsed).
    pub fn holders(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.turn {
            if let Some(h) = &s.holder {
                if out.last() != Some(h) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// Each stop (not the test's kills; a cut-off member's included) whose member did not
    /// hold the turn at the last sample before it: `(member, holder then)`.
    pub fn stops_without_the_turn(&self, names: &[String]) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for o in self.supervisor_stops() {
            let before = self.turn.iter().rev().find(|s| s.at <= o.from);
            let holder = before.and_then(|s| s.holder.clone());
            if holder.as_deref() != Some(names[o.member].as_str()) {
                out.push((names[o.member].clone(), holder));
            }
        }
        out
    }

    /// One line for the test's output.
    pub fn summary(&self, start: Instant) -> String {
        let list: Vec<String> = self
            .outages
            .iter()
            .map(|o| {
                format!(
                    "m{} {:.1}s..{:.1}s ({}{})",
                    o.member + 1,
                    (o.from - start).as_secs_f64(),
                    (o.until - start).as_secs_f64(),
                    match (o.stop, o.process_gone) {
                        (true, _) => "stopped",
                        (false, true) => "down",
                        (false, false) => "unhealthy",
                    },
                    match (o.partitioned, o.killed) {
                        (true, _) => ", cut off",
                        (false, true) => ", killed by the test",
                        (false, false) => "",
                    }
                )
            })
            .collect();
        format!(
            "max members stopped or cut off at once {} ({} but the test's kills), down for any reason {}; outages [{}]; blips {} (longest {:?}); samples {}, longest gap {:?}; turn holders {:?}",
            self.max_out,
            self.max_out_but_kills,
            self.max_down,
            list.join(", "),
            self.blips.0,
            self.blips.1,
            self.samples,
            self.longest_gap,
            self.holders()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of one member every period from `t0`: `(pid, healthy)` each.
    fn member(t0: Instant, seq: &[(Option<i32>, bool)]) -> Vec<Sample> {
        seq.iter()
            .enumerate()
            .map(|(k, &(pid, healthy))| Sample {
                at: t0 + PERIOD * k as u32,
                pid,
                healthy,
            })
            .collect()
    }

    fn holder(t0: Instant, name: &str) -> Vec<TurnSample> {
        vec![TurnSample {
            at: t0,
            holder: Some(name.into()),
            keys: 1,
        }]
    }

    /// m1 cut off for 2 s (its etcd unhealthy), and stopped 1.5 s into the cut while m2
    /// holds the turn: the stop is an outage of its own, judged against the holder.
    #[test]
    fn sampler_judges_a_cut_off_members_stop_against_the_turn() {
        let t0 = Instant::now();
        let mut m1 = vec![(Some(10), true); 10];
        m1.extend(vec![(Some(10), false); 30]);
        m1.extend(vec![(None, false); 10]);
        m1.extend(vec![(Some(11), true); 10]);
        let up = vec![(Some(20), true); 60];
        let per_member = vec![member(t0, &m1), member(t0, &up), member(t0, &up)];
        let cut = [(0, t0 + PERIOD * 10, Some(t0 + PERIOD * 50))];
        let end = t0 + PERIOD * 60;
        let report = summarize(&per_member, holder(t0, "m2"), &cut, &[], end);
        let names: Vec<String> = ["m1", "m2", "m3"].map(String::from).to_vec();
        let stops: Vec<&Outage> = report.supervisor_stops().collect();
        assert_eq!(stops.len(), 1, "{:?}", report.outages);
        assert_eq!(stops[0].from, t0 + PERIOD * 40);
        assert!(stops[0].partitioned);
        assert_eq!(
            report.stops_without_the_turn(&names),
            [("m1".to_owned(), Some("m2".to_owned()))]
        );
        assert_eq!(report.pids[0], [10, 11]);
        // The same stop of a process the test killed is the test's doing.
        let kill = [(0, 10)];
        let report = summarize(&per_member, holder(t0, "m2"), &cut, &kill, end);
        assert_eq!(report.stops_without_the_turn(&names), []);
    }

    /// A stop while another member is cut off is a second outage, and a process replaced
    /// between two samples (no gap seen) is a stop all the same.
    #[test]
    fn sampler_sees_every_pid_change_as_a_stop() {
        let t0 = Instant::now();
        let mut m1 = vec![(Some(10), true); 20];
        m1.extend(vec![(Some(12), true); 20]);
        let mut m2 = vec![(Some(20), true); 10];
        m2.extend(vec![(Some(20), false); 25]);
        m2.extend(vec![(Some(20), true); 5]);
        let up = vec![(Some(30), true); 40];
        let per_member = vec![member(t0, &m1), member(t0, &m2), member(t0, &up)];
        let cut = [(1, t0 + PERIOD * 10, Some(t0 + PERIOD * 35))];
        let report = summarize(&per_member, holder(t0, "m1"), &cut, &[], t0 + PERIOD * 40);
        assert_eq!(report.supervisor_stops().count(), 1, "{:?}", report.outages);
        let second = report.second_outages();
        assert_eq!(second.len(), 1, "{:?}", report.outages);
        assert_eq!((second[0].0.member, second[0].1.member), (0, 1));
    }

    /// m2 cut off and seen down until sample 20, its next sample (30) up: its last probe
    /// timed out while the cut healed. m1's stop seen at 25 is not a second outage (nothing
    /// saw m2 down then); seen at 20 it is.
    #[test]
    fn a_stop_after_the_last_sample_that_saw_another_member_down_is_not_a_second_outage() {
        let t0 = Instant::now();
        let run = |stop_at: usize| {
            let mut m1 = vec![(Some(10), true); stop_at];
            m1.extend(vec![(None, false); 3]);
            m1.extend(vec![(Some(11), true); 40 - stop_at - 3]);
            let mut m2 = vec![(Some(20), true); 10];
            m2.extend(vec![(Some(20), false); 11]);
            // Samples 21..29 missing: one slow probe; then up again.
            let mut m2 = member(t0, &m2);
            for k in 30..40u32 {
                m2.push(Sample {
                    at: t0 + PERIOD * k,
                    pid: Some(20),
                    healthy: true,
                });
            }
            let up = vec![(Some(30), true); 40];
            let per_member = vec![member(t0, &m1), m2, member(t0, &up)];
            let cut = [(1, t0 + PERIOD * 10, Some(t0 + PERIOD * 22))];
            summarize(&per_member, holder(t0, "m1"), &cut, &[], t0 + PERIOD * 40)
        };
        let report = run(25);
        assert!(report.second_outages().is_empty(), "{:?}", report.outages);
        assert_eq!(report.max_out, 1, "{:?}", report.outages);
        let report = run(20);
        assert_eq!(report.second_outages().len(), 1, "{:?}", report.outages);
        assert_eq!(report.max_out, 2, "{:?}", report.outages);
    }

    /// m3 in its turn's stop when the test kills queued m1 a little later: two out at
    /// once, by the test's doing; no supervisor's stop began while another was down.
    #[test]
    fn a_test_kill_during_a_turns_stop_is_two_out_but_not_the_supervisors_doing() {
        let t0 = Instant::now();
        let mut m1 = vec![(Some(10), true); 12];
        m1.extend(vec![(None, false); 10]);
        m1.extend(vec![(Some(11), true); 8]);
        let up = vec![(Some(20), true); 30];
        let mut m3 = vec![(Some(30), true); 10];
        m3.extend(vec![(None, false); 10]);
        m3.extend(vec![(Some(31), true); 10]);
        let per_member = vec![member(t0, &m1), member(t0, &up), member(t0, &m3)];
        let end = t0 + PERIOD * 30;
        let report = summarize(&per_member, holder(t0, "m3"), &[], &[(0, 10)], end);
        assert_eq!((report.max_out, report.max_out_but_kills), (2, 1));
        assert!(report.second_outages().is_empty(), "{:?}", report.outages);
        // Not killed by the test, m1's stop is a second outage and both figures say 2.
        let report = summarize(&per_member, holder(t0, "m3"), &[], &[], end);
        assert_eq!((report.max_out, report.max_out_but_kills), (2, 2));
        assert_eq!(report.second_outages().len(), 1, "{:?}", report.outages);
    }
}
