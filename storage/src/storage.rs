//! [`DiskStorage`]: the write path (append, hard state, group commit, snapshots). Opening and recovery live
//! in `recover.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reinado_raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::codec::{encode_entry, encode_hard_state};
use crate::error::StorageError;
use crate::fs::{FileSystem, StdFs, WritableFile};
use crate::{snapfile, wal};

/// Tuning knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Once the active segment holds at least this many bytes, the next batch starts a new segment.
    /// A single batch is never split, so a segment can exceed it by one batch.
    pub segment_size_bytes: u64,
    /// Deliberate bugs (the simulator's `--bug`); all off by default.
    pub bugs: StorageBugs,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size_bytes: 64 << 20,
            bugs: StorageBugs::default(),
        }
    }
}

/// Known-wrong behaviours of the storage that the simulator's checkers must catch (`reinado-sim --bug`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageBugs {
    /// A failed `fdatasync` of the WAL is retried, and the batch counts as durable once the retry succeeds
    /// (on Linux the retry succeeds without writing what the failed one lost).
    pub retry_failed_sync: bool,
    /// Recovery reads WAL records without checking their checksums.
    pub skip_record_checksum: bool,
}

/// What [`DiskStorage::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state made durable (the default one if none was).
    pub hard_state: HardState,
    /// The newest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot: contiguous, starting at `snapshot.meta.index + 1` (or 1).
    pub entries: Vec<Entry>,
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct Active {
    pub seq: u64,
    pub file: Box<dyn WritableFile>,
    pub len: u64,
}

/// Records buffered since the last sync, all bound for one segment.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The segment the batch goes to.
    pub seq: u64,
    /// True if the segment does not exist yet: the batch starts with its header and the hard state.
    pub new_segment: bool,
    /// The index the segment's name carries if it is new: its first entry's, else the next index.
    pub name_index: Index,
}

/// The durable Raft log and hard state of one node: a segmented write-ahead log plus snapshot files.
///
/// Writes are buffered by [`DiskStorage::append`] and [`DiskStorage::set_hard_state`] and made durable
/// together by [`DiskStorage::sync`] (group commit). After any I/O error the storage refuses further writes
/// with [`StorageError::Failed`]: reopen it, and recovery finds what really reached the disk.
#[derive(Debug)]
pub struct DiskStorage {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) wal_dir: PathBuf,
    pub(crate) snap_dir: PathBuf,
    pub(crate) opts: Options,
    /// The hard state including buffered changes.
    pub(crate) hard_state: HardState,
    /// The newest durable snapshot's meta and file.
    pub(crate) snapshot: Option<(SnapshotMeta, PathBuf)>,
    /// The index of the first entry in `terms`: the snapshot's index + 1.
    pub(crate) first_index: Index,
    /// The term of every entry from `first_index` to the last index, including buffered ones.
    pub(crate) terms: Vec<Term>,
    /// Which segment holds each live entry: `(first index, seq)` runs, ascending in both; a run extends to the
    /// next one's start or to the last index. Only snapshot compaction reads it.
    pub(crate) runs: Vec<(Index, u64)>,
    /// The live segment files by sequence number.
    pub(crate) segments: BTreeMap<u64, PathBuf>,
    pub(crate) active: Option<Active>,
    pub(crate) next_seq: u64,
    /// Encoded records of the current batch; reused across batches.
    pub(crate) buf: Vec<u8>,
    pub(crate) batch: Option<Batch>,
    pub(crate) failed: bool,
}

impl DiskStorage {
    /// Opens (creating it if needed) the storage in `dir` on the real file system and recovers its state.
    pub fn open(dir: &Path, opts: Options) -> Result<(DiskStorage, Recovered), StorageError> {
        DiskStorage::open_with(Arc::new(StdFs), dir, opts)
    }

    /// Opens the storage in `dir` through `fs` and recovers its state: truncates a torn tail of the last
    /// segment, removes leftovers of interrupted snapshots and compactions, and refuses any other damage with
    /// [`StorageError::Corrupt`].
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        opts: Options,
    ) -> Result<(DiskStorage, Recovered), StorageError> {
        crate::recover::open(fs, dir, opts)
    }

    /// The index of the first entry the log holds after the snapshot (snapshot index + 1, or 1).
    pub fn first_index(&self) -> Index {
        self.first_index
    }

    /// The index of the last entry appended, buffered or not (the snapshot's index if the log is empty).
    pub fn last_index(&self) -> Index {
        self.first_index + self.terms.len() as u64 - 1
    }

    /// The hard state last set, buffered or not.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The meta of the newest durable snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref().map(|(meta, _)| meta)
    }

    /// The term of the entry at `index`, if the log holds it.
    pub fn term(&self, index: Index) -> Option<Term> {
        let offset = index.checked_sub(self.first_index)?;
        self.terms.get(usize::try_from(offset).ok()?).copied()
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed {
            Err(StorageError::Failed)
        } else {
            Ok(())
        }
    }

    /// Buffers `entries` for the next [`DiskStorage::sync`]. If `entries[0].index <= last_index()`, the log
    /// from that index on is replaced (§5.3: a follower deletes a conflicting suffix). Does no I/O.
    ///
    /// # Panics
    /// If the entries are not contiguous, start at or below the snapshot, or leave a gap after the last index
    /// (the caller broke the Raft log's invariants), or if one entry's data exceeds 256 MiB (the WAL's record
    /// limit; proposals must be bounded well below it).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let start = first.index;
        assert!(
            start >= self.first_index && start <= self.last_index() + 1,
            "append at index {start}: the log holds {}..={} after the snapshot",
            self.first_index,
            self.last_index()
        );
        for (k, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                start + k as u64,
                "append of non-contiguous entries"
            );
        }
        let seq = self.begin_batch(false, start);
        for entry in entries {
            wal::put_record(&mut self.buf, wal::ENTRY, |out| encode_entry(entry, out));
        }
        self.terms.truncate((start - self.first_index) as usize);
        self.terms.extend(entries.iter().map(|e| e.term));
        while self
            .runs
            .last()
            .is_some_and(|&(run_start, _)| run_start >= start)
        {
            self.runs.pop();
        }
        if self.runs.last().is_none_or(|&(_, run_seq)| run_seq != seq) {
            self.runs.push((start, seq));
        }
        Ok(())
    }

    /// Buffers a new hard state for the next [`DiskStorage::sync`]. Does no I/O.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        if *hs == self.hard_state {
            return Ok(());
        }
        self.begin_batch(false, self.last_index() + 1);
        self.hard_state = *hs;
        wal::put_record(&mut self.buf, wal::HARD_STATE, |out| {
            encode_hard_state(hs, out)
        });
        Ok(())
    }

    /// Makes everything appended or set since the last sync durable: one write and one `fdatasync` (plus a
    /// directory sync when the batch starts a new segment). A no-op if nothing is buffered.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let result = self.write_batch(&batch);
        self.buf.clear();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Opens a batch if none is open and returns the segment it goes to. A batch goes to a new segment when
    /// there is no active one (always the case right after open), when the active one is full, or when
    /// `force_new`. A new segment starts with its header and the current hard state, so that the newest
    /// segment alone always holds the latest hard state and older segments can be deleted.
    fn begin_batch(&mut self, force_new: bool, name_index: Index) -> u64 {
        if let Some(batch) = &self.batch {
            assert!(!force_new, "forced roll with a batch open");
            return batch.seq;
        }
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.len >= self.opts.segment_size_bytes);
        let batch = if force_new || full {
            let seq = self.next_seq;
            self.next_seq += 1;
            wal::put_header(&mut self.buf, seq);
            let hs = self.hard_state;
            wal::put_record(&mut self.buf, wal::HARD_STATE, |out| {
                encode_hard_state(&hs, out)
            });
            Batch {
                seq,
                new_segment: true,
                name_index,
            }
        } else {
            let seq = self.active.as_ref().expect("not full, so active").seq;
            Batch {
                seq,
                new_segment: false,
                name_index,
            }
        };
        let seq = batch.seq;
        self.batch = Some(batch);
        seq
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), StorageError> {
        if batch.new_segment {
            let path = self
                .wal_dir
                .join(wal::segment_name(batch.seq, batch.name_index));
            let mut file = self.fs.create(&path).map_err(StorageError::io(&path))?;
            file.write_all(&self.buf).map_err(StorageError::io(&path))?;
            sync_data(file.as_mut(), self.opts.bugs).map_err(StorageError::io(&path))?;
            self.fs
                .sync_dir(&self.wal_dir)
                .map_err(StorageError::io(&self.wal_dir))?;
            self.segments.insert(batch.seq, path);
            self.active = Some(Active {
                seq: batch.seq,
                file,
                len: self.buf.len() as u64,
            });
        } else {
            let active = self
                .active
                .as_mut()
                .expect("a batch for the active segment");
            let path = &self.segments[&active.seq];
            active
                .file
                .write_all(&self.buf)
                .map_err(StorageError::io(path))?;
            sync_data(active.file.as_mut(), self.opts.bugs).map_err(StorageError::io(path))?;
            active.len += self.buf.len() as u64;
        }
        Ok(())
    }

    /// Saves `snap` durably and compacts the log (§7). First syncs anything buffered. If the log holds an entry
    /// at `snap.meta.index` with `snap.meta.term`, the entries after it are kept; otherwise the whole log is
    /// discarded (a snapshot from the leader replaces a conflicting log). Segments no longer needed and the
    /// previous snapshot file are deleted once the new snapshot is durable.
    ///
    /// # Panics
    /// If `snap.meta.index` is not above the current snapshot's index.
    pub fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        self.check_usable()?;
        let current = self.snapshot_meta().map_or(0, |m| m.index);
        assert!(
            snap.meta.index > current,
            "snapshot at {} is not newer than the current one at {current}",
            snap.meta.index
        );
        self.sync()?;
        let result = self.install_snapshot(snap);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        let (index, term) = (snap.meta.index, snap.meta.term);
        let keep_log = self.term(index) == Some(term);
        // Recovery replays segments from `wal_start_seq` on. When the log is kept, that is the segment holding
        // the entry at `index` (recovery checks its term). When it is discarded, it is a fresh segment
        // holding only the hard state, made durable before the snapshot so a crash between the two loses
        // nothing.
        let wal_start_seq = if keep_log {
            self.segment_of(index)
        } else {
            let seq = self.begin_batch(true, index + 1);
            self.sync()?;
            seq
        };
        let path = snapfile::write(self.fs.as_ref(), &self.snap_dir, snap, wal_start_seq)?;
        let old = self.snapshot.replace((snap.meta.clone(), path));

        if keep_log {
            self.terms.drain(..(index + 1 - self.first_index) as usize);
            let keep_from = self.runs.partition_point(|&(start, _)| start <= index + 1);
            self.runs.drain(..keep_from.saturating_sub(1));
            if let Some(run) = self.runs.first_mut() {
                run.0 = index + 1;
            }
            if self.terms.is_empty() {
                self.runs.clear();
            }
        } else {
            self.terms.clear();
            self.runs.clear();
        }
        self.first_index = index + 1;
        self.remove_obsolete(wal_start_seq, old.map(|(_, path)| path))
    }

    /// The segment holding the live entry at `index`.
    fn segment_of(&self, index: Index) -> u64 {
        let run = self.runs.partition_point(|&(start, _)| start <= index);
        assert!(run > 0, "no segment holds live entry {index}");
        self.runs[run - 1].1
    }

    /// Deletes the segments below `wal_start_seq` and the previous snapshot file, then syncs the directories.
    fn remove_obsolete(
        &mut self,
        wal_start_seq: u64,
        old_snapshot: Option<PathBuf>,
    ) -> Result<(), StorageError> {
        let kept = self.segments.split_off(&wal_start_seq);
        let obsolete = std::mem::replace(&mut self.segments, kept);
        for path in obsolete.values() {
            self.fs.remove_file(path).map_err(StorageError::io(path))?;
        }
        if !obsolete.is_empty() {
            let dir = &self.wal_dir;
            self.fs.sync_dir(dir).map_err(StorageError::io(dir))?;
        }
        if let Some(path) = old_snapshot {
            self.fs
                .remove_file(&path)
                .map_err(StorageError::io(&path))?;
            let dir = &self.snap_dir;
            self.fs.sync_dir(dir).map_err(StorageError::io(dir))?;
        }
        Ok(())
    }
}

/// `fdatasync` of a WAL segment. A failure is final: the bytes it was to write may be lost whatever a second
/// call says, so the caller must stop (the [`StorageBugs::retry_failed_sync`] bug retries instead).
fn sync_data(file: &mut dyn WritableFile, bugs: StorageBugs) -> std::io::Result<()> {
    match file.sync_data() {
        Err(_) if bugs.retry_failed_sync => file.sync_data(),
        result => result,
    }
}
