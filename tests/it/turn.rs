//! The cluster-wide upgrade turn on real 3-member clusters (3.4.23 and 3.5.x).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_supervisor::cluster::lock::{self, LockConfig, LockError};
use etcd_supervisor::etcd::{Client, ClientConfig};

use crate::support::{Cluster, Release};

const TTL: Duration = Duration::from_secs(2);

/// After a lease's TTL, how long its expiry may take to reach a waiter: the lessor's
/// 500 ms expiry check, the revoke's raft round, the watch event, with room for a loaded
/// machine (the margin is below the TTL it is added to).
const LEASE_SLACK: Duration = Duration::from_millis(1500);

fn client(urls: &[String], rotate: usize) -> Client {
    let mut urls = urls.to_vec();
    let n = urls.len();
    urls.rotate_left(rotate % n);
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::new(urls)
    })
    .unwrap()
}

fn cfg(member: &str) -> LockConfig {
    LockConfig {
        key_prefix: "/etcd-supervisor/".into(),
        ttl: TTL,
        member: member.into(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn acquire(client: &Client, member: &str) -> lock::HeldLock {
    tokio::time::timeout(
        Duration::from_secs(60),
        lock::acquire(client, &cfg(member), std::future::pending()),
    )
    .await
    .expect("turn acquired within 60 s")
    .expect("turn acquired")
}

async fn wait_queue_len(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = lock::queue(client, &cfg("x")).await.unwrap();
        if q.members.len() == n {
            return;
        }
        assert!(Instant::now() < deadline, "queue never reached {n}: {q:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mutual_exclusion(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let intervals = Arc::new(Mutex::new(Vec::<(usize, Instant, Instant)>::new()));
    rt().block_on(async {
        let mut tasks = Vec::new();
        for c in 0..5usize {
            let client = client(&urls, c);
            let intervals = intervals.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..4 {
                    let held = acquire(&client, &format!("c{c}")).await;
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let end = Instant::now();
                    held.release().await.unwrap();
                    intervals.lock().unwrap().push((c, start, end));
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("contenders finish")
                .unwrap();
        }
    });
    let mut all = intervals.lock().unwrap().clone();
    assert_eq!(all.len(), 20, "everyone served 4 times");
    for c in 0..5 {
        assert_eq!(all.iter().filter(|i| i.0 == c).count(), 4);
    }
    all.sort_by_key(|i| i.1);
    for pair in all.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "holds overlap: c{} until {:?}, c{} from {:?}",
            pair[0].0,
            pair[0].2,
            pair[1].0,
            pair[1].1
        );
    }
}

#[test]
fn turn_3_4_mutual_exclusion_five_contenders() {
    mutual_exclusion(Release::V3_4);
}

#[test]
fn turn_3_5_mutual_exclusion_five_contenders() {
    mutual_exclusion(Release::V3_5);
}

fn dead_holder_frees_the_turn_within_ttl(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    rt().block_on(async {
        let a = client(&urls, 0);
        let b = client(&urls, 1);
        let held = acquire(&a, "a").await;
        let waiter = tokio::spawn(async move {
            let t = acquire(&b, "b").await;
            (Instant::now(), t)
        });
        wait_queue_len(&a, 2).await;
        // A process killed by SIGKILL stops renewing and never unlocks: dropping the turn
        // without release does exactly that.
        let died = Instant::now();
        drop(held);
        let (got, t) = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("waiter served")
            .unwrap();
        let after = got - died;
        // Not before the dead holder's lease could have expired, not long after.
        assert!(
            after >= TTL / 3,
            "turn handed over while the holder's lease lived: {after:?}"
        );
        // The lease was last renewed at most TTL/3 before the drop, so it expires within
        // one TTL of it; then etcd's lessor notices (it looks every 500 ms), the revoke
        // goes through raft, and the waiter's watch sees the key go: LEASE_SLACK for that
        // on a loaded 2-core machine. No leader changes here, so no lease extension.
        eprintln!("turn handed over {after:?} after the holder died (TTL {TTL:?})");
        assert!(
            after <= TTL + LEASE_SLACK,
            "took {after:?}, more than the TTL {TTL:?} + {LEASE_SLACK:?}"
        );
        t.release().await.unwrap();
    });
}

#[test]
fn turn_3_4_dead_holder_frees_the_turn_within_ttl() {
    dead_holder_frees_the_turn_within_ttl(Release::V3_4);
}

#[test]
fn turn_3_5_dead_holder_frees_the_turn_within_ttl() {
    dead_holder_frees_the_turn_within_ttl(Release::V3_5);
}

fn holder_keeps_turn_while_its_member_is_down(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    rt().block_on(async {
        let held = acquire(&client(&urls, 0), "m1").await;
        // The holder's own member (its first endpoint) stops, as it does during a swap.
        cluster.member(0).stop();
        tokio::time::sleep(TTL * 3 + Duration::from_millis(500)).await;
        assert_eq!(held.lost_reason(), None);
        let other = client(&urls[1..], 0);
        assert!(lock::key_held(&other, held.key(), held.lease())
            .await
            .unwrap());
        held.release().await.unwrap();
        let q = lock::queue(&other, &cfg("x")).await.unwrap();
        assert!(q.members.is_empty(), "released turn still queued: {q:?}");
    });
}

#[test]
fn turn_3_4_holder_keeps_turn_while_its_member_is_down() {
    holder_keeps_turn_while_its_member_is_down(Release::V3_4);
}

#[test]
fn turn_3_5_holder_keeps_turn_while_its_member_is_down() {
    holder_keeps_turn_while_its_member_is_down(Release::V3_5);
}

fn waiters_are_served_in_order_and_cancel_at_once(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    rt().block_on(async {
        let a = client(&urls, 0);
        let held = acquire(&a, "a").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (i, name) in ["b", "c"].into_iter().enumerate() {
            let c = client(&urls, i + 1);
            let order = order.clone();
            waiters.push(tokio::spawn(async move {
                let t = acquire(&c, name).await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                t.release().await.unwrap();
            }));
            wait_queue_len(&a, i + 2).await;
        }
        // A third waiter gives up its place: its key must vanish at once.
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        let d = client(&urls, 2);
        let cancelled = tokio::spawn(async move {
            lock::acquire(&d, &cfg("d"), async {
                let _ = cancel_rx.await;
            })
            .await
        });
        wait_queue_len(&a, 4).await;
        let q = lock::queue(&a, &cfg("x")).await.unwrap();
        assert_eq!(q.members, ["a", "b", "c", "d"]);
        cancel_tx.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), cancelled)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, Err(LockError::Cancelled)), "{r:?}");
        let q = lock::queue(&a, &cfg("x")).await.unwrap();
        assert_eq!(q.members, ["a", "b", "c"]);

        held.release().await.unwrap();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["b", "c"]);
    });
}

#[test]
fn turn_3_4_waiters_served_in_order_and_cancel_at_once() {
    waiters_are_served_in_order_and_cancel_at_once(Release::V3_4);
}

#[test]
fn turn_3_5_waiters_served_in_order_and_cancel_at_once() {
    waiters_are_served_in_order_and_cancel_at_once(Release::V3_5);
}

fn loss_is_reported(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    rt().block_on(async {
        let a = client(&urls, 0);
        let other = client(&urls, 1);
        // The lock key deleted under the holder.
        let held = acquire(&a, "a").await;
        other.delete(held.key().to_vec()).await.unwrap();
        let reason = tokio::time::timeout(TTL * 3 + Duration::from_secs(10), held.lost())
            .await
            .expect("loss reported");
        assert!(reason.contains("lock key was deleted"), "{reason}");
        held.release().await.unwrap();
        // The lease revoked under the holder.
        let held = acquire(&a, "a").await;
        other.lease_revoke(held.lease()).await.unwrap();
        let reason = tokio::time::timeout(TTL * 3 + Duration::from_secs(10), held.lost())
            .await
            .expect("loss reported");
        assert!(
            reason.contains("expired") || reason.contains("deleted"),
            "{reason}"
        );
        // Releasing a lost turn is fine (idempotent).
        held.release().await.unwrap();
    });
}

#[test]
fn turn_3_4_loss_is_reported() {
    loss_is_reported(Release::V3_4);
}

#[test]
fn turn_3_5_loss_is_reported() {
    loss_is_reported(Release::V3_5);
}

/// The raw lock API handing a waiter whose lease expired: 3.4 answers with a key that does
/// not exist, 3.5 with an error. Either way the turn must not count as held.
fn expired_waiter_is_not_a_holder(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    rt().block_on(async {
        let a = client(&urls, 0);
        let held = acquire(&a, "a").await;
        let b = client(&urls, 1);
        let lease = b.lease_grant(2).await.unwrap().id;
        let name = cfg("b").keys().lock();
        let blocked = {
            let b = b.clone();
            tokio::spawn(async move { b.lock(name, lease, Duration::from_secs(30)).await })
        };
        // No keepalive: the waiter's lease expires while it waits.
        let deadline = Instant::now() + Duration::from_secs(15);
        while b.lease_time_to_live(lease, false).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "lease never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        held.release().await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), blocked)
            .await
            .unwrap()
            .unwrap();
        match answer {
            Ok(resp) => {
                // The 3.4 case: a key comes back, but it is not ours to hold.
                assert!(!lock::key_held(&b, &resp.key, lease).await.unwrap());
            }
            Err(e) => assert!(e.is_lock_session_expired(), "{e}"),
        }
    });
}

#[test]
fn turn_3_4_expired_waiter_is_not_mistaken_for_a_holder() {
    expired_waiter_is_not_a_holder(Release::V3_4);
}

#[test]
fn turn_3_5_expired_waiter_is_not_mistaken_for_a_holder() {
    expired_waiter_is_not_a_holder(Release::V3_5);
}
