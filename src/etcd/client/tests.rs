use super::*;
use crate::etcd::transport::normalize_endpoint;

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
fn long_lived_calls_go_to_the_local_member_first_and_elsewhere_while_it_steps_aside() {
    let client = Client::new(ClientConfig::new(vec![
        "http://a:1".into(),
        "http://b:2".into(),
        "http://c:3".into(),
    ]))
    .unwrap();
    client.remember("http://c:3");
    assert_eq!(
        client.stream_order(),
        ["http://a:1", "http://c:3", "http://b:2"]
    );
    // The run loop's handle is the client's own: clones share it.
    client.placement().step_aside();
    assert_eq!(client.clone().stream_order(), ["http://c:3", "http://b:2"]);
    client.placement().home();
    assert_eq!(client.stream_order()[0], "http://a:1");
    // Short calls keep their order: the member that answered last.
    assert_eq!(client.attempt_order()[0], "http://c:3");
}

#[test]
fn unavailable_moves_on_unless_a_transaction_was_sent() {
    let unavailable = || EtcdError::Api {
        endpoint: "http://e:1".into(),
        code: code::UNAVAILABLE,
        message: "etcdserver: no leader".into(),
    };
    let t = Duration::from_secs(1);
    let e = "http://e:1";
    for retry in [Retry::Idempotent, Retry::Blocking] {
        assert!(matches!(
            classify(Fail::Answer(unavailable()), retry, e, "put", t),
            Next::Failover(reason) if reason.contains("no leader")
        ));
    }
    assert!(matches!(
        classify(Fail::Answer(unavailable()), Retry::AtMostOnce, e, "txn", t),
        Next::Stop(EtcdError::Api { .. })
    ));
    // Failing to connect or authenticate: the transaction never left.
    assert!(matches!(
        classify(Fail::NotSent(unavailable()), Retry::AtMostOnce, e, "txn", t),
        Next::Failover(_)
    ));
    let refused = || EtcdError::Grpc {
        endpoint: e.into(),
        reason: "tcp connect error: Connection refused".into(),
    };
    assert!(matches!(
        classify(Fail::NotSent(refused()), Retry::AtMostOnce, e, "txn", t),
        Next::Failover(reason) if reason.contains("refused")
    ));
    // Sent, then the connection broke or the answer did not come: unknown, not repeated.
    assert!(matches!(
        classify(Fail::Broken(refused()), Retry::AtMostOnce, e, "txn", t),
        Next::Stop(EtcdError::OutcomeUnknown { .. })
    ));
    assert!(matches!(
        classify(Fail::TimedOut, Retry::AtMostOnce, e, "txn", t),
        Next::Stop(EtcdError::OutcomeUnknown { .. })
    ));
    assert!(matches!(
        classify(Fail::Broken(refused()), Retry::Idempotent, e, "put", t),
        Next::Failover(_)
    ));
    assert!(matches!(
        classify(Fail::TimedOut, Retry::Idempotent, e, "put", t),
        Next::Failover(reason) if reason == "timed out after 1s"
    ));
    assert!(matches!(
        classify(Fail::TimedOut, Retry::Blocking, e, "lock", t),
        Next::Stop(EtcdError::Timeout {
            operation: "lock",
            ..
        })
    ));
    // Other etcd errors are answers, not reasons to ask another member.
    let not_leader = EtcdError::Api {
        endpoint: e.into(),
        code: code::FAILED_PRECONDITION,
        message: "etcdserver: not leader".into(),
    };
    assert!(matches!(
        classify(Fail::Answer(not_leader), Retry::Idempotent, e, "put", t),
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
        for failure in [Fail::Answer(learner()), Fail::NotSent(learner())] {
            assert!(matches!(
                classify(failure, retry, "http://e:1", "txn", t),
                Next::Failover(reason) if reason.contains("learner")
            ));
        }
    }
}

#[test]
fn statuses_with_a_transport_cause_are_not_etcd_answers() {
    let answered = tonic::Status::new(tonic::Code::FailedPrecondition, "etcdserver: not leader");
    match convert("http://e:1", etcd_client::Error::GRpcStatus(answered)) {
        Fail::Answer(err) => assert!(err.is_not_leader(), "{err}"),
        _ => panic!("an answer"),
    }
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let mut status = tonic::Status::from_error(Box::new(refused));
    status.set_source(std::sync::Arc::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused",
    )));
    match convert("http://e:1", etcd_client::Error::GRpcStatus(status)) {
        Fail::NotSent(EtcdError::Grpc { reason, .. }) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        _ => panic!("not sent"),
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
