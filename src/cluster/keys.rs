//! Every key the supervisor uses under its key prefix (default `/etcd-supervisor/`), built
//! and parsed back in one place.
//!
//! The key strings are a contract between supervisors on different hosts, including
//! supervisors of different releases during a package roll, and with operators (who delete
//! `rejected/<version>` by hand): they never change.
//!
//! | key                          | what                                              |
//! |------------------------------|---------------------------------------------------|
//! | `lock/upgrade`               | etcd's v3 lock (its keys are `lock/upgrade/<lease hex>`) |
//! | `lock/owners/<lease hex>`    | the member name of a holder or waiter, on its lease |
//! | `members/<name>`             | a member's progress record                         |
//! | `rejected/<version>`         | a version rejected for the whole cluster           |
//! | `pause`                      | upgrades paused cluster-wide (`etcd-supervisor pause`) |
//! | `consistency/alarm`          | members' stores differed after a rollout; no turn until deleted |
//! | `downgrade`                  | a downgrade started by `etcd-supervisor downgrade` (target, from, enabled or cancelled) |

use crate::versions::Version;

const MEMBERS: &str = "members/";
const REJECTED: &str = "rejected/";
const LOCK: &str = "lock/upgrade";
const OWNERS: &str = "lock/owners/";
const PAUSE: &str = "pause";
const INCONSISTENCY: &str = "consistency/alarm";
const DOWNGRADE: &str = "downgrade";

/// The keys under one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A key under the prefix, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `members/<name>`.
    Member(String),
    /// `rejected/<version>`.
    Rejected(Version),
    /// The lock itself or one of its holder/waiter keys (`lock/upgrade[/<lease hex>]`).
    Lock,
    /// `lock/owners/<lease hex>`.
    Owner(i64),
    /// `pause`.
    Pause,
}

impl Keys {
    /// The keys under `prefix` (used verbatim: `/etcd-supervisor/` ends in a slash).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn under(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// `members/<name>`: the member's progress record.
    pub fn member(&self, name: &str) -> String {
        self.under(&format!("{MEMBERS}{name}"))
    }

    /// Prefix of every progress record.
    pub fn members_prefix(&self) -> String {
        self.under(MEMBERS)
    }

    /// `rejected/<version>`: the version is rejected for the whole cluster.
    pub fn rejected(&self, version: &Version) -> String {
        self.under(&format!("{REJECTED}{version}"))
    }

    /// `consistency/alarm`: the members' stores differed after a rollout; no upgrade
    /// turn is taken while it exists.
    pub fn inconsistency(&self) -> String {
        self.under(INCONSISTENCY)
    }

    /// Prefix of every rejection.
    pub fn rejected_prefix(&self) -> String {
        self.under(REJECTED)
    }

    /// The lock's name, as given to etcd's lock service.
    pub fn lock(&self) -> String {
        self.under(LOCK)
    }

    /// Prefix of the keys etcd's lock service creates for holder and waiters.
    pub fn lock_keys_prefix(&self) -> String {
        self.under(&format!("{LOCK}/"))
    }

    /// Prefix of the owner records.
    pub fn owners_prefix(&self) -> String {
        self.under(OWNERS)
    }

    /// `lock/owners/<lease hex>`: who holds or waits with `lease`.
    pub fn owner(&self, lease: i64) -> String {
        self.under(&format!("{OWNERS}{lease:x}"))
    }

    /// `pause`: while it exists no member starts a new turn.
    pub fn pause(&self) -> String {
        self.under(PAUSE)
    }

    /// `downgrade`: the downgrade `etcd-supervisor downgrade` started, while it runs.
    pub fn downgrade(&self) -> String {
        self.under(DOWNGRADE)
    }

    /// What `key` is, or `None` when it is not one of ours (outside the prefix, unknown,
    /// or with a part that does not parse).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if let Some(name) = rest.strip_prefix(MEMBERS) {
            return (!name.is_empty()).then(|| Key::Member(name.to_owned()));
        }
        if let Some(version) = rest.strip_prefix(REJECTED) {
            return version.parse().ok().map(Key::Rejected);
        }
        if let Some(lease) = rest.strip_prefix(OWNERS) {
            return i64::from_str_radix(lease, 16).ok().map(Key::Owner);
        }
        if rest == PAUSE {
            return Some(Key::Pause);
        }
        if rest == LOCK || rest.starts_with(&format!("{LOCK}/")) {
            return Some(Key::Lock);
        }
        None
    }

    /// The member name of a `members/<name>` key.
    pub fn member_name(&self, key: &[u8]) -> Option<String> {
        match self.parse(key)? {
            Key::Member(name) => Some(name),
            _ => None,
        }
    }

    /// The version of a `rejected/<version>` key.
    pub fn rejected_version(&self, key: &[u8]) -> Option<Version> {
        match self.parse(key)? {
            Key::Rejected(version) => Some(version),
            _ => None,
        }
    }

    /// The lease of a `lock/owners/<lease hex>` key.
    pub fn owner_lease(&self, key: &[u8]) -> Option<i64> {
        match self.parse(key)? {
            Key::Owner(lease) => Some(lease),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("/etcd-supervisor/")
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn the_key_strings_are_the_documented_contract() {
        let k = keys();
        assert_eq!(k.member("m1"), "/etcd-supervisor/members/m1");
        assert_eq!(k.members_prefix(), "/etcd-supervisor/members/");
        assert_eq!(k.rejected(&v("3.5.16")), "/etcd-supervisor/rejected/3.5.16");
        assert_eq!(
            k.rejected(&v("3.6.0-rc.1")),
            "/etcd-supervisor/rejected/3.6.0-rc.1"
        );
        assert_eq!(k.rejected_prefix(), "/etcd-supervisor/rejected/");
        assert_eq!(k.lock(), "/etcd-supervisor/lock/upgrade");
        assert_eq!(k.pause(), "/etcd-supervisor/pause");
        assert_eq!(k.lock_keys_prefix(), "/etcd-supervisor/lock/upgrade/");
        assert_eq!(k.owners_prefix(), "/etcd-supervisor/lock/owners/");
        assert_eq!(
            k.owner(0x22b7_a209_d68c_1f23),
            "/etcd-supervisor/lock/owners/22b7a209d68c1f23"
        );
    }

    #[test]
    fn every_built_key_parses_back() {
        let k = keys();
        assert_eq!(
            k.parse(k.member("m-1.a").as_bytes()),
            Some(Key::Member("m-1.a".into()))
        );
        assert_eq!(
            k.parse(k.rejected(&v("3.5.16")).as_bytes()),
            Some(Key::Rejected(v("3.5.16")))
        );
        assert_eq!(
            k.parse(k.owner(0x7f00_0000_0000_0001).as_bytes()),
            Some(Key::Owner(0x7f00_0000_0000_0001))
        );
        assert_eq!(k.parse(k.lock().as_bytes()), Some(Key::Lock));
        assert_eq!(k.parse(k.pause().as_bytes()), Some(Key::Pause));
        assert_eq!(
            k.parse(format!("{}694d8a1b", k.lock_keys_prefix()).as_bytes()),
            Some(Key::Lock)
        );
        assert_eq!(
            k.member_name(k.member("m2").as_bytes()).as_deref(),
            Some("m2")
        );
        assert_eq!(
            k.rejected_version(k.rejected(&v("3.4.23")).as_bytes()),
            Some(v("3.4.23"))
        );
        assert_eq!(k.owner_lease(k.owner(42).as_bytes()), Some(42));
    }

    #[test]
    fn foreign_and_malformed_keys_are_not_ours() {
        let k = keys();
        for key in [
            "/other/members/m1",
            "/etcd-supervisor/members/",
            "/etcd-supervisor/rejected/not-a-version",
            "/etcd-supervisor/lock/owners/xyz",
            "/etcd-supervisor/lock/upgraded",
            "/etcd-supervisor/something",
            "/etcd-supervisor/paused",
        ] {
            assert_eq!(k.parse(key.as_bytes()), None, "{key}");
        }
        assert_eq!(k.parse(&[0xff, 0xfe]), None);
        assert_eq!(k.member_name(k.rejected(&v("3.5.16")).as_bytes()), None);
    }

    #[test]
    fn another_prefix_is_used_verbatim() {
        let k = Keys::new("/prod/sup/");
        assert_eq!(k.member("m1"), "/prod/sup/members/m1");
        assert_eq!(k.prefix(), "/prod/sup/");
        assert_eq!(keys().parse(k.member("m1").as_bytes()), None);
    }
}
