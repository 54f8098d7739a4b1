//! The start decision: what a node does with what its storage recovered. A node with state restarts from
//! it; an empty one listed in the bootstrap members writes the bootstrap entries; an empty one that joins
//! starts with no log and waits to be added.

use crate::config::Start;
use crate::state::{BadSnapshot, Limits, StateMachine};
use prost::Message as _;
use reinado_proto::v1::MemberContext;
use reinado_raft::{Raft, Restore};
use reinado_storage::Recovered;

/// A core and its state machine, ready for [`super::Replica::new`].
pub struct Opened {
    /// The consensus core.
    pub raft: Raft,
    /// The state machine, at the core's snapshot.
    pub state: StateMachine,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The core refused the configuration or the recovered state.
    #[error("{0}")]
    Raft(#[from] reinado_raft::Error),
    /// The recovered snapshot is not a state machine image.
    #[error("{0}")]
    Snapshot(#[from] BadSnapshot),
}

/// True if storage holds nothing: a node that never ran.
pub fn is_empty(r: &Recovered) -> bool {
    r.hard_state == Default::default() && r.snapshot.is_none() && r.entries.is_empty()
}

/// Builds the core from what storage recovered: restored, or bootstrapped, or empty and waiting to be added.
/// The state machine's limits are the snapshot's, or the defaults: never this node's configuration, which
/// the replica proposes through the log when it leads.
pub fn open(
    raft_cfg: reinado_raft::Config,
    start: &Start,
    recovered: Recovered,
) -> Result<Opened, StartError> {
    let fresh = is_empty(&recovered);
    let state = match &recovered.snapshot {
        Some(s) => StateMachine::restore(&s.data, s.meta.index)?,
        None => StateMachine::new(Limits::default()),
    };
    let raft = match (start, fresh) {
        (Start::Bootstrap(peers), true) => {
            // Every initial member writes the same entries: the peer addresses from the bootstrap list only.
            let members: Vec<_> = peers
                .iter()
                .map(|(&id, addr)| {
                    let ctx = MemberContext {
                        peer_addr: addr.clone(),
                        ..MemberContext::default()
                    };
                    (id, ctx.encode_to_vec())
                })
                .collect();
            Raft::bootstrap_with_context(raft_cfg, &members)?
        }
        (Start::Join(_), true) => Raft::new(raft_cfg, Restore::default())?,
        (_, false) => Raft::new(
            raft_cfg,
            Restore {
                hard_state: recovered.hard_state,
                snapshot: recovered.snapshot,
                entries: recovered.entries,
            },
        )?,
    };
    Ok(Opened { raft, state })
}
