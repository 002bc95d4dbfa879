use super::*;
use serde_json::json;

#[test]
fn prefix_end_increments_the_last_byte_below_0xff() {
    assert_eq!(prefix_end(b"foo"), b"fop");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_end(b""), vec![0]);
}

#[test]
fn requests_use_etcd_field_names() {
    assert_eq!(
        serde_json::to_value(RangeRequest::prefix("foo").serializable().limit(2)).unwrap(),
        json!({"key":"Zm9v","range_end":"Zm9w","limit":"2","serializable":true})
    );
    assert_eq!(
        serde_json::to_value(RangeRequest::prefix("")).unwrap(),
        json!({"key":"AA==","range_end":"AA=="})
    );
    assert_eq!(
        serde_json::to_value(PutRequest::new("foo", "bar").lease(7).prev_kv()).unwrap(),
        json!({"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true})
    );
    assert_eq!(
        serde_json::to_value(PutRequest::new("foo", "")).unwrap(),
        json!({"key":"Zm9v","value":""})
    );
    assert_eq!(
        serde_json::to_value(DeleteRequest::prefix("foo").prev_kv()).unwrap(),
        json!({"key":"Zm9v","range_end":"Zm9w","prev_kv":true})
    );
}

#[test]
fn compares_serialize_upper_case_with_their_target_field() {
    let txn = Txn::new()
        .when([
            Compare::absent("foo"),
            Compare::mod_revision("foo", CompareResult::NotEqual, 4),
            Compare::value("foo", CompareResult::Greater, "baz"),
            Compare::version("foo", CompareResult::Less, 3),
            Compare::lease("foo", CompareResult::Equal, 0).with_range_end("fop"),
        ])
        .and_then([TxnOp::Put(PutRequest::new("foo", "qux"))])
        .or_else([TxnOp::Range(RangeRequest::key("foo"))]);
    assert_eq!(
        serde_json::to_value(&txn).unwrap(),
        json!({
            "compare":[
                {"key":"Zm9v","result":"EQUAL","target":"CREATE","create_revision":"0"},
                {"key":"Zm9v","result":"NOT_EQUAL","target":"MOD","mod_revision":"4"},
                {"key":"Zm9v","result":"GREATER","target":"VALUE","value":"YmF6"},
                {"key":"Zm9v","result":"LESS","target":"VERSION","version":"3"},
                {"key":"Zm9v","range_end":"Zm9w","result":"EQUAL","target":"LEASE","lease":"0"}
            ],
            "success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],
            "failure":[{"request_range":{"key":"Zm9v"}}]
        })
    );
}

#[test]
fn responses_parse_with_omitted_fields() {
    let empty: RangeResponse = serde_json::from_value(json!({"header":{"revision":"3"}})).unwrap();
    assert!(empty.kvs.is_empty());
    assert_eq!(empty.count, 0);
    assert_eq!(empty.header.revision, 3);

    let put: PutResponse = serde_json::from_value(json!({
        "header":{"revision":"3"},
        "prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}
    }))
    .unwrap();
    let prev = put.prev_kv.unwrap();
    assert_eq!(
        (prev.key.as_slice(), prev.value.as_slice()),
        (&b"foo"[..], &b"bar"[..])
    );
    assert_eq!((prev.create_revision, prev.version, prev.lease), (2, 1, 0));

    // A failed txn has no "succeeded" key.
    let failed: TxnResponse = serde_json::from_value(json!({
        "header":{"revision":"4"},
        "responses":[{"response_range":{"header":{"revision":"4"},"kvs":[{"key":"Zm9v","value":"YmF6","create_revision":"2","mod_revision":"3","version":"2"}],"count":"1"}}]
    }))
    .unwrap();
    assert!(!failed.succeeded);
    match &failed.responses[..] {
        [TxnOpResponse::Range(r)] => assert_eq!(r.kvs[0].value, b"baz"),
        other => panic!("{other:?}"),
    }
    let ok: TxnResponse = serde_json::from_value(json!({
        "header":{"revision":"4"},"succeeded":true,
        "responses":[{"response_put":{"header":{"revision":"4"}}},
                     {"response_delete_range":{"header":{},"deleted":"1"}}]
    }))
    .unwrap();
    assert!(ok.succeeded);
    assert!(matches!(
        ok.responses[1],
        TxnOpResponse::Delete(DeleteResponse { deleted: 1, .. })
    ));
}
