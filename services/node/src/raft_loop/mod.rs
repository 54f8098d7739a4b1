//! The Raft loop: the one task that owns the consensus core.
//!
//! Ticks from a timer, peer messages from the transport and requests from the API arrive over bounded
//! channels; the loop steps the core, persists each `Ready` with one fsync on its own
//! thread (group commit: while that fsync runs, new proposals pile up in the channels and go to disk together
//! in the next `Ready`), sends messages, applies
//! committed entries to the state machine and answers the requests waiting on them. Nothing else touches the
//! core, so it needs no lock.
//!
//! The API reads what it may read without the loop: the state machine (behind a read-write lock, written only
//! here), the applied index and the node's [`View`] (role, leader, health), both published through `watch`
//! channels.
//!
//! ## Layout
//! - `mod.rs`: the requests the loop serves, the loop itself, `ready`/`advance`, apply.
//! - `requests.rs`: each request: writes, read indexes, membership, transfers, status, log entries.
//! - `observe.rs`: role changes: the published view, health, election and leader-change spans.

mod observe;
mod requests;

use crate::error::NodeError;
use crate::state::StateMachine;
use crate::transport::{Inbound, Transport};
use crate::wal::Wal;
use observe::Observer;
use reinado_proto::v1::{MemberContext, WriteOutcome};
use reinado_raft::{
    Entry, EntryKind, HardState, Index, NodeId, Persisted, Raft, ReadState, Role, Term,
};
use reinado_storage::StorageError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, info_span, warn};

pub use requests::{MemberInfo, StatusReport};

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
    /// Obtain a linearizable read index (thesis §6.4); the caller then waits until it is applied.
    ReadIndex {
        /// The index to wait for.
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
}

/// A write waiting to be applied.
struct PendingWrite {
    term: Term,
    reply: Reply<WriteOutcome>,
    /// Open from proposal to commit; closed when the entry is applied.
    commit_span: tracing::Span,
    request_span: tracing::Span,
}

/// Reads waiting for one read index.
struct PendingReads {
    since: Instant,
    replies: Vec<Reply<Index>>,
}

/// What the loop needs besides the core.
pub struct Parts {
    /// The durable log.
    pub wal: Wal,
    /// Outgoing peer traffic.
    pub transport: Transport,
    /// The state machine, shared with the API for reads.
    pub state: Arc<RwLock<StateMachine>>,
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

/// Timing and limits of the loop.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node.
    pub id: NodeId,
    /// This node's client address.
    pub client_addr: String,
    /// The tick.
    pub tick: Duration,
    /// The election timeout.
    pub election_timeout: Duration,
    /// Applied entries between snapshots.
    pub snapshot_entries: u64,
    /// How long a read waits for its index.
    pub request_timeout: Duration,
    /// How long a leader waits for a successor on shutdown.
    pub shutdown_timeout: Duration,
    /// Bootstrap peers' addresses (id → peer address), a fallback until the log says more.
    pub bootstrap_peers: BTreeMap<NodeId, String>,
}

/// The Raft loop's state.
pub struct RaftLoop {
    raft: Raft,
    settings: Settings,
    wal: Wal,
    /// The hard state last persisted.
    stored_hs: HardState,
    /// A newer commit index not yet persisted.
    unwritten_commit: Option<HardState>,
    transport: Transport,
    state: Arc<RwLock<StateMachine>>,
    applied_tx: watch::Sender<Index>,
    observer: Observer,
    writes: BTreeMap<Index, PendingWrite>,
    /// Membership changes waiting to be applied: index → (term, reply).
    conf_waiters: BTreeMap<Index, (Term, Reply<Vec<MemberInfo>>)>,
    /// Transfers waiting for the new leader: (target, deadline, reply).
    transfers: Vec<(NodeId, Instant, Reply<NodeId>)>,
    /// Reads that arrived since the last read index was asked for.
    read_batch: Vec<Reply<Index>>,
    reads: HashMap<u64, PendingReads>,
    next_read_ctx: u64,
    /// Where peers are reached (id → peer address) and where clients reach them (id → client address), as
    /// announced by the peers themselves; the state machine's records fill the gaps.
    announced_peer: BTreeMap<NodeId, String>,
    announced_client: BTreeMap<NodeId, String>,
    ticks: u64,
}

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The disk failed: the node cannot go on without risking its promises.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// A snapshot could not be installed.
    #[error("{0}")]
    Snapshot(#[from] crate::state::BadSnapshot),
}

impl RaftLoop {
    /// A loop over `raft`, whose state machine `parts.state` already reflects the snapshot `raft` starts from.
    pub fn new(raft: Raft, settings: Settings, parts: Parts) -> (Self, LoopInputs) {
        let observer = Observer::new(settings.id, parts.view);
        let status = raft.status();
        let stored_hs = HardState {
            term: status.term,
            vote: status.vote,
            commit: status.commit,
        };
        let mut lp = RaftLoop {
            raft,
            wal: parts.wal,
            stored_hs,
            unwritten_commit: None,
            transport: parts.transport,
            state: parts.state,
            applied_tx: parts.applied,
            observer,
            writes: BTreeMap::new(),
            conf_waiters: BTreeMap::new(),
            transfers: Vec::new(),
            read_batch: Vec::new(),
            reads: HashMap::new(),
            next_read_ctx: 0,
            announced_peer: BTreeMap::new(),
            announced_client: BTreeMap::new(),
            ticks: 0,
            settings,
        };
        lp.announced_client
            .insert(lp.settings.id, lp.settings.client_addr.clone());
        lp.refresh_peers();
        let inputs = LoopInputs {
            inbox: parts.inbox,
            requests: parts.requests,
            shutdown: parts.shutdown,
        };
        (lp, inputs)
    }

    /// Runs until shutdown is asked for or the disk fails. On shutdown a leader first hands leadership to a
    /// caught-up peer; what was handed to the log is flushed either way.
    pub async fn run(mut self, mut inputs: LoopInputs) -> Result<(), LoopError> {
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => self.on_tick(),
                Some(first) = inputs.inbox.recv() => {
                    self.on_inbound(first);
                    for _ in 0..DRAIN_BATCH {
                        let Ok(next) = inputs.inbox.try_recv() else { break };
                        self.on_inbound(next);
                    }
                }
                Some(first) = inputs.requests.recv() => {
                    self.on_request(first);
                    for _ in 0..DRAIN_BATCH {
                        let Ok(next) = inputs.requests.try_recv() else { break };
                        self.on_request(next);
                    }
                }
                _ = inputs.shutdown.changed() => break Ok(()),
            }
            self.flush_reads();
            if let Err(e) = self.drive() {
                break Err(e);
            }
            self.observer.publish(&self.raft, &self.announced_client);
        };
        if result.is_ok() {
            self.hand_over(&mut inputs).await;
        }
        self.fail_all(NodeError::ShuttingDown);
        self.observer.stopping();
        result
    }

    /// On shutdown, a leader transfers leadership to its most caught-up voter and keeps the loop running
    /// (without taking requests) until the transfer is done or the shutdown timeout passes.
    async fn hand_over(&mut self, inputs: &mut LoopInputs) {
        if self.raft.soft_state().role != Role::Leader {
            return;
        }
        let Some(target) = self.most_caught_up_voter() else {
            return;
        };
        let span = info_span!("raft.shutdown_transfer", target);
        let _guard = span.enter();
        if self.raft.transfer_leader(target).is_err() {
            return;
        }
        info!(target, "shutting down: handing leadership over");
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_timeout;
        let mut ticker = tokio::time::interval(self.settings.tick);
        while self.raft.soft_state().role == Role::Leader {
            if self.drive().is_err() {
                return;
            }
            tokio::select! {
                _ = ticker.tick() => self.on_tick(),
                Some(msg) = inputs.inbox.recv() => self.on_inbound(msg),
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("leadership hand-over timed out");
                    return;
                }
            }
        }
        // Let the step-down's messages (and the vote for the target) leave before the process exits.
        let _ = self.drive();
        tokio::time::sleep(self.settings.tick).await;
    }

    fn on_tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
        self.expire_reads();
        self.expire_transfers();
        if self.ticks.is_multiple_of(4) {
            self.maybe_promote();
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(msg) => {
                self.observer.on_message(&msg);
                self.raft.step(msg);
            }
            Inbound::PeerAddrs {
                id,
                client_addr,
                peer_addr,
            } => {
                let changed = self.announced_peer.get(&id) != Some(&peer_addr);
                if !client_addr.is_empty() {
                    self.announced_client.insert(id, client_addr);
                }
                if changed && !peer_addr.is_empty() {
                    self.announced_peer.insert(id, peer_addr);
                    self.refresh_peers();
                }
            }
        }
    }

    /// Handles every `Ready` the core has: messages leave at once, then what must be durable is written (one
    /// sync), then the `Ready` goes back to the core, which releases the messages that waited for the write
    /// and the committed entries to apply.
    fn drive(&mut self) -> Result<(), LoopError> {
        while self.raft.has_ready() {
            let mut ready = self.raft.ready();
            if let Some(soft) = ready.soft_state {
                self.on_role_change(soft.role, soft.leader);
            }
            self.transport.send(std::mem::take(&mut ready.messages));
            if let Some(hs) = self.commit_only(&ready) {
                // Only the commit index moved: it needs no write of its own. A node that forgets its commit
                // index learns it again from the leader, and whatever it applied was committed (replicated on
                // a majority) whatever its own record says. It rides along with the next write.
                self.unwritten_commit = Some(hs);
            } else if !ready.nothing_to_persist() {
                match ready.hard_state {
                    Some(hs) => self.stored_hs = hs,
                    None => ready.hard_state = self.unwritten_commit,
                }
                self.unwritten_commit = None;
                self.wal.persist(&ready)?;
                if let Some(snapshot) = &ready.snapshot {
                    self.install(snapshot)?;
                }
            }
            let done = self.raft.advance(ready);
            self.after_advance(done)?;
        }
        Ok(())
    }

    /// The hard state of a `Ready` that changes nothing durable but the commit index.
    fn commit_only(&self, ready: &reinado_raft::Ready) -> Option<HardState> {
        let hs = ready.hard_state?;
        let same = hs.term == self.stored_hs.term && hs.vote == self.stored_hs.vote;
        (same && ready.entries.is_empty() && ready.snapshot.is_none()).then_some(hs)
    }

    /// Restores the state machine from a snapshot the leader sent (already durable).
    fn install(&mut self, snapshot: &reinado_raft::Snapshot) -> Result<(), LoopError> {
        let index = snapshot.meta.index;
        let span = info_span!("raft.snapshot.install", index, bytes = snapshot.data.len());
        let _guard = span.enter();
        let limits = self.state.read().expect("state lock").limits();
        let sm = StateMachine::restore(&snapshot.data, index, limits)?;
        *self.state.write().expect("state lock") = sm;
        self.fail_writes_up_to(index);
        self.applied_tx.send_replace(index);
        self.refresh_peers();
        info!(index, "installed a snapshot from the leader");
        Ok(())
    }

    fn after_advance(&mut self, done: Persisted) -> Result<(), LoopError> {
        self.transport.send(done.messages);
        self.apply(done.committed_entries);
        for rs in done.read_states {
            self.on_read_state(rs);
        }
        self.maybe_compact()
    }

    /// Applies committed entries under one write lock, then answers the requests waiting on them.
    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut membership_changed = false;
        {
            let mut sm = self.state.write().expect("state lock");
            for entry in &entries {
                if entry.index <= sm.applied() {
                    continue; // already in the snapshot the state machine was restored from
                }
                let span = self.writes.get(&entry.index).map(
                    |w| info_span!(parent: &w.request_span, "raft.apply", index = entry.index),
                );
                let _guard = span.as_ref().map(|s| s.enter());
                outcomes.push((entry.index, entry.term, sm.apply(entry)));
                membership_changed |= entry.kind == EntryKind::ConfChange;
            }
        }
        self.applied_tx.send_replace(last);
        for (index, term, outcome) in outcomes {
            self.answer_write(index, term, outcome);
            self.answer_conf_change(index, term);
        }
        if membership_changed {
            self.refresh_peers();
        }
    }

    fn answer_write(&mut self, index: Index, term: Term, outcome: Option<WriteOutcome>) {
        let Some(w) = self.writes.remove(&index) else {
            return;
        };
        drop(w.commit_span);
        let result = match outcome {
            Some(o) if w.term == term && !o.refused.is_empty() && o.refused.contains("quota") => {
                Err(NodeError::QuotaExceeded(o.refused))
            }
            Some(o) if w.term == term && !o.refused.is_empty() => {
                Err(NodeError::FailedPrecondition(o.refused))
            }
            Some(o) if w.term == term => Ok(o),
            // Another leader's entry took this index: ours was never committed.
            _ => Err(NodeError::LeadershipLost),
        };
        let _ = w.reply.send(result);
    }

    fn fail_writes_up_to(&mut self, index: Index) {
        let rest = self.writes.split_off(&(index + 1));
        for (_, w) in std::mem::replace(&mut self.writes, rest) {
            let _ = w.reply.send(Err(NodeError::LeadershipLost));
        }
    }

    /// Answers every waiting request with `err`.
    fn fail_all(&mut self, err: NodeError) {
        for (_, w) in std::mem::take(&mut self.writes) {
            let _ = w.reply.send(Err(err.clone()));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.conf_waiters) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, reads) in std::mem::take(&mut self.reads) {
            for reply in reads.replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
        for reply in std::mem::take(&mut self.read_batch) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, _, reply) in std::mem::take(&mut self.transfers) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn on_role_change(&mut self, role: Role, leader: Option<NodeId>) {
        self.observer.on_soft_state(&self.raft, role, leader);
        if role != Role::Leader {
            // Writes proposed as leader may still commit under the next leader, or may not: say so, and
            // let the client retry with the same request id (the session table applies it once).
            self.fail_all_writes();
        }
        if leader.is_some() {
            self.complete_transfers(leader);
        }
    }

    fn fail_all_writes(&mut self) {
        for (_, w) in std::mem::take(&mut self.writes) {
            let _ = w.reply.send(Err(NodeError::LeadershipLost));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.conf_waiters) {
            let _ = reply.send(Err(NodeError::LeadershipLost));
        }
    }

    /// Takes a snapshot every `snapshot_entries` applied entries and compacts the log below it.
    fn maybe_compact(&mut self) -> Result<(), LoopError> {
        let applied = self.raft.applied();
        let snapshot_index = self.raft.snapshot().meta.index;
        if applied - snapshot_index < self.settings.snapshot_entries {
            return Ok(());
        }
        let data = {
            let sm = self.state.read().expect("state lock");
            if sm.applied() != applied {
                return Ok(());
            }
            sm.snapshot()
        };
        let span = info_span!("raft.snapshot.take", index = applied, bytes = data.len());
        let _guard = span.enter();
        match self.raft.compact(applied, data.clone()) {
            Ok(meta) => {
                self.wal.compact(&reinado_raft::Snapshot { meta, data })?;
                info!(index = applied, "snapshot saved, log compacted");
            }
            Err(e) => warn!("compaction refused: {e}"),
        }
        Ok(())
    }

    /// Recomputes where each peer is reached and tells the transport.
    fn refresh_peers(&mut self) {
        let mut addrs = self.settings.bootstrap_peers.clone();
        {
            let sm = self.state.read().expect("state lock");
            for (id, ctx) in sm.members() {
                if !ctx.peer_addr.is_empty() {
                    addrs.insert(*id, ctx.peer_addr.clone());
                }
                if !ctx.client_addr.is_empty() {
                    self.announced_client
                        .entry(*id)
                        .or_insert_with(|| ctx.client_addr.clone());
                }
            }
        }
        for (id, addr) in &self.announced_peer {
            addrs.insert(*id, addr.clone());
        }
        self.transport.set_peers(&addrs);
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Ok(ctx) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
            return;
        };
        let Some(reads) = self.reads.remove(&u64::from_le_bytes(ctx)) else {
            return;
        };
        for reply in reads.replies {
            let _ = reply.send(rs.index.ok_or(NodeError::NoLeader));
        }
    }

    /// Asks the core for one read index on behalf of every read that arrived since the last one: the core
    /// confirms leadership with one heartbeat round for all of them (thesis §6.4, batched).
    fn flush_reads(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        self.next_read_ctx += 1;
        let ctx = self.next_read_ctx;
        let replies = std::mem::take(&mut self.read_batch);
        self.reads.insert(
            ctx,
            PendingReads {
                since: Instant::now(),
                replies,
            },
        );
        self.raft.read_index(ctx.to_le_bytes().to_vec());
    }

    /// Read requests travel in messages that can be lost: fail those waiting too long.
    fn expire_reads(&mut self) {
        let timeout = self.settings.request_timeout;
        self.reads.retain(|_, reads| {
            let keep = reads.since.elapsed() < timeout;
            if !keep {
                for reply in reads.replies.drain(..) {
                    let _ = reply.send(Err(NodeError::Timeout("a read index from the leader")));
                }
            }
            keep
        });
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
        error!("the Raft loop stopped: {e}");
    }
}
