//! `<state-dir>/state.json`: the persisted [`Turn`], written atomically
//! (temp file in the same directory, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::machine::Turn;

/// Errors reading or writing state.json.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a state we understand.
    #[error("{path} is not a valid state file ({source}); move it aside to start from the pinned version")]
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
            Err(source) => {
                return Err(StateFileError::Io {
                    action: "reading",
                    path: self.path.clone(),
                    source,
                })
            }
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
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io_err = |action: &'static str| {
            let path = self.path.clone();
            move |source| StateFileError::Io {
                action,
                path,
                source,
            }
        };
        let mut json =
            serde_json::to_vec_pretty(turn).map_err(|source| StateFileError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        json.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(io_err("creating"))?;
        f.write_all(&json).map_err(io_err("writing"))?;
        f.sync_all().map_err(io_err("syncing"))?;
        fs::rename(&tmp, &self.path).map_err(io_err("replacing"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the directory of"))
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
        fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("move it aside"), "{err}");
    }
}
