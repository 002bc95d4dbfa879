//! Errors of the etcd client, and the questions callers ask of them (`is_not_leader()`, ...).
//!
//! etcd reports errors as a gRPC status: a code and a message ([`EtcdError::Api`]); a call that
//! failed below that (no connection, TLS, a stream cut off) is [`EtcdError::Grpc`], and the
//! plain HTTP paths (`/health`, `/version`) fail with [`EtcdError::Transport`] or
//! [`EtcdError::Http`]. Messages are written for an operator: which endpoint, what happened,
//! what to check.

use std::path::PathBuf;
use std::time::Duration;

/// The gRPC status codes etcd uses, by name.
pub mod code {
    /// The operation was cancelled.
    pub const CANCELLED: i32 = 1;
    /// Unknown error (also: lock with a missing lease, "mutex: session is expired").
    pub const UNKNOWN: i32 = 2;
    /// Invalid argument ("key is not provided", bad base64, wrong password).
    pub const INVALID_ARGUMENT: i32 = 3;
    /// Deadline exceeded.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// Not found ("requested lease not found" on revoke).
    pub const NOT_FOUND: i32 = 5;
    /// Already exists.
    pub const ALREADY_EXISTS: i32 = 6;
    /// Permission denied (auth enabled, user lacks the role).
    pub const PERMISSION_DENIED: i32 = 7;
    /// Resource exhausted ("database space exceeded", NOSPACE alarm).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Failed precondition ("not leader", "bad leader transferee").
    pub const FAILED_PRECONDITION: i32 = 9;
    /// Aborted.
    pub const ABORTED: i32 = 10;
    /// Out of range ("required revision has been compacted").
    pub const OUT_OF_RANGE: i32 = 11;
    /// Unimplemented (also a GET on a /v3 path on 3.5.30).
    pub const UNIMPLEMENTED: i32 = 12;
    /// Internal.
    pub const INTERNAL: i32 = 13;
    /// Unavailable ("no leader", "leader changed", "server stopped", "request timed out"):
    /// the member cannot serve right now; another one may.
    pub const UNAVAILABLE: i32 = 14;
    /// Data loss.
    pub const DATA_LOSS: i32 = 15;
    /// Unauthenticated ("invalid auth token", "user name is empty").
    pub const UNAUTHENTICATED: i32 = 16;

    /// The code's gRPC name, for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            0 => "OK",
            CANCELLED => "Cancelled",
            UNKNOWN => "Unknown",
            INVALID_ARGUMENT => "InvalidArgument",
            DEADLINE_EXCEEDED => "DeadlineExceeded",
            NOT_FOUND => "NotFound",
            ALREADY_EXISTS => "AlreadyExists",
            PERMISSION_DENIED => "PermissionDenied",
            RESOURCE_EXHAUSTED => "ResourceExhausted",
            FAILED_PRECONDITION => "FailedPrecondition",
            ABORTED => "Aborted",
            OUT_OF_RANGE => "OutOfRange",
            UNIMPLEMENTED => "Unimplemented",
            INTERNAL => "Internal",
            UNAVAILABLE => "Unavailable",
            DATA_LOSS => "DataLoss",
            UNAUTHENTICATED => "Unauthenticated",
            _ => "unknown code",
        }
    }
}

/// Errors talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client could not be set up: bad endpoint URL, unreadable or invalid TLS material.
    #[error("cannot set up the etcd client: {0}")]
    Setup(String),

    /// A request the client refuses to send (a bug in the caller).
    #[error("invalid etcd request: {0}")]
    InvalidRequest(String),

    /// One endpoint could not be reached or did not answer in time.
    #[error("etcd at {endpoint}: {}", describe_transport(.source))]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// A gRPC call failed below etcd's answer: connection, TLS, HTTP/2, a stream cut off.
    #[error("etcd at {endpoint} (gRPC): {reason}")]
    Grpc {
        /// The endpoint.
        endpoint: String,
        /// What failed, with its causes.
        reason: String,
    },

    /// Every endpoint was tried and none could serve the call.
    #[error("no etcd endpoint could serve the request; tried {}. {}", describe_tried(.tried), hint(.tried))]
    AllEndpointsFailed {
        /// Each endpoint tried, in order, and why it failed.
        tried: Vec<(String, String)>,
    },

    /// etcd answered with an error (gRPC code and message from the body).
    #[error("etcd at {endpoint} refused the request: {message} (code {code}, {})", code::name(*.code))]
    Api {
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC status code (see [`code`]).
        code: i32,
        /// etcd's message, e.g. "etcdserver: not leader".
        message: String,
    },

    /// A request that is not safe to repeat (a transaction) was sent, but its answer was lost:
    /// it may or may not have been applied.
    #[error("etcd at {endpoint}: {reason}; the request may or may not have been applied, so it was not repeated on another member (read the keys back before retrying)")]
    OutcomeUnknown {
        /// The endpoint the request was sent to.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },

    /// A call with its own time limit (lock, snapshot) did not finish in time.
    #[error("etcd at {endpoint}: {operation} did not finish within {}", humantime::format_duration(*.after))]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// What was being done.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },

    /// The answer could not be understood.
    #[error("etcd at {endpoint} sent an answer to {path} that cannot be read: {reason}")]
    Decode {
        /// The endpoint.
        endpoint: String,
        /// The request path.
        path: String,
        /// What was wrong, with an excerpt of the body.
        reason: String,
    },

    /// An HTTP status with a body that is not an etcd error (a proxy, a path this version
    /// does not have).
    #[error("etcd at {endpoint} answered {path} with HTTP {status}: {body}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// An excerpt of the body.
        body: String,
    },

    /// Authentication failed (wrong user or password, auth not enabled, ...).
    #[error("cannot authenticate to etcd at {endpoint} as user {user:?}: {message}. Check --user and the password")]
    Auth {
        /// The endpoint.
        endpoint: String,
        /// The user name.
        user: String,
        /// etcd's message.
        message: String,
    },

    /// No member reports a leader.
    #[error("the etcd cluster has no leader right now (asked {endpoint}); wait for an election, or check that a quorum of members runs")]
    NoLeader {
        /// The endpoint asked.
        endpoint: String,
    },

    /// The snapshot stream was broken, truncated or corrupt; no file was left behind.
    #[error("snapshot from etcd at {endpoint} failed: {source}")]
    Snapshot {
        /// The endpoint that streamed it.
        endpoint: String,
        /// What was wrong.
        #[source]
        source: super::snapshot::check::SnapshotError,
    },

    /// A local file operation failed (writing a snapshot).
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done ("create a temporary file in", "write", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl EtcdError {
    /// The gRPC code when etcd answered with an error.
    pub fn code(&self) -> Option<i32> {
        match self {
            EtcdError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// etcd's message when etcd answered with an error.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            EtcdError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    fn api_is(&self, want: Option<i32>, needle: &str) -> bool {
        match self {
            EtcdError::Api { code, message, .. } => {
                let code_matches = match want {
                    Some(w) => w == *code,
                    None => true,
                };
                code_matches && message.contains(needle)
            }
            _ => false,
        }
    }

    /// "etcdserver: not leader": a leader-only call (transfer-leadership) reached a follower.
    pub fn is_not_leader(&self) -> bool {
        self.api_is(Some(code::FAILED_PRECONDITION), "not leader")
    }

    /// "etcdserver: bad leader transferee": the transfer target is unknown or not a voter.
    pub fn is_bad_leader_transferee(&self) -> bool {
        self.api_is(Some(code::FAILED_PRECONDITION), "bad leader transferee")
    }

    /// "requested lease not found": code 5 on revoke, code 2 on lock with a missing lease.
    pub fn is_lease_not_found(&self) -> bool {
        self.api_is(None, "requested lease not found")
    }

    /// "mutex: session is expired": a lock waiter's lease expired while it waited (3.5).
    pub fn is_lock_session_expired(&self) -> bool {
        self.api_is(None, "session is expired")
    }

    /// "rpc not supported for learner": a learner's interceptor refused the request before
    /// executing anything (code 9 from 3.4 to 3.7); another member can serve it.
    pub fn is_learner_refusal(&self) -> bool {
        self.api_is(
            Some(code::FAILED_PRECONDITION),
            "rpc not supported for learner",
        )
    }

    /// Code 14: the member cannot serve right now (no leader, stopping, timed out).
    pub fn is_unavailable(&self) -> bool {
        self.code() == Some(code::UNAVAILABLE)
    }

    /// Code 16, "invalid auth token" or "user name is empty": the token is missing, expired
    /// or unknown.
    pub fn is_unauthenticated(&self) -> bool {
        self.code() == Some(code::UNAUTHENTICATED)
            || self.api_is(None, "invalid auth token")
            || self.api_is(None, "user name is empty")
    }

    /// "database space exceeded": the NOSPACE alarm is raised; only reads and deletes work.
    pub fn is_no_space(&self) -> bool {
        self.api_is(None, "database space exceeded")
    }

    /// "required revision has been compacted".
    pub fn is_compacted(&self) -> bool {
        self.api_is(None, "compacted")
    }

    /// A transport failure: connect error or timeout on one endpoint, or on all of them.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            EtcdError::Transport { .. }
                | EtcdError::Grpc { .. }
                | EtcdError::AllEndpointsFailed { .. }
        )
    }
}

/// A transport error in a few words: "connection refused", "timed out", plus the cause chain.
pub(crate) fn describe_transport(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    if err.is_timeout() {
        // The causes only repeat it ("operation timed out").
        return "timed out".to_owned();
    }
    if err.is_connect() {
        parts.push("cannot connect".to_owned());
    }
    // reqwest's own text repeats the URL; the causes say what really happened.
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper's wrappers ("client error (Connect)") say nothing their causes do not.
        let wrapper = text.starts_with("client error (");
        if !wrapper && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    parts.join(": ")
}

/// What to check, from the reasons the endpoints failed.
fn hint(tried: &[(String, String)]) -> &'static str {
    let any = |needles: &[&str]| {
        tried.iter().any(|(_, why)| {
            let why = why.to_lowercase();
            needles.iter().any(|n| why.contains(n))
        })
    };
    if any(&["certificate", "alert", "tls", "handshake"]) {
        "Check the TLS files (--cacert, --cert, --key) and that the endpoints use https"
    } else if !tried.is_empty() && tried.iter().all(|(_, why)| why.contains("timed out")) {
        "The members did not answer in time: check that they are not overloaded or stopped, and the network between here and them"
    } else if any(&["unavailable"]) {
        "The members are up but cannot serve: check that a quorum of members runs and has a leader"
    } else {
        "Check that the members are running and that the endpoints (--endpoints) are right"
    }
}

fn describe_tried(tried: &[(String, String)]) -> String {
    if tried.is_empty() {
        return "none (no endpoints configured)".to_owned();
    }
    tried
        .iter()
        .map(|(endpoint, reason)| format!("{endpoint} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i32, message: &str) -> EtcdError {
        EtcdError::Api {
            endpoint: "http://127.0.0.1:2379".into(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn helpers_read_code_and_message() {
        assert!(api(9, "etcdserver: not leader").is_not_leader());
        assert!(!api(9, "etcdserver: bad leader transferee").is_not_leader());
        assert!(api(9, "etcdserver: bad leader transferee").is_bad_leader_transferee());
        assert!(api(5, "etcdserver: requested lease not found").is_lease_not_found());
        assert!(api(2, "etcdserver: requested lease not found").is_lease_not_found());
        assert!(api(14, "etcdserver: no leader").is_unavailable());
        assert!(api(16, "etcdserver: user name is empty").is_unauthenticated());
        assert!(api(3, "etcdserver: invalid auth token").is_unauthenticated());
        assert!(api(8, "etcdserver: mvcc: database space exceeded").is_no_space());
        assert!(api(2, "mutex: session is expired").is_lock_session_expired());
        assert_eq!(api(3, "x").code(), Some(3));
        assert_eq!(EtcdError::Setup("x".into()).code(), None);
    }

    #[test]
    fn messages_name_endpoints_and_reasons() {
        let all = EtcdError::AllEndpointsFailed {
            tried: vec![
                (
                    "http://a:1".into(),
                    "cannot connect: connection refused".into(),
                ),
                ("http://b:2".into(), "timed out".into()),
            ],
        };
        let text = all.to_string();
        assert!(
            text.contains("http://a:1 (cannot connect: connection refused)"),
            "{text}"
        );
        assert!(text.contains("http://b:2 (timed out)"), "{text}");
        let tls = EtcdError::AllEndpointsFailed {
            tried: vec![(
                "https://a:1".into(),
                "invalid peer certificate: UnknownIssuer".into(),
            )],
        };
        assert!(tls.to_string().contains("--cacert"), "{tls}");
        let slow = EtcdError::AllEndpointsFailed {
            tried: vec![("http://a:1".into(), "timed out after 2s".into())],
        };
        assert!(
            slow.to_string().contains("did not answer in time"),
            "{slow}"
        );
        let text = api(9, "etcdserver: not leader").to_string();
        assert!(text.contains("code 9, FailedPrecondition"), "{text}");
        assert!(text.contains("http://127.0.0.1:2379"), "{text}");
    }
}
