//! Input checks. Whatever a client sends is checked here before it reaches the Raft loop or the log: a bad
//! request is an INVALID_ARGUMENT naming the field, never a panic and never an entry in the log.

use crate::config::RequestLimits;
use crate::error::NodeError;
use crate::state::RangeQuery;
pub use crate::state::prefix_end;
use reinado_proto::v1::{
    CompareOp, CompareTarget, RangeRequest, RequestId, TxnOp, TxnRequest, txn_op,
};
use std::collections::HashSet;

fn invalid(msg: impl Into<String>) -> NodeError {
    NodeError::InvalidArgument(msg.into())
}

/// A key: not empty, not over the limit.
pub fn key(key: &[u8], limits: &RequestLimits, field: &str) -> Result<(), NodeError> {
    if key.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if key.len() > limits.max_key_bytes {
        return Err(invalid(format!(
            "{field} is {} bytes, over the limit of {} (REINADO_MAX_KEY_BYTES)",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

/// A value: not over the limit.
pub fn value(value: &[u8], limits: &RequestLimits, field: &str) -> Result<(), NodeError> {
    if value.len() > limits.max_value_bytes {
        return Err(invalid(format!(
            "{field} is {} bytes, over the limit of {} (REINADO_MAX_VALUE_BYTES)",
            value.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// A request id, if any: client and sequence non-zero, and not already acknowledged by its own sender.
pub fn request_id(id: Option<&RequestId>) -> Result<(), NodeError> {
    let Some(id) = id else { return Ok(()) };
    if id.client_id == 0 || id.seq == 0 {
        return Err(invalid(
            "request_id.client_id and request_id.seq must not be 0",
        ));
    }
    if id.seq < id.acked {
        return Err(invalid(format!(
            "request_id.seq {} is below request_id.acked {}: the client says it already has this answer",
            id.seq, id.acked
        )));
    }
    Ok(())
}

/// A transaction: bounded, well-formed comparisons, valid operations, no key written twice in a branch.
pub fn txn(req: &TxnRequest, limits: &RequestLimits) -> Result<(), NodeError> {
    let max = limits.max_txn_ops;
    for (name, len) in [
        ("compare", req.compare.len()),
        ("success", req.success.len()),
        ("failure", req.failure.len()),
    ] {
        if len > max {
            return Err(invalid(format!(
                "{name} has {len} items, over the limit of {max} (REINADO_MAX_TXN_OPS)"
            )));
        }
    }
    for (i, c) in req.compare.iter().enumerate() {
        key(&c.key, limits, &format!("compare[{i}].key"))?;
        let target = CompareTarget::try_from(c.target)
            .ok()
            .filter(|t| *t != CompareTarget::Unspecified)
            .ok_or_else(|| invalid(format!("compare[{i}].target is not set or unknown")))?;
        let op = CompareOp::try_from(c.op)
            .ok()
            .filter(|o| *o != CompareOp::Unspecified)
            .ok_or_else(|| invalid(format!("compare[{i}].op is not set or unknown")))?;
        if target == CompareTarget::Exists && !matches!(op, CompareOp::Equal | CompareOp::NotEqual)
        {
            return Err(invalid(format!(
                "compare[{i}]: EXISTS can only be compared with EQUAL or NOT_EQUAL"
            )));
        }
        value(&c.value, limits, &format!("compare[{i}].value"))?;
    }
    branch(&req.success, limits, "success")?;
    branch(&req.failure, limits, "failure")
}

fn branch(ops: &[TxnOp], limits: &RequestLimits, name: &str) -> Result<(), NodeError> {
    let mut keys = HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        let k = match &op.op {
            Some(txn_op::Op::Put(p)) => {
                value(&p.value, limits, &format!("{name}[{i}].put.value"))?;
                &p.key
            }
            Some(txn_op::Op::Delete(d)) => &d.key,
            None => return Err(invalid(format!("{name}[{i}] has no operation"))),
        };
        key(k, limits, &format!("{name}[{i}].key"))?;
        if !keys.insert(k.as_slice()) {
            return Err(invalid(format!(
                "{name}[{i}] writes a key already written in this branch"
            )));
        }
    }
    Ok(())
}

/// The most bytes of keys and values one Range returns (it says `more` beyond), so an answer stays well under
/// the 4 MiB gRPC clients accept by default.
pub const RANGE_MAX_BYTES: usize = 3 << 20;

/// A range request, as the state machine's query.
pub fn range(req: &RangeRequest, limits: &RequestLimits) -> Result<RangeQuery, NodeError> {
    for (field, k) in [
        ("prefix", &req.prefix),
        ("start", &req.start),
        ("end", &req.end),
    ] {
        if k.len() > limits.max_key_bytes {
            return Err(invalid(format!(
                "{field} is {} bytes, over the limit of {} (REINADO_MAX_KEY_BYTES)",
                k.len(),
                limits.max_key_bytes
            )));
        }
    }
    let (start, end) = if !req.prefix.is_empty() {
        if !req.start.is_empty() || !req.end.is_empty() {
            return Err(invalid("give either a prefix or start/end, not both"));
        }
        (req.prefix.clone(), prefix_end(&req.prefix))
    } else {
        let end = (!req.end.is_empty()).then(|| req.end.clone());
        if end.as_ref().is_some_and(|e| *e <= req.start) {
            return Err(invalid("the range end must be greater than its start"));
        }
        (req.start.clone(), end)
    };
    let limit = match req.limit as usize {
        0 => limits.range_limit,
        n => n.min(limits.range_limit),
    };
    Ok(RangeQuery {
        start,
        end,
        limit,
        keys_only: req.keys_only,
        max_bytes: RANGE_MAX_BYTES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinado_proto::v1::{Compare, TxnDelete, TxnPut};
    use std::time::Duration;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_request_bytes: 1 << 20,
            max_txn_ops: 2,
            range_limit: 100,
            request_timeout: Duration::from_secs(1),
        }
    }

    fn message(r: Result<impl std::fmt::Debug, NodeError>) -> String {
        match r.expect_err("invalid") {
            NodeError::InvalidArgument(m) => m,
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn keys_values_and_request_ids() {
        let l = limits();
        assert!(message(key(b"", &l, "key")).contains("key must not be empty"));
        assert!(message(key(b"123456789", &l, "key")).contains("REINADO_MAX_KEY_BYTES"));
        assert!(key(b"12345678", &l, "key").is_ok());
        assert!(message(value(&[0; 17], &l, "value")).contains("REINADO_MAX_VALUE_BYTES"));
        let id = |client_id, seq, acked| RequestId {
            client_id,
            seq,
            acked,
        };
        assert!(request_id(None).is_ok());
        assert!(request_id(Some(&id(1, 2, 2))).is_ok());
        assert!(message(request_id(Some(&id(0, 2, 0)))).contains("must not be 0"));
        assert!(message(request_id(Some(&id(1, 2, 3)))).contains("below"));
    }

    #[test]
    fn transactions() {
        let l = limits();
        let put = |k: &str| TxnOp {
            op: Some(txn_op::Op::Put(TxnPut {
                key: k.into(),
                value: "v".into(),
            })),
        };
        let del = |k: &str| TxnOp {
            op: Some(txn_op::Op::Delete(TxnDelete { key: k.into() })),
        };
        let ok = TxnRequest {
            compare: vec![Compare {
                key: "a".into(),
                target: CompareTarget::Exists as i32,
                op: CompareOp::Equal as i32,
                ..Compare::default()
            }],
            success: vec![put("a"), del("b")],
            failure: vec![put("c")],
            request_id: None,
        };
        assert!(txn(&ok, &l).is_ok());
        let mut t = ok.clone();
        t.success = vec![put("a"), put("a")];
        assert!(message(txn(&t, &l)).contains("already written"));
        let mut t = ok.clone();
        t.success.push(put("z"));
        assert!(message(txn(&t, &l)).contains("REINADO_MAX_TXN_OPS"));
        let mut t = ok.clone();
        t.compare[0].op = CompareOp::Less as i32;
        assert!(message(txn(&t, &l)).contains("EXISTS"));
        let mut t = ok.clone();
        t.compare[0].target = 0;
        assert!(message(txn(&t, &l)).contains("target"));
        let mut t = ok;
        t.failure = vec![TxnOp { op: None }];
        assert!(message(txn(&t, &l)).contains("no operation"));
    }

    #[test]
    fn ranges() {
        let l = limits();
        let q = range(
            &RangeRequest {
                prefix: b"ab".to_vec(),
                ..RangeRequest::default()
            },
            &l,
        )
        .unwrap();
        assert_eq!(
            (q.start.as_slice(), q.end.as_deref()),
            (&b"ab"[..], Some(&b"ac"[..]))
        );
        assert_eq!(q.limit, 100);
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let inverted = RangeRequest {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
            ..RangeRequest::default()
        };
        assert!(message(range(&inverted, &l)).contains("greater than its start"));
        let both = RangeRequest {
            prefix: b"a".to_vec(),
            start: b"a".to_vec(),
            ..RangeRequest::default()
        };
        assert!(message(range(&both, &l)).contains("not both"));
        let everything = range(
            &RangeRequest {
                limit: 500,
                ..RangeRequest::default()
            },
            &l,
        )
        .unwrap();
        assert_eq!((everything.end, everything.limit), (None, 100));
    }
}
