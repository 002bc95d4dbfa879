//! Integration tests against real etcd: one test binary, shared fixtures in `support/`,
//! one file per feature.

mod support;

mod backup;
mod bad_input;
mod big;
mod compat;
mod config_file;
mod consistency;
mod crash;
mod demo;
mod downgrade;
mod etcd_client;
mod fast_stop;
mod faults;
mod gateway_off;
mod grpc_snapshot;
mod leader_last;
mod metrics;
mod ops;
mod packaging;
mod partition;
mod pid1;
mod reexec;
mod refusals;
mod rehearsal;
mod rehearsal_turn;
mod rollout;
mod run;
mod signal_latency;
mod staging;
mod status;
mod status_watch;
mod turn;
mod v3_6_paths;
mod v3_6_refusals;
mod watches;
