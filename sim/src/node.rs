//! One simulated node: the node's own [`Replica`] over `reinado-storage`'s real [`DiskStorage`], on a
//! [`FaultyFs`] that loses what was not synced, tears writes and fails calls. This is the simulator's driver
//! of the replica, the counterpart of the node's tokio `raft_loop`: it carries inputs in and outputs out, and
//! decides nothing.

use crate::linearizability::{KvOp, KvOutput, Value};
use prost::Message as _;
use reinado_node::config::Start;
use reinado_node::error::NodeError;
use reinado_node::replica::{self, Answer, Output, Replica, ReplicaError, Settings, Waiters};
use reinado_node::state::{Limits, StateMachine};
use reinado_proto::v1::{
    Command, Compare, CompareOp, CompareTarget, RequestId, TxnDelete, TxnOp, TxnPut, TxnRequest,
    WriteOutcome, command, txn_op,
};
use reinado_raft::{Index, Message, NodeId, Raft};
use reinado_storage::{DiskStorage, FaultyFs, Options};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Where every simulated node keeps its log (each on its own file system).
const DATA_DIR: &str = "/data/raft";

/// Small segments, so rotation and segment removal run often and each sync copies little.
const STORAGE: Options = Options {
    segment_size_bytes: 8 << 10,
};

/// What a client asked a node to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client (0-based).
    pub client: u64,
    /// The client's number for this operation (reads included), to match answers; retries reuse it.
    pub seq: u64,
    /// A write's request id: its session's client id (0 for a read).
    pub session_id: u64,
    /// A write's request id: its number within the session (0 for a read).
    pub write_seq: u64,
    /// A write's request id: every write of the session numbered below this has had its answer.
    pub acked: u64,
    /// What to do.
    pub op: KvOp,
    /// Which attempt of the client this is, so a late answer to an earlier attempt is recognised.
    pub attempt: u64,
}

/// A node's answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Done, with the state machine's output.
    Ok(KvOutput),
    /// Not the leader; try the given node, if known.
    NotLeader(Option<u64>),
    /// Could not be served now (leadership lost, proposal overwritten); retry.
    Retry,
    /// Refused for good: the outcome is unknown to the client.
    Failed,
    /// Refused, not applied: the session holds too many unacknowledged results.
    SessionFull,
    /// Refused: the session was forgotten; the outcome is unknown, and the client needs a new session.
    SessionExpired,
}

/// The simulator's waiters: client requests for writes and reads, nothing for the operator's requests.
pub struct SimWaiters;

impl Waiters for SimWaiters {
    type Write = Request;
    type Read = Request;
    type Members = ();
    type Leader = ();
}

/// The key a client key number stands for.
pub fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

fn value_of(bytes: &[u8]) -> Option<Value> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The command a client write travels as, with its request id.
pub fn encode_write(req: &Request, time_ms: u64) -> Vec<u8> {
    let key = key_bytes(req.op.key());
    let put = |value: Value| TxnOp {
        op: Some(txn_op::Op::Put(TxnPut {
            key: key.clone(),
            value: value.to_le_bytes().to_vec(),
        })),
    };
    let op = match req.op {
        KvOp::Put { value, .. } => command::Op::Put(TxnPut {
            key: key.clone(),
            value: value.to_le_bytes().to_vec(),
        }),
        KvOp::Delete { .. } => command::Op::Delete(TxnDelete { key: key.clone() }),
        KvOp::Cas { expected, new, .. } => {
            let compare = match expected {
                Some(v) => Compare {
                    key: key.clone(),
                    target: CompareTarget::Value as i32,
                    op: CompareOp::Equal as i32,
                    value: v.to_le_bytes().to_vec(),
                    ..Compare::default()
                },
                None => Compare {
                    key: key.clone(),
                    target: CompareTarget::Exists as i32,
                    op: CompareOp::Equal as i32,
                    exists: false,
                    ..Compare::default()
                },
            };
            let success = match new {
                Some(v) => put(v),
                None => TxnOp {
                    op: Some(txn_op::Op::Delete(TxnDelete { key: key.clone() })),
                },
            };
            command::Op::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![success],
                failure: Vec::new(),
                request_id: None,
            })
        }
        KvOp::Get { .. } => unreachable!("reads do not go through the log"),
    };
    Command {
        request_id: Some(RequestId {
            client_id: req.session_id,
            seq: req.write_seq,
            acked: req.acked,
        }),
        time_ms,
        op: Some(op),
    }
    .encode_to_vec()
}

/// What a write's outcome means to the client that asked for it.
fn write_output(op: &KvOp, outcome: &WriteOutcome) -> KvOutput {
    match op {
        KvOp::Put { .. } => KvOutput::Put,
        KvOp::Delete { .. } => KvOutput::Delete {
            existed: outcome.deleted,
        },
        KvOp::Cas { .. } => KvOutput::Cas {
            succeeded: outcome.succeeded,
        },
        KvOp::Get { .. } => unreachable!("reads do not go through the log"),
    }
}

fn response(err: &NodeError) -> Response {
    match err {
        NodeError::NotLeader { id, .. } => Response::NotLeader(Some(*id)),
        NodeError::NoLeader => Response::NotLeader(None),
        NodeError::LeadershipLost
        | NodeError::Unavailable(_)
        | NodeError::Timeout(_)
        | NodeError::ShuttingDown => Response::Retry,
        NodeError::SessionFull(_) => Response::SessionFull,
        NodeError::SessionExpired(_) => Response::SessionExpired,
        _ => Response::Failed,
    }
}

/// One running node.
pub struct SimNode {
    /// The node's replica.
    pub replica: Replica<SimWaiters>,
    storage: DiskStorage,
}

/// The node could not start from its disk.
#[derive(Debug)]
pub struct StartFailed(pub String);

impl SimNode {
    /// Starts (or restarts) a node from what `fs` holds, as `reinado-node` does.
    pub fn start(
        fs: &FaultyFs,
        raft_cfg: reinado_raft::Config,
        start: &Start,
        settings: Settings,
    ) -> Result<SimNode, StartFailed> {
        let (storage, recovered) =
            DiskStorage::open_with(Arc::new(fs.clone()), Path::new(DATA_DIR), STORAGE)
                .map_err(|e| StartFailed(format!("storage: {e}")))?;
        let opened =
            replica::open(raft_cfg, start, recovered).map_err(|e| StartFailed(e.to_string()))?;
        let state = Arc::new(RwLock::new(opened.state));
        let replica = Replica::new(opened.raft, state, settings);
        Ok(SimNode { replica, storage })
    }

    /// The consensus core.
    pub fn raft(&self) -> &Raft {
        self.replica.raft()
    }

    /// The state machine's image (equal on replicas that applied the same log).
    pub fn state_image(&self) -> Vec<u8> {
        self.replica.state().read().expect("state lock").snapshot()
    }

    /// The applied index of the state machine.
    pub fn applied(&self) -> Index {
        self.replica.state().read().expect("state lock").applied()
    }

    /// Takes the next Ready if none waits for its sync; true if one now waits.
    pub fn write_ready(&mut self, out: &mut Output<SimWaiters>) -> Result<bool, ReplicaError> {
        self.replica.write_ready(&mut self.storage, out)
    }

    /// The sync of the waiting Ready: make it durable, then let the replica go on.
    pub fn sync(&mut self, out: &mut Output<SimWaiters>) -> Result<(), ReplicaError> {
        self.storage.sync()?;
        self.replica.synced(&mut self.storage, out)
    }

    /// A message from a peer.
    pub fn step(&mut self, m: Message) {
        self.replica.step(m);
    }

    /// A client request: writes are proposed, reads ask for a read index.
    pub fn request(&mut self, req: Request, time_ms: u64, out: &mut Output<SimWaiters>) {
        let req = match req.op {
            KvOp::Get { .. } => replica::Request::ReadIndex { waiter: req },
            _ => replica::Request::Write {
                data: encode_write(&req, time_ms),
                span: tracing::Span::none(),
                waiter: req,
            },
        };
        self.replica.request(req, out);
    }

    /// Deliberate bug: answers a read from local state, without a read index.
    pub fn read_locally(&self, _req: Request, key: u64) -> Response {
        let sm = self.replica.state().read().expect("state lock");
        let value = sm.get(&key_bytes(key)).and_then(|kv| value_of(&kv.value));
        Response::Ok(KvOutput::Get(value))
    }

    /// Turns the replica's answers into client responses.
    pub fn responses(&self, answers: Vec<Answer<SimWaiters>>) -> Vec<(Request, Response)> {
        let mut responses = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer {
                Answer::Write(req, Ok(outcome)) => {
                    let output = write_output(&req.op, &outcome);
                    responses.push((req, Response::Ok(output)));
                }
                Answer::Write(req, Err(e)) | Answer::Read(req, Err(e)) => {
                    responses.push((req, response(&e)))
                }
                Answer::Read(req, Ok(_)) => {
                    let key = key_bytes(req.op.key());
                    let sm = self.replica.state().read().expect("state lock");
                    let value = sm.get(&key).and_then(|kv| value_of(&kv.value));
                    responses.push((req, Response::Ok(KvOutput::Get(value))));
                }
                Answer::Members(..) | Answer::Leader(..) => {}
            }
        }
        responses
    }

    /// The id of this node.
    pub fn id(&self) -> NodeId {
        self.replica.settings().id
    }
}

/// An empty state machine's image, for comparisons.
pub fn empty_image() -> Vec<u8> {
    StateMachine::new(Limits::default()).snapshot()
}
