//! Filesystems a test mounts (as root): a tmpfs that goes away with the test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the suite runs as root (mounts need it; CI does).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tmpfs mounted by the test; lazily unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` at `at` (created if missing); fails unless root.
    pub fn mount(at: &Path, options: &str) -> Tmpfs {
        assert!(
            is_root(),
            "needs root to mount a tmpfs: run the suite as root (CI does)"
        );
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Remounts it with `options`.
    pub fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
