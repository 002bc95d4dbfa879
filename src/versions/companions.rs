//! etcd's companion tools (`etcdctl`, `etcdutl`) found beside a binary the supervisor pins,
//! as Debian installs them (`/usr/bin/etcd`, `/usr/bin/etcdctl`, `/usr/bin/etcdutl`). They
//! are pinned with the server only when they report the same version (`etcdctl version`,
//! `etcdutl version`), so the dress rehearsal and the v2store check have a restore tool
//! without the operator staging one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::Version;
use crate::process::reaper::{ChildExit, Reaper};
use crate::process::tool;

/// The companion tools, by their file name.
pub const TOOLS: [&str; 2] = ["etcdctl", "etcdutl"];

/// Bound on one `version` call.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The version a companion's `version` output reports (`etcdutl version: 3.5.16`).
pub fn reported_version(tool: &str, output: &str) -> Option<Version> {
    let prefix = format!("{tool} version:");
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// What `path` (the companion `tool`) reports as its version, or why none.
pub async fn probe(reaper: &Reaper, tool: &str, path: &Path) -> Result<Version, String> {
    let out = tool::run(
        reaper,
        Command::new(path).arg("version").env_clear(),
        PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    if out.exit != ChildExit::Code(0) {
        return Err(format!("`{tool} version` ended with {}", out.exit));
    }
    reported_version(tool, &out.stdout).ok_or_else(|| {
        format!(
            "`{tool} version` printed {:?}",
            out.stdout.lines().next().unwrap_or("")
        )
    })
}

/// The companions beside `binary` that report `version`, as (tool, path). Each one found
/// and left out is logged with the reason.
pub async fn beside(
    reaper: &Reaper,
    binary: &Path,
    version: &Version,
) -> Vec<(&'static str, PathBuf)> {
    let Some(dir) = binary.parent() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in TOOLS {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        match probe(reaper, name, &path).await {
            Ok(v) if &v == version => {
                tracing::info!(tool = name, path = %path.display(), version = %v, "pinning the companion found beside the etcd binary");
                found.push((name, path));
            }
            Ok(v) => {
                tracing::warn!(tool = name, path = %path.display(), tool_version = %v, version = %version, "not pinning the companion beside the etcd binary: another version")
            }
            Err(why) => {
                tracing::warn!(tool = name, path = %path.display(), why, "not pinning the companion beside the etcd binary: its version is unknown")
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_each_tools_own_output() {
        let v = reported_version("etcdutl", "etcdutl version: 3.5.16\nAPI version: 3.5\n");
        assert_eq!(v, Some(Version::new(3, 5, 16)));
        let v = reported_version("etcdctl", "etcdctl version: 3.4.23\nAPI version: 3.4\n");
        assert_eq!(v, Some(Version::new(3, 4, 23)));
        assert_eq!(
            reported_version("etcdctl", "etcdutl version: 3.5.16\n"),
            None
        );
        assert_eq!(reported_version("etcdctl", "NAME:\n  etcdctl\n"), None);
    }
}
