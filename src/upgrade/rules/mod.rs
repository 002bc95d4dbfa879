//! What is allowed: the pure rules of an upgrade turn and the data they read.
//!
//! Nothing here performs I/O or waits: each module takes plain data (a [`ClusterView`],
//! versions, flag lists, times) and returns a decision with its reason, so the rules are
//! unit-tested and property-tested without etcd. The code that gathers the facts, waits and
//! acts lives in [`super::turn`], under the same names where a rule has a carrying-out
//! (`leader_last`, `pacing`, `downgrade`, `vet`, `consistency`).
//!
//! [`ClusterView`]: crate::cluster::view::ClusterView

pub mod advice;
pub mod backup_reuse;
pub mod consistency;
pub mod downgrade;
pub mod flags;
pub mod leader_last;
pub mod pacing;
pub mod path;
pub mod preflight;
pub mod release_facts;
pub mod vet;
