//! Client for etcd's v3 HTTP/JSON gateway (etcd 3.4 to 3.7), with gRPC for the snapshot.
//!
//! Layout:
//! - `transport`: the endpoints, credentials and TLS material, and the HTTP client.
//! - `client`: failover, timeouts and auth; every call goes through it.
//! - `error`: [`EtcdError`] and the questions callers ask of it (`is_not_leader()`, ...).
//! - `wire`: the JSON encoding (int64 as strings, base64 bytes, error bodies of every version).
//! - one file per API group, each adding methods to [`Client`]: `kv` (range, put, delete,
//!   txn), `lease`, `lock` (raw lock/unlock), `cluster` (member list, endpoint discovery),
//!   `maintenance` (status, alarms, leader, transfer-leadership, HashKV, /health, /version),
//!   `snapshot` (a folder: streamed to a verified file over gRPC, or the gateway when the
//!   endpoint serves no gRPC; one checker and one path to the file for both).
//! - `grpc`: the connection, call and status of the one call made over gRPC instead, the
//!   snapshot (the gateway's JSON costs 2x).
//!
//! The facts about real etcd the client is built on are repeated where they shape an API.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod error;
pub mod grpc;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod snapshot;
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
pub use snapshot::{
    GrpcSnapshotStream, SnapshotDigest, SnapshotError, SnapshotInfo, SnapshotStream, SnapshotVia,
};
pub use wire::ResponseHeader;
