//! The JSON encoding of etcd's gateway: int64 fields as strings, bytes as base64, the
//! response header, and reading error bodies.
//!
//! etcd's gateway (grpc-gateway with jsonpb) writes 64-bit integers as JSON strings and
//! accepts strings or numbers; it omits zero, false and empty fields; it ignores unknown
//! fields. Every response field here is therefore `#[serde(default)]`, every integer goes
//! through [`int`], and every byte string through [`b64`] (std alphabet, padded).

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};
use serde_json::Value;

/// The header every etcd response carries (3.4's alarm list has none: all fields default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[serde(with = "int")]
    pub cluster_id: u64,
    /// The id of the member that answered.
    #[serde(with = "int")]
    pub member_id: u64,
    /// The key-value store revision when the request was applied.
    #[serde(with = "int")]
    pub revision: i64,
    /// The raft term when the request was applied.
    #[serde(with = "int")]
    pub raft_term: u64,
}

/// Integers as etcd writes them: serialized as a JSON string, read from a string or a number.
/// `null` reads as zero.
pub mod int {
    use super::*;

    /// Writes the integer as a JSON string (`"42"`), which every etcd version accepts.
    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    /// Reads a JSON string or number into `T`.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + TryFrom<i64> + TryFrom<u64> + Default,
        <T as FromStr>::Err: Display,
        D: Deserializer<'de>,
    {
        d.deserialize_any(IntVisitor(PhantomData))
    }

    struct IntVisitor<T>(PhantomData<T>);

    impl<'de, T> Visitor<'de> for IntVisitor<T>
    where
        T: FromStr + TryFrom<i64> + TryFrom<u64> + Default,
        <T as FromStr>::Err: Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer as a JSON string or number")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.trim()
                .parse()
                .map_err(|e| E::custom(format!("integer {v:?}: {e}")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            // A float with no fraction (`4.0`) is still an integer; anything else is an error.
            if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
                // Exact for |v| < 2^53, checked above.
                #[allow(clippy::cast_possible_truncation)]
                return self.visit_i64(v as i64);
            }
            Err(E::custom(format!("{v} is not an integer")))
        }

        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }

        fn visit_none<E: de::Error>(self) -> Result<T, E> {
            Ok(T::default())
        }
    }
}

/// Byte strings as base64 (std alphabet, padded); `null` reads as empty.
pub mod b64 {
    use super::*;

    /// Writes the bytes as a base64 string.
    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(value))
    }

    /// Reads a base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(Vec::new()),
            Some(t) => decode(&t).map_err(de::Error::custom),
        }
    }

    /// Decodes one base64 string, with an error that says what was wrong.
    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(text.trim())
            .map_err(|e| format!("invalid base64 ({e})"))
    }
}

/// A list of byte strings, each base64.
pub mod b64_list {
    use super::*;

    /// Reads a JSON array of base64 strings; `null` reads as empty.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let items: Option<Vec<String>> = Option::deserialize(d)?;
        items
            .unwrap_or_default()
            .iter()
            .map(|t| b64::decode(t).map_err(de::Error::custom))
            .collect()
    }
}

/// `skip_serializing_if` helper for integer fields that etcd treats as absent when zero.
pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `skip_serializing_if` helper for `false` flags.
pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

/// An error as etcd's gateway reports it in a body, whatever the version:
/// - 3.4.23: `{"error":"..","message":"..","code":3}`
/// - 3.5.1: `{"error":"..","code":3,"message":".."}`
/// - 3.5.30: `{"code":3, "message":".."}` (no `error` field)
/// - a stream's error line: `{"error":{"grpc_code":14,"http_code":503,"message":"..",..}}`
///   (some versions write `code` instead of `grpc_code` inside)
///
/// Returns `None` when the value is not an error body. The HTTP status is never consulted:
/// it differs between versions for the same error.
pub(crate) fn api_error(value: &Value) -> Option<(i32, String)> {
    let obj = value.as_object()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    if let Some(code) = obj.get("code").and_then(as_code) {
        let message = text(obj.get("message"))
            .filter(|m| !m.is_empty())
            .or_else(|| text(obj.get("error")))
            .unwrap_or_default();
        return Some((code, message));
    }
    match obj.get("error")? {
        Value::Object(inner) => {
            let code = inner
                .get("grpc_code")
                .or_else(|| inner.get("code"))
                .and_then(as_code)
                .unwrap_or(UNKNOWN);
            let message = text(inner.get("message"))
                .or_else(|| text(inner.get("http_status")))
                .unwrap_or_default();
            Some((code, message))
        }
        Value::String(message) => Some((UNKNOWN, message.clone())),
        _ => None,
    }
}

/// gRPC's "Unknown" code, for an error body that carries no code.
const UNKNOWN: i32 = 2;

fn as_code(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|c| i32::try_from(c).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The first JSON value of a body (a unary response, or the first line of a stream).
pub(crate) fn first_value(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match values.next() {
        Some(v) => v,
        None => Err(de::Error::custom("empty body")),
    }
}

/// A short, printable excerpt of a body for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(default)]
    struct Ints {
        #[serde(with = "int")]
        signed: i64,
        #[serde(with = "int")]
        unsigned: u64,
        #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
        bytes: Vec<u8>,
    }

    #[test]
    fn int64_reads_strings_and_numbers_and_writes_strings() {
        let from_str: Ints = serde_json::from_value(
            json!({"signed":"-1","unsigned":"10405928607036884643","bytes":"Zm9v"}),
        )
        .unwrap();
        assert_eq!(from_str.signed, -1);
        assert_eq!(from_str.unsigned, 10_405_928_607_036_884_643);
        assert_eq!(from_str.bytes, b"foo");
        let from_num: Ints =
            serde_json::from_value(json!({"signed":4,"unsigned":18446744073709551615u64})).unwrap();
        assert_eq!(from_num.signed, 4);
        assert_eq!(from_num.unsigned, u64::MAX);
        assert_eq!(
            serde_json::to_value(&from_num).unwrap(),
            json!({"signed":"4","unsigned":"18446744073709551615"})
        );
    }

    #[test]
    fn omitted_and_null_fields_are_zero() {
        let v: Ints = serde_json::from_value(json!({})).unwrap();
        assert_eq!(v, Ints::default());
        let v: Ints =
            serde_json::from_value(json!({"signed":null,"unsigned":null,"bytes":null})).unwrap();
        assert_eq!(v, Ints::default());
    }

    #[test]
    fn bad_integers_and_base64_are_errors() {
        assert!(serde_json::from_value::<Ints>(json!({"signed":"x"})).is_err());
        assert!(serde_json::from_value::<Ints>(json!({"unsigned":"-1"})).is_err());
        assert!(serde_json::from_value::<Ints>(json!({"unsigned":-1})).is_err());
        assert!(serde_json::from_value::<Ints>(json!({"signed":1.5})).is_err());
        assert!(serde_json::from_value::<Ints>(json!({"bytes":"Zm9v!"})).is_err());
    }

    #[test]
    fn header_with_spaces_as_3_5_30_writes_it() {
        let h: ResponseHeader = serde_json::from_str(
            r#"{"cluster_id":"17319506567620374923", "member_id":"3961401065075778231", "revision":"4135", "raft_term":"17"}"#,
        )
        .unwrap();
        assert_eq!(h.cluster_id, 17_319_506_567_620_374_923);
        assert_eq!(h.member_id, 3_961_401_065_075_778_231);
        assert_eq!(h.revision, 4135);
        assert_eq!(h.raft_term, 17);
    }

    #[test]
    fn error_bodies_of_every_version() {
        let v34 = json!({"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3});
        let v351 =
            json!({"error":"etcdserver: not leader","code":9,"message":"etcdserver: not leader"});
        let v3530: Value = serde_json::from_str(
            r#"{"code":5, "message":"etcdserver: requested lease not found"}"#,
        )
        .unwrap();
        assert_eq!(
            api_error(&v34),
            Some((3, "etcdserver: key is not provided".into()))
        );
        assert_eq!(api_error(&v351), Some((9, "etcdserver: not leader".into())));
        assert_eq!(
            api_error(&v3530),
            Some((5, "etcdserver: requested lease not found".into()))
        );
        let stream = json!({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}});
        assert_eq!(
            api_error(&stream),
            Some((14, "etcdserver: no leader".into()))
        );
        let stream_code = json!({"error":{"code":2,"message":"mutex: session is expired"}});
        assert_eq!(
            api_error(&stream_code),
            Some((2, "mutex: session is expired".into()))
        );
        // Only `error` text: an error all the same, code Unknown.
        assert_eq!(
            api_error(&json!({"error":"boom"})),
            Some((2, "boom".into()))
        );
        // Success bodies are not errors.
        assert_eq!(api_error(&json!({"header":{"revision":"2"}})), None);
        assert_eq!(api_error(&json!({})), None);
        assert_eq!(api_error(&json!({"result":{"ID":"1"}})), None);
    }

    #[test]
    fn first_value_reads_unary_bodies_and_stream_lines() {
        assert_eq!(first_value(b" {\"a\":1} ").unwrap(), json!({"a":1}));
        assert_eq!(
            first_value(b"{\"result\":{\"TTL\":\"2\"}}\n{\"result\":{}}\n").unwrap(),
            json!({"result":{"TTL":"2"}})
        );
        assert!(first_value(b"").is_err());
        assert!(first_value(b"Not Found\n").is_err());
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "x".repeat(1000);
        assert!(excerpt(long.as_bytes()).len() < 320);
        assert_eq!(excerpt(b"  short \n"), "short");
    }
}
