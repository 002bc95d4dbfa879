//! Integration tests against real etcd: one test binary, shared fixtures in `support/`,
//! one file per feature.

mod support;

mod bad_input;
mod pid1;
mod run;
