//! Client for etcd's gRPC API (etcd 3.4 to 3.7), through the `etcd-client` crate (tonic).
//!
//! Layout:
//! - `transport`: the endpoints, credentials and TLS material; a member's gRPC channel; the
//!   HTTP client for the plain paths.
//! - `client`: failover, timeouts and auth; every call goes through it.
//! - `error`: [`EtcdError`] and the questions callers ask of it (`is_not_leader()`, ...).
//! - one file per API group, each adding methods to [`Client`] and turning etcd-client's
//!   messages into this module's plain types: `kv` (range, put, delete, txn), `lease`
//!   (with the keepalive stream), `lock` (raw lock/unlock), `cluster` (member list, endpoint
//!   discovery), `maintenance` (status, alarms, leader, transfer-leadership, HashKV,
//!   downgrade; /health and /version over plain HTTP), `watch` (changes under a prefix,
//!   resumed across members), `auth` (is auth on?), `placement` (which member holds the
//!   long-lived calls: never the one about to stop),
//!   `snapshot` (a folder: streamed to a verified file; `check` checks the chunks, `persist`
//!   is the one path to the file).
//!
//! Only `/health`, `/version` (and the supervisor's own `/metrics`) use HTTP: etcd serves
//! them on its client URL even with `--enable-grpc-gateway=false`. Nothing uses the
//! HTTP/JSON gateway.
//!
//! What callers rely on, and how this client keeps it:
//! - **At most once.** [`Client::txn`] is sent to one member; it goes to the next one only
//!   when the connection to the first was never made (refused, unreachable, TLS refused):
//!   the request cannot have left. Once the request may have been sent, a lost answer (a
//!   broken connection, no answer in time) is [`EtcdError::OutcomeUnknown`], never a
//!   repeat; an expired token is the one repeat, and etcd applies nothing under a token it
//!   refuses. tonic's own retries are off, and each member has its own channel, so no layer
//!   below repeats a request on its own.
//! - **Fencing** (`HeldLock::confirm` in `src/cluster/lock.rs`): the confirm is a
//!   linearizable range of the lock key (no `serializable`), answered only through the
//!   leader's read index, so a key read back under our lease is the cluster's state at that
//!   moment; a member that cannot reach the leader answers an error, which the fence reads
//!   as a lost turn. The lease stays alive over the keepalive stream, re-opened on another
//!   member when one fails, and a lease etcd reports gone ends the turn at once.
//!
//! The facts about real etcd the client is built on are repeated where they shape an API.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod placement;
pub mod snapshot;
pub mod transport;
pub mod watch;

pub use client::{Client, ClientConfig, Credentials};
pub use cluster::{Member, MemberList};
pub use error::{code, EtcdError};
pub use kv::{
    prefix_end, Compare, CompareResult, CompareTarget, DeleteRequest, DeleteResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
pub use lease::{ttl_secs, LeaseGrant, LeaseTimeToLive};
pub use lock::LockResponse;
pub use maintenance::{
    Alarm, AlarmKind, DowngradeAction, DowngradeInfo, EtcdVersion, HashKv, Leader, Status,
};
pub use placement::StreamPlacement;
pub use snapshot::{SnapshotDigest, SnapshotError, SnapshotInfo};
pub use watch::{Watch, WatchEvent, WatchEventKind};
