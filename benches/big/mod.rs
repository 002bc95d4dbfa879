//! `scripts/bench big`: a 3-member 3.5.16 → 3.5.30 rollout at the sizes production runs
//! (`BENCH_DB_MB`, default 1024 then 4096), under a writer, supervised and by hand in one run
//! (supervised first, then by hand on a new cluster filled the same way; both share whatever
//! else loads the machine). By hand is what a careful operator does per member:
//! `etcdctl snapshot save` + `sha256sum`, then a SIGTERM-restart on the new binary, waiting
//! until it is healthy and caught up. Both clusters are filled with 32 KiB values and run
//! with `--snapshot-count=10000` (see [`etcd_flags`] for why).
//!
//! Per member: the rehearsal's snapshot, restore, reference (the running version on the copy),
//! the target's start and the rest (checks, clean-up) from
//! its log events; the turn's phases from `etcd_supervisor_upgrade_phase_seconds_total`; the
//! turn held (`upgrade turn released held_ms`); the peak extra disk of the member's state and
//! data dirs over the run, against the db size. Members down: the outside sampler
//! (`tests/it/support/outage.rs`). HashKV equal at the end, acknowledged writes lost.
//!
//! Then, at the same size, one member whose backups filesystem (a tmpfs) is half the db:
//! its turn must be refused before any stop, naming the size needed (its etcd pid and
//! version unchanged).
//!
//! Before each size the disk it needs is estimated; a size that would leave less than
//! [`KEEP_FREE`] free is skipped with a line saying so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest, Txn, TxnOp};

use crate::rollout::{stage, wait_all_on, Writer};
use crate::support::outage::Sampler;
use crate::support::{http_get, http_post, wait_for_every, Cluster, Mode, Net, Release};

const MIB: u64 = 1 << 20;
/// Free space never to go below.
const KEEP_FREE: u64 = 6 << 30;
const FROM: Release = Release::V3_5;
const TO: Release = Release::V3_5Newest;

/// Figures of one member's supervised upgrade, seconds.
#[derive(Default, Debug)]
struct MemberFigures {
    rehearsal: Rehearsal,
    phases: BTreeMap<String, f64>,
    held: f64,
    /// The read of the live db into memory while queued (0 when none was said).
    read_ahead: f64,
    peak_extra: u64,
}

#[derive(Default, Debug)]
struct Rehearsal {
    /// The turn's backup was taken for it (outside its own duration).
    backup_for_it: bool,
    snapshot: f64,
    /// That backup's verification from disk, beside the restore (`verify_ms`).
    verify: f64,
    restore: f64,
    /// The running version's start and HashKV on the copy (the reference).
    reference: f64,
    start: f64,
    total: f64,
}

pub fn bench_big() {
    let sizes: Vec<u64> = match std::env::var("BENCH_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(mb) => vec![mb],
        None => vec![1024, 4096],
    };
    let extra: Vec<String> = std::env::var("BENCH_BIG_FLAGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    for mb in sizes {
        let db = mb * MIB;
        // Supervised: 3 × (data + rehearsal copy + snapshot + backup); by hand after it.
        let needed = 3 * (db * 4) + (1 << 30);
        let free = free_bytes(&std::env::temp_dir());
        println!(
            "\n### {mb} MiB db, 3 members, {} -> {}",
            FROM.version(),
            TO.version()
        );
        if free < needed + KEEP_FREE {
            println!(
                "skipped: needs ~{} GiB, {} GiB free, {} GiB must stay free",
                needed >> 30,
                free >> 30,
                KEEP_FREE >> 30
            );
            continue;
        }
        let sup = supervised(db, &extra);
        let bare = by_hand(db);
        report(mb, &sup, &bare);
        backups_filesystem_too_small(db);
    }
}

struct Supervised {
    wall: f64,
    db: u64,
    members: Vec<MemberFigures>,
    lost: usize,
    acked: usize,
    max_down: usize,
    max_out: usize,
    hash_equal: Option<bool>,
    fill: f64,
}

struct ByHand {
    wall: f64,
    db: u64,
    members: Vec<(f64, f64, f64)>,
    lost: usize,
    acked: usize,
    max_down: usize,
    hash_equal: Option<bool>,
}

/// Every member's etcd flags, the same on both sides: the quota raised, as operators do,
/// when the db would pass 3/4 of the default 2 GiB; and `--snapshot-count` at 3.6's
/// default. etcd keeps the raft entries since its last snapshot (plus 5,000 for catch-up)
/// in memory and in the WAL; a production member of this size holds small values, not
/// `--snapshot-count` entries of [`VALUE`] bytes, and three members on one host each
/// holding their whole 4 GB fill in memory pushed this 23 GB host into paging (the 4 GB
/// run of the last session: each backup 820 s at once against 29 s alone).
fn etcd_flags(db: u64) -> Vec<String> {
    let mut flags = vec!["--snapshot-count=10000".to_owned()];
    if db * 4 / 3 > 2 << 30 {
        flags.push(format!("--quota-backend-bytes={}", 2 * db + (1 << 30)));
    }
    flags
}

/// The fill's value size: (10,000 + 5,000) entries of it in memory is ~0.5 GB a member.
const VALUE: usize = 32 * 1024;
/// Puts in flight during the fill (etcd batches them into one raft round).
const FILL_CONCURRENCY: usize = 32;

/// Puts [`VALUE`]-byte values, [`FILL_CONCURRENCY`] at a time, until the member's db is at
/// least `target` bytes.
fn fill(url: &str, target: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_secs(60),
        ..ClientConfig::new(vec![url.to_owned()])
    })
    .expect("client");
    rt.block_on(async {
        let mut n = 0u64;
        loop {
            let size = client.local_status().await.expect("status").db_size.max(0) as u64;
            if size >= target {
                return size;
            }
            // Between two status reads: 64 rounds of puts.
            for _ in 0..64 {
                let mut tasks = Vec::new();
                for _ in 0..FILL_CONCURRENCY {
                    let c = client.clone();
                    let key = format!("big/{n}");
                    n += 1;
                    tasks.push(tokio::spawn(async move {
                        let op = TxnOp::Put(PutRequest::new(key, vec![b'x'; VALUE]));
                        c.txn(&Txn::new().and_then(vec![op])).await.expect("put");
                    }));
                }
                for t in tasks {
                    t.await.expect("put task");
                }
            }
        }
    })
}

/// Blocks used by everything under `dir`.
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// Samples each member's state + data dir every 250 ms; the peak above the first sample.
struct DiskSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl DiskSampler {
    fn start(dirs: Vec<Vec<std::path::PathBuf>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let size = |ds: &Vec<std::path::PathBuf>| ds.iter().map(|d| du(d)).sum::<u64>();
            let base: Vec<u64> = dirs.iter().map(size).collect();
            let mut peak = vec![0u64; dirs.len()];
            while !flag.load(Ordering::Relaxed) {
                for (i, ds) in dirs.iter().enumerate() {
                    peak[i] = peak[i].max(size(ds).saturating_sub(base[i]));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        });
        Self { stop, handle }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("disk sampler")
    }
}

fn all_idle(urls: &[String]) -> bool {
    let out = Command::new(crate::support::SUPERVISOR)
        .args(["status", "--json", "--endpoints", &urls.join(",")])
        .output();
    let Ok(out) = out else { return false };
    let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    s["turn"]["holder"].is_null()
        && s["progress"]
            .as_object()
            .is_some_and(|p| p.len() == urls.len() && p.values().all(|m| m["state"] == "idle"))
}

fn phases_of(addr: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some((_, text)) = http_get(&format!("http://{addr}/metrics"), Duration::from_secs(2))
    else {
        return out;
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("etcd_supervisor_upgrade_phase_seconds_total{phase=\"")
        else {
            continue;
        };
        if let Some((phase, value)) = rest.split_once("\"} ") {
            if let Ok(v) = value.trim().parse::<f64>() {
                out.insert(phase.to_owned(), v);
            }
        }
    }
    out
}

/// A `took=` / `duration=` field in Rust's Debug form (`8.3s`, `812.5ms`, `40µs`), seconds.
fn field_secs(line: &str, field: &str) -> Option<f64> {
    let v = line
        .split(&format!("{field}="))
        .nth(1)?
        .split_whitespace()
        .next()?;
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    })
}

fn last_field(log: &str, event: &str, field: &str) -> f64 {
    log.lines()
        .rev()
        .find(|l| l.contains(&format!("INFO {event} ")))
        .and_then(|l| field_secs(l, field))
        .unwrap_or(0.0)
}

fn rehearsal_of(log: &str) -> Rehearsal {
    Rehearsal {
        backup_for_it: log.contains("INFO backup taken for the rehearsal and the turn "),
        // Its own snapshot, or the turn's verified backup taken for it (`took_ms`).
        snapshot: match last_field(log, "rehearsal snapshot taken", "took") {
            s if s > 0.0 => s,
            _ => last_ms_field(
                log,
                "backup taken for the rehearsal and the turn",
                "took_ms",
            ),
        },
        verify: last_ms_field(
            log,
            "backup taken for the rehearsal and the turn",
            "verify_ms",
        ),
        restore: last_field(log, "rehearsal snapshot restored", "took"),
        reference: last_field(
            log,
            "rehearsal reference HashKV taken with the running version on the copy",
            "took",
        ),
        start: last_field(log, "rehearsal etcd healthy", "took"),
        total: last_field(log, "rehearsal passed", "duration"),
    }
}

/// The rest after the snapshot: the rehearsal's own duration excludes a backup taken for it.
fn rest_of(r: &Rehearsal) -> f64 {
    let own_snapshot = if r.backup_for_it { 0.0 } else { r.snapshot };
    (r.total - own_snapshot - r.restore - r.reference - r.start).max(0.0)
}

fn held_of(log: &str) -> f64 {
    last_ms_field(log, "upgrade turn released", "held_ms")
}

/// The milliseconds `field` of the last `event` in `log`, in seconds (0 when absent).
fn last_ms_field(log: &str, event: &str, field: &str) -> f64 {
    log.lines()
        .rev()
        .find(|l| l.contains(&format!("INFO {event} ")))
        .and_then(|l| {
            l.split(&format!("{field}="))
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |ms| ms / 1e3)
}

/// Every member's HashKV at a revision all have reached: `Some(equal)`, or `None` when a
/// member gave none (a multi-GB HashKV takes longer than the tests' 5 s bound: 300 s here).
fn hash_equal(c: &Cluster) -> Option<bool> {
    let urls = c.client_urls();
    let status = |u: &String| -> Option<i64> {
        let (_, body) = http_post(
            &format!("{u}/v3/maintenance/status"),
            "{}",
            Duration::from_secs(10),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["header"]["revision"].as_str()?.parse().ok()
    };
    let common = urls
        .iter()
        .map(status)
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .min()?;
    let hashes: Option<Vec<(u64, String)>> = urls
        .iter()
        .map(|u| {
            let (code, body) = http_post(
                &format!("{u}/v3/maintenance/hashkv"),
                &format!(r#"{{"revision":"{common}"}}"#),
                Duration::from_secs(300),
            )?;
            (code == 200).then_some(())?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            Some((
                v["hash"].as_u64().unwrap_or(0),
                v["compact_revision"].as_str().unwrap_or("0").to_owned(),
            ))
        })
        .collect();
    let hashes = hashes?;
    Some(hashes.windows(2).all(|w| w[0] == w[1]))
}

fn supervised(db: u64, extra: &[String]) -> Supervised {
    let net = Net::allocate();
    let mut c = Cluster::new(FROM, 3, Mode::Bare);
    let mut metrics = Vec::new();
    for (i, m) in c.members.iter_mut().enumerate() {
        let addr = format!("{}:{}", net.ip, net.port(i as u16));
        // The lock's TTL is the default (10 s): the next member learns of a release from
        // its watch, not by a lease running out, so a shorter one gains nothing here.
        let mut opts: Vec<String> = ["--ready-timeout", "120s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // The rehearsal runs at every size unless BENCH_BIG_FLAGS sets its bound itself.
        if !extra.iter().any(|f| f.starts_with("--rehearsal-max-db")) {
            opts.extend(["--rehearsal-max-db".to_owned(), format!("{}", 2 * db)]);
        }
        opts.extend(extra.iter().cloned());
        opts.extend(["--metrics-addr".to_owned(), addr.clone()]);
        m.mode = Mode::Supervised(opts);
        m.etcd_extra = etcd_flags(db);
        metrics.push(addr);
    }
    for m in &mut c.members {
        m.start();
    }
    for m in &c.members {
        m.wait_healthy();
    }
    let urls = c.client_urls();
    let t = Instant::now();
    let size = fill(&urls[0], db);
    let fill_s = t.elapsed().as_secs_f64();
    let before: Vec<_> = metrics.iter().map(|a| phases_of(a)).collect();
    let dirs = c
        .members
        .iter()
        .map(|m| vec![m.state_dir.clone(), m.spec.data_dir.clone()])
        .collect();
    let disk = DiskSampler::start(dirs);
    let outside = Sampler::start(&c, Default::default());
    let writer = Writer::start(urls.clone(), "big");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for i in 0..3 {
        stage(&c, i, &TO.etcd());
    }
    wait_all_on(&c, &TO.version(), Duration::from_secs(1800));
    wait_for_every(Duration::from_secs(300), Duration::from_millis(50), || {
        all_idle(&urls).then_some(())
    })
    .expect("all idle");
    let wall = t0.elapsed().as_secs_f64();
    let report = writer.finish();
    let out = outside.finish();
    let peaks = disk.finish();
    let lost = crate::rollout::count_lost(&urls[0], &report.acked);
    let hash_equal = hash_equal(&c);
    let members = (0..3)
        .map(|i| {
            let log = c.members[i].log_text();
            let after = phases_of(&metrics[i]);
            MemberFigures {
                rehearsal: rehearsal_of(&log),
                phases: crate::upgrade::observe::delta(&before[i], &after),
                held: held_of(&log),
                read_ahead: last_ms_field(
                    &log,
                    "db read into memory ahead of the restart",
                    "took_ms",
                ),
                peak_extra: peaks[i],
            }
        })
        .collect();
    if std::env::var("BENCH_BIG_LOG").is_ok() {
        println!("<details><summary>supervisors' log</summary>\n\n```");
        for m in &c.members {
            for l in m.log_text().lines().filter(|l| l.starts_with("20")) {
                println!("{} {l}", m.spec.name);
            }
        }
        println!("```\n</details>");
    }
    Supervised {
        wall,
        db: size,
        members,
        lost,
        acked: report.acked.len(),
        max_down: out.max_down,
        max_out: out.max_out,
        hash_equal,
        fill: fill_s,
    }
}

fn by_hand(db: u64) -> ByHand {
    let mut c = Cluster::new(FROM, 3, Mode::Bare);
    for m in &mut c.members {
        m.etcd_extra = etcd_flags(db);
        m.start();
    }
    for m in &c.members {
        m.wait_healthy();
    }
    let urls = c.client_urls();
    let size = fill(&urls[0], db);
    let outside = Sampler::start(&c, Default::default());
    let writer = Writer::start(urls.clone(), "bare-big");
    std::thread::sleep(Duration::from_millis(300));
    let backups = c.dir().join("backups");
    std::fs::create_dir_all(&backups).expect("backups dir");
    let t0 = Instant::now();
    let mut members = Vec::new();
    for i in 0..3 {
        let file = backups.join(format!("m{}.db", i + 1));
        let t = Instant::now();
        let saved = Command::new(FROM.etcdctl())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", urls[i]))
            .args(["--command-timeout=600s", "snapshot", "save"])
            .arg(&file)
            .output()
            .expect("etcdctl");
        assert!(saved.status.success(), "{saved:?}");
        let snap = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let summed = Command::new("sha256sum")
            .arg(&file)
            .output()
            .expect("sha256sum");
        assert!(summed.status.success());
        let sum = t.elapsed().as_secs_f64();
        let t = Instant::now();
        c.member(i).stop();
        c.member(i).release = TO;
        c.member(i).start();
        let others: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| urls[j].clone())
            .collect();
        crate::upgrade::observe::wait_new_caught_up(&urls[i], &others, &TO.version());
        members.push((snap, sum, t.elapsed().as_secs_f64()));
    }
    let wall = t0.elapsed().as_secs_f64();
    let report = writer.finish();
    let out = outside.finish();
    let lost = crate::rollout::count_lost(&urls[0], &report.acked);
    let hash_equal = hash_equal(&c);
    ByHand {
        wall,
        db: size,
        members,
        lost,
        acked: report.acked.len(),
        max_down: out.max_down,
        hash_equal,
    }
}

const PHASES: &[&str] = &[
    "turn_wait",
    "preflight",
    "backup",
    "stop",
    "switch",
    "start",
    "catch_up",
];

fn hash_cell(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "true",
        Some(false) => "FALSE",
        None => "not obtained",
    }
}

fn report(mb: u64, s: &Supervised, b: &ByHand) {
    println!(
        "db {:.2} GB supervised (filled in {:.0} s), {:.2} GB by hand; a writer ran throughout; the machine is shared, both sides saw the same load",
        s.db as f64 / 1e9,
        s.fill,
        b.db as f64 / 1e9
    );
    println!("\nsupervised, per member, seconds");
    println!("| member | rehearsal snapshot (* the turn's backup, taken for it) | its verification (beside the restore) | restore | reference (running version's start + HashKV on the copy) | target's start | compare + clean-up | rehearsal total (without *) | db read ahead while queued | {} | turn held (lock acquired -> released) | peak extra disk | / db |", PHASES.join(" | "));
    println!(
        "|---|---|---|---|---|---|---|---|---|{}---|---|---|",
        "---|".repeat(PHASES.len())
    );
    for (i, m) in s.members.iter().enumerate() {
        let r = &m.rehearsal;
        let rest = rest_of(r);
        let cells: Vec<String> = PHASES
            .iter()
            .map(|k| format!("{:.2}", m.phases.get(*k).copied().unwrap_or(0.0)))
            .collect();
        println!(
            "| m{} | {:.2}{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} GB | {:.2}x |",
            i + 1,
            r.snapshot,
            if r.backup_for_it { "*" } else { "" },
            r.verify,
            r.restore,
            r.reference,
            r.start,
            rest,
            r.total,
            m.read_ahead,
            cells.join(" | "),
            m.held,
            m.peak_extra as f64 / 1e9,
            m.peak_extra as f64 / s.db as f64,
        );
    }
    println!("\nby hand, per member, seconds");
    println!("| member | etcdctl snapshot save | sha256sum | SIGTERM -> new healthy and caught up | total |\n|---|---|---|---|---|");
    for (i, (snap, sum, restart)) in b.members.iter().enumerate() {
        println!(
            "| m{} | {snap:.2} | {sum:.2} | {restart:.2} | {:.2} |",
            i + 1,
            snap + sum + restart
        );
    }
    let per_hand = b.wall / 3.0;
    let max_held = s.members.iter().map(|m| m.held).fold(0.0, f64::max);
    println!("\n| {mb} MiB | wall | writes acked | lost | max members down | max stopped | HashKV equal |\n|---|---|---|---|---|---|---|");
    println!(
        "| supervised | {:.2} s | {} | {} | {} | {} | {} |",
        s.wall,
        s.acked,
        s.lost,
        s.max_down,
        s.max_out,
        hash_cell(s.hash_equal)
    );
    println!(
        "| by hand | {:.2} s | {} | {} | {} | - | {} |",
        b.wall,
        b.acked,
        b.lost,
        b.max_down,
        hash_cell(b.hash_equal)
    );
    println!(
        "rollout supervised / by hand: {:.2}x; longest turn held / by-hand time per member: {:.2}x",
        s.wall / b.wall,
        max_held / per_hand
    );
}

/// One member at `db` bytes whose backups filesystem is a tmpfs of half that: staging the
/// target must refuse the turn before any stop, naming the size it needs. Prints the
/// refusal; panics if etcd was stopped or upgraded.
fn backups_filesystem_too_small(db: u64) {
    let mut c = Cluster::new(
        FROM,
        1,
        Mode::Supervised(vec!["--rehearsal".to_owned(), "never".to_owned()]),
    );
    let m = &mut c.members[0];
    m.etcd_extra = etcd_flags(db);
    let _tmpfs = crate::support::mounts::Tmpfs::mount(
        &m.state_dir.join("backups"),
        &format!("size={}m,mode=0700", db / 2 / MIB),
    );
    m.start();
    m.wait_healthy();
    let url = c.client_urls()[0].clone();
    let size = fill(&url, db);
    let data_dir = c.members[0].spec.data_dir.clone();
    let pid = crate::support::outage::etcd_pid_of(&data_dir).expect("etcd pid");
    let t = Instant::now();
    stage(&c, 0, &TO.etcd());
    let line = wait_for_every(Duration::from_secs(600), Duration::from_millis(100), || {
        c.members[0]
            .log_text()
            .lines()
            .find(|l| l.contains("backup needs ~"))
            .map(str::to_owned)
    })
    .expect("no refusal naming the size within 600 s");
    let after = crate::support::outage::etcd_pid_of(&data_dir);
    let version = crate::rollout::server_version(&c, 0);
    println!(
        "\nbackups filesystem of {} MiB, db {:.2} GB: refused {:.1} s after staging; etcd pid {pid} -> {after:?}, version {version:?}\n> {line}",
        db / 2 / MIB,
        size as f64 / 1e9,
        t.elapsed().as_secs_f64(),
    );
    assert_eq!(
        after,
        Some(pid),
        "etcd was stopped without room for the backup"
    );
    assert_eq!(
        version,
        Some(FROM.version()),
        "etcd was upgraded without a backup"
    );
}
