//! Watches (`etcdserverpb.Watch`): the changes under a prefix, pushed by etcd as they
//! happen, for callers that would otherwise poll (a pause key, the lock's queue, the
//! members' records).
//!
//! A [`Watch`] resumes where it left off: it remembers the revision after the last event
//! it returned, and when its stream breaks (the member stopped, a connection reset) it
//! opens a new one with failover, from that revision, so no change is lost or repeated.
//! When etcd has compacted that revision away the watch ends with an error for which
//! [`EtcdError::is_compacted`] is true: read the keys again, then watch from the read's
//! revision + 1. The stream sits where the client's placement says (see
//! [`super::placement`]) and moves, the same way, when that changes.

use etcd_client::{EventType, WatchOptions, WatchStream};

use super::client::{convert, Client, Fail};
use super::error::{code, EtcdError};
use super::kv::{prefix_end, KeyValue};
use super::placement::{Mode, Seat};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventKind {
    /// Created or changed.
    Put,
    /// Deleted (also by its lease's expiry).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventKind,
    /// The key after the change (for a delete: the key, its mod revision, no value).
    pub kv: KeyValue,
}

/// A watch of every key under a prefix; see the module header.
pub struct Watch {
    client: Client,
    prefix: Vec<u8>,
    /// The revision the next stream starts at.
    next_revision: i64,
    stream: Option<(String, WatchStream, Seat)>,
    /// Changes of the client's placement.
    placement: tokio::sync::watch::Receiver<Mode>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("next_revision", &self.next_revision)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Watches every key starting with `prefix`, from `start_revision` on (0: from now).
    /// Nothing is sent until [`Watch::next`].
    pub fn watch_prefix(&self, prefix: impl Into<Vec<u8>>, start_revision: i64) -> Watch {
        Watch {
            client: self.clone(),
            prefix: prefix.into(),
            next_revision: start_revision,
            stream: None,
            placement: self.placement().subscribe(),
        }
    }
}

impl Watch {
    /// The next changes, in revision order (one or more). Waits for them as long as it
    /// takes: bound it with the caller's own timeout or `select!`. Dropping the future
    /// loses nothing: the next call resumes at the same revision.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, EtcdError> {
        loop {
            self.start().await?;
            let Some((endpoint, stream, seat)) = self.stream.as_mut() else {
                continue;
            };
            let message = tokio::select! {
                message = stream.message() => message,
                // The client holds the sender: this never ends in an error.
                Ok(()) = self.placement.changed() => {
                    let mode = self.placement.borrow_and_update().clone();
                    if seat.should_move(&mode) {
                        tracing::debug!(%endpoint, "moving the watch stream (see `placement`)");
                        self.stream = None;
                    }
                    continue;
                }
            };
            let endpoint = endpoint.clone();
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::debug!(%endpoint, "watch stream ended; opening another");
                    self.stream = None;
                    continue;
                }
                Err(err) => match convert(&endpoint, err) {
                    Fail::Answer(err) if !err.is_unavailable() => {
                        self.stream = None;
                        return Err(err);
                    }
                    _ => {
                        tracing::debug!(%endpoint, "watch stream broke; opening another");
                        self.stream = None;
                        continue;
                    }
                },
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                self.stream = None;
                return Err(EtcdError::Api {
                    endpoint,
                    code: code::OUT_OF_RANGE,
                    message: if resp.compact_revision() > 0 {
                        format!(
                            "etcdserver: mvcc: required revision has been compacted (watch from {}; compacted up to {})",
                            self.next_revision,
                            resp.compact_revision()
                        )
                    } else {
                        format!("watch cancelled by etcd: {}", resp.cancel_reason())
                    },
                });
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = KeyValue::from_pb(e.kv()?);
                    let kind = match e.event_type() {
                        EventType::Put => WatchEventKind::Put,
                        EventType::Delete => WatchEventKind::Delete,
                    };
                    Some(WatchEvent { kind, kv })
                })
                .collect();
            if let Some(last) = events.last() {
                self.next_revision = last.kv.mod_revision + 1;
                return Ok(events);
            }
            // A "created" or progress message: nothing to return yet.
        }
    }

    /// Opens the stream now unless it is open (failover across members): once this
    /// returns, every later change is reported by [`Watch::next`]. `next` opens it too.
    pub async fn start(&mut self) -> Result<(), EtcdError> {
        if self.stream.is_none() {
            // Placed under the placement as it is now: older changes are not news to it.
            let epoch = self.placement.borrow_and_update().epoch;
            let (endpoint, stream, revision) = self.open().await?;
            // "From now" is pinned to the revision etcd created the watch at, so a stream
            // that breaks before any event resumes without losing what came meanwhile.
            if self.next_revision == 0 && revision > 0 {
                self.next_revision = revision + 1;
            }
            let seat = self.client.seat(&endpoint, epoch);
            self.stream = Some((endpoint, stream, seat));
        }
        Ok(())
    }

    /// Opens a stream (failover across members) from `next_revision`; also answers the
    /// revision etcd created it at.
    async fn open(&self) -> Result<(String, WatchStream, i64), EtcdError> {
        let timeout = self.client.request_timeout();
        let mut tried = Vec::new();
        // On the local member, never while it steps aside (see `placement`).
        for endpoint in self.client.stream_order() {
            let prefix = self.prefix.clone();
            let revision = self.next_revision;
            let open = |rpc: super::client::Rpc| {
                let prefix = prefix.clone();
                async move {
                    let end = if prefix.is_empty() {
                        vec![0]
                    } else {
                        prefix_end(&prefix)
                    };
                    let key = if prefix.is_empty() { vec![0] } else { prefix };
                    let options = WatchOptions::new()
                        .with_range(end)
                        .with_start_revision(revision);
                    let mut stream = rpc.watch_client().watch(key, Some(options)).await?;
                    // etcd confirms the watch before any event; a refusal comes here too.
                    stream.message().await.map(|first| (stream, first))
                }
            };
            match self.client.attempt(&endpoint, false, timeout, &open).await {
                Ok((stream, first)) => {
                    let created_at = first
                        .as_ref()
                        .and_then(|f| f.header())
                        .map_or(0, |h| h.revision());
                    if let Some(first) = first {
                        if first.canceled() || first.compact_revision() > 0 {
                            return Err(EtcdError::Api {
                                endpoint,
                                code: code::OUT_OF_RANGE,
                                message: format!(
                                    "etcdserver: mvcc: required revision has been compacted (watch from {revision}): {}",
                                    first.cancel_reason()
                                ),
                            });
                        }
                    }
                    self.client.remember(&endpoint);
                    return Ok((endpoint, stream, created_at));
                }
                Err(fail) => match super::client::classify_simple(fail, &endpoint, timeout) {
                    Ok(reason) => tried.push((endpoint, reason)),
                    Err(err) => return Err(err),
                },
            }
        }
        Err(EtcdError::AllEndpointsFailed { tried })
    }
}
