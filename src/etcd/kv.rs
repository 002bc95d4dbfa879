//! Key-value calls: range, put, delete and transactions (`/v3/kv/...`).
//!
//! Requests serialize exactly the field names etcd expects; etcd ignores misspelt fields
//! silently, so the integration tests check effects. Compare results and targets are written
//! as the upper-case enum names that 3.4 requires (`"EQUAL"`, `"CREATE"`, ...).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::client::{Client, Retry};
use super::error::EtcdError;
use super::wire::{b64, int, is_false, is_zero, ResponseHeader};

/// A key with its value and metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    /// Revision of the key's creation (0: the key does not exist).
    #[serde(with = "int")]
    pub create_revision: i64,
    /// Revision of the key's last modification.
    #[serde(with = "int")]
    pub mod_revision: i64,
    /// Number of modifications since creation.
    #[serde(with = "int")]
    pub version: i64,
    /// The value.
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// The lease the key is attached to (0: none).
    #[serde(with = "int")]
    pub lease: i64,
}

/// The end of the range holding every key that starts with `prefix`: the prefix with its
/// last byte below 0xff incremented. `[0]` (every key from the start key on) when there is
/// no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A range (read) request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RangeRequest {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    range_end: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    limit: i64,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    revision: i64,
    #[serde(skip_serializing_if = "is_false")]
    serializable: bool,
    #[serde(skip_serializing_if = "is_false")]
    keys_only: bool,
    #[serde(skip_serializing_if = "is_false")]
    count_only: bool,
}

impl RangeRequest {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Every key starting with `prefix` (every key at all for an empty prefix).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Self {
                key: vec![0],
                range_end: vec![0],
                ..Self::default()
            };
        }
        Self {
            range_end: prefix_end(&prefix),
            key: prefix,
            ..Self::default()
        }
    }

    /// At most `limit` keys (0: no limit).
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Read at this revision (0: the newest).
    pub fn revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Answer from the member's local state without a quorum round trip (may be stale).
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    /// Keys without values.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Only the count.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// The answer to a range request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    /// The response header (its revision is the store revision of the read).
    pub header: ResponseHeader,
    /// The keys found (omitted by etcd when none).
    pub kvs: Vec<KeyValue>,
    /// How many keys are in the range (not limited by `limit`).
    #[serde(with = "int")]
    pub count: i64,
    /// True when `limit` cut the answer short.
    pub more: bool,
}

/// A put request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutRequest {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(with = "b64")]
    value: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    lease: i64,
    #[serde(skip_serializing_if = "is_false")]
    prev_kv: bool,
}

impl PutRequest {
    /// Sets `key` to `value`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    /// Attaches the key to a lease: it is deleted when the lease ends.
    pub fn lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    /// Return the previous key-value.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// The answer to a put.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    /// The response header (its revision is the put's revision).
    pub header: ResponseHeader,
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// A delete request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteRequest {
    #[serde(with = "b64")]
    key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    range_end: Vec<u8>,
    #[serde(skip_serializing_if = "is_false")]
    prev_kv: bool,
}

impl DeleteRequest {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Every key starting with `prefix` (refuses nothing: an empty prefix is every key).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let range = RangeRequest::prefix(prefix);
        Self {
            key: range.key,
            range_end: range.range_end,
            prev_kv: false,
        }
    }

    /// Return the deleted key-values.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// The answer to a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeleteResponse {
    /// The response header.
    pub header: ResponseHeader,
    /// How many keys were deleted.
    #[serde(with = "int")]
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// Which field of the key a compare looks at, and the value to compare it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version (number of modifications; 0 when absent).
    Version(i64),
    /// The key's create revision (0 when absent).
    CreateRevision(i64),
    /// The key's mod revision.
    ModRevision(i64),
    /// The key's value.
    Value(Vec<u8>),
    /// The key's lease.
    Lease(i64),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    key: Vec<u8>,
    range_end: Vec<u8>,
    result: CompareResult,
    target: CompareTarget,
}

impl Compare {
    /// A compare of `key`'s `target` field with `result`.
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Self {
            key: key.into(),
            range_end: Vec::new(),
            result,
            target,
        }
    }

    /// True when `key` does not exist (its create revision is 0).
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareResult::Equal, CompareTarget::CreateRevision(0))
    }

    /// Compares `key`'s mod revision (compare-and-swap on a revision read before).
    pub fn mod_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: i64) -> Self {
        Self::new(key, result, CompareTarget::ModRevision(revision))
    }

    /// Compares `key`'s create revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: i64) -> Self {
        Self::new(key, result, CompareTarget::CreateRevision(revision))
    }

    /// Compares `key`'s version.
    pub fn version(key: impl Into<Vec<u8>>, result: CompareResult, version: i64) -> Self {
        Self::new(key, result, CompareTarget::Version(version))
    }

    /// Compares `key`'s value.
    pub fn value(
        key: impl Into<Vec<u8>>,
        result: CompareResult,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        Self::new(key, result, CompareTarget::Value(value.into()))
    }

    /// Compares `key`'s lease.
    pub fn lease(key: impl Into<Vec<u8>>, result: CompareResult, lease: i64) -> Self {
        Self::new(key, result, CompareTarget::Lease(lease))
    }

    /// Applies the compare to every key in `[key, range_end)`.
    pub fn with_range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
        self.range_end = range_end.into();
        self
    }
}

impl Serialize for Compare {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine as _;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("key", &STANDARD.encode(&self.key))?;
        if !self.range_end.is_empty() {
            map.serialize_entry("range_end", &STANDARD.encode(&self.range_end))?;
        }
        map.serialize_entry("result", &self.result)?;
        // The target and the matching `target_union` field; the value is always written,
        // even when 0 (a create_revision of "0" is how "absent" is said).
        match &self.target {
            CompareTarget::Version(v) => {
                map.serialize_entry("target", "VERSION")?;
                map.serialize_entry("version", &v.to_string())?;
            }
            CompareTarget::CreateRevision(v) => {
                map.serialize_entry("target", "CREATE")?;
                map.serialize_entry("create_revision", &v.to_string())?;
            }
            CompareTarget::ModRevision(v) => {
                map.serialize_entry("target", "MOD")?;
                map.serialize_entry("mod_revision", &v.to_string())?;
            }
            CompareTarget::Value(v) => {
                map.serialize_entry("target", "VALUE")?;
                map.serialize_entry("value", &STANDARD.encode(v))?;
            }
            CompareTarget::Lease(v) => {
                map.serialize_entry("target", "LEASE")?;
                map.serialize_entry("lease", &v.to_string())?;
            }
        }
        map.end()
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TxnOp {
    /// A read.
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    /// A write.
    #[serde(rename = "request_put")]
    Put(PutRequest),
    /// A delete.
    #[serde(rename = "request_delete_range")]
    Delete(DeleteRequest),
}

/// The answer to one operation of a transaction, in the order of the operations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum TxnOpResponse {
    /// The answer to a [`TxnOp::Range`].
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    /// The answer to a [`TxnOp::Put`].
    #[serde(rename = "response_put")]
    Put(PutResponse),
    /// The answer to a [`TxnOp::Delete`].
    #[serde(rename = "response_delete_range")]
    Delete(DeleteResponse),
}

/// A transaction: if every compare holds, the `success` operations run, else the `failure`
/// ones, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Txn {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    compare: Vec<Compare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    success: Vec<TxnOp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The conditions (all must hold).
    pub fn when(mut self, compare: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    /// The operations when every condition holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// The operations when a condition fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The answer to a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    /// The response header.
    pub header: ResponseHeader,
    /// True when every compare held (etcd omits the field when false).
    pub succeeded: bool,
    /// The answers of the operations that ran.
    pub responses: Vec<TxnOpResponse>,
}

impl Client {
    /// Reads a range of keys.
    pub async fn range(&self, request: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.call("/v3/kv/range", request, Retry::Idempotent).await
    }

    /// Reads one key; `None` when it does not exist.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, EtcdError> {
        let resp = self.range(&RangeRequest::key(key)).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Reads every key starting with `prefix`.
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<RangeResponse, EtcdError> {
        self.range(&RangeRequest::prefix(prefix)).await
    }

    /// Sets `key` to `value`, attached to `lease` when given.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: Option<i64>,
    ) -> Result<PutResponse, EtcdError> {
        let request = PutRequest::new(key, value).lease(lease.unwrap_or(0));
        self.put_with(&request).await
    }

    /// A put with every option. Repeated on another member when the first one fails (a put
    /// of the same value twice leaves the same value).
    pub async fn put_with(&self, request: &PutRequest) -> Result<PutResponse, EtcdError> {
        self.call("/v3/kv/put", request, Retry::Idempotent).await
    }

    /// Deletes one key.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteResponse, EtcdError> {
        self.delete_range(&DeleteRequest::key(key)).await
    }

    /// Deletes every key starting with `prefix`.
    pub async fn delete_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<DeleteResponse, EtcdError> {
        self.delete_range(&DeleteRequest::prefix(prefix)).await
    }

    /// A delete with every option.
    pub async fn delete_range(&self, request: &DeleteRequest) -> Result<DeleteResponse, EtcdError> {
        self.call("/v3/kv/deleterange", request, Retry::Idempotent)
            .await
    }

    /// Runs a transaction. It moves to another member only when it cannot have reached the
    /// first one; when its answer is lost, the error is [`EtcdError::OutcomeUnknown`] (read
    /// the keys back: a repeated compare-and-swap would report a conflict with itself).
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResponse, EtcdError> {
        self.call("/v3/kv/txn", txn, Retry::AtMostOnce).await
    }
}

#[cfg(test)]
mod tests;
