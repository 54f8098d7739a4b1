//! The replicated log as the core sees it: the last snapshot's position followed by the entries after it.
//!
//! Invariants kept here:
//! - `entries[k].index == offset + k` (the log is contiguous) and `offset <= snapshot.index + 1`: the entries
//!   from `offset` to the snapshot's index are a catch-up margin, already applied and in the snapshot, kept
//!   so that a follower a little behind a compaction is sent entries rather than the whole snapshot;
//! - `snapshot.index <= commit` and `applied <= commit`;
//! - `stable <= last_index()`: entries at or below `stable` are durable on this node's disk.

use crate::types::{Entry, Index, Snapshot, Term};

/// The log of one node. The whole suffix after the last snapshot is held in memory; the driver bounds it by
/// taking snapshots (`Raft::compact`).
#[derive(Debug)]
pub struct RaftLog {
    /// The last snapshot (its data is kept so that lagging followers can be sent it).
    pub snapshot: Snapshot,
    /// Entries from `offset` on: the catch-up margin (at or below `snapshot.meta.index`), then the rest.
    pub entries: Vec<Entry>,
    /// The index of `entries[0]` (of the next entry appended, if there is none).
    offset: Index,
    /// The highest index known to be committed (§5.3).
    pub commit: Index,
    /// The highest index handed to the application to apply.
    pub applied: Index,
    /// The highest index known to be durable locally.
    pub stable: Index,
}

impl RaftLog {
    /// A log that starts after `snapshot` and holds `entries`, all of them durable.
    pub fn new(snapshot: Snapshot, entries: Vec<Entry>, commit: Index) -> Self {
        let snap_index = snapshot.meta.index;
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                snap_index + 1,
                "log entries must follow the snapshot"
            );
        }
        for pair in entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index + 1,
                "log entries must be contiguous"
            );
        }
        let last = entries.last().map_or(snap_index, |e| e.index);
        RaftLog {
            snapshot,
            entries,
            offset: snap_index + 1,
            commit: commit.max(snap_index).min(last),
            applied: snap_index,
            stable: last,
        }
    }

    /// The index of the snapshot the log starts after.
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.meta.index
    }

    /// The first index held as an entry (may be `last_index() + 1` if there is none); at or below the
    /// snapshot's index while a catch-up margin is kept.
    pub fn first_index(&self) -> Index {
        self.offset
    }

    /// The index of the last entry (the snapshot's index if there are none).
    pub fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
            .max(self.snapshot_index())
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        match self.entries.last() {
            Some(e) if e.index >= self.snapshot_index() => e.term,
            _ => self.snapshot.meta.term,
        }
    }

    /// The term of the entry at `index`, if the log still knows it (it is the snapshot's last index or held).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if it is held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.offset;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// True if the entry at `index` has `term` (§5.3, the consistency check of AppendEntries).
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: true if a log ending at (`last_index`, `last_term`) is at least as up to date as this one.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The entries not yet known to be durable (after `stable`).
    pub fn unstable_entries(&self) -> &[Entry] {
        let durable = self.stable.max(self.snapshot_index()) + 1 - self.offset;
        &self.entries[durable as usize..]
    }

    /// Entries in `[lo, hi)` up to about `max_bytes` (always at least one if the range is not empty).
    /// `lo` must not be below `first_index()`.
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Vec<Entry> {
        assert!(
            lo >= self.first_index(),
            "slice below the log's first entry: {lo}"
        );
        let hi = hi.min(self.last_index() + 1);
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in lo..hi {
            let entry = self.entry(index).expect("index within the log");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends entries received from a leader after the consistency check passed at `entries[0].index - 1`.
    /// Entries already present with the same term are skipped; the first conflicting entry and all that follow
    /// it are replaced (§5.3). Returns the index of the last entry of `entries` (or `prev` if empty).
    pub fn append_from_leader(&mut self, prev: Index, entries: Vec<Entry>) -> Index {
        let last_new = prev + entries.len() as Index;
        let conflict = entries
            .iter()
            .position(|e| !self.matches(e.index, e.term) && e.index > self.snapshot_index());
        if let Some(pos) = conflict {
            let from = entries[pos].index;
            assert!(
                from > self.commit,
                "a leader tried to overwrite committed entry {from} (commit {})",
                self.commit
            );
            self.truncate_and_append(entries.into_iter().skip(pos));
        }
        last_new
    }

    /// Appends entries that may replace a suffix: everything at or after the first new index is dropped.
    pub fn truncate_and_append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let mut entries = entries.into_iter().peekable();
        let Some(first) = entries.peek() else { return };
        let from = first.index;
        assert!(
            from > self.snapshot_index() && from <= self.last_index() + 1,
            "append at {from} leaves a gap after {}",
            self.last_index()
        );
        self.entries.truncate((from - self.offset) as usize);
        self.stable = self.stable.min(from - 1);
        self.entries.extend(entries);
    }

    /// The first index of the term of the entry at `index`, looking back no further than the first held entry
    /// or the commit index (entries up to it cannot conflict). Used for the rejection hint of §5.3.
    pub fn first_index_of_term(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let floor = self.first_index().max(self.commit + 1);
        let mut i = index;
        while i > floor && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index at or below `index` whose term is `term`, if the log holds one.
    pub fn last_index_of_term(&self, term: Term, index: Index) -> Option<Index> {
        let mut i = index.min(self.last_index());
        while i >= self.snapshot_index() {
            match self.term(i) {
                Some(t) if t == term => return Some(i),
                Some(t) if t < term => return None,
                _ => {}
            }
            if i == 0 {
                break;
            }
            i -= 1;
        }
        None
    }

    /// Replaces the log with a snapshot received from a leader. Entries after the snapshot are kept if the log
    /// agrees with the snapshot at its last index; otherwise the whole log is discarded.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if self.matches(index, snapshot.meta.term) && index < self.last_index() {
            let keep_from = (index + 1 - self.offset) as usize;
            self.entries.drain(..keep_from);
        } else {
            self.entries.clear();
        }
        self.offset = index + 1;
        self.stable = self.stable.min(index);
        self.commit = self.commit.max(index);
        self.snapshot = snapshot;
    }

    /// Drops the entries covered by a snapshot the application took at `snapshot.meta.index`, but for a
    /// catch-up margin: the last `keep_entries` of them, as many as fit in `keep_bytes`.
    pub fn compact(&mut self, snapshot: Snapshot, keep_entries: u64, keep_bytes: usize) {
        let index = snapshot.meta.index;
        assert!(index <= self.applied, "compacting beyond applied");
        assert!(
            index >= self.snapshot_index(),
            "compacting below the snapshot"
        );
        let mut keep_from = index + 1;
        let mut bytes = 0;
        while keep_from > self.offset && index + 1 - keep_from < keep_entries {
            let entry = self.entry(keep_from - 1).expect("held");
            bytes += entry.size_bytes();
            if bytes > keep_bytes {
                break;
            }
            keep_from -= 1;
        }
        self.entries.drain(..(keep_from - self.offset) as usize);
        self.offset = keep_from;
        self.snapshot = snapshot;
    }
}
