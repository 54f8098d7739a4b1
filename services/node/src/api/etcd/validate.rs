//! etcd's checks on its requests, with etcd's messages (etcd 3.5's `v3rpc/key.go` rules, as
//! `services/client/tests/etcd_wire.rs` observes them on the real etcd), plus Reinado's own size limits
//! ([`RequestLimits`]) with the v1 API's checks, whose messages name the variable that sets them. Everything is checked before it
//! reaches the log.

use crate::api::validate as v1;
use crate::config::RequestLimits;
use crate::error::NodeError;
use reinado_proto::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    range_request, request_op,
};
use std::collections::BTreeSet;

/// A request without a key.
pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
/// A Txn with more comparisons or operations in a branch than allowed.
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
/// A Txn that writes one key twice in a branch (or puts a key it also deletes).
pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
/// A Txn operation without a request.
pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
/// A Put with `ignore_value` and a value.
pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
/// A Put with `ignore_lease` and a lease.
pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
/// A Range with an unknown sort order or target.
pub const INVALID_SORT: &str = "etcdserver: invalid sort option";

fn invalid(msg: impl Into<String>) -> NodeError {
    NodeError::InvalidArgument(msg.into())
}

/// A request's key: present (etcd's message), and its key and range end within REINADO_MAX_KEY_BYTES (the
/// v1 API's check and message).
fn key(key: &[u8], range_end: &[u8], limits: &RequestLimits) -> Result<(), NodeError> {
    if key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    v1::key(key, limits, "key")?;
    if !range_end.is_empty() {
        v1::key(range_end, limits, "range_end")?;
    }
    Ok(())
}

fn value(value: &[u8], limits: &RequestLimits) -> Result<(), NodeError> {
    v1::value(value, limits, "value")
}

/// A Range.
pub fn range(req: &RangeRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    key(&req.key, &req.range_end, limits)?;
    let order_ok = range_request::SortOrder::try_from(req.sort_order).is_ok();
    let target_ok = range_request::SortTarget::try_from(req.sort_target).is_ok();
    if !order_ok || !target_ok {
        return Err(invalid(INVALID_SORT));
    }
    Ok(())
}

/// A Put.
pub fn put(req: &PutRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    key(&req.key, &[], limits)?;
    value(&req.value, limits)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(invalid(VALUE_PROVIDED));
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(invalid(LEASE_PROVIDED));
    }
    Ok(())
}

/// A DeleteRange.
pub fn delete_range(req: &DeleteRangeRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    key(&req.key, &req.range_end, limits)
}

/// A Txn, nested ones included: bounded (REINADO_MAX_TXN_OPS, 128 by default as in etcd), every comparison
/// and operation well formed, and no key written twice in a branch.
pub fn txn(req: &TxnRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    shape(req, limits)?;
    branch_writes(&req.success)?;
    branch_writes(&req.failure)?;
    Ok(())
}

/// Counts and well-formedness, recursively.
fn shape(req: &TxnRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    let most = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if most > limits.max_txn_ops {
        return Err(invalid(TOO_MANY_OPS));
    }
    req.compare.iter().try_for_each(|c| comparison(c, limits))?;
    req.success
        .iter()
        .chain(&req.failure)
        .try_for_each(|op| operation(op, limits))
}

fn comparison(c: &Compare, limits: &RequestLimits) -> Result<(), NodeError> {
    key(&c.key, &c.range_end, limits)?;
    if compare::CompareResult::try_from(c.result).is_err()
        || compare::CompareTarget::try_from(c.target).is_err()
    {
        return Err(invalid(
            "etcdserver: a comparison has an unknown result or target",
        ));
    }
    match &c.target_union {
        Some(compare::TargetUnion::Value(v)) => value(v, limits),
        _ => Ok(()),
    }
}

fn operation(op: &RequestOp, limits: &RequestLimits) -> Result<(), NodeError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => range(r, limits),
        Some(request_op::Request::RequestPut(p)) => put(p, limits),
        Some(request_op::Request::RequestDeleteRange(d)) => delete_range(d, limits),
        Some(request_op::Request::RequestTxn(t)) => shape(t, limits),
        None => Err(invalid(KEY_NOT_FOUND)),
    }
}

/// The keys a branch puts and the ranges it deletes, its nested transactions' included (both of their
/// branches: either may run). A key put twice, or put and deleted, is etcd's duplicate key error.
fn branch_writes(ops: &[RequestOp]) -> Result<Writes<'_>, NodeError> {
    let mut writes = Writes::default();
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => writes.put(&p.key)?,
            Some(request_op::Request::RequestDeleteRange(d)) => {
                writes.deletes.push((&d.key, &d.range_end));
            }
            Some(request_op::Request::RequestTxn(t)) => {
                let success = branch_writes(&t.success)?;
                let failure = branch_writes(&t.failure)?;
                let nested: BTreeSet<&[u8]> = success.puts.union(&failure.puts).copied().collect();
                nested.into_iter().try_for_each(|k| writes.put(k))?;
                writes.deletes.extend(success.deletes);
                writes.deletes.extend(failure.deletes);
            }
            Some(request_op::Request::RequestRange(_)) | None => {}
        }
    }
    let deleted_put = writes
        .deletes
        .iter()
        .any(|&(start, end)| writes.puts.iter().any(|k| in_range(k, start, end)));
    if deleted_put {
        return Err(invalid(DUPLICATE_KEY));
    }
    Ok(writes)
}

#[derive(Default)]
struct Writes<'a> {
    puts: BTreeSet<&'a [u8]>,
    deletes: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Writes<'a> {
    fn put(&mut self, key: &'a [u8]) -> Result<(), NodeError> {
        if self.puts.insert(key) {
            Ok(())
        } else {
            Err(invalid(DUPLICATE_KEY))
        }
    }
}

/// etcd's range semantics: an empty end is the key alone, "\0" every key from `start` on.
fn in_range(k: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == start,
        [0] => k >= start,
        _ => k >= start && k < end,
    }
}

/// The most a Txn can grow the store by: the larger branch's puts (only one branch runs), for the early
/// quota check; the state machine checks exactly.
pub fn txn_growth(req: &TxnRequest) -> u64 {
    fn branch(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => (p.key.len() + p.value.len()) as u64,
                Some(request_op::Request::RequestTxn(t)) => txn_growth(t),
                _ => 0,
            })
            .sum()
    }
    branch(&req.success).max(branch(&req.failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_key_bytes: 16,
            max_value_bytes: 64,
            max_request_bytes: 1 << 20,
            max_txn_ops: 128,
            range_limit: 1000,
            request_timeout: Duration::from_secs(1),
        }
    }

    fn put_op(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            })),
        }
    }

    fn delete_op(key: &[u8], range_end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                    prev_kv: false,
                },
            )),
        }
    }

    fn txn_of(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    fn message(r: Result<(), NodeError>) -> String {
        match r {
            Err(NodeError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn empty_keys_are_etcds_error() {
        let l = limits();
        assert_eq!(message(put(&PutRequest::default(), &l)), EMPTY_KEY);
        assert_eq!(message(range(&RangeRequest::default(), &l)), EMPTY_KEY);
        let del = DeleteRangeRequest::default();
        assert_eq!(message(delete_range(&del, &l)), EMPTY_KEY);
        let nested = txn_of(vec![put_op(b"")], vec![]);
        assert_eq!(message(txn(&nested, &l)), EMPTY_KEY);
    }

    #[test]
    fn our_size_limits_name_their_variables() {
        let l = limits();
        let long_key = PutRequest {
            key: vec![b'k'; 17],
            ..PutRequest::default()
        };
        assert!(message(put(&long_key, &l)).contains("REINADO_MAX_KEY_BYTES"));
        let long_value = PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 65],
            ..PutRequest::default()
        };
        assert!(message(put(&long_value, &l)).contains("REINADO_MAX_VALUE_BYTES"));
        assert!(
            put(
                &PutRequest {
                    value: vec![0; 64],
                    ..long_value
                },
                &l
            )
            .is_ok()
        );
    }

    #[test]
    fn put_flags_conflicting_with_fields_are_refused() {
        let l = limits();
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..PutRequest::default()
        };
        assert_eq!(message(put(&p, &l)), VALUE_PROVIDED);
        let p = PutRequest {
            key: b"k".to_vec(),
            lease: 7,
            ignore_lease: true,
            ..PutRequest::default()
        };
        assert_eq!(message(put(&p, &l)), LEASE_PROVIDED);
    }

    #[test]
    fn a_txn_over_128_operations_is_refused() {
        let l = limits();
        let ops = |n: usize| (0..n).map(|i| put_op(format!("k{i}").as_bytes())).collect();
        assert!(txn(&txn_of(ops(128), vec![]), &l).is_ok());
        assert_eq!(message(txn(&txn_of(ops(129), vec![]), &l)), TOO_MANY_OPS);
        assert_eq!(message(txn(&txn_of(vec![], ops(129)), &l)), TOO_MANY_OPS);
        let nested = RequestOp {
            request: Some(request_op::Request::RequestTxn(txn_of(ops(129), vec![]))),
        };
        assert_eq!(
            message(txn(&txn_of(vec![nested], vec![]), &l)),
            TOO_MANY_OPS
        );
    }

    #[test]
    fn duplicate_keys_in_a_branch_are_refused() {
        let l = limits();
        let twice = txn_of(vec![put_op(b"a"), put_op(b"a")], vec![]);
        assert_eq!(message(txn(&twice, &l)), DUPLICATE_KEY);
        let put_and_delete = txn_of(vec![put_op(b"b"), delete_op(b"a", b"c")], vec![]);
        assert_eq!(message(txn(&put_and_delete, &l)), DUPLICATE_KEY);
        let put_and_delete_from = txn_of(vec![put_op(b"z"), delete_op(b"a", b"\0")], vec![]);
        assert_eq!(message(txn(&put_and_delete_from, &l)), DUPLICATE_KEY);
        let nested = RequestOp {
            request: Some(request_op::Request::RequestTxn(txn_of(
                vec![],
                vec![put_op(b"a")],
            ))),
        };
        let through_nesting = txn_of(vec![put_op(b"a"), nested], vec![]);
        assert_eq!(message(txn(&through_nesting, &l)), DUPLICATE_KEY);
        // Different branches, and a delete next to a put outside its range, are fine.
        assert!(txn(&txn_of(vec![put_op(b"a")], vec![put_op(b"a")]), &l).is_ok());
        let beside = txn_of(vec![put_op(b"c"), delete_op(b"a", b"c")], vec![]);
        assert!(txn(&beside, &l).is_ok());
        let nested_branches = RequestOp {
            request: Some(request_op::Request::RequestTxn(txn_of(
                vec![put_op(b"a")],
                vec![put_op(b"a")],
            ))),
        };
        assert!(txn(&txn_of(vec![nested_branches], vec![]), &l).is_ok());
    }

    #[test]
    fn an_empty_operation_and_bad_sort_options_are_refused() {
        let l = limits();
        let empty = txn_of(vec![RequestOp { request: None }], vec![]);
        assert_eq!(message(txn(&empty, &l)), KEY_NOT_FOUND);
        let sorted = RangeRequest {
            key: b"k".to_vec(),
            sort_order: 9,
            ..RangeRequest::default()
        };
        assert_eq!(message(range(&sorted, &l)), INVALID_SORT);
    }

    #[test]
    fn growth_is_the_larger_branch() {
        let t = txn_of(vec![put_op(b"ab"), put_op(b"cd")], vec![put_op(b"e")]);
        assert_eq!(txn_growth(&t), 6);
    }
}
