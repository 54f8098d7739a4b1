//! The node's durable log: persisting each `Ready` (group commit) and saving snapshots, through
//! `reinado-storage`.
//!
//! The Raft loop persists each `Ready` itself, the way etcd's raft node does: it sends the `Ready`'s messages
//! first (a leader replicates while it writes), then writes the snapshot, entries and hard state with one
//! `fdatasync` for all of them, then hands the `Ready` back to the core. Proposals and messages that arrive
//! meanwhile wait in the loop's channels and go to disk together in the next `Ready`: group commit. The write
//! runs under `tokio::task::block_in_place`, so the runtime moves the node's other tasks (gRPC handlers, peer
//! streams) to another worker while the loop waits for the disk. Doing it on the loop's own thread avoids
//! two thread hand-offs per write, which on a busy machine cost more than the fsync itself.

use reinado_raft::{Ready, Snapshot};
use reinado_storage::{DiskStorage, StorageError};

/// The durable log, owned by the Raft loop.
pub struct Wal {
    storage: DiskStorage,
}

impl Wal {
    /// Wraps opened storage.
    pub fn new(storage: DiskStorage) -> Wal {
        Wal { storage }
    }

    /// Makes a `Ready`'s snapshot, entries and hard state durable, with one sync.
    pub fn persist(&mut self, ready: &Ready) -> Result<(), StorageError> {
        let storage = &mut self.storage;
        tokio::task::block_in_place(|| {
            if let Some(snapshot) = &ready.snapshot {
                storage.save_snapshot(snapshot)?;
            }
            storage.append(&ready.entries)?;
            if let Some(hs) = &ready.hard_state {
                storage.set_hard_state(hs)?;
            }
            storage.sync()
        })
    }

    /// Saves a snapshot the application took and compacts the log below it.
    pub fn compact(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let storage = &mut self.storage;
        tokio::task::block_in_place(|| storage.save_snapshot(snapshot))
    }
}
