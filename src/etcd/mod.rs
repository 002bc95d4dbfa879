//! Client for etcd's v3 HTTP/JSON gateway (etcd 3.4 to 3.6).
//!
//! Layout:
//! - `client`: endpoints, failover, timeouts, TLS and auth; every call goes through it.
//! - `error`: [`EtcdError`] and the questions callers ask of it (`is_not_leader()`, ...).
//! - `wire`: the JSON encoding (int64 as strings, base64 bytes, error bodies of every version).
//! - one file per API group, each adding methods to [`Client`]: `kv` (range, put, delete,
//!   txn), `lease`, `lock` (raw lock/unlock), `cluster` (member list, endpoint discovery),
//!   `maintenance` (status, alarms, leader, transfer-leadership, HashKV, /health, /version),
//!   `snapshot` (streamed to a verified file).
//!
//! Facts about real etcd the client is built on are in `shared/etcd-api.md`; the ones that
//! shape an API are repeated where they matter.

pub mod client;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod snapshot;
pub mod snapshot_decode;
pub mod transport;
mod wire;

pub use client::{Client, ClientConfig, Credentials};
pub use cluster::{Member, MemberList};
pub use error::{code, EtcdError};
pub use kv::{
    prefix_end, Compare, CompareResult, CompareTarget, DeleteRequest, DeleteResponse, KeyValue,
    PutRequest, PutResponse, RangeRequest, RangeResponse, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
pub use lease::{ttl_secs, LeaseGrant, LeaseTimeToLive};
pub use lock::LockResponse;
pub use maintenance::{Alarm, AlarmKind, EtcdVersion, HashKv, Leader, Status};
pub use snapshot::SnapshotInfo;
pub use snapshot_decode::{SnapshotDigest, SnapshotError, SnapshotStream};
pub use wire::ResponseHeader;
