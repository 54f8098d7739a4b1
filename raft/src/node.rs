//! The interface a driver uses: proposals, reads, membership, transfer, and the `ready`/`advance` cycle.

use crate::Error;
use crate::progress::ProgressState;
use crate::raft::{Raft, SoftState};
use crate::types::*;

/// What the driver must do next, in order:
/// 1. send `messages` (they may go at once, in parallel with the disk writes);
/// 2. persist `snapshot` (and install it into the state machine), `entries` (replacing any log suffix from the
///    first entry's index) and `hard_state`, and make them durable (one fsync for all of it: group commit);
/// 3. hand the `Ready` back to [`Raft::advance`], which returns the messages that depended on that durability
///    and the committed entries to apply. They cannot be had before the `Ready` is handed back.
#[derive(Debug, Default)]
#[must_use = "a Ready must be persisted and handed back to Raft::advance"]
pub struct Ready {
    /// Role or leader changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the durable log; the first one may replace a suffix of it.
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader: persist it and restore the state machine from it, before `entries`.
    pub snapshot: Option<Snapshot>,
    /// Messages that may be sent now.
    pub messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
}

impl Ready {
    /// True if there is nothing to persist.
    pub fn nothing_to_persist(&self) -> bool {
        self.hard_state.is_none() && self.entries.is_empty() && self.snapshot.is_none()
    }
}

/// What becomes available once a [`Ready`] is durable.
#[derive(Debug, Default)]
pub struct Persisted {
    /// Messages that could leave only after the `Ready` was durable (votes, append answers, ...).
    pub messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in order.
    pub committed_entries: Vec<Entry>,
    /// Answers to `read_index` calls.
    pub read_states: Vec<ReadState>,
}

/// A leader's view of one peer, for status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// True if it votes.
    pub voter: bool,
    /// The highest index known to be replicated on it.
    pub match_index: Index,
    /// The next index to send it.
    pub next_index: Index,
    /// How it is being replicated to.
    pub state: ProgressState,
    /// It answered since the last CheckQuorum round (within about an election timeout).
    pub recent_active: bool,
}

/// A snapshot of a node's state, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Its vote in the current term.
    pub vote: Option<NodeId>,
    /// The leader it follows, if known.
    pub leader: Option<NodeId>,
    /// The commit index.
    pub commit: Index,
    /// The last index handed out to apply.
    pub applied: Index,
    /// The last index in its log.
    pub last_index: Index,
    /// The term of that entry.
    pub last_term: Term,
    /// The last index its snapshot covers.
    pub snapshot_index: Index,
    /// The membership in force.
    pub conf: ConfState,
    /// Leader only: the peers' progress.
    pub peers: Vec<PeerStatus>,
}

impl Raft {
    /// Proposes application data. Returns the index the entry will have if it commits; whether it committed
    /// is known when the entry at that index is applied: it is this proposal only if its term matches.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), Error> {
        self.check_can_propose()?;
        // One entry is always taken, however large: a bound must slow writes down, never stop them.
        let bytes = self.uncommitted_bytes;
        if bytes > 0 && bytes + data.len() as u64 > self.cfg.max_uncommitted_bytes {
            return Err(Error::UncommittedFull {
                bytes,
                max: self.cfg.max_uncommitted_bytes,
            });
        }
        let index = self.append_entry(EntryKind::Normal, data);
        Ok((index, self.term))
    }

    /// Proposes one membership change. Only one may be pending at a time, and not before the leader has
    /// committed an entry of its term (etcd's rule, which keeps single-server changes safe across leaders).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<(Index, Term), Error> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.commit {
            return Err(Error::ConfChangePending(self.pending_conf_index));
        }
        self.validate_conf_change(&cc)?;
        let index = self.append_entry(EntryKind::ConfChange, cc.encode());
        self.pending_conf_index = index;
        Ok((index, self.term))
    }

    fn validate_conf_change(&self, cc: &ConfChange) -> Result<(), Error> {
        let bad = |why: String| Err(Error::InvalidConfChange(why));
        let id = cc.node_id;
        if id == 0 {
            return bad("node id 0 is reserved".into());
        }
        match cc.kind {
            ConfChangeKind::AddLearner if self.conf.contains(id) => {
                bad(format!("{id} is already a member"))
            }
            ConfChangeKind::AddVoter if self.conf.is_voter(id) => {
                bad(format!("{id} is already a voter"))
            }
            ConfChangeKind::Remove if !self.conf.contains(id) => {
                bad(format!("{id} is not a member"))
            }
            ConfChangeKind::Remove if self.conf.voters == [id] => {
                bad(format!("{id} is the last voter"))
            }
            _ => Ok(()),
        }
    }

    fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(target) = self.transferee {
            return Err(Error::TransferInProgress(target));
        }
        if self.leaving.is_some() {
            // Its own removal committed: it only hands over now.
            return Err(Error::NotLeader { leader: None });
        }
        Ok(())
    }

    /// Asks for a linearizable read index (thesis §6.4). The answer comes back as a [`ReadState`] with the same
    /// `ctx` in a later [`Persisted`]: on a leader after a quorum confirmed its leadership, on a follower from
    /// the leader. An answer with no index means "retry" (no leader, or leadership was lost meanwhile).
    /// A request forwarded by a follower travels in messages that can be lost: the driver must time reads out.
    pub fn read_index(&mut self, ctx: Vec<u8>) {
        match (self.role, self.leader) {
            (Role::Leader, _) => self.leader_read(self.cfg.id, ctx),
            (_, Some(leader)) => self.send(leader, MessageBody::ReadIndex { ctx }),
            (_, None) => self.read_states.push(ReadState { ctx, index: None }),
        }
    }

    /// Hands leadership to `target` (leader only).
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.cfg.id {
            return Ok(());
        }
        if !self.conf.is_voter(target) {
            return Err(Error::Transfer(format!("{target} is not a voter")));
        }
        self.start_transfer(target);
        Ok(())
    }

    /// Starts an election now (if this node is a voter), skipping the pre-vote.
    pub fn start_election(&mut self) {
        if self.role != Role::Leader {
            self.campaign(crate::election::Campaign::Election);
        }
    }

    /// The transport saw the connection from `peer` break: reset or closed, as when its process dies. If
    /// `peer` is this follower's leader, the follower stops counting on it: it forgets the leader (so its
    /// leader lease no longer makes it refuse another's pre-vote) and campaigns 1 + n ticks later, n being
    /// the number of voters (the lost leader aside) with a lower id than this node's, instead of a whole
    /// election timeout later. The order keeps the followers of a dead leader from splitting the vote: they
    /// hear of it at the same moment, and the first one's pre-vote and vote are over before the next one's
    /// tick (a random choice of one or two ticks split one vote in ten on a 3-member compose cluster). Safe
    /// even when the leader is alive and only the connection broke: the campaign starts with a pre-vote,
    /// which the followers still hearing the leader refuse (their leader lease), and the leader's next
    /// heartbeat makes this node its follower again. Ignored on any other node, and without PreVote and
    /// CheckQuorum (which make it harmless).
    pub fn peer_lost(&mut self, peer: NodeId) {
        if self.role != Role::Follower
            || self.leader != Some(peer)
            || !(self.cfg.pre_vote && self.cfg.check_quorum)
        {
            return;
        }
        self.leader = None;
        let me = self.cfg.id;
        let before = self
            .conf
            .voters
            .iter()
            .filter(|&&v| v != peer && v < me)
            .count();
        self.election_elapsed = self.randomized_election_ticks.saturating_sub(1 + before);
    }

    /// Makes a leader step down to follower without a successor (a fault for demonstrations).
    pub fn step_down(&mut self) {
        if self.role == Role::Leader {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Records that the application took a snapshot of its state at `index` (at most the last applied index)
    /// and compacts the log up to it, but for a catch-up margin: the last [`Config::catch_up_entries`] entries
    /// up to `index` that fit in [`Config::catch_up_bytes`] stay, so a follower that far behind is sent
    /// entries, not the snapshot. Returns the snapshot's metadata, for the driver to persist with `data`.
    pub fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<SnapshotMeta, Error> {
        if index <= self.log.snapshot_index()
            || index > self.log.applied
            || self.snapshot_to_install.is_some()
        {
            return Err(Error::Compact(format!(
                "index {index} is outside ({}, applied {}]",
                self.log.snapshot_index(),
                self.log.applied
            )));
        }
        let meta = SnapshotMeta {
            index,
            term: self
                .log
                .term(index)
                .expect("applied entries are in the log"),
            conf_state: self.conf_at(index),
        };
        let snapshot = Snapshot {
            meta: meta.clone(),
            data,
        };
        let (keep_entries, keep_bytes) = (self.cfg.catch_up_entries, self.cfg.catch_up_bytes);
        self.log.compact(snapshot, keep_entries, keep_bytes);
        Ok(meta)
    }

    /// True if a call to [`Raft::ready`] would return something to do.
    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        // The broadcast flags only mean something on a leader: one that just stepped down (say, on committing
        // its own removal) may still have them set, and must not report work forever.
        let leader_work =
            self.role == Role::Leader && (self.need_broadcast || self.need_read_round);
        leader_work
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || !self.read_states.is_empty()
            || self.snapshot_to_install.is_some()
            || self.log.last_index() > self.log.stable
            || self.hard_state() != self.persisted_hs
            || self.soft_state() != self.reported_soft
            || self.has_entries_to_apply()
    }

    fn has_entries_to_apply(&self) -> bool {
        self.log.applied >= self.log.snapshot_index()
            && self.log.applied < self.log.commit.min(self.log.stable)
    }

    /// The node's role and the leader it knows of.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    /// Collects what the driver must do next. Only one `Ready` may be outstanding: hand it back to
    /// [`Raft::advance`] before asking for another.
    pub fn ready(&mut self) -> Ready {
        assert!(!self.ready_outstanding, "ready() called before advance()");
        if self.role == crate::Role::Leader {
            if self.need_broadcast {
                self.broadcast_append();
            }
            if self.need_read_round {
                self.broadcast_heartbeat();
            }
        }
        self.ready_outstanding = true;
        let soft = self.soft_state();
        let hs = self.hard_state();
        let ready = Ready {
            soft_state: (soft != self.reported_soft).then_some(soft),
            hard_state: (hs != self.persisted_hs).then_some(hs),
            entries: self.log.unstable_entries().to_vec(),
            snapshot: self.snapshot_to_install.take(),
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            read_states: std::mem::take(&mut self.read_states),
        };
        self.reported_soft = soft;
        ready
    }

    /// Takes back a `Ready` whose snapshot, entries and hard state are now durable (and whose snapshot is
    /// installed). Returns what that durability released.
    pub fn advance(&mut self, ready: Ready) -> Persisted {
        assert!(self.ready_outstanding, "advance() without ready()");
        self.ready_outstanding = false;
        if let Some(hs) = ready.hard_state {
            self.persisted_hs = hs;
        }
        if let Some(snapshot) = &ready.snapshot {
            let index = snapshot.meta.index;
            self.log.applied = self.log.applied.max(index);
            if self.log.snapshot_index() == index {
                self.log.stable = self.log.stable.max(index);
            }
        }
        self.mark_stable(&ready.entries);
        if self.role == Role::Leader && self.maybe_commit() {
            self.need_broadcast = true;
        }
        Persisted {
            messages: ready.persisted_messages,
            committed_entries: self.take_committed(),
            read_states: ready.read_states,
        }
    }

    /// Entries of `persisted` that are still in the log (a leader may have replaced some meanwhile) are durable.
    fn mark_stable(&mut self, persisted: &[Entry]) {
        let still_there = persisted
            .iter()
            .rev()
            .find(|e| self.log.matches(e.index, e.term))
            .map(|e| e.index);
        if let Some(index) = still_there
            && self.log.snapshot_index() <= index
        {
            self.log.stable = self.log.stable.max(index);
        }
    }

    /// The next committed, durable entries to apply, up to `max_apply_bytes`.
    fn take_committed(&mut self) -> Vec<Entry> {
        if !self.has_entries_to_apply() {
            return Vec::new();
        }
        let hi = self.log.commit.min(self.log.stable);
        let out = self
            .log
            .slice(self.log.applied + 1, hi + 1, self.cfg.max_apply_bytes);
        if let Some(last) = out.last() {
            self.log.applied = last.index;
        }
        out
    }

    /// Peer messages refused so far because no correct peer sends them (see [`Raft::step`]).
    pub fn refused_messages(&self) -> u64 {
        self.refused
    }

    /// The node's state, for operators and tests.
    pub fn status(&self) -> Status {
        Status {
            id: self.cfg.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            conf: self.conf.clone(),
            peers: self
                .progress
                .iter()
                .map(|(&id, p)| PeerStatus {
                    id,
                    voter: self.conf.is_voter(id),
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    recent_active: p.recent_active,
                })
                .collect(),
        }
    }

    /// The log entries held in memory (the catch-up margin, then those after the last snapshot), for checkers
    /// and tests.
    pub fn log_entries(&self) -> &[Entry] {
        &self.log.entries
    }

    /// The entry at `index`, if the log still holds it (it is after the last snapshot and not beyond the end).
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// A leader's view of each peer: how much of its log the peer is known to hold (empty unless leading).
    /// A nonzero match index means the peer acknowledged an append of this term.
    pub fn match_indexes(&self) -> impl Iterator<Item = (NodeId, Index)> + '_ {
        self.progress.iter().map(|(&id, p)| (id, p.match_index))
    }

    /// The node's role. Cheaper than [`Raft::status`], for hot paths.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term. Cheaper than [`Raft::status`], for hot paths.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The commit index. Cheaper than [`Raft::status`], for hot paths.
    pub fn commit(&self) -> Index {
        self.log.commit
    }

    /// The last index in the log. Cheaper than [`Raft::status`], for hot paths.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if the log holds it or it is the snapshot's last entry.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// The membership in force.
    pub fn conf(&self) -> &ConfState {
        &self.conf
    }

    /// The last index handed out to apply. Cheaper than [`Raft::status`], for hot paths.
    pub fn applied(&self) -> Index {
        self.log.applied
    }

    /// The last snapshot the log starts after.
    pub fn snapshot(&self) -> &Snapshot {
        &self.log.snapshot
    }
}
