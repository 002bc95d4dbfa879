//! The records supervisors write under the key prefix, as types: what one supervisor
//! writes, another (possibly of the next or the previous release) reads.
//!
//! Compatibility rules, so a cluster can run mixed supervisor releases during a roll:
//! - Every JSON record carries `schema` ([`SCHEMA`] for this release). A record without it
//!   was written by the previous release and reads as schema 1.
//! - A newer schema may add fields and stop writing some; it never renames a field or
//!   changes its type. Readers ignore unknown fields and default missing ones, so an older
//!   supervisor reads a newer record as far as it understands it, and says so
//!   ([`Record::newer_schema`]) instead of failing.
//! - A record that is not JSON of the expected shape is a [`RecordError`], never a panic.

use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::versions::Version;

/// The schema this release writes.
pub const SCHEMA: u32 = 1;

/// Records written before `schema` existed are schema 1.
fn previous_release() -> u32 {
    1
}

/// A stored value that is not a record this release can read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable record: {0}")]
pub struct RecordError(#[from] serde_json::Error);

/// A JSON record under the key prefix.
pub trait Record: Serialize + DeserializeOwned {
    /// The schema it was written with.
    fn schema(&self) -> u32;

    /// Written by a newer supervisor: fields this release does not know were ignored, and
    /// fields that release no longer writes hold their defaults.
    fn newer_schema(&self) -> bool {
        self.schema() > SCHEMA
    }

    /// Reads a stored value.
    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// `members/<name>`: a supervisor's progress, rewritten on every state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Schema it was written with.
    #[serde(default = "previous_release")]
    pub schema: u32,
    /// The member's name.
    #[serde(default)]
    pub member: String,
    /// The version it runs (the known-good one during a turn).
    #[serde(default)]
    pub running: Option<Version>,
    /// The staged target, if any.
    #[serde(default)]
    pub staged: Option<Version>,
    /// The upgrade state name (`idle`, `queued`, ... `rolling-back`, `failed`); a string,
    /// because a newer supervisor may have states this one does not know.
    #[serde(default)]
    pub state: String,
    /// When it entered that state, RFC 3339 in seconds.
    #[serde(default)]
    pub since: Option<String>,
    /// Why the last attempt did not go through.
    #[serde(default)]
    pub last_error: Option<String>,
    /// What vetting the staged version before the queue found (flags, v2 store, dress
    /// rehearsal), one line. Added in schema 1 by a later release; older readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vetting: Option<String>,
    /// The member's advertised client URLs: how a learner's supervisor, to which etcd
    /// refuses the member list, finds the voting members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// Why a queued member does not start its turn yet (the cluster is paused, or outside
    /// the maintenance windows), one line; absent when nothing holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// A staged version the member is vetting before it queues: a leader waiting to go last
    /// counts it as waiting for that version. Added in schema 1 by a later release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Version>,
}

impl MemberRecord {
    /// This release's record of `member`'s progress.
    pub fn new(
        member: &str,
        running: &Version,
        staged: Option<&Version>,
        state: &str,
        since: SystemTime,
        last_error: Option<&str>,
    ) -> Self {
        Self {
            schema: SCHEMA,
            member: member.to_owned(),
            running: Some(running.clone()),
            staged: staged.cloned(),
            state: state.to_owned(),
            since: Some(rfc3339(since)),
            last_error: last_error.map(str::to_owned),
            vetting: None,
            client_urls: Vec::new(),
            held: None,
            candidate: None,
        }
    }

    /// The value to store.
    pub fn encode(&self) -> String {
        to_json(self)
    }
}

impl Record for MemberRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// `rejected/<version>`: a version that failed on a member, refused by every supervisor
/// until an operator deletes the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionRecord {
    /// Schema it was written with.
    #[serde(default = "previous_release")]
    pub schema: u32,
    /// The member on which it failed.
    #[serde(default)]
    pub member: String,
    /// Why it was rolled back.
    #[serde(default)]
    pub reason: String,
    /// When, RFC 3339 in seconds.
    #[serde(default)]
    pub time: Option<String>,
}

impl RejectionRecord {
    /// This release's record of a rejection on `member` at `time`.
    pub fn new(member: &str, reason: &str, time: SystemTime) -> Self {
        Self {
            schema: SCHEMA,
            member: member.to_owned(),
            reason: reason.to_owned(),
            time: Some(rfc3339(time)),
        }
    }

    /// The value to store.
    pub fn encode(&self) -> String {
        to_json(self)
    }
}

impl Record for RejectionRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// `pause`: upgrades are paused cluster-wide; who paused them, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    /// Schema it was written with.
    #[serde(default = "previous_release")]
    pub schema: u32,
    /// The user who ran `etcd-supervisor pause`.
    #[serde(default)]
    pub user: String,
    /// The host it ran on.
    #[serde(default)]
    pub host: String,
    /// When, RFC 3339 in seconds.
    #[serde(default)]
    pub time: Option<String>,
    /// `--reason`, when given.
    #[serde(default)]
    pub reason: Option<String>,
}

impl PauseRecord {
    /// This release's pause by `user` on `host` at `time`.
    pub fn new(user: &str, host: &str, time: SystemTime, reason: Option<&str>) -> Self {
        Self {
            schema: SCHEMA,
            user: user.to_owned(),
            host: host.to_owned(),
            time: Some(rfc3339(time)),
            reason: reason.map(str::to_owned),
        }
    }

    /// The value to store.
    pub fn encode(&self) -> String {
        to_json(self)
    }

    /// One line: `paused by USER@HOST at TIME: REASON`.
    pub fn describe(&self) -> String {
        let who = match (self.user.as_str(), self.host.as_str()) {
            ("", "") => "someone".to_owned(),
            (user, "") => user.to_owned(),
            ("", host) => format!("someone on {host}"),
            (user, host) => format!("{user}@{host}"),
        };
        let when = self
            .time
            .as_deref()
            .map_or(String::new(), |t| format!(" at {t}"));
        let why = self
            .reason
            .as_deref()
            .map_or(" (no reason given)".to_owned(), |r| format!(": {r}"));
        format!("paused by {who}{when}{why}")
    }
}

impl Record for PauseRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// `lock/owners/<lease hex>`: who holds or waits for the upgrade lock with that lease.
///
/// Stored as the bare member name, as the previous release writes and reads it, so `status`
/// of either release names holders right during a roll. A JSON object with `member` (and
/// `schema`) is read too, so a later release may move to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// Schema it was written with.
    #[serde(default = "previous_release")]
    pub schema: u32,
    /// The member's name.
    #[serde(default)]
    pub member: String,
}

impl OwnerRecord {
    /// This release's owner record for `member`.
    pub fn new(member: &str) -> Self {
        Self {
            schema: SCHEMA,
            member: member.to_owned(),
        }
    }

    /// The value to store: the bare member name.
    pub fn encode(&self) -> String {
        self.member.clone()
    }

    /// Reads a stored value: a JSON object, or else the bare name.
    pub fn decode(bytes: &[u8]) -> Self {
        if bytes.trim_ascii_start().starts_with(b"{") {
            if let Ok(record) = serde_json::from_slice::<OwnerRecord>(bytes) {
                return record;
            }
        }
        Self {
            schema: previous_release(),
            member: String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    /// Written by a newer supervisor.
    pub fn newer_schema(&self) -> bool {
        self.schema > SCHEMA
    }
}

/// A stored record as read: the record, or the raw value when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored<T> {
    /// Read (possibly from a newer schema; see [`Record::newer_schema`]).
    Read(T),
    /// Not readable by this release; kept to show as it is.
    Unreadable {
        /// The stored value, lossily as text.
        raw: String,
        /// Why it could not be read.
        error: String,
    },
}

impl<T: Record> Stored<T> {
    /// Reads a stored value; never fails.
    pub fn decode(bytes: &[u8]) -> Self {
        match T::decode(bytes) {
            Ok(record) => Self::Read(record),
            Err(e) => Self::Unreadable {
                raw: String::from_utf8_lossy(bytes).into_owned(),
                error: e.to_string(),
            },
        }
    }

    /// The record, when it could be read.
    pub fn record(&self) -> Option<&T> {
        match self {
            Self::Read(record) => Some(record),
            Self::Unreadable { .. } => None,
        }
    }
}

/// The record's own JSON; an unreadable value as the text it holds.
impl<T: Serialize> Serialize for Stored<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Read(record) => record.serialize(s),
            Self::Unreadable { raw, .. } => s.serialize_str(raw),
        }
    }
}

fn to_json(record: &impl Serialize) -> String {
    // Structs of strings, numbers and options always serialize.
    serde_json::to_string(record).unwrap_or_default()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn the_previous_releases_member_record_reads_as_schema_1() {
        // Exactly what the previous release's publish() wrote (serde_json::json!).
        let old = r#"{"last_error":null,"member":"m2","running":"3.4.23","since":"2026-11-29T10:00:00Z","staged":"3.5.16","state":"queued"}"#;
        let record = MemberRecord::decode(old.as_bytes()).unwrap();
        assert_eq!(
            record,
            MemberRecord {
                schema: 1,
                member: "m2".into(),
                running: Some(v("3.4.23")),
                staged: Some(v("3.5.16")),
                state: "queued".into(),
                since: Some("2026-11-29T10:00:00Z".into()),
                last_error: None,
                vetting: None,
                client_urls: Vec::new(),
                held: None,
                candidate: None,
            }
        );
        assert!(!record.newer_schema());
    }

    #[test]
    fn the_previous_releases_rejection_reads_as_schema_1() {
        let old = r#"{"member":"m1","reason":"etcd 3.5.16 exited (code 2)","time":"2026-11-29T10:00:00Z"}"#;
        let record = RejectionRecord::decode(old.as_bytes()).unwrap();
        assert_eq!(record.schema, 1);
        assert_eq!(record.member, "m1");
        assert_eq!(record.reason, "etcd 3.5.16 exited (code 2)");
        assert_eq!(record.time.as_deref(), Some("2026-11-29T10:00:00Z"));
        assert!(!record.newer_schema());
    }

    #[test]
    fn a_newer_schema_is_read_as_far_as_known_and_flagged() {
        // Schema 2 adds fields and no longer writes `since` and `staged`.
        let newer = r#"{"schema":2,"member":"m3","running":"3.6.1","state":"draining",
            "last_error":null,"host":"db3","attempts":[1,2],"detail":{"x":1}}"#;
        let record = MemberRecord::decode(newer.as_bytes()).unwrap();
        assert_eq!(record.schema, 2);
        assert!(record.newer_schema());
        assert_eq!(record.member, "m3");
        assert_eq!(record.running, Some(v("3.6.1")));
        assert_eq!(record.state, "draining");
        assert_eq!(record.staged, None);
        assert_eq!(record.since, None);

        let newer = r#"{"schema":7,"reason":"corrupt","by":"operator"}"#;
        let record = RejectionRecord::decode(newer.as_bytes()).unwrap();
        assert!(record.newer_schema());
        assert_eq!(record.reason, "corrupt");
        assert_eq!(record.member, "");
        assert_eq!(record.time, None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let not_records: [&[u8]; 7] = [
            b"",
            b"not json",
            b"{\"member\":",
            b"42",
            b"[\"m1\"]",
            b"{\"schema\":-1}",
            &[0xff, 0xfe, 0x00],
        ];
        for garbage in not_records {
            assert!(MemberRecord::decode(garbage).is_err(), "{garbage:?}");
            assert!(RejectionRecord::decode(garbage).is_err(), "{garbage:?}");
            let stored = Stored::<MemberRecord>::decode(garbage);
            assert!(
                matches!(&stored, Stored::Unreadable { error, .. } if error.starts_with("unreadable record")),
                "{stored:?}"
            );
            assert_eq!(stored.record(), None);
        }
        // A known field of the wrong type is not silently defaulted.
        for wrong in [&b"{\"running\":\"three point five\"}"[..], b"{\"state\":7}"] {
            assert!(MemberRecord::decode(wrong).is_err(), "{wrong:?}");
        }
        assert!(RejectionRecord::decode(b"{\"reason\":[]}").is_err());
    }

    #[test]
    fn what_this_release_writes_reads_back_with_its_schema() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let record = MemberRecord::new(
            "m1",
            &v("3.4.23"),
            Some(&v("3.5.16")),
            "verifying",
            since,
            Some("it failed once"),
        );
        let json: serde_json::Value = serde_json::from_str(&record.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema": 1, "member": "m1", "running": "3.4.23", "staged": "3.5.16",
                "state": "verifying", "since": "2027-01-15T08:00:00Z",
                "last_error": "it failed once",
            })
        );
        assert_eq!(
            MemberRecord::decode(record.encode().as_bytes()).unwrap(),
            record
        );

        let rejection = RejectionRecord::new("m2", "did not come up", since);
        let json: serde_json::Value = serde_json::from_str(&rejection.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema": 1, "member": "m2", "reason": "did not come up",
                "time": "2027-01-15T08:00:00Z",
            })
        );
        assert_eq!(
            RejectionRecord::decode(rejection.encode().as_bytes()).unwrap(),
            rejection
        );
    }

    #[test]
    fn a_pause_record_says_who_when_and_why_and_reads_back() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let pause = PauseRecord::new("alice", "db1", time, Some("investigating #42"));
        let json: serde_json::Value = serde_json::from_str(&pause.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema": 1, "user": "alice", "host": "db1",
                "time": "2027-01-15T08:00:00Z", "reason": "investigating #42",
            })
        );
        assert_eq!(
            PauseRecord::decode(pause.encode().as_bytes()).unwrap(),
            pause
        );
        assert_eq!(
            pause.describe(),
            "paused by alice@db1 at 2027-01-15T08:00:00Z: investigating #42"
        );
        let bare = PauseRecord::decode(b"{}").unwrap();
        assert_eq!(bare.describe(), "paused by someone (no reason given)");
        assert!(PauseRecord::decode(b"paused").is_err());
    }

    #[test]
    fn owner_records_are_bare_names_and_read_a_later_json_form() {
        assert_eq!(OwnerRecord::new("m1").encode(), "m1");
        assert_eq!(OwnerRecord::decode(b"m1"), OwnerRecord::new("m1"));
        let later = OwnerRecord::decode(br#"{"schema":2,"member":"m3","host":"db3"}"#);
        assert_eq!(later.member, "m3");
        assert!(later.newer_schema());
        // A name that merely looks like JSON stays a name.
        assert_eq!(OwnerRecord::decode(b"{odd").member, "{odd");
        assert_eq!(OwnerRecord::decode(&[0xff]).member, "\u{fffd}");
    }

    #[test]
    fn stored_records_show_as_their_json_and_unreadable_ones_as_text() {
        let read = Stored::<RejectionRecord>::decode(br#"{"member":"m1","reason":"r"}"#);
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::json!({"schema": 1, "member": "m1", "reason": "r", "time": null})
        );
        let garbage = Stored::<RejectionRecord>::decode(b"oops");
        assert_eq!(
            serde_json::to_value(&garbage).unwrap(),
            serde_json::json!("oops")
        );
    }
}
