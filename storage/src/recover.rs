//! Opening the storage: pick the newest snapshot, replay the live WAL segments, repair a torn tail, remove
//! leftovers, and refuse anything else that is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reinado_raft::{Entry, HardState, Index, Snapshot};

use crate::codec::{decode_entry, decode_hard_state};
use crate::error::StorageError;
use crate::fs::FileSystem;
use crate::storage::{DiskStorage, Options, Recovered};
use crate::{snapfile, wal};

/// A WAL segment file found on disk.
struct SegmentFile {
    seq: u64,
    path: PathBuf,
}

/// The log as replayed so far, with where each entry was read from (for error reports and compaction).
#[derive(Default)]
struct Log {
    entries: Vec<Entry>,
    /// `(segment seq, path index, record offset)` of each entry.
    origins: Vec<(u64, usize, u64)>,
}

impl Log {
    fn first_index(&self) -> Option<Index> {
        self.entries.first().map(|e| e.index)
    }

    /// Applies one entry record: it replaces everything at its index or above. An index below the first
    /// replayed one starts the log afresh (older segments were compacted away); one beyond the end is a gap.
    fn apply(&mut self, entry: Entry, origin: (u64, usize, u64)) -> Result<(), String> {
        match (self.first_index(), self.entries.last()) {
            (Some(first), Some(last)) if entry.index >= first => {
                if entry.index > last.index + 1 {
                    return Err(format!(
                        "entry {} follows entry {}: a gap in the log",
                        entry.index, last.index
                    ));
                }
                let keep = (entry.index - first) as usize;
                self.entries.truncate(keep);
                self.origins.truncate(keep);
            }
            _ => {
                self.entries.clear();
                self.origins.clear();
            }
        }
        self.entries.push(entry);
        self.origins.push(origin);
        Ok(())
    }
}

pub(crate) fn open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    opts: Options,
) -> Result<(DiskStorage, Recovered), StorageError> {
    let wal_dir = dir.join("wal");
    let snap_dir = dir.join("snap");
    for d in [&wal_dir, &snap_dir] {
        fs.create_dir_all(d).map_err(StorageError::io(d))?;
    }
    // Make the subdirectories' names durable, and `dir`'s own in case it was just created.
    for d in [
        Some(dir),
        dir.parent().filter(|p| !p.as_os_str().is_empty()),
    ]
    .into_iter()
    .flatten()
    {
        fs.sync_dir(d).map_err(StorageError::io(d))?;
    }

    let (snapshot, older_snapshots) = load_snapshot(fs.as_ref(), &snap_dir)?;
    let wal_start_seq = snapshot.as_ref().map_or(0, |s| s.wal_start_seq);
    let (obsolete, live) = list_segments(fs.as_ref(), &wal_dir, wal_start_seq)?;
    let mut replay = replay(fs.as_ref(), &live, opts.bugs.skip_record_checksum)?;
    let (snap_index, snap_term) = snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.snapshot.meta.index, s.snapshot.meta.term));
    cut_at_snapshot(&mut replay.log, &live, snap_index, snap_term)?;

    repair(fs.as_ref(), &wal_dir, &live, &replay, &obsolete)?;
    if !older_snapshots.is_empty() {
        for path in &older_snapshots {
            fs.remove_file(path).map_err(StorageError::io(path))?;
        }
        fs.sync_dir(&snap_dir)
            .map_err(StorageError::io(&snap_dir))?;
    }

    let max_seq = live.last().map_or(0, |s| s.seq);
    let mut segments: BTreeMap<u64, PathBuf> = live.into_iter().map(|s| (s.seq, s.path)).collect();
    if replay.last_is_empty {
        segments.pop_last();
    }
    let mut runs: Vec<(Index, u64)> = Vec::new();
    for (entry, &(seq, _, _)) in replay.log.entries.iter().zip(&replay.log.origins) {
        if runs.last().is_none_or(|&(_, run_seq)| run_seq != seq) {
            runs.push((entry.index, seq));
        }
    }
    let storage = DiskStorage {
        fs,
        wal_dir,
        snap_dir,
        opts,
        hard_state: replay.hard_state,
        snapshot: snapshot
            .as_ref()
            .map(|s| (s.snapshot.meta.clone(), s.path.clone())),
        first_index: snap_index + 1,
        terms: replay.log.entries.iter().map(|e| e.term).collect(),
        runs,
        segments,
        active: None,
        next_seq: (max_seq + 1).max(wal_start_seq).max(1),
        buf: Vec::new(),
        batch: None,
        failed: false,
    };
    let recovered = Recovered {
        hard_state: replay.hard_state,
        snapshot: snapshot.map(|s| s.snapshot),
        entries: replay.log.entries,
    };
    Ok((storage, recovered))
}

/// Cuts off the torn tail (removing the last segment if nothing valid is left) and deletes obsolete
/// segments, durably, before anything new is written.
fn repair(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    live: &[SegmentFile],
    replay: &Replay,
    obsolete: &[PathBuf],
) -> Result<(), StorageError> {
    let mut names_changed = false;
    if let Some((k, offset)) = replay.torn {
        let path = &live[k].path;
        if replay.last_is_empty {
            fs.remove_file(path).map_err(StorageError::io(path))?;
            names_changed = true;
        } else {
            fs.truncate(path, offset).map_err(StorageError::io(path))?;
        }
    }
    for path in obsolete {
        fs.remove_file(path).map_err(StorageError::io(path))?;
        names_changed = true;
    }
    if names_changed {
        fs.sync_dir(wal_dir).map_err(StorageError::io(wal_dir))?;
    }
    Ok(())
}

/// The newest snapshot file, read and checked.
struct LoadedSnapshot {
    snapshot: Snapshot,
    /// Segments below it are obsolete.
    wal_start_seq: u64,
    path: PathBuf,
}

/// The newest snapshot and the older snapshot files to delete. Leftover temp files are deleted here.
fn load_snapshot(
    fs: &dyn FileSystem,
    snap_dir: &Path,
) -> Result<(Option<LoadedSnapshot>, Vec<PathBuf>), StorageError> {
    let names = fs.list_dir(snap_dir).map_err(StorageError::io(snap_dir))?;
    let mut found = Vec::new();
    let mut removed_tmp = false;
    for name in names {
        let path = snap_dir.join(&name);
        if name.ends_with(snapfile::TMP_SUFFIX) {
            fs.remove_file(&path).map_err(StorageError::io(&path))?;
            removed_tmp = true;
        } else if let Some(key) = snapfile::parse_snapshot_name(&name) {
            found.push((key, path));
        }
    }
    if removed_tmp {
        fs.sync_dir(snap_dir).map_err(StorageError::io(snap_dir))?;
    }
    found.sort();
    let Some((key, path)) = found.pop() else {
        return Ok((None, Vec::new()));
    };
    // The newest snapshot was renamed into place only once durable: if it is bad, the disk is.
    let (snapshot, wal_start_seq) = snapfile::read(fs, &path, key)?;
    let older = found.into_iter().map(|(_, path)| path).collect();
    let loaded = LoadedSnapshot {
        snapshot,
        wal_start_seq,
        path,
    };
    Ok((Some(loaded), older))
}

/// The segment files below `wal_start_seq` (obsolete) and from it on (live), each sorted by sequence number.
fn list_segments(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    wal_start_seq: u64,
) -> Result<(Vec<PathBuf>, Vec<SegmentFile>), StorageError> {
    let names = fs.list_dir(wal_dir).map_err(StorageError::io(wal_dir))?;
    let mut segments: Vec<SegmentFile> = names
        .iter()
        .filter_map(|name| {
            let (seq, _) = wal::parse_segment_name(name)?;
            let path = wal_dir.join(name);
            Some(SegmentFile { seq, path })
        })
        .collect();
    segments.sort_by_key(|s| s.seq);
    if let Some(pair) = segments.windows(2).find(|w| w[0].seq == w[1].seq) {
        let reason = format!("two segments with sequence number {}", pair[0].seq);
        return Err(StorageError::corrupt(&pair[1].path, 0, reason));
    }
    let live = segments.split_off(segments.partition_point(|s| s.seq < wal_start_seq));
    Ok((segments.into_iter().map(|s| s.path).collect(), live))
}

struct Replay {
    log: Log,
    hard_state: HardState,
    /// The index (in `live`) and offset of a torn tail to cut off; only ever the last segment.
    torn: Option<(usize, u64)>,
    /// True if the last segment holds no valid record at all (it is then removed rather than truncated).
    last_is_empty: bool,
}

/// Replays the live segments in order (without checking record checksums if `skip_checksum`: a bug).
fn replay(
    fs: &dyn FileSystem,
    live: &[SegmentFile],
    skip_checksum: bool,
) -> Result<Replay, StorageError> {
    let mut out = Replay {
        log: Log::default(),
        hard_state: HardState::default(),
        torn: None,
        last_is_empty: false,
    };
    for (k, segment) in live.iter().enumerate() {
        let path = &segment.path;
        let bytes = fs.read(path).map_err(StorageError::io(path))?;
        let scan = wal::scan_with(&bytes, !skip_checksum);
        let is_last = k + 1 == live.len();
        if let Some(bad) = &scan.bad {
            if !is_last {
                let reason = format!("{} in a segment that is not the last", bad.reason);
                return Err(StorageError::corrupt(path, bad.offset, reason));
            }
            if bad.followed_by_valid {
                let reason = format!("{}, followed by valid records", bad.reason);
                return Err(StorageError::corrupt(path, bad.offset, reason));
            }
            out.torn = Some((k, bad.offset));
        }
        if scan.records.is_empty() {
            if !is_last {
                return Err(StorageError::corrupt(path, 0, "empty segment"));
            }
            out.last_is_empty = true;
            out.torn = Some((k, 0));
        }
        for (r, record) in scan.records.iter().enumerate() {
            replay_record(&mut out, segment, k, r == 0, record)?;
        }
    }
    Ok(out)
}

fn replay_record(
    out: &mut Replay,
    segment: &SegmentFile,
    k: usize,
    first: bool,
    record: &wal::Record<'_>,
) -> Result<(), StorageError> {
    let corrupt = |reason: String| StorageError::corrupt(&segment.path, record.offset, reason);
    match (first, record.kind) {
        (true, wal::HEADER) => match wal::decode_header(record.payload) {
            Some(seq) if seq == segment.seq => Ok(()),
            Some(seq) => Err(corrupt(format!(
                "header of segment {seq} in segment {}",
                segment.seq
            ))),
            None => Err(corrupt("malformed segment header".into())),
        },
        (true, _) => Err(corrupt("segment does not start with a header".into())),
        (false, wal::ENTRY) => {
            let entry = decode_entry(record.payload).map_err(|e| corrupt(format!("entry: {e}")))?;
            out.log
                .apply(entry, (segment.seq, k, record.offset))
                .map_err(corrupt)
        }
        (false, wal::HARD_STATE) => {
            out.hard_state = decode_hard_state(record.payload)
                .map_err(|e| corrupt(format!("hard state: {e}")))?;
            Ok(())
        }
        (false, kind) => Err(corrupt(format!("unexpected record type {kind}"))),
    }
}

/// Drops the entries the snapshot covers, checking the log fits it: either it holds the snapshot's last entry
/// with the snapshot's term (the log was kept at compaction), or it starts right after the snapshot.
fn cut_at_snapshot(
    log: &mut Log,
    live: &[SegmentFile],
    snap_index: Index,
    snap_term: u64,
) -> Result<(), StorageError> {
    let Some(first) = log.first_index() else {
        return Ok(());
    };
    let at = |pos: usize| {
        let (_, k, offset) = log.origins[pos];
        (&live[k].path, offset)
    };
    if first <= snap_index && snap_index > 0 {
        let pos = (snap_index - first) as usize;
        let Some(entry) = log.entries.get(pos) else {
            let (path, offset) = at(log.entries.len() - 1);
            let reason = format!("the log ends before the snapshot's index {snap_index}");
            return Err(StorageError::corrupt(path, offset, reason));
        };
        if entry.term != snap_term {
            let (path, offset) = at(pos);
            let reason = format!(
                "entry {snap_index} has term {}, the snapshot says {snap_term}",
                entry.term
            );
            return Err(StorageError::corrupt(path, offset, reason));
        }
        log.entries.drain(..=pos);
        log.origins.drain(..=pos);
    } else if first != snap_index + 1 {
        let (path, offset) = at(0);
        let reason = format!("the log starts at {first}, expected {}", snap_index + 1);
        return Err(StorageError::corrupt(path, offset, reason));
    }
    Ok(())
}
