//! [`reinado_raft::ConfState`].

use reinado_raft as raft;

use super::{ConvertError, node_id};
use crate::raft::v1 as pb;

impl From<raft::ConfState> for pb::ConfState {
    fn from(state: raft::ConfState) -> Self {
        pb::ConfState {
            voters: state.voters,
            learners: state.learners,
        }
    }
}

impl TryFrom<pb::ConfState> for raft::ConfState {
    type Error = ConvertError;

    /// Keeps the core's invariant that both lists are sorted, free of duplicates and of node 0.
    fn try_from(state: pb::ConfState) -> Result<Self, ConvertError> {
        Ok(raft::ConfState {
            voters: node_ids(state.voters, "ConfState.voters")?,
            learners: node_ids(state.learners, "ConfState.learners")?,
        })
    }
}

/// Checks a list of node ids: no 0, strictly ascending.
fn node_ids(ids: Vec<u64>, field: &'static str) -> Result<Vec<raft::NodeId>, ConvertError> {
    for &id in &ids {
        node_id(id, field)?;
    }
    if ids.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(ConvertError::Unsorted { field });
    }
    Ok(ids)
}
