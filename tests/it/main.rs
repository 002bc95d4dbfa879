//! Integration tests against real etcd: one test binary, shared fixtures in `support/`,
//! one file per feature.

mod support;

mod backup;
mod bad_input;
mod compat;
mod crash;
mod etcd_client;
mod grpc_snapshot;
mod metrics;
mod packaging;
mod pid1;
mod refusals;
mod rehearsal;
mod rehearsal_turn;
mod rollout;
mod run;
mod signal_latency;
mod staging;
mod status;
mod turn;
