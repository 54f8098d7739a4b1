//! The replica: everything a member of the cluster decides, with no I/O.
//!
//! A [`Replica`] owns the Raft core and the state machine, and holds what waits on them: proposals and their
//! waiters, reads waiting for a read index and then for it to be applied, membership changes, leadership
//! transfers, the members' addresses, snapshots and compaction. It is driven by inputs (`tick`, `step`,
//! `request`, `peer_addrs`) and tells its driver what to do through an [`Output`] (messages to send, answers
//! for waiters, peer addresses). Time is counted in ticks; storage is `reinado-storage`'s [`DiskStorage`],
//! on whatever file system the driver opened it (real files in the node, the fault-injecting one in the
//! simulator). Nothing here touches a socket, a clock or a thread.
//!
//! Two drivers run it: the node's Raft loop (`raft_loop`, tokio: timers, sockets, the WAL on the loop's
//! thread) and the simulator (`reinado-sim`: virtual time, a lossy network, crashes). Both persist a `Ready`
//! in two steps so that the simulator can crash a node between them: [`Replica::write_ready`] hands the
//! batch to storage (buffered, not yet durable) and releases the messages that may leave at once;
//! [`Replica::synced`], called once [`DiskStorage::sync`] returned, advances the core, applies what is
//! committed and answers the waiters.
//!
//! ## Layout
//! - `mod.rs`: the replica, its inputs, the Ready cycle, apply, reads.
//! - `requests.rs`: writes, membership changes, transfers, status, log entries, the limits a leader proposes.
//! - `tests.rs`: replicas of one cluster driven together over in-memory disks.
//! - `start.rs`: the bootstrap / join / restart decision, and the core it builds.
//! - `started.rs`: which members took part, and whether an empty data dir may bootstrap (a lost disk may not).

mod leases;
mod lessor;
mod requests;
mod start;
mod started;
#[cfg(test)]
mod tests;

use crate::error::{NodeError, refusal_error};
use crate::state::StateMachine;
use reinado_proto::v1::{MemberContext, WriteOutcome};
use reinado_raft::{
    ConfState, Entry, EntryKind, HardState, Index, Message, NodeId, Persisted, Raft, ReadState,
    Ready, Role, Term,
};
use reinado_storage::{DiskStorage, StorageError};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tracing::{info, info_span, warn};

pub use leases::LeaseTtl;
pub use requests::{MemberInfo, StatusReport};
pub use start::{Opened, StartError, is_empty, open};
pub use started::{BootstrapDecision, ProbeAnswer, bootstrap_decision};

/// The types a driver uses to wait for answers: the node uses oneshot senders, the simulator its clients'
/// requests. The replica only holds them and hands them back in [`Answer`]s.
pub trait Waiters {
    /// Waits for a write's outcome.
    type Write;
    /// Waits for a linearizable read point: answered once the read index is applied here.
    type Read;
    /// Waits for a membership change to be applied.
    type Members;
    /// Waits for a leadership transfer.
    type Leader;
}

/// A request that waits for the cluster.
pub enum Request<W: Waiters> {
    /// Propose an encoded `Command`; answered once it is applied.
    Write {
        /// The encoded command.
        data: Vec<u8>,
        /// The request's span, parent of the commit and apply spans.
        span: tracing::Span,
        /// Who waits.
        waiter: W::Write,
    },
    /// A linearizable read point (thesis §6.4): answered with an index this node has applied.
    ReadIndex {
        /// Who waits.
        waiter: W::Read,
    },
    /// Add a member as a learner (promoted later unless `ctx.stay_learner`).
    AddMember {
        /// The new member.
        id: NodeId,
        /// Its addresses.
        ctx: MemberContext,
        /// Who waits.
        waiter: W::Members,
    },
    /// Remove a member.
    RemoveMember {
        /// The member.
        id: NodeId,
        /// Who waits.
        waiter: W::Members,
    },
    /// Promote a learner that caught up to voter (one added with `stay_learner` waits for this).
    PromoteMember {
        /// The learner.
        id: NodeId,
        /// Who waits.
        waiter: W::Members,
    },
    /// Hand leadership to `target`, or to the most caught-up voter.
    TransferLeader {
        /// The new leader, if chosen.
        target: Option<NodeId>,
        /// Who waits.
        waiter: W::Leader,
    },
}

/// An answer for a waiter.
pub enum Answer<W: Waiters> {
    /// A write's outcome.
    Write(W::Write, Result<WriteOutcome, NodeError>),
    /// A read point, applied here.
    Read(W::Read, Result<Index, NodeError>),
    /// The members once a change was applied.
    Members(W::Members, Result<Vec<MemberInfo>, NodeError>),
    /// The leader once a transfer is done.
    Leader(W::Leader, Result<NodeId, NodeError>),
}

/// What the driver must act on after an input.
pub struct Output<W: Waiters> {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Answers for waiters.
    pub answers: Vec<Answer<W>>,
    /// Role or leader changes, in order (for the driver's view and traces).
    pub role_changes: Vec<RoleChange>,
    /// The new peer addresses (id → peer address), when they changed.
    pub peers: Option<BTreeMap<NodeId, String>>,
    /// The applied index moved to this.
    pub applied: Option<Index>,
    /// A snapshot from the leader was installed at this index.
    pub installed_snapshot: Option<Index>,
    /// Entries applied, as (index, term, data); filled only with [`Settings::record_applied`].
    pub applied_entries: Vec<(Index, Term, Vec<u8>)>,
}

impl<W: Waiters> Default for Output<W> {
    fn default() -> Self {
        Output {
            messages: Vec::new(),
            answers: Vec::new(),
            role_changes: Vec::new(),
            peers: None,
            applied: None,
            installed_snapshot: None,
            applied_entries: Vec::new(),
        }
    }
}

/// Known-wrong behaviours of the replica that the simulator's checkers must catch (`reinado-sim --bug`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Read-index contexts restart at the same value in every incarnation (defect 2 put back).
    pub reuse_read_context: bool,
    /// Advance the core (answer, acknowledge) before the entries are durable.
    pub ack_before_fsync: bool,
    /// An empty data dir bootstraps whatever its peers answer, and AddMember of a started member is
    /// answered "ok" (defect 1 put back: a lost disk comes back as a full voter).
    pub accept_wiped_member: bool,
    /// A full session forgets its lowest unacknowledged result to make room, instead of refusing the new
    /// write (defect 3 put back): a late retry of the forgotten write runs again.
    pub evict_pending_result: bool,
    /// A transaction applies only the first write of its branch: a multi-key transaction is torn.
    pub torn_txn: bool,
    /// A new leader starts its lease clock with no extension and no TTL: every lease it did not see granted
    /// or renewed itself expires at once.
    pub expire_without_extension: bool,
}

impl Bugs {
    /// Switches the state machine's deliberate bugs on as asked.
    fn switch_on(&self, sm: &mut StateMachine) {
        sm.set_evict_pending_result(self.evict_pending_result);
        sm.set_torn_txn(self.torn_txn);
    }
}

/// Timing and limits of the replica, in ticks.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node.
    pub id: NodeId,
    /// This node's client address.
    pub client_addr: String,
    /// The election timeout, in ticks.
    pub election_ticks: u64,
    /// Milliseconds per tick, nominally: [`Replica::tick`] advances the lease clock by this much (drivers
    /// with a clock use [`Replica::tick_at`]).
    pub tick_ms: u64,
    /// Applied entries between snapshots.
    pub snapshot_entries: u64,
    /// Bytes of applied entries (their commands) between snapshots: a log of large values is compacted
    /// before it holds `snapshot_entries` of them.
    pub snapshot_bytes: u64,
    /// How many ticks a read waits for its index.
    pub request_timeout_ticks: u64,
    /// Bootstrap peers' addresses (id → peer address), a fallback until the log says more.
    pub bootstrap_peers: BTreeMap<NodeId, String>,
    /// Unique to this incarnation of the process: read-index contexts start from it, so an answer meant
    /// for an earlier incarnation never matches a read of this one.
    pub incarnation: u64,
    /// Record applied entries in [`Output::applied_entries`] (the simulator's checkers read them).
    pub record_applied: bool,
    /// The state machine limits this node proposes when it leads (see [`Replica::propose_limits`]); the
    /// state machine applies the ones the log agreed on.
    pub limits: crate::state::Limits,
    /// Deliberate bugs (simulator only).
    pub bugs: Bugs,
}

/// Why the replica cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The disk failed: the node cannot go on without risking its promises.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// A snapshot could not be installed.
    #[error("{0}")]
    Snapshot(#[from] crate::state::BadSnapshot),
}

/// A role and the leader it knows, as a `Ready` reported them.
type RoleChange = (Role, Option<NodeId>);

/// A write waiting to be applied.
struct PendingWrite<W: Waiters> {
    term: Term,
    waiter: W::Write,
    /// Open from proposal to commit; closed when the entry is applied.
    commit_span: tracing::Span,
    request_span: tracing::Span,
}

/// Reads waiting for one read index.
struct PendingReads<R> {
    since_tick: u64,
    waiters: Vec<R>,
}

/// A member: the Raft core, the state machine, and everything waiting on them.
pub struct Replica<W: Waiters> {
    raft: Raft,
    settings: Settings,
    state: Arc<RwLock<StateMachine>>,
    /// The Ready handed to storage and waiting for its sync, with the role change it reported.
    pending: Option<(Ready, Option<RoleChange>)>,
    /// The hard state last persisted.
    stored_hs: HardState,
    /// A newer commit index not yet persisted.
    unwritten_commit: Option<HardState>,
    /// The membership in force at the commit index last written.
    stored_conf: ConfState,
    writes: BTreeMap<Index, PendingWrite<W>>,
    /// Membership changes waiting to be applied: index → (term, waiter).
    conf_waiters: BTreeMap<Index, (Term, W::Members)>,
    /// Transfers waiting for the new leader: (target, deadline tick, waiter).
    transfers: Vec<(NodeId, u64, W::Leader)>,
    /// Reads that arrived since the last read index was asked for.
    read_batch: Vec<W::Read>,
    /// Reads waiting for their read index, by context.
    reads: BTreeMap<u64, PendingReads<W::Read>>,
    /// Reads with a read index, waiting for it to be applied here.
    reads_at: Vec<(Index, W::Read)>,
    next_read_ctx: u64,
    /// The leader seen last, to fail forwarded reads when it changes.
    leader: Option<NodeId>,
    /// Where peers are reached (id → peer address) and where clients reach them (id → client address), as
    /// announced by the peers themselves; the state machine's records fill the gaps.
    announced_peer: BTreeMap<NodeId, String>,
    announced_client: BTreeMap<NodeId, String>,
    /// Members this leader proposed to record as started (at which log index), in the term it proposed them.
    started_proposed: (Term, BTreeMap<NodeId, Index>),
    /// The term in which this node, leading, last compared its configured limits with the agreed ones.
    limits_checked: Term,
    ticks: u64,
    /// When leases run out, while this node leads.
    lessor: lessor::Lessor,
    /// This node's monotonic clock, in milliseconds, as the driver last told it.
    now_ms: u64,
    /// Bytes of the commands applied since the last snapshot (taken or installed).
    applied_bytes: u64,
    /// The size of the last snapshot: one is not taken by bytes before that many were applied again, so a
    /// large state is not encoded again for every `snapshot_bytes` of writes.
    last_snapshot_bytes: u64,
}

impl<W: Waiters> Replica<W> {
    /// A replica over `raft`, whose state machine `state` already reflects the snapshot `raft` starts from.
    pub fn new(raft: Raft, state: Arc<RwLock<StateMachine>>, settings: Settings) -> Self {
        let status = raft.status();
        let stored_hs = HardState {
            term: status.term,
            vote: status.vote,
            commit: status.commit,
        };
        let next_read_ctx = if settings.bugs.reuse_read_context {
            0
        } else {
            settings.incarnation
        };
        let stored_conf = raft.conf().clone();
        let last_snapshot_bytes = raft.snapshot().data.len() as u64;
        let mut announced_client = BTreeMap::new();
        announced_client.insert(settings.id, settings.client_addr.clone());
        settings
            .bugs
            .switch_on(&mut state.write().expect("state lock"));
        Replica {
            leader: status.leader,
            raft,
            settings,
            state,
            pending: None,
            stored_hs,
            unwritten_commit: None,
            stored_conf,
            writes: BTreeMap::new(),
            conf_waiters: BTreeMap::new(),
            transfers: Vec::new(),
            read_batch: Vec::new(),
            reads: BTreeMap::new(),
            reads_at: Vec::new(),
            next_read_ctx,
            announced_peer: BTreeMap::new(),
            announced_client,
            started_proposed: (0, BTreeMap::new()),
            limits_checked: 0,
            ticks: 0,
            lessor: lessor::Lessor::default(),
            now_ms: 0,
            applied_bytes: 0,
            last_snapshot_bytes,
        }
    }

    /// The consensus core, read-only.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The state machine, shared with readers.
    pub fn state(&self) -> &Arc<RwLock<StateMachine>> {
        &self.state
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where clients reach each member, as far as this node knows.
    pub fn client_addrs(&self) -> &BTreeMap<NodeId, String> {
        &self.announced_client
    }

    /// The peer addresses to connect to: the bootstrap list, the log's records, then what peers announced.
    pub fn peer_addrs(&mut self) -> BTreeMap<NodeId, String> {
        let mut addrs = self.settings.bootstrap_peers.clone();
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
        drop(sm);
        for (id, addr) in &self.announced_peer {
            addrs.insert(*id, addr.clone());
        }
        addrs
    }

    /// One tick of time, the clock advancing by a nominal tick.
    pub fn tick(&mut self, out: &mut Output<W>) {
        let now = self.now_ms + self.settings.tick_ms;
        self.tick_at(now, out);
    }

    /// Tells the replica the time on this node's monotonic clock (it never goes back). A driver with a clock
    /// calls it before every input, so that a lease granted when an entry is applied runs from then, not
    /// from the last tick.
    pub fn advance_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// One tick of time, at `now_ms` on this node's monotonic clock (never going back).
    pub fn tick_at(&mut self, now_ms: u64, out: &mut Output<W>) {
        self.advance_clock(now_ms);
        self.raft.tick();
        self.ticks += 1;
        self.expire_reads(out);
        self.expire_transfers(out);
        if self.ticks.is_multiple_of(4) {
            self.maybe_promote();
            self.record_started();
            self.propose_limits();
        }
        self.run_lessor();
    }

    /// A peer's connection broke (see [`Raft::peer_lost`]): a follower that lost its leader campaigns soon.
    pub fn peer_lost(&mut self, peer: NodeId) {
        if self.raft.soft_state().leader == Some(peer) {
            info!(peer, "the leader's connection broke: campaigning soon");
        }
        self.raft.peer_lost(peer);
    }

    /// A message from a peer.
    pub fn step(&mut self, msg: Message) {
        let refused = self.raft.refused_messages();
        let (from, kind, term) = (msg.from, msg.body.name(), msg.term);
        self.raft.step(msg);
        let now = self.raft.refused_messages();
        // Logged at the first refusal and then ever more rarely, so a flood of garbage is no log flood.
        if now > refused && (now.is_power_of_two() || now.is_multiple_of(1024)) {
            warn!(
                from,
                kind,
                term,
                refused = now,
                "refused a peer message that no correct peer sends (entries that do not follow, an answer \
                 beyond what was sent, or a snapshot larger than REINADO_MAX_SNAPSHOT_BYTES)"
            );
        }
    }

    /// A peer announced where it is reached.
    pub fn announce(
        &mut self,
        id: NodeId,
        client_addr: String,
        peer_addr: String,
        out: &mut Output<W>,
    ) {
        let changed = self.announced_peer.get(&id) != Some(&peer_addr);
        if !client_addr.is_empty() {
            self.announced_client.insert(id, client_addr);
        }
        if changed && !peer_addr.is_empty() {
            self.announced_peer.insert(id, peer_addr);
            out.peers = Some(self.peer_addrs());
        }
    }

    /// A request that waits for the cluster.
    pub fn request(&mut self, req: Request<W>, out: &mut Output<W>) {
        match req {
            Request::Write { data, span, waiter } => self.propose_write(data, span, waiter, out),
            Request::ReadIndex { waiter } => self.read_batch.push(waiter),
            Request::AddMember { id, ctx, waiter } => self.add_member(id, ctx, waiter, out),
            Request::RemoveMember { id, waiter } => self.remove_member(id, waiter, out),
            Request::PromoteMember { id, waiter } => self.promote_member(id, waiter, out),
            Request::TransferLeader { target, waiter } => self.transfer(target, waiter, out),
        }
    }

    /// True if a `Ready` is handed to storage and waits for its sync.
    pub fn awaiting_sync(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the core's next `Ready`, unless one already waits for its sync: its messages that may leave at
    /// once go to `out`, and what must be durable is handed to `storage` (buffered). Returns true if it took
    /// one: the driver must then [`DiskStorage::sync`] and call [`Replica::synced`].
    pub fn write_ready(
        &mut self,
        storage: &mut DiskStorage,
        out: &mut Output<W>,
    ) -> Result<bool, ReplicaError> {
        self.flush_reads();
        if self.pending.is_some() || !self.raft.has_ready() {
            return Ok(false);
        }
        let mut ready = self.raft.ready();
        let role_change = ready.soft_state.map(|soft| (soft.role, soft.leader));
        out.role_changes.extend(role_change);
        out.messages.append(&mut ready.messages);
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
            self.write(storage, &ready)?;
            if self.raft.conf() != &self.stored_conf {
                self.stored_conf = self.raft.conf().clone();
            }
        }
        self.pending = Some((ready, role_change));
        if self.settings.bugs.ack_before_fsync {
            self.synced(storage, out)?;
        }
        Ok(true)
    }

    /// Hands a `Ready`'s snapshot, entries and hard state to storage. A snapshot from the leader is checked
    /// by decoding it before anything is replaced.
    fn write(&mut self, storage: &mut DiskStorage, ready: &Ready) -> Result<(), ReplicaError> {
        if let Some(snapshot) = &ready.snapshot {
            let mut sm = StateMachine::restore(&snapshot.data, snapshot.meta.index)?;
            self.settings.bugs.switch_on(&mut sm);
            storage.save_snapshot(snapshot)?;
            self.last_snapshot_bytes = snapshot.data.len() as u64;
            *self.state.write().expect("state lock") = sm;
        }
        storage.append(&ready.entries)?;
        if let Some(hs) = &ready.hard_state {
            storage.set_hard_state(hs)?;
        }
        Ok(())
    }

    /// The `Ready` handed to storage is durable: advance the core, send what waited for the write, apply
    /// what is committed, answer the waiters, and take a snapshot when one is due.
    pub fn synced(
        &mut self,
        storage: &mut DiskStorage,
        out: &mut Output<W>,
    ) -> Result<(), ReplicaError> {
        let Some((ready, role_change)) = self.pending.take() else {
            return Ok(());
        };
        if let Some(snapshot) = &ready.snapshot {
            self.installed(snapshot.meta.index, out);
        }
        let done = self.raft.advance(ready);
        self.after_advance(done, out);
        if let Some((role, leader)) = role_change {
            self.on_role_change(role, leader, out);
        }
        // As soon as the first entry of a leader's term is applied, not a tick later: writes meanwhile apply
        // with the limits agreed before.
        self.propose_limits();
        self.run_lessor();
        self.maybe_compact(storage)
    }

    /// The hard state of a `Ready` that changes nothing durable but the commit index, and not the membership
    /// in force: a membership change takes effect when it commits, so a node that forgot the commit of one
    /// would go back to the membership before it after a restart. With the cluster down to one voter, that
    /// one would then wait forever for the vote of a member removed (and shut down) meanwhile.
    fn commit_only(&self, ready: &Ready) -> Option<HardState> {
        let hs = ready.hard_state?;
        let same = hs.term == self.stored_hs.term && hs.vote == self.stored_hs.vote;
        let same_conf = self.raft.conf() == &self.stored_conf;
        (same && same_conf && ready.entries.is_empty() && ready.snapshot.is_none()).then_some(hs)
    }

    /// A snapshot from the leader replaced the state machine (already durable).
    fn installed(&mut self, index: Index, out: &mut Output<W>) {
        let span = info_span!("raft.snapshot.install", index);
        let _guard = span.enter();
        self.fail_writes_up_to(index, out);
        self.applied_bytes = 0;
        out.applied = Some(index);
        out.installed_snapshot = Some(index);
        out.peers = Some(self.peer_addrs());
        info!(index, "installed a snapshot from the leader");
    }

    fn after_advance(&mut self, done: Persisted, out: &mut Output<W>) {
        out.messages.extend(done.messages);
        self.apply(done.committed_entries, out);
        for rs in done.read_states {
            self.on_read_state(rs, out);
        }
        self.serve_reads(out);
    }

    /// Applies committed entries under one write lock, then answers the requests waiting on them.
    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output<W>) {
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
                self.applied_bytes += entry.data.len() as u64;
            }
        }
        if self.settings.record_applied {
            out.applied_entries
                .extend(entries.into_iter().map(|e| (e.index, e.term, e.data)));
        }
        out.applied = Some(last);
        if self.lessor.running() {
            for o in outcomes.iter().filter_map(|(_, _, o)| o.as_ref()) {
                if o.lease_id != 0 && o.refused.is_empty() {
                    self.lessor.set_from(o.lease_id, o.lease_ttl, self.now_ms);
                }
            }
        }
        for (index, term, outcome) in outcomes {
            self.answer_write(index, term, outcome, out);
            self.answer_conf_change(index, term, out);
        }
        if membership_changed {
            out.peers = Some(self.peer_addrs());
        }
    }

    fn answer_write(
        &mut self,
        index: Index,
        term: Term,
        outcome: Option<WriteOutcome>,
        out: &mut Output<W>,
    ) {
        let Some(w) = self.writes.remove(&index) else {
            return;
        };
        drop(w.commit_span);
        let result = match outcome {
            Some(o) if w.term == term => match refusal_error(&o) {
                Some(refused) => Err(refused),
                None => Ok(o),
            },
            // Another leader's entry took this index: ours was never committed.
            _ => Err(NodeError::LeadershipLost),
        };
        out.answers.push(Answer::Write(w.waiter, result));
    }

    fn fail_writes_up_to(&mut self, index: Index, out: &mut Output<W>) {
        let rest = self.writes.split_off(&(index + 1));
        for (_, w) in std::mem::replace(&mut self.writes, rest) {
            out.answers
                .push(Answer::Write(w.waiter, Err(NodeError::LeadershipLost)));
        }
    }

    /// Answers every waiting request with `err` (the node stops).
    pub fn fail_all(&mut self, err: NodeError, out: &mut Output<W>) {
        for (_, w) in std::mem::take(&mut self.writes) {
            out.answers.push(Answer::Write(w.waiter, Err(err.clone())));
        }
        for (_, (_, waiter)) in std::mem::take(&mut self.conf_waiters) {
            out.answers.push(Answer::Members(waiter, Err(err.clone())));
        }
        let waiting = std::mem::take(&mut self.reads)
            .into_values()
            .flat_map(|r| r.waiters)
            .chain(std::mem::take(&mut self.read_batch))
            .chain(
                std::mem::take(&mut self.reads_at)
                    .into_iter()
                    .map(|(_, r)| r),
            );
        for waiter in waiting {
            out.answers.push(Answer::Read(waiter, Err(err.clone())));
        }
        for (_, _, waiter) in std::mem::take(&mut self.transfers) {
            out.answers.push(Answer::Leader(waiter, Err(err.clone())));
        }
    }

    /// Runs after the entries committed in the same `Ready` were applied, so that a change that committed
    /// (a leader's own removal included) is answered as done before leadership loss fails the rest.
    fn on_role_change(&mut self, role: Role, leader: Option<NodeId>, out: &mut Output<W>) {
        if role != Role::Leader {
            self.lessor.stop();
            // Writes proposed as leader may still commit under the next leader, or may not: say so, and
            // let the client retry with the same request id (the session table applies it once).
            for (_, w) in std::mem::take(&mut self.writes) {
                out.answers
                    .push(Answer::Write(w.waiter, Err(NodeError::LeadershipLost)));
            }
            for (_, (_, waiter)) in std::mem::take(&mut self.conf_waiters) {
                out.answers
                    .push(Answer::Members(waiter, Err(NodeError::LeadershipLost)));
            }
        }
        if leader != self.leader {
            self.leader = leader;
            self.fail_unconfirmed_reads(out);
        }
        if leader.is_some() {
            self.complete_transfers(leader, out);
        }
    }

    /// The leader changed: reads whose read index was asked of the old leader (or confirmed by this node
    /// as the old leader) will never be answered; fail them now, retryable, instead of at their timeout.
    fn fail_unconfirmed_reads(&mut self, out: &mut Output<W>) {
        for (_, reads) in std::mem::take(&mut self.reads) {
            for waiter in reads.waiters {
                let err = NodeError::Unavailable(
                    "the leader changed while the read waited for its read index; retry".into(),
                );
                out.answers.push(Answer::Read(waiter, Err(err)));
            }
        }
    }

    /// Takes a snapshot every `snapshot_entries` applied entries, or sooner once the entries applied since
    /// the last one pass `snapshot_bytes` (and the last snapshot's size), and compacts the log below it.
    fn maybe_compact(&mut self, storage: &mut DiskStorage) -> Result<(), ReplicaError> {
        let applied = self.raft.applied();
        let snapshot_index = self.raft.snapshot().meta.index;
        // The first snapshot is taken as soon as an entry past the bootstrap log (term 1) is applied: a
        // member with an empty log then gets the membership in one piece, as a snapshot, never the bootstrap
        // entries one by one, whose first alone is a one-voter cluster it would elect itself in.
        let past_bootstrap = snapshot_index == 0 && self.raft.term_at(applied) > Some(1);
        if applied.saturating_sub(snapshot_index) < self.settings.snapshot_entries
            && self.applied_bytes < self.settings.snapshot_bytes.max(self.last_snapshot_bytes)
            && !past_bootstrap
        {
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
                self.last_snapshot_bytes = data.len() as u64;
                storage.save_snapshot(&reinado_raft::Snapshot { meta, data })?;
                self.applied_bytes = 0;
                info!(index = applied, "snapshot saved, log compacted");
            }
            Err(e) => warn!("compaction refused: {e}"),
        }
        Ok(())
    }

    fn on_read_state(&mut self, rs: ReadState, out: &mut Output<W>) {
        let Ok(ctx) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
            return;
        };
        let Some(reads) = self.reads.remove(&u64::from_le_bytes(ctx)) else {
            return;
        };
        match rs.index {
            Some(index) => self
                .reads_at
                .extend(reads.waiters.into_iter().map(|w| (index, w))),
            None => {
                for waiter in reads.waiters {
                    out.answers
                        .push(Answer::Read(waiter, Err(NodeError::NoLeader)));
                }
            }
        }
    }

    /// Answers the reads whose index is applied here.
    fn serve_reads(&mut self, out: &mut Output<W>) {
        if self.reads_at.is_empty() {
            return;
        }
        let applied = self.state.read().expect("state lock").applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.reads_at.drain(..).partition(|(i, _)| *i <= applied);
        self.reads_at = waiting;
        for (index, waiter) in ready {
            out.answers.push(Answer::Read(waiter, Ok(index)));
        }
    }

    /// Asks the core for one read index on behalf of every read that arrived since the last one: the core
    /// confirms leadership with one heartbeat round for all of them (thesis §6.4, batched).
    fn flush_reads(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        self.next_read_ctx = self.next_read_ctx.wrapping_add(1);
        let ctx = self.next_read_ctx;
        let waiters = std::mem::take(&mut self.read_batch);
        self.reads.insert(
            ctx,
            PendingReads {
                since_tick: self.ticks,
                waiters,
            },
        );
        self.raft.read_index(ctx.to_le_bytes().to_vec());
    }

    /// Read requests travel in messages that can be lost: fail those waiting too long.
    fn expire_reads(&mut self, out: &mut Output<W>) {
        let timeout = self.settings.request_timeout_ticks;
        let now = self.ticks;
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now - r.since_tick >= timeout)
            .map(|(&ctx, _)| ctx)
            .collect();
        for ctx in expired {
            let reads = self.reads.remove(&ctx).expect("listed above");
            for waiter in reads.waiters {
                let err = NodeError::Timeout("a read index from the leader");
                out.answers.push(Answer::Read(waiter, Err(err)));
            }
        }
    }
}
