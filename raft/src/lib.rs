//! # reinado-raft: the consensus core
//!
//! A pure, synchronous Raft state machine in the style of etcd's raft and raft-rs. It reads no clock, opens no
//! socket or file and draws randomness only from a seed it is given (this crate's only dependency is
//! `thiserror`), so a run is reproduced exactly by replaying its inputs.
//!
//! ## Driving it
//! ```text
//! loop {
//!     on a timer:            raft.tick()
//!     on a peer message:     raft.step(msg)
//!     on a client request:   raft.propose(data) / raft.read_index(ctx) / raft.propose_conf_change(cc)
//!     if raft.has_ready() {
//!         let ready = raft.ready();
//!         send(ready.messages);                       // may leave at once
//!         persist(ready.snapshot, ready.entries, ready.hard_state); fsync;  // group commit
//!         let done = raft.advance(ready);             // only now:
//!         send(done.messages); apply(done.committed_entries); serve(done.read_states);
//!     }
//! }
//! ```
//! The rule "these messages only after that is durable" is carried by the types: the messages that depend on
//! durability are inside the [`Ready`], private, and come out of [`Raft::advance`] only when it is handed back.
//!
//! ## Layout
//! - `types.rs`: entries, hard state, membership, snapshots, messages: plain data.
//! - `config.rs`: [`Config`] and the deliberate [`Bugs`] the simulator's checkers must catch.
//! - `raft.rs`: the state, role transitions, ticks and the §5.1 term rules in `step`.
//! - `election.rs`: elections, PreVote and TimeoutNow.
//! - `leader.rs`: replication, commitment, heartbeats, CheckQuorum, ReadIndex, snapshots to followers,
//!   leadership transfer, membership bookkeeping.
//! - `follower.rs`: accepting appends, heartbeats and snapshot chunks.
//! - `node.rs`: the driver's interface: proposals, reads, `ready`/`advance`, compaction, status.
//! - `log.rs`: the in-memory log after the last snapshot. `progress.rs`: a leader's view of each peer.
//! - `rng.rs`: a seeded SplitMix64.
//!
//! ## Membership
//! Single-server changes (thesis §4.1): a learner is added, catches up, is promoted; a node is removed. A change
//! takes effect on every node when it commits; a leader accepts a new one only once the previous one committed
//! and an entry of its own term committed.

mod config;
mod election;
mod follower;
mod leader;
mod log;
mod node;
mod progress;
mod raft;
mod rng;
pub mod types;

pub use config::{Bugs, Config};
pub use node::{PeerStatus, Persisted, Ready, Status};
pub use progress::ProgressState;
pub use raft::{Raft, Restore, SoftState};
pub use rng::Rng;
pub use types::*;

/// Why the core refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts proposals and transfers; `leader` is the one this node knows, if any.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node follows, if known.
        leader: Option<NodeId>,
    },
    /// Proposals are refused while leadership is being handed to another node.
    #[error("leadership is being transferred to node {0}")]
    TransferInProgress(NodeId),
    /// A membership change is already in the log and not yet committed.
    #[error("membership change at index {0} is still pending")]
    ConfChangePending(Index),
    /// The membership change makes no sense for the current membership.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
    /// A leadership transfer cannot be made.
    #[error("cannot transfer leadership: {0}")]
    Transfer(String),
    /// A compaction request was outside the compactable range.
    #[error("cannot compact: {0}")]
    Compact(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The leader's entries not yet committed hold as many bytes as it keeps: followers are behind (or cut
    /// off); retry once they catch up.
    #[error(
        "the leader holds {bytes} bytes of uncommitted entries, at most {max}: retry once the followers catch up"
    )]
    UncommittedFull {
        /// Bytes of the uncommitted entries.
        bytes: u64,
        /// The bound.
        max: u64,
    },
}
