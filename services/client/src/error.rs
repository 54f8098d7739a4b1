//! What can go wrong talking to Reinado, in words that say what to do, and how a gRPC status is classified
//! for retries (shared with the proxy, which retries the same way).

/// Metadata key: the leader's node id, on a redirect.
pub const LEADER_ID: &str = "reinado-leader-id";
/// Metadata key: the leader's client address, on a redirect.
pub const LEADER_ADDR: &str = "reinado-leader-addr";

/// Metadata key: the kind of refusal, on a write the state machine refused for a reason a client acts on.
pub const REFUSAL: &str = "reinado-refusal";
/// [`REFUSAL`]'s value when the write's session was forgotten: the client must start a new session.
pub const SESSION_EXPIRED: &str = "session-expired";

/// True if `status` says the write's session was forgotten by the cluster (see [`REFUSAL`]).
pub fn is_session_expired(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get(REFUSAL)
        .is_some_and(|v| v.as_bytes() == SESSION_EXPIRED.as_bytes())
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The answer is final.
    Fail,
    /// Try again (elsewhere, after a pause); the request may or may not have been applied.
    Retry,
    /// The node is not the leader; the leader is at this client address (empty if unknown).
    Redirect(String),
}

/// Classifies a failed attempt. Writes may be retried because they carry a request id: the cluster applies
/// each request id once, so a retry of a write that did apply answers its first outcome.
pub fn classify(status: &tonic::Status) -> Next {
    use tonic::Code;
    let leader_addr = status
        .metadata()
        .get(LEADER_ADDR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match status.code() {
        Code::FailedPrecondition if status.metadata().contains_key(LEADER_ID) => {
            Next::Redirect(leader_addr.unwrap_or_default())
        }
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Aborted
        | Code::Cancelled
        | Code::Internal => Next::Retry,
        _ => Next::Fail,
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request is invalid (the server said INVALID_ARGUMENT).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The key or entry does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database is full (or the client's session holds too many unacknowledged results).
    #[error("the database is full: {0}")]
    QuotaExceeded(String),
    /// The cluster forgot the client's session: the write was not applied now, but may have been before.
    /// The client starts a new session for its next writes.
    #[error("outcome unknown: {0}")]
    SessionExpired(String),
    /// No endpoint could serve the request before the deadline.
    #[error("{what}")]
    Unavailable {
        /// What happened last.
        what: String,
    },
    /// Any other refusal from the server.
    #[error("{code:?}: {message}")]
    Server {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// A bad endpoint address or similar local problem.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The error for a final status.
    pub fn from_status(status: &tonic::Status) -> ClientError {
        use tonic::Code;
        let message = status.message().to_string();
        if is_session_expired(status) {
            return ClientError::SessionExpired(message);
        }
        match status.code() {
            Code::InvalidArgument => ClientError::InvalidArgument(message),
            Code::NotFound => ClientError::NotFound(message),
            Code::ResourceExhausted => ClientError::QuotaExceeded(message),
            code => ClientError::Server { code, message },
        }
    }

    /// The error after retries ran out; `last` is the last failure seen.
    pub fn exhausted(last: &tonic::Status, endpoints: &[String]) -> ClientError {
        use tonic::Code;
        let what = match last.code() {
            Code::Unavailable if last.message().contains("no leader") => format!(
                "no leader: the cluster did not elect one in time; is a majority of its nodes up? ({})",
                last.message()
            ),
            Code::Unavailable | Code::Unknown if is_connection_error(last) => format!(
                "cannot reach {}: {}; is the cluster up (`make up`) and REINADO_ENDPOINTS right?",
                endpoints.join(", "),
                describe(last)
            ),
            Code::DeadlineExceeded => format!("timed out: {}", last.message()),
            _ => format!("unavailable: {}", last.message()),
        };
        ClientError::Unavailable { what }
    }

    /// A process exit code for the CLI: 1 other failure, 3 unavailable, 4 not found, 5 invalid argument,
    /// 6 quota exceeded.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unavailable { .. } => 3,
            ClientError::NotFound(_) => 4,
            ClientError::InvalidArgument(_) | ClientError::Local(_) => 5,
            ClientError::QuotaExceeded(_) => 6,
            ClientError::Server { .. } | ClientError::SessionExpired(_) => 1,
        }
    }
}

/// The status's message, with the root cause of a transport error ("tcp connect error: Connection refused").
pub fn describe(status: &tonic::Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut root = None;
    while let Some(e) = cause {
        root = Some(e);
        cause = e.source();
    }
    match root.map(ToString::to_string) {
        Some(r) if !status.message().contains(&r) => format!("{}: {r}", status.message()),
        _ => status.message().to_string(),
    }
}

/// True if the status comes from the transport (no server answered).
pub fn is_connection_error(status: &tonic::Status) -> bool {
    let m = status.message();
    m.contains("transport error")
        || m.contains("connection")
        || m.contains("Connection")
        || m.contains("dns error")
        || m.contains("tcp connect")
}
