//! How one member's turn is carried out: everything that waits, talks to etcd, touches the
//! disk or the etcd child, around the pure [`machine`].
//!
//! - [`machine`]: the turn's states and the pure `step` (with `recover` after a crash);
//! - [`driver`]: the executor that performs each effect and feeds the outcome back;
//! - [`ports`]: the driver's world as traits, and [`live`] the real one behind them;
//! - [`state_file`]: `state.json`, persisted before every world-changing step;
//! - [`consistency`]: HashKV of every member after a rollout, the alarm recorded and read;
//! - [`downgrade_live`]: etcd's downgrade state and `<prefix>downgrade`, read and written;
//! - [`vet`]: the live vetter (flag lists from `--help`, `etcdutl check v2store`, the dress
//!   rehearsal), judged by [`crate::upgrade::rules::vet`].
//!
//! The rules each step obeys are [`crate::upgrade::rules`].

pub mod consistency;
pub mod downgrade_live;
pub mod driver;
pub mod live;
pub mod machine;
pub mod ports;
pub mod state_file;
pub mod vet;
