//! [`reinado_raft::ConfChange`] and [`reinado_raft::ConfChangeKind`].

use reinado_raft as raft;

use super::{ConvertError, node_id};
use crate::raft::v1 as pb;

impl From<raft::ConfChangeKind> for pb::ConfChangeKind {
    fn from(kind: raft::ConfChangeKind) -> Self {
        match kind {
            raft::ConfChangeKind::AddLearner => pb::ConfChangeKind::AddLearner,
            raft::ConfChangeKind::AddVoter => pb::ConfChangeKind::AddVoter,
            raft::ConfChangeKind::Remove => pb::ConfChangeKind::Remove,
        }
    }
}

/// Reads a raw `ConfChangeKind` field; UNSPECIFIED and unknown values are errors.
fn conf_change_kind(value: i32) -> Result<raft::ConfChangeKind, ConvertError> {
    match pb::ConfChangeKind::try_from(value) {
        Ok(pb::ConfChangeKind::AddLearner) => Ok(raft::ConfChangeKind::AddLearner),
        Ok(pb::ConfChangeKind::AddVoter) => Ok(raft::ConfChangeKind::AddVoter),
        Ok(pb::ConfChangeKind::Remove) => Ok(raft::ConfChangeKind::Remove),
        Ok(pb::ConfChangeKind::Unspecified) | Err(_) => Err(ConvertError::InvalidEnum {
            field: "ConfChange.kind",
            value,
        }),
    }
}

impl From<raft::ConfChange> for pb::ConfChange {
    fn from(change: raft::ConfChange) -> Self {
        pb::ConfChange {
            kind: pb::ConfChangeKind::from(change.kind).into(),
            node_id: change.node_id,
            context: change.context,
        }
    }
}

impl TryFrom<pb::ConfChange> for raft::ConfChange {
    type Error = ConvertError;

    fn try_from(change: pb::ConfChange) -> Result<Self, ConvertError> {
        Ok(raft::ConfChange {
            kind: conf_change_kind(change.kind)?,
            node_id: node_id(change.node_id, "ConfChange.node_id")?,
            context: change.context,
        })
    }
}
