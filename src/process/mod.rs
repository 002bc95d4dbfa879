//! The etcd process: the reaper (the only place that waits for children), the etcd child,
//! the data-dir lock that tells when an etcd still holds the data, its WAL and db locks
//! that tell when a stopping etcd has closed it, the read of its db into memory ahead of
//! a restart, and the record a re-executed supervisor adopts etcd from.

pub mod child;
pub mod data_locks;
pub mod datadir;
pub mod handover;
pub mod log_tail;
pub mod read_ahead;
pub mod reaper;
pub mod tool;
