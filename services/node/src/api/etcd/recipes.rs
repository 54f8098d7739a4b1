//! What the Lock and Election services share, etcd's recipes run by the cluster: a contender owns the key
//! `NAME/<lease in hex>`, created under its lease, and its turn comes when every key under `NAME/` created
//! before its own is gone (deleted, or expired with its lease). The create revision of the owned key orders
//! the contenders and is the fencing token: it only grows from one holder to the next.

use super::{EtcdApi, validate};
use crate::error::NodeError;
use crate::state::StateMachine;
use reinado_proto::etcd::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, range_request, request_op,
    response_op,
};
use reinado_proto::etcd::mvccpb;

/// The most changes looked at per wake-up while waiting for a turn (the rest the next time).
const EVENTS_PER_WAKE: usize = 256;

/// The key a contender with `lease` owns under `name`: `name/<lease in hex>`, as etcd names it.
pub(super) fn owned_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name/`: where the contenders' keys live.
pub(super) fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The end of the range of keys under `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    crate::api::prefix_end(prefix).unwrap_or_else(|| vec![0])
}

/// A comparison that holds if `key`'s create revision is `rev` (0: the key does not exist).
pub(super) fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(rev)),
        range_end: Vec::new(),
    }
}

/// A Put as a transaction's operation.
pub(super) fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..PutRequest::default()
        })),
    }
}

/// Refuses an empty name (etcd's own check would fail on the key).
pub(super) fn check_name(name: &[u8]) -> Result<(), NodeError> {
    if name.is_empty() {
        return Err(NodeError::InvalidArgument(
            "etcdserver: key is not provided (the lock or election name is empty)".into(),
        ));
    }
    Ok(())
}

/// The first key created under `prefix` (the lock holder, the election's leader), in `sm`.
pub(super) fn first_created(sm: &StateMachine, prefix: &[u8]) -> Option<mvccpb::KeyValue> {
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: range_request::SortOrder::Ascend as i32,
        sort_target: range_request::SortTarget::Create as i32,
        ..RangeRequest::default()
    };
    sm.etcd_range(&req, usize::MAX).ok()?.kvs.into_iter().next()
}

/// True if a key under `prefix` was created before revision `rev`.
fn any_created_before(sm: &StateMachine, prefix: &[u8], rev: i64) -> bool {
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        max_create_revision: rev - 1,
        limit: 1,
        keys_only: true,
        ..RangeRequest::default()
    };
    rev > 1
        && sm
            .etcd_range(&req, usize::MAX)
            .is_ok_and(|r| !r.kvs.is_empty())
}

impl EtcdApi {
    /// Creates `key` with `value` under `lease` unless it exists. Returns the key's create revision and,
    /// if it existed already, its value.
    pub(super) async fn claim(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(i64, Option<Vec<u8>>), NodeError> {
        let txn = TxnRequest {
            compare: vec![created_at(key, 0)],
            success: vec![put_op(key, value, lease)],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..RangeRequest::default()
                })),
            }],
        };
        validate::txn(&txn, &self.api.inner.limits)?;
        let (resp, revision) = self.propose_txn(txn).await?;
        if resp.succeeded {
            return Ok((i64::try_from(revision).unwrap_or(i64::MAX), None));
        }
        let existing = resp
            .responses
            .into_iter()
            .next()
            .and_then(|r| match r.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
        match existing {
            Some(kv) => Ok((kv.create_revision, Some(kv.value))),
            // Deleted between the comparison and the range: impossible inside one transaction.
            None => Err(NodeError::Unavailable(
                "the contender's key vanished inside its own transaction; retry".into(),
            )),
        }
    }

    /// Waits until no key under `prefix` created before `rev` is left: `mine`'s turn. Fails if `mine` is
    /// deleted meanwhile (its lease ran out or was revoked), and when the node shuts down. Wakes up on every
    /// applied entry, but looks again only when a change touched `prefix`.
    pub(super) async fn wait_turn(
        &self,
        prefix: &[u8],
        mine: &[u8],
        rev: i64,
    ) -> Result<(), NodeError> {
        let end = prefix_end(prefix);
        let mut applied = self.api.inner.applied.clone();
        let mut shutdown = self.api.inner.shutdown.clone();
        let mut next = 0;
        loop {
            {
                let sm = self.state();
                let touched = next == 0
                    || match sm.etcd_events(next, prefix, &end, EVENTS_PER_WAKE) {
                        Ok((events, resume)) => {
                            next = resume;
                            !events.is_empty()
                        }
                        // History trimmed under us: look at the state itself.
                        Err(_) => {
                            next = sm.revision() + 1;
                            true
                        }
                    };
                if next == 0 {
                    next = sm.revision() + 1;
                }
                if touched {
                    if sm.get(mine).is_none() {
                        return Err(session_expired());
                    }
                    if !any_created_before(&sm, prefix, rev) {
                        return Ok(());
                    }
                }
            }
            tokio::select! {
                changed = applied.changed() => changed.map_err(|_| NodeError::ShuttingDown)?,
                _ = shutdown.wait_for(|stop| *stop) => return Err(NodeError::ShuttingDown),
            }
        }
    }

    /// After a wait, confirms with a linearizable read that `mine` still exists: the turn is real.
    pub(super) async fn confirm_owned(&self, mine: &[u8]) -> Result<(), NodeError> {
        self.api.linearize().await?;
        match self.state().get(mine) {
            Some(_) => Ok(()),
            None => Err(session_expired()),
        }
    }
}

/// The contender's key is gone: its lease ran out or was revoked while it waited.
fn session_expired() -> NodeError {
    NodeError::FailedPrecondition(
        "the contender's key was deleted while it waited (its lease ran out or was revoked); grant a new \
         lease and try again"
            .into(),
    )
}
