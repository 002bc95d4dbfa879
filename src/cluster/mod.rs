//! The contracts between supervisors on different hosts, held in etcd under the key prefix:
//! every key (`keys`), the records stored there (`records`), the upgrade lock (`lock`), a
//! watch that wakes waiters when any of them changes (`changes`), and
//! a typed view of the cluster (`view`) that preflight judges and `status` renders.

pub mod changes;
pub mod keys;
pub mod lock;
pub mod records;
pub mod view;
