//! # reinado-storage: the node's durable log
//!
//! A segmented write-ahead log with group commit, plus snapshot files, holding what Raft must persist (Figure
//! 2, "Persistent state on all servers"): the log entries since the last snapshot, the hard state, and the
//! snapshot itself. The API is synchronous std I/O; the node calls it from its Raft loop (inside `block_in_place`).
//!
//! The node keeps the log in memory (the Raft core holds it since the last snapshot), so storage reads
//! entries back only at recovery, through [`DiskStorage::open`].
//!
//! ## Layout
//! - `storage.rs`: [`DiskStorage`], the write path. [`DiskStorage::append`] and
//!   [`DiskStorage::set_hard_state`] only encode into a reused buffer; [`DiskStorage::sync`] writes the buffer
//!   with one write and one `fdatasync` (group commit). [`DiskStorage::save_snapshot`] writes a snapshot file
//!   and compacts the log.
//! - `recover.rs`: opening: newest snapshot, WAL replay, torn-tail repair, cleanup, corruption checks.
//! - `wal.rs`: record framing, segment names, and the scan that tells a torn tail from corruption.
//! - `snapfile.rs`: the snapshot file format and its atomic write.
//! - [`codec`]: the binary encoding of entries, hard states and snapshot metadata.
//! - [`fs`]: the [`FileSystem`] trait the storage writes through, and [`StdFs`] for real files.
//! - `faulty.rs`: [`FaultyFs`], an in-memory [`FileSystem`] that simulates crashes (lost unsynced bytes, torn
//!   writes, lost renames), bit flips and injected I/O errors (EIO, ENOSPC, with Linux's behaviour after a
//!   failed fsync) from a seed, for tests here and in the simulator.
//! - [`rng`]: a tiny seeded PRNG.
//! - `tests/`: round trips, crash at every cut point, corruption, injected I/O errors, codec fuzzing.
//!
//! ## On disk
//! ```text
//! <dir>/wal/<seq:016x>-<first_index:016x>.wal    segments; seq orders them, first_index is informative
//! <dir>/snap/<index:016x>-<term:016x>.snap        the newest snapshot (older ones are deleted)
//! <dir>/snap/*.tmp                                a snapshot being written; deleted at open
//! ```
//! A segment is a sequence of records `[len u32][crc32c u32][type u8][payload; len]` (little endian; the CRC
//! covers type and payload). Types: `1` header (`"RNDOWAL1"`, `seq u64`), always first; `2` an entry, which
//! replaces every entry at its index or above (Raft truncation needs no separate record); `3` the hard state,
//! the last one wins. Every segment starts with a header and the then-current hard state, so the newest
//! segment alone holds the latest hard state and older ones can be deleted freely.
//!
//! A snapshot file holds its metadata, its data, a CRC, and `wal_start_seq`: segments below it are obsolete.
//! When compaction keeps the log, `wal_start_seq` is the segment holding the snapshot's last entry, and
//! recovery checks that entry's term; when it discards the log, a fresh segment is started first.
//!
//! ## Recovery
//! An invalid record at the end of the last segment, with no valid record after it, is a torn write: it is
//! cut off. Any other damage (a bad record followed by valid data, a bad record in an earlier segment, a bad
//! snapshot file, a gap in the log) is [`StorageError::Corrupt`], naming the file and offset.

#![warn(missing_docs)]

pub mod codec;
mod error;
mod faulty;
pub mod fs;
mod recover;
pub mod rng;
mod snapfile;
mod storage;
mod wal;

#[cfg(test)]
mod tests;

pub use error::StorageError;
pub use faulty::{FaultyFs, IoCall, IoFault};
pub use fs::{FileSystem, StdFs, WritableFile};
pub use storage::{DiskStorage, Options, Recovered, StorageBugs};
pub use wal::segment_records;
