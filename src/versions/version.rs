//! etcd version numbers: parsing, ordering, and reading them from `etcd --version`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A semantic version as etcd prints it (`3.5.16`, `3.6.0-rc.1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major number (3 for every supported etcd).
    pub major: u64,
    /// Minor number; the cluster version moves in these.
    pub minor: u64,
    /// Patch number.
    pub patch: u64,
    /// Pre-release tag without the dash (`rc.1`), if any.
    pub pre: Option<String>,
}

/// A string that is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a version number: {0:?} (expected X.Y.Z)")]
pub struct ParseVersionError(pub String);

impl Version {
    /// A release version with no pre-release tag.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
        }
    }

    /// `X.Y`, the granularity of etcd's cluster version.
    pub fn minor_version(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    /// Reads the server version from the output of `etcd --version`
    /// (`etcd Version: 3.5.16` on its first line).
    pub fn from_etcd_version_output(output: &str) -> Option<Self> {
        output
            .lines()
            .find_map(|line| line.trim().strip_prefix("etcd Version:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseVersionError(s.to_owned());
        let trimmed = s.trim().strip_prefix('v').unwrap_or(s.trim());
        let (core, pre) = match trimmed.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, Some(pre.to_owned())),
            Some(_) => return Err(err()),
            None => (trimmed, None),
        };
        let mut parts = core.split('.');
        let mut number = || -> Result<u64, ParseVersionError> {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let (major, minor, patch) = (number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(err());
        }
        if let Some(pre) = &pre {
            // Semver forbids leading zeros in numeric identifiers: `rc.01` would sort equal
            // to `rc.1` while comparing unequal, and `Ord` must agree with `Eq`.
            let valid = pre.split('.').all(|id| {
                let numeric = id.bytes().all(|b| b.is_ascii_digit());
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_alphanumeric())
                    && !(numeric && id.len() > 1 && id.starts_with('0'))
            });
            if !valid {
                return Err(err());
            }
        }
        Ok(Self {
            major,
            minor,
            patch,
            pre,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                // A pre-release sorts before its release.
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => cmp_pre(a, b),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Semver pre-release precedence: numeric identifiers numerically and below alphanumeric ones.
fn cmp_pre(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_etcd_versions() {
        assert_eq!(v("3.5.16"), Version::new(3, 5, 16));
        assert_eq!(v("v3.4.23"), Version::new(3, 4, 23));
        assert_eq!(v("3.6.0-rc.1").pre.as_deref(), Some("rc.1"));
        assert_eq!(v("3.6.0-rc.1").to_string(), "3.6.0-rc.1");
        // A zero alone is a number; leading zeros inside a word are letters.
        assert_eq!(v("3.6.0-alpha.0").pre.as_deref(), Some("alpha.0"));
        assert_eq!(v("3.6.0-rc.0a").pre.as_deref(), Some("rc.0a"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "3",
            "3.5",
            "3.5.x",
            "3.5.1.2",
            "3.5.1-",
            "a.b.c",
            "3..1",
            "3.5.1-r c",
            "+3.5.1",
            "3.6.0-rc.01",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_numerically_and_prereleases_first() {
        let mut list = [
            v("3.5.10"),
            v("3.5.9"),
            v("3.6.0"),
            v("3.6.0-rc.2"),
            v("3.6.0-rc.10"),
            v("3.6.0-alpha.0"),
            v("3.4.23"),
        ];
        list.sort();
        let sorted: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "3.4.23",
                "3.5.9",
                "3.5.10",
                "3.6.0-alpha.0",
                "3.6.0-rc.2",
                "3.6.0-rc.10",
                "3.6.0"
            ]
        );
    }

    #[test]
    fn reads_etcd_version_output() {
        let out = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\nGo OS/Arch: linux/amd64\n";
        assert_eq!(
            Version::from_etcd_version_output(out),
            Some(Version::new(3, 4, 23))
        );
        assert_eq!(
            Version::from_etcd_version_output("etcdctl version: 3.5.1"),
            None
        );
        assert_eq!(Version::from_etcd_version_output("hello"), None);
    }
}
