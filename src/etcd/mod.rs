//! Client for etcd's v3 HTTP/JSON gateway (etcd 3.4 to 3.6).
//!
//! Layout: `client.rs` owns endpoints, failover, timeouts, TLS and auth; the other files add
//! typed operations on top of it, one API group each.

pub mod client;

pub use client::{Client, ClientConfig, EtcdError};
