use super::*;

#[test]
fn endpoints_are_normalized() {
    assert_eq!(
        normalize_endpoint("http://127.0.0.1:2379/", false).unwrap(),
        "http://127.0.0.1:2379"
    );
    assert_eq!(
        normalize_endpoint("127.0.0.1:2379", false).unwrap(),
        "http://127.0.0.1:2379"
    );
    assert_eq!(
        normalize_endpoint(" etcd1:2379 ", true).unwrap(),
        "https://etcd1:2379"
    );
    for bad in [
        "",
        "unix:///run/etcd.sock",
        "ftp://x:1",
        "http://x:1/v3",
        "http://",
    ] {
        assert!(normalize_endpoint(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn new_refuses_bad_configuration() {
    assert!(matches!(
        Client::new(ClientConfig::new(vec![])),
        Err(EtcdError::Setup(_))
    ));
    let mut config = ClientConfig::new(vec!["http://127.0.0.1:2379".into()]);
    config.cert = Some("/nonexistent/cert.pem".into());
    let err = Client::new(config.clone()).unwrap_err().to_string();
    assert!(err.contains("--key"), "{err}");
    config.key = Some("/nonexistent/key.pem".into());
    let err = Client::new(config).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}

#[test]
fn endpoints_dedupe_and_discovered_ones_follow_configured_ones() {
    let client = Client::new(ClientConfig::new(vec![
        "http://b:2".into(),
        "b:2".into(),
        "http://a:1".into(),
    ]))
    .unwrap();
    assert_eq!(client.endpoints(), ["http://b:2", "http://a:1"]);
    assert_eq!(client.local_endpoint(), "http://b:2");
    let list = client.set_discovered_endpoints(&[
        "http://a:1".into(),
        "http://c:3/".into(),
        "unix:///x".into(),
        "http://b:2".into(),
    ]);
    assert_eq!(list, ["http://b:2", "http://a:1", "http://c:3"]);
    assert_eq!(client.endpoints(), list);
}

#[test]
fn attempts_start_at_the_endpoint_that_answered_last() {
    let client = Client::new(ClientConfig::new(vec![
        "http://a:1".into(),
        "http://b:2".into(),
        "http://c:3".into(),
    ]))
    .unwrap();
    assert_eq!(
        client.attempt_order(),
        ["http://a:1", "http://b:2", "http://c:3"]
    );
    client.remember("http://b:2");
    assert_eq!(
        client.attempt_order(),
        ["http://b:2", "http://c:3", "http://a:1"]
    );
    // A remembered endpoint that is no longer in the list: start at the top.
    client.remember("http://gone:9");
    assert_eq!(
        client.attempt_order(),
        ["http://a:1", "http://b:2", "http://c:3"]
    );
}

#[test]
fn bodies_decide_errors_not_statuses() {
    let ep = "http://e:1";
    let err = decode_body(
        ep,
        "/v3/kv/put",
        412,
        br#"{"error":"etcdserver: not leader","message":"etcdserver: not leader","code":9}"#,
        Shape::Unary,
    )
    .unwrap_err();
    assert!(err.is_not_leader(), "{err}");
    let err = decode_body(
        ep,
        "/v3/kv/put",
        400,
        br#"{"code":9, "message":"etcdserver: not leader"}"#,
        Shape::Unary,
    )
    .unwrap_err();
    assert!(err.is_not_leader(), "{err}");
    // 3.4's alarm list without alarms: `{}` with no header is a success.
    assert_eq!(
        decode_body(ep, "/v3/maintenance/alarm", 200, b"{}", Shape::Unary).unwrap(),
        serde_json::json!({})
    );
    let err = decode_body(ep, "/v3/x", 404, b"Not Found\n", Shape::Unary).unwrap_err();
    assert!(matches!(err, EtcdError::Http { status: 404, .. }), "{err}");
    let err = decode_body(ep, "/v3/x", 200, b"<html>", Shape::Unary).unwrap_err();
    assert!(matches!(err, EtcdError::Decode { .. }), "{err}");
    // A stream's first line.
    assert_eq!(
        decode_body(
            ep,
            "/v3/lease/keepalive",
            200,
            b"{\"result\":{\"ID\":\"7\",\"TTL\":\"10\"}}\n",
            Shape::StreamFirst
        )
        .unwrap(),
        serde_json::json!({"ID":"7","TTL":"10"})
    );
    let err = decode_body(
        ep,
        "/v3/lease/keepalive",
        503,
        b"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}\n",
        Shape::StreamFirst,
    )
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}

#[test]
fn unavailable_moves_on_unless_a_transaction_was_sent() {
    let unavailable = || EtcdError::Api {
        endpoint: "http://e:1".into(),
        code: code::UNAVAILABLE,
        message: "etcdserver: no leader".into(),
    };
    let t = Duration::from_secs(1);
    for retry in [Retry::Idempotent, Retry::Blocking] {
        assert!(matches!(
            classify(RequestFailure::sent(unavailable()), retry, "/v3/kv/put", t),
            Next::Failover(reason) if reason.contains("no leader")
        ));
    }
    assert!(matches!(
        classify(
            RequestFailure::sent(unavailable()),
            Retry::AtMostOnce,
            "/v3/kv/txn",
            t
        ),
        Next::Stop(EtcdError::Api { .. })
    ));
    // Failing to get a token: the transaction never left.
    assert!(matches!(
        classify(
            RequestFailure::not_sent(unavailable()),
            Retry::AtMostOnce,
            "/v3/kv/txn",
            t
        ),
        Next::Failover(_)
    ));
    // Other etcd errors are answers, not reasons to ask another member.
    let not_leader = EtcdError::Api {
        endpoint: "http://e:1".into(),
        code: code::FAILED_PRECONDITION,
        message: "etcdserver: not leader".into(),
    };
    assert!(matches!(
        classify(
            RequestFailure::sent(not_leader),
            Retry::Idempotent,
            "/v3/kv/put",
            t
        ),
        Next::Stop(_)
    ));
}

/// A learner's etcd refuses every request but status and serializable reads in its gRPC
/// interceptor, before anything is executed: the supervisor of a stopped voter that fails
/// over to the learner must move on to a voter, even for a transaction (seen on 3.6.10 ->
/// 3.6.17 with a learner: the turn's keepalive and read-back went to the learner, and the
/// turn was lost at every try).
#[test]
fn a_learners_refusal_moves_on_whatever_was_sent() {
    let learner = || EtcdError::Api {
        endpoint: "http://e:1".into(),
        code: code::FAILED_PRECONDITION,
        message: "etcdserver: rpc not supported for learner".into(),
    };
    let t = Duration::from_secs(1);
    for retry in [Retry::Idempotent, Retry::Blocking, Retry::AtMostOnce] {
        for failure in [
            RequestFailure::sent(learner()),
            RequestFailure::not_sent(learner()),
        ] {
            assert!(matches!(
                classify(failure, retry, "/v3/kv/txn", t),
                Next::Failover(reason) if reason.contains("learner")
            ));
        }
    }
}

#[test]
fn credentials_are_not_printed() {
    let c = Credentials {
        user: "root".into(),
        password: "hunter2".into(),
    };
    let text = format!("{c:?}");
    assert!(text.contains("root") && !text.contains("hunter2"), "{text}");
}
