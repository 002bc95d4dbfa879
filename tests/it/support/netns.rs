//! Members on separate hosts, as far as the network goes: each member (its supervisor and
//! etcd) in a network namespace of its own, joined by veth pairs to a bridge in a hub
//! namespace that the test's own thread enters. A partition is the member's bridge port set
//! down; healing sets it up again.
//!
//! Every address stays in the loopback range, and nothing touches the host's namespace:
//! members are 127.201.0.N/16 on their veth and the hub 127.201.0.254 on the bridge, with
//! `route_localnet` on and the `local 127.0.0.0/8` route narrowed to 127.0.0.1 in each
//! namespace, so 127.201.x leaves through the veth while `lo` still serves 127.0.0.1 (and
//! each member still reaches its own address while cut off). Namespace names come from the
//! test's [`Net`] allocation, so parallel tests never share one; all of them are deleted,
//! and the test thread put back in its own namespace, on drop (after the processes died).
//!
//! Namespaces need root. Not root: the test fails, saying so (a partition test that cannot
//! run must not pass; CI runs as root and must run these). Root but a namespace cannot be
//! made: the test fails too.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Cluster, Mode, Proc, Release};

/// The hub's address on the bridge (where the test's requests come from).
pub const HUB_IP: &str = "127.201.0.254";

/// When each member was cut off, by the test: `(member, from, until)`, `until` open while
/// the partition lasts.
pub type Partitions = Arc<Mutex<Vec<(usize, Instant, Option<Instant>)>>>;

/// The namespaces of one test: the hub (bridge) and one per member.
#[derive(Debug)]
pub struct Hosts {
    hub: String,
    members: Vec<(String, File)>,
    /// The test thread's own namespace, entered again on drop.
    home: Option<File>,
    /// Partitions so far.
    pub partitions: Partitions,
}

/// A cluster whose members run in namespaces of their own.
#[derive(Debug)]
pub struct NsCluster {
    /// The members (addresses 127.201.0.N) and their processes; dropped first.
    pub cluster: Cluster,
    /// The namespaces; dropped after every process in them is dead.
    pub hosts: Hosts,
}

/// Runs `ip` with `args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails the test, with the reason, unless running as root.
fn require_root() {
    require_root_as(nix::unistd::geteuid().is_root());
}

/// The guard of [`require_root`], given whether this is root (unit-checked without root).
pub fn require_root_as(root: bool) {
    assert!(
        root,
        "network namespaces need root (ip netns): this partition test cannot run, so it \
         fails; run the suite as root (CI does)"
    );
}

fn setns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns on an open namespace fd changes only the calling thread's namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loopback inside a namespace, with 127.201.x routed out of it rather than to `lo`.
fn loopback_only_for_itself(ns: &str) {
    ip(&["-n", ns, "link", "set", "lo", "up"]);
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.route_localnet=1",
            "net.ipv4.conf.default.route_localnet=1",
        ],
    );
    ip(&[
        "-n",
        ns,
        "route",
        "del",
        "local",
        "127.0.0.0/8",
        "dev",
        "lo",
        "table",
        "local",
    ]);
}

impl Hosts {
    /// Makes the hub and `n` member namespaces for the test that owns `tag`, and moves the
    /// calling thread into the hub. Fails the test when not root.
    pub fn make(tag: &str, n: usize) -> Hosts {
        require_root();
        let hub = format!("es{tag}h");
        let names: Vec<String> = (1..=n).map(|i| format!("es{tag}m{i}")).collect();
        for ns in std::iter::once(&hub).chain(&names) {
            // A namespace left by a test killed before its drop ran.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        let mut hosts = Hosts {
            hub: hub.clone(),
            members: Vec::new(),
            home: None,
            partitions: Arc::default(),
        };
        for ns in std::iter::once(&hub).chain(&names) {
            loopback_only_for_itself(ns);
        }
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_IP}/16"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, ns) in names.iter().enumerate() {
            let port = format!("v{}", i + 1);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/16", Self::member_ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            let fd = File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
            hosts.members.push((ns.clone(), fd));
        }
        let home = File::open("/proc/thread-self/ns/net").expect("this thread's namespace");
        let hub_fd = File::open(format!("/run/netns/{hub}")).expect("open the hub namespace");
        setns(hub_fd.as_raw_fd()).expect("enter the hub namespace");
        hosts.home = Some(home);
        hosts
    }

    /// Member `i`'s address (0-based).
    pub fn member_ip(i: usize) -> String {
        format!("127.201.0.{}", i + 1)
    }

    /// Member `i`'s namespace name.
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].0
    }

    /// Makes `cmd` run in member `i`'s namespace.
    pub fn enter(&self, i: usize, cmd: &mut Command) {
        let fd = self.members[i].1.as_raw_fd();
        // SAFETY: only the setns syscall runs between fork and exec; the fd stays open in
        // this process for as long as `self` lives.
        unsafe {
            cmd.pre_exec(move || setns(fd));
        }
    }

    /// Cuts member `i` off: its bridge port goes down (the member keeps its own address).
    pub fn partition(&self, i: usize) {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &format!("v{}", i + 1),
            "down",
        ]);
        self.partitions
            .lock()
            .unwrap()
            .push((i, Instant::now(), None));
        eprintln!("partition: m{} cut off", i + 1);
    }

    /// Ends member `i`'s partition.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.hub, "link", "set", &format!("v{}", i + 1), "up"]);
        let mut all = self.partitions.lock().unwrap();
        if let Some(open) = all.iter_mut().rev().find(|p| p.0 == i && p.2.is_none()) {
            open.2 = Some(Instant::now());
            eprintln!("partition: m{} healed after {:?}", i + 1, open.1.elapsed());
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            if let Err(e) = setns(home.as_raw_fd()) {
                eprintln!("could not return to the test's own namespace: {e}");
            }
        }
        let names = std::iter::once(self.hub.clone()).chain(self.members.drain(..).map(|m| m.0));
        for ns in names {
            // Deleting a namespace removes its veth end, and so the pair.
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

impl NsCluster {
    /// Describes `n` members, each in its own namespace (not started). Fails the test when
    /// not root: namespaces cannot be made, and a partition test that cannot run must fail.
    pub fn new(release: Release, n: usize, mode: Mode) -> NsCluster {
        require_root();
        let mut cluster = Cluster::new(release, n, mode);
        // The allocation's second and third octets name this test's namespaces.
        let tag: String = cluster
            .net
            .ip
            .split('.')
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join("-");
        let hosts = Hosts::make(&tag, n);
        for (i, m) in cluster.members.iter_mut().enumerate() {
            m.spec.ip = Hosts::member_ip(i);
        }
        let initial = cluster
            .members
            .iter()
            .map(|m| format!("{}={}", m.spec.name, m.spec.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut cluster.members {
            m.spec.initial_cluster = initial.clone();
        }
        NsCluster { cluster, hosts }
    }

    /// Starts member `i` in its namespace (no wait).
    pub fn start(&mut self, i: usize) {
        let m = &mut self.cluster.members[i];
        assert!(m.proc.is_none(), "{} already running", m.spec.name);
        let mut cmd = m.command();
        for (k, v) in &m.env {
            cmd.env(k, v);
        }
        self.hosts.enter(i, &mut cmd);
        m.proc = Some(Proc::spawn(&mut cmd, &m.log));
    }

    /// Starts every member and waits until each is healthy.
    pub fn start_all(&mut self) {
        for i in 0..self.cluster.members.len() {
            self.start(i);
        }
        for m in &self.cluster.members {
            m.wait_healthy();
        }
    }
}
