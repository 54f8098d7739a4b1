//! Why a request failed, and the one function that turns that into a gRPC status.

use reinado_proto::v1::{Refusal, WriteOutcome};
use reinado_raft::NodeId;

pub use reinado_client::error::{LEADER_ADDR, LEADER_ID, REFUSAL, SESSION_EXPIRED};

/// A request the node could not serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// Writes and cluster changes go to the leader.
    #[error("this node is not the leader; the leader is node {id} at {addr}")]
    NotLeader {
        /// The leader.
        id: NodeId,
        /// Its client address (empty if not known yet).
        addr: String,
    },
    /// No leader is known: an election is running, or this node is cut off from a quorum.
    #[error(
        "no leader yet: the cluster is electing one (or this node is cut off from the majority); retry"
    )]
    NoLeader,
    /// Leadership changed before the write committed: it may or may not have been applied.
    #[error(
        "leadership changed before the write committed; retry it with the same request id (it applies at most once)"
    )]
    LeadershipLost,
    /// A wait ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The request is malformed or over a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request does not fit the cluster's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database quota is reached.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The client's session holds as many unacknowledged results as it may.
    #[error("{0}")]
    SessionFull(String),
    /// The client's session was forgotten; the write may have been applied before, and was not applied now.
    #[error("{0}")]
    SessionExpired(String),
    /// The history or log entry asked for was compacted.
    #[error("{0}")]
    Compacted(String),
    /// The thing asked for does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served right now; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The Fault API is off.
    #[error("fault injection is disabled on this node: start it with REINADO_FAULT_INJECTION=true")]
    FaultInjectionDisabled,
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<NodeError> for tonic::Status {
    fn from(e: NodeError) -> tonic::Status {
        use tonic::Code;
        let message = e.to_string();
        let code = match &e {
            NodeError::NotLeader { .. } => Code::FailedPrecondition,
            NodeError::NoLeader
            | NodeError::LeadershipLost
            | NodeError::ShuttingDown
            | NodeError::Unavailable(_) => Code::Unavailable,
            NodeError::Timeout(_) => Code::DeadlineExceeded,
            NodeError::InvalidArgument(_) => Code::InvalidArgument,
            NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
            NodeError::QuotaExceeded(_) | NodeError::SessionFull(_) => Code::ResourceExhausted,
            NodeError::SessionExpired(_) => Code::FailedPrecondition,
            NodeError::Compacted(_) => Code::OutOfRange,
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::FaultInjectionDisabled => Code::PermissionDenied,
        };
        let mut status = tonic::Status::new(code, message);
        if let NodeError::SessionExpired(_) = &e {
            status.metadata_mut().insert(
                REFUSAL,
                tonic::metadata::MetadataValue::from_static(SESSION_EXPIRED),
            );
        }
        if let NodeError::NotLeader { id, addr } = &e {
            let md = status.metadata_mut();
            if let Ok(v) = id.to_string().parse() {
                md.insert(LEADER_ID, v);
            }
            if let Ok(v) = addr.parse() {
                md.insert(LEADER_ADDR, v);
            }
        }
        status
    }
}

/// The error for a write the state machine refused, by the outcome's [`Refusal`]; `None` if it was applied.
/// An outcome with a reason but no kind (written before kinds existed, or of a kind this node does not
/// know) is a failed precondition.
pub fn refusal_error(outcome: &WriteOutcome) -> Option<NodeError> {
    let why = outcome.refused.clone();
    let kind = Refusal::try_from(outcome.refusal).unwrap_or(Refusal::None);
    match kind {
        Refusal::None if why.is_empty() => None,
        Refusal::None | Refusal::Acknowledged => Some(NodeError::FailedPrecondition(why)),
        Refusal::Quota => Some(NodeError::QuotaExceeded(why)),
        Refusal::SessionFull => Some(NodeError::SessionFull(why)),
        Refusal::SessionExpired => Some(NodeError::SessionExpired(why)),
        Refusal::LeaseNotFound => Some(NodeError::NotFound(why)),
        Refusal::LeaseExists => Some(NodeError::FailedPrecondition(why)),
        Refusal::LeaseLimit => Some(NodeError::QuotaExceeded(why)),
        Refusal::Compacted | Refusal::FutureRevision => Some(NodeError::Compacted(why)),
        Refusal::InvalidArgument => Some(NodeError::InvalidArgument(why)),
    }
}
