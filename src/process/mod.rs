//! The etcd process: the reaper (the only place that waits for children), the etcd child,
//! and the data-dir lock that tells when an etcd still holds the data.

pub mod child;
pub mod datadir;
pub mod log_tail;
pub mod reaper;
pub mod tool;
