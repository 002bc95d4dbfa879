//! Pacing: when a turn may start and how long a verified member keeps it. Maintenance
//! windows ([`window`]) and the soak's watch ([`soak`]) are judged here, as plain data; the
//! driver holds the queue and watches the soak in `turn::driver::pacing`.

pub mod soak;
pub mod window;
