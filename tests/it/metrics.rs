//! `--metrics-addr`: every family scraped from a running supervisor over real etcd, values
//! moving when etcd restarts and when a swap (with a `both` backup) completes; `/healthz`.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::rollout::{server_version, stage};
use crate::support::{http_get, wait_for, Cluster, Mode, Release, SUPERVISOR};

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_move_with_restarts_and_swaps() {
    let mut cluster = Cluster::new(Release::V3_4, 1, Mode::Supervised(vec![]));
    let addr = format!("{}:{}", cluster.net.ip, cluster.net.port(9));
    cluster.members[0].mode = Mode::Supervised(
        [
            "--metrics-addr",
            &addr,
            "--restart-delay",
            "200ms",
            "--backup",
            "both",
            "--ready-timeout",
            "20s",
            "--health-interval",
            "200ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    cluster.members[0].start();
    cluster.members[0].wait_healthy();
    let scrape = || {
        http_get(&format!("http://{addr}/metrics"), Duration::from_secs(2))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let text = wait_for(Duration::from_secs(10), || {
        let t = scrape();
        (sample(&t, "etcd_supervisor_etcd_up") == Some(1.0)).then_some(t)
    })
    .expect("etcd_up 1");
    for family in [
        "etcd_supervisor_state{",
        "etcd_supervisor_etcd_version_info{",
        "etcd_supervisor_etcd_restarts_total",
        "etcd_supervisor_turn_wait_seconds",
        "etcd_supervisor_turn_hold_seconds",
        "etcd_supervisor_swap_window_seconds",
        "etcd_supervisor_upgrades_total",
        "etcd_supervisor_rollbacks_total",
        "etcd_supervisor_backup_last_timestamp_seconds",
        "etcd_supervisor_backup_last_size_bytes",
        "etcd_supervisor_backup_last_verified",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert_eq!(
        sample(&text, "etcd_supervisor_state{state=\"idle\"}"),
        Some(1.0)
    );
    assert!(
        text.contains("kind=\"running\",version=\"3.4.23\""),
        "{text}"
    );
    assert_eq!(
        sample(&text, "etcd_supervisor_etcd_restarts_total"),
        Some(0.0)
    );
    let (status, body) =
        http_get(&format!("http://{addr}/healthz"), Duration::from_secs(2)).unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // etcd crashes: the restart is counted.
    let sup = cluster.members[0].proc().pid().as_raw();
    let etcd = wait_for(Duration::from_secs(5), || {
        cluster.members[0]
            .proc()
            .group_pids()
            .into_iter()
            .find(|p| *p != sup)
    })
    .unwrap();
    kill(Pid::from_raw(etcd), Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(20), || {
        (sample(&scrape(), "etcd_supervisor_etcd_restarts_total") == Some(1.0)).then_some(())
    })
    .expect("restart counted");
    cluster.members[0].wait_healthy();

    // A swap with a cold-copy backup: counted, timed, backed up.
    stage(&cluster, 0, &Release::V3_5.etcd());
    wait_for(Duration::from_secs(60), || {
        (server_version(&cluster, 0) == Some(Release::V3_5.version())).then_some(())
    })
    .unwrap_or_else(|_| panic!("no upgrade\n{}", cluster.logs()));
    let text = wait_for(Duration::from_secs(20), || {
        let t = scrape();
        (sample(&t, "etcd_supervisor_upgrades_total") == Some(1.0)
            && sample(&t, "etcd_supervisor_state{state=\"idle\"}") == Some(1.0))
        .then_some(t)
    })
    .unwrap_or_else(|_| panic!("upgrade not counted:\n{}", scrape()));
    assert!(
        sample(&text, "etcd_supervisor_swap_window_seconds").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "etcd_supervisor_backup_last_verified"),
        Some(1.0)
    );
    assert!(sample(&text, "etcd_supervisor_backup_last_size_bytes").unwrap() > 0.0);
    assert!(
        text.contains("kind=\"running\",version=\"3.5.16\""),
        "{text}"
    );
    // The backup holds the cold copy too, and verifies.
    let backups = cluster.members[0].state_dir.join("backups");
    let dir = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("data").is_dir())
        .expect("a backup with data/");
    let out = Command::new(SUPERVISOR)
        .arg("verify-backup")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
