//! The cluster-wide upgrade lock (the "upgrade turn" in logs): etcd's v3 lock
//! `<prefix>lock/upgrade` on a lease. Its keys come from [`Keys`].
//!
//! How it holds up under faults:
//! - The lease is granted before queueing and kept alive every TTL/3 from the start, through
//!   whichever endpoint answers, so neither a long wait nor this member's own etcd being
//!   stopped mid-turn lets it expire.
//! - After every lock call the returned key is read back and must carry our lease: etcd 3.4
//!   answers a waiter whose lease expired with a key that does not exist.
//! - A holder learns of a lost turn (lease gone, key gone, or no successful keepalive for a
//!   whole TTL) from [`HeldLock::lost`] as soon as the keepalive task sees it.
//! - Waiting is bounded per lock call and re-issued; dropping the wait (SIGTERM while queued)
//!   disconnects, which makes etcd delete the waiter key, and the lease is revoked at once.
//! - Release is unlock + revoke, idempotent.
//!
//! Beside the lock key, `<prefix>lock/owners/<lease hex>` holds the member's name on the same
//! lease, so `status` can say who holds the turn and who waits.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::keys::Keys;
use crate::cluster::records::OwnerRecord;
use crate::etcd::kv::{PutRequest, RangeRequest};
use crate::etcd::{Client, EtcdError};

/// Upper bound of one blocking lock call; the wait is then re-issued. Waiters keep their
/// place as long as each call lasts; only waits longer than this may be reordered.
const LOCK_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound of the read that confirms the turn before a world-changing step.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of acquiring or holding the upgrade lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// etcd could not be reached or refused a call.
    #[error("upgrade turn: {0}")]
    Etcd(#[from] EtcdError),
    /// The lease expired while we waited in the queue (the 3.4 phantom-key case included).
    #[error("upgrade turn: our lease expired while waiting in the queue; queueing again")]
    ExpiredWhileWaiting,
    /// The wait was cancelled (shutdown).
    #[error("upgrade turn: wait cancelled")]
    Cancelled,
}

/// Where the upgrade lock lives and how long a dead holder keeps it.
#[derive(Debug, Clone)]
pub struct LockConfig {
    /// The supervisor's key prefix in etcd (`/etcd-supervisor/`).
    pub key_prefix: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// This member's name, recorded beside the lock.
    pub member: String,
}

impl LockConfig {
    /// The keys under the prefix.
    pub fn keys(&self) -> Keys {
        Keys::new(self.key_prefix.clone())
    }
}

/// The upgrade lock, held. Dropping it without [`HeldLock::release`] stops the keepalive, so
/// the turn ends when the lease expires (as if the process had died).
#[derive(Debug)]
pub struct HeldLock {
    client: Client,
    lease: i64,
    key: Vec<u8>,
    acquired: Instant,
    lost: watch::Receiver<Option<String>>,
    keepalive: Option<JoinHandle<()>>,
}

impl HeldLock {
    /// The lease id holding the turn.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The lock key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// When the turn was acquired.
    pub fn acquired(&self) -> Instant {
        self.acquired
    }

    /// `Some(reason)` once the turn is known to be lost.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Resolves with the reason when the turn is lost; pending forever while it is held.
    pub fn lost(&self) -> impl Future<Output = String> + 'static {
        let mut rx = self.lost.clone();
        async move {
            loop {
                if let Some(reason) = rx.borrow_and_update().clone() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    // The keepalive task ended without a loss: only on release.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Reads the lock key back now: `Err(reason)` when it is gone, no longer under our lease,
    /// or cannot be read within the bound (unconfirmed counts as lost: the fence before a
    /// world-changing step must not guess).
    pub async fn confirm(&self) -> Result<(), String> {
        if let Some(reason) = self.lost_reason() {
            return Err(reason);
        }
        match tokio::time::timeout(
            CONFIRM_TIMEOUT,
            key_held(&self.client, &self.key, self.lease),
        )
        .await
        {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("the lock key is gone or no longer under our lease".into()),
            Ok(Err(e)) => Err(format!("the upgrade turn cannot be confirmed: {e}")),
            Err(_) => Err(format!(
                "the upgrade turn cannot be confirmed: no answer within {}",
                humantime::format_duration(CONFIRM_TIMEOUT)
            )),
        }
    }

    /// Gives the turn back: unlock and revoke. Safe to call when the turn was already lost.
    pub async fn release(mut self) -> Result<(), EtcdError> {
        self.stop_keepalive();
        release_parts(&self.client, self.lease, Some(&self.key)).await
    }

    fn stop_keepalive(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.stop_keepalive();
    }
}

async fn release_parts(client: &Client, lease: i64, key: Option<&[u8]>) -> Result<(), EtcdError> {
    let unlocked = match key {
        Some(key) => client.unlock(key).await.map(drop),
        None => Ok(()),
    };
    // Revoking deletes the lock key and the owner record even if unlock failed.
    match client.lease_revoke(lease).await {
        Ok(_) => {}
        Err(e) if e.is_lease_not_found() => {}
        Err(e) => return Err(e),
    }
    unlocked
}

/// Queues for the turn and returns once it is ours, or with [`LockError::Cancelled`] when
/// `cancel` resolves first (the place in the queue is given up at once).
pub async fn acquire(
    client: &Client,
    cfg: &LockConfig,
    cancel: impl Future<Output = ()>,
) -> Result<HeldLock, LockError> {
    let ttl_secs = crate::etcd::lease::ttl_secs(cfg.ttl).max(2);
    let grant = client.lease_grant(ttl_secs).await?;
    let lease = grant.id;
    let (lost_tx, lost_rx) = watch::channel(None);
    let keepalive = tokio::spawn(keep_alive(client.clone(), lease, cfg.ttl, None, lost_tx));
    let mut held = HeldLock {
        client: client.clone(),
        lease,
        key: Vec::new(),
        acquired: Instant::now(),
        lost: lost_rx,
        keepalive: Some(keepalive),
    };
    let keys = cfg.keys();
    let owner = OwnerRecord::new(&cfg.member);
    let wait = async {
        client
            .put_with(
                &PutRequest::new(keys.owner(lease).into_bytes(), owner.encode().into_bytes())
                    .lease(lease),
            )
            .await?;
        loop {
            if let Some(reason) = held.lost_reason() {
                tracing::debug!(reason, "lease lost while queued");
                return Err(LockError::ExpiredWhileWaiting);
            }
            let locked = tokio::select! {
                r = client.lock(keys.lock(), lease, LOCK_CALL_TIMEOUT) => r,
                _ = held.lost() => return Err(LockError::ExpiredWhileWaiting),
            };
            match locked {
                Ok(resp) => return Ok(resp.key),
                Err(EtcdError::Timeout { .. }) => continue,
                Err(e) if e.is_lock_session_expired() || e.is_lease_not_found() => {
                    return Err(LockError::ExpiredWhileWaiting)
                }
                Err(e) => return Err(LockError::Etcd(e)),
            }
        }
    };
    let outcome = tokio::select! {
        r = wait => r,
        () = cancel => Err(LockError::Cancelled),
    };
    let key = match outcome {
        Ok(key) => key,
        Err(e) => {
            held.stop_keepalive();
            // Best effort: the lease expires by itself if etcd cannot be reached now.
            let _ = release_parts(client, lease, None).await;
            return Err(e);
        }
    };
    let confirmed = key_held(client, &key, lease).await;
    if !matches!(confirmed, Ok(true)) {
        held.stop_keepalive();
        let _ = release_parts(client, lease, Some(&key)).await;
        return match confirmed {
            Err(e) => Err(LockError::Etcd(e)),
            _ => Err(LockError::ExpiredWhileWaiting),
        };
    }
    // From now on the keepalive also watches the key itself.
    if let Some(task) = held.keepalive.take() {
        task.abort();
    }
    let (lost_tx, lost_rx) = watch::channel(None);
    held.lost = lost_rx;
    held.keepalive = Some(tokio::spawn(keep_alive(
        client.clone(),
        lease,
        cfg.ttl,
        Some(key.clone()),
        lost_tx,
    )));
    held.key = key;
    held.acquired = Instant::now();
    Ok(held)
}

/// True when `key` exists under `lease`. etcd 3.4 can hand a waiter whose lease expired a
/// lock key that does not exist, so only a key read back under our own lease counts.
pub async fn key_held(client: &Client, key: &[u8], lease: i64) -> Result<bool, EtcdError> {
    let resp = client.range(&RangeRequest::key(key.to_vec())).await?;
    Ok(resp.kvs.first().is_some_and(|kv| kv.lease == lease))
}

/// Renews `lease` every TTL/3 (and at once when the client's placement changes) and reports
/// the first sign of loss: the lease gone, the lock key gone, or no successful renewal for a
/// whole TTL.
async fn keep_alive(
    client: Client,
    lease: i64,
    ttl: Duration,
    key: Option<Vec<u8>>,
    lost: watch::Sender<Option<String>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(300));
    let mut last_ok = Instant::now();
    let mut placement = client.placement().subscribe();
    loop {
        // A change of placement renews at once: that moves the stream before this member
        // stops (see `etcd::placement`).
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            Ok(()) = placement.changed() => {}
        }
        let renewed = tokio::time::timeout(period, client.lease_keep_alive(lease)).await;
        let reason = match renewed {
            Ok(Ok(Some(_))) => {
                last_ok = Instant::now();
                match &key {
                    Some(key) => match key_held(&client, key, lease).await {
                        Ok(true) => None,
                        Ok(false) => Some("the lock key was deleted".to_owned()),
                        // Renewal worked; a failed read is not a loss.
                        Err(_) => None,
                    },
                    None => None,
                }
            }
            Ok(Ok(None)) => Some("the lease expired".to_owned()),
            Ok(Err(e)) if last_ok.elapsed() >= ttl => Some(format!(
                "no keepalive succeeded for {}: {e}",
                humantime::format_duration(ttl)
            )),
            Err(_) if last_ok.elapsed() >= ttl => Some(format!(
                "no keepalive succeeded for {}",
                humantime::format_duration(ttl)
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            let _ = lost.send(Some(reason));
            return;
        }
    }
}

/// Who holds the turn and who waits, in queue order (for `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Queue {
    /// Member names (or lease ids when unrecorded), the holder first.
    pub members: Vec<String>,
}

/// Reads the lock's queue: its keys ordered by creation, named by the owner records.
pub async fn queue(client: &Client, cfg: &LockConfig) -> Result<Queue, EtcdError> {
    let keys = cfg.keys();
    let mut waiters = client
        .get_prefix(keys.lock_keys_prefix().into_bytes())
        .await?
        .kvs;
    waiters.sort_by_key(|kv| kv.create_revision);
    let owners = client
        .get_prefix(keys.owners_prefix().into_bytes())
        .await?
        .kvs;
    let name_of = |lease: i64| {
        owners
            .iter()
            .find(|kv| kv.lease == lease)
            .map(|kv| OwnerRecord::decode(&kv.value).member)
            .unwrap_or_else(|| format!("lease {lease:x}"))
    };
    Ok(Queue {
        members: waiters.iter().map(|kv| name_of(kv.lease)).collect(),
    })
}
