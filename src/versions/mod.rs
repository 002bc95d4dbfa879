//! etcd version numbers, and the store of pinned etcd binaries under `<state-dir>/versions`.

pub mod store;
pub mod version;

pub use version::Version;
