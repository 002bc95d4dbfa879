//! The downgrade in the driver's fake world: the same fake as the upgrade tests, wrapped
//! so the cluster reports a 3.7 (or downgrading) cluster and etcd's downgrade state.

use super::*;
use crate::upgrade::rules::downgrade::{DowngradeFacts, DowngradeRecord, InEtcd, RecordState};
use crate::upgrade::turn::downgrade_live::facts_from;

/// What the wrapped cluster says about the downgrade; shared with the test.
#[derive(Debug)]
struct Dg {
    cluster_version: Version,
    peers: Version,
    etcd: InEtcd,
    record: Option<DowngradeRecord>,
    storage: (u64, u64),
    cancels: Vec<String>,
}

#[derive(Clone)]
struct DgFake {
    fake: Fake,
    dg: Arc<Mutex<Dg>>,
}

impl DgFake {
    fn set(&self, f: impl FnOnce(&mut Dg)) {
        f(&mut self.dg.lock().unwrap());
    }
}

impl Cluster for DgFake {
    type Lock = FakeLock;

    async fn refresh_endpoints(&self) {}

    async fn read_view(&self) -> ClusterView {
        let mut view = self.fake.read_view().await;
        let dg = self.dg.lock().unwrap();
        view.cluster_version = Some(dg.cluster_version.clone());
        for m in view.members.iter_mut().filter(|m| m.name != "m1") {
            m.server_version = Some(dg.peers.clone());
        }
        for m in &mut view.members {
            m.storage_version = Some(format!("{}.{}.0", dg.storage.0, dg.storage.1));
        }
        view
    }

    async fn acquire(
        &self,
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<FakeLock, LockError> {
        self.fake.acquire(cancel).await
    }

    async fn publish_member(&self, record: &MemberRecord) -> Result<(), EtcdError> {
        self.fake.publish_member(record).await
    }

    async fn reject_version(
        &self,
        version: &Version,
        record: &crate::cluster::records::RejectionRecord,
    ) -> Result<(), EtcdError> {
        self.fake.reject_version(version, record).await
    }

    async fn record_inconsistency(&self, record: &InconsistencyRecord) -> Result<(), EtcdError> {
        self.fake.record_inconsistency(record).await
    }

    async fn recorded_inconsistency(&self) -> Result<Option<String>, EtcdError> {
        self.fake.recorded_inconsistency().await
    }

    async fn health_of(&self, endpoint: &str) -> Result<bool, EtcdError> {
        self.fake.health_of(endpoint).await
    }

    async fn version_of(&self, endpoint: &str) -> Result<EtcdVersion, EtcdError> {
        self.fake.version_of(endpoint).await
    }

    async fn status_of(&self, endpoint: &str) -> Result<Status, EtcdError> {
        self.fake.status_of(endpoint).await
    }

    async fn leader(&self) -> Result<Leader, EtcdError> {
        self.fake.leader().await
    }

    async fn transfer_leadership(&self, target_id: u64) -> Result<(), EtcdError> {
        self.fake.transfer_leadership(target_id).await
    }

    fn downgrade_poll(&self) -> Option<Duration> {
        Some(Duration::from_secs(2))
    }

    async fn downgrade_recorded(&self) -> bool {
        self.dg.lock().unwrap().record.is_some()
    }

    async fn downgrade_facts(&self, view: &ClusterView) -> DowngradeFacts {
        let dg = self.dg.lock().unwrap();
        facts_from(view, dg.etcd.clone(), dg.record.clone())
    }

    async fn cancel_downgrade(&self, why: String, _target: Version, _from: Version) {
        let mut dg = self.dg.lock().unwrap();
        dg.cancels.push(why);
        dg.etcd = InEtcd::Off;
        if let Some(r) = &mut dg.record {
            r.state = RecordState::Cancelled;
        }
    }
}

fn record(state: RecordState) -> DowngradeRecord {
    DowngradeRecord {
        schema: 1,
        target: v("3.6.17"),
        from: v("3.7.4"),
        state,
        by: "op@h".into(),
        time: String::new(),
        reason: None,
    }
}

/// m1 on `running`, peers on `peers`, nothing enabled yet.
fn setup(dir: &std::path::Path, running: &str, peers: &str) -> (Fake, DgFake) {
    let fake = Fake::new(dir, &v(running));
    let dg = DgFake {
        fake: fake.clone(),
        dg: Arc::new(Mutex::new(Dg {
            cluster_version: v("3.7.0"),
            peers: v(peers),
            etcd: InEtcd::Off,
            record: None,
            storage: (3, 7),
            cancels: Vec::new(),
        })),
    };
    (fake, dg)
}

fn driver_on(
    fake: &Fake,
    dg: &DgFake,
    dir: &std::path::Path,
    turn: Turn,
) -> (
    mpsc::Sender<Candidate>,
    Driver<Fake, DgFake, Fake, Fake, Fake>,
) {
    let (tx, rx) = mpsc::channel(4);
    let world = World {
        child: fake.clone(),
        cluster: dg.clone(),
        backups: fake.clone(),
        versions: fake.clone(),
        vetter: fake.clone(),
    };
    let driver = Driver::with_world(
        config(dir, BackupMode::Snapshot),
        world,
        turn,
        rx,
        Metrics::new(crate::upgrade::turn::machine::STATE_NAMES),
    );
    (tx, driver)
}

async fn run(
    fake: &Fake,
    driver: Driver<Fake, DgFake, Fake, Fake, Fake>,
    until: impl FnMut(&Call) -> bool + Send + 'static,
) -> (Vec<Call>, Turn) {
    *fake.until.lock().unwrap() = Some(Box::new(until));
    let task = tokio::spawn(driver.run(Effect::Nothing));
    tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .unwrap_or_else(|_| panic!("the driver never ended; calls: {:?}", fake.calls()))
        .unwrap();
    (fake.calls(), fake.state.load().unwrap().unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_older_minor_is_parked_until_the_downgrade_is_enabled_then_swapped_in_one_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, dg) = setup(dir.path(), "3.7.4", "3.7.4");
    let (tx, driver) = driver_on(&fake, &dg, dir.path(), Turn::idle(v("3.7.4")));
    tx.send(candidate(&v("3.6.17"))).await.unwrap();
    // The operator enables the downgrade a minute later: etcd moves the cluster version
    // and migrates the storage.
    let (enabler, state, probe_fake) = (dg.clone(), fake.state.clone(), fake.clone());
    let parked = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let turn = state.load().unwrap().unwrap();
        let calls = probe_fake.calls();
        tokio::time::sleep(Duration::from_secs(30)).await;
        enabler.set(|d| {
            d.cluster_version = v("3.6.0");
            d.etcd = InEtcd::Enabled((3, 6));
            d.record = Some(record(RecordState::Enabled));
            d.storage = (3, 6);
        });
        (turn, calls, tokio::time::Instant::now())
    });
    let mut started = false;
    let (calls, turn) = run(&fake, driver, move |c| {
        started |= matches!(c, Call::Start(..));
        started && *c == Call::Resume
    })
    .await;
    let (parked_turn, parked_calls, enabled_at) = parked.await.unwrap();
    // Parked: staged in state.json with the command to run, and nothing touched (the
    // refusal hands etcd back to the run loop's care, as every refusal does).
    assert_eq!(
        parked_calls,
        [Call::Resume],
        "nothing may happen before the enable"
    );
    assert_eq!(parked_turn.phase, Phase::Idle);
    assert_eq!(parked_turn.to, Some(v("3.6.17")));
    let why = parked_turn.last_error.unwrap();
    assert!(why.contains("etcd-supervisor downgrade 3.6.17"), "{why}");
    assert!(tokio::time::Instant::now() >= enabled_at);
    // Then the same turn as an upgrade.
    assert_eq!(
        calls[1..],
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.6.17"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.6.17"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.6.17")));
}

#[tokio::test(start_paused = true)]
async fn a_target_failing_on_the_migrated_data_rolls_back_and_cancels_the_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, dg) = setup(dir.path(), "3.7.4", "3.7.4");
    dg.set(|d| {
        d.cluster_version = v("3.6.0");
        d.etcd = InEtcd::Enabled((3, 6));
        d.record = Some(record(RecordState::Enabled));
        d.storage = (3, 6);
    });
    fake.with(|w| w.crashes = vec![v("3.6.17")]);
    let (tx, driver) = driver_on(&fake, &dg, dir.path(), Turn::idle(v("3.7.4")));
    tx.send(candidate(&v("3.6.17"))).await.unwrap();
    let (calls, turn) = run(&fake, driver, |c| *c == Call::Resume).await;
    assert_eq!(
        calls[2..],
        [
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.6.17"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.6.17"), Seen(Phase::Starting, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, BACK)),
            Call::Switch(v("3.7.4"), Seen(Phase::Swapping, BACK)),
            Call::Start(v("3.7.4"), Seen(Phase::Starting, BACK)),
            Call::Reject("3.6.17".into()),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn.from, v("3.7.4"));
    let cancels = dg.dg.lock().unwrap().cancels.clone();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert!(cancels[0].contains("3.6.17 failed on m1"), "{cancels:?}");
}

#[tokio::test(start_paused = true)]
async fn after_a_cancel_a_downgraded_member_goes_back_to_the_version_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, dg) = setup(dir.path(), "3.6.17", "3.7.4");
    dg.set(|d| {
        d.cluster_version = v("3.6.0");
        d.record = Some(record(RecordState::Cancelled));
        d.storage = (3, 6);
    });
    // 3.7.4 is still pinned here.
    let pinned = dir.path().join("versions/3.7.4");
    std::fs::create_dir_all(&pinned).unwrap();
    std::fs::write(pinned.join("etcd"), b"").unwrap();
    let (_tx, driver) = driver_on(&fake, &dg, dir.path(), Turn::idle(v("3.6.17")));
    let (calls, turn) = run(&fake, driver, |c| *c == Call::Resume).await;
    assert_eq!(
        calls,
        [
            Call::Acquire,
            Call::Backup(Seen(Phase::Backup, FORWARD)),
            Call::Stop(Seen(Phase::Stopping, FORWARD)),
            Call::Switch(v("3.7.4"), Seen(Phase::Swapping, FORWARD)),
            Call::Start(v("3.7.4"), Seen(Phase::Starting, FORWARD)),
            Call::ReleaseLock,
            Call::Resume,
        ]
    );
    assert_eq!(turn, Turn::idle(v("3.7.4")));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_downgrade_keeps_the_older_minor_parked_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, dg) = setup(dir.path(), "3.7.4", "3.7.4");
    dg.set(|d| {
        d.cluster_version = v("3.6.0");
        d.etcd = InEtcd::Enabled((3, 6));
        d.record = Some(record(RecordState::Cancelled));
        d.storage = (3, 6);
    });
    let (tx, driver) = driver_on(&fake, &dg, dir.path(), Turn::idle(v("3.7.4")));
    tx.send(candidate(&v("3.6.17"))).await.unwrap();
    let ender = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(120)).await;
        ender.shutdown.send_replace(true);
    });
    let (calls, turn) = run(&fake, driver, |_| false).await;
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Stop(_))),
        "{calls:?}"
    );
    assert_eq!(turn.to, Some(v("3.6.17")));
    assert!(turn.last_error.unwrap().contains("cancelled"));
}
