//! Key-value calls: range, put, delete and transactions (`etcdserverpb.KV`).
//!
//! The request and answer types are this module's own plain data (callers and their tests
//! build them without etcd-client); they are turned into etcd-client's messages at the call
//! and back, field by field, here.

use etcd_client::{
    Compare as PbCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn as PbTxn,
    TxnOp as PbTxnOp, TxnOpResponse as PbTxnOpResponse,
};

use super::client::{Client, Retry};
use super::error::EtcdError;

/// A key with its value and metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the key's creation (0: the key does not exist).
    pub create_revision: i64,
    /// Revision of the key's last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation.
    pub version: i64,
    /// The value.
    pub value: Vec<u8>,
    /// The lease the key is attached to (0: none).
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    key: Vec<u8>,
    range_end: Vec<u8>,
    limit: i64,
    revision: i64,
    serializable: bool,
    keys_only: bool,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The response header (its revision is the store revision of the read).
    pub header: ResponseHeader,
    /// The keys found (omitted by etcd when none).
    pub kvs: Vec<KeyValue>,
    /// How many keys are in the range (not limited by `limit`).
    pub count: i64,
    /// True when `limit` cut the answer short.
    pub more: bool,
}

/// A put request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutRequest {
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The response header (its revision is the put's revision).
    pub header: ResponseHeader,
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// A delete request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteRequest {
    key: Vec<u8>,
    range_end: Vec<u8>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The response header.
    pub header: ResponseHeader,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    Delete(DeleteRequest),
}

/// The answer to one operation of a transaction, in the order of the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// The answer to a [`TxnOp::Range`].
    Range(RangeResponse),
    /// The answer to a [`TxnOp::Put`].
    Put(PutResponse),
    /// The answer to a [`TxnOp::Delete`].
    Delete(DeleteResponse),
}

/// A transaction: if every compare holds, the `success` operations run, else the `failure`
/// ones, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<TxnOp>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
        self.call("range", Retry::Idempotent, self.request_timeout(), |rpc| {
            let (key, options) = request.to_pb();
            async move {
                let resp = Client::kv(&rpc).get(key, Some(options)).await?;
                Ok(RangeResponse::from_pb(&resp))
            }
        })
        .await
    }

    /// Reads a range of keys from the member at `endpoint` only (no failover: the answer is
    /// about that member's data).
    pub async fn range_of(
        &self,
        endpoint: &str,
        request: &RangeRequest,
    ) -> Result<RangeResponse, EtcdError> {
        self.call_endpoint(endpoint, "range", |rpc| {
            let (key, options) = request.to_pb();
            async move {
                let resp = Client::kv(&rpc).get(key, Some(options)).await?;
                Ok(RangeResponse::from_pb(&resp))
            }
        })
        .await
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
        self.call("put", Retry::Idempotent, self.request_timeout(), |rpc| {
            let request = request.clone();
            async move {
                let options = request.options();
                let resp = Client::kv(&rpc)
                    .put(request.key, request.value, Some(options))
                    .await?;
                Ok(PutResponse {
                    header: header(resp.header()),
                    prev_kv: resp.prev_key().map(KeyValue::from_pb),
                })
            }
        })
        .await
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
        self.call("delete", Retry::Idempotent, self.request_timeout(), |rpc| {
            let (key, options) = request.to_pb();
            async move {
                let resp = Client::kv(&rpc).delete(key, Some(options)).await?;
                Ok(DeleteResponse::from_pb(&resp))
            }
        })
        .await
    }

    /// Runs a transaction. It moves to another member only when it cannot have reached the
    /// first one; when its answer is lost, the error is [`EtcdError::OutcomeUnknown`] (read
    /// the keys back: a repeated compare-and-swap would report a conflict with itself).
    pub async fn txn(&self, txn: &Txn) -> Result<TxnResponse, EtcdError> {
        self.call(
            "transaction",
            Retry::AtMostOnce,
            self.request_timeout(),
            |rpc| {
                let request = txn.to_pb();
                async move {
                    let resp = Client::kv(&rpc).txn(request).await?;
                    Ok(TxnResponse {
                        header: header(resp.header()),
                        succeeded: resp.succeeded(),
                        responses: resp
                            .op_responses()
                            .iter()
                            .filter_map(TxnOpResponse::from_pb)
                            .collect(),
                    })
                }
            },
        )
        .await
    }
}

/// The response header every etcd answer carries (all zero when etcd sent none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The key-value store revision when the request was applied.
    pub revision: i64,
    /// The raft term when the request was applied.
    pub raft_term: u64,
}

/// A header from etcd-client's.
pub(crate) fn header(h: Option<&etcd_client::ResponseHeader>) -> ResponseHeader {
    h.map(|h| ResponseHeader {
        cluster_id: h.cluster_id(),
        member_id: h.member_id(),
        revision: h.revision(),
        raft_term: h.raft_term(),
    })
    .unwrap_or_default()
}

impl KeyValue {
    pub(crate) fn from_pb(kv: &etcd_client::KeyValue) -> Self {
        Self {
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
        }
    }
}

impl RangeRequest {
    fn to_pb(&self) -> (Vec<u8>, GetOptions) {
        let mut options = GetOptions::new()
            .with_limit(self.limit)
            .with_revision(self.revision);
        if !self.range_end.is_empty() {
            options = options.with_range(self.range_end.clone());
        }
        if self.serializable {
            options = options.with_serializable();
        }
        if self.keys_only {
            options = options.with_keys_only();
        }
        if self.count_only {
            options = options.with_count_only();
        }
        (self.key.clone(), options)
    }
}

impl RangeResponse {
    fn from_pb(resp: &etcd_client::GetResponse) -> Self {
        Self {
            header: header(resp.header()),
            kvs: resp.kvs().iter().map(KeyValue::from_pb).collect(),
            count: resp.count(),
            more: resp.more(),
        }
    }
}

impl PutRequest {
    fn options(&self) -> PutOptions {
        let mut options = PutOptions::new().with_lease(self.lease);
        if self.prev_kv {
            options = options.with_prev_key();
        }
        options
    }
}

impl DeleteRequest {
    fn to_pb(&self) -> (Vec<u8>, DeleteOptions) {
        let mut options = DeleteOptions::new();
        if !self.range_end.is_empty() {
            options = options.with_range(self.range_end.clone());
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        (self.key.clone(), options)
    }
}

impl DeleteResponse {
    fn from_pb(resp: &etcd_client::DeleteResponse) -> Self {
        Self {
            header: header(resp.header()),
            deleted: resp.deleted(),
            prev_kvs: resp.prev_kvs().iter().map(KeyValue::from_pb).collect(),
        }
    }
}

impl Compare {
    fn to_pb(&self) -> PbCompare {
        let op = match self.result {
            CompareResult::Equal => CompareOp::Equal,
            CompareResult::Greater => CompareOp::Greater,
            CompareResult::Less => CompareOp::Less,
            CompareResult::NotEqual => CompareOp::NotEqual,
        };
        let key = self.key.clone();
        let compare = match &self.target {
            CompareTarget::Version(v) => PbCompare::version(key, op, *v),
            CompareTarget::CreateRevision(v) => PbCompare::create_revision(key, op, *v),
            CompareTarget::ModRevision(v) => PbCompare::mod_revision(key, op, *v),
            CompareTarget::Value(v) => PbCompare::value(key, op, v.clone()),
            CompareTarget::Lease(v) => PbCompare::lease(key, op, *v),
        };
        if self.range_end.is_empty() {
            compare
        } else {
            compare.with_range(self.range_end.clone())
        }
    }
}

impl TxnOp {
    fn to_pb(&self) -> PbTxnOp {
        match self {
            TxnOp::Range(r) => {
                let (key, options) = r.to_pb();
                PbTxnOp::get(key, Some(options))
            }
            TxnOp::Put(p) => PbTxnOp::put(p.key.clone(), p.value.clone(), Some(p.options())),
            TxnOp::Delete(d) => {
                let (key, options) = d.to_pb();
                PbTxnOp::delete(key, Some(options))
            }
        }
    }
}

impl TxnOpResponse {
    fn from_pb(resp: &PbTxnOpResponse) -> Option<Self> {
        Some(match resp {
            PbTxnOpResponse::Get(r) => TxnOpResponse::Range(RangeResponse::from_pb(r)),
            PbTxnOpResponse::Put(r) => TxnOpResponse::Put(PutResponse {
                header: header(r.header()),
                prev_kv: r.prev_key().map(KeyValue::from_pb),
            }),
            PbTxnOpResponse::Delete(r) => TxnOpResponse::Delete(DeleteResponse::from_pb(r)),
            // This client sends no nested transactions.
            PbTxnOpResponse::Txn(_) => return None,
        })
    }
}

impl Txn {
    fn to_pb(&self) -> PbTxn {
        // etcd-client takes each list once.
        PbTxn::new()
            .when(self.compare.iter().map(Compare::to_pb).collect::<Vec<_>>())
            .and_then(self.success.iter().map(TxnOp::to_pb).collect::<Vec<_>>())
            .or_else(self.failure.iter().map(TxnOp::to_pb).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests;
