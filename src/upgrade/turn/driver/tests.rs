//! The driver against a fake world: every call it makes is logged with the state that was
//! on disk (state.json) at that moment, so the tests check both the order of the world
//! changes and that each was announced before it happened. Time is tokio's paused clock.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::*;
use crate::backup::BackupError;
use crate::backup::BackupMode;
use crate::cluster::records::{MemberRecord, Stored};
use crate::cluster::view::{ClusterView, MemberView, TurnView};
use crate::etcd::maintenance::{EtcdVersion, Leader, Status};
use crate::etcd::EtcdError;
use crate::process::child::Stopped;
use crate::process::reaper::ChildExit;
use crate::supervisor::control::{ChildStatus, Health};
use crate::upgrade::rules::consistency::InconsistencyRecord;
use crate::upgrade::turn::ports::PreparedBackup;
use crate::versions::store::VersionsError;

const PREFIX: &str = "/etcd-supervisor/";
const LOCAL: &str = "http://m1:2379";

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// A world-changing (or turn-related) call, with the persisted state it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Acquire,
    ReleaseLock,
    Backup(Seen),
    ColdCopy(Seen),
    Stop(Seen),
    Switch(Version, Seen),
    Start(Version, Seen),
    Resume,
    Reject(String),
    Transfer(u64),
}

/// What state.json said at a call: phase and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen(Phase, bool);

const FORWARD: bool = false;
const BACK: bool = true;

/// When the fake takes the turn away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoseLock {
    /// While the backup is being taken (before the stop).
    DuringBackup,
    /// As etcd stops.
    AtStop,
    /// As etcd starts.
    AtStart,
    /// While the new version soaks (at the soak's first look at the cluster).
    DuringSoak,
}

#[derive(Debug)]
struct Inner {
    calls: Vec<Call>,
    current: Version,
    running: Option<Version>,
    next_pid: u32,
    status: ChildStatus,
    /// Versions that exit as soon as they are first asked for their health.
    crashes: Vec<Version>,
    /// Versions that exit with a usage error (code 2) when asked for their health.
    refuse_flags: Vec<Version>,
    /// Versions that keep running but never answer healthy (cut off from their peers).
    unhealthy: Vec<Version>,
    /// What vetting a candidate finds (a pass when `None`).
    vetted: Option<Vetted>,
    /// What etcd last wrote to stderr.
    log_tail: String,
    /// The turn (1-based acquisition count) during which m2 reports unhealthy.
    m2_down_in_turn: Option<u32>,
    acquired: u32,
    cold: bool,
    backup_fails: bool,
    cold_copy_fails: bool,
    stop_fails: bool,
    lose_lock: Option<LoseLock>,
    lock_lost: Option<watch::Sender<Option<String>>>,
    /// Leader last: who leads (m2 unless a test says), from the first acquisition on
    /// when `leads_once_acquired`; m3's version when it differs from m2's; the version m2's
    /// supervisor is queued for; when the turn was last acquired.
    leader: &'static str,
    leads_once_acquired: Option<&'static str>,
    m3_on: Option<Version>,
    m2_on: Option<Version>,
    m2_queued_for: Option<Version>,
    acquired_at: Option<tokio::time::Instant>,
    /// `etcd-supervisor pause` is in effect (the cluster view carries a pause record).
    paused: bool,
    /// The pause arrives as the backup is taken: after preflight, before the stop.
    pause_during_backup: bool,
    /// The recorded inconsistency (`consistency/alarm`), as one line.
    inconsistency: Option<String>,
    /// An inconsistency is recorded while this member waits in the lock queue.
    inconsistent_while_queued: bool,
    /// The watch of the key prefix works: a change (`Fake::changed`) wakes a waiter at
    /// once; otherwise every wait runs to its bound (the poll).
    watch_up: bool,
    /// Views read while the pause was in effect.
    paused_reads: u32,
    /// The backup taken while vetting, handed to the turn once.
    prepared: Option<PreparedBackup>,
    /// m3 falls behind the leader as the backup is taken (once): the last look before the
    /// stop sees it catching up.
    m3_behind_during_backup: bool,
    /// m3's lag in the next view read (then none).
    m3_lag: Option<u64>,
    /// Each read of the db ahead of the restart: how many calls came before it, and what
    /// state.json said then (kept apart from `calls`, which the sequences compare whole).
    read_aheads: Vec<(usize, Option<Seen>)>,
}

/// The call at which the test ends the run (SIGTERM to the supervisor, as it were).
type Until = Box<dyn FnMut(&Call) -> bool + Send>;

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    state: StateFile,
    shutdown: watch::Sender<bool>,
    until: Arc<Mutex<Option<Until>>>,
    /// Rung by a change under the key prefix, as the live watch would.
    changes: Arc<tokio::sync::Notify>,
}

impl Fake {
    fn new(state_dir: &std::path::Path, running: &Version) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                calls: Vec::new(),
                current: running.clone(),
                running: Some(running.clone()),
                next_pid: 101,
                status: ChildStatus {
                    pid: Some(100),
                    health: Health::Healthy,
                    last_exit: None,
                },
                crashes: Vec::new(),
                refuse_flags: Vec::new(),
                unhealthy: Vec::new(),
                vetted: None,
                log_tail: String::new(),
                m2_down_in_turn: None,
                acquired: 0,
                cold: false,
                backup_fails: false,
                cold_copy_fails: false,
                stop_fails: false,
                lose_lock: None,
                lock_lost: None,
                leader: "m2",
                leads_once_acquired: None,
                m3_on: None,
                m2_on: None,
                m2_queued_for: None,
                acquired_at: None,
                paused: false,
                pause_during_backup: false,
                inconsistency: None,
                inconsistent_while_queued: false,
                watch_up: false,
                paused_reads: 0,
                prepared: None,
                read_aheads: Vec::new(),
                m3_behind_during_backup: false,
                m3_lag: None,
            })),
            state: StateFile::new(state_dir),
            shutdown: watch::channel(false).0,
            until: Arc::new(Mutex::new(None)),
            changes: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.inner.lock().unwrap());
    }

    fn seen(&self) -> Seen {
        let turn = self.state.load().unwrap().expect("state.json written");
        Seen(turn.phase, turn.rollback)
    }

    /// Records `call`; when it is the one the test waits for, shuts the driver down right
    /// here, so nothing after it can slip in before the test looks.
    fn log(&self, call: Call) {
        let end = self
            .until
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|until| until(&call));
        self.inner.lock().unwrap().calls.push(call);
        if end {
            self.shutdown.send_replace(true);
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    fn lose_lock_if(&self, when: LoseLock) {
        let mut inner = self.inner.lock().unwrap();
        if inner.lose_lock == Some(when) {
            inner.lose_lock = None;
            if let Some(tx) = &inner.lock_lost {
                let _ = tx.send(Some("lease expired".into()));
            }
        }
    }
}

impl EtcdChild for Fake {
    async fn stop(&self) -> Result<Stopped, String> {
        if self.inner.lock().unwrap().stop_fails {
            return Err("the run loop is gone".into());
        }
        self.log(Call::Stop(self.seen()));
        self.with(|w| {
            w.running = None;
            let pid = w.status.pid.take().unwrap_or(0);
            w.status.last_exit = Some((pid, ChildExit::Code(0)));
        });
        self.lose_lock_if(LoseLock::AtStop);
        Ok(Stopped {
            exit: ChildExit::Code(0),
            ended: crate::process::child::StopEnd::Exited,
            took: Duration::from_millis(300),
        })
    }

    async fn start(&self) -> Result<u32, String> {
        let current = self.inner.lock().unwrap().current.clone();
        self.log(Call::Start(current.clone(), self.seen()));
        let mut w = self.inner.lock().unwrap();
        let pid = w.next_pid;
        w.next_pid += 1;
        w.running = Some(current);
        w.status.pid = Some(pid);
        drop(w);
        self.lose_lock_if(LoseLock::AtStart);
        Ok(pid)
    }

    async fn resume(&self) {
        self.log(Call::Resume);
    }

    fn status(&self) -> ChildStatus {
        self.inner.lock().unwrap().status
    }

    fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn log_tail(&self) -> String {
        self.inner.lock().unwrap().log_tail.clone()
    }
}

struct FakeLock {
    fake: Fake,
    lost: watch::Receiver<Option<String>>,
}

impl TurnLock for FakeLock {
    fn acquired(&self) -> Instant {
        Instant::now()
    }

    fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    fn lost(&self) -> impl Future<Output = String> + Send + 'static {
        let mut rx = self.lost.clone();
        async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    async fn release(self) -> Result<(), EtcdError> {
        self.fake.log(Call::ReleaseLock);
        Ok(())
    }
}

fn member(name: &str, version: &Version, healthy: bool) -> MemberView {
    MemberView {
        name: name.into(),
        id: name.trim_start_matches('m').to_owned(),
        client_url: Some(format!("http://{name}:2379")),
        server_version: Some(version.clone()),
        healthy,
        leader: name == "m2",
        learner: false,
        storage_version: None,
        raft_applied_index: Some(10),
        lag: Some(0),
        error: None,
    }
}

impl Cluster for Fake {
    type Lock = FakeLock;

    async fn refresh_endpoints(&self) {}

    async fn read_view(&self) -> ClusterView {
        if self.state.load().ok().flatten().map(|t| t.phase) == Some(Phase::Soaking) {
            self.lose_lock_if(LoseLock::DuringSoak);
        }
        let mut w = self.inner.lock().unwrap();
        if w.paused {
            w.paused_reads += 1;
        }
        let m2_up = w.m2_down_in_turn != Some(w.acquired);
        let m3_lag = w.m3_lag.take();
        let running = w.running.clone().unwrap_or_else(|| w.current.clone());
        let peers = v("3.5.15");
        let mut progress = BTreeMap::new();
        if let Some(to) = &w.m2_queued_for {
            let record =
                MemberRecord::new("m2", &peers, Some(to), "queued", SystemTime::now(), None);
            progress.insert("m2".to_owned(), Stored::Read(record));
        }
        ClusterView {
            healthy: m2_up,
            cluster_id: Some("c1".into()),
            cluster_version: Some(v("3.5.0")),
            leader: Some(w.leader.into()),
            members: vec![
                member("m1", &running, w.running.is_some()),
                member("m2", w.m2_on.as_ref().unwrap_or(&peers), m2_up),
                MemberView {
                    lag: m3_lag.or(Some(0)),
                    ..member("m3", w.m3_on.as_ref().unwrap_or(&peers), true)
                },
            ],
            alarms: Vec::new(),
            turn: TurnView::default(),
            progress,
            rejected: BTreeMap::new(),
            auth_enabled: Some(false),
            rejections_read: true,
            error: None,
            pause: w.paused.then(|| {
                Stored::Read(crate::cluster::records::PauseRecord::new(
                    "ops",
                    "h1",
                    SystemTime::now(),
                    Some("change freeze"),
                ))
            }),
        }
    }

    async fn changed_within(&self, bound: Duration) {
        if self.inner.lock().unwrap().watch_up {
            tokio::select! {
                () = self.changes.notified() => {}
                () = tokio::time::sleep(bound) => {}
            }
        } else {
            tokio::time::sleep(bound).await;
        }
    }

    async fn acquire(
        &self,
        _cancel: impl Future<Output = ()> + Send,
    ) -> Result<FakeLock, LockError> {
        self.log(Call::Acquire);
        let (tx, rx) = watch::channel(None);
        self.with(|w| {
            w.acquired += 1;
            w.lock_lost = Some(tx);
            if std::mem::take(&mut w.inconsistent_while_queued) {
                w.inconsistency = Some("m3 hash 8 differs".into());
            }
            w.acquired_at = Some(tokio::time::Instant::now());
            if let Some(leader) = w.leads_once_acquired {
                w.leader = leader;
            }
        });
        Ok(FakeLock {
            fake: self.clone(),
            lost: rx,
        })
    }

    async fn publish_member(&self, _record: &MemberRecord) -> Result<(), EtcdError> {
        Ok(())
    }

    async fn reject_version(
        &self,
        version: &Version,
        _record: &crate::cluster::records::RejectionRecord,
    ) -> Result<(), EtcdError> {
        self.log(Call::Reject(version.to_string()));
        Ok(())
    }

    async fn record_inconsistency(&self, record: &InconsistencyRecord) -> Result<(), EtcdError> {
        self.with(|w| w.inconsistency = Some(record.summary()));
        Ok(())
    }

    async fn recorded_inconsistency(&self) -> Result<Option<String>, EtcdError> {
        Ok(self.inner.lock().unwrap().inconsistency.clone())
    }

    async fn health_of(&self, endpoint: &str) -> Result<bool, EtcdError> {
        assert_eq!(endpoint, LOCAL);
        let mut w = self.inner.lock().unwrap();
        let Some(running) = w.running.clone() else {
            return Err(EtcdError::InvalidRequest("connection refused".into()));
        };
        let code = if w.crashes.contains(&running) {
            Some(1)
        } else if w.refuse_flags.contains(&running) {
            Some(2)
        } else {
            None
        };
        if let Some(code) = code {
            // It dies before ever answering healthy.
            w.running = None;
            let pid = w.status.pid.take().unwrap_or(0);
            w.status.last_exit = Some((pid, ChildExit::Code(code)));
            return Ok(false);
        }
        Ok(!w.unhealthy.contains(&running))
    }

    async fn version_of(&self, _endpoint: &str) -> Result<EtcdVersion, EtcdError> {
        let w = self.inner.lock().unwrap();
        match &w.running {
            Some(r) => Ok(EtcdVersion {
                server: r.to_string(),
                cluster: "3.5.0".into(),
                storage: String::new(),
            }),
            None => Err(EtcdError::InvalidRequest("connection refused".into())),
        }
    }

    async fn status_of(&self, _endpoint: &str) -> Result<Status, EtcdError> {
        Ok(Status {
            raft_applied_index: 10,
            ..Status::default()
        })
    }

    async fn leader(&self) -> Result<Leader, EtcdError> {
        Ok(Leader {
            id: 2,
            name: "m2".into(),
            endpoint: "http://m2:2379".into(),
        })
    }

    async fn transfer_leadership(&self, target_id: u64) -> Result<(), EtcdError> {
        self.log(Call::Transfer(target_id));
        Ok(())
    }
}

impl Backups for Fake {
    type Pending = ();

    async fn begin(&self, _turn: BackupTurn) -> Result<BackupStage<()>, BackupError> {
        self.log(Call::Backup(self.seen()));
        self.lose_lock_if(LoseLock::DuringBackup);
        self.with(|w| {
            w.paused |= w.pause_during_backup;
            if std::mem::take(&mut w.m3_behind_during_backup) {
                w.m3_lag = Some(crate::upgrade::rules::preflight::MAX_LAG + 1);
            }
        });
        let (fails, cold) = {
            let w = self.inner.lock().unwrap();
            (w.backup_fails, w.cold)
        };
        if fails {
            return Err(BackupError::NotADataDir {
                dir: PathBuf::from("/nowhere"),
            });
        }
        if cold {
            return Ok(BackupStage::ColdCopyPending(()));
        }
        Ok(BackupStage::Done(taken()))
    }

    async fn cold_copy(&self, (): ()) -> Result<TakenBackup, BackupError> {
        self.log(Call::ColdCopy(self.seen()));
        if self.inner.lock().unwrap().cold_copy_fails {
            return Err(BackupError::NotADataDir {
                dir: PathBuf::from("/var/lib/etcd"),
            });
        }
        Ok(taken())
    }

    fn take_prepared(&self) -> Option<PreparedBackup> {
        self.inner.lock().unwrap().prepared.take()
    }

    fn read_ahead(&self) {
        // A recovered turn queues before state.json is written again.
        let seen = self.state.load().ok().flatten();
        let seen = seen.map(|t| Seen(t.phase, t.rollback));
        self.with(|w| {
            let at = w.calls.len();
            w.read_aheads.push((at, seen));
        });
    }
}

fn taken() -> TakenBackup {
    TakenBackup {
        dir: PathBuf::from("/state/backups/b1"),
        bytes: 1024,
        elapsed: Duration::from_millis(5),
        summary: "verified backup".into(),
    }
}

impl Vetter for Fake {
    async fn vet(&self, _running: &Version, _target: &Version) -> Vetted {
        self.inner
            .lock()
            .unwrap()
            .vetted
            .clone()
            .unwrap_or(Vetted::Pass {
                warnings: Vec::new(),
                summary: "fake".into(),
            })
    }
}

impl VersionSwitch for Fake {
    fn set_current(&self, version: &Version) -> Result<(), VersionsError> {
        self.log(Call::Switch(version.clone(), self.seen()));
        self.with(|w| w.current = version.clone());
        Ok(())
    }
}

fn config(dir: &std::path::Path, backup: BackupMode) -> DriverConfig {
    DriverConfig {
        member: "m1".into(),
        state_dir: dir.to_path_buf(),
        staging_dir: dir.join("staging"),
        data_dir: dir.join("data"),
        local_endpoints: vec![LOCAL.into()],
        advertised_endpoints: vec![LOCAL.into()],
        key_prefix: PREFIX.into(),
        lock_ttl: Duration::from_secs(10),
        leader_last_wait: Duration::from_secs(60),
        ready_timeout: Duration::from_secs(30),
        backup,
        backup_keep: 3,
        backup_max_age: crate::upgrade::rules::backup_reuse::DEFAULT_MAX_AGE,
        policy: Default::default(),
        failpoint_pause: None,
        pacing: Default::default(),
    }
}

fn candidate(version: &Version) -> Candidate {
    Candidate {
        version: version.clone(),
        dir: PathBuf::from(format!("/state/versions/{version}")),
        binary: PathBuf::from(format!("/state/versions/{version}/etcd")),
        sha256: "00".into(),
        companions: Vec::new(),
        staged_name: "etcd".into(),
        already_pinned: false,
    }
}

fn world(fake: &Fake) -> World<Fake, Fake, Fake, Fake, Fake> {
    World {
        child: fake.clone(),
        cluster: fake.clone(),
        backups: fake.clone(),
        versions: fake.clone(),
        vetter: fake.clone(),
    }
}

/// A driver on `fake` starting from `turn`, and the sender of its candidates.
fn driver_at(
    fake: &Fake,
    dir: &std::path::Path,
    backup: BackupMode,
    turn: Turn,
) -> (
    mpsc::Sender<Candidate>,
    Driver<Fake, Fake, Fake, Fake, Fake>,
) {
    let (tx, rx) = mpsc::channel(4);
    let driver = Driver::with_world(
        config(dir, backup),
        world(fake),
        turn,
        rx,
        Metrics::new(crate::upgrade::turn::machine::STATE_NAMES),
    );
    (tx, driver)
}

/// Runs `driver` from `effect` until it ends (at the call `until` matches, or by itself);
/// returns every call and the state left on disk.
async fn run_until(
    fake: &Fake,
    driver: Driver<Fake, Fake, Fake, Fake, Fake>,
    effect: Effect,
    until: impl FnMut(&Call) -> bool + Send + 'static,
) -> (Vec<Call>, Turn) {
    *fake.until.lock().unwrap() = Some(Box::new(until));
    let task = tokio::spawn(driver.run(effect));
    tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .unwrap_or_else(|_| panic!("the driver never ended; calls: {:?}", fake.calls()))
        .unwrap();
    let turn = fake.state.load().unwrap().unwrap();
    (fake.calls(), turn)
}

/// A driver on `fake` idle on 3.5.15 with 3.5.16 staged, run until `until`.
async fn drive(
    fake: &Fake,
    dir: &std::path::Path,
    backup: BackupMode,
    until: impl FnMut(&Call) -> bool + Send + 'static,
) -> (Vec<Call>, Turn) {
    let (tx, driver) = driver_at(fake, dir, backup, Turn::idle(v("3.5.15")));
    tx.send(candidate(&v("3.5.16"))).await.unwrap();
    run_until(fake, driver, Effect::Nothing, until).await
}

fn count(calls: &[Call], f: impl Fn(&Call) -> bool) -> usize {
    calls.iter().filter(|c| f(c)).count()
}

#[tokio::test(start_paused = true)]
async fn forward_swap_persists_each_state_before_changing_the_world() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.cold = true);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Both, |c| *c == Call::Resume).await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::ColdCopy(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn the_db_is_read_ahead_once_as_the_member_queues_before_the_turn_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    let (calls, _) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(calls.first(), Some(&Call::Acquire), "{calls:?}");
    let reads = fake.inner.lock().unwrap().read_aheads.clone();
    assert_eq!(reads.len(), 1, "one read per queue entry: {reads:?}");
    assert_eq!(
        reads[0],
        (0, Some(Seen(Phase::Queued, FORWARD))),
        "queued, before the lock is asked for: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn new_version_exiting_during_verify_is_rolled_back_and_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.crashes = vec![v("3.5.16")]);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, BACK)),
            Call::Switch(v("3.5.15"), Seen(Phase::Swapping, BACK)),
            Call::Start(v("3.5.15"), Seen(Phase::Starting, BACK)),
            Call::Reject("3.5.16".into()),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.from, v("3.5.15"));
    assert_eq!(turn.to, None);
    assert!(
        turn.last_error
            .as_deref()
            .is_some_and(|e| e.contains("3.5.16 exited (exit code 1)")),
        "{turn:?}"
    );
    let note = dir.path().join("staging/rejected/etcd-3.5.16.reason");
    assert!(note.exists(), "a reason file for the operator");
}

/// The backup the rehearsal restored, taken `age` ago for 3.5.15 -> 3.5.16.
fn prepared(age: Duration) -> PreparedBackup {
    PreparedBackup {
        taken: TakenBackup {
            dir: PathBuf::from("/state/backups/rehearsal-b0"),
            ..taken()
        },
        from: v("3.5.15"),
        to: v("3.5.16"),
        at: Instant::now().checked_sub(age).unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_fresh_verified_backup_from_the_rehearsal_is_the_turns_backup() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.prepared = Some(prepared(Duration::from_secs(30))));
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // No backup of its own: the turn holds only the stop, the switch, the start.
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.5.16")));
    assert!(
        fake.inner.lock().unwrap().prepared.is_none(),
        "handed over once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_or_foreign_prepared_backup_is_retaken_before_the_stop() {
    let max = crate::upgrade::rules::backup_reuse::DEFAULT_MAX_AGE;
    let mut other = prepared(Duration::from_secs(1));
    other.to = v("3.5.17");
    for (label, p, mode) in [
        (
            "stale",
            prepared(max + Duration::from_secs(1)),
            BackupMode::Snapshot,
        ),
        ("another target", other, BackupMode::Snapshot),
        (
            "data-dir mode",
            prepared(Duration::from_secs(1)),
            BackupMode::Both,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(dir.path(), &v("3.5.15"));
        fake.with(|w| {
            w.prepared = Some(p);
            w.cold = mode == BackupMode::Both;
        });
        let (calls, turn) = drive(&fake, dir.path(), mode, |c| *c == Call::Resume).await;
        assert_eq!(
            calls[..3],
            [
                Call::Acquire,
                Call::Backup(Seen(Phase::Backup, FORWARD)),
                Call::Stop(Seen(Phase::Stopping, FORWARD)),
            ],
            "{label}"
        );
        assert_eq!(turn, Turn::idle(v("3.5.16")), "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn preflight_wait_releases_and_queues_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.m2_down_in_turn = Some(1));
    let started = tokio::time::Instant::now();
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        matches!(c, Call::Start(..))
    })
    .await;
    assert_eq!(
        calls[..4],
        [
            Call::Acquire,
            Call::ReleaseLock,
            Call::Resume,
            Call::Acquire,
        ]
    );
    assert!(matches!(calls[4], Call::Backup(_)), "{calls:?}");
    // The retry waited for its backoff (1 s) instead of spinning.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(turn.to, Some(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn a_member_falling_behind_after_preflight_holds_the_stop_and_the_turn_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.m3_behind_during_backup = true);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        matches!(c, Call::Start(..))
    })
    .await;
    assert_eq!(
        calls[..9],
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
        ],
        "no stop while m3 caught up"
    );
    assert_eq!(turn.to, Some(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn failed_backup_before_the_stop_stops_nothing_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.backup_fails = true);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Queued);
    assert!(
        turn.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not an etcd data dir")),
        "{turn:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_cold_copy_restarts_and_verifies_the_old_version_then_requeues() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.cold = true;
        w.cold_copy_fails = true;
    });
    // Up to the next turn's acquisition: the requeue.
    let mut acquired = 0;
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::DataDir, move |c| {
        acquired += u32::from(*c == Call::Acquire);
        acquired == 2
    })
    .await;
    // `current` is put back (idempotently) before the old version starts.
    assert_eq!(
        calls[..9],
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::ColdCopy(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::Start(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
            Call::Acquire,
        ]
    );
    assert_eq!(
        count(
            &calls,
            |c| matches!(c, Call::Switch(w, _) if *w != v("3.5.15"))
        ),
        0
    );
    assert_eq!(count(&calls, |c| matches!(c, Call::Reject(_))), 0);
    // Verified before the release: the old version answers again.
    assert_eq!(fake.inner.lock().unwrap().running, Some(v("3.5.15")));
    assert_eq!(turn.from, v("3.5.15"));
    assert_eq!(turn.to, Some(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn old_version_not_answering_after_a_failed_cold_copy_ends_failed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.cold = true;
        w.cold_copy_fails = true;
        w.crashes = vec![v("3.5.15")];
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::DataDir, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(count(&calls, |c| matches!(c, Call::Stop(_))), 1);
    assert_eq!(count(&calls, |c| matches!(c, Call::Reject(_))), 0);
    assert_eq!(turn.phase, Phase::Failed);
    assert_eq!(calls.last(), Some(&Call::Resume));
}

#[tokio::test(start_paused = true)]
async fn lost_turn_after_the_stop_restores_the_old_version_without_a_second_stop() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.cold = true;
        w.lose_lock = Some(LoseLock::AtStop);
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Both, |c| *c == Call::Resume).await;
    assert_eq!(count(&calls, |c| matches!(c, Call::Stop(_))), 1);
    assert_eq!(count(&calls, |c| *c == Call::Acquire), 1, "{calls:?}");
    assert_eq!(
        calls[2..],
        [
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::ColdCopy(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::Start(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(
        (turn.phase, turn.from, turn.to),
        (Phase::Queued, v("3.5.15"), Some(v("3.5.16")))
    );
}

#[tokio::test(start_paused = true)]
async fn lost_turn_before_the_stop_aborts_and_the_next_attempt_takes_a_new_turn() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.lose_lock = Some(LoseLock::DuringBackup));
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // Aborted: nothing stopped, and the lost turn given back.
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Queued);
    assert_eq!(turn.last_error.as_deref(), Some("lost the upgrade turn"));
    // Every stop in the whole run comes after an acquisition of its own.
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.lose_lock = Some(LoseLock::DuringBackup));
    let (calls, _) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        matches!(c, Call::Stop(_))
    })
    .await;
    let stop = calls
        .iter()
        .position(|c| matches!(c, Call::Stop(_)))
        .unwrap();
    let before = &calls[..stop];
    let last_acquire = before.iter().rposition(|c| *c == Call::Acquire).unwrap();
    let last_release = before
        .iter()
        .rposition(|c| *c == Call::ReleaseLock)
        .unwrap();
    assert!(
        last_release < last_acquire && last_acquire < stop,
        "{calls:?}"
    );
    assert_eq!(count(&calls, |c| *c == Call::Acquire), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_stop_request_is_not_a_stop_and_ends_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.stop_fails = true);
    // No shutdown is sent: the driver must end by itself.
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |_| false).await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
        ]
    );
    assert_eq!(turn.phase, Phase::Stopping);
    assert!(
        turn.last_error
            .as_deref()
            .is_some_and(|e| e.contains("the run loop is gone")),
        "{turn:?}"
    );
    // On the next start nothing was switched: back in the queue on the old version.
    let next = machine::recover(&turn, &v("3.5.15"));
    assert_eq!(next.turn.phase, Phase::Queued);
}

#[tokio::test(start_paused = true)]
async fn recovered_restoring_puts_the_old_version_back_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    // As after a crash mid-restore: `current` never switched, etcd held stopped.
    fake.with(|w| {
        w.running = None;
        w.status.pid = None;
    });
    let persisted = Turn {
        phase: Phase::Restoring,
        from: v("3.5.15"),
        to: Some(v("3.5.16")),
        rollback: false,
        last_error: Some("backup failed after the stop".into()),
        retries: 0,
        fault: machine::Fault::Version,
    };
    fake.state.save(&persisted).unwrap();
    let machine::Step { turn, effect } = machine::recover(&persisted, &v("3.5.15"));
    let (_tx, driver) = driver_at(&fake, dir.path(), BackupMode::Snapshot, turn);
    // Up to the requeue's acquisition of a new turn.
    let (calls, turn) = run_until(&fake, driver, effect, |c| *c == Call::Acquire).await;
    assert_eq!((turn.from, turn.to), (v("3.5.15"), Some(v("3.5.16"))));
    assert_eq!(
        calls,
        [
            Call::Switch(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::Start(v("3.5.15"), Seen(Phase::Restoring, FORWARD)),
            Call::Resume,
            Call::Acquire,
            Call::ReleaseLock,
        ]
    );
    assert_eq!(fake.inner.lock().unwrap().running, Some(v("3.5.15")));
}

#[tokio::test(start_paused = true)]
async fn a_member_fault_found_before_the_queue_stops_nothing_and_keeps_the_version_staged() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    let why = "--debug is not a flag of etcd 3.5.16";
    fake.with(|w| w.vetted = Some(Vetted::MemberFault(why.into())));
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // No turn, no stop, no rejection: only the release of a turn never held.
    assert_eq!(calls, [Call::Resume]);
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.from, v("3.5.15"));
    assert_eq!(turn.to, Some(v("3.5.16")), "the version stays staged here");
    assert_eq!(turn.last_error.as_deref(), Some(why));
    assert!(dir
        .path()
        .join("staging/rejected/etcd-3.5.16.reason")
        .exists());

    // After a restart (the flags fixed, vetting passes), the same version is taken
    // without a new drop.
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    let (_tx, driver) = driver_at(&fake, dir.path(), BackupMode::Snapshot, turn);
    let (calls, turn) = run_until(&fake, driver, Effect::Nothing, |c| *c == Call::Resume).await;
    assert!(calls.contains(&Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD))));
    assert_eq!(turn, Turn::idle(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn a_version_fault_found_before_the_queue_rejects_it_without_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.vetted = Some(Vetted::VersionFault("rehearsal: exited 1".into())));
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(calls, [Call::Reject("3.5.16".into()), Call::Resume]);
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.to, None);
}

#[tokio::test(start_paused = true)]
async fn a_usage_error_of_the_new_version_rolls_back_without_rejecting_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.refuse_flags = vec![v("3.5.16")]);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, BACK)),
            Call::Switch(v("3.5.15"), Seen(Phase::Swapping, BACK)),
            Call::Start(v("3.5.15"), Seen(Phase::Starting, BACK)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.from, v("3.5.15"));
    assert_eq!(turn.to, Some(v("3.5.16")), "kept staged for after the fix");
    assert!(turn.last_error.unwrap_or_default().contains("usage"));
}

#[tokio::test(start_paused = true)]
async fn a_turn_recovered_unvetted_is_vetted_at_preflight_before_anything_stops() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.vetted = Some(Vetted::MemberFault("--debug".into())));
    // As after a restart while queued: the driver never vetted 3.5.16 itself.
    let queued = machine::recover(
        &Turn {
            phase: Phase::Queued,
            to: Some(v("3.5.16")),
            ..Turn::idle(v("3.5.15"))
        },
        &v("3.5.15"),
    );
    let (_tx, driver) = driver_at(&fake, dir.path(), BackupMode::Snapshot, queued.turn);
    let (calls, turn) = run_until(&fake, driver, queued.effect, |c| *c == Call::Resume).await;
    assert_eq!(calls, [Call::Acquire, Call::ReleaseLock, Call::Resume]);
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.to, Some(v("3.5.16")));
    assert_eq!(turn.last_error.as_deref(), Some("--debug"));
}

#[tokio::test(start_paused = true)]
async fn a_panic_exiting_with_code_2_is_still_the_versions_fault() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        // Go's runtime exits with 2 on a panic, like its flag parser on a usage error.
        w.refuse_flags = vec![v("3.5.16")];
        w.log_tail =
            "panic: runtime error: slice bounds out of range\ngoroutine 1 [running]:".into();
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert!(calls.contains(&Call::Reject("3.5.16".into())), "{calls:?}");
    assert_eq!(turn.to, None);
    assert!(
        turn.last_error
            .unwrap_or_default()
            .contains("slice bounds out of range"),
        "the reason quotes etcd's last lines"
    );
}

#[tokio::test(start_paused = true)]
async fn a_3_6_panic_on_v2_requests_in_this_members_wal_rolls_back_without_rejecting() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        // What 3.6.17 printed on the WAL of a cluster that ran 3.4 (no etcdutl pinned to
        // check it first): the member's data, which one snapshot clears, not the version.
        w.refuse_flags = vec![v("3.5.16")];
        w.log_tail = "{\"level\":\"panic\",\"msg\":\"detected disallowed v2 WAL for stage \
                      --v2-deprecation=write-only\",\"method\":\"QGET\"}\n\
                      panic: detected disallowed v2 WAL for stage --v2-deprecation=write-only \
                      [recovered]\ngoroutine 1 [running]:"
            .into();
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        count(&calls, |c| matches!(c, Call::Reject(_))),
        0,
        "{calls:?}"
    );
    assert_eq!(turn.phase, Phase::Idle);
    assert_eq!(turn.from, v("3.5.15"));
    assert_eq!(
        turn.to,
        Some(v("3.5.16")),
        "kept staged for after the remedy"
    );
    let why = turn.last_error.unwrap_or_default();
    assert!(why.contains("--snapshot-count=1"), "{why}");
    assert!(why.contains("disallowed v2 WAL"), "{why}");
}

#[tokio::test(start_paused = true)]
async fn a_version_that_stays_unhealthy_is_rejected_when_the_old_one_comes_back_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.unhealthy = vec![v("3.5.16")]);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        count(&calls, |c| *c == Call::Reject("3.5.16".into())),
        1,
        "{calls:?}"
    );
    assert_eq!((turn.phase, turn.to), (Phase::Idle, None));
}

#[tokio::test(start_paused = true)]
async fn a_member_that_cannot_serve_either_version_rejects_nothing_and_queues_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    // Cut off: whatever runs here stays unhealthy, but the turn holds.
    fake.with(|w| w.unhealthy = vec![v("3.5.16"), v("3.5.15")]);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        count(&calls, |c| matches!(c, Call::Reject(_))),
        0,
        "{calls:?}"
    );
    assert_eq!(
        count(&calls, |c| matches!(c, Call::Stop(_))),
        2,
        "{calls:?}"
    );
    assert_eq!(turn.phase, Phase::Queued);
    assert_eq!(turn.to, Some(v("3.5.16")), "kept staged");
    assert!(
        turn.last_error
            .as_deref()
            .unwrap_or("")
            .contains("nothing is rejected"),
        "{turn:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_turn_lost_while_the_new_version_runs_unverified_holds_it_without_a_second_stop() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.unhealthy = vec![v("3.5.16")];
        w.lose_lock = Some(LoseLock::AtStart);
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Holding);
    assert_eq!(turn.to, Some(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_lost_the_turn_does_not_record_its_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    // The new version crashes (its own fault), but the turn is gone by then.
    fake.with(|w| {
        w.crashes = vec![v("3.5.16")];
        w.lose_lock = Some(LoseLock::AtStart);
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // Rolled back without a second stop request reaching a running etcd (it had exited),
    // and no cluster-wide verdict from a stale holder.
    assert_eq!(
        count(&calls, |c| matches!(c, Call::Reject(_))),
        0,
        "{calls:?}"
    );
    assert_eq!(
        calls.last_chunk::<3>(),
        Some(&[
            Call::Start(v("3.5.15"), Seen(Phase::Starting, BACK)),
            Call::ReleaseLock,
            Call::Resume,
        ])
    );
    assert_eq!((turn.phase, turn.from), (Phase::Idle, v("3.5.15")));
}

#[tokio::test(start_paused = true)]
async fn a_leader_waits_for_a_queued_follower_up_to_the_bound_and_hands_leadership_over() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.leader = "m1";
        w.m3_on = Some(v("3.5.16"));
        w.m2_queued_for = Some(v("3.5.16"));
    });
    let start = tokio::time::Instant::now();
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Transfer(3),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.5.16")));
    // m2 never moved: the leader queued once the bound had passed, not before.
    let waited = fake.inner.lock().unwrap().acquired_at.unwrap() - start;
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(62),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_finds_itself_leading_gives_the_turn_back_before_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| {
        w.leads_once_acquired = Some("m1");
        w.m2_queued_for = Some(v("3.5.16"));
    });
    let start = tokio::time::Instant::now();
    let (calls, _) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        matches!(c, Call::Backup(_))
    })
    .await;
    // Given back untouched, then taken again once m2 had the bound to move (the final
    // release is the shutdown's).
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::ReleaseLock,
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
        ]
    );
    let waited = fake.inner.lock().unwrap().acquired_at.unwrap() - start;
    assert!(waited >= Duration::from_secs(60), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pause_arriving_between_preflight_and_the_stop_stops_nothing_and_gives_the_turn_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.pause_during_backup = true);
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // Preflight passed (the backup was taken), the pause came, and nothing was stopped.
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.phase, Phase::Queued);
    assert_eq!(turn.to, Some(v("3.5.16")));
    assert!(
        turn.last_error
            .as_deref()
            .is_some_and(|e| e.contains("change freeze")),
        "the pause is the reason given: {turn:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_cluster_starts_no_turn_until_the_pause_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.pause_during_backup = true);
    let lifted = fake.clone();
    // Lift the pause ten minutes (of the paused clock) after the first turn was given back.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if lifted.calls().contains(&Call::ReleaseLock) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
        lifted.with(|w| {
            w.paused = false;
            w.pause_during_backup = false;
        });
    });
    let began = tokio::time::Instant::now();
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        matches!(c, Call::Stop(_))
    })
    .await;
    // No second turn while paused; then the swap, one stop.
    assert!(began.elapsed() >= Duration::from_secs(600), "{calls:?}");
    assert_eq!(count(&calls, |c| *c == Call::Acquire), 2, "{calls:?}");
    assert_eq!(
        count(&calls, |c| matches!(c, Call::Stop(_))),
        1,
        "{calls:?}"
    );
    assert_eq!(turn.to, Some(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn a_turn_lost_during_the_soak_holds_the_new_version_without_a_stop_and_soaks_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.lose_lock = Some(LoseLock::DuringSoak));
    let mut cfg = config(dir.path(), BackupMode::Snapshot);
    cfg.pacing.soak = Duration::from_secs(30);
    let (tx, rx) = mpsc::channel(4);
    let driver = Driver::with_world(
        cfg,
        world(&fake),
        Turn::idle(v("3.5.15")),
        rx,
        Metrics::new(crate::upgrade::turn::machine::STATE_NAMES),
    );
    tx.send(candidate(&v("3.5.16"))).await.unwrap();
    let mut releases = 0;
    let (calls, turn) = run_until(&fake, driver, Effect::Nothing, move |c| {
        releases += usize::from(*c == Call::ReleaseLock);
        releases == 2 && *c == Call::ReleaseLock
    })
    .await;
    // The first turn ends at the lost turn, mid-soak, without stopping the new version;
    // the second verifies and soaks it again, and stops nothing either.
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
            Call::Acquire,
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.5.16")));
}

mod downgrade;

/// The forward swap of 3.5.15 -> 3.5.16 in snapshot mode, from the lock to the resume.
fn forward_turn() -> Vec<Call> {
    vec![
        Call::Acquire,
        Call::Backup(Seen(Phase::Backup, FORWARD)),
        Call::Stop(Seen(Phase::Stopping, FORWARD)),
        Call::Switch(v("3.5.16"), Seen(Phase::Swapping, FORWARD)),
        Call::Start(v("3.5.16"), Seen(Phase::Starting, FORWARD)),
        Call::ReleaseLock,
        Call::Resume,
    ]
}

#[tokio::test(start_paused = true)]
async fn a_recorded_inconsistency_blocks_every_turn_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.inconsistency = Some("m1,m2 hash 7; m3 hash 8".into()));
    // Acknowledged ten minutes (of the paused clock) in; what the world saw until then.
    let (ack, seen) = (fake.clone(), Arc::new(Mutex::new(None)));
    let before_ack = seen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(600)).await;
        let phase = ack.state.load().unwrap().map(|t| t.phase);
        *before_ack.lock().unwrap() = Some((ack.calls(), phase));
        ack.with(|w| w.inconsistency = None);
    });
    let began = tokio::time::Instant::now();
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // Queued, but never in the lock queue while the inconsistency stood.
    let (calls_before, phase_before) = seen.lock().unwrap().clone().expect("acknowledged");
    assert_eq!(
        calls_before,
        [],
        "no turn while an inconsistency is recorded"
    );
    assert_eq!(phase_before, Some(Phase::Queued));
    assert!(began.elapsed() >= Duration::from_secs(600), "{calls:?}");
    // Once acknowledged, the turn as usual.
    assert_eq!(calls, forward_turn());
    assert_eq!(turn, Turn::idle(v("3.5.16")));
}

#[tokio::test(start_paused = true)]
async fn an_inconsistency_recorded_while_queued_gives_the_turn_back_before_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(dir.path(), &v("3.5.15"));
    fake.with(|w| w.inconsistent_while_queued = true);
    // Acknowledged five minutes after the turn was given back; what the world saw until then.
    let (ack, seen) = (fake.clone(), Arc::new(Mutex::new(None)));
    let before_ack = seen.clone();
    tokio::spawn(async move {
        while !ack.calls().contains(&Call::ReleaseLock) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
        *before_ack.lock().unwrap() = Some(ack.calls());
        ack.with(|w| w.inconsistency = None);
    });
    let (calls, turn) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
        *c == Call::Resume
    })
    .await;
    // The lock came with the inconsistency recorded meanwhile: given back before anything
    // was backed up or stopped, and not queued for again until acknowledged.
    let before = seen.lock().unwrap().clone().expect("acknowledged");
    assert_eq!(before, [Call::Acquire, Call::ReleaseLock]);
    let mut expected = vec![Call::Acquire, Call::ReleaseLock];
    expected.extend(forward_turn());
    assert_eq!(calls, expected);
    assert_eq!(turn, Turn::idle(v("3.5.16")));
}

/// A member held by the pause queues as soon as the pause is lifted when the watch of the
/// key prefix reports it, and within the pause's poll when the watch is broken. (Paused
/// clock: the times are the driver's logic, not the machine's speed.)
#[tokio::test(start_paused = true)]
async fn a_resume_is_seen_at_once_through_the_watch_and_within_the_poll_without_it() {
    for watch_up in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(dir.path(), &v("3.5.15"));
        fake.with(|w| {
            w.paused = true;
            w.watch_up = watch_up;
        });
        let resumed_at = Arc::new(Mutex::new(None));
        let resume = {
            let (fake, resumed_at) = (fake.clone(), resumed_at.clone());
            tokio::spawn(async move {
                // Off the poll's beat, so that only the watch can see it at once.
                tokio::time::sleep(Duration::from_millis(31_234)).await;
                fake.with(|w| w.paused = false);
                *resumed_at.lock().unwrap() = Some(tokio::time::Instant::now());
                fake.changes.notify_one();
            })
        };
        let (calls, _) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
            *c == Call::Acquire
        })
        .await;
        resume.await.unwrap();
        assert_eq!(count(&calls, |c| *c == Call::Acquire), 1, "{calls:?}");
        let (acquired, held_reads) = {
            let w = fake.inner.lock().unwrap();
            (w.acquired_at.unwrap(), w.paused_reads)
        };
        assert!(held_reads > 0, "the member was held by the pause first");
        let took = acquired - resumed_at.lock().unwrap().unwrap();
        if watch_up {
            assert!(took < Duration::from_millis(100), "watch: {took:?}");
        } else {
            assert!(
                took > Duration::ZERO && took <= pacing::PAUSE_POLL,
                "poll: {took:?}"
            );
        }
    }
}

/// A leader waiting for a queued follower takes its turn as soon as that follower is done
/// (its turn released, its record on the target) when the watch reports the change, and
/// within the leader's look-again bound when the watch is broken. (Paused clock.)
#[tokio::test(start_paused = true)]
async fn a_waiting_leader_goes_at_once_through_the_watch_and_within_its_bound_without_it() {
    for watch_up in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(dir.path(), &v("3.5.15"));
        fake.with(|w| {
            w.leader = "m1";
            w.m3_on = Some(v("3.5.16"));
            w.m2_queued_for = Some(v("3.5.16"));
            w.watch_up = watch_up;
        });
        let done_at = Arc::new(Mutex::new(None));
        let follower = {
            let (fake, done_at) = (fake.clone(), done_at.clone());
            tokio::spawn(async move {
                // Well inside the 60 s bound, off the look-again beat.
                tokio::time::sleep(Duration::from_millis(10_123)).await;
                fake.with(|w| {
                    w.m2_queued_for = None;
                    w.m2_on = Some(v("3.5.16"));
                });
                *done_at.lock().unwrap() = Some(tokio::time::Instant::now());
                fake.changes.notify_one();
            })
        };
        let (calls, _) = drive(&fake, dir.path(), BackupMode::Snapshot, |c| {
            *c == Call::Acquire
        })
        .await;
        follower.await.unwrap();
        assert_eq!(count(&calls, |c| *c == Call::Acquire), 1, "{calls:?}");
        let acquired = fake.inner.lock().unwrap().acquired_at.unwrap();
        let took = acquired - done_at.lock().unwrap().unwrap();
        if watch_up {
            assert!(took < Duration::from_millis(100), "watch: {took:?}");
        } else {
            assert!(
                took > Duration::ZERO && took <= leader_last::LOOK_EVERY,
                "poll: {took:?}"
            );
        }
    }
}
