//! Lease holders: each grants a lease, puts its key under it, keeps it alive for a while, then lets it lapse
//! (and starts again), as a process holding a lock or leadership through etcd would. Their acknowledged
//! grants and renewals go to the lease checker; the revokes the leaders propose when leases run out are
//! checked against them as replicas apply them.

use super::{ATTEMPT_TIMEOUT_MS, Event, World};
use crate::leases::clock_at;
use crate::node::{LeaseOp, LeaseRequest, LeaseResponse};
use prost::Message as _;
use reinado_proto::v1::{Command, command};
use reinado_raft::NodeId;

/// One lease holder.
#[derive(Debug, Default)]
pub(super) struct Holder {
    seq: u64,
    hint: Option<NodeId>,
    /// The request waiting for its answer.
    pending: Option<LeaseRequest>,
    /// The lease it holds, and whether its key is written under it.
    lease: Option<(i64, bool)>,
    ttl_s: i64,
    renewals_left: u64,
    cycles_left: u64,
}

impl World {
    /// At healing, every holder that holds a lease revokes it (the rest run out on their own).
    pub(super) fn holders_stop(&mut self) {
        for h in 0..self.holders.len() as u64 {
            self.schedule(1, Event::HolderStep(h));
        }
    }

    /// On most seeds, one or two lease holders, each for a few cycles.
    pub(super) fn start_holders(&mut self) {
        let holders = self.rng.range(0, 3);
        for h in 0..holders {
            let cycles_left = self.rng.range(1, 5);
            self.holders.push(Holder {
                cycles_left,
                ..Holder::default()
            });
            let at = self.rng.range(0, 500);
            self.schedule(at, Event::HolderStep(h));
        }
    }

    /// Node `id`'s clock now.
    pub(super) fn clock(&self, id: NodeId) -> u64 {
        clock_at(self.now, self.nodes.get(&id).map_or(0, |n| n.clock_ppm))
    }

    /// A holder's next move: grant, put its key, renew, or let the lease lapse.
    pub(super) fn holder_step(&mut self, h: u64) {
        let healed = self.healed;
        let holder = &mut self.holders[h as usize];
        if holder.pending.is_some() {
            return;
        }
        let op = match holder.lease {
            None if holder.cycles_left == 0 || healed => return,
            None => {
                holder.ttl_s = 1 + (holder.seq % 2) as i64;
                LeaseOp::Grant {
                    ttl_s: holder.ttl_s,
                }
            }
            Some((lease, false)) => LeaseOp::Put { lease, key: h },
            Some((lease, true)) if holder.renewals_left > 0 && !healed => LeaseOp::Renew {
                lease,
                at: 0,
                ttl_s: 0,
            },
            // The faults are over: the holder stops and closes its session, as a client that exits does.
            Some((lease, _)) if healed => LeaseOp::Revoke { lease },
            Some((lease, true)) => {
                // It stops renewing: the lease must run out, and its key go with it.
                holder.lease = None;
                holder.cycles_left -= 1;
                let ttl_ms = holder.ttl_s as u64 * 1000;
                self.trace(|| format!("holder {h} lets lease {lease:x} lapse"));
                let after = ttl_ms + self.rng.range(0, ttl_ms);
                return self.schedule(after, Event::HolderStep(h));
            }
        };
        self.send_lease(h, op);
    }

    fn send_lease(&mut self, h: u64, op: LeaseOp) {
        let holder = &mut self.holders[h as usize];
        holder.seq += 1;
        let req = LeaseRequest {
            holder: h,
            seq: holder.seq,
            op,
        };
        holder.pending = Some(req);
        let hint = holder.hint;
        let live = self.live_ids();
        let Some(target) = hint.or_else(|| self.pick(&live)) else {
            return self.schedule(ATTEMPT_TIMEOUT_MS, Event::HolderTimeout(h, req.seq));
        };
        let delay = self.rng.range(1, 4);
        self.trace(|| format!("holder {h} asks n{target}: {op:?}"));
        self.schedule(delay, Event::LeaseToNode(target, req));
        self.schedule(ATTEMPT_TIMEOUT_MS, Event::HolderTimeout(h, req.seq));
    }

    /// A holder's request reaches node `id`.
    pub(super) fn on_lease_request(&mut self, id: NodeId, req: LeaseRequest) {
        let (now, clock) = (self.now, self.clock(id));
        let mut answered = None;
        self.with_server(id, None, |s, out| {
            answered = s.request_lease(req, (now, clock), out);
        });
        if let Some(resp) = answered {
            let delay = self.rng.range(1, 4);
            self.schedule(delay, Event::LeaseAnswer(Box::new((req, resp, id, now))));
        }
    }

    /// A node's answer reaches its holder; `node` answered at `at`.
    pub(super) fn on_lease_answer(
        &mut self,
        req: LeaseRequest,
        resp: LeaseResponse,
        (node, at): (NodeId, u64),
    ) {
        let h = req.holder;
        let holder = &mut self.holders[h as usize];
        if holder.pending.map(|p| p.seq) != Some(req.seq) {
            return; // a late answer to an attempt given up on
        }
        holder.pending = None;
        self.trace(|| format!("holder {h}: n{node} answers {:?} with {resp:?}", req.op));
        let holder = &mut self.holders[h as usize];
        let third = holder.ttl_s as u64 * 1000 / 3;
        match resp {
            LeaseResponse::Granted { lease, ttl_s } => {
                holder.lease = Some((lease, false));
                holder.ttl_s = ttl_s;
                holder.renewals_left = 2 + req.seq % 10;
                self.leases.renewed(lease, ttl_s, node, at);
                self.trace(|| {
                    format!("holder {h} holds lease {lease:x} (TTL {ttl_s}s) from n{node}")
                });
                self.schedule(1, Event::HolderStep(h));
            }
            LeaseResponse::Put => {
                if let Some((lease, _)) = holder.lease {
                    holder.lease = Some((lease, true));
                }
                self.schedule(third, Event::HolderStep(h));
            }
            LeaseResponse::Renewed { ttl_s, node, at } => {
                holder.renewals_left -= 1;
                if let LeaseOp::Renew { lease, .. } = req.op {
                    self.leases.renewed(lease, ttl_s, node, at);
                }
                self.schedule(third, Event::HolderStep(h));
            }
            LeaseResponse::Revoked => {
                holder.lease = None;
                holder.cycles_left = 0;
            }
            LeaseResponse::NotFound | LeaseResponse::Refused => {
                // Lost (it could not be renewed in time), or the key refused: start over.
                holder.lease = None;
                holder.cycles_left = holder.cycles_left.saturating_sub(1);
                self.trace(|| format!("holder {h} lost its lease"));
                self.schedule(10, Event::HolderStep(h));
            }
            LeaseResponse::Retry(hint) => {
                holder.hint = hint;
                let op = req.op;
                let delay = self.rng.range(5, 30);
                self.schedule(delay, Event::HolderRetry(h, op));
            }
        }
    }

    /// A request of holder `h` had no answer in time: ask another node.
    pub(super) fn on_holder_timeout(&mut self, h: u64, seq: u64) {
        let holder = &mut self.holders[h as usize];
        match holder.pending {
            Some(req) if req.seq == seq => {
                holder.pending = None;
                holder.hint = None;
                self.send_lease(h, req.op);
            }
            _ => {}
        }
    }

    /// Sends `op` again, unless the holder moved on.
    pub(super) fn holder_retry(&mut self, h: u64, op: LeaseOp) {
        if self.holders[h as usize].pending.is_none() {
            self.send_lease(h, op);
        }
    }

    /// A replica applied entries: the revokes of leases that ran out are checked against the renewals.
    pub(super) fn check_expiries(&mut self, entries: &[(u64, u64, Vec<u8>)]) {
        for (_, _, data) in entries {
            let Ok(Command {
                op: Some(command::Op::LeaseRevoke(revoke)),
                ..
            }) = Command::decode(data.as_slice())
            else {
                continue;
            };
            if !revoke.expired {
                continue;
            }
            let now = self.now;
            let ppm: std::collections::BTreeMap<NodeId, i64> = self
                .nodes
                .iter()
                .map(|(&id, n)| (id, n.clock_ppm))
                .collect();
            let checked = self
                .leases
                .expired(&revoke.ids, now, |id| ppm.get(&id).copied().unwrap_or(0));
            if let Err(v) = checked {
                return self.fail(v);
            }
        }
    }

    /// True while a holder waits for an answer or holds a lease.
    pub(super) fn holders_busy(&self) -> bool {
        self.holders
            .iter()
            .any(|h| h.pending.is_some() || h.lease.is_some())
    }
}
