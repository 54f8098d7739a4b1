//! Leases as the replica serves them: the leader's clock runs them out (see `lessor`), keep-alives renew
//! them, time-to-live reads them.

use super::lessor::{self, MAX_EXPIRED_PER_ENTRY};
use super::{Replica, Waiters};
use crate::error::NodeError;
use prost::Message as _;
use reinado_proto::v1::{Command, LeaseRevoke, command};
use reinado_raft::Role;
use tracing::{info, warn};

/// What `TimeToLive` tells of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The TTL granted, in seconds.
    pub granted_s: i64,
    /// Seconds left on the leader's clock (rounded up).
    pub remaining_s: i64,
    /// The keys attached.
    pub keys: Vec<Vec<u8>>,
}

/// etcd's message for a lease that does not exist (or already ran out).
const NOT_FOUND: &str = "etcdserver: requested lease not found";

impl<W: Waiters> Replica<W> {
    /// Starts, runs or stops the lease clock, and proposes the revoke of the leases that ran out. Runs at
    /// every tick and once a `Ready` is applied.
    pub(super) fn run_lessor(&mut self) {
        let leading = self.raft.role() == Role::Leader && self.applied_before_term();
        if !leading {
            if self.lessor.running() {
                self.lessor.stop();
            }
            return;
        }
        let term = self.raft.term();
        let now = self.now_ms;
        let expired = {
            let sm = self.state.read().expect("state lock");
            if self.lessor.term() != term {
                let extension = (!self.settings.bugs.expire_without_extension)
                    .then_some(self.settings.election_ticks * self.settings.tick_ms);
                self.lessor.start(term, sm.leases(), now, extension);
                info!(term, leases = sm.leases().len(), "lease clock started");
            }
            self.lessor.expired(sm.leases(), now)
        };
        if expired.is_empty() {
            return;
        }
        let count = expired.len();
        let cmd = Command {
            op: Some(command::Op::LeaseRevoke(LeaseRevoke {
                ids: expired.clone(),
                expired: true,
            })),
            ..Command::default()
        };
        match self.raft.propose(cmd.encode_to_vec()) {
            Ok((index, _)) => info!(index, count, "leases ran out; revoke proposed"),
            Err(e) => {
                // Not proposed (a transfer under way, say): try again at the next tick.
                warn!("expired leases not revoked yet: {e}");
                for id in expired {
                    self.lessor.set_from(id, 0, now);
                }
            }
        }
        debug_assert!(count <= MAX_EXPIRED_PER_ENTRY);
    }

    /// Renews lease `id` at `now_ms` on this node's clock; returns its TTL in seconds. Only the leader with
    /// its clock running renews; the caller acknowledges the renewal only after a read index (a heartbeat
    /// round sent after this) confirmed the leadership.
    pub fn renew_lease(&mut self, id: i64, now_ms: u64) -> Result<i64, NodeError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.require_lease_clock()?;
        let ttl = self.live_lease(id)?;
        self.lessor.set_from(id, ttl, self.now_ms);
        Ok(ttl)
    }

    /// Lease `id` as the leader's clock sees it, with its keys if `keys`.
    pub fn lease_ttl(&mut self, id: i64, keys: bool, now_ms: u64) -> Result<LeaseTtl, NodeError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.require_lease_clock()?;
        let granted_s = self.live_lease(id)?;
        let remaining_ms = self
            .lessor
            .remaining_ms(id, self.now_ms)
            .unwrap_or(lessor::ttl_ms(granted_s));
        let keys = if keys {
            let sm = self.state.read().expect("state lock");
            let lease = sm.leases().get(id);
            lease
                .map(|l| l.keys.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(LeaseTtl {
            granted_s,
            remaining_s: remaining_ms.div_ceil(1000) as i64,
            keys,
        })
    }

    /// Leases are renewed and read on the leader, once its clock runs.
    fn require_lease_clock(&self) -> Result<(), NodeError> {
        if self.raft.role() != Role::Leader {
            let leader = self.raft.status().leader;
            return Err(match leader.and_then(|l| self.announced_client.get(&l)) {
                Some(addr) if leader != Some(self.settings.id) => NodeError::NotLeader {
                    id: leader.expect("matched"),
                    addr: addr.clone(),
                },
                _ => NodeError::NoLeader,
            });
        }
        if !self.lessor.running() {
            return Err(NodeError::Unavailable(
                "this node was just elected and has not applied its term's first entry; retry"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The TTL of lease `id` if it exists and is not running out.
    fn live_lease(&self, id: i64) -> Result<i64, NodeError> {
        let sm = self.state.read().expect("state lock");
        match sm.leases().get(id) {
            Some(lease) if !self.lessor.is_expiring(id) => Ok(lease.ttl_s),
            _ => Err(NodeError::NotFound(NOT_FOUND.into())),
        }
    }
}
