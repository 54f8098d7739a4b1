//! Followers and candidates: accepting appends (§5.3), heartbeats and snapshots (§7).

use crate::raft::{IncomingSnapshot, Raft};
use crate::types::*;

impl Raft {
    pub(crate) fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_from_leader(m);
            }
            _ => {}
        }
    }

    pub(crate) fn step_candidate(&mut self, m: Message) {
        match m.body {
            // §5.2: a leader of this term exists; give up the campaign and follow it.
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.step_follower(m);
            }
            _ => {}
        }
    }

    fn handle_from_leader(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => self.handle_append(m.from, prev_log_index, prev_log_term, entries, commit),
            MessageBody::Heartbeat { commit, read_round } => {
                // The leader sends min(its commit, our match index): entries up to it are ours and committed.
                self.commit_to(commit);
                self.send(m.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::Snapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_snapshot_chunk(m.from, meta, offset, data, done),
            _ => unreachable!("only leader messages are routed here"),
        }
    }

    /// AppendEntries receiver (Figure 2), with a conflict hint on rejection.
    fn handle_append(
        &mut self,
        leader: NodeId,
        mut prev: Index,
        mut prev_term: Term,
        mut entries: Vec<Entry>,
        commit: Index,
    ) {
        let committed = self.log.commit;
        if prev < committed {
            // Entries up to our commit index are committed, hence in every later leader's log (§5.4): skip them.
            let skip = ((committed - prev) as usize).min(entries.len());
            entries.drain(..skip);
            prev = committed;
            prev_term = self
                .log
                .term(committed)
                .expect("the commit index is in the log");
            if entries.first().is_some_and(|e| e.index != committed + 1) {
                entries.clear();
            }
        }
        if self.log.matches(prev, prev_term) {
            let last_new = self.log.append_from_leader(prev, entries);
            self.commit_to(commit.min(last_new));
            let body = MessageBody::AppendResponse {
                reject: false,
                index: last_new.max(committed),
                hint_index: 0,
                hint_term: 0,
            };
            return self.send(leader, body);
        }
        let (hint_index, hint_term) = if prev > self.log.last_index() {
            (self.log.last_index() + 1, 0)
        } else {
            let term = self
                .log
                .term(prev)
                .expect("prev is above the commit index and within the log");
            (self.log.first_index_of_term(prev), term)
        };
        let body = MessageBody::AppendResponse {
            reject: true,
            index: prev,
            hint_index,
            hint_term,
        };
        self.send(leader, body);
    }

    /// InstallSnapshot receiver (§7), one chunk at a time. Chunks are assembled only within one stream (see
    /// [`IncomingSnapshot`]); the last one is checked by `verify_snapshot` before the snapshot is installed.
    fn handle_snapshot_chunk(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let index = meta.index;
        if index <= self.log.commit {
            // Nothing to install: we already have everything the snapshot covers.
            self.incoming_snapshot = None;
            return self.answer_snapshot(leader, index, offset + data.len() as u64, false, true);
        }
        let term = self.term;
        let same_stream = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|s| s.from == leader && s.term == term && s.meta == meta);
        if !same_stream {
            // Another stream, or none: what was assembled so far is not this sender's, so it is dropped.
            self.incoming_snapshot = None;
            if offset != 0 {
                return self.answer_snapshot(leader, index, 0, true, false);
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                from: leader,
                term,
                meta,
                data: Vec::new(),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let have = incoming.data.len() as u64;
        if offset != have {
            // A duplicate (offset below) or a gap (offset above): say where we are.
            return self.answer_snapshot(leader, index, have, offset > have, false);
        }
        incoming.data.extend_from_slice(&data);
        let have = incoming.data.len() as u64;
        if !done {
            return self.answer_snapshot(leader, index, have, false, false);
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        if self
            .cfg
            .verify_snapshot
            .is_some_and(|ok| !ok(&incoming.data))
        {
            // Bad bytes are never installed: ask the leader for the whole snapshot again.
            return self.answer_snapshot(leader, index, 0, true, false);
        }
        self.install_snapshot(Snapshot {
            meta: incoming.meta,
            data: incoming.data,
        });
        self.answer_snapshot(leader, index, have, false, true);
    }

    fn answer_snapshot(
        &mut self,
        to: NodeId,
        index: Index,
        next_offset: u64,
        reject: bool,
        done: bool,
    ) {
        let body = MessageBody::SnapshotResponse {
            index,
            next_offset,
            reject,
            done,
        };
        self.send(to, body);
    }

    /// Replaces the log and membership with the snapshot's; the driver persists and installs it at the next
    /// `ready`, before the answer to the leader leaves.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        self.conf = snapshot.meta.conf_state.clone();
        self.log.restore(snapshot.clone());
        self.snapshot_to_install = Some(snapshot);
    }
}
