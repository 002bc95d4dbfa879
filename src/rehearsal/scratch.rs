//! The rehearsal's private directory and processes, and the guarantee that neither
//! outlives it: [`Scratch`] owns both; [`Scratch::shutdown`] stops the process gracefully
//! (SIGTERM, then SIGKILL after a bound) and removes the dir, and a drop without it (a
//! panic, a dropped future) SIGKILLs the process and removes the dir synchronously.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::child::EtcdProcess;

/// Names of rehearsal dirs in the scratch parent start with this, so leftovers can be
/// told from anything else an operator keeps there.
pub const DIR_PREFIX: &str = "run-";

/// How much of a log is read back for the tail.
const TAIL_BYTES: u64 = 64 * 1024;

/// A rehearsal's dir and the process currently running in it.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    child: Option<EtcdProcess>,
    removed: bool,
}

impl Scratch {
    /// Removes leftovers of earlier rehearsals in `parent` (a supervisor killed mid-way;
    /// their processes died with it through PDEATHSIG) and creates a fresh private dir.
    pub fn create(parent: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        for entry in std::fs::read_dir(parent)?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(DIR_PREFIX) {
                let path = entry.path();
                tracing::info!(path = %path.display(), "removing a leftover rehearsal dir");
                remove_all(&path)?;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(parent)?
            .keep();
        Ok(Self {
            dir,
            child: None,
            removed: false,
        })
    }

    /// The private dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a started process to the guard.
    pub fn adopt(&mut self, child: EtcdProcess) {
        self.child = Some(child);
    }

    /// The process in the guard.
    pub fn child(&mut self) -> Option<&mut EtcdProcess> {
        self.child.as_mut()
    }

    /// Stops the current process (SIGTERM, SIGKILL after `grace`) and forgets it.
    pub async fn stop_child(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        child.signal(Signal::SIGTERM);
        let exit = match tokio::time::timeout(grace, child.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::info!(pid = child.pid(), grace = ?grace, "rehearsal process ignored SIGTERM; sending SIGKILL");
                child.signal(Signal::SIGKILL);
                child.wait().await
            }
        };
        tracing::debug!(pid = child.pid(), %exit, "rehearsal process stopped");
    }

    /// Stops the process and removes the dir.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_child(grace).await;
        // A multi-GB copy takes a second or more to unlink: not on the runtime's thread,
        // where it would hold the health checks and the lease keepalives.
        let dir = self.dir.clone();
        if let Err(e) = crate::blocking::run(move || remove_all(&dir)).await {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove the rehearsal dir; the next rehearsal removes it");
        }
        self.removed = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // No await here: the copy is private and disposable, so SIGKILL is enough; the
            // reaper collects the status.
            child.signal(Signal::SIGKILL);
        }
        if !self.removed {
            let _ = remove_all(&self.dir);
        }
    }
}

fn remove_all(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    tail_of(&String::from_utf8_lossy(&bytes), lines, start > 0)
}

fn tail_of(text: &str, lines: usize, cut: bool) -> String {
    let all: Vec<&str> = text.lines().collect();
    // The first line of a cut read is probably partial.
    let first = usize::from(cut && all.len() > lines);
    let from = all.len().saturating_sub(lines).max(first);
    all[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_of("a\nb\nc\n", 2, false), "b\nc");
        assert_eq!(tail_of("a\nb", 5, false), "a\nb");
        assert_eq!(tail_of("", 5, false), "");
    }

    #[test]
    fn leftovers_go_and_other_files_stay() {
        let parent = tempfile::tempdir().unwrap();
        let old = parent.path().join(format!("{DIR_PREFIX}old"));
        std::fs::create_dir_all(old.join("data/member")).unwrap();
        std::fs::write(parent.path().join("keep.txt"), b"x").unwrap();
        let scratch = Scratch::create(parent.path()).unwrap();
        assert!(!old.exists());
        assert!(parent.path().join("keep.txt").exists());
        let dir = scratch.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(scratch);
        assert!(!dir.exists());
    }
}
