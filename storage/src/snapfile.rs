//! Snapshot files: `snap/<index:016x>-<term:016x>.snap`, written to a `.tmp` name, synced, then renamed.
//!
//! Layout: `magic "RNDOSNP1"`, `crc32c u32` of the body, `body_len u64`, then the body:
//! `SnapshotMeta` ([`crate::codec::encode_snapshot_meta`]), `wal_start_seq u64`, `data_len u64`, `data`.
//! `wal_start_seq` is the first WAL segment that belongs to the log after this snapshot: older segments
//! are obsolete, whatever they hold.

use std::path::{Path, PathBuf};

use reinado_raft::{Index, Snapshot, Term};

use crate::codec::{Decoder, encode_snapshot_meta};
use crate::error::StorageError;
use crate::fs::FileSystem;
use crate::wal::parse_pair;

const MAGIC: &[u8; 8] = b"RNDOSNP1";
const PREAMBLE_BYTES: usize = 8 + 4 + 8;

/// The suffix of a snapshot file being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// `<index:016x>-<term:016x>.snap`.
pub(crate) fn snapshot_name(index: Index, term: Term) -> String {
    format!("{index:016x}-{term:016x}.snap")
}

/// The `(index, term)` of a snapshot file name, or `None` if it is not one.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<(Index, Term)> {
    parse_pair(name.strip_suffix(".snap")?)
}

/// Writes `snap` durably at `dir/<name>`: temp file, `sync_data`, rename, `sync_dir`. Returns its path.
pub(crate) fn write(
    fs: &dyn FileSystem,
    dir: &Path,
    snap: &Snapshot,
    wal_start_seq: u64,
) -> Result<PathBuf, StorageError> {
    let mut head = Vec::with_capacity(PREAMBLE_BYTES + 64);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&[0u8; 12]);
    encode_snapshot_meta(&snap.meta, &mut head);
    head.extend_from_slice(&wal_start_seq.to_le_bytes());
    head.extend_from_slice(&(snap.data.len() as u64).to_le_bytes());
    let body_len = (head.len() - PREAMBLE_BYTES + snap.data.len()) as u64;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[PREAMBLE_BYTES..]), &snap.data);
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    head[12..20].copy_from_slice(&body_len.to_le_bytes());

    let name = snapshot_name(snap.meta.index, snap.meta.term);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = fs.create(&tmp).map_err(StorageError::io(&tmp))?;
    file.write_all(&head).map_err(StorageError::io(&tmp))?;
    file.write_all(&snap.data).map_err(StorageError::io(&tmp))?;
    file.sync_data().map_err(StorageError::io(&tmp))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(StorageError::io(&path))?;
    fs.sync_dir(dir).map_err(StorageError::io(dir))?;
    Ok(path)
}

/// Reads and checks the snapshot file at `path`, whose name said `(index, term)`. Returns the snapshot and
/// its `wal_start_seq`.
pub(crate) fn read(
    fs: &dyn FileSystem,
    path: &Path,
    (index, term): (Index, Term),
) -> Result<(Snapshot, u64), StorageError> {
    let bytes = fs.read(path).map_err(StorageError::io(path))?;
    let corrupt =
        |offset: usize, reason: String| StorageError::corrupt(path, offset as u64, reason);
    if bytes.len() < PREAMBLE_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt(0, "not a snapshot file (bad magic)".into()));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let body = &bytes[PREAMBLE_BYTES..];
    if body.len() as u64 != body_len {
        let reason = format!("body is {} bytes, header says {body_len}", body.len());
        return Err(corrupt(12, reason));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt(8, "snapshot checksum mismatch".into()));
    }
    let mut d = Decoder::new(body);
    let decoded = (|| {
        let meta = d.snapshot_meta()?;
        let wal_start_seq = d.u64()?;
        let data_len = d.u64()?;
        let data = d.take_u64(data_len)?.to_vec();
        d.finish()?;
        Ok((meta, wal_start_seq, data))
    })();
    let (meta, wal_start_seq, data) = decoded.map_err(|e: crate::codec::DecodeError| {
        corrupt(PREAMBLE_BYTES + e.offset, e.to_string())
    })?;
    if (meta.index, meta.term) != (index, term) {
        let reason = format!(
            "holds index {} term {}, its name says index {index} term {term}",
            meta.index, meta.term
        );
        return Err(corrupt(PREAMBLE_BYTES, reason));
    }
    Ok((Snapshot { meta, data }, wal_start_seq))
}
