//! Integration tests against real etcd: one test binary, shared fixtures in `support/`,
//! one file per feature.

mod support;

mod bad_input;
mod crash;
mod etcd_client;
mod pid1;
mod rollout;
mod run;
mod staging;
mod status;
mod turn;
