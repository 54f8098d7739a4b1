//! Disk faults: a disk call that fails (the node must stop at once and never go on with a hole) and a byte
//! flipped in a synced record (the node must refuse to start; the operator replaces it like a lost disk).

use super::{Event, World};
use crate::node::{SimNode, StartFailed, snap_dir, wal_dir};
use reinado_raft::NodeId;
use reinado_storage::{FaultyFs, FileSystem, IoCall, IoFault};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

/// The calls a disk error may hit, the common ones more often.
const CALLS: [IoCall; 7] = [
    IoCall::Write,
    IoCall::Write,
    IoCall::SyncData,
    IoCall::SyncData,
    IoCall::SyncDir,
    IoCall::Rename,
    IoCall::Create,
];

impl World {
    /// `Fault::DiskError`: one of a live node's next disk calls of one kind fails with EIO or ENOSPC.
    pub(super) fn disk_error(&mut self) {
        let live = self.live_ids();
        let Some(id) = self.pick(&live) else { return };
        let call = CALLS[self.rng.range(0, CALLS.len() as u64) as usize];
        let skip = self.rng.range(0, 4);
        let fault = if self.rng.range(0, 2) == 0 {
            IoFault::Eio
        } else {
            IoFault::NoSpace
        };
        self.trace(|| {
            format!("fault: n{id}'s {call:?} call after {skip} more will fail: {fault:?}")
        });
        let node = self.nodes.get_mut(&id).expect("live");
        node.fs.fail_call(call, skip, fault);
        node.disk_error_armed = true;
    }

    /// A node whose injected disk error fired must have stopped (its driver crashes it on the storage's
    /// error): one that is still running went on after a failed write or fsync.
    pub(super) fn check_stopped_after_disk_error(&mut self) {
        let went_on = self
            .nodes
            .iter()
            .find(|(_, n)| n.disk_error_armed && n.server.is_some() && !n.fs.has_armed_error());
        if let Some((&id, _)) = went_on {
            self.fail(format!(
                "Disk errors: n{id} went on after a failed disk call (it must stop: what the call was to \
                 make durable may be lost)"
            ));
        }
    }

    /// The safety phase is over: errors armed but not fired are disarmed.
    pub(super) fn disarm_disk_errors(&mut self) {
        for node in self.nodes.values_mut() {
            node.fs.disarm_errors();
            node.disk_error_armed = false;
        }
    }

    /// `Fault::Corrupt`: a node crashes and one byte flips in a record it had synced and reads at start.
    /// Like a lost disk, only one at a time and where the others are a majority without it.
    pub(super) fn corrupt(&mut self) {
        if self.replacing()
            || self.membership_changing()
            || !self.settled(3)
            || self.nodes.values().any(|n| n.flipped.is_some())
        {
            return;
        }
        let live = self.live_ids();
        let Some(id) = self.pick(&live) else { return };
        let fs = self.nodes[&id].fs.clone();
        let synced = synced_lengths(&fs);
        self.crash(id);
        let (mut records, snapshot) = flip_targets(&fs, &synced);
        let (path, range) = match snapshot {
            Some(snap) if records.is_empty() || self.rng.range(0, 2) == 0 => snap,
            _ if records.is_empty() => return,
            _ => records.swap_remove(self.rng.range(0, records.len() as u64) as usize),
        };
        let at = self.rng.range(range.start, range.end);
        let mask = 1u8 << self.rng.range(0, 8);
        fs.flip_byte(&path, at, mask)
            .expect("the byte is inside the file");
        let flip = format!("{} byte {at} ^ {mask:#04x}", path.display());
        self.trace(|| format!("fault: n{id} crashes, and its disk flips {flip}"));
        self.nodes.get_mut(&id).expect("known").flipped = Some(flip);
    }

    /// The outcome of a start attempt: the node, if it may run. A node must start unless a byte of its disk
    /// flipped, and must refuse to if one did; a refused node's disk is wiped by the operator, who replaces it.
    pub(super) fn started_or_refused(
        &mut self,
        id: NodeId,
        started: Result<SimNode, StartFailed>,
    ) -> Option<SimNode> {
        let flipped = self.nodes.get_mut(&id).expect("known").flipped.take();
        match (started, flipped) {
            (Ok(server), None) => Some(server),
            (Err(e), None) => {
                self.fail(format!("node {id} cannot restart: {}", e.0));
                None
            }
            (Ok(_), Some(flip)) => {
                self.fail(format!(
                    "Corruption: n{id} started on a disk with a flipped byte in a synced record ({flip}) \
                     without detecting it"
                ));
                None
            }
            (Err(e), Some(_)) => {
                self.trace(|| format!("n{id} refuses to start: {}", e.0));
                self.trace(|| format!("operator: wipes n{id}'s disk, to replace it"));
                self.new_disk(id);
                let delay = self.rng.range(50, 300);
                self.schedule(delay, Event::Restart(id));
                None
            }
        }
    }
}

/// How many bytes of each file are durable.
fn synced_lengths(fs: &FaultyFs) -> BTreeMap<PathBuf, u64> {
    fs.files()
        .into_iter()
        .filter_map(|path| {
            let len = fs.read(&path).ok()?.len();
            let unsynced = fs.unsynced_len(&path)?;
            Some((path, (len - unsynced) as u64))
        })
        .collect()
}

/// A byte range of a file.
type Target = (PathBuf, Range<u64>);

/// The byte ranges a flip may hit, each inside something recovery reads and checks and that was durable
/// before the crash (`synced`): the records of the newest WAL segment that are followed by another synced
/// record, and the newest snapshot file. The last synced record of the newest segment is left alone: a
/// damaged last record reads as a torn write, which recovery cuts off (see `reinado-storage`'s recovery).
fn flip_targets(fs: &FaultyFs, synced: &BTreeMap<PathBuf, u64>) -> (Vec<Target>, Option<Target>) {
    let mut targets = Vec::new();
    if let Some(segment) = newest(fs, wal_dir(), "wal") {
        let synced_len = synced.get(&segment).copied().unwrap_or(0);
        let bytes = fs.read(&segment).unwrap_or_default();
        let mut records: Vec<Range<u64>> = reinado_storage::segment_records(&bytes)
            .into_iter()
            .filter(|r| r.end <= synced_len)
            .collect();
        records.pop();
        targets.extend(records.into_iter().map(|r| (segment.clone(), r)));
    }
    let snapshot = newest(fs, snap_dir(), "snap").and_then(|snap| {
        let len = fs.read(&snap).map_or(0, |b| b.len() as u64);
        (len > 0 && synced.get(&snap) == Some(&len)).then_some((snap, 0..len))
    });
    (targets, snapshot)
}

/// The file of `dir` with extension `ext` whose name sorts last (names are zero-padded hex numbers).
fn newest(fs: &FaultyFs, dir: PathBuf, ext: &str) -> Option<PathBuf> {
    fs.list_dir(&dir)
        .ok()?
        .into_iter()
        .filter(|name| name.ends_with(&format!(".{ext}")))
        .max()
        .map(|name| dir.join(name))
}
