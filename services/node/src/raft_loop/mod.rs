//! The Raft loop: the tokio shell around the [`Replica`].
//!
//! Ticks from a timer, peer messages from the transport and requests from the API arrive over bounded
//! channels; the loop hands them to the replica, which decides everything. The loop then carries out what the
//! replica asked: it persists each `Ready` with one fsync on its own thread (group commit: while that fsync
//! runs, new proposals pile up in the channels and go to disk together in the next `Ready`), sends messages,
//! answers the API's oneshot channels and publishes the view. Nothing else touches the replica, so it needs
//! no lock.
//!
//! The API reads what it may read without the loop: the state machine (behind a read-write lock, written only
//! by the replica), the applied index and the node's [`View`] (role, leader, health), both published through
//! `watch` channels.
//!
//! ## Layout
//! - `mod.rs`: the requests the loop serves, the loop itself, the Ready cycle over the WAL.
//! - `observe.rs`: role changes: the published view, health, election and leader-change spans.
//! - `tests.rs`: the loop over a fault-injecting disk: a failed fsync stops it and acknowledges nothing, and
//!   one during the shutdown hand-over is returned.

mod observe;

use crate::error::NodeError;
use crate::replica::{self, Answer, Output, Replica, Waiters};
use crate::state::StateMachine;
use crate::transport::{Inbound, Transport};
use observe::Observer;
use reinado_proto::v1::{MemberContext, WriteOutcome};
use reinado_raft::{Entry, Index, NodeId, Role, Term};
use reinado_storage::DiskStorage;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, info_span, warn};

pub use replica::{MemberInfo, ReplicaError as LoopError, Settings, StatusReport};

/// The most inputs handled between two looks at the core: enough to batch a burst of proposals into one
/// `Ready`, few enough to keep ticks on time.
const DRAIN_BATCH: usize = 512;

/// What the node looks like from outside, published after every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The Raft role.
    pub role: Role,
    /// The current term.
    pub term: Term,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The leader's client address, if known.
    pub leader_addr: String,
    /// The node is a voter or learner of the cluster.
    pub member: bool,
    /// The node knows a leader in the current term and has caught up with it: it serves.
    pub serving: bool,
}

impl View {
    /// The error for a write or cluster change sent here while this node is not the leader.
    pub fn not_leader(&self) -> NodeError {
        match self.leader {
            Some(id) => NodeError::NotLeader {
                id,
                addr: self.leader_addr.clone(),
            },
            None => NodeError::NoLeader,
        }
    }
}

/// A reply channel.
pub type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// The node's waiters are the API's reply channels.
pub struct NodeWaiters;

impl Waiters for NodeWaiters {
    type Write = Reply<WriteOutcome>;
    type Read = Reply<Index>;
    type Members = Reply<Vec<MemberInfo>>;
    type Leader = Reply<NodeId>;
}

/// A request to the Raft loop.
pub enum Request {
    /// Propose an encoded `Command`; answered once it is applied.
    Write {
        /// The encoded command.
        data: Vec<u8>,
        /// The request's span, parent of the commit and apply spans.
        span: tracing::Span,
        /// The outcome.
        reply: Reply<WriteOutcome>,
    },
    /// Obtain a linearizable read index (thesis §6.4), answered once this node has applied it.
    ReadIndex {
        /// The index.
        reply: Reply<Index>,
    },
    /// Add a member as a learner (promoted later unless `ctx.stay_learner`).
    AddMember {
        /// The new member.
        id: NodeId,
        /// Its addresses.
        ctx: MemberContext,
        /// The members once it is applied.
        reply: Reply<Vec<MemberInfo>>,
    },
    /// Remove a member.
    RemoveMember {
        /// The member.
        id: NodeId,
        /// The members once it is applied.
        reply: Reply<Vec<MemberInfo>>,
    },
    /// Promote a learner that caught up to voter.
    PromoteMember {
        /// The learner.
        id: NodeId,
        /// The members once it is applied.
        reply: Reply<Vec<MemberInfo>>,
    },
    /// Hand leadership to `target`, or to the most caught-up voter.
    TransferLeader {
        /// The new leader, if chosen.
        target: Option<NodeId>,
        /// The leader once the transfer is done.
        reply: Reply<NodeId>,
    },
    /// Report the node's state.
    Status {
        /// The report.
        reply: Reply<StatusReport>,
    },
    /// The committed entry at `index`.
    LogEntry {
        /// The index.
        index: Index,
        /// The entry.
        reply: Reply<Entry>,
    },
    /// A leader steps down (Fault API).
    StepDown {
        /// What happened.
        reply: Reply<String>,
    },
    /// Renew a lease on the leader; answered with its TTL in seconds. The renewal is not confirmed yet: the
    /// caller acknowledges it only after a read index (see `replica::lessor`).
    LeaseKeepAlive {
        /// The lease.
        id: i64,
        /// Its TTL.
        reply: Reply<i64>,
    },
    /// A lease as the leader's clock sees it.
    LeaseTimeToLive {
        /// The lease.
        id: i64,
        /// With its keys.
        keys: bool,
        /// What the leader knows.
        reply: Reply<replica::LeaseTtl>,
    },
}

/// What the loop needs besides the replica.
pub struct Parts {
    /// The durable log.
    pub storage: DiskStorage,
    /// Outgoing peer traffic.
    pub transport: Transport,
    /// Publishes the applied index.
    pub applied: watch::Sender<Index>,
    /// Publishes the view.
    pub view: watch::Sender<View>,
    /// Peer messages and announcements.
    pub inbox: mpsc::Receiver<Inbound>,
    /// API requests.
    pub requests: mpsc::Receiver<Request>,
    /// Flips to true when the node must stop.
    pub shutdown: watch::Receiver<bool>,
}

/// The shell's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The tick.
    pub tick: Duration,
    /// How long a leader waits for a successor on shutdown.
    pub shutdown_timeout: Duration,
}

/// The Raft loop's state.
pub struct RaftLoop {
    replica: Replica<NodeWaiters>,
    timing: Timing,
    storage: DiskStorage,
    transport: Transport,
    applied_tx: watch::Sender<Index>,
    observer: Observer,
    /// Where the replica's monotonic clock (for leases) starts.
    origin: std::time::Instant,
}

impl RaftLoop {
    /// A loop over `replica`.
    pub fn new(replica: Replica<NodeWaiters>, timing: Timing, parts: Parts) -> (Self, LoopInputs) {
        let observer = Observer::new(replica.settings().id, parts.view);
        let mut lp = RaftLoop {
            replica,
            timing,
            storage: parts.storage,
            transport: parts.transport,
            applied_tx: parts.applied,
            observer,
            origin: std::time::Instant::now(),
        };
        let peers = lp.replica.peer_addrs();
        lp.transport.set_peers(&peers);
        let inputs = LoopInputs {
            inbox: parts.inbox,
            requests: parts.requests,
            shutdown: parts.shutdown,
        };
        (lp, inputs)
    }

    /// The shared state machine.
    pub fn state(&self) -> Arc<RwLock<StateMachine>> {
        self.replica.state().clone()
    }

    /// Runs until shutdown is asked for or the disk fails. On shutdown a leader first hands leadership to a
    /// caught-up peer; what was handed to the log is flushed either way. A storage error, during the hand-over
    /// too, stops the loop at once and is returned: nothing is acknowledged after it, and the process must
    /// exit with it (the storage refuses further writes, and a retried fsync may lie).
    pub async fn run(mut self, mut inputs: LoopInputs) -> Result<(), LoopError> {
        let mut ticker = tokio::time::interval(self.timing.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = Output::default();
        let result = loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => self.replica.tick_at(self.now_ms(), &mut out),
                Some(first) = inputs.inbox.recv() => {
                    self.on_inbound(first, &mut out);
                    for _ in 0..DRAIN_BATCH {
                        let Ok(next) = inputs.inbox.try_recv() else { break };
                        self.on_inbound(next, &mut out);
                    }
                }
                Some(first) = inputs.requests.recv() => {
                    self.on_request(first, &mut out);
                    for _ in 0..DRAIN_BATCH {
                        let Ok(next) = inputs.requests.try_recv() else { break };
                        self.on_request(next, &mut out);
                    }
                }
                _ = inputs.shutdown.changed() => break Ok(()),
            }
            self.replica.advance_clock(self.now_ms());
            if let Err(e) = self.drive(&mut out) {
                break Err(e);
            }
        };
        let result = match result {
            Ok(()) => self.hand_over(&mut inputs).await,
            failed => failed,
        };
        self.replica.fail_all(NodeError::ShuttingDown, &mut out);
        self.dispatch(&mut out);
        self.observer.stopping();
        result
    }

    /// On shutdown, a leader transfers leadership to its most caught-up voter and keeps the loop running
    /// (without taking requests) until the transfer is done or the shutdown timeout passes. A storage error
    /// ends it, and is returned.
    async fn hand_over(&mut self, inputs: &mut LoopInputs) -> Result<(), LoopError> {
        let Some(target) = self.replica.hand_over() else {
            return Ok(());
        };
        let span = info_span!("raft.shutdown_transfer", target);
        let _guard = span.enter();
        info!(target, "shutting down: handing leadership over");
        let deadline = tokio::time::Instant::now() + self.timing.shutdown_timeout;
        let mut ticker = tokio::time::interval(self.timing.tick);
        let mut out = Output::default();
        while self.replica.raft().soft_state().role == Role::Leader {
            self.drive(&mut out)?;
            tokio::select! {
                _ = ticker.tick() => self.replica.tick(&mut out),
                Some(msg) = inputs.inbox.recv() => self.on_inbound(msg, &mut out),
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("leadership hand-over timed out");
                    return Ok(());
                }
            }
        }
        // Let the step-down's messages (and the vote for the target) leave before the process exits.
        self.drive(&mut out)?;
        tokio::time::sleep(self.timing.tick).await;
        Ok(())
    }

    /// Milliseconds on the replica's monotonic clock.
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn on_inbound(&mut self, inbound: Inbound, out: &mut Output<NodeWaiters>) {
        match inbound {
            Inbound::Message(msg) => {
                self.observer.on_message(&msg);
                self.replica.step(msg);
            }
            Inbound::PeerAddrs {
                id,
                client_addr,
                peer_addr,
            } => {
                self.transport.peer_up(id);
                self.replica.announce(id, client_addr, peer_addr, out);
            }
            Inbound::Probe { id, reply } => {
                let _ = reply.send(self.replica.probe(id));
            }
            Inbound::PeerLost { id } => self.replica.peer_lost(id),
        }
    }

    fn on_request(&mut self, req: Request, out: &mut Output<NodeWaiters>) {
        let req = match req {
            Request::Write { data, span, reply } => replica::Request::Write {
                data,
                span,
                waiter: reply,
            },
            Request::ReadIndex { reply } => replica::Request::ReadIndex { waiter: reply },
            Request::AddMember { id, ctx, reply } => replica::Request::AddMember {
                id,
                ctx,
                waiter: reply,
            },
            Request::RemoveMember { id, reply } => {
                replica::Request::RemoveMember { id, waiter: reply }
            }
            Request::PromoteMember { id, reply } => {
                replica::Request::PromoteMember { id, waiter: reply }
            }
            Request::TransferLeader { target, reply } => replica::Request::TransferLeader {
                target,
                waiter: reply,
            },
            Request::Status { reply } => {
                let _ = reply.send(Ok(self.replica.status_report()));
                return;
            }
            Request::LogEntry { index, reply } => {
                let _ = reply.send(self.replica.log_entry(index));
                return;
            }
            Request::StepDown { reply } => {
                let _ = reply.send(self.replica.step_down());
                return;
            }
            Request::LeaseKeepAlive { id, reply } => {
                let _ = reply.send(self.replica.renew_lease(id, self.now_ms()));
                return;
            }
            Request::LeaseTimeToLive { id, keys, reply } => {
                let _ = reply.send(self.replica.lease_ttl(id, keys, self.now_ms()));
                return;
            }
        };
        self.replica.request(req, out);
    }

    /// Handles every `Ready` the replica has: its messages leave at once (a leader replicates while it
    /// writes), then what must be durable is written with one `fdatasync`, then the replica applies and
    /// answers. The write runs under `block_in_place`, so the runtime moves the node's other tasks (gRPC
    /// handlers, peer streams) to another worker while the loop waits for the disk; doing it on the loop's
    /// own thread avoids two thread hand-offs per write, which on a busy machine cost more than the fsync.
    fn drive(&mut self, out: &mut Output<NodeWaiters>) -> Result<(), LoopError> {
        let replica = &mut self.replica;
        let storage = &mut self.storage;
        let transport = &mut self.transport;
        let result = tokio::task::block_in_place(|| {
            while replica.write_ready(storage, out)? {
                transport.send(std::mem::take(&mut out.messages));
                storage.sync()?;
                replica.synced(storage, out)?;
            }
            Ok(())
        });
        self.dispatch(out);
        result
    }

    /// Carries out what the replica asked for: messages, peer addresses, answers, the published state.
    fn dispatch(&mut self, out: &mut Output<NodeWaiters>) {
        self.transport.send(std::mem::take(&mut out.messages));
        if let Some(peers) = out.peers.take() {
            self.transport.set_peers(&peers);
        }
        for (role, leader) in out.role_changes.drain(..) {
            self.observer
                .on_soft_state(self.replica.raft(), role, leader);
        }
        if let Some(applied) = out.applied.take() {
            self.applied_tx.send_replace(applied);
        }
        out.installed_snapshot = None;
        for answer in out.answers.drain(..) {
            match answer {
                Answer::Write(reply, result) => drop(reply.send(result)),
                Answer::Read(reply, result) => drop(reply.send(result)),
                Answer::Members(reply, result) => drop(reply.send(result)),
                Answer::Leader(reply, result) => drop(reply.send(result)),
            }
        }
        self.observer
            .publish(self.replica.raft(), self.replica.client_addrs());
    }
}

/// The channels the loop listens on.
pub struct LoopInputs {
    inbox: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    shutdown: watch::Receiver<bool>,
}

/// Logs why the loop stopped.
pub fn report(result: &Result<(), LoopError>) {
    if let Err(e) = result {
        error!(
            "the Raft loop stopped: {e}; the node exits (a supervisor may restart it from its disk)"
        );
    }
}

#[cfg(test)]
mod tests;
