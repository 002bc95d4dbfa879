//! What a turn backs up before it stops the member.

use std::fmt;
use std::str::FromStr;

/// How a turn backs up the member before stopping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    /// A snapshot through the API (always consistent, etcd keeps running).
    Snapshot,
    /// A snapshot plus a cold copy of the data dir while etcd is stopped.
    Both,
    /// Only the cold data-dir copy (still verified).
    DataDir,
}

impl BackupMode {
    /// Every mode by its command-line name, for `--backup`'s help and parser.
    pub const NAMES: [&'static str; 3] = ["snapshot", "both", "data-dir"];

    /// The command-line name (`data-dir`).
    pub fn name(self) -> &'static str {
        match self {
            BackupMode::Snapshot => "snapshot",
            BackupMode::Both => "both",
            BackupMode::DataDir => "data-dir",
        }
    }
}

impl fmt::Display for BackupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Not one of [`BackupMode::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backup mode {0:?} (expected snapshot, both or data-dir)")]
pub struct UnknownBackupMode(pub String);

impl FromStr for BackupMode {
    type Err = UnknownBackupMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "snapshot" => Ok(BackupMode::Snapshot),
            "both" => Ok(BackupMode::Both),
            "data-dir" => Ok(BackupMode::DataDir),
            other => Err(UnknownBackupMode(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for name in BackupMode::NAMES {
            assert_eq!(name.parse::<BackupMode>().unwrap().name(), name);
        }
        assert!("data_dir".parse::<BackupMode>().is_err());
    }
}
