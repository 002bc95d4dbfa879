//! The contracts between supervisors on different hosts, held in etcd under the key prefix:
//! the upgrade lock, and a typed view of the cluster that `status` renders and preflight
//! judges.

pub mod lock;
pub mod view;
