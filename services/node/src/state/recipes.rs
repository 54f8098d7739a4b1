//! etcd's lock and election recipes, as far as they are facts about the state: a contender owns the key
//! `NAME/<lease in hex>`, created under its lease, and its turn comes when every key under `NAME/` created
//! before its own is gone (deleted, or expired with its lease). The create revision of the owned key orders
//! the contenders and is the fencing token: it only grows from one holder to the next.
//!
//! The node's Lock and Election services wait on these (`api::etcd::recipes`); the simulator's lock holders
//! send the same claim through the replica and ask the same turn after a read index, so its lock checker
//! judges these facts as they ship (the services' waiting loop around them it does not run).

use super::{StateMachine, prefix_end};
use reinado_proto::etcd::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse, compare, range_request,
    request_op, response_op,
};
use reinado_proto::etcd::mvccpb;

/// The key a contender with `lease` owns under `name`: `name/<lease in hex>`, as etcd names it.
pub fn owned_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = contenders(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name/`: where the contenders' keys live.
pub fn contenders(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The end of the range of keys under `prefix` (every key, for an all-0xff prefix).
pub fn contenders_end(prefix: &[u8]) -> Vec<u8> {
    prefix_end(prefix).unwrap_or_else(|| vec![0])
}

/// A comparison that holds if `key`'s create revision is `rev` (0: the key does not exist).
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

/// A Put as a transaction's operation.
pub fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..PutRequest::default()
        })),
    }
}

/// The transaction that makes a contender: create `key` with `value` under `lease` unless it exists, and
/// read it if it does (a retried claim finds its own key).
pub fn claim_txn(key: &[u8], value: &[u8], lease: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, 0)],
        success: vec![put_op(key, value, lease)],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..RangeRequest::default()
            })),
        }],
    }
}

/// What a claim's transaction, applied at `revision`, made: the key's create revision (the contender's
/// place in line) and, if it existed already, its value. `None` if the key vanished inside the
/// transaction, which one transaction cannot do.
pub fn claimed(resp: TxnResponse, revision: u64) -> Option<(i64, Option<Vec<u8>>)> {
    if resp.succeeded {
        return Some((i64::try_from(revision).unwrap_or(i64::MAX), None));
    }
    let kv = resp
        .responses
        .into_iter()
        .next()
        .and_then(|r| match r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
            _ => None,
        })?;
    Some((kv.create_revision, Some(kv.value)))
}

/// Where a contender stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Every key created before its own is gone: it holds the lock, or leads.
    Mine,
    /// A key created before its own is still there.
    Waiting,
    /// Its own key is gone (its lease ran out or was revoked): it is no longer a contender.
    Gone,
}

impl StateMachine {
    /// The first key created under `prefix` (the lock holder, the election's leader).
    pub fn first_created(&self, prefix: &[u8]) -> Option<mvccpb::KeyValue> {
        let req = RangeRequest {
            key: prefix.to_vec(),
            range_end: contenders_end(prefix),
            limit: 1,
            sort_order: range_request::SortOrder::Ascend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            ..RangeRequest::default()
        };
        self.etcd_range(&req, usize::MAX)
            .ok()?
            .kvs
            .into_iter()
            .next()
    }

    /// Where the contender owning `mine` under `prefix`, created at `rev`, stands in this state. Once
    /// `Mine`, it stays so until its key goes: a key created before `rev` can never appear again.
    pub fn turn(&self, prefix: &[u8], mine: &[u8], rev: i64) -> Turn {
        if self.get(mine).is_none() {
            return Turn::Gone;
        }
        let earlier = RangeRequest {
            key: prefix.to_vec(),
            range_end: contenders_end(prefix),
            max_create_revision: rev - 1,
            limit: 1,
            keys_only: true,
            ..RangeRequest::default()
        };
        let waiting = rev > 1
            && self
                .etcd_range(&earlier, usize::MAX)
                .is_ok_and(|r| !r.kvs.is_empty());
        if waiting { Turn::Waiting } else { Turn::Mine }
    }
}
