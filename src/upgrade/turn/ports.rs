//! What the upgrade driver does to the world, as small traits: the etcd child, the cluster
//! (views, the turn, records, the local member's health), the backups, the `current`
//! switch and the vetter. [`super::live`] adapts the real types; the driver's tests use
//! fakes. The cluster is spoken to in the driver's verbs (read the view, publish this
//! member's record, reject a version, record or read an inconsistency): keys and encodings
//! stay in the live adapter, so a fake never parses a key.
//!
//! The methods return `impl Future + Send` rather than being `async fn`, so the driver's
//! own future stays `Send` (it runs in a spawned task) whatever implementation it gets.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backup::{Backup, BackupError};
use crate::cluster::lock::LockError;
use crate::cluster::records::{MemberRecord, RejectionRecord};
use crate::cluster::view::ClusterView;
use crate::etcd::maintenance::{EtcdVersion, HashKv, Leader, Status};
use crate::etcd::EtcdError;
use crate::process::child::Stopped;
use crate::supervisor::control::ChildStatus;
use crate::upgrade::rules::consistency::InconsistencyRecord;
use crate::upgrade::rules::downgrade::{DowngradeFacts, InEtcd};
use crate::upgrade::rules::vet::Vetted;
use crate::upgrade::turn::downgrade_live;
use crate::upgrade::turn::machine::Phase;
use crate::versions::store::VersionsError;
use crate::versions::Version;

/// The etcd child, as the run loop lets the driver handle it.
pub trait EtcdChild: Send + Sync {
    /// Stops etcd for a swap (it stays stopped until [`EtcdChild::start`]); `Err` when the
    /// request could not be made at all.
    fn stop(&self) -> impl Future<Output = Result<Stopped, String>> + Send;
    /// Starts etcd on whatever `current` points at; answers its pid.
    fn start(&self) -> impl Future<Output = Result<u32, String>> + Send;
    /// Hands supervision back to the run loop (restart on crash, start if stopped).
    fn resume(&self) -> impl Future<Output = ()> + Send;
    /// The child as the run loop sees it now.
    fn status(&self) -> ChildStatus;
    /// Becomes true when the supervisor is asked to stop.
    fn shutdown(&self) -> watch::Receiver<bool>;
    /// The last lines the current (or last) etcd wrote to stderr.
    fn log_tail(&self) -> String;
    /// Tells the run loop the driver's phase (a reload waits for one that holds no turn).
    fn report_phase(&self, _phase: Phase) {}
}

/// The cluster-wide upgrade turn, held.
pub trait TurnLock: Send + Sync {
    /// When it was acquired.
    fn acquired(&self) -> Instant;
    /// `Some(reason)` once the turn is known to be lost.
    fn lost_reason(&self) -> Option<String>;
    /// Asks etcd now whether the turn is still ours (the lock key under our lease):
    /// `Some(reason)` when it is not, or cannot be confirmed. The fence before each
    /// world-changing step; by default only what the keepalive has seen.
    fn confirm(&self) -> impl Future<Output = Option<String>> + Send {
        let lost = self.lost_reason();
        async move { lost }
    }
    /// Resolves with the reason once the turn is lost; pending while it is held.
    fn lost(&self) -> impl Future<Output = String> + Send + 'static;
    /// Gives it back (safe when it was already lost).
    fn release(self) -> impl Future<Output = Result<(), EtcdError>> + Send;
}

/// The cluster through etcd's API, in the driver's words: where each record lives
/// under the key prefix, and how it is encoded, is the implementation's business.
pub trait Cluster: Send + Sync {
    /// The held turn.
    type Lock: TurnLock;
    /// Learns every member's client URL, so calls go on while this member is stopped.
    fn refresh_endpoints(&self) -> impl Future<Output = ()> + Send;
    /// Reads the view of the cluster: everything preflight and the rules look at.
    fn read_view(&self) -> impl Future<Output = ClusterView> + Send;
    /// Queues for the turn's lock; [`LockError::Cancelled`] when `cancel` resolves first.
    /// Only the lock: whether a turn may be taken at all is the driver's to judge.
    fn acquire(
        &self,
        cancel: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = Result<Self::Lock, LockError>> + Send;
    /// Publishes this member's progress record (read by `status`, `plan` and the other
    /// members' leader last).
    fn publish_member(
        &self,
        record: &MemberRecord,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Rejects `version` for the whole cluster: no member takes it until an operator
    /// deletes the rejection.
    fn reject_version(
        &self,
        version: &Version,
        record: &RejectionRecord,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Records the divergence a consistency check found after a rollout.
    fn record_inconsistency(
        &self,
        record: &InconsistencyRecord,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// The recorded inconsistency, as one line, if any (an unreadable record counts: it
    /// is the supervisors' own).
    fn recorded_inconsistency(
        &self,
    ) -> impl Future<Output = Result<Option<String>, EtcdError>> + Send;
    /// `/health` of the member at `endpoint`.
    fn health_of(&self, endpoint: &str) -> impl Future<Output = Result<bool, EtcdError>> + Send;
    /// `/version` of the member at `endpoint`.
    fn version_of(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<EtcdVersion, EtcdError>> + Send;
    /// Status of the member at `endpoint`.
    fn status_of(&self, endpoint: &str) -> impl Future<Output = Result<Status, EtcdError>> + Send;
    /// The current leader.
    fn leader(&self) -> impl Future<Output = Result<Leader, EtcdError>> + Send;
    /// Moves leadership to the member `target_id` (sent to the current leader).
    fn transfer_leadership(
        &self,
        target_id: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Resolves when something under the key prefix may have changed (the pause key, the
    /// lock's keys, a member's record), or after `bound` at the latest: the poll a broken
    /// watch falls back to. By default only the bound (a world without a watch polls).
    fn changed_within(&self, bound: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(bound)
    }
    /// How often an idle member looks at the downgrade (to take a parked older minor once it
    /// is enabled, to go back after a cancel, to see it finished); `None`: never (a world
    /// without downgrades).
    fn downgrade_poll(&self) -> Option<Duration> {
        None
    }
    /// Whether `<prefix>downgrade` exists: one read, so an idle member that parks nothing
    /// looks at the whole cluster only while a downgrade runs.
    fn downgrade_recorded(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }
    /// The downgrade's facts over `view`: etcd's downgrade state and `<prefix>downgrade`.
    /// By default neither is known.
    fn downgrade_facts(&self, view: &ClusterView) -> impl Future<Output = DowngradeFacts> + Send {
        let facts = downgrade_live::facts_from(view, InEtcd::Unknown, None);
        async move { facts }
    }
    /// Cancels the downgrade in etcd and marks it cancelled with `why`, so the members
    /// already downgraded go back to `from`.
    fn cancel_downgrade(
        &self,
        why: String,
        target: Version,
        from: Version,
    ) -> impl Future<Output = ()> + Send {
        let _ = (why, target, from);
        async {}
    }
    /// Deletes `<prefix>downgrade`: the downgrade, or its cancel, is over.
    fn end_downgrade(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// HashKV of the member at `endpoint` at `revision`, for the consistency check after a
    /// rollout. Without an implementation the check says it could not be made.
    fn hash_kv_of(
        &self,
        endpoint: &str,
        revision: i64,
    ) -> impl Future<Output = Result<HashKv, EtcdError>> + Send {
        let _ = (endpoint, revision);
        async {
            Err(EtcdError::InvalidRequest(
                "HashKV is not available here".into(),
            ))
        }
    }
}

/// Who the turn's backup is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTurn {
    /// The running version.
    pub from: Version,
    /// The target.
    pub to: Version,
}

/// A finished, verified backup, as the driver logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenBackup {
    /// Its directory.
    pub dir: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// One line for the operator.
    pub summary: String,
}

impl From<&Backup> for TakenBackup {
    fn from(b: &Backup) -> Self {
        Self {
            dir: b.dir.clone(),
            bytes: b.bytes,
            elapsed: b.elapsed,
            summary: b.summary(),
        }
    }
}

/// A verified turn backup taken while this member vetted the target (the snapshot the
/// dress rehearsal restored): the turn may reuse it ([`crate::upgrade::rules::backup_reuse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBackup {
    /// The backup, as the turn would have logged its own.
    pub taken: TakenBackup,
    /// The version the member ran.
    pub from: Version,
    /// The target it was taken for.
    pub to: Version,
    /// When it was taken (its snapshot began).
    pub at: Instant,
}

/// How far the backup got while etcd runs.
#[derive(Debug)]
pub enum BackupStage<P> {
    /// Finished and verified (snapshot mode).
    Done(TakenBackup),
    /// The snapshot is taken; the data dir is copied once etcd is stopped.
    ColdCopyPending(P),
}

/// The turn's backups.
pub trait Backups: Send + Sync {
    /// A backup waiting for its cold copy.
    type Pending: Send;
    /// Space check and snapshot while etcd runs (finished at once in snapshot mode).
    fn begin(
        &self,
        turn: BackupTurn,
    ) -> impl Future<Output = Result<BackupStage<Self::Pending>, BackupError>> + Send;
    /// The cold copy of the data dir (etcd stopped), then verification.
    fn cold_copy(
        &self,
        pending: Self::Pending,
    ) -> impl Future<Output = Result<TakenBackup, BackupError>> + Send;
    /// The backup taken while vetting, handed over once (still in place); by default none.
    fn take_prepared(&self) -> Option<PreparedBackup> {
        None
    }
    /// Reads the live db into memory while this member queues for its turn, so the restart
    /// does not fault it back from disk ([`crate::process::read_ahead`]); by default
    /// nothing. It lives here because the backups are what know the data dir; nothing
    /// waits for it.
    fn read_ahead(&self) {}
}

/// The `current` link of the versions store.
/// Cloned onto the blocking pool, where the switch (symlink, rename, fsync) runs.
pub trait VersionSwitch: Send + Sync + Clone + 'static {
    /// Points `current` at `version`, atomically.
    fn set_current(&self, version: &Version) -> Result<(), VersionsError>;
}

/// Checks a staged version against this member before it queues, while nothing has
/// stopped: the command line, the v2 store, the dress rehearsal. Dropping the future
/// cancels it (and removes whatever it started).
pub trait Vetter: Send + Sync {
    /// Vets `target` for a member running `running`.
    fn vet(&self, running: &Version, target: &Version) -> impl Future<Output = Vetted> + Send;
}
