//! The etcd client against real 3-member clusters (3.4.23, 3.5.16, the newest 3.5.x, 3.6.17
//! and 3.7.4), through its public methods: effects of every call, failover when members die
//! or hang, watches that resume on another member, and snapshots byte-identical to
//! `etcdctl`'s.
//!
//! Every test runs once per release (`v3_4::`, `v3_5::`, `v3_5_newest::`, `v3_6::`, `v3_7::`);
//! HashKV and the storage version from 3.5.30 on (`newer::`).

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_supervisor::etcd::{
    AlarmKind, Client, ClientConfig, Compare, CompareResult, Credentials, DeleteRequest, EtcdError,
    PutRequest, RangeRequest, Txn, TxnOp, TxnOpResponse, WatchEventKind,
};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

use crate::support::{http_post, snapshot_status, Cluster, Mode, Release};

/// Per-call timeout of the clients under test.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

fn client(endpoints: Vec<String>) -> Client {
    client_with_timeout(endpoints, CALL_TIMEOUT)
}

fn client_with_timeout(endpoints: Vec<String>, timeout: Duration) -> Client {
    Client::new(ClientConfig {
        request_timeout: timeout,
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::new(endpoints)
    })
    .expect("client")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The index of the member that is the leader, asking each member.
async fn leader_index(cluster: &Cluster, client: &Client) -> usize {
    let urls = cluster.client_urls();
    eventually("a leader", Duration::from_secs(15), || async {
        for (i, url) in urls.iter().enumerate() {
            if let Ok(status) = client.status_of(url).await {
                if status.is_leader() {
                    return Some(i);
                }
            }
        }
        None
    })
    .await
}

/// Runs a command with a bound; returns (success, combined output).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> (bool, String) {
    let out_path = tempfile::NamedTempFile::new().expect("temp");
    let out = out_path.reopen().expect("reopen");
    let err = out.try_clone().expect("clone");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out_path.path()).unwrap_or_default();
    (status.success(), text)
}

fn etcdctl(release: Release) -> Command {
    let mut cmd = Command::new(release.etcdctl());
    cmd.env("ETCDCTL_API", "3");
    cmd
}

async fn kv_effects(release: Release) {
    let cluster = Cluster::start(release, 3);
    let c = client(cluster.client_urls());

    // put / get
    let put = c.put("foo", "bar", None).await.expect("put");
    assert!(put.header.revision > 1, "{put:?}");
    let kv = c.get("foo").await.expect("get").expect("foo exists");
    assert_eq!(
        (kv.key.as_slice(), kv.value.as_slice()),
        (&b"foo"[..], &b"bar"[..])
    );
    assert_eq!(kv.version, 1);
    assert_eq!(kv.create_revision, put.header.revision);
    assert_eq!(kv.mod_revision, put.header.revision);
    assert_eq!(kv.lease, 0);
    let put2 = c
        .put_with(&PutRequest::new("foo", "baz").prev_kv())
        .await
        .expect("put prev_kv");
    assert_eq!(put2.prev_kv.expect("prev_kv").value, b"bar");
    assert!(c.get("nope").await.expect("get missing").is_none());

    // Binary keys and values survive the base64 round trip.
    let key = vec![0u8, 0xff, b'/', 0x80];
    let value: Vec<u8> = (0..=255u8).collect();
    c.put(key.clone(), value.clone(), None)
        .await
        .expect("put binary");
    assert_eq!(c.get(key).await.unwrap().unwrap().value, value);

    // prefix, limit, count_only, keys_only, serializable
    for k in ["p/a", "p/b", "p/c", "pq", "p"] {
        c.put(k, format!("v-{k}"), None).await.expect("put");
    }
    let prefix = c.get_prefix("p/").await.expect("prefix");
    let keys: Vec<&[u8]> = prefix.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"p/a"[..], b"p/b", b"p/c"]);
    assert_eq!(prefix.count, 3);
    let limited = c
        .range(&RangeRequest::prefix("p/").limit(1).serializable())
        .await
        .expect("limit");
    assert_eq!(
        (limited.kvs.len(), limited.count, limited.more),
        (1, 3, true)
    );
    let counted = c
        .range(&RangeRequest::prefix("p/").count_only())
        .await
        .expect("count");
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 3);
    let keys_only = c
        .range(&RangeRequest::prefix("p/").keys_only())
        .await
        .expect("keys only");
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let all = c.get_prefix("").await.expect("all keys");
    assert!(all.count >= 7, "{}", all.count);

    // txn: create-if-absent really compares.
    let create = |value: &'static str| {
        Txn::new()
            .when([Compare::absent("lock-ish")])
            .and_then([TxnOp::Put(PutRequest::new("lock-ish", value))])
            .or_else([TxnOp::Range(RangeRequest::key("lock-ish"))])
    };
    let first = c.txn(&create("one")).await.expect("txn 1");
    assert!(first.succeeded);
    assert!(matches!(first.responses[..], [TxnOpResponse::Put(_)]));
    let second = c.txn(&create("two")).await.expect("txn 2");
    assert!(!second.succeeded, "create-if-absent succeeded twice");
    match &second.responses[..] {
        [TxnOpResponse::Range(r)] => assert_eq!(r.kvs[0].value, b"one"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get("lock-ish").await.unwrap().unwrap().value, b"one");

    // txn: compare on mod_revision (compare-and-swap).
    let current = c.get("foo").await.unwrap().unwrap();
    let cas = |rev: i64, value: &'static str| {
        Txn::new()
            .when([Compare::mod_revision("foo", CompareResult::Equal, rev)])
            .and_then([TxnOp::Put(PutRequest::new("foo", value))])
    };
    let stale = c
        .txn(&cas(current.mod_revision - 1, "stale"))
        .await
        .unwrap();
    assert!(!stale.succeeded, "a stale mod_revision was accepted");
    assert_eq!(c.get("foo").await.unwrap().unwrap().value, b"baz");
    let fresh = c.txn(&cas(current.mod_revision, "fresh")).await.unwrap();
    assert!(fresh.succeeded);
    assert_eq!(c.get("foo").await.unwrap().unwrap().value, b"fresh");

    // Other compare targets and results.
    let check =
        |compare: Compare| async { c.txn(&Txn::new().when([compare])).await.unwrap().succeeded };
    assert!(check(Compare::value("foo", CompareResult::Equal, "fresh")).await);
    assert!(!check(Compare::value("foo", CompareResult::Equal, "baz")).await);
    assert!(check(Compare::value("foo", CompareResult::NotEqual, "baz")).await);
    assert!(check(Compare::value("foo", CompareResult::Greater, "a")).await);
    assert!(!check(Compare::value("foo", CompareResult::Less, "a")).await);
    assert!(check(Compare::version("foo", CompareResult::Equal, 3)).await);
    assert!(check(Compare::version("nope", CompareResult::Equal, 0)).await);
    assert!(check(Compare::lease("foo", CompareResult::Equal, 0)).await);
    assert!(!check(Compare::absent("foo")).await);
    assert!(
        check(Compare::create_revision(
            "foo",
            CompareResult::Equal,
            current.create_revision
        ))
        .await
    );

    // delete
    let deleted = c
        .delete_range(&DeleteRequest::key("foo").prev_kv())
        .await
        .expect("delete");
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kvs[0].value, b"fresh");
    assert!(c.get("foo").await.unwrap().is_none());
    assert_eq!(c.delete("foo").await.unwrap().deleted, 0);
    assert_eq!(c.delete_prefix("p/").await.unwrap().deleted, 3);
    assert!(
        c.get("pq").await.unwrap().is_some(),
        "delete_prefix went too far"
    );
    assert!(
        c.get("p").await.unwrap().is_some(),
        "delete_prefix went too far"
    );

    // An error from etcd is parsed from the body, whatever the version's format.
    let err = c.put("", "x", None).await.unwrap_err();
    assert_eq!(err.code(), Some(3), "{err}");
    assert!(
        err.api_message()
            .unwrap_or_default()
            .contains("key is not provided"),
        "{err}"
    );
}

async fn lease_effects(release: Release) {
    let cluster = Cluster::start(release, 3);
    let c = client(cluster.client_urls());

    // The TTL asked for is the TTL granted (a misspelt field would give the minimum, 2).
    let lease = c.lease_grant(17).await.expect("grant");
    assert_eq!(lease.ttl, 17);
    assert_ne!(lease.id, 0);
    let ttl = c
        .lease_time_to_live(lease.id, false)
        .await
        .unwrap()
        .expect("lease alive");
    assert_eq!(ttl.granted_ttl, 17);
    assert!((14..=17).contains(&ttl.ttl), "{ttl:?}");

    // A caller-chosen id.
    let chosen = c
        .lease_grant_with_id(30, 0x1234_5678)
        .await
        .expect("grant id");
    assert_eq!((chosen.id, chosen.ttl), (0x1234_5678, 30));
    let leases = c.lease_list().await.expect("leases");
    assert!(
        leases.contains(&lease.id) && leases.contains(&chosen.id),
        "{leases:?}"
    );

    // Keys attached to the lease.
    c.put("leased", "v", Some(lease.id))
        .await
        .expect("put leased");
    assert_eq!(c.get("leased").await.unwrap().unwrap().lease, lease.id);
    let with_keys = c.lease_time_to_live(lease.id, true).await.unwrap().unwrap();
    assert_eq!(with_keys.keys, vec![b"leased".to_vec()]);

    // keepalive resets the TTL.
    eventually("the TTL to run down", Duration::from_secs(10), || async {
        let t = c.lease_time_to_live(lease.id, false).await.ok()??;
        (t.ttl <= 15).then_some(())
    })
    .await;
    assert_eq!(
        c.lease_keep_alive(lease.id).await.expect("keepalive"),
        Some(17)
    );
    let after = c
        .lease_time_to_live(lease.id, false)
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.ttl >= 16,
        "keepalive did not reset the TTL: {after:?}"
    );

    // Revoked: its keys go, keepalive and time-to-live say it is gone.
    c.lease_revoke(lease.id).await.expect("revoke");
    assert!(
        c.get("leased").await.unwrap().is_none(),
        "leased key outlived its lease"
    );
    assert_eq!(c.lease_keep_alive(lease.id).await.expect("keepalive"), None);
    assert!(c
        .lease_time_to_live(lease.id, false)
        .await
        .unwrap()
        .is_none());
    let again = c.lease_revoke(lease.id).await.unwrap_err();
    assert!(again.is_lease_not_found(), "{again}");
    assert!(!c.lease_list().await.unwrap().contains(&lease.id));
    assert_eq!(c.lease_keep_alive(987_654_321).await.unwrap(), None);

    // A short lease really expires, taking its key along.
    let short = c.lease_grant(2).await.expect("grant 2");
    assert_eq!(short.ttl, 2);
    c.put("short", "v", Some(short.id)).await.unwrap();
    eventually(
        "the 2 s lease to expire",
        Duration::from_secs(10),
        || async { c.get("short").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert_eq!(c.lease_keep_alive(short.id).await.unwrap(), None);
}

async fn lock_blocks_and_hands_over(release: Release) {
    let cluster = Cluster::start(release, 3);
    let c = client(cluster.client_urls());
    let a = c.lease_grant(20).await.unwrap().id;
    let b = c.lease_grant(20).await.unwrap().id;

    let held = c
        .lock("upgrade", a, Duration::from_secs(5))
        .await
        .expect("lock a");
    assert_eq!(held.key, format!("upgrade/{a:x}").into_bytes());
    assert_eq!(c.get(held.key.clone()).await.unwrap().unwrap().lease, a);

    // A second lease waits...
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.lock("upgrade", b, Duration::from_secs(20)).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!waiter.is_finished(), "lock did not block while held");

    // ... a waiter with a short timeout gives up, and its waiter key goes away again.
    let other = c.lease_grant(20).await.unwrap().id;
    let started = Instant::now();
    let err = c
        .lock("upgrade", other, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EtcdError::Timeout {
                operation: "lock",
                ..
            }
        ),
        "{err}"
    );
    // Bounded by its 1 s timeout; generous for a loaded runner (typically ~1.0 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let other_key = format!("upgrade/{other:x}").into_bytes();
    eventually(
        "the abandoned waiter key to go",
        Duration::from_secs(10),
        || async { c.get(other_key.clone()).await.ok()?.is_none().then_some(()) },
    )
    .await;

    // ... and gets the lock once it is released.
    c.unlock(&held.key).await.expect("unlock a");
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiter got the lock in time")
        .expect("task")
        .expect("lock b");
    assert_eq!(got.key, format!("upgrade/{b:x}").into_bytes());
    assert_eq!(c.get(got.key.clone()).await.unwrap().unwrap().lease, b);
    assert!(c.get(held.key.clone()).await.unwrap().is_none());

    c.unlock(&got.key).await.expect("unlock b");
    c.unlock(&got.key)
        .await
        .expect("unlock of a gone key is fine");

    let err = c
        .lock("upgrade", 0x0bad_1ea5e, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is_lease_not_found(), "{err}");
}

async fn cluster_and_maintenance(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let version = release.version();

    // Discovery: configured with one member, learns the other two after it.
    let c = client(vec![urls[1].clone()]);
    assert_eq!(c.endpoints(), [urls[1].as_str()]);
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members.len(), 3);
    let mut names: Vec<&str> = list.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m1", "m2", "m3"]);
    for m in &list.members {
        assert_ne!(m.id, 0);
        assert!(!m.is_learner);
        assert_eq!(m.client_urls.len(), 1, "{m:?}");
        assert!(urls.contains(&m.client_urls[0]), "{m:?}");
        assert_eq!(m.peer_urls.len(), 1, "{m:?}");
    }
    let endpoints = c.refresh_endpoints().await.expect("refresh");
    assert_eq!(endpoints.len(), 3);
    assert_eq!(endpoints[0], urls[1], "configured endpoint not first");
    let mut sorted = endpoints.clone();
    sorted.sort();
    let mut want = urls.clone();
    want.sort();
    assert_eq!(sorted, want);
    // Stable: a second refresh gives the same order.
    assert_eq!(c.refresh_endpoints().await.unwrap(), endpoints);

    // Status of each member.
    let mut leaders = Vec::new();
    let mut ids = Vec::new();
    for url in &urls {
        let s = c.status_of(url).await.expect("status");
        assert_eq!(s.version, version);
        assert!(s.db_size > 0 && s.db_size_in_use > 0, "{s:?}");
        assert!(
            s.raft_index > 0 && s.raft_applied_index > 0 && s.raft_term > 0,
            "{s:?}"
        );
        assert!(s.errors.is_empty(), "{s:?}");
        assert!(list.by_id(s.member_id()).is_some(), "{s:?}");
        leaders.push(s.leader);
        ids.push(s.member_id());
        if s.is_leader() {
            assert_eq!(s.leader, s.member_id());
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "{leaders:?}"
    );
    let local = c.local_status().await.expect("local status");
    assert_eq!(local.member_id(), list.by_name("m2").unwrap().id);
    c.status().await.expect("status of any member");

    // The leader, found through status and the member list.
    let leader = c.leader().await.expect("leader");
    assert_eq!(leader.id, leaders[0]);
    assert!(c.status_of(&leader.endpoint).await.unwrap().is_leader());

    // Alarms: none (3.4 answers `{}`).
    assert!(c.alarms().await.expect("alarms").is_empty());

    // /health and /version of each member.
    let cluster_version = format!("{}.0", version.rsplit_once('.').unwrap().0);
    for url in &urls {
        assert!(c.health_of(url).await.expect("health"), "{url} unhealthy");
        let v = c.version_of(url).await.expect("version");
        assert_eq!(v.server, version);
        assert_eq!(v.cluster, cluster_version);
    }

    // Leadership transfer, sent to the leader whichever endpoint the client starts at.
    let target = list
        .members
        .iter()
        .find(|m| m.id != leader.id)
        .expect("a follower");
    c.transfer_leadership(target.id).await.expect("transfer");
    eventually("the new leader", Duration::from_secs(10), || async {
        let all_agree = {
            let mut ok = true;
            for url in &urls {
                ok &= c.status_of(url).await.ok()?.leader == target.id;
            }
            ok
        };
        all_agree.then_some(())
    })
    .await;
    // To the leader itself: a no-op. To an unknown member: "bad leader transferee".
    c.transfer_leadership(target.id)
        .await
        .expect("no-op transfer");
    let err = c.transfer_leadership(12345).await.unwrap_err();
    assert!(err.is_bad_leader_transferee(), "{err}");
}

async fn failover_when_a_member_dies(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let probe = client(urls.clone());
    let leader = leader_index(&cluster, &probe).await;
    let victim = (leader + 1) % 3;
    // The dead member goes first: every call starts there and must move on.
    let mut order = vec![urls[victim].clone()];
    order.extend(urls.iter().filter(|u| **u != urls[victim]).cloned());
    let c = client(order);
    c.put("before", "1", None)
        .await
        .expect("put before the kill");
    cluster.member(victim).kill();
    let dir = tempfile::tempdir().unwrap();

    every_operation_works(&c, dir.path(), &urls[victim]).await;
}

/// A watch sees puts and deletes in order, and when the member it streams from dies it
/// resumes on another one from the next revision: nothing lost, nothing repeated.
async fn watch_resumes_on_another_member(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let probe = client(urls.clone());
    let leader = leader_index(&cluster, &probe).await;
    let victim = (leader + 1) % 3;
    let mut order = vec![urls[victim].clone()];
    order.extend(urls.iter().filter(|u| **u != urls[victim]).cloned());
    let c = client(order);
    let writer = client(
        urls.iter()
            .filter(|u| **u != urls[victim])
            .cloned()
            .collect(),
    );
    let start = c
        .put("other", "x", None)
        .await
        .expect("put")
        .header
        .revision
        + 1;
    let mut watch = c.watch_prefix("w/", start);
    writer.put("w/a", "1", None).await.unwrap();
    writer.delete("w/a").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let events = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("events within 10 s")
            .expect("watch");
        seen.extend(events);
    }
    assert_eq!(seen[0].kind, WatchEventKind::Put);
    assert_eq!(
        (seen[0].kv.key.as_slice(), seen[0].kv.value.as_slice()),
        (&b"w/a"[..], &b"1"[..])
    );
    assert_eq!(seen[1].kind, WatchEventKind::Delete);
    // The member it streams from dies; changes made meanwhile still arrive, once each.
    cluster.member(victim).kill();
    for i in 0..5 {
        writer.put(format!("w/{i}"), "v", None).await.unwrap();
    }
    let mut later = Vec::new();
    while later.len() < 5 {
        let events = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("events within 20 s after the member died")
            .expect("watch resumes");
        later.extend(events);
    }
    let keys: Vec<String> = later
        .iter()
        .map(|e| String::from_utf8_lossy(&e.kv.key).into_owned())
        .collect();
    assert_eq!(keys, ["w/0", "w/1", "w/2", "w/3", "w/4"]);
    // A compacted start revision is an error the caller can recognize.
    let now = writer.put("w/z", "v", None).await.unwrap().header.revision;
    assert!(http_post(
        &format!("{}/v3/kv/compaction", urls[(victim + 1) % 3]),
        &format!(r#"{{"revision":"{now}"}}"#),
        Duration::from_secs(5),
    )
    .is_some_and(|(status, _)| status == 200));
    let err = c.watch_prefix("w/", 2).next().await.unwrap_err();
    assert!(err.is_compacted(), "{err}");
}

async fn failover_when_the_leader_dies(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let probe = client(urls.clone());
    let leader = leader_index(&cluster, &probe).await;
    let mut order = vec![urls[leader].clone()];
    order.extend(urls.iter().filter(|u| **u != urls[leader]).cloned());
    let c = client(order);
    c.put("before", "1", None)
        .await
        .expect("put before the kill");
    cluster.member(leader).kill();
    // The two left elect a new leader (about a second); reads and writes go on after that.
    eventually("a new leader", Duration::from_secs(15), || async {
        let s = c.status().await.ok()?;
        (s.leader != 0 && s.member_id() != 0).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    every_operation_works(&c, dir.path(), &urls[leader]).await;
}

/// Every operation through a client whose first endpoint is `dead`.
async fn every_operation_works(c: &Client, dir: &Path, dead: &str) {
    // Writes may see "leader changed" right after an election; a few bounded tries.
    eventually(
        "a write after the failure",
        Duration::from_secs(15),
        || async { c.put("after", "2", None).await.ok() },
    )
    .await;
    assert_eq!(c.get("before").await.expect("get").unwrap().value, b"1");
    assert_eq!(c.get_prefix("after").await.expect("prefix").count, 1);
    let txn = c
        .txn(
            &Txn::new()
                .when([Compare::absent("created")])
                .and_then([TxnOp::Put(PutRequest::new("created", "x"))]),
        )
        .await
        .expect("txn");
    assert!(txn.succeeded);
    assert_eq!(c.delete("after").await.expect("delete").deleted, 1);
    let lease = c.lease_grant(20).await.expect("grant");
    assert_eq!(lease.ttl, 20);
    assert_eq!(
        c.lease_keep_alive(lease.id).await.expect("keepalive"),
        Some(20)
    );
    assert!(c
        .lease_time_to_live(lease.id, false)
        .await
        .expect("ttl")
        .is_some());
    let held = c
        .lock("failover-lock", lease.id, Duration::from_secs(10))
        .await
        .expect("lock");
    c.unlock(&held.key).await.expect("unlock");
    c.lease_revoke(lease.id).await.expect("revoke");
    assert_eq!(c.member_list().await.expect("member list").members.len(), 3);
    let status = c.status().await.expect("status");
    assert_ne!(status.leader, 0);
    assert!(c.alarms().await.expect("alarms").is_empty());
    let leader = c.leader().await.expect("leader");
    assert_ne!(leader.endpoint, dead);
    let snap = c
        .snapshot(&dir.join("snap.db"), Duration::from_secs(30))
        .await
        .expect("snapshot");
    assert_ne!(snap.endpoint, dead);
    assert!(snap.size > 32);
    let refreshed = c.refresh_endpoints().await.expect("refresh");
    assert_eq!(refreshed[0], dead, "configured endpoints stay first");
    // The dead one itself: a transport error naming it.
    let err = c.health_of(dead).await.unwrap_err();
    assert!(err.to_string().contains(dead), "{err}");
}

async fn all_members_down_is_a_clear_error(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let c = client_with_timeout(urls.clone(), Duration::from_secs(1));
    c.put("k", "v", None).await.expect("put");
    for i in 0..3 {
        cluster.member(i).kill();
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = c.get("k").await.unwrap_err();
    // Refused connections fail at once (typically milliseconds); generous for a loaded runner.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let EtcdError::AllEndpointsFailed { tried } = &err else {
        panic!("expected AllEndpointsFailed, got {err}");
    };
    assert_eq!(tried.len(), 3, "{err}");
    let text = err.to_string();
    for url in &urls {
        assert!(text.contains(url.as_str()), "{url} missing from: {text}");
    }
    assert!(text.to_lowercase().contains("refused"), "{text}");
    for result in [
        c.txn(&Txn::new()).await.map(|_| ()),
        c.lock("x", 1, Duration::from_secs(5)).await.map(|_| ()),
        c.lease_keep_alive(1).await.map(|_| ()),
        c.status().await.map(|_| ()),
        c.snapshot(&dir.path().join("s.db"), Duration::from_secs(5))
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, EtcdError::AllEndpointsFailed { .. }), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

async fn hung_members_time_out(release: Release) {
    let mut cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let c = client_with_timeout(urls.clone(), Duration::from_secs(1));
    c.put("k", "v", None).await.expect("put");
    // Stopped processes accept connections (the kernel does) but never answer.
    for i in 0..3 {
        cluster.member(i).proc().signal(Signal::SIGSTOP);
    }
    let started = Instant::now();
    let err = c.get("k").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(15),
        "3 endpoints × 1 s (typically ~3.0 s): {took:?}"
    );
    let EtcdError::AllEndpointsFailed { tried } = &err else {
        panic!("expected AllEndpointsFailed, got {err}");
    };
    assert!(
        tried.iter().all(|(_, why)| why.contains("timed out")),
        "{err}"
    );
    // A lock is bounded by its own timeout, whatever the member does.
    let started = Instant::now();
    let err = c
        .lock("x", 1, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Timeout { .. }), "{err}");
    // Bounded by its 1.5 s timeout; generous for a loaded runner.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // So is a snapshot.
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = c
        .snapshot_from(
            &urls[0],
            &dir.path().join("s.db"),
            Duration::from_millis(1500),
        )
        .await
        .unwrap_err();
    // Bounded by its 1.5 s timeout; generous for a loaded runner.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, EtcdError::Timeout { .. } | EtcdError::Transport { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for i in 0..3 {
        cluster.member(i).proc().signal(Signal::SIGCONT);
    }
}

async fn snapshot_matches_etcdctl(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let c = client(urls.clone());
    // Enough data for several 32 KiB lines.
    let value = vec![b'x'; 1024];
    for batch in 0..4 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| TxnOp::Put(PutRequest::new(format!("k/{batch}/{i}"), value.clone())))
            .collect();
        assert!(c.txn(&Txn::new().and_then(ops)).await.unwrap().succeeded);
    }
    // Every snapshot commits the backend first (3.5+ writes its consistent index with
    // each commit), which can grow the file by a page: the two snapshots are the same
    // database only when the member's applied index and db size did not move across them.
    let mut attempt = 0;
    let (dir, ours, info, theirs) = loop {
        attempt += 1;
        let before = c.status_of(&urls[0]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("api.db");
        let info = c
            .snapshot_from(&urls[0], &ours, Duration::from_secs(60))
            .await
            .expect("snapshot");
        let theirs = dir.path().join("etcdctl.db");
        let (ok, out) = run_bounded(
            etcdctl(release)
                .arg(format!("--endpoints={}", urls[0]))
                .arg("snapshot")
                .arg("save")
                .arg(&theirs),
            Duration::from_secs(60),
        );
        assert!(ok, "etcdctl snapshot save: {out}");
        let after = c.status_of(&urls[0]).await.unwrap();
        if crate::support::unmoved(&before, &after) {
            break (dir, ours, info, theirs);
        }
        crate::support::again_unless_last(&before, &after, attempt);
    };
    let bytes = std::fs::read(&ours).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.sha256[..], Sha256::digest(&bytes)[..]);
    assert_eq!(info.sha256_hex().len(), 64);
    assert!(info.size > 400 * 1024, "{}", info.size);
    assert_eq!(info.size % 512, 32, "file = db pages + 32-byte sha256");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["api.db", "etcdctl.db"],
        "temporary files left behind"
    );

    let theirs_bytes = std::fs::read(&theirs).unwrap();
    assert_eq!(
        theirs_bytes.len(),
        bytes.len(),
        "size differs from etcdctl's"
    );
    // Same content by etcd's own measure (CRC over every bucket, revision, keys, size).
    assert_eq!(
        snapshot_status(release, &ours),
        snapshot_status(release, &theirs)
    );
    if release == Release::V3_4 {
        assert!(theirs_bytes == bytes, "snapshot differs from etcdctl's");
    } else {
        // 3.5 commits its backend before every snapshot, which moves bolt pages and bumps
        // the transaction id even on an idle member: no two 3.5 snapshots are
        // byte-identical, etcdctl's included. Two of etcdctl's own differ the same way.
        let again = dir.path().join("etcdctl-2.db");
        let (ok, out) = run_bounded(
            etcdctl(release)
                .arg(format!("--endpoints={}", urls[0]))
                .arg("snapshot")
                .arg("save")
                .arg(&again),
            Duration::from_secs(60),
        );
        assert!(ok, "etcdctl snapshot save: {out}");
        assert!(
            std::fs::read(&again).unwrap() != theirs_bytes,
            "3.5 snapshots became byte-identical: compare bytes here too"
        );
    }

    // Restorable, which checks the sha256 trailer.
    let restore_dir = dir.path().join("restored");
    let mut restore = match release.etcdutl() {
        Some(etcdutl) => Command::new(etcdutl),
        None => etcdctl(release),
    };
    let (ok, out) = run_bounded(
        restore
            .arg("snapshot")
            .arg("restore")
            .arg(&ours)
            .arg(format!("--data-dir={}", restore_dir.display())),
        Duration::from_secs(60),
    );
    assert!(ok, "snapshot restore refused our file: {out}");
    assert!(restore_dir.join("member").is_dir());

    // The same restore tool refuses a file with a flipped byte (so the check is real).
    let mut corrupt = bytes.clone();
    corrupt[1000] ^= 0xff;
    let corrupt_path = dir.path().join("corrupt.db");
    std::fs::write(&corrupt_path, corrupt).unwrap();
    let mut restore = match release.etcdutl() {
        Some(etcdutl) => Command::new(etcdutl),
        None => etcdctl(release),
    };
    let (ok, _) = run_bounded(
        restore
            .arg("snapshot")
            .arg("restore")
            .arg(&corrupt_path)
            .arg(format!("--data-dir={}", dir.path().join("r2").display())),
        Duration::from_secs(60),
    );
    assert!(!ok, "restore accepted a corrupt snapshot");

    // Overwrites an existing destination only when complete.
    let again = c
        .snapshot(&ours, Duration::from_secs(60))
        .await
        .expect("second snapshot");
    assert!(again.size > 0);
}

async fn alarm_is_reported(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let c = client(urls.clone());
    let member = c.status_of(&urls[0]).await.unwrap().member_id();
    // Raise NOSPACE by hand, as etcd does when the quota is hit.
    let raised = http_post(
        &format!("{}/v3/maintenance/alarm", urls[0]),
        &format!(r#"{{"action":"ACTIVATE","memberID":"{member}","alarm":"NOSPACE"}}"#),
        Duration::from_secs(5),
    );
    assert!(matches!(raised, Some((200, _))), "{raised:?}");
    let alarms = c.alarms().await.expect("alarms");
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].alarm, AlarmKind::NoSpace);
    assert_eq!(alarms[0].member_id, member);
    let err = c.put("k", "v", None).await.unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(!c
        .health_of(&urls[0])
        .await
        .expect("health answers 503 with a body"));
    let status = c.status_of(&urls[0]).await.unwrap();
    assert!(
        status.errors.iter().any(|e| e.contains("NOSPACE")),
        "{status:?}"
    );
}

async fn auth_tokens_are_fetched_and_refreshed(release: Release) {
    // Simple tokens live 2 s here (flag --auth-token-ttl, through etcd's environment).
    let mut cluster = Cluster::new(release, 3, Mode::Bare);
    for m in &mut cluster.members {
        m.env.push(("ETCD_AUTH_TOKEN_TTL".into(), "2".into()));
        m.start();
    }
    for m in &cluster.members {
        m.wait_healthy();
    }
    let urls = cluster.client_urls();
    assert!(
        !client(urls.clone())
            .auth_enabled()
            .await
            .expect("auth status"),
        "auth is off on a new cluster"
    );
    // Enable auth with a root user (set-up, not under test).
    for (path, body) in [
        ("/v3/auth/role/add", r#"{"name":"root"}"#),
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let answer = http_post(&format!("{}{path}", urls[0]), body, Duration::from_secs(5));
        assert!(matches!(answer, Some((200, _))), "{path}: {answer:?}");
    }
    let with_password = |password: &str| {
        Client::new(ClientConfig {
            credentials: Some(Credentials {
                user: "root".into(),
                password: password.into(),
            }),
            request_timeout: CALL_TIMEOUT,
            ..ClientConfig::new(urls.clone())
        })
        .expect("client")
    };
    let authed = with_password("rootpw");
    // Told by an unauthenticated local read, the same way on every version.
    assert!(client(urls.clone())
        .auth_enabled()
        .await
        .expect("auth status without credentials"));
    assert!(authed
        .auth_enabled()
        .await
        .expect("auth status with credentials"));
    authed
        .put("secret", "v1", None)
        .await
        .expect("put with auth");
    assert_eq!(authed.get("secret").await.unwrap().unwrap().value, b"v1");
    assert!(format!("{authed:?}").contains("root"));

    // Without credentials, or with a wrong password: refused, with a message saying so.
    let err = client(urls.clone()).get("secret").await.unwrap_err();
    assert!(err.is_unauthenticated(), "{err}");
    let err = with_password("wrong").get("secret").await.unwrap_err();
    assert!(matches!(err, EtcdError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("\"root\""), "{err}");

    // Once the token expired, etcd says so, and the client fetches a new one and goes on.
    let (_, body) = http_post(
        &format!("{}/v3/auth/authenticate", urls[0]),
        r#"{"name":"root","password":"rootpw"}"#,
        Duration::from_secs(5),
    )
    .expect("authenticate");
    let token: serde_json::Value = serde_json::from_str(&body).expect("token json");
    let token = token["token"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, body) = post_with_token(&urls[0], "/v3/kv/range", r#"{"key":"c2VjcmV0"}"#, &token)
        .expect("range with an old token");
    assert!(body.contains("invalid auth token"), "{body}");
    authed
        .put("secret", "v2", None)
        .await
        .expect("put after the token expired");

    // The token serves every member: the same client goes on after the first one dies.
    cluster.member(0).kill();
    assert_eq!(authed.get("secret").await.unwrap().unwrap().value, b"v2");
}

/// A raw HTTP/1.0 POST with an `Authorization` header (to look at etcd's own answer).
fn post_with_token(endpoint: &str, path: &str, body: &str, token: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let authority = endpoint.strip_prefix("http://")?;
    let addr: std::net::SocketAddr = authority.parse().ok()?;
    let timeout = Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nAuthorization: {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

async fn tls_with_client_certificates(release: Release) {
    // The fixture's addresses and directories; this one member is started with TLS.
    let cluster = Cluster::new(release, 1, Mode::Bare);
    let spec = cluster.members[0].spec.clone();
    let dir = cluster.dir().to_path_buf();
    let (_etcd, https) = crate::support::pki::start_tls_member(&cluster);

    let config = |cacert: &str, cert: bool| ClientConfig {
        request_timeout: CALL_TIMEOUT,
        cacert: Some(dir.join(cacert)),
        cert: cert.then(|| dir.join("client.pem")),
        key: cert.then(|| dir.join("client-key.pem")),
        // No scheme: https is assumed when TLS material is given.
        ..ClientConfig::new(vec![format!("{}:{}", spec.ip, spec.client_port)])
    };
    let c = Client::new(config("ca.pem", true)).expect("TLS client");
    assert_eq!(c.endpoints(), [https.as_str()]);
    eventually(
        "etcd with TLS to be healthy",
        Duration::from_secs(30),
        || async { c.health_of(&https).await.ok()?.then_some(()) },
    )
    .await;
    c.put("tls", "yes", None).await.expect("put over TLS");
    assert_eq!(c.get("tls").await.unwrap().unwrap().value, b"yes");
    let lease = c.lease_grant(10).await.expect("grant");
    assert_eq!(c.lease_keep_alive(lease.id).await.unwrap(), Some(10));
    assert_eq!(
        c.version_of(&https).await.unwrap().server,
        release.version()
    );
    let endpoints = c.refresh_endpoints().await.expect("refresh");
    assert_eq!(endpoints, [https.as_str()]);
    let snap = c
        .snapshot(&dir.join("tls-snap.db"), Duration::from_secs(30))
        .await
        .expect("snapshot over TLS");
    assert!(snap.size > 32);

    // Without a client certificate, etcd refuses the connection.
    let no_cert = Client::new(config("ca.pem", false)).unwrap();
    let err = no_cert.get("tls").await.unwrap_err();
    assert!(err.is_transport(), "{err}");
    // With a CA that did not sign etcd's certificate, the client refuses etcd.
    let wrong_ca = Client::new(config("other-ca.pem", true)).unwrap();
    let err = wrong_ca.get("tls").await.unwrap_err();
    assert!(err.is_transport(), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // Unreadable TLS material is a set-up error naming the file.
    let mut missing = config("ca.pem", true);
    missing.key = Some(dir.join("no-such-key.pem"));
    let err = Client::new(missing).unwrap_err();
    assert!(matches!(err, EtcdError::Setup(_)), "{err}");
    assert!(err.to_string().contains("no-such-key.pem"), "{err}");
}

/// HashKV of every member at one revision, a compacted revision told apart whatever the
/// version's error body (3.6 dropped its `error` field), and the storage version 3.6 added
/// to status and `/version` (empty before).
async fn hash_kv_compaction_and_storage_versions(release: Release) {
    let cluster = Cluster::start(release, 3);
    let urls = cluster.client_urls();
    let c = client(urls.clone());
    for i in 0..20 {
        c.put(format!("h/{i}"), "v", None).await.expect("put");
    }
    let rev = c
        .put("h/last", "v", None)
        .await
        .expect("put")
        .header
        .revision;
    let mut hashes = Vec::new();
    for url in &urls {
        let h = eventually(
            "HashKV at the put's revision",
            Duration::from_secs(10),
            || async { c.hash_kv_of(url, rev).await.ok() },
        )
        .await;
        assert!(h.header.revision >= rev, "{h:?}");
        hashes.push((h.hash, h.compact_revision));
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    assert_ne!(hashes[0].0, 0);
    let local = c.hash_kv(rev).await.expect("local HashKV");
    assert_eq!((local.hash, local.compact_revision), hashes[0]);

    let compacted = http_post(
        &format!("{}/v3/kv/compaction", urls[0]),
        &format!(r#"{{"revision":"{}","physical":true}}"#, rev - 5),
        Duration::from_secs(5),
    );
    assert!(matches!(compacted, Some((200, _))), "{compacted:?}");
    let err = c.hash_kv_of(&urls[0], rev - 10).await.unwrap_err();
    assert!(err.is_compacted(), "{err}");
    assert_eq!(err.code(), Some(11), "{err}");
    let after = c
        .hash_kv_of(&urls[0], rev)
        .await
        .expect("HashKV after compaction");
    assert_eq!(after.compact_revision, rev - 5);

    let version = release.version();
    let minor = version.rsplit_once('.').unwrap().0;
    let want = if matches!(minor, "3.4" | "3.5") {
        String::new()
    } else {
        format!("{minor}.0")
    };
    for url in &urls {
        let status = eventually("the storage version", Duration::from_secs(15), || async {
            let s = c.status_of(url).await.ok()?;
            (s.storage_version == want).then_some(s)
        })
        .await;
        assert_eq!(status.version, version);
        assert_eq!(c.version_of(url).await.expect("version").storage, want);
    }
}

mod newer {
    //! Calls that need etcd 3.5.30 or later on the gateway (HashKV).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_kv_compaction_and_storage_versions_3_5_newest() {
        super::hash_kv_compaction_and_storage_versions(crate::support::Release::V3_5Newest).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_kv_compaction_and_storage_versions_3_6() {
        super::hash_kv_compaction_and_storage_versions(crate::support::Release::V3_6).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_kv_compaction_and_storage_versions_3_7() {
        super::hash_kv_compaction_and_storage_versions(crate::support::Release::V3_7).await;
    }
}

macro_rules! per_release {
    ($($test:ident),* $(,)?) => {
        mod v3_4 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_4).await;
                }
            )*
        }
        mod v3_5 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_5).await;
                }
            )*
        }
        mod v3_5_newest {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_5Newest).await;
                }
            )*
        }
        mod v3_6 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_6).await;
                }
            )*
        }
        mod v3_7 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::support::Release::V3_7).await;
                }
            )*
        }
    };
}

per_release!(
    kv_effects,
    lease_effects,
    lock_blocks_and_hands_over,
    cluster_and_maintenance,
    failover_when_a_member_dies,
    watch_resumes_on_another_member,
    failover_when_the_leader_dies,
    all_members_down_is_a_clear_error,
    hung_members_time_out,
    snapshot_matches_etcdctl,
    alarm_is_reported,
    auth_tokens_are_fetched_and_refreshed,
    tls_with_client_certificates,
);

/// Downgrade over gRPC on a real 3.6 member: `validate` answers the cluster version and
/// changes nothing; status carries the downgrade info from 3.6 on and none before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_validate_and_downgrade_info() {
    use etcd_supervisor::etcd::DowngradeAction;
    let cluster = Cluster::start(Release::V3_6, 1);
    let c = client(cluster.client_urls());
    let version = c
        .downgrade(DowngradeAction::Validate, "3.5")
        .await
        .expect("validate");
    assert!(version.starts_with("3.6"), "{version}");
    let status = c.status().await.expect("status");
    let info = status
        .downgrade
        .clone()
        .expect("3.6 reports downgrade info");
    assert!(!info.enabled, "{info:?}");
    assert!(!status.storage_version.is_empty(), "{status:?}");
    let old = Cluster::start(Release::V3_5Newest, 1);
    let status = client(old.client_urls()).status().await.expect("status");
    assert_eq!(status.downgrade, None);
}
