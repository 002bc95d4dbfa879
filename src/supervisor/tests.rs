//! The run loop without etcd: signals and failures while no child runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use nix::fcntl::{Flock, FlockArg};

use super::*;
use crate::cli::{Cli, Command};
use crate::process::datadir;
use nix::sys::signal::Signal;

fn settings(state_dir: &Path, data_dir: &Path) -> RunSettings {
    let state = state_dir.display().to_string();
    let data = format!("--data-dir={}", data_dir.display());
    let cli = Cli::try_parse_from([
        "etcd-supervisor",
        "run",
        "--state-dir",
        &state,
        "--stop-timeout",
        "60s",
        "--",
        &data,
    ])
    .unwrap();
    let Command::Run(run) = cli.command else {
        panic!("not run")
    };
    RunSettings::resolve(&run, &Default::default()).unwrap()
}

/// Holds etcd's database lock in `data_dir`, as a still-running etcd would.
fn hold_lock(data_dir: &Path) -> Flock<File> {
    let db = datadir::db_path(data_dir);
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let file = File::create(&db).unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap()
}

/// A driver that does nothing but wait for the shutdown, and records that it saw it.
fn idle_driver(told: Arc<AtomicBool>) -> DriverStarter {
    Box::new(move |control| {
        Box::pin(async move {
            let mut shutdown = control.shutdown;
            let _ = shutdown.wait_for(|s| *s).await;
            told.store(true, Ordering::SeqCst);
        })
    })
}

fn unused_pinned() -> Pinned {
    Pinned {
        version: "3.5.16".parse().unwrap(),
        binary: PathBuf::from("/nonexistent/etcd"),
    }
}

#[tokio::test(start_paused = true)]
async fn sigterm_while_waiting_for_the_data_dir_is_handled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _lock = hold_lock(&data);
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let told = Arc::new(AtomicBool::new(false));
    let run = run_with(
        settings(dir.path(), &data),
        Reaper::idle(),
        Signals::from_channel(sig_rx),
        unused_pinned(),
        idle_driver(told.clone()),
        false,
        Metrics::new(&[]),
    );
    tokio::pin!(run);
    // Well inside the 60 s the start waits for the lock.
    tokio::select! {
        ended = &mut run => panic!("the loop ended while the data dir was held: {ended:?}"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    sig_tx.send(Signal::SIGTERM).unwrap();
    let code = tokio::time::timeout(Duration::from_millis(100), run)
        .await
        .expect("SIGTERM handled within 100 ms while the start waited")
        .unwrap();
    // The abandoned start spawned nothing (nothing is pinned: a start would fail with 2).
    assert_eq!(code, 0);
    assert!(told.load(Ordering::SeqCst), "the driver was not told");
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_start_ends_the_loop_through_the_epilogue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_sig_tx, sig_rx) = mpsc::unbounded_channel();
    let told = Arc::new(AtomicBool::new(false));
    // Nothing is pinned in the state dir: the start fails, a configuration error.
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        run_with(
            settings(dir.path(), &data),
            Reaper::idle(),
            Signals::from_channel(sig_rx),
            unused_pinned(),
            idle_driver(told.clone()),
            false,
            Metrics::new(&[]),
        ),
    )
    .await
    .expect("the loop ended")
    .unwrap_err();
    assert!(code.is_usage(), "a configuration error: {code}");
    assert!(told.load(Ordering::SeqCst), "the driver was not told");
}

#[tokio::test(start_paused = true)]
async fn a_data_dir_held_past_the_stop_timeout_ends_the_loop_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _lock = hold_lock(&data);
    let (_sig_tx, sig_rx) = mpsc::unbounded_channel();
    let told = Arc::new(AtomicBool::new(false));
    let code = tokio::time::timeout(
        Duration::from_secs(120),
        run_with(
            settings(dir.path(), &data),
            Reaper::idle(),
            Signals::from_channel(sig_rx),
            unused_pinned(),
            idle_driver(told.clone()),
            false,
            Metrics::new(&[]),
        ),
    )
    .await
    .expect("the loop ended after the 60 s patience")
    .unwrap_err();
    assert!(
        matches!(code, RunError::DataDirInUse(_)) && !code.is_usage(),
        "a runtime failure: {code}"
    );
    assert!(told.load(Ordering::SeqCst), "the driver was not told");
}

#[tokio::test(start_paused = true)]
async fn a_drivers_start_waiting_for_the_data_dir_is_answered_when_sigterm_comes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _lock = hold_lock(&data);
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (answer_tx, answer_rx) = oneshot::channel();
    let driver: DriverStarter = Box::new(move |control| {
        Box::pin(async move {
            let _ = answer_tx.send(control.start().await);
        })
    });
    // Held: etcd is under the driver's control, as mid-swap; its start waits for the lock.
    let run = run_with(
        settings(dir.path(), &data),
        Reaper::idle(),
        Signals::from_channel(sig_rx),
        unused_pinned(),
        driver,
        true,
        Metrics::new(&[]),
    );
    tokio::pin!(run);
    tokio::select! {
        ended = &mut run => panic!("the loop ended while the start waited: {ended:?}"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    sig_tx.send(Signal::SIGTERM).unwrap();
    let code = tokio::time::timeout(Duration::from_millis(100), run)
        .await
        .expect("SIGTERM handled within 100 ms while the driver's start waited")
        .unwrap();
    assert_eq!(code, 0);
    let answer = answer_rx.await.expect("the driver finished");
    assert_eq!(answer, Err("the supervisor is shutting down".to_owned()));
}
