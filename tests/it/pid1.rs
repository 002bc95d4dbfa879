//! The supervisor as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`),
//! as in a container: orphans are reaped, signals work, exit codes propagate.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{self, wait_for, Cluster, Mode, Proc, Release, SUPERVISOR};

/// Wraps a supervisor command line in `unshare` so the supervisor is PID 1.
fn as_pid1(inner: &Command) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Gives the stand-in etcd's supervisor client URLs of the test's own allocation instead
/// of etcd's default `localhost:2379`, where a stray etcd on the machine would answer its
/// health checks (the stand-in ignores them; the supervisor reads them).
fn own_client_urls(inner: &mut Command) {
    let net = support::Net::allocate();
    let url = format!("http://{}:{}", net.ip, net.port(0));
    inner.args([
        "--".to_owned(),
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
    ]);
}

/// The host pid of the namespace's PID 1: the child of the `unshare` process.
fn inner_pid1(unshare: &Proc) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", unshare.pid());
    wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&path)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
    .expect("unshare forked its child")
}

#[test]
fn orphans_are_reaped_and_etcds_exit_code_propagates() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("etcd");
    let report = dir.path().join("zombies");
    // A stand-in etcd that leaves orphans behind, counts zombies in the namespace after they
    // have exited, and then fails with a distinctive code.
    support::write_script(
        &fake,
        &format!(
            r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "etcd Version: 3.5.16"; exit 0; fi
for i in 1 2 3 4 5; do ( sleep 0.1 & ); done
sleep 2
z=0
for f in /proc/[0-9]*/stat; do
  read -r line < "$f" 2>/dev/null || continue
  case "$line" in *") Z "*) z=$((z+1));; esac
done
echo "$z" > {report}
exit 42
"#,
            report = report.display()
        ),
    );
    let mut inner = Command::new(SUPERVISOR);
    inner
        .arg("run")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--etcd-binary")
        .arg(&fake);
    own_client_urls(&mut inner);
    let out = Command::new("timeout")
        .arg("60")
        .args([as_pid1(&inner).get_program()])
        .args(as_pid1(&inner).get_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(42), "{stderr}");
    let zombies = std::fs::read_to_string(&report).expect("fake etcd wrote its report");
    assert_eq!(
        zombies.trim(),
        "0",
        "orphans were left as zombies; {stderr}"
    );
}

#[test]
fn real_etcd_as_pid1_stops_cleanly_on_sigterm() {
    let mut cluster = Cluster::new(Release::V3_5, 1, Mode::Supervised(vec![]));
    let log = cluster.dir().join("pid1.log");
    let m = cluster.member(0);
    let mut unshare = Proc::spawn(&mut as_pid1(&m.command()), &log);
    m.wait_healthy();
    let pid1 = inner_pid1(&unshare);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), Signal::SIGTERM).unwrap();
    let status = unshare
        .wait_timeout(Duration::from_secs(30))
        .expect("supervisor exited after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("etcd stopped; exiting"), "{text}");
}

#[test]
fn signals_to_pid1_reach_etcd_and_a_signal_death_exits_128_plus_n() {
    // As PID 1 the kernel drops every signal the process has no handler for: QUIT, USR1 and
    // USR2 (debug dumps) must still reach etcd. SIGHUP is the supervisor's own (a reload:
    // it re-executes itself, etcd keeps running and never sees the signal). A stand-in etcd
    // records what reaches it, then dies of the next SIGUSR1, which the re-executed
    // supervisor reports as 128+10.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("etcd");
    let report = dir.path().join("signals");
    support::write_script(
        &fake,
        &format!(
            r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "etcd Version: 3.5.16"; exit 0; fi
r={report}
trap 'echo HUP >> $r' HUP
trap 'echo QUIT >> $r' QUIT
trap 'echo USR1 >> $r' USR1
trap 'echo USR2 >> $r; trap - USR1' USR2
echo ready >> $r
while :; do sleep 0.05; done
"#,
            report = report.display()
        ),
    );
    let mut inner = Command::new(SUPERVISOR);
    inner
        .arg("run")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--etcd-binary")
        .arg(&fake);
    own_client_urls(&mut inner);
    let log = dir.path().join("pid1.log");
    let mut unshare = Proc::spawn(&mut as_pid1(&inner), &log);
    let pid1 = nix::unistd::Pid::from_raw(inner_pid1(&unshare));
    let recorded = || std::fs::read_to_string(&report).unwrap_or_default();
    wait_for(Duration::from_secs(30), || {
        recorded().contains("ready").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));

    for (sig, name) in [
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
    ] {
        nix::sys::signal::kill(pid1, sig).unwrap();
        wait_for(Duration::from_secs(10), || {
            recorded().lines().any(|l| l == name).then_some(())
        })
        .unwrap_or_else(|e| panic!("{name} did not reach etcd ({e}): {}", recorded()));
    }
    nix::sys::signal::kill(pid1, Signal::SIGHUP).unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(Duration::from_secs(30), || {
        logged()
            .contains("supervisor re-executed in place; etcd adopted")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("no reload as PID 1 ({e}): {}", logged()));
    assert!(
        !recorded().contains("HUP"),
        "SIGHUP reached etcd: {}",
        recorded()
    );
    nix::sys::signal::kill(pid1, Signal::SIGUSR1).unwrap();
    let status = unshare
        .wait_timeout(Duration::from_secs(30))
        .expect("supervisor exited after etcd died");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(128 + 10), "{text}");
}
