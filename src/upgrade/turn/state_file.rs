//! `<state-dir>/state.json`: the persisted [`Turn`], written atomically
//! (temp file in the same directory, fsync, rename, fsync of the directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::machine::Turn;
use crate::durable::{self, IoError};

/// Errors reading or writing state.json.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file exists but is not a state we understand.
    #[error("{path} is not a valid state file ({source}); etcd was not started, so that an upgrade that was under way is not repeated or undone blindly. `current` beside it names the version that would run: check that it is the one this member should run (see `etcd-supervisor status`), then move the file aside and start again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// The state file of one supervisor.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `<state_dir>/state.json`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state.json"),
        }
    }

    /// The persisted turn, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Turn>, StateFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(durable::io_err("reading", &self.path)(e).into()),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateFileError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the persisted turn atomically.
    pub fn save(&self, turn: &Turn) -> Result<(), StateFileError> {
        let mut json =
            serde_json::to_vec_pretty(turn).map_err(|source| StateFileError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        json.push(b'\n');
        Ok(durable::replace_atomically(&self.path, &json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::Version;

    #[test]
    fn saves_loads_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let turn = Turn::idle(Version::new(3, 5, 16));
        file.save(&turn).unwrap();
        assert_eq!(file.load().unwrap(), Some(turn));
        assert!(!dir.path().join("state.json.tmp").exists());
        for garbage in ["{not json", "", "{\"phase\":\"swap"] {
            fs::write(dir.path().join("state.json"), garbage).unwrap();
            let err = file.load().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("move the file aside"), "{text}");
            assert!(text.contains("state.json"), "{text}");
            assert!(matches!(err, StateFileError::Corrupt { .. }), "{err:?}");
        }
    }
}
