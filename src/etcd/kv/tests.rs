use super::*;

#[test]
fn prefix_end_increments_the_last_byte_below_0xff() {
    assert_eq!(prefix_end(b"foo"), b"fop");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_end(b""), vec![0]);
}

#[test]
fn ranges_cover_the_prefix() {
    let (key, _) = RangeRequest::prefix("foo").to_pb();
    assert_eq!(key, b"foo");
    let every = RangeRequest::prefix("");
    assert_eq!(
        (every.key.as_slice(), every.range_end.as_slice()),
        (&[0u8][..], &[0u8][..])
    );
    let delete = DeleteRequest::prefix("foo").prev_kv();
    assert_eq!(delete.range_end, b"fop");
    assert!(delete.prev_kv);
}
