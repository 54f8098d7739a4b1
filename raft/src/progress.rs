//! What a leader knows about each follower's log (etcd's `tracker/progress.go`).
//!
//! Invariant: `match_index < next_index` always. `match_index` is the highest index known to be replicated on
//! the peer; `next_index` is the next index the leader will send.

use crate::types::Index;
use std::collections::VecDeque;

/// How a leader is replicating to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the peer's log matches; it sends one append at a time and waits.
    Probe,
    /// The logs match up to `match_index`; appends are pipelined, bounded by the in-flight window.
    Replicate,
    /// The peer needs entries the leader compacted; a snapshot is being streamed.
    Snapshot {
        /// The index of the snapshot being sent.
        index: Index,
        /// The byte offset acknowledged so far.
        offset: u64,
    },
}

/// A leader's view of one peer.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated on the peer.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// The replication mode.
    pub state: ProgressState,
    /// In `Probe`, an append is outstanding: wait for its answer or the next heartbeat.
    pub probe_sent: bool,
    /// In `Replicate`, the last index of each append in flight, oldest first.
    pub inflight: VecDeque<Index>,
    /// The peer answered something since the last CheckQuorum round.
    pub recent_active: bool,
    /// The highest read round the peer confirmed.
    pub read_round: u64,
    /// Ticks since the snapshot chunk in flight was sent (resent when it grows past the heartbeat interval).
    pub snapshot_ticks: usize,
}

impl Progress {
    /// A peer the leader knows nothing about yet.
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: false,
            read_round: 0,
            snapshot_ticks: 0,
        }
    }

    /// Switches to probing from `next_index`.
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Switches to pipelined replication after `match_index`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Records a successful append up to `index`. Returns true if it was news.
    pub fn update(&mut self, index: Index) -> bool {
        let news = index > self.match_index;
        if news {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        news
    }

    /// True if the leader should not send another append now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records that an append ending at `last` was sent.
    pub fn sent_append(&mut self, last: Index, entries: usize) {
        match self.state {
            ProgressState::Replicate if entries > 0 => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Replicate => {}
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => unreachable!("append sent while sending a snapshot"),
        }
    }
}
