//! One member's upgrade turn.
//!
//! Theory of operation. A staged binary that passed the acceptance checks becomes a
//! candidate. The member queues for the cluster-wide turn (a lock in etcd on a lease kept
//! alive through any reachable endpoint). Holding it, preflight checks that every member is
//! healthy and reachable, there is a leader and no alarm, losing this member keeps quorum,
//! and the upgrade-path rules say proceed. Then: a verified backup, a graceful stop (etcd
//! hands leadership away by itself on SIGTERM), an atomic switch of `current`, a start, and
//! verification (healthy, reports the target version, applied index caught up with the
//! leader's). Progress is recorded in etcd and the turn released. If the new version fails
//! after the stop, the same swap runs backwards to the old version and the new one is
//! marked rejected for the whole cluster.
//!
//! Pacing: a turn starts only while the cluster is not paused (`etcd-supervisor pause`)
//! and inside a maintenance window (`window`); a verified member may keep the turn for a
//! soak under watch (`soak`) before it is released.
//!
//! `machine` holds the states and the pure transition function; `state_file` persists the
//! state atomically before every step that changes the world, so a supervisor killed at any
//! point resumes (or finishes the rollback) on restart.

pub mod advice;
pub mod consistency;
pub mod downgrade;
pub mod downgrade_live;
pub mod driver;
pub mod flags;
pub mod live;
pub mod machine;
pub mod order;
pub mod path;
pub mod ports;
pub mod preflight;
pub mod release_facts;
pub mod soak;
pub mod state_file;
pub mod vet;
pub mod window;
