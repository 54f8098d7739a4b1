//! etcd's v3 semantics over the state machine: ranges at the current or a past revision, transactions as
//! etcd applies them, compaction, and the changes a watch follows.
//!
//! Revisions are log indices: every write is applied at its entry's index, and every key a transaction
//! writes gets that one revision, as in etcd. Past revisions are served from the change history (each event
//! carries the key's previous version), undoing the changes after the revision asked for; the history is
//! complete from `History::first_revision` on, so a read at `first_revision - 1` or later can be answered.
//! Older reads, and reads below the compaction point, fail with etcd's error.

use super::{Record, StateMachine, refusal};
use prost::Message as _;
use reinado_proto::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare, range_request,
    request_op, response_op,
};
use reinado_proto::etcd::mvccpb;
use reinado_proto::v1::{Refusal, WriteOutcome};
use reinado_raft::Index;
use std::collections::BTreeMap;
use std::ops::Bound;

/// etcd's message for a revision below the compaction point.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a revision above the current one.
pub const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";

/// The most bytes of keys and values one range inside a transaction returns (the rest is cut, `more` set):
/// every replica computes a transaction's responses when it applies it.
const TXN_RANGE_BYTES: usize = 4 << 20;

/// A revision that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// Below what the history still holds. `compact_revision` is the oldest revision a watch can start
    /// from (etcd's `WatchResponse.compact_revision`).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The oldest revision still available.
        compact_revision: u64,
    },
    /// Above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    Future {
        /// The current revision.
        current: u64,
    },
}

impl From<RevisionError> for crate::error::NodeError {
    fn from(e: RevisionError) -> Self {
        crate::error::NodeError::Compacted(e.to_string())
    }
}

/// A key interval as etcd reads `key` and `range_end`: an empty end is the key alone, `"\0"` every key from
/// `key` on, anything else the half-open interval.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    start: &'a [u8],
    end: Bound<&'a [u8]>,
}

impl<'a> Interval<'a> {
    /// The interval of `key` and `range_end`.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        let end = match range_end {
            [] => Bound::Included(key),
            [0] => Bound::Unbounded,
            end => Bound::Excluded(end),
        };
        Interval { start: key, end }
    }

    /// True if `key` is in the interval.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start
            && match self.end {
                Bound::Included(k) => key <= k,
                Bound::Excluded(k) => key < k,
                Bound::Unbounded => true,
            }
    }

    /// True if the interval holds no key (`range_end` at or before `key`).
    fn is_empty(&self) -> bool {
        matches!(self.end, Bound::Excluded(k) if k <= self.start)
    }

    fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        (Bound::Included(self.start), self.end)
    }
}

impl Record {
    /// The record as etcd shows it.
    pub(super) fn to_etcd(&self, key: &[u8]) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.to_vec(),
            create_revision: as_i64(self.create_revision),
            mod_revision: as_i64(self.mod_revision),
            version: as_i64(self.version),
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A revision from the wire: 0 and negative mean "the current one".
fn requested(revision: i64) -> Option<u64> {
    u64::try_from(revision).ok().filter(|&r| r > 0)
}

impl StateMachine {
    /// etcd's current revision: the index of the last entry applied.
    pub fn revision(&self) -> u64 {
        self.applied
    }

    /// The revision the history was last compacted to (0: never).
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Checks that the store can be read as of `rev`.
    fn readable_at(&self, rev: u64) -> Result<(), RevisionError> {
        if rev > self.applied {
            return Err(RevisionError::Future {
                current: self.applied,
            });
        }
        let oldest = self
            .compact_revision
            .max(self.history.first_revision.saturating_sub(1));
        if rev < oldest {
            return Err(RevisionError::Compacted {
                compact_revision: self.history.first_revision,
            });
        }
        Ok(())
    }

    /// The keys of `iv` as of `rev` (which [`StateMachine::readable_at`] accepted), in key order: the current
    /// ones with every later change undone.
    fn kvs_at(&self, iv: Interval<'_>, rev: u64) -> BTreeMap<Vec<u8>, mvccpb::KeyValue> {
        let mut kvs: BTreeMap<Vec<u8>, mvccpb::KeyValue> = self
            .kvs
            .range::<[u8], _>(iv.bounds())
            .map(|(k, r)| (k.clone(), r.to_etcd(k)))
            .collect();
        let events = &self.history.events;
        let after = events.partition_point(|(r, _)| *r <= rev);
        for (_, event) in events.range(after..).rev() {
            let Some(key) = event.kv.as_ref().map(|kv| &kv.key) else {
                continue;
            };
            if !iv.contains(key) {
                continue;
            }
            match &event.prev_kv {
                Some(prev) => kvs.insert(key.clone(), prev.clone()),
                None => kvs.remove(key),
            };
        }
        kvs
    }

    /// An etcd Range at the current revision or at `req.revision` (from the history), header unset. Adds keys
    /// until `max_bytes` of keys and values are in (at least one), then sets `more`.
    pub fn etcd_range(
        &self,
        req: &RangeRequest,
        max_bytes: usize,
    ) -> Result<RangeResponse, RevisionError> {
        let rev = requested(req.revision).unwrap_or(self.applied);
        self.readable_at(rev)?;
        let iv = Interval::new(&req.key, &req.range_end);
        if iv.is_empty() {
            return Ok(RangeResponse::default());
        }
        let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
        let order = range_request::SortOrder::try_from(req.sort_order)
            .unwrap_or(range_request::SortOrder::None);
        let target = range_request::SortTarget::try_from(req.sort_target)
            .unwrap_or(range_request::SortTarget::Key);
        let order = match (order, target) {
            // Keys come in ascending key order; another target means ascending on it (etcd 3.5).
            (range_request::SortOrder::None, range_request::SortTarget::Key) => None,
            (range_request::SortOrder::None, _) => Some(range_request::SortOrder::Ascend),
            (o, _) => Some(o),
        };
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let mut resp = RangeResponse::default();
        // The common case, the current revision in key order with no filter: no copy of what is not returned.
        if rev == self.applied && order.is_none() && !filtered {
            let mut bytes = 0;
            for (k, r) in self.kvs.range::<[u8], _>(iv.bounds()) {
                resp.count += 1;
                if req.count_only {
                    continue;
                }
                let full = limit.is_some_and(|l| resp.kvs.len() >= l)
                    || (!resp.kvs.is_empty() && bytes >= max_bytes);
                if full {
                    resp.more = true;
                    continue;
                }
                let mut kv = r.to_etcd(k);
                if req.keys_only {
                    kv.value.clear();
                }
                bytes += kv.key.len() + kv.value.len();
                resp.kvs.push(kv);
            }
            return Ok(resp);
        }
        let all = self.kvs_at(iv, rev);
        resp.count = all.len() as i64;
        if req.count_only {
            return Ok(resp);
        }
        let within = |v: i64, min: i64, max: i64| (min == 0 || v >= min) && (max == 0 || v <= max);
        let mut kvs: Vec<mvccpb::KeyValue> = all
            .into_values()
            .filter(|kv| {
                within(kv.mod_revision, req.min_mod_revision, req.max_mod_revision)
                    && within(
                        kv.create_revision,
                        req.min_create_revision,
                        req.max_create_revision,
                    )
            })
            .collect();
        if let Some(order) = order {
            sort(&mut kvs, target, order);
        }
        let mut bytes = 0;
        let mut kept = 0;
        for kv in &mut kvs {
            if limit.is_some_and(|l| kept >= l) || (kept > 0 && bytes >= max_bytes) {
                break;
            }
            if req.keys_only {
                kv.value.clear();
            }
            bytes += kv.key.len() + kv.value.len();
            kept += 1;
        }
        resp.more = kept < kvs.len();
        kvs.truncate(kept);
        resp.kvs = kvs;
        Ok(resp)
    }

    /// The changes over `key`..`range_end` (etcd's interval) from revision `start` on, with their previous
    /// versions, in revision order and whole revisions at a time, at most about `max_events`; and the
    /// revision to continue from.
    pub fn etcd_events(
        &self,
        start: u64,
        key: &[u8],
        range_end: &[u8],
        max_events: usize,
    ) -> Result<(Vec<mvccpb::Event>, u64), RevisionError> {
        let iv = Interval::new(key, range_end);
        self.history
            .since(
                start,
                self.applied,
                max_events,
                |k| iv.contains(k),
                Clone::clone,
            )
            .ok_or(RevisionError::Compacted {
                compact_revision: self.history.first_revision,
            })
    }

    /// Applies an etcd transaction at revision `index`, as etcd does: every comparison on the way is
    /// evaluated against the state before the transaction, every request is checked before any is run (a
    /// refused transaction changes nothing), then the requests run in order.
    pub(super) fn apply_etcd_txn(&mut self, index: Index, txn: TxnRequest) -> WriteOutcome {
        let mut path = Vec::new();
        self.txn_path(&txn, &mut path);
        if let Err(refused) = self.check_txn(&txn, &path) {
            return refused;
        }
        let mut branches = path.into_iter();
        let resp = self.run_txn(index, txn, &mut branches);
        WriteOutcome {
            revision: index,
            succeeded: resp.succeeded,
            etcd_response: resp.encode_to_vec(),
            ..WriteOutcome::default()
        }
    }

    /// The branch each transaction on the way takes (this one, then nested ones depth first).
    fn txn_path(&self, txn: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = txn.compare.iter().all(|c| self.etcd_compare(c));
        path.push(succeeded);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, path);
            }
        }
    }

    /// The requests `path` runs, depth first.
    fn requests_on<'t>(
        txn: &'t TxnRequest,
        path: &[bool],
        at: &mut usize,
        out: &mut Vec<&'t RequestOp>,
    ) {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestTxn(nested)) => {
                    Self::requests_on(nested, path, at, out);
                }
                Some(_) => out.push(op),
                None => {}
            }
        }
    }

    /// Refuses the transaction, before it changes anything, if a request on its path would fail: an unknown
    /// lease, `ignore_value`/`ignore_lease` on a missing key, a range at an unreadable revision, the quota or
    /// the keys a lease may hold.
    fn check_txn(&self, txn: &TxnRequest, path: &[bool]) -> Result<(), WriteOutcome> {
        let mut requests = Vec::new();
        Self::requests_on(txn, path, &mut 0, &mut requests);
        let mut grows_by: i64 = 0;
        let mut attached: BTreeMap<i64, usize> = BTreeMap::new();
        for op in requests {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    let old = self.kvs.get(&p.key);
                    if (p.ignore_value || p.ignore_lease) && old.is_none() {
                        let why = "etcdserver: key not found".to_string();
                        return Err(refusal(Refusal::InvalidArgument, why));
                    }
                    let lease = if p.ignore_lease {
                        old.map_or(0, |r| r.lease)
                    } else {
                        p.lease
                    };
                    if lease != 0 && !self.leases.contains(lease) {
                        let why = "etcdserver: requested lease not found".to_string();
                        return Err(refusal(Refusal::LeaseNotFound, why));
                    }
                    if lease != 0 && old.is_none_or(|r| r.lease != lease) {
                        *attached.entry(lease).or_default() += 1;
                    }
                    let value_len = if p.ignore_value {
                        old.map_or(0, |r| r.value.len())
                    } else {
                        p.value.len()
                    };
                    let old_len = old.map_or(0, |r| r.value.len() + p.key.len());
                    grows_by += (p.key.len() + value_len) as i64 - old_len as i64;
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    let iv = Interval::new(&d.key, &d.range_end);
                    if !iv.is_empty() {
                        let freed: usize = self
                            .kvs
                            .range::<[u8], _>(iv.bounds())
                            .map(|(k, r)| k.len() + r.value.len())
                            .sum();
                        grows_by -= freed as i64;
                    }
                }
                Some(request_op::Request::RequestRange(r)) => {
                    if let Some(rev) = requested(r.revision) {
                        self.readable_at(rev).map_err(revision_refusal)?;
                    }
                }
                Some(request_op::Request::RequestTxn(_)) | None => {}
            }
        }
        if grows_by > 0 && self.size_bytes.saturating_add(grows_by as u64) > self.limits.quota_bytes
        {
            let why = format!(
                "etcdserver: mvcc: database space exceeded (quota of {} bytes, {} bytes stored)",
                self.limits.quota_bytes, self.size_bytes
            );
            return Err(refusal(Refusal::Quota, why));
        }
        for (lease, more) in attached {
            let held = self.leases.get(lease).map_or(0, |l| l.keys.len());
            if held + more > self.limits.max_keys_per_lease {
                let why = format!(
                    "lease {lease:x} holds {held} keys; {more} more would pass the most allowed ({}, \
                     REINADO_MAX_KEYS_PER_LEASE)",
                    self.limits.max_keys_per_lease
                );
                return Err(refusal(Refusal::LeaseLimit, why));
            }
        }
        Ok(())
    }

    /// Runs a checked transaction's requests, taking each transaction's branch from `branches`.
    fn run_txn(
        &mut self,
        index: Index,
        txn: TxnRequest,
        branches: &mut std::vec::IntoIter<bool>,
    ) -> TxnResponse {
        let succeeded = branches.next().unwrap_or(false);
        let ops = if succeeded { txn.success } else { txn.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    let resp = self.etcd_range(&r, TXN_RANGE_BYTES).unwrap_or_default();
                    response_op::Response::ResponseRange(resp)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.etcd_put(index, p))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.etcd_delete(index, d))
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    response_op::Response::ResponseTxn(self.run_txn(index, nested, branches))
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    fn etcd_put(&mut self, index: Index, p: PutRequest) -> PutResponse {
        let old = self.kvs.get(&p.key);
        let prev_kv = old.filter(|_| p.prev_kv).map(|r| r.to_etcd(&p.key));
        let lease = match (p.ignore_lease, old) {
            (true, Some(r)) => r.lease,
            (true, None) => 0,
            _ => p.lease,
        };
        // `check_txn` refused unknown leases against the state before the transaction; whatever an earlier
        // request of the same transaction did, a key is never attached to a lease that is not held (a
        // snapshot holding one would be refused at every restart).
        let lease = if self.leases.contains(lease) {
            lease
        } else {
            0
        };
        let value = match (p.ignore_value, old) {
            (true, Some(r)) => r.value.clone(),
            _ => p.value,
        };
        self.put(index, p.key, value, lease);
        PutResponse {
            header: None,
            prev_kv,
        }
    }

    fn etcd_delete(&mut self, index: Index, d: DeleteRangeRequest) -> DeleteRangeResponse {
        let iv = Interval::new(&d.key, &d.range_end);
        let mut resp = DeleteRangeResponse::default();
        if iv.is_empty() {
            return resp;
        }
        let keys: Vec<Vec<u8>> = self
            .kvs
            .range::<[u8], _>(iv.bounds())
            .map(|(k, r)| {
                if d.prev_kv {
                    resp.prev_kvs.push(r.to_etcd(k));
                }
                k.clone()
            })
            .collect();
        resp.deleted = keys.len() as i64;
        for key in keys {
            self.delete(index, key);
        }
        resp
    }

    /// An etcd comparison: over every key of its interval (a missing key compares as a zero record, and
    /// fails a value comparison).
    fn etcd_compare(&self, c: &Compare) -> bool {
        let iv = Interval::new(&c.key, &c.range_end);
        let target = compare::CompareTarget::try_from(c.target);
        let mut any = false;
        if !iv.is_empty() {
            for (_, r) in self.kvs.range::<[u8], _>(iv.bounds()) {
                any = true;
                if !compare_one(c, target, Some(r)) {
                    return false;
                }
            }
        }
        any || compare_one(c, target, None)
    }

    /// Drops the history below `revision` (etcd's Compact): reads at `revision` and later still work.
    pub(super) fn compact(&mut self, index: Index, revision: u64) -> WriteOutcome {
        if revision <= self.compact_revision {
            return refusal(Refusal::Compacted, COMPACTED.to_string());
        }
        if revision > index {
            return refusal(Refusal::FutureRevision, FUTURE_REVISION.to_string());
        }
        self.compact_revision = revision;
        self.history.drop_below(revision);
        WriteOutcome {
            revision: index,
            ..WriteOutcome::default()
        }
    }
}

/// The refusal for a transaction's range at an unreadable revision.
fn revision_refusal(e: RevisionError) -> WriteOutcome {
    match e {
        RevisionError::Compacted { .. } => refusal(Refusal::Compacted, COMPACTED.to_string()),
        RevisionError::Future { .. } => {
            refusal(Refusal::FutureRevision, FUTURE_REVISION.to_string())
        }
    }
}

/// One key against an etcd comparison; `None` for a missing key.
fn compare_one(
    c: &Compare,
    target: Result<compare::CompareTarget, prost::UnknownEnumValue>,
    record: Option<&Record>,
) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let number = |v: u64| Some(as_i64(v));
    let ordering = match (target, &c.target_union) {
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => match record {
            Some(r) => r.value.as_slice().cmp(v.as_slice()),
            None => return false,
        },
        (Ok(CompareTarget::Version), u) => cmp(record.and_then(|r| number(r.version)), u),
        (Ok(CompareTarget::Create), u) => cmp(record.and_then(|r| number(r.create_revision)), u),
        (Ok(CompareTarget::Mod), u) => cmp(record.and_then(|r| number(r.mod_revision)), u),
        (Ok(CompareTarget::Lease), u) => cmp(record.map(|r| r.lease), u),
        _ => return false,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => false,
    }
}

/// A record's number (0 for a missing key) against the comparison's; a comparison whose union holds no
/// number compares against 0, as etcd's zero value does.
fn cmp(value: Option<i64>, union: &Option<compare::TargetUnion>) -> std::cmp::Ordering {
    use compare::TargetUnion;
    let against = match union {
        Some(TargetUnion::Version(n))
        | Some(TargetUnion::CreateRevision(n))
        | Some(TargetUnion::ModRevision(n))
        | Some(TargetUnion::Lease(n)) => *n,
        Some(TargetUnion::Value(_)) | None => 0,
    };
    value.unwrap_or(0).cmp(&against)
}

fn sort(
    kvs: &mut [mvccpb::KeyValue],
    target: range_request::SortTarget,
    order: range_request::SortOrder,
) {
    use range_request::SortTarget;
    kvs.sort_by(|a, b| {
        let o = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Ties stay in key order, as etcd's stable sort over key-ordered results leaves them.
        o.then_with(|| a.key.cmp(&b.key))
    });
    if order == range_request::SortOrder::Descend {
        kvs.reverse();
    }
}

#[cfg(test)]
mod tests;
