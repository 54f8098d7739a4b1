//! [`reinado_raft::HardState`].

use reinado_raft as raft;

use super::ConvertError;
use crate::raft::v1 as pb;

impl From<raft::HardState> for pb::HardState {
    fn from(state: raft::HardState) -> Self {
        pb::HardState {
            term: state.term,
            // 0 never names a node, so it stands for "no vote".
            vote: state.vote.unwrap_or(0),
            commit: state.commit,
        }
    }
}

impl TryFrom<pb::HardState> for raft::HardState {
    type Error = ConvertError;

    fn try_from(state: pb::HardState) -> Result<Self, ConvertError> {
        Ok(raft::HardState {
            term: state.term,
            vote: (state.vote != 0).then_some(state.vote),
            commit: state.commit,
        })
    }
}
