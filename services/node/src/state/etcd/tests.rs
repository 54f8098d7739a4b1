use super::super::{Limits, StateMachine};
use super::*;
use reinado_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use reinado_proto::v1::{Command, Compact, LeaseGrant, LeaseRevoke, command};
use reinado_raft::{Entry, EntryKind};

/// Applies `op` at the next index; returns the outcome.
fn apply(sm: &mut StateMachine, op: command::Op) -> WriteOutcome {
    let cmd = Command {
        request_id: None,
        time_ms: 1,
        op: Some(op),
    };
    let entry = Entry {
        term: 1,
        index: sm.applied() + 1,
        kind: EntryKind::Normal,
        data: cmd.encode_to_vec(),
    };
    sm.apply(&entry).expect("a client command has an outcome")
}

fn txn(sm: &mut StateMachine, t: TxnRequest) -> (WriteOutcome, TxnResponse) {
    let outcome = apply(sm, command::Op::EtcdTxn(t));
    let resp = TxnResponse::decode(outcome.etcd_response.as_slice()).unwrap();
    (outcome, resp)
}

fn put_op(key: &str, value: &str, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            prev_kv: true,
            ..PutRequest::default()
        })),
    }
}

fn put(sm: &mut StateMachine, key: &str, value: &str) -> u64 {
    put_leased(sm, key, value, 0)
}

fn put_leased(sm: &mut StateMachine, key: &str, value: &str, lease: i64) -> u64 {
    let (outcome, _) = txn(
        sm,
        TxnRequest {
            success: vec![put_op(key, value, lease)],
            ..TxnRequest::default()
        },
    );
    assert_eq!(outcome.refused, "");
    outcome.revision
}

fn delete_prefix(sm: &mut StateMachine, prefix: &str) -> DeleteRangeResponse {
    let (_, resp) = txn(
        sm,
        TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: prefix.into(),
                        range_end: crate::api::prefix_end(prefix.as_bytes()).unwrap_or(vec![0]),
                        prev_kv: true,
                    },
                )),
            }],
            ..TxnRequest::default()
        },
    );
    match resp.responses[0].response.clone() {
        Some(response_op::Response::ResponseDeleteRange(d)) => d,
        other => panic!("{other:?}"),
    }
}

fn range(
    sm: &StateMachine,
    key: &str,
    end: &[u8],
    revision: i64,
) -> Result<RangeResponse, RevisionError> {
    let req = RangeRequest {
        key: key.into(),
        range_end: end.to_vec(),
        revision,
        ..RangeRequest::default()
    };
    sm.etcd_range(&req, usize::MAX)
}

fn values(r: &RangeResponse) -> Vec<(String, String)> {
    r.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn kv(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn reads_at_past_revisions_undo_later_changes_until_compaction() {
    let mut sm = StateMachine::new(Limits::default());
    let r1 = put(&mut sm, "a", "1");
    let r2 = put(&mut sm, "b", "1");
    let r3 = put(&mut sm, "a", "2");
    let deleted = delete_prefix(&mut sm, "");
    assert_eq!(deleted.deleted, 2);
    assert_eq!(deleted.prev_kvs.len(), 2);
    let all = [0u8];
    assert!(range(&sm, "a", &all, 0).unwrap().kvs.is_empty());
    assert_eq!(
        values(&range(&sm, "a", &all, r3 as i64).unwrap()),
        [kv("a", "2"), kv("b", "1")]
    );
    assert_eq!(
        values(&range(&sm, "a", &all, r2 as i64).unwrap()),
        [kv("a", "1"), kv("b", "1")]
    );
    assert_eq!(
        values(&range(&sm, "a", &all, r1 as i64).unwrap()),
        [kv("a", "1")]
    );
    let at_r3 = range(&sm, "a", b"", r3 as i64).unwrap();
    assert_eq!(
        (at_r3.kvs[0].version, at_r3.kvs[0].create_revision),
        (2, r1 as i64)
    );
    let future = sm.revision() as i64 + 1;
    assert_eq!(
        range(&sm, "a", b"", future).unwrap_err().to_string(),
        FUTURE_REVISION
    );

    let compacted = apply(&mut sm, command::Op::Compact(Compact { revision: r2 }));
    assert_eq!(compacted.refused, "");
    assert!(
        range(&sm, "a", &all, r2 as i64).is_ok(),
        "the compaction point itself stays readable"
    );
    let err = range(&sm, "a", &all, r1 as i64).unwrap_err();
    assert_eq!(err.to_string(), COMPACTED);
    let again = apply(&mut sm, command::Op::Compact(Compact { revision: r2 }));
    assert_eq!(again.refused, COMPACTED);
    let watch = sm.etcd_events(r1, b"a", b"", 10).unwrap_err();
    assert_eq!(
        watch,
        RevisionError::Compacted {
            compact_revision: r2
        }
    );

    // A restored replica keeps the compaction point; its history starts after the snapshot.
    let restored = StateMachine::restore(&sm.snapshot(), sm.applied()).unwrap();
    assert_eq!(restored.compact_revision(), r2);
    assert!(
        restored
            .etcd_range(
                &RangeRequest {
                    key: b"a".to_vec(),
                    revision: r3 as i64,
                    ..RangeRequest::default()
                },
                1
            )
            .is_err()
    );
}

#[test]
fn events_carry_the_previous_version_and_follow_the_interval() {
    let mut sm = StateMachine::new(Limits::default());
    let first = put(&mut sm, "k1", "a");
    put(&mut sm, "k2", "b");
    put(&mut sm, "x", "c");
    put(&mut sm, "k1", "d");
    delete_prefix(&mut sm, "k2");
    let (events, next) = sm.etcd_events(first, b"k", b"l", 100).unwrap();
    assert_eq!(next, sm.revision() + 1);
    let seen: Vec<(i32, String, Option<String>)> = events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                e.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                e.prev_kv
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
            )
        })
        .collect();
    let (put, del) = (
        mvccpb::event::EventType::Put as i32,
        mvccpb::event::EventType::Delete as i32,
    );
    assert_eq!(
        seen,
        [
            (put, "k1".into(), None),
            (put, "k2".into(), None),
            (put, "k1".into(), Some("a".into())),
            (del, "k2".into(), Some("b".into())),
        ]
    );
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

#[test]
fn transactions_compare_before_running_and_nested_branches_see_the_state_before() {
    let mut sm = StateMachine::new(Limits::default());
    let created = put(&mut sm, "lock", "");
    // The outer branch rewrites `lock`; the nested transaction still compares against the state before.
    let nested = TxnRequest {
        compare: vec![cmp(
            "lock",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )],
        success: vec![put_op("nested", "saw-version-1", 0)],
        failure: vec![put_op("nested", "saw-version-2", 0)],
    };
    let (outcome, resp) = txn(
        &mut sm,
        TxnRequest {
            compare: vec![
                cmp(
                    "lock",
                    CompareTarget::Create,
                    CompareResult::Equal,
                    TargetUnion::CreateRevision(created as i64),
                ),
                cmp(
                    "lock",
                    CompareTarget::Value,
                    CompareResult::Equal,
                    TargetUnion::Value(Vec::new()),
                ),
                cmp(
                    "missing",
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(0),
                ),
                cmp(
                    "lock",
                    CompareTarget::Lease,
                    CompareResult::Equal,
                    TargetUnion::Lease(0),
                ),
            ],
            success: vec![
                put_op("lock", "taken", 0),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(nested)),
                },
            ],
            failure: vec![],
        },
    );
    assert!(outcome.succeeded && resp.succeeded, "{outcome:?}");
    assert_eq!(
        values(&range(&sm, "nested", b"", 0).unwrap()),
        [kv("nested", "saw-version-1")]
    );
    let Some(response_op::Response::ResponsePut(p)) = &resp.responses[0].response else {
        panic!("{resp:?}")
    };
    assert_eq!(p.prev_kv.as_ref().map(|kv| kv.version), Some(1));

    // A value comparison on a missing key fails; the failure branch runs.
    let (outcome, _) = txn(
        &mut sm,
        TxnRequest {
            compare: vec![cmp(
                "missing",
                CompareTarget::Value,
                CompareResult::NotEqual,
                TargetUnion::Value(b"x".to_vec()),
            )],
            success: vec![put_op("branch", "success", 0)],
            failure: vec![put_op("branch", "failure", 0)],
        },
    );
    assert!(!outcome.succeeded);
    assert_eq!(
        values(&range(&sm, "branch", b"", 0).unwrap()),
        [kv("branch", "failure")]
    );
}

#[test]
fn a_refused_transaction_changes_nothing() {
    let mut sm = StateMachine::new(Limits::default());
    put(&mut sm, "a", "1");
    let before = sm.snapshot();
    let (outcome, _) = txn(
        &mut sm,
        TxnRequest {
            success: vec![put_op("a", "2", 0), put_op("b", "2", 42)],
            ..TxnRequest::default()
        },
    );
    assert_eq!(outcome.refused, "etcdserver: requested lease not found");
    assert_eq!(outcome.refusal, Refusal::LeaseNotFound as i32);
    let ignore = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b"missing".to_vec(),
            ignore_value: true,
            ..PutRequest::default()
        })),
    };
    let (outcome, _) = txn(
        &mut sm,
        TxnRequest {
            success: vec![put_op("a", "3", 0), ignore],
            ..TxnRequest::default()
        },
    );
    assert_eq!(outcome.refused, "etcdserver: key not found");
    assert_eq!(
        sm.snapshot(),
        before,
        "the refused transactions wrote nothing"
    );
}

#[test]
fn ranges_sort_filter_count_and_limit_as_the_lock_recipe_needs() {
    let mut sm = StateMachine::new(Limits::default());
    let r1 = put(&mut sm, "lock/c", "");
    let r2 = put(&mut sm, "lock/a", "");
    let r3 = put(&mut sm, "lock/b", "");
    put(&mut sm, "other", "");
    let end = crate::api::prefix_end(b"lock/").unwrap();
    // The waiter just before `lock/b` (created at r3): the last created at or below r3 - 1.
    let req = RangeRequest {
        key: b"lock/".to_vec(),
        range_end: end.clone(),
        limit: 1,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        max_create_revision: r3 as i64 - 1,
        ..RangeRequest::default()
    };
    let resp = sm.etcd_range(&req, usize::MAX).unwrap();
    assert_eq!(values(&resp), [kv("lock/a", "")]);
    assert_eq!((resp.count, resp.more), (3, true));
    // The owner: the first created.
    let first = RangeRequest {
        key: b"lock/".to_vec(),
        range_end: end.clone(),
        limit: 1,
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        ..RangeRequest::default()
    };
    let resp = sm.etcd_range(&first, usize::MAX).unwrap();
    assert_eq!(resp.kvs[0].create_revision, r1 as i64);
    // No sort order with a non-key target sorts ascending on it.
    let by_mod = RangeRequest {
        sort_target: range_request::SortTarget::Mod as i32,
        sort_order: 0,
        limit: 0,
        ..first.clone()
    };
    let resp = sm.etcd_range(&by_mod, usize::MAX).unwrap();
    let keys: Vec<_> = values(&resp).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["lock/c", "lock/a", "lock/b"]);
    // Count only, keys only, min mod revision, a byte bound.
    let counted = RangeRequest {
        count_only: true,
        ..by_mod.clone()
    };
    let resp = sm.etcd_range(&counted, usize::MAX).unwrap();
    assert_eq!((resp.count, resp.kvs.len()), (3, 0));
    let newer = RangeRequest {
        min_mod_revision: r2 as i64,
        keys_only: true,
        ..by_mod.clone()
    };
    let resp = sm.etcd_range(&newer, usize::MAX).unwrap();
    assert_eq!(values(&resp), [kv("lock/a", ""), kv("lock/b", "")]);
    let plain = RangeRequest {
        key: b"lock/".to_vec(),
        range_end: end,
        ..RangeRequest::default()
    };
    let resp = sm.etcd_range(&plain, 1).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (1, true, 3));
}

#[test]
fn leases_delete_their_keys_when_revoked_and_survive_a_snapshot() {
    let mut sm = StateMachine::new(Limits {
        max_leases: 2,
        max_keys_per_lease: 2,
        ..Limits::default()
    });
    let granted = apply(
        &mut sm,
        command::Op::LeaseGrant(LeaseGrant { id: 0, ttl_s: 5 }),
    );
    let id = granted.lease_id;
    assert!(id > 0 && granted.lease_ttl == 5, "{granted:?}");
    let again = apply(
        &mut sm,
        command::Op::LeaseGrant(LeaseGrant { id, ttl_s: 5 }),
    );
    assert_eq!(again.refused, "etcdserver: lease already exists");
    put_leased(&mut sm, "a", "1", id);
    put_leased(&mut sm, "b", "1", id);
    let (over, _) = txn(
        &mut sm,
        TxnRequest {
            success: vec![put_op("c", "1", id)],
            ..TxnRequest::default()
        },
    );
    assert_eq!(over.refusal, Refusal::LeaseLimit as i32, "{over:?}");
    // Overwriting a key without the lease detaches it.
    put(&mut sm, "b", "2");
    assert_eq!(sm.leases().get(id).unwrap().keys.len(), 1);
    apply(
        &mut sm,
        command::Op::LeaseGrant(LeaseGrant { id: 7, ttl_s: 1 }),
    );
    let third = apply(
        &mut sm,
        command::Op::LeaseGrant(LeaseGrant { id: 8, ttl_s: 1 }),
    );
    assert_eq!(third.refusal, Refusal::LeaseLimit as i32);

    let mut restored = StateMachine::restore(&sm.snapshot(), sm.applied()).unwrap();
    assert_eq!(restored.leases(), sm.leases());
    for m in [&mut sm, &mut restored] {
        let revoked = apply(
            m,
            command::Op::LeaseRevoke(LeaseRevoke {
                ids: vec![id],
                expired: false,
            }),
        );
        assert_eq!(revoked.refused, "");
        assert_eq!(values(&range(m, "a", &[0], 0).unwrap()), [kv("b", "2")]);
        let unknown = apply(
            m,
            command::Op::LeaseRevoke(LeaseRevoke {
                ids: vec![id],
                expired: false,
            }),
        );
        assert_eq!(unknown.refused, "etcdserver: requested lease not found");
        // A leader's expiry of a lease revoked meanwhile skips it.
        let late = apply(
            m,
            command::Op::LeaseRevoke(LeaseRevoke {
                ids: vec![id, 7],
                expired: true,
            }),
        );
        assert_eq!(late.refused, "");
        assert!(m.leases().is_empty());
    }
}

/// A key is never attached to a lease that is not held, whatever an earlier request of the same transaction
/// did: a put with `ignore_lease` after its key was deleted in the transaction (the API refuses that pair,
/// the state machine does not rely on it) takes no lease, and the snapshot stays one a restart accepts.
#[test]
fn a_put_ignoring_the_lease_of_a_key_deleted_in_the_same_transaction_takes_no_lease() {
    let mut sm = StateMachine::new(Limits::default());
    let granted = apply(
        &mut sm,
        command::Op::LeaseGrant(LeaseGrant { id: 7, ttl_s: 60 }),
    );
    assert_eq!(granted.refused, "");
    put_leased(&mut sm, "k", "v", 7);
    let delete = RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: "k".into(),
                ..DeleteRangeRequest::default()
            },
        )),
    };
    let put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: "k".into(),
            value: "w".into(),
            lease: 99,
            ignore_lease: true,
            ..PutRequest::default()
        })),
    };
    let (outcome, _) = txn(
        &mut sm,
        TxnRequest {
            success: vec![delete, put],
            ..TxnRequest::default()
        },
    );
    assert_eq!(outcome.refused, "");
    assert_eq!(sm.get(b"k").map(|kv| kv.lease), Some(0));
    assert!(super::super::verify_snapshot(&sm.snapshot()));
}
