//! The real world behind [`super::ports`]: the run loop's [`ChildControl`], the etcd
//! [`Client`] with the cluster lock and view, [`BackupPlan`], and the
//! [`VersionStore`]. Adapters only: where each record lives under the key prefix and how
//! it is encoded; what the driver does with them (a recorded inconsistency blocking every
//! turn, for one) is the driver's, exercised by its fake world.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::consistency;
use super::ports::{
    BackupStage, BackupTurn, Backups, Cluster, EtcdChild, PreparedBackup, TakenBackup, TurnLock,
    VersionSwitch,
};
use crate::backup::BackupMode;
use crate::backup::{BackupError, BackupPlan, PendingBackup};
use crate::cluster::changes::Changes;
use crate::cluster::keys::Keys;
use crate::cluster::lock::{self, HeldLock, LockConfig, LockError};
use crate::cluster::records::{MemberRecord, RejectionRecord, Stored};
use crate::cluster::view::{self, ClusterView};
use crate::etcd::maintenance::{EtcdVersion, HashKv, Leader, Status};
use crate::etcd::{Client, EtcdError, RangeRequest};
use crate::process::child::Stopped;
use crate::process::read_ahead::ReadAhead;
use crate::supervisor::{ChildControl, ChildStatus};
use crate::upgrade::rules::consistency::InconsistencyRecord;
use crate::versions::store::{VersionStore, VersionsError};
use crate::versions::Version;

impl EtcdChild for ChildControl {
    async fn stop(&self) -> Result<Stopped, String> {
        ChildControl::stop(self).await
    }

    async fn start(&self) -> Result<u32, String> {
        ChildControl::start(self).await
    }

    async fn resume(&self) {
        ChildControl::resume(self).await;
    }

    fn status(&self) -> ChildStatus {
        *self.status.borrow()
    }

    fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    fn log_tail(&self) -> String {
        self.log.text()
    }

    fn report_phase(&self, phase: super::machine::Phase) {
        ChildControl::report_phase(self, phase);
    }
}

impl TurnLock for HeldLock {
    fn acquired(&self) -> Instant {
        HeldLock::acquired(self)
    }

    fn lost_reason(&self) -> Option<String> {
        HeldLock::lost_reason(self)
    }

    fn lost(&self) -> impl Future<Output = String> + Send + 'static {
        HeldLock::lost(self)
    }

    async fn confirm(&self) -> Option<String> {
        HeldLock::confirm(self).await.err()
    }

    async fn release(self) -> Result<(), EtcdError> {
        HeldLock::release(self).await
    }
}

/// The cluster through the etcd client, with the turn's lock settings.
#[derive(Debug, Clone)]
pub struct LiveCluster {
    client: Client,
    turn: LockConfig,
    /// The watch of the key prefix, started by the first wait for a change (a spawned
    /// task needs the runtime, which `new` may not run in).
    changes: Arc<OnceLock<Changes>>,
}

impl LiveCluster {
    /// The cluster as `client` reaches it; the turn lives under `turn.key_prefix`.
    pub fn new(client: Client, turn: LockConfig) -> Self {
        Self {
            client,
            turn,
            changes: Arc::new(OnceLock::new()),
        }
    }
}

impl Cluster for LiveCluster {
    type Lock = HeldLock;

    async fn refresh_endpoints(&self) {
        let err = match self.client.refresh_endpoints().await {
            Ok(endpoints) => {
                tracing::debug!(?endpoints, "cluster endpoints refreshed");
                return;
            }
            Err(e) => e,
        };
        // etcd refuses the member list to a learner, but serves it serializable reads:
        // the supervisors' own records name every member's client URLs.
        let keys = Keys::new(&self.turn.key_prefix);
        let read = RangeRequest::prefix(keys.members_prefix().into_bytes()).serializable();
        match self.client.range(&read).await {
            Ok(resp) => {
                let urls: Vec<String> = resp
                    .kvs
                    .iter()
                    .filter_map(|kv| Stored::<MemberRecord>::decode(&kv.value).record().cloned())
                    .flat_map(|r| r.client_urls)
                    .collect();
                let endpoints = self.client.add_endpoints(&urls);
                tracing::info!(error = %err, ?endpoints, "member list not available (a learner is refused it); endpoints taken from the supervisors' records");
            }
            Err(e) => {
                tracing::warn!(error = %err, records = %e, "member list not available; using the endpoints known so far")
            }
        }
    }

    async fn read_view(&self) -> ClusterView {
        view::gather(&self.client, &self.turn.key_prefix).await
    }

    async fn acquire(
        &self,
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<HeldLock, LockError> {
        lock::acquire(&self.client, &self.turn, cancel).await
    }

    async fn publish_member(&self, record: &MemberRecord) -> Result<(), EtcdError> {
        let key = Keys::new(&self.turn.key_prefix).member(&self.turn.member);
        self.client.put(key, record.encode(), None).await.map(drop)
    }

    async fn reject_version(
        &self,
        version: &Version,
        record: &RejectionRecord,
    ) -> Result<(), EtcdError> {
        let key = Keys::new(&self.turn.key_prefix).rejected(version);
        self.client.put(key, record.encode(), None).await.map(drop)
    }

    async fn record_inconsistency(&self, record: &InconsistencyRecord) -> Result<(), EtcdError> {
        let key = Keys::new(&self.turn.key_prefix).inconsistency();
        let value = serde_json::to_string(record).unwrap_or_default();
        self.client.put(key, value, None).await.map(drop)
    }

    async fn recorded_inconsistency(&self) -> Result<Option<String>, EtcdError> {
        consistency::blocked(&self.client, &self.turn.key_prefix).await
    }

    async fn changed_within(&self, bound: Duration) {
        let changes = self
            .changes
            .get_or_init(|| Changes::start(&self.client, &self.turn.key_prefix));
        changes.wait(bound).await;
    }

    fn downgrade_poll(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(2))
    }

    async fn downgrade_recorded(&self) -> bool {
        let key = Keys::new(&self.turn.key_prefix).downgrade();
        // Unreadable counts as recorded: the full look then decides.
        !matches!(self.client.get(key.into_bytes()).await, Ok(None))
    }

    async fn downgrade_facts(
        &self,
        view: &ClusterView,
    ) -> crate::upgrade::rules::downgrade::DowngradeFacts {
        crate::upgrade::turn::downgrade_live::read(&self.client, &self.turn.key_prefix, view).await
    }

    async fn cancel_downgrade(&self, why: String, target: Version, from: Version) {
        match crate::upgrade::turn::downgrade_live::cancel(
            &self.client,
            &self.turn.key_prefix,
            &why,
            Some((target, from)),
        )
        .await
        {
            Ok(_) => {
                tracing::warn!(reason = %why, "downgrade cancelled in etcd; the members already downgraded go back")
            }
            Err(e) => {
                tracing::error!(error = %e, reason = %why, "could not cancel the downgrade; run `etcd-supervisor downgrade --cancel`")
            }
        }
    }

    async fn end_downgrade(&self) {
        if let Err(e) =
            crate::upgrade::turn::downgrade_live::delete_record(&self.client, &self.turn.key_prefix)
                .await
        {
            tracing::warn!(error = %e, "could not delete the downgrade record");
        }
    }

    async fn health_of(&self, endpoint: &str) -> Result<bool, EtcdError> {
        self.client.health_of(endpoint).await
    }

    async fn version_of(&self, endpoint: &str) -> Result<EtcdVersion, EtcdError> {
        self.client.version_of(endpoint).await
    }

    async fn status_of(&self, endpoint: &str) -> Result<Status, EtcdError> {
        self.client.status_of(endpoint).await
    }

    async fn leader(&self) -> Result<Leader, EtcdError> {
        self.client.leader().await
    }

    async fn transfer_leadership(&self, target_id: u64) -> Result<(), EtcdError> {
        self.client.transfer_leadership(target_id).await
    }

    async fn hash_kv_of(&self, endpoint: &str, revision: i64) -> Result<HashKv, EtcdError> {
        self.client.hash_kv_of(endpoint, revision).await
    }
}

/// Turn backups written by [`BackupPlan`] into the state dir.
#[derive(Debug, Clone)]
pub struct LiveBackups {
    /// The etcd client (the snapshot streams through it).
    pub client: Client,
    /// Supervisor state dir (backups go to `backups/` in it).
    pub state_dir: PathBuf,
    /// etcd's data dir.
    pub data_dir: PathBuf,
    /// This member's name.
    pub member: String,
    /// The local member's client URL, where the snapshot is taken.
    pub endpoint: Option<String>,
    /// What to back up.
    pub mode: BackupMode,
    /// Backups kept.
    pub keep: u32,
    /// The backup taken while vetting ([`LiveBackups::prepare`]), until a turn takes it.
    pub prepared: Arc<Mutex<Option<PreparedBackup>>>,
    /// The read of the live db ahead of the restart, while one may run (dropping it stops
    /// it).
    pub read_ahead: Arc<Mutex<Option<ReadAhead>>>,
}

impl LiveBackups {
    /// Writes a turn backup now, while this member vets `turn.to`: the dress rehearsal
    /// restores its snapshot while [`ForRehearsal::seal`] verifies it from disk (one read
    /// serves both), and [`LiveBackups::keep_for_turn`] keeps it for the turn
    /// ([`Backups::take_prepared`]). Only in snapshot mode: a data-dir copy needs etcd
    /// stopped.
    pub async fn write_for_rehearsal(&self, turn: BackupTurn) -> Result<ForRehearsal, BackupError> {
        let at = Instant::now();
        let plan = BackupPlan::turn(
            &self.state_dir,
            turn.from.clone(),
            turn.to.clone(),
            BackupMode::Snapshot,
            self.keep,
        )
        .member(self.member.clone());
        let plan = match &self.endpoint {
            Some(local) => plan.endpoint(local.clone()),
            None => plan,
        };
        let pending = plan
            .begin(&self.client)
            .await?
            .snapshot(&self.client)
            .await?;
        Ok(ForRehearsal {
            snapshot: pending.temp_dir().join(crate::backup::SNAPSHOT),
            revision: pending.meta().revision,
            pending,
            turn,
            at,
            written: at.elapsed(),
        })
    }

    /// Puts a backup written for the rehearsal and verified in place, for the turn.
    pub async fn keep_for_turn(&self, sealed: SealedForRehearsal) -> Result<(), BackupError> {
        let done = sealed.sealed.commit().await?;
        let prepared = PreparedBackup {
            taken: TakenBackup::from(&done),
            from: sealed.turn.from,
            to: sealed.turn.to,
            at: sealed.at,
        };
        // took_ms: the snapshot, before the rehearsal began; verify_ms: its verification,
        // which ran beside the rehearsal.
        tracing::info!(member = %self.member, backup = %done.dir.display(), bytes = done.bytes, took_ms = sealed.written.as_millis() as u64, verify_ms = sealed.verified.as_millis() as u64, "backup taken for the rehearsal and the turn");
        if let Ok(mut slot) = self.prepared.lock() {
            *slot = Some(prepared);
        }
        Ok(())
    }
}

/// A turn backup written for the rehearsal, not yet verified; see
/// [`LiveBackups::write_for_rehearsal`]. Dropping it removes it.
#[derive(Debug)]
pub struct ForRehearsal {
    /// The snapshot file, where it was written (it stays there until kept for the turn).
    pub snapshot: PathBuf,
    /// The member's revision read before the snapshot began.
    pub revision: i64,
    pending: PendingBackup,
    turn: BackupTurn,
    at: Instant,
    written: Duration,
}

impl ForRehearsal {
    /// Verifies it from disk, leaving it where the rehearsal reads it.
    pub async fn seal(self) -> Result<SealedForRehearsal, BackupError> {
        let began = Instant::now();
        let sealed = self.pending.seal().await?;
        Ok(SealedForRehearsal {
            sealed,
            turn: self.turn,
            at: self.at,
            written: self.written,
            verified: began.elapsed(),
        })
    }
}

/// A turn backup written for the rehearsal and verified; see [`ForRehearsal::seal`].
#[derive(Debug)]
pub struct SealedForRehearsal {
    sealed: crate::backup::Sealed,
    turn: BackupTurn,
    at: Instant,
    written: Duration,
    verified: Duration,
}

impl Backups for LiveBackups {
    type Pending = PendingBackup;

    async fn begin(&self, turn: BackupTurn) -> Result<BackupStage<PendingBackup>, BackupError> {
        let mut plan = BackupPlan::turn(&self.state_dir, turn.from, turn.to, self.mode, self.keep)
            .member(self.member.clone())
            .data_dir(self.data_dir.clone());
        if let Some(local) = &self.endpoint {
            plan = plan.endpoint(local.clone());
        }
        let pending = plan.begin(&self.client).await?;
        let pending = pending.snapshot(&self.client).await?;
        if self.mode == BackupMode::Snapshot {
            let done = pending.finish().await?;
            return Ok(BackupStage::Done(TakenBackup::from(&done)));
        }
        Ok(BackupStage::ColdCopyPending(pending))
    }

    async fn cold_copy(&self, pending: PendingBackup) -> Result<TakenBackup, BackupError> {
        let done = pending.copy_data_dir().await?.finish().await?;
        Ok(TakenBackup::from(&done))
    }

    fn take_prepared(&self) -> Option<PreparedBackup> {
        let p = self.prepared.lock().ok()?.take()?;
        // Retention or an operator may have removed it since: then the turn takes its own.
        let sums = p.taken.dir.join(crate::backup::SUMS);
        if !sums.is_file() {
            tracing::warn!(member = %self.member, backup = %p.taken.dir.display(), "the backup taken for the rehearsal is gone; the turn takes its own");
            return None;
        }
        Some(p)
    }

    fn read_ahead(&self) {
        // One at a time: a queue entered again (a lost turn, a restart of the driver)
        // replaces the read before it, which stops.
        let reading = crate::process::read_ahead::start(&self.data_dir, &self.member);
        if let Ok(mut slot) = self.read_ahead.lock() {
            *slot = reading;
        }
    }
}

impl VersionSwitch for VersionStore {
    fn set_current(&self, version: &Version) -> Result<(), VersionsError> {
        VersionStore::set_current(self, version)
    }
}
