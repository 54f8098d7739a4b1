//! The leader: replication (§5.3) with pipelining and fast backtracking, commitment (§5.4.2), heartbeats,
//! CheckQuorum, ReadIndex (thesis §6.4), snapshots (§7) and leadership transfer (thesis §3.10).

use crate::progress::{Progress, ProgressState};
use crate::raft::{Leaving, PendingRead, Raft};
use crate::types::*;

impl Raft {
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                // Thesis §6.2: a leader that cannot hear a majority steps down, so clients look elsewhere.
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
        }
        if self.transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.cfg.election_ticks {
                self.transferee = None;
            }
        }
        if let Some(leaving) = self.leaving.as_mut() {
            leaving.ticks += 1;
            if leaving.ticks >= 2 * self.cfg.election_ticks {
                // A remaining voter does not answer (it is down or cut off): hand over all the same.
                return self.hand_over_after_removal();
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.resend_stalled_snapshots();
    }

    /// True if a quorum of voters (this node included) was heard from since the last check; clears the marks.
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.cfg.id;
        let mut active = usize::from(self.conf.is_voter(me));
        for (id, pr) in self.progress.iter_mut() {
            if pr.recent_active && self.conf.is_voter(*id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.quorum()
    }

    pub(crate) fn step_leader(&mut self, m: Message) {
        if let Some(pr) = self.progress.get_mut(&m.from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                if reject {
                    self.handle_append_reject(m.from, index, hint_index, hint_term);
                } else {
                    self.handle_append_success(m.from, index);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(m.from, read_round)
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                reject,
                done,
            } => self.handle_snapshot_response(m.from, index, next_offset, reject, done),
            MessageBody::ReadIndex { ctx } => self.leader_read(m.from, ctx),
            _ => {}
        }
    }

    /// Appends an entry of this term to the leader's log; it goes out with the next `ready`.
    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> Index {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            kind,
            data,
        };
        self.uncommitted_bytes += entry.data.len() as u64;
        self.log.truncate_and_append([entry]);
        self.need_broadcast = true;
        index
    }

    /// Sends appends (or snapshot chunks) to every peer that is not paused.
    pub(crate) fn broadcast_append(&mut self) {
        self.need_broadcast = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in peers {
            self.send_append(id, true);
        }
    }

    /// Sends `id` the entries from its `next_index`, or the snapshot if they were compacted away. With
    /// `allow_empty`, an append with no entries is still sent (it carries the commit index). Returns true if
    /// entries were sent.
    pub(crate) fn send_append(&mut self, id: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&id) else {
            return false;
        };
        if pr.is_paused(self.cfg.max_inflight) {
            return false;
        }
        let prev = pr.next_index - 1;
        // An empty log is sent the snapshot once there is one, never the log from its first entry (which a
        // catch-up margin may still hold): it learns the membership in one piece, not a bootstrap entry at
        // a time.
        let from_scratch = prev == 0 && self.log.snapshot_index() > 0;
        let Some(prev_term) = self.log.term(prev).filter(|_| !from_scratch) else {
            self.send_snapshot_chunk(id, 0);
            return false;
        };
        let last = self.log.last_index();
        let entries = if prev < last {
            self.log
                .slice(prev + 1, last + 1, self.cfg.max_append_bytes)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let sent = entries.len();
        let pr = self.progress.get_mut(&id).expect("checked above");
        pr.sent_append(prev + sent as Index, sent);
        let body = MessageBody::Append {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            commit: self.log.commit,
        };
        self.send(id, body);
        sent > 0
    }

    fn handle_append_success(&mut self, from: NodeId, index: Index) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        // An answer at the known match index is no news, except to a probe: it proves the logs match there (the
        // first probe after a snapshot is answered so), and the peer must leave Probe or it stays paused.
        let news = pr.update(index);
        let probe_matched = pr.state == ProgressState::Probe && index == pr.match_index;
        if !news && !probe_matched {
            return;
        }
        if pr.state == ProgressState::Probe {
            pr.become_replicate();
        }
        if self.maybe_commit() {
            self.need_broadcast = true;
        }
        if self.leaving.is_some() {
            self.maybe_leave();
            if self.role != Role::Leader {
                return;
            }
        }
        if self.transferee == Some(from)
            && self.progress[&from].match_index == self.log.last_index()
        {
            self.send(from, MessageBody::TimeoutNow);
        }
        while self.send_append(from, false) {}
    }

    /// §5.3 with the conflict-term optimisation: jump `next_index` back past the whole conflicting term.
    fn handle_append_reject(
        &mut self,
        from: NodeId,
        rejected: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let Some(pr) = self.progress.get(&from) else {
            return;
        };
        let stale = match pr.state {
            ProgressState::Replicate => rejected <= pr.match_index,
            ProgressState::Probe => rejected + 1 != pr.next_index,
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return;
        }
        let next = if hint_term == 0 {
            hint_index
        } else {
            match self.log.last_index_of_term(hint_term, rejected) {
                Some(j) => j + 1,
                None => hint_index,
            }
        };
        let pr = self.progress.get_mut(&from).expect("checked above");
        if hint_term == 0 && hint_index <= pr.match_index {
            // The follower's log ends before entries it acknowledged: it lost them (a disk that lied about
            // an fsync, or a lost disk under the same id). Probe from where its log really ends; left at
            // `match_index`, the leader would send it the same append forever. Lowering `match_index` can
            // only hold the commit index back, never move it.
            pr.match_index = hint_index.saturating_sub(1);
        }
        pr.become_probe(next.min(rejected).max(1));
        self.send_append(from, true);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.read_round = pr.read_round.max(read_round);
        if self.leaving.is_some() {
            return self.maybe_leave();
        }
        if pr.match_index < last {
            // The peer is behind: an append or its answer may have been lost. Let one more through, even an
            // empty one: if the entries before `next_index` were lost, the peer rejects it and we probe back.
            match pr.state {
                ProgressState::Probe => pr.probe_sent = false,
                ProgressState::Replicate => {
                    pr.inflight.pop_front();
                }
                ProgressState::Snapshot { .. } => {}
            }
            self.send_append(from, true);
        }
        self.release_reads();
    }

    /// §5.4.2: the commit index moves to the highest index stored on a quorum of voters, but only if that entry
    /// is of the current term. Returns true if it moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut moved = false;
        loop {
            let Some(index) = self.quorum_match_index() else {
                return moved;
            };
            let current_term = self.log.term(index) == Some(self.term);
            if index <= self.log.commit || !(current_term || self.cfg.bugs.commit_previous_term) {
                return moved;
            }
            self.commit_to(index);
            moved = true;
            if self.role != Role::Leader {
                return moved;
            }
            self.serve_reads_before_commit();
        }
    }

    /// The highest index replicated on a quorum of voters (this node counts what it has made durable).
    fn quorum_match_index(&self) -> Option<Index> {
        self.quorum_value(self.log.stable, |p| p.match_index)
    }

    /// The highest value a quorum of voters has reached, given this node's own and how to read a peer's from
    /// its progress (a voter without progress counts as 0). `None` if there are no voters.
    fn quorum_value(&self, mine: u64, theirs: impl Fn(&Progress) -> u64) -> Option<u64> {
        let me = self.cfg.id;
        let mut values: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|&id| match id == me {
                true => mine,
                false => self.progress.get(&id).map_or(0, &theirs),
            })
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied()
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        if self.need_read_round {
            self.need_read_round = false;
            self.read_round += 1;
        }
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (id, matched) in peers {
            let body = MessageBody::Heartbeat {
                commit: self.log.commit.min(matched),
                read_round: self.read_round,
            };
            self.send(id, body);
        }
        self.release_reads();
    }

    fn send_snapshot_chunk(&mut self, id: NodeId, offset: u64) {
        let snapshot = &self.log.snapshot;
        let index = snapshot.meta.index;
        let total = snapshot.data.len() as u64;
        let offset = offset.min(total);
        let end = (offset + self.cfg.snapshot_chunk_bytes as u64).min(total);
        let body = MessageBody::Snapshot {
            meta: snapshot.meta.clone(),
            offset,
            data: snapshot.data[offset as usize..end as usize].to_vec(),
            done: end == total,
        };
        let pr = self.progress.get_mut(&id).expect("a peer of this leader");
        pr.state = ProgressState::Snapshot { index, offset };
        pr.inflight.clear();
        pr.snapshot_ticks = 0;
        self.send(id, body);
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: Index,
        next_offset: u64,
        reject: bool,
        done: bool,
    ) {
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let total = self.log.snapshot.data.len() as u64;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let ProgressState::Snapshot {
            index: sending,
            offset: sent,
        } = pr.state
        else {
            return;
        };
        if reject && next_offset == 0 && index == sending && sent + chunk >= total {
            // The whole snapshot arrived and the follower refused it (its check failed): it goes again from
            // offset 0, but only when the stall timer fires, so that a bad image is not resent in a tight loop.
            pr.state = ProgressState::Snapshot { index, offset: 0 };
            pr.snapshot_ticks = 0;
        } else if done {
            pr.match_index = pr.match_index.max(index);
            pr.become_probe(index + 1);
            self.send_append(from, true);
        } else if index == sending && index == self.log.snapshot_index() {
            self.send_snapshot_chunk(from, next_offset);
        } else {
            // The leader compacted again meanwhile: start over with the new snapshot.
            self.send_snapshot_chunk(from, 0);
        }
    }

    /// Snapshot chunks are sent one at a time; if an answer is lost, the chunk goes again after a while.
    fn resend_stalled_snapshots(&mut self) {
        let patience = self.cfg.heartbeat_ticks.max(2) * 2;
        let mut stalled = Vec::new();
        for (&id, pr) in self.progress.iter_mut() {
            if let ProgressState::Snapshot { offset, .. } = pr.state {
                pr.snapshot_ticks += 1;
                if pr.snapshot_ticks >= patience {
                    stalled.push((id, offset));
                }
            }
        }
        for (id, offset) in stalled {
            self.send_snapshot_chunk(id, offset);
        }
    }

    /// Thesis §6.4: a read is served at the commit index once a quorum confirms this node still leads.
    pub(crate) fn leader_read(&mut self, from: NodeId, ctx: Vec<u8>) {
        if self.transferee.is_some() {
            return self.answer_read(from, ctx, None);
        }
        if self.log.term(self.log.commit) != Some(self.term) {
            // Step 1: until an entry of this term commits, the leader does not know the latest commit index.
            self.reads_before_commit.push((from, ctx));
            return;
        }
        self.pending_reads.push_back(PendingRead {
            from,
            ctx,
            index: self.log.commit,
            round: self.read_round + 1,
        });
        self.need_read_round = true;
        if self.quorum() == 1 && self.conf.is_voter(self.cfg.id) {
            self.need_read_round = false;
            self.read_round += 1;
            self.release_reads();
        }
    }

    fn serve_reads_before_commit(&mut self) {
        if self.log.term(self.log.commit) != Some(self.term) {
            return;
        }
        for (from, ctx) in std::mem::take(&mut self.reads_before_commit) {
            self.leader_read(from, ctx);
        }
    }

    /// Releases the reads whose round a quorum of voters has confirmed.
    pub(crate) fn release_reads(&mut self) {
        let Some(confirmed) = self.quorum_value(self.read_round, |p| p.read_round) else {
            return;
        };
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let read = self.pending_reads.pop_front().expect("checked above");
            self.answer_read(read.from, read.ctx, Some(read.index));
        }
    }

    pub(crate) fn answer_read(&mut self, from: NodeId, ctx: Vec<u8>, index: Option<Index>) {
        if from == self.cfg.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    /// Fails every read waiting on this node's leadership (it is stepping down).
    pub(crate) fn fail_pending_reads(&mut self) {
        let pending: Vec<(NodeId, Vec<u8>)> = self
            .pending_reads
            .drain(..)
            .map(|r| (r.from, r.ctx))
            .chain(self.reads_before_commit.drain(..))
            .collect();
        for (from, ctx) in pending {
            self.answer_read(from, ctx, None);
        }
    }

    /// Keeps the leader's progress table in step with a membership change that just took effect.
    pub(crate) fn on_conf_applied(&mut self, cc: &ConfChange) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.cfg.id;
        let id = cc.node_id;
        match cc.kind {
            ConfChangeKind::AddLearner | ConfChangeKind::AddVoter if id != me => {
                let next = self.log.last_index() + 1;
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
                self.need_broadcast = true;
            }
            ConfChangeKind::Remove if id == me => {
                self.leaving = Some(Leaving {
                    index: self.log.commit,
                    round: None,
                    ticks: 0,
                });
                self.maybe_leave();
            }
            ConfChangeKind::Remove => {
                self.progress.remove(&id);
                if self.transferee == Some(id) {
                    self.transferee = None;
                }
            }
            _ => {}
        }
    }

    /// The leader whose removal committed hands over once every remaining voter is known to have learned
    /// that commit: each holds the entries up to it, and then answered a heartbeat sent since, which carried
    /// it. Before, a voter that has not learned it still counts this node's vote (a change takes effect on
    /// commit), and with one voter left and this node's log longer than the voter's (entries proposed after
    /// the removal), that voter would never win an election again.
    fn maybe_leave(&mut self) {
        let Some(leaving) = self.leaving else {
            return;
        };
        let all_voters = |f: &dyn Fn(&Progress) -> bool| {
            (self.conf.voters.iter()).all(|v| self.progress.get(v).is_some_and(f))
        };
        if !all_voters(&|p| p.match_index >= leaving.index) {
            return;
        }
        match leaving.round {
            None => {
                let round = self.read_round + 1;
                self.leaving = Some(Leaving {
                    round: Some(round),
                    ..leaving
                });
                self.need_read_round = true;
            }
            Some(round) if all_voters(&|p| p.read_round >= round) => self.hand_over_after_removal(),
            Some(_) => {}
        }
    }

    /// Thesis §4.2.2: the leader's own removal committed, so it steps down; but the other members take the
    /// change into force only once they learn it is committed, and until then their configuration still counts
    /// this node's vote. So first every remaining member is sent the commit index, and the most caught-up
    /// voter is told to campaign at once (TimeoutNow, thesis §3.10) in the new configuration. These are a
    /// leader's messages of its own durable term: they may leave before the log write (thesis §10.2.1).
    fn hand_over_after_removal(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for &id in &peers {
            self.send_commit_index(id);
        }
        let successor = peers
            .iter()
            .filter(|&&id| self.conf.is_voter(id))
            .max_by_key(|&&id| (self.progress[&id].match_index, std::cmp::Reverse(id)));
        if let Some(&successor) = successor {
            self.send(successor, MessageBody::TimeoutNow);
        }
        let term = self.term;
        self.become_follower(term, None);
    }

    /// Sends `id` the commit index whatever its flow control says (the leader is about to step down): an append
    /// from its match index, where the logs are known to agree, so that a peer missing the newest entries gets
    /// them too (it commits only up to the last entry it matched, §5.3). A peer whose match index was compacted
    /// away gets a heartbeat, which carries no more than that match index.
    fn send_commit_index(&mut self, id: NodeId) {
        let matched = self.progress[&id].match_index;
        let commit = self.log.commit;
        let body = match self.log.term(matched) {
            Some(prev_log_term) => MessageBody::Append {
                prev_log_index: matched,
                prev_log_term,
                entries: self.log.slice(
                    matched + 1,
                    self.log.last_index() + 1,
                    self.cfg.max_append_bytes,
                ),
                commit,
            },
            None => MessageBody::Heartbeat {
                commit: commit.min(matched),
                read_round: self.read_round,
            },
        };
        self.send(id, body);
    }

    /// Starts handing leadership to `target` (thesis §3.10): proposals stop, the target is brought up to date,
    /// then told to campaign at once. Abandoned after an election timeout.
    pub(crate) fn start_transfer(&mut self, target: NodeId) {
        self.transferee = Some(target);
        self.transfer_elapsed = 0;
        let caught_up = self.progress[&target].match_index == self.log.last_index();
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
    }
}
