//! `run --handover-check FILE`: run by a supervisor that was asked to reload, as a
//! subprocess, before it re-executes this binary in its place. It proves that this binary
//! parses the same arguments (clap did, to get here), reads the handover record and finds
//! the etcd it names to be its parent's child, and reads the state it would resume from
//! (state dir writable, state.json, the pinned version). Nothing is started or changed.

use std::path::Path;

use crate::config::RunSettings;
use crate::process::handover::{Handover, HandoverError};
use crate::supervisor::RunError;
use crate::upgrade::turn::state_file::{StateFile, StateFileError};
use crate::versions::store::{VersionStore, VersionsError};

use super::Outcome;

/// Why this binary cannot take over.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The record is unreadable or names something else.
    #[error("handover: {0}")]
    Handover(#[from] HandoverError),
    /// The state dir cannot be used.
    #[error("handover: {0}")]
    Run(#[from] Box<RunError>),
    /// state.json cannot be read.
    #[error("handover: {0}")]
    State(#[from] StateFileError),
    /// The pinned version cannot be read.
    #[error("handover: {0}")]
    Versions(#[from] VersionsError),
    /// Nothing is pinned, so there is nothing this binary could run.
    #[error("handover: no etcd version is pinned in {0}")]
    NothingPinned(String),
}

/// Checks that this binary can take over from the record at `file`; prints one line saying
/// what it would take over (0), or logs why not (1).
pub fn check(settings: &RunSettings, file: Option<&Path>) -> Outcome {
    let Some(file) = file else {
        return Outcome::Usage;
    };
    match checked(settings, file) {
        Ok(line) => {
            println!("{line}");
            Outcome::Success
        }
        Err(e) => Outcome::error(&e, false),
    }
}

fn checked(settings: &RunSettings, file: &Path) -> Result<String, CheckError> {
    let record = Handover::load(file)?;
    let parent = nix::unistd::getppid().as_raw() as u32;
    record.validate(parent)?;
    super::run::check_writable(&settings.state_dir).map_err(Box::new)?;
    let turn = StateFile::new(&settings.state_dir).load()?;
    let store = VersionStore::new(&settings.state_dir);
    let pinned = store
        .current()?
        .ok_or_else(|| CheckError::NothingPinned(settings.versions_dir().display().to_string()))?;
    let etcd = match &record.etcd {
        Some(e) => format!("etcd pid {} ({})", e.pid, e.version),
        None => "no etcd running".to_owned(),
    };
    Ok(format!(
        "etcd-supervisor {} can take over from {}: {etcd}, pinned {}, upgrade state {}",
        env!("CARGO_PKG_VERSION"),
        record.supervisor_version,
        pinned.version,
        turn.as_ref().map_or("idle", |t| t.state_name()),
    ))
}
