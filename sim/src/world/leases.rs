//! Lease holders, contending for one lock as etcd's lock recipe does: each grants a lease, claims the lock
//! with a key under it, keeps it alive while it waits for its turn and for a while after it came, then
//! lets it lapse (or, at healing, revokes it) and starts again. Their acknowledged grants and renewals go to
//! the lease checker, their turns to the lock checker; the revokes that the leaders propose when leases run
//! out are checked against both as replicas apply them.

use super::{ATTEMPT_TIMEOUT_MS, Event, World};
use crate::leases::clock_at;
use crate::node::{LeaseOp, LeaseRequest, LeaseResponse};
use prost::Message as _;
use reinado_node::state::recipes::Turn;
use reinado_proto::v1::{Command, command};
use reinado_raft::NodeId;

/// One lease holder.
#[derive(Debug, Default)]
pub(super) struct Holder {
    seq: u64,
    hint: Option<NodeId>,
    /// The request waiting for its answer.
    pending: Option<LeaseRequest>,
    /// The lease it holds, and where it stands with the lock.
    lease: Option<(i64, Stage)>,
    /// While it waits for its turn, the next step asks for it (else it renews).
    ask_turn: bool,
    /// Its keep-alive broke while it waits: it asks for its turn, but no longer renews its lease (the
    /// Lock call of a process whose keep-alive stream died): the lease runs out under the waiting call.
    keep_alive_lost: bool,
    ttl_s: i64,
    renewals_left: u64,
    cycles_left: u64,
}

/// Where a holder stands with the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Its key is not claimed yet.
    Unclaimed,
    /// Its key was created at `token`, `pred` the one just before it; a key created before it is still
    /// there.
    Waiting { token: i64, pred: i64 },
    /// Its turn came: it holds the lock with `token`.
    Holding { token: i64 },
}

impl World {
    /// At healing, every holder that holds a lease revokes it (the rest run out on their own).
    pub(super) fn holders_stop(&mut self) {
        for h in 0..self.holders.len() as u64 {
            self.schedule(1, Event::HolderStep(h));
        }
    }

    /// On most seeds, one to four lease holders contending for the lock, each for a few cycles.
    pub(super) fn start_holders(&mut self) {
        let holders = self.rng.range(0, 5);
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
            // The faults are over: the holder stops and closes its session, as a client that exits does.
            Some((lease, _)) if healed => LeaseOp::Revoke { lease },
            Some((lease, Stage::Unclaimed)) => LeaseOp::Claim { lease },
            Some((lease, Stage::Waiting { token, pred }))
                if holder.ask_turn || holder.keep_alive_lost =>
            {
                LeaseOp::Turn {
                    lease,
                    token,
                    pred,
                    asked_at: 0,
                }
            }
            Some((lease, Stage::Waiting { .. })) => LeaseOp::Renew {
                lease,
                at: 0,
                ttl_s: 0,
            },
            Some((lease, Stage::Holding { .. })) if holder.renewals_left > 0 => LeaseOp::Renew {
                lease,
                at: 0,
                ttl_s: 0,
            },
            Some((lease, Stage::Holding { .. })) => {
                // It stops renewing: the lease must run out, its key go with it, and the lock pass on.
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

    fn send_lease(&mut self, h: u64, mut op: LeaseOp) {
        if let LeaseOp::Turn { asked_at, .. } = &mut op {
            *asked_at = self.now;
        }
        let holder = &mut self.holders[h as usize];
        holder.seq += 1;
        let req = LeaseRequest {
            holder: h,
            seq: holder.seq,
            op,
        };
        holder.pending = Some(req);
        // A turn can be asked of any member (a follower confirms it with a read index); the rest go to the
        // leader, if known.
        let hint = holder.hint.filter(|_| !matches!(op, LeaseOp::Turn { .. }));
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
                holder.lease = Some((lease, Stage::Unclaimed));
                holder.ttl_s = ttl_s;
                holder.renewals_left = 2 + req.seq % 10;
                self.leases.renewed(lease, ttl_s, node, at);
                self.trace(|| {
                    format!("holder {h} holds lease {lease:x} (TTL {ttl_s}s) from n{node}")
                });
                self.schedule(1, Event::HolderStep(h));
            }
            LeaseResponse::Claimed { token, pred } => {
                if let Some((lease, Stage::Unclaimed)) = holder.lease {
                    holder.lease = Some((lease, Stage::Waiting { token, pred }));
                    holder.ask_turn = true;
                    holder.keep_alive_lost = req.seq.is_multiple_of(3);
                    if holder.keep_alive_lost {
                        holder.renewals_left = 0;
                    }
                    self.locks.claimed(lease, token);
                }
                self.schedule(1, Event::HolderStep(h));
            }
            LeaseResponse::Turn(turn) => {
                let LeaseOp::Turn {
                    lease,
                    token,
                    asked_at,
                    ..
                } = req.op
                else {
                    unreachable!("a turn answers a turn")
                };
                holder.ask_turn = false;
                match turn {
                    Turn::Mine => {
                        holder.lease = Some((lease, Stage::Holding { token }));
                        self.trace(|| format!("holder {h} holds the lock, token {token}"));
                        if let Err(v) = self.locks.granted(lease, token, (asked_at, at)) {
                            return self.fail(v);
                        }
                        self.schedule(third, Event::HolderStep(h));
                    }
                    Turn::Waiting => self.schedule(third, Event::HolderStep(h)),
                    Turn::Gone => {
                        holder.lease = None;
                        holder.cycles_left = holder.cycles_left.saturating_sub(1);
                        self.trace(|| format!("holder {h} lost its lease while it waited"));
                        self.schedule(10, Event::HolderStep(h));
                    }
                }
            }
            LeaseResponse::Renewed { ttl_s, node, at } => {
                if let LeaseOp::Renew { lease, .. } = req.op {
                    self.leases.renewed(lease, ttl_s, node, at);
                }
                match holder.lease {
                    Some((_, Stage::Waiting { .. })) => {
                        holder.ask_turn = true;
                        self.schedule(1, Event::HolderStep(h));
                    }
                    _ => {
                        holder.renewals_left = holder.renewals_left.saturating_sub(1);
                        self.schedule(third, Event::HolderStep(h));
                    }
                }
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

    /// A replica applied entries: the revokes of leases that ran out are checked against the renewals, and
    /// every revoke deletes a contender's key for the lock checker.
    pub(super) fn check_expiries(&mut self, entries: &[(u64, u64, Vec<u8>)]) {
        for (_, _, data) in entries {
            let Ok(Command {
                op: Some(command::Op::LeaseRevoke(revoke)),
                ..
            }) = Command::decode(data.as_slice())
            else {
                continue;
            };
            let now = self.now;
            self.locks.revoked(&revoke.ids, now);
            if !revoke.expired {
                continue;
            }
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
