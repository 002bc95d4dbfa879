//! The watch that replaces the supervisors' polls (the pause key, the turn's release, the
//! records `status --watch` shows): `cluster::changes::Changes` on a real member. A change
//! under the prefix wakes a waiter long before its bound; a change elsewhere does not; while
//! the member is down the watch is broken and each wait ends at its bound (the poll it
//! falls back to); once the member is back the watch reopens by itself, wakes the waiters
//! once for what they may have missed, and reports changes again.
//!
//! The supervisor's long-lived calls (this watch, a lease keepalive) sit on its own member
//! and step aside before it stops it: etcd's graceful stop waits for open gRPC calls up to
//! its request timeout (7 s here), so a call left there would hold up the stop. Seen on
//! 3.5.30, 3.5.36, 3.6.17 and 3.7.4 (the test's control shows it on each run); 3.4.23 and
//! 3.5.16 end such a stop within about a second.

use std::time::{Duration, Instant};

use etcd_supervisor::cluster::changes::{Changes, Woke};
use etcd_supervisor::etcd::watch::Watch;
use etcd_supervisor::etcd::{Client, ClientConfig, PutRequest};

use crate::support::{Cluster, Release};

const PREFIX: &str = "/etcd-supervisor/";

/// Longest wait for something the watch should report at once: a failure to report it
/// shows as `Woke::Bound` after this, never as a pass.
const GENEROUS: Duration = Duration::from_secs(60);

fn client(urls: Vec<String>) -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::new(urls)
    })
    .expect("client")
}

async fn put(client: &Client, key: &str) {
    client
        .put_with(&PutRequest::new(key.as_bytes().to_vec(), b"x".to_vec()))
        .await
        .expect("put");
}

async fn watch_wakes_and_falls_back_to_its_bound(release: Release) {
    let mut cluster = Cluster::start(release, 1);
    let client = client(cluster.client_urls());
    let changes = Changes::start(&client, PREFIX);
    tokio::time::timeout(GENEROUS, changes.until_up())
        .await
        .expect("the watch opened");

    // A change under the prefix wakes the waiter (a pause written).
    let waiter = {
        let changes = changes.clone();
        tokio::spawn(async move { changes.wait(GENEROUS).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&client, "/etcd-supervisor/pause").await;
    assert_eq!(
        waiter.await.unwrap(),
        Woke::Change,
        "a put under the prefix"
    );

    // A change between two waits is not lost: it counts against the change seen last.
    put(&client, "/etcd-supervisor/members/m1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        changes.wait(GENEROUS).await,
        Woke::Change,
        "a put before the wait"
    );

    // A key outside the prefix is none of the supervisors' business.
    put(&client, "/app/key").await;
    assert_eq!(changes.wait(Duration::from_secs(2)).await, Woke::Bound);

    // The member goes down: the watch breaks, and each wait ends at its bound.
    cluster.member(0).stop();
    tokio::time::timeout(GENEROUS, async {
        while changes.is_up() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the watch noticed the member was gone");
    let _ = changes.wait(Duration::from_millis(10)).await;
    assert_eq!(
        changes.wait(Duration::from_secs(1)).await,
        Woke::Bound,
        "a broken watch leaves the poll"
    );

    // Back: the watch reopens by itself and wakes the waiters once (changes may have been
    // missed meanwhile), then reports changes as before.
    cluster.member(0).start();
    cluster.member(0).wait_healthy();
    assert_eq!(
        changes.wait(GENEROUS).await,
        Woke::Change,
        "the watch is back"
    );
    assert!(changes.is_up());
    let waiter = {
        let changes = changes.clone();
        tokio::spawn(async move { changes.wait(GENEROUS).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&client, "/etcd-supervisor/lock/upgrade/1").await;
    assert_eq!(waiter.await.unwrap(), Woke::Change, "a put after the break");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_and_falls_back_to_its_bound_3_4() {
    watch_wakes_and_falls_back_to_its_bound(Release::V3_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_and_falls_back_to_its_bound_3_7() {
    watch_wakes_and_falls_back_to_its_bound(Release::V3_7).await;
}

/// etcd's request timeout with the test clusters' default election timeout (5 s + 2 × 1 s):
/// how long its graceful stop waits for open gRPC calls before it cuts them.
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// A stop that no open call held up ends well within etcd's request timeout (in about
/// 0.1 s); the margin is for a loaded machine.
const UNHELD_STOP: Duration = Duration::from_secs(3);

/// Stops `member` (SIGTERM, waits for the exit) and says how long it took.
fn timed_stop(cluster: &mut Cluster, member: usize) -> Duration {
    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.member(member).stop());
    started.elapsed()
}

async fn long_lived_calls_step_aside_so_a_stop_is_not_held(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    // m1 is the local member: first among the endpoints, as a supervisor configures it.
    let ours = client(cluster.client_urls());
    let placement = ours.placement();
    let changes = Changes::start(&ours, PREFIX);
    tokio::time::timeout(GENEROUS, changes.until_up())
        .await
        .expect("the watch opened");
    let lease = ours.lease_grant(30).await.expect("lease").id;
    assert!(ours
        .lease_keep_alive(lease)
        .await
        .expect("renewed")
        .is_some());
    assert_eq!(
        placement.on_local(),
        2,
        "the watch and the keepalive sit on m1"
    );

    // Before m1 stops: the watch moves by itself, the keepalive at its next renewal (the
    // lock's renewal loop renews at once when the placement changes).
    placement.step_aside();
    assert!(ours
        .lease_keep_alive(lease)
        .await
        .expect("renewed")
        .is_some());
    assert!(
        placement.cleared(GENEROUS).await,
        "still on m1: {}",
        placement.on_local()
    );
    let took = timed_stop(&mut cluster, 0);
    assert!(
        took < UNHELD_STOP,
        "m1 took {took:?} to stop with nothing of ours on it (held, it takes etcd's request timeout, {ETCD_REQUEST_TIMEOUT:?})"
    );

    // The moved watch lost nothing: a change while m1 is down is reported.
    let _ = changes.wait(Duration::from_millis(10)).await;
    put(&ours, "/etcd-supervisor/members/m2").await;
    assert_eq!(
        changes.wait(GENEROUS).await,
        Woke::Change,
        "a put on the others"
    );

    // m1 is back and healthy: the calls come home.
    cluster.member(0).start();
    tokio::task::block_in_place(|| cluster.member(0).wait_healthy());
    placement.home();
    assert!(ours
        .lease_keep_alive(lease)
        .await
        .expect("renewed")
        .is_some());
    tokio::time::timeout(GENEROUS, async {
        while placement.on_local() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the watch and the keepalive came back to m1");

    // The control: a watch left open on m2 (as any client's may be) holds its stop up.
    let m2 = client(vec![cluster.member(1).client_url()]);
    let mut held: Watch = m2.watch_prefix(PREFIX.as_bytes().to_vec(), 0);
    held.start().await.expect("a watch on m2");
    let took = timed_stop(&mut cluster, 1);
    assert!(
        took >= ETCD_REQUEST_TIMEOUT - Duration::from_secs(2),
        "m2 stopped in {took:?} under an open watch: this etcd does not wait for open calls, and the test above proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_calls_step_aside_so_a_stop_is_not_held_3_5_30() {
    long_lived_calls_step_aside_so_a_stop_is_not_held(Release::V3_5Newest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_calls_step_aside_so_a_stop_is_not_held_3_7() {
    long_lived_calls_step_aside_so_a_stop_is_not_held(Release::V3_7).await;
}
