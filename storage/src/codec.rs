//! The disk encoding of [`Entry`], [`HardState`] and [`SnapshotMeta`].
//!
//! Every integer is little endian and fixed width; a byte string or a list is prefixed by its `u32` length.
//! There are no defaults and no optional trailing fields: a value decodes only if every byte is accounted for.
//! Decoding never panics and never allocates more than the input could hold: malformed input is a
//! [`DecodeError`] saying where the decoder stopped.
//!
//! | type | encoding |
//! | --- | --- |
//! | `Entry` | `term u64`, `index u64`, `kind u8` (1 normal, 2 conf change), `data_len u32`, `data` |
//! | `HardState` | `term u64`, `has_vote u8` (0 or 1), `vote u64` (0 when none), `commit u64` |
//! | `ConfState` | `voter_count u32`, voters `u64`…, `learner_count u32`, learners `u64`… |
//! | `SnapshotMeta` | `index u64`, `term u64`, `ConfState` |

use reinado_raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

/// Why a byte string is not a valid encoding, and where decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct DecodeError {
    /// The offset within the decoded bytes at which the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// The encoded size of a [`HardState`].
pub const HARD_STATE_BYTES: usize = 8 + 1 + 8 + 8;

/// The encoded size of an [`Entry`] without its data.
pub const ENTRY_HEADER_BYTES: usize = 8 + 8 + 1 + 4;

/// Appends the encoding of `entry` to `out`.
///
/// # Panics
/// If `entry.data` is 4 GiB or more, which the WAL's record limit rules out long before.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(match entry.kind {
        EntryKind::Normal => 1,
        EntryKind::ConfChange => 2,
    });
    put_bytes(out, &entry.data);
}

/// Decodes an [`Entry`] written by [`encode_entry`]; `bytes` must hold exactly one.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut d = Decoder::new(bytes);
    let term = d.u64()?;
    let index = d.u64()?;
    let kind = match d.u8()? {
        1 => EntryKind::Normal,
        2 => EntryKind::ConfChange,
        _ => return Err(d.error_before(1, "unknown entry kind")),
    };
    let data = d.bytes()?.to_vec();
    d.finish()?;
    Ok(Entry {
        term,
        index,
        kind,
        data,
    })
}

/// Appends the encoding of `hs` to `out` ([`HARD_STATE_BYTES`] bytes).
pub fn encode_hard_state(hs: &HardState, out: &mut Vec<u8>) {
    out.extend_from_slice(&hs.term.to_le_bytes());
    out.push(u8::from(hs.vote.is_some()));
    out.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&hs.commit.to_le_bytes());
}

/// Decodes a [`HardState`] written by [`encode_hard_state`]; `bytes` must hold exactly one.
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState, DecodeError> {
    let mut d = Decoder::new(bytes);
    let term = d.u64()?;
    let has_vote = d.u8()?;
    let vote = d.u64()?;
    let vote = match (has_vote, vote) {
        (0, 0) => None,
        (1, id) => Some(id),
        _ => return Err(d.error_before(9, "malformed vote")),
    };
    let commit = d.u64()?;
    d.finish()?;
    Ok(HardState { term, vote, commit })
}

/// Appends the encoding of `meta` to `out`.
///
/// # Panics
/// If the membership has 2^32 members or more.
pub fn encode_snapshot_meta(meta: &SnapshotMeta, out: &mut Vec<u8>) {
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    put_ids(out, &meta.conf_state.voters);
    put_ids(out, &meta.conf_state.learners);
}

/// Decodes a [`SnapshotMeta`] written by [`encode_snapshot_meta`]; `bytes` must hold exactly one.
pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<SnapshotMeta, DecodeError> {
    let mut d = Decoder::new(bytes);
    let meta = d.snapshot_meta()?;
    d.finish()?;
    Ok(meta)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a byte string longer than u32::MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    let count = u32::try_from(ids.len()).expect("more than u32::MAX node ids");
    out.extend_from_slice(&count.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Reads fixed-width little-endian fields from a byte slice, failing (never panicking) when it runs out.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { bytes, pos: 0 }
    }

    fn error_before(&self, back: usize, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos.saturating_sub(back),
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError {
                offset: self.pos,
                reason: "unexpected end of input",
            });
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// `n` raw bytes, where `n` came from the input as a `u64`.
    pub(crate) fn take_u64(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let count = self.u32()? as usize;
        // Check the whole list fits before allocating, so garbage cannot ask for gigabytes.
        let raw = self.take(count.saturating_mul(8))?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact(8)")))
            .collect())
    }

    pub(crate) fn snapshot_meta(&mut self) -> Result<SnapshotMeta, DecodeError> {
        let index = self.u64()?;
        let term = self.u64()?;
        let voters = self.ids()?;
        let learners = self.ids()?;
        Ok(SnapshotMeta {
            index,
            term,
            conf_state: ConfState { voters, learners },
        })
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError {
                offset: self.pos,
                reason: "trailing bytes",
            })
        }
    }
}
