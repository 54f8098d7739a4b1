//! The leader's lease clock: when each lease runs out.
//!
//! Which leases exist is replicated state (`state::Leases`); when one runs out is not. Only the leader keeps
//! that clock, in milliseconds of its own monotonic time, and when a lease runs out it proposes a revoke
//! (`LeaseRevoke { expired: true }`), so every replica deletes the lease's keys at the same entry.
//!
//! The rules that keep a lease from running out early (etcd's):
//! - A leader starts its clock only once it has applied the first entry of its term, so it knows every lease
//!   granted before it; it then gives every lease its whole TTL plus an election timeout from that moment.
//!   The previous leader renewed a lease at the latest just before it lost its majority, and the new leader
//!   was elected at least an election timeout after the followers last heard from it, so no lease runs out
//!   before its TTL has passed since its last renewal.
//! - A renewal (keep-alive) sets the lease's deadline first and is acknowledged to the client only after the
//!   leader has confirmed its leadership with a heartbeat round (a read index) sent after it: a deposed
//!   leader, paused or cut off, acknowledges nothing that its successor does not honour.
//! - A grant applied while leading runs from when it was applied here.

use crate::state::Leases;
use reinado_raft::Term;
use std::collections::{BTreeMap, BTreeSet};

/// The most leases one revoke entry expires; the rest follow in the next ones.
pub const MAX_EXPIRED_PER_ENTRY: usize = 1000;

/// What the lease clock knows, while this node leads.
#[derive(Debug, Default)]
pub struct Lessor {
    /// The term whose leader runs this clock; 0 while not leading.
    term: Term,
    /// Each lease's deadline, by id.
    deadline: BTreeMap<i64, u64>,
    /// The same, ordered by deadline.
    by_deadline: BTreeSet<(u64, i64)>,
    /// Leases whose expiry this leader proposed, not yet applied.
    expiring: BTreeSet<i64>,
}

impl Lessor {
    /// True while the clock runs (this node leads and has caught up in its term).
    pub fn running(&self) -> bool {
        self.term != 0
    }

    /// This node stopped leading: its deadlines mean nothing to the next leader.
    pub fn stop(&mut self) {
        *self = Lessor::default();
    }

    /// Starts the clock for term `term` at `now`: every lease gets its TTL plus `extension_ms` (an election
    /// timeout). `None` is the deliberate bug `expire-without-extension`: every lease runs out at once.
    pub fn start(&mut self, term: Term, leases: &Leases, now: u64, extension_ms: Option<u64>) {
        self.stop();
        self.term = term;
        for (id, lease) in leases.iter() {
            let deadline = match extension_ms {
                Some(extension) => now + ttl_ms(lease.ttl_s) + extension,
                None => now,
            };
            self.set(id, deadline);
        }
    }

    /// The term the clock runs for (0: stopped).
    pub fn term(&self) -> Term {
        self.term
    }

    /// Lease `id` was granted (applied) with `ttl_s`, or renewed, at `now`.
    pub fn set_from(&mut self, id: i64, ttl_s: i64, now: u64) {
        self.expiring.remove(&id);
        self.set(id, now + ttl_ms(ttl_s));
    }

    fn set(&mut self, id: i64, deadline: u64) {
        if let Some(old) = self.deadline.insert(id, deadline) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    /// True if lease `id`'s expiry was proposed (it can no longer be renewed).
    pub fn is_expiring(&self, id: i64) -> bool {
        self.expiring.contains(&id)
    }

    /// Milliseconds left of lease `id`, if the clock knows it.
    pub fn remaining_ms(&self, id: i64, now: u64) -> Option<u64> {
        self.deadline.get(&id).map(|d| d.saturating_sub(now))
    }

    /// The leases that ran out by `now` and still exist, at most [`MAX_EXPIRED_PER_ENTRY`]; they are marked
    /// as expiring (the caller proposes their revoke). Leases revoked meanwhile are forgotten.
    pub fn expired(&mut self, leases: &Leases, now: u64) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now || out.len() >= MAX_EXPIRED_PER_ENTRY {
                break;
            }
            self.by_deadline.pop_first();
            self.deadline.remove(&id);
            if leases.contains(id) {
                self.expiring.insert(id);
                out.push(id);
            }
        }
        self.expiring.retain(|id| leases.contains(*id));
        out
    }
}

/// A TTL in seconds as milliseconds (saturating: a TTL is bounded when granted).
pub fn ttl_ms(ttl_s: i64) -> u64 {
    u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000)
}
