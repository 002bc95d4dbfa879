//! The run loop's shell against a fake child on tokio's paused clock: every call it makes
//! to the world (prepare, spawn, signal, watch, check, exec) is logged with the virtual
//! time, so the tests check the order and the timing of what the loop did, and the exit
//! code it ended with. The fake also refuses a second living child.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Parser;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::*;
use crate::cli::{Cli, Command};
use crate::process::child::StopEnd;

const STOP: Duration = Duration::from_secs(10);
const PREPARE: Duration = Duration::from_millis(10);

/// What the loop did to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Prepare,
    Spawn(u32),
    Signal(u32, Signal),
    WatchData,
    Check,
    DropRecord,
    Exec(Option<u32>),
    /// The driver's long-lived etcd calls asked to leave the member.
    StepAside,
    /// ... and to come back.
    ComeHome,
}

/// How a child answers SIGTERM.
#[derive(Debug, Clone, Copy)]
enum OnTerm {
    /// Exits this long after, with this exit.
    Exit(Duration, ChildExit),
    /// Ignores it.
    Ignore,
}

struct Inner {
    t0: Instant,
    calls: Vec<(Duration, Call)>,
    next_pid: u32,
    alive: HashMap<u32, oneshot::Sender<ChildExit>>,
    on_term: OnTerm,
    healthy_after: Option<Duration>,
    data_closes_after: Option<Duration>,
    reloads: bool,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    health: Arc<watch::Sender<Health>>,
}

impl Fake {
    fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                t0: Instant::now(),
                calls: Vec::new(),
                next_pid: 100,
                alive: HashMap::new(),
                on_term: OnTerm::Exit(Duration::from_millis(500), ChildExit::Signal(libc::SIGTERM)),
                healthy_after: Some(Duration::from_secs(1)),
                data_closes_after: None,
                reloads: false,
            })),
            health: Arc::new(watch::channel(Health::Unknown).0),
        }
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Self {
        f(&mut self.inner.lock().unwrap());
        self
    }

    fn log(&self, call: Call) {
        let mut inner = self.inner.lock().unwrap();
        let at = inner.t0.elapsed();
        inner.calls.push((at, call));
    }

    fn calls(&self) -> Vec<(Duration, Call)> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The calls without their times.
    fn plain(&self) -> Vec<Call> {
        self.calls().into_iter().map(|(_, c)| c).collect()
    }

    /// When `call` was first made.
    fn when(&self, call: Call) -> Option<Duration> {
        self.calls()
            .into_iter()
            .find_map(|(at, c)| (c == call).then_some(at))
    }

    /// The living child exits with `exit`.
    fn exit(&self, pid: u32, exit: ChildExit) {
        if let Some(tx) = self.inner.lock().unwrap().alive.remove(&pid) {
            let _ = tx.send(exit);
        }
    }
}

struct FakeChild {
    pid: u32,
    fake: Fake,
    exit: oneshot::Receiver<ChildExit>,
    exited: Option<ChildExit>,
}

impl EtcdHandle for FakeChild {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&self, sig: Signal) {
        if self.exited.is_some() {
            return;
        }
        self.fake.log(Call::Signal(self.pid, sig));
        let on_term = self.fake.inner.lock().unwrap().on_term;
        match (sig, on_term) {
            (Signal::SIGKILL, _) => self.fake.exit(self.pid, ChildExit::Signal(libc::SIGKILL)),
            (Signal::SIGTERM | Signal::SIGINT, OnTerm::Exit(after, exit)) => {
                let (fake, pid) = (self.fake.clone(), self.pid);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    fake.exit(pid, exit);
                });
            }
            _ => {}
        }
    }

    async fn wait(&mut self) -> ChildExit {
        if let Some(exit) = self.exited {
            return exit;
        }
        let exit = (&mut self.exit)
            .await
            .unwrap_or(ChildExit::Signal(libc::SIGKILL));
        self.exited = Some(exit);
        exit
    }
}

impl Host for Fake {
    type Child = FakeChild;

    fn reloads(&self) -> bool {
        self.inner.lock().unwrap().reloads
    }

    fn log(&self) -> LogTail {
        LogTail::default()
    }

    fn prepare(&self) -> impl Future<Output = Result<Pinned, RunError>> + Send + 'static {
        self.log(Call::Prepare);
        async {
            tokio::time::sleep(PREPARE).await;
            Ok(Pinned {
                version: "3.5.16".parse().unwrap(),
                binary: PathBuf::from("/fake/etcd"),
            })
        }
    }

    fn spawn(&mut self, _pinned: &Pinned) -> Result<FakeChild, RunError> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap();
        assert!(inner.alive.is_empty(), "a second child while one lives");
        inner.next_pid += 1;
        let pid = inner.next_pid;
        inner.alive.insert(pid, tx);
        let healthy_after = inner.healthy_after;
        drop(inner);
        self.log(Call::Spawn(pid));
        self.health.send_replace(Health::Unknown);
        if let Some(after) = healthy_after {
            let health = self.health.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                health.send_replace(Health::Healthy);
            });
        }
        Ok(FakeChild {
            pid,
            fake: self.clone(),
            exit: rx,
            exited: None,
        })
    }

    fn poll_health(&self, tx: watch::Sender<Health>) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.health.subscribe();
        async move {
            loop {
                let health = *rx.borrow_and_update();
                tx.send_if_modified(|h| std::mem::replace(h, health) != health);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    fn watch_data(&self, until: Instant) -> impl Future<Output = DataWatch> + Send + 'static {
        self.log(Call::WatchData);
        let closes = self.inner.lock().unwrap().data_closes_after;
        let began = Instant::now();
        async move {
            match closes {
                Some(after) if began + after < until => {
                    tokio::time::sleep(after).await;
                    DataWatch::Closed(after)
                }
                _ => {
                    tokio::time::sleep_until(until).await;
                    DataWatch::StillOpen
                }
            }
        }
    }

    fn check_new_binary(
        &self,
        _handed: &Handed,
    ) -> impl Future<Output = Result<String, String>> + Send + 'static {
        self.log(Call::Check);
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok("etcd-supervisor 0.2.0".to_owned())
        }
    }

    fn drop_record(&self) {
        self.log(Call::DropRecord);
    }

    fn step_aside(&self) -> impl Future<Output = ()> + Send + 'static {
        self.log(Call::StepAside);
        std::future::ready(())
    }

    fn come_home(&self) {
        self.log(Call::ComeHome);
    }

    async fn exec(&mut self, child: Option<&mut FakeChild>, _handed: &Handed) -> String {
        self.log(Call::Exec(child.map(|c| c.pid)));
        "fake: no exec".to_owned()
    }
}

fn settings(dir: &Path) -> RunSettings {
    let state = dir.display().to_string();
    let data = format!("--data-dir={}", dir.join("data").display());
    let cli = Cli::try_parse_from([
        "etcd-supervisor",
        "run",
        "--state-dir",
        &state,
        "--stop-timeout",
        "10s",
        "--",
        &data,
    ])
    .unwrap();
    let Command::Run(run) = cli.command else {
        panic!("not run")
    };
    RunSettings::resolve(&run, &Default::default()).unwrap()
}

/// A driver that hands its control out and stands down when told.
fn driver() -> (DriverStarter, oneshot::Receiver<ChildControl>) {
    let (tx, rx) = oneshot::channel();
    let starter: DriverStarter = Box::new(move |control: ChildControl| {
        Box::pin(async move {
            let mut shutdown = control.shutdown.clone();
            let _ = tx.send(control);
            let _ = shutdown.wait_for(|s| *s).await;
        })
    });
    (starter, rx)
}

/// The loop on `fake`; returns its future, the signal sender and the driver's control.
fn start(
    fake: &Fake,
    held: bool,
) -> (
    impl Future<Output = Result<i32, RunError>>,
    mpsc::UnboundedSender<Signal>,
    oneshot::Receiver<ChildControl>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let (starter, control) = driver();
    let settings = settings(dir.path());
    let pinned = Pinned {
        version: "3.5.16".parse().unwrap(),
        binary: PathBuf::from("/fake/etcd"),
    };
    let fake = fake.clone();
    let run = async move {
        run_on(
            fake,
            &settings,
            Signals::from_channel(sig_rx),
            pinned,
            starter,
            held,
            Metrics::new(&[]),
            None,
        )
        .await
    };
    (run, sig_tx, control, dir)
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn sigterm_during_a_drivers_stop_answers_it_and_exits_0() {
    let fake = Fake::new().with(|i| {
        i.on_term = OnTerm::Exit(Duration::from_secs(3), ChildExit::Signal(libc::SIGTERM))
    });
    let (run, sig, control, _dir) = start(&fake, false);
    let script = async {
        let control = control.await.unwrap();
        sleep(2_000).await;
        let stop = control.stop();
        tokio::pin!(stop);
        tokio::select! {
            _ = &mut stop => panic!("answered before the exit"),
            () = sleep(1_000) => {}
        }
        sig.send(Signal::SIGTERM).unwrap();
        let stopped = stop.await.unwrap();
        assert_eq!(stopped.exit, ChildExit::Signal(libc::SIGTERM));
        assert_eq!(stopped.ended, StopEnd::Exited);
        assert_eq!(stopped.took, Duration::from_secs(3));
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    let terms: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|(_, c)| matches!(c, Call::Signal(_, _)))
        .collect();
    let at = Duration::from_secs(2);
    assert_eq!(
        terms,
        [
            (at, Call::Signal(101, Signal::SIGTERM)),
            (
                at + Duration::from_secs(1),
                Call::Signal(101, Signal::SIGTERM)
            ),
        ],
        "the stop's SIGTERM, then the forwarded one; no SIGKILL"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_before_first_healthy_fails_fast_with_etcds_code() {
    let fake = Fake::new().with(|i| i.healthy_after = None);
    let (run, _sig, _control, _dir) = start(&fake, false);
    let script = async {
        sleep(500).await;
        fake.exit(101, ChildExit::Code(2));
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 2);
    assert_eq!(
        fake.plain(),
        [Call::Prepare, Call::Spawn(101)],
        "no restart"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_first_healthy_is_restarted_after_the_backoff() {
    let fake = Fake::new();
    let (run, sig, _control, _dir) = start(&fake, false);
    let script = async {
        sleep(5_000).await;
        fake.exit(101, ChildExit::Signal(libc::SIGSEGV));
        sleep(5_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    let crash = Duration::from_secs(5);
    // The default backoff starts at 1 s; the restart is prepared then, and spawned.
    assert_eq!(
        fake.when(Call::Spawn(102)),
        Some(crash + Duration::from_secs(1) + PREPARE)
    );
    assert_eq!(fake.inner.lock().unwrap().alive.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_escalates_to_sigkill_at_the_stop_timeout() {
    let fake = Fake::new().with(|i| i.on_term = OnTerm::Ignore);
    let (run, sig, _control, _dir) = start(&fake, false);
    let script = async {
        sleep(3_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 137, "the kill is reported");
    let term = fake.when(Call::Signal(101, Signal::SIGTERM)).unwrap();
    let kill = fake.when(Call::Signal(101, Signal::SIGKILL)).unwrap();
    assert_eq!(kill - term, STOP);
    // Healthy before the stop: the data watch ran, and never saw the data closed.
    assert!(fake.plain().contains(&Call::WatchData));
}

#[tokio::test(start_paused = true)]
async fn the_data_seen_closed_ends_the_stop_with_a_clean_sigkill() {
    let fake = Fake::new().with(|i| {
        i.data_closes_after = Some(Duration::from_millis(40));
        i.on_term = OnTerm::Exit(Duration::from_secs(1), ChildExit::Signal(libc::SIGTERM));
    });
    let (run, sig, _control, _dir) = start(&fake, false);
    let script = async {
        sleep(3_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0, "a clean stop");
    let term = fake.when(Call::Signal(101, Signal::SIGTERM)).unwrap();
    let kill = fake.when(Call::Signal(101, Signal::SIGKILL)).unwrap();
    assert_eq!(kill - term, Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_while_down_is_answered_at_once() {
    let fake = Fake::new();
    let (run, sig, control, _dir) = start(&fake, true);
    let script = async {
        let control = control.await.unwrap();
        let began = Instant::now();
        let stopped = control.stop().await.unwrap();
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(stopped.exit, ChildExit::Code(0));
        assert_eq!(stopped.ended, StopEnd::Exited);
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    assert_eq!(
        fake.plain(),
        Vec::<Call>::new(),
        "held: nothing started, nothing signalled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_while_quiet_drains_the_driver_and_execs() {
    let fake = Fake::new().with(|i| i.reloads = true);
    let (run, sig, control, _dir) = start(&fake, false);
    let script = async {
        let control = control.await.unwrap();
        sleep(2_000).await;
        sig.send(Signal::SIGHUP).unwrap();
        let mut shutdown = control.shutdown.clone();
        shutdown.wait_for(|s| *s).await.unwrap();
        sleep(1_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    let calls = fake.plain();
    assert!(
        !calls.contains(&Call::Signal(101, Signal::SIGHUP)),
        "SIGHUP is the supervisor's"
    );
    let check = fake.when(Call::Check).unwrap();
    let exec = fake.when(Call::Exec(Some(101))).unwrap();
    assert!(
        exec > check && exec - check < Duration::from_secs(1),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_waits_while_a_turn_is_held_and_execs_once_it_ends() {
    let fake = Fake::new().with(|i| i.reloads = true);
    let (run, sig, control, _dir) = start(&fake, false);
    let script = async {
        let control = control.await.unwrap();
        sleep(2_000).await;
        // A turn: the driver stops etcd, reports its phase, and starts etcd again.
        control.report_phase(Phase::Stopping);
        control.stop().await.unwrap();
        sig.send(Signal::SIGHUP).unwrap();
        sleep(5_000).await;
        assert!(
            fake.when(Call::Exec(Some(102))).is_none(),
            "exec during a turn"
        );
        control.report_phase(Phase::Starting);
        control.start().await.unwrap();
        control.report_phase(Phase::Verifying);
        sleep(5_000).await;
        assert!(
            fake.when(Call::Exec(Some(102))).is_none(),
            "exec while held"
        );
        control.report_phase(Phase::Idle);
        control.resume().await;
        let mut shutdown = control.shutdown.clone();
        shutdown.wait_for(|s| *s).await.unwrap();
        sleep(1_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    assert!(
        fake.when(Call::Exec(Some(102))).is_some(),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn the_drivers_etcd_calls_step_aside_before_each_stop_and_come_home_once_healthy() {
    let fake = Fake::new();
    let (run, sig, control, _dir) = start(&fake, false);
    let script = async {
        let control = control.await.unwrap();
        sleep(2_000).await;
        // A turn's stop and start, then the operator's stop.
        control.stop().await.unwrap();
        control.start().await.unwrap();
        sleep(2_000).await;
        control.resume().await;
        sleep(1_000).await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    assert_aside_before_each_stop_home_once_healthy(&fake);
}

#[tokio::test(start_paused = true)]
async fn a_health_blip_that_recovers_during_a_stop_does_not_bring_the_calls_home() {
    // The leader handover before a swap's stop fails /health for a moment; the member
    // answers healthy again while its stop runs. Calls brought back then hold etcd's
    // graceful stop for its whole request timeout (seen: 7 s on 3.5.36 and 3.6.10).
    let fake = Fake::new().with(|i| {
        i.on_term = OnTerm::Exit(Duration::from_secs(2), ChildExit::Signal(libc::SIGTERM));
    });
    let (run, sig, control, _dir) = start(&fake, false);
    let health = fake.health.clone();
    let script = async {
        let control = control.await.unwrap();
        sleep(2_000).await;
        health.send_replace(Health::Unhealthy);
        sleep(100).await;
        let recovers = async {
            sleep(300).await;
            health.send_replace(Health::Healthy);
        };
        let (stopped, ()) = tokio::join!(control.stop(), recovers);
        stopped.unwrap();
        control.start().await.unwrap();
        sleep(2_000).await;
        control.resume().await;
        sig.send(Signal::SIGTERM).unwrap();
    };
    let (code, ()) = tokio::join!(run, script);
    assert_eq!(code.unwrap(), 0);
    assert_aside_before_each_stop_home_once_healthy(&fake);
}

/// Two etcds, each stopped by SIGTERM: the calls stepped aside right before each SIGTERM and
/// came home only once the next etcd was healthy (never between a SIGTERM and the next start).
fn assert_aside_before_each_stop_home_once_healthy(fake: &Fake) {
    let seen: Vec<Call> = fake
        .plain()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Call::StepAside | Call::ComeHome | Call::Signal(..) | Call::Spawn(_)
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            Call::Spawn(101),
            Call::ComeHome,
            Call::StepAside,
            Call::Signal(101, Signal::SIGTERM),
            Call::Spawn(102),
            Call::ComeHome,
            Call::StepAside,
            Call::Signal(102, Signal::SIGTERM),
        ],
        "{:?}",
        fake.calls()
    );
}
