//! Shared test machinery: a temp dir, a model of the logical state, a checker that accepts exactly the
//! states a correct storage may recover to after a crash, and a scripted workload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reinado_raft::{ConfState, Entry, EntryKind, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::{DiskStorage, FaultyFs, Options, Recovered, StorageError};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("reinado-storage-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The directory the in-memory tests use.
pub fn dir() -> &'static Path {
    Path::new("/node")
}

pub fn open(fs: &FaultyFs, opts: Options) -> Result<(DiskStorage, Recovered), StorageError> {
    DiskStorage::open_with(Arc::new(fs.clone()), dir(), opts)
}

pub fn small_segments() -> Options {
    Options {
        segment_size_bytes: 200,
        ..Options::default()
    }
}

pub fn entry(index: Index, term: Term) -> Entry {
    let kind = if index.is_multiple_of(7) {
        EntryKind::ConfChange
    } else {
        EntryKind::Normal
    };
    Entry {
        term,
        index,
        kind,
        data: format!("entry {index} of term {term}").into_bytes(),
    }
}

pub fn entries(range: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

pub fn hs(term: Term, vote: Option<u64>, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

pub fn snapshot(index: Index, term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState::with_voters([1, 2, 3]),
        },
        data: format!("state machine up to {index}").into_bytes(),
    }
}

/// What storage holds logically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl From<Recovered> for State {
    fn from(r: Recovered) -> State {
        State {
            hard_state: r.hard_state,
            snapshot: r.snapshot,
            entries: r.entries,
        }
    }
}

/// One atomic logical change: a crash keeps some prefix of the changes issued, and at least those
/// acknowledged.
#[derive(Clone, Debug)]
pub enum Change {
    Entry(Entry),
    HardState(HardState),
    Snapshot(Snapshot),
}

impl State {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Entry(e) => {
                let first = self.snapshot.as_ref().map_or(0, |s| s.meta.index) + 1;
                self.entries.truncate((e.index - first) as usize);
                assert_eq!(self.entries.len() as u64 + first, e.index, "model gap");
                self.entries.push(e.clone());
            }
            Change::HardState(hs) => self.hard_state = *hs,
            Change::Snapshot(s) => {
                let pos = self.entries.iter().position(|e| e.index == s.meta.index);
                match pos {
                    Some(p) if self.entries[p].term == s.meta.term => {
                        self.entries.drain(..=p);
                    }
                    _ => self.entries.clear(),
                }
                self.snapshot = Some(s.clone());
            }
        }
    }
}

/// The changes a workload issued, and how many of them were acknowledged as durable.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub base: State,
    pub issued: Vec<Change>,
    pub acked: usize,
}

impl History {
    pub fn starting_from(base: State) -> History {
        History {
            base,
            ..History::default()
        }
    }

    /// The state after all issued changes.
    pub fn latest(&self) -> State {
        self.state_after(self.issued.len())
    }

    pub fn state_after(&self, k: usize) -> State {
        let mut state = self.base.clone();
        for change in &self.issued[..k] {
            state.apply(change);
        }
        state
    }

    /// Accepts `recovered` only if it is the state after some prefix of the issued changes that includes every
    /// acknowledged one. Returns the prefix's length.
    pub fn check(&self, recovered: &State) -> Result<usize, String> {
        let mut state = self.state_after(self.acked);
        for k in self.acked..=self.issued.len() {
            if k > self.acked {
                state.apply(&self.issued[k - 1]);
            }
            if &state == recovered {
                return Ok(k);
            }
        }
        Err(format!(
            "recovered state is not a prefix of the {} issued changes that keeps the {} acknowledged ones:\n\
             recovered: {recovered:?}\nacknowledged: {:?}",
            self.issued.len(),
            self.acked,
            self.state_after(self.acked)
        ))
    }
}

/// One call a workload makes.
#[derive(Clone, Debug)]
pub enum Step {
    Append(Vec<Entry>),
    SetHardState(HardState),
    Sync,
    Snapshot(Snapshot),
}

/// Runs `steps` against `storage`, recording into `history`; stops at the first error and returns it.
pub fn run(
    storage: &mut DiskStorage,
    steps: &[Step],
    history: &mut History,
) -> Result<(), StorageError> {
    for step in steps {
        match step {
            Step::Append(es) => {
                history.issued.extend(es.iter().cloned().map(Change::Entry));
                storage.append(es)?;
            }
            Step::SetHardState(hs) => {
                history.issued.push(Change::HardState(*hs));
                storage.set_hard_state(hs)?;
            }
            Step::Sync => {
                storage.sync()?;
                history.acked = history.issued.len();
            }
            Step::Snapshot(s) => {
                history.issued.push(Change::Snapshot(s.clone()));
                storage.save_snapshot(s)?;
                history.acked = history.issued.len();
            }
        }
    }
    Ok(())
}

/// A workload that rolls segments (with [`small_segments`]), overwrites synced and unsynced suffixes, and
/// takes snapshots that keep the log, discard a conflicting log, and leave the log empty.
pub fn workload() -> Vec<Step> {
    use Step::*;
    vec![
        SetHardState(hs(1, Some(1), 0)),
        Append(entries(1..=5, 1)),
        Sync,
        Append(entries(6..=8, 1)),
        SetHardState(hs(1, Some(1), 3)),
        Sync,
        Append(entries(7..=9, 2)),
        SetHardState(hs(2, None, 6)),
        Sync,
        Append(entries(10..=14, 2)),
        Append(entries(12..=13, 3)),
        SetHardState(hs(3, Some(2), 9)),
        Sync,
        Snapshot(snapshot(8, 2)),
        Append(entries(14..=18, 3)),
        Sync,
        Snapshot(snapshot(20, 4)),
        Append(entries(21..=25, 4)),
        SetHardState(hs(4, Some(3), 21)),
        Sync,
        Append(entries(23..=24, 5)),
        Sync,
        Snapshot(snapshot(22, 9)),
        Append(entries(23..=26, 9)),
        Sync,
        Snapshot(snapshot(26, 9)),
        Append(entries(27..=29, 9)),
        SetHardState(hs(9, Some(1), 27)),
        Sync,
    ]
}
