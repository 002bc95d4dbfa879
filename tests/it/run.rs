//! `etcd-supervisor run` with real etcd: readiness, signals, restarts, and the child dying
//! with the supervisor.

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{self, wait_for, Cluster, Mode, Release};

/// The etcd pid under a supervised member: the group's other live process.
fn etcd_pid(cluster: &mut Cluster, i: usize) -> i32 {
    let member = cluster.member(i);
    let sup = member.proc().pid().as_raw();
    wait_for(Duration::from_secs(10), || {
        member.proc().group_pids().into_iter().find(|p| *p != sup)
    })
    .expect("etcd child running")
}

fn single_member_ready_and_clean_stop(release: Release) {
    let mut cluster = Cluster::new(release, 1, Mode::Supervised(vec![]));
    let sock_path = cluster.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let health_url = format!("{}/health", cluster.member(0).client_url());
    let (tx, rx) = mpsc::channel::<(String, bool)>();
    // Record every notification together with whether /health was true right after it.
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let healthy = support::is_healthy(&health_url).is_some();
                let stop = msg.contains("STOPPING=1");
                if tx.send((msg, healthy)).is_err() || stop {
                    return;
                }
            }
        }
    });
    let m = cluster.member(0);
    m.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    m.start();
    m.wait_healthy();

    let ready = wait_for(Duration::from_secs(20), || {
        rx.try_iter().find(|(msg, _)| msg.contains("READY=1"))
    })
    .expect("READY=1 received");
    assert!(
        ready.1,
        "READY=1 was sent before /health was true: {ready:?}"
    );

    let pid = etcd_pid(&mut cluster, 0);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("NOTIFY_SOCKET="),
        "etcd inherited NOTIFY_SOCKET"
    );

    let status = cluster.member(0).stop();
    assert_eq!(status.code(), Some(0), "log:\n{}", cluster.logs());
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().map(|(m, _)| m).collect();
    assert!(
        rest.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 in {rest:?}"
    );
    // etcd would have sent its own READY=1 had it seen the socket.
    assert!(
        !rest.iter().any(|m| m.contains("READY=1")),
        "second READY=1: {rest:?}"
    );
    assert!(
        support::process_gone(pid),
        "etcd still running after the supervisor exited"
    );
    let log = cluster.member(0).log_text();
    assert!(log.contains("etcd is healthy; ready"), "{log}");
}

#[test]
fn single_member_3_4_ready_after_health_and_sigterm_exits_zero() {
    single_member_ready_and_clean_stop(Release::V3_4);
}

#[test]
fn single_member_3_5_ready_after_health_and_sigterm_exits_zero() {
    single_member_ready_and_clean_stop(Release::V3_5);
}

fn cluster_restarts_killed_etcd_with_backoff(release: Release) {
    let mut cluster = Cluster::start_supervised(
        release,
        3,
        &["--restart-delay", "300ms", "--health-interval", "200ms"],
    );
    for round in 1..=2u32 {
        let pid = etcd_pid(&mut cluster, 1);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        // The supervisor notices, waits out the backoff, and the member rejoins.
        let log_line = format!("crashes={round}");
        wait_for(Duration::from_secs(20), || {
            cluster
                .member(1)
                .log_text()
                .contains(&log_line)
                .then_some(())
        })
        .unwrap_or_else(|_| panic!("no restart #{round} logged\n{}", cluster.logs()));
        wait_for(Duration::from_secs(30), || {
            let new_pid = etcd_pid(&mut cluster, 1);
            (new_pid != pid).then_some(())
        })
        .unwrap();
        cluster.member(1).wait_healthy();
    }
    let log = cluster.member(1).log_text();
    // Backoff grows: 300 ms after the first crash, 600 ms after the second (within the reset window).
    assert!(log.contains("delay_ms=300"), "{log}");
    assert!(log.contains("delay_ms=600"), "{log}");
    for m in &cluster.members {
        m.wait_healthy();
    }
    for i in 0..3 {
        assert_eq!(
            cluster.member(i).stop().code(),
            Some(0),
            "{}",
            cluster.logs()
        );
    }
}

#[test]
fn cluster_3_4_restarts_killed_etcd_with_backoff() {
    cluster_restarts_killed_etcd_with_backoff(Release::V3_4);
}

#[test]
fn cluster_3_5_restarts_killed_etcd_with_backoff() {
    cluster_restarts_killed_etcd_with_backoff(Release::V3_5);
}

#[test]
fn killed_supervisor_leaves_no_etcd_behind() {
    let mut cluster = Cluster::start_supervised(Release::V3_5, 1, &[]);
    let pid = etcd_pid(&mut cluster, 0);
    let proc = cluster.member(0).kill();
    // etcd gets SIGTERM from PR_SET_PDEATHSIG and needs about a second to stop.
    wait_for(Duration::from_secs(15), || {
        support::process_gone(pid).then_some(())
    })
    .unwrap_or_else(|_| panic!("etcd {pid} still alive after its supervisor was killed"));
    drop(proc);
    // A new supervisor on the same state and data dir starts cleanly.
    let m = cluster.member(0);
    m.start();
    m.wait_healthy();
}

#[test]
fn pinned_version_survives_a_different_etcd_binary() {
    let mut cluster = Cluster::start_supervised(Release::V3_4, 1, &[]);
    assert_eq!(cluster.member(0).stop().code(), Some(0));
    let m = cluster.member(0);
    // The next start names another binary: it must be ignored, with a log line.
    m.release = Release::V3_5;
    m.start();
    m.wait_healthy();
    let version = support::http_get(
        &format!("{}/version", m.client_url()),
        Duration::from_secs(2),
    )
    .expect("version answers")
    .1;
    assert!(
        version.contains(&format!("\"etcdserver\":\"{}\"", Release::V3_4.version())),
        "{version}"
    );
    assert!(
        m.log_text().contains("differs from the pinned version"),
        "{}",
        m.log_text()
    );
    let current = std::fs::read_link(m.state_dir.join("current")).unwrap();
    assert_eq!(
        current,
        std::path::Path::new("versions").join(Release::V3_4.version())
    );
}

#[test]
fn watchdog_is_petted_and_status_follows_state_changes() {
    let mut cluster = Cluster::new(Release::V3_5, 1, Mode::Supervised(vec![]));
    let sock_path = cluster.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // As systemd does: WATCHDOG_PID names the supervisor itself (exec keeps the shell's pid).
    let inner = cluster.member(0).command();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("NOTIFY_SOCKET", &sock_path)
        // 400 ms watchdog: the supervisor must pet it every 200 ms.
        .env("WATCHDOG_USEC", "400000");
    let log = cluster.dir().join("watchdog.log");
    let mut sup = support::Proc::spawn(&mut cmd, &log);
    cluster.member(0).wait_healthy();
    let mut messages = Vec::new();
    let began = Instant::now();
    let deadline = began + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    let mut pets = vec![began];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains("WATCHDOG=1") {
                pets.push(Instant::now());
            }
            messages.push(m);
        }
    }
    pets.push(Instant::now());
    // systemd kills a service that leaves the watchdog unpetted for WATCHDOG_USEC (400
    // ms): no gap may reach it. The supervisor pets every half of it (200 ms), so the
    // margin for a loaded machine is the other half.
    let watchdog = Duration::from_millis(400);
    let longest = pets
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        longest < watchdog,
        "the watchdog went unpetted for {longest:?} (watchdog {watchdog:?}); {} pets: {messages:?}",
        pets.len() - 2
    );
    assert!(
        messages.iter().any(|m| m.contains("STATUS=")),
        "no STATUS=: {messages:?}"
    );
    sup.signal(Signal::SIGTERM);
    let status = sup.wait_timeout(Duration::from_secs(30)).expect("stopped");
    assert_eq!(status.code(), Some(0), "{}", support::tail(&log, 20));
}

#[test]
fn etcd_ignoring_sigterm_is_killed_after_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("etcd");
    let ready = dir.path().join("ready");
    support::write_script(
        &fake,
        &format!(
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'etcd Version: 3.5.16'; exit 0; fi\ntrap '' TERM\ntouch {}\nwhile :; do sleep 0.05; done\n",
            ready.display()
        ),
    );
    let log = dir.path().join("sup.log");
    let mut cmd = std::process::Command::new(support::SUPERVISOR);
    cmd.arg("run")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--etcd-binary")
        .arg(&fake)
        .args(["--stop-timeout", "1s"]);
    let mut sup = support::Proc::spawn(&mut cmd, &log);
    wait_for(Duration::from_secs(20), || ready.exists().then_some(()))
        .expect("stand-in etcd started");
    let asked = Instant::now();
    sup.signal(Signal::SIGTERM);
    let status = sup
        .wait_timeout(Duration::from_secs(30))
        .expect("supervisor exited");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // Not stopped as asked: the kill is reported as 128+9, with one line saying why.
    assert_eq!(status.code(), Some(137), "{text}");
    assert!(
        text.contains("etcd did not stop in time; sending SIGKILL"),
        "{text}"
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "killed before the timeout"
    );
    // The stand-in's own `sleep 0.05` may outlive it by a moment; nothing may stay.
    wait_for(Duration::from_secs(5), || {
        sup.group_pids().is_empty().then_some(())
    })
    .unwrap_or_else(|_| panic!("something survived: {:?}\n{text}", sup.group_pids()));
}
