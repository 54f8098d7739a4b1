//! [`reinado_raft::Entry`] and [`reinado_raft::EntryKind`].

use reinado_raft as raft;

use super::ConvertError;
use crate::raft::v1 as pb;

impl From<raft::EntryKind> for pb::EntryKind {
    fn from(kind: raft::EntryKind) -> Self {
        match kind {
            raft::EntryKind::Normal => pb::EntryKind::Normal,
            raft::EntryKind::ConfChange => pb::EntryKind::ConfChange,
        }
    }
}

/// Reads a raw `EntryKind` field; UNSPECIFIED and unknown values are errors.
fn entry_kind(value: i32) -> Result<raft::EntryKind, ConvertError> {
    match pb::EntryKind::try_from(value) {
        Ok(pb::EntryKind::Normal) => Ok(raft::EntryKind::Normal),
        Ok(pb::EntryKind::ConfChange) => Ok(raft::EntryKind::ConfChange),
        Ok(pb::EntryKind::Unspecified) | Err(_) => Err(ConvertError::InvalidEnum {
            field: "Entry.kind",
            value,
        }),
    }
}

impl From<raft::Entry> for pb::Entry {
    fn from(entry: raft::Entry) -> Self {
        pb::Entry {
            term: entry.term,
            index: entry.index,
            kind: pb::EntryKind::from(entry.kind).into(),
            data: entry.data,
        }
    }
}

impl TryFrom<pb::Entry> for raft::Entry {
    type Error = ConvertError;

    fn try_from(entry: pb::Entry) -> Result<Self, ConvertError> {
        Ok(raft::Entry {
            term: entry.term,
            index: entry.index,
            kind: entry_kind(entry.kind)?,
            data: entry.data,
        })
    }
}
