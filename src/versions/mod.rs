//! etcd version numbers, the store of pinned etcd binaries under `<state-dir>/versions`, and
//! the companion tools pinned with a first binary.

pub mod companions;
pub mod store;
pub mod version;

pub use version::Version;
