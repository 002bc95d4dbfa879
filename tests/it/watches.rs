//! The watch that replaces the supervisors' polls (the pause key, the turn's release, the
//! records `status --watch` shows): `cluster::changes::Changes` on a real member. A change
//! under the prefix wakes a waiter long before its bound; a change elsewhere does not; while
//! the member is down the watch is broken and each wait ends at its bound (the poll it
//! falls back to); once the member is back the watch reopens by itself, wakes the waiters
//! once for what they may have missed, and reports changes again.

use std::time::Duration;

use etcd_supervisor::cluster::changes::{Changes, Woke};
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
