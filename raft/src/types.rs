//! The data the core exchanges with its driver: log entries, hard state, membership, snapshots and messages.
//!
//! These types are plain data. Their wire form (protobuf, `proto/`) and their disk form (`storage/`) are
//! conversions kept in those crates, so the core never depends on an encoding.

/// Identifies a member of the cluster. `0` is never a valid id (it means "none" on the wire).
pub type NodeId = u64;
/// A Raft term (§5.1): a logical clock that only moves forward.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1; index 0 is the empty log.
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data proposed through `propose`; an empty normal entry is the no-op a new leader appends.
    Normal,
    /// A membership change; `data` is a [`ConfChange`] encoded by [`ConfChange::encode`].
    ConfChange,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// How to read `data`.
    pub kind: EntryKind,
    /// Opaque application bytes, or an encoded [`ConfChange`].
    pub data: Vec<u8>,
}

impl Entry {
    /// Approximate size in bytes, used for batching limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state every node must persist before answering any message that depends on it (Figure 2, "Persistent
/// state on all servers"), plus the commit index so that a restarted node can re-apply without waiting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed.
    pub commit: Index,
}

/// The membership of the cluster at some point in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Members that vote and count towards quorums, sorted.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but neither vote nor count towards quorums, sorted.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration made only of the given voters.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    /// True if `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// True if `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// What a membership change does. Changes are made one at a time (the single-server changes of the thesis
/// §4.1, with etcd's rule that a leader has at most one unapplied change in its log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Add a node as a non-voting learner.
    AddLearner,
    /// Make an existing learner a voter (or add a voter directly).
    AddVoter,
    /// Remove a voter or a learner.
    Remove,
}

/// A membership change, carried in the log by an [`EntryKind::ConfChange`] entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// What to do.
    pub kind: ConfChangeKind,
    /// The node it is done to.
    pub node_id: NodeId,
    /// Opaque application context, such as the node's address.
    pub context: Vec<u8>,
}

impl ConfChange {
    /// Encodes the change as entry data: one kind byte, the node id (8 bytes, little endian), then the context.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.kind {
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::AddVoter => 2,
            ConfChangeKind::Remove => 3,
        });
        out.extend_from_slice(&self.node_id.to_le_bytes());
        out.extend_from_slice(&self.context);
        out
    }

    /// Decodes entry data written by [`ConfChange::encode`]; `None` if it is malformed.
    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        let (&kind, rest) = data.split_first()?;
        let kind = match kind {
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::AddVoter,
            3 => ConfChangeKind::Remove,
            _ => return None,
        };
        let id_bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        Some(ConfChange {
            kind,
            node_id: NodeId::from_le_bytes(id_bytes),
            context: rest[8..].to_vec(),
        })
    }
}

/// Where a snapshot ends and what membership holds there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership as of `index`.
    pub conf_state: ConfState,
}

/// A state-machine image covering the log up to `meta.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// Where it ends.
    pub meta: SnapshotMeta,
    /// The application's serialized state machine.
    pub data: Vec<u8>,
}

/// A message between two members. `term` is the sender's current term, except for pre-votes, where it is the
/// term the sender would campaign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// See the type's documentation.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message the protocol uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote (§5.2), or a pre-vote (thesis §9.6) when `pre_vote` is set.
    Vote {
        /// A pre-vote asks whether the receiver would vote, without anyone changing term.
        pre_vote: bool,
        /// The candidate's last log index (§5.4.1).
        last_log_index: Index,
        /// The term of the candidate's last entry (§5.4.1).
        last_log_term: Term,
        /// Set when the campaign follows a leadership transfer: receivers ignore their leader lease.
        transfer: bool,
    },
    /// The answer to a [`MessageBody::Vote`].
    VoteResponse {
        /// Answers a pre-vote.
        pre_vote: bool,
        /// True if the vote was refused.
        reject: bool,
        /// On a refusal, the candidate's last entry (its index, 0 for none) if the voter holds the same entry
        /// and knows it committed. The candidate then knows its log committed up to there: a commit it may
        /// have missed (the leader that made it handed over or stopped), and that may change the membership
        /// it campaigns in.
        committed: Index,
        /// The term of the `committed` entry.
        committed_term: Term,
    },
    /// AppendEntries (§5.3).
    Append {
        /// The index of the entry just before `entries`.
        prev_log_index: Index,
        /// Its term.
        prev_log_term: Term,
        /// Entries to store; may be empty.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to an [`MessageBody::Append`].
    AppendResponse {
        /// True if `prev_log_index`/`prev_log_term` did not match.
        reject: bool,
        /// On success, the last index now known to match the leader; on rejection, the rejected
        /// `prev_log_index`.
        index: Index,
        /// On rejection: together with `hint_term`, where the leader should probe next. If the follower's log
        /// is shorter than `prev_log_index`, `hint_index` is its last index + 1 and `hint_term` is 0; otherwise
        /// `hint_term` is the conflicting term and `hint_index` the first index the follower has of it.
        hint_index: Index,
        /// See `hint_index`.
        hint_term: Term,
    },
    /// A heartbeat: asserts leadership, carries the commit index and the current read-index round.
    Heartbeat {
        /// `min(leader commit, follower's match index)`, so a follower never commits an entry it may not have.
        commit: Index,
        /// The leader's read round; a response echoes it to confirm leadership for reads (ReadIndex, thesis §6.4).
        read_round: u64,
    },
    /// The answer to a [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The read round being confirmed.
        read_round: u64,
    },
    /// One chunk of InstallSnapshot (§7).
    Snapshot {
        /// Where the snapshot ends and its membership.
        meta: SnapshotMeta,
        /// The byte offset of `data` within the whole snapshot.
        offset: u64,
        /// The chunk's bytes.
        data: Vec<u8>,
        /// True for the last chunk.
        done: bool,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The snapshot's last index.
        index: Index,
        /// The offset the receiver expects next (the whole length once `done` was accepted).
        next_offset: u64,
        /// True if the receiver could not use the chunk (wrong offset); it asks for `next_offset`.
        reject: bool,
        /// True once the whole snapshot is installed.
        done: bool,
    },
    /// Tells the receiver to start an election at once (leadership transfer, thesis §3.10).
    TimeoutNow,
    /// A follower asks its leader for a read index on behalf of a reader.
    ReadIndex {
        /// The reader's context, returned as is.
        ctx: Vec<u8>,
    },
    /// The leader's answer to [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The context from the request.
        ctx: Vec<u8>,
        /// The index a read may be served at once the follower has applied it; `None` if the leader refused
        /// (it is stepping down or transferring leadership).
        index: Option<Index>,
    },
}

impl MessageBody {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Vote { pre_vote: true, .. } => "PreVote",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

/// The answer to a read-index request: once the application has applied `index`, a read made for `ctx` sees
/// every write that completed before the request was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The context given to `read_index`.
    pub ctx: Vec<u8>,
    /// The index to wait for; `None` if the request failed and should be retried (for example on another node).
    pub index: Option<Index>,
}

/// A node's role (§5.1, plus the pre-candidate state of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks for pre-votes before starting a real election.
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Leads the current term.
    Leader,
}
