//! One simulated node: the node's own [`Replica`] over `reinado-storage`'s real [`DiskStorage`], on a
//! [`FaultyFs`] that loses what was not synced, tears writes and fails calls. This is the simulator's driver
//! of the replica, the counterpart of the node's tokio `raft_loop`: it carries inputs in and outputs out, and
//! decides nothing.

use crate::linearizability::{
    Cond, GROUP_KEYS, Group, GroupState, KvOp, KvOutput, Txn, Value, Write, key_at, slot_of,
};
use prost::Message as _;
use reinado_node::config::Start;
use reinado_node::error::NodeError;
use reinado_node::replica::{self, Answer, Output, Replica, ReplicaError, Settings, Waiters};
use reinado_node::state::recipes::{self, Turn};
use reinado_node::state::{Limits, RangeQuery, StateMachine};
use reinado_proto::etcd::etcdserverpb as etcd;
use reinado_proto::v1::{
    Command, Compare, CompareOp, CompareTarget, LeaseGrant, LeaseRevoke, RequestId, TxnDelete,
    TxnOp, TxnPut, TxnRequest, WriteOutcome, command, txn_op,
};
use reinado_raft::{Index, Message, NodeId, Raft};
use reinado_storage::{DiskStorage, FaultyFs, Options, StorageBugs};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Where every simulated node keeps its log (each on its own file system).
const DATA_DIR: &str = "/data/raft";

/// Small segments, so rotation and segment removal run often and each sync copies little.
const SEGMENT_BYTES: u64 = 8 << 10;

/// The directory holding a node's WAL segments, on its file system.
pub fn wal_dir() -> std::path::PathBuf {
    Path::new(DATA_DIR).join("wal")
}

/// The directory holding a node's snapshot files, on its file system.
pub fn snap_dir() -> std::path::PathBuf {
    Path::new(DATA_DIR).join("snap")
}

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
    /// Refused when applied (the quota): the write took no effect, and never will (a retry is answered the
    /// same from the session).
    Refused,
    /// Refused, not applied: the session holds too many unacknowledged results.
    SessionFull,
    /// Refused: the session was forgotten; the outcome is unknown, and the client needs a new session.
    SessionExpired,
}

/// The simulator's waiters: client requests for writes and reads, nothing for the operator's requests.
pub struct SimWaiters;

impl Waiters for SimWaiters {
    type Write = Waiter;
    type Read = Waiter;
    type Members = ();
    type Leader = ();
}

/// Who waits for a write or a read point: a key-value client, or a lease holder.
#[derive(Clone, Copy, Debug)]
pub enum Waiter {
    /// A key-value client's request.
    Kv(Request),
    /// A lease holder's request.
    Lease(LeaseRequest),
}

/// A node's answer, to whom it goes.
pub enum Reply {
    /// To a key-value client.
    Kv(Request, Response),
    /// To a lease holder.
    Lease(LeaseRequest, LeaseResponse),
}

/// What a lease holder asks of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The holder (0-based).
    pub holder: u64,
    /// The holder's number for this request, to match answers.
    pub seq: u64,
    /// What to do.
    pub op: LeaseOp,
}

/// A lease holder's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Grant a lease with this TTL (seconds).
    Grant { ttl_s: i64 },
    /// Become a contender for the lock: create the holder's key under the lease (etcd's lock recipe).
    Claim { lease: i64 },
    /// Ask whether the holder's turn came: its key, created at `token`, is the first left under the lock.
    /// `asked_at` is filled when the request is sent (simulated time). `pred` is the create revision of the
    /// key just before it when it claimed (for the deliberate bug that waits for that key alone).
    Turn {
        lease: i64,
        token: i64,
        pred: i64,
        asked_at: u64,
    },
    /// Renew the lease; `at` and `ttl_s` are filled by the node: when (simulated time) it renewed it, for
    /// how long.
    Renew { lease: i64, at: u64, ttl_s: i64 },
    /// Revoke the lease (the holder stops, as a client closing its session does).
    Revoke { lease: i64 },
}

/// A node's answer to a lease holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseResponse {
    /// Granted: the lease and its TTL.
    Granted { lease: i64, ttl_s: i64 },
    /// The holder's key is there, created at `token` (its place in line, the fencing token); `pred` is the
    /// create revision of the key just before it, 0 if none.
    Claimed { token: i64, pred: i64 },
    /// Where the holder stands, at a point after the request was sent (confirmed by a read index).
    Turn(Turn),
    /// The lease is revoked, with its key.
    Revoked,
    /// Renewed at `at` on `node`, and the leadership confirmed after it.
    Renewed { ttl_s: i64, node: NodeId, at: u64 },
    /// The lease does not exist (ran out, or revoked).
    NotFound,
    /// Refused for good when applied (the quota, a limit): the holder gives up on this lease.
    Refused,
    /// Not served; try again (on the given node, if known).
    Retry(Option<NodeId>),
}

/// The lock every lease holder contends for.
pub const LOCK: &[u8] = b"lock";

/// The key a client key number stands for (zero-padded, so that a group's keys are one range).
pub fn key_bytes(key: u64) -> Vec<u8> {
    format!("k{key:04}").into_bytes()
}

/// The range query that reads every key of `group`, as a client's Range would.
fn group_range(group: Group) -> RangeQuery {
    RangeQuery {
        start: key_bytes(key_at(group, 0)),
        end: Some(key_bytes(key_at(group + 1, 0))),
        limit: GROUP_KEYS,
        keys_only: false,
        max_bytes: usize::MAX,
    }
}

/// The client key number a key stands for.
fn key_of(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes.strip_prefix(b"k")?)
        .ok()?
        .parse()
        .ok()
}

fn value_of(bytes: &[u8]) -> Option<Value> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The comparison `cond` on `key`.
fn compare(key: Vec<u8>, cond: Cond) -> Compare {
    match cond {
        Cond::Equals(v) => Compare {
            key,
            target: CompareTarget::Value as i32,
            op: CompareOp::Equal as i32,
            value: v.to_le_bytes().to_vec(),
            ..Compare::default()
        },
        Cond::Absent => Compare {
            key,
            target: CompareTarget::Exists as i32,
            op: CompareOp::Equal as i32,
            exists: false,
            ..Compare::default()
        },
    }
}

/// The transaction operation that makes `write` to `key`.
fn txn_op(key: Vec<u8>, write: Write) -> TxnOp {
    let op = match write {
        Write::Put(value) => txn_op::Op::Put(TxnPut {
            key,
            value: value.to_le_bytes().to_vec(),
        }),
        Write::Delete => txn_op::Op::Delete(TxnDelete { key }),
    };
    TxnOp { op: Some(op) }
}

/// A multi-key transaction as the node's `TxnRequest`, its keys in slot order.
fn txn_request(txn: &Txn) -> TxnRequest {
    let key = |s: usize| key_bytes(key_at(txn.group, s));
    let branch = |writes: &[Option<Write>; GROUP_KEYS]| -> Vec<TxnOp> {
        (0..GROUP_KEYS)
            .filter_map(|s| Some(txn_op(key(s), writes[s]?)))
            .collect()
    };
    TxnRequest {
        compare: (0..GROUP_KEYS)
            .filter_map(|s| Some(compare(key(s), txn.compare[s]?)))
            .collect(),
        success: branch(&txn.success),
        failure: branch(&txn.failure),
        request_id: None,
    }
}

/// The command a client write travels as, with its request id.
pub fn encode_write(req: &Request, time_ms: u64) -> Vec<u8> {
    let op = match req.op {
        KvOp::Put { key, value } => command::Op::Put(TxnPut {
            key: key_bytes(key),
            value: value.to_le_bytes().to_vec(),
        }),
        KvOp::Delete { key } => command::Op::Delete(TxnDelete {
            key: key_bytes(key),
        }),
        KvOp::Cas { key, expected, new } => {
            let write = new.map_or(Write::Delete, Write::Put);
            command::Op::Txn(TxnRequest {
                compare: vec![compare(
                    key_bytes(key),
                    expected.map_or(Cond::Absent, Cond::Equals),
                )],
                success: vec![txn_op(key_bytes(key), write)],
                failure: Vec::new(),
                request_id: None,
            })
        }
        KvOp::Txn(txn) => command::Op::Txn(txn_request(&txn)),
        KvOp::Get { .. } | KvOp::ReadGroup { .. } => {
            unreachable!("reads do not go through the log")
        }
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
        KvOp::Txn(_) => KvOutput::Txn {
            succeeded: outcome.succeeded,
        },
        KvOp::Get { .. } | KvOp::ReadGroup { .. } => {
            unreachable!("reads do not go through the log")
        }
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
        NodeError::QuotaExceeded(_) => Response::Refused,
        _ => Response::Failed,
    }
}

fn lease_response(err: &NodeError) -> LeaseResponse {
    match err {
        NodeError::NotLeader { id, .. } => LeaseResponse::Retry(Some(*id)),
        NodeError::NotFound(_) => LeaseResponse::NotFound,
        NodeError::NoLeader
        | NodeError::LeadershipLost
        | NodeError::Unavailable(_)
        | NodeError::Timeout(_)
        | NodeError::ShuttingDown => LeaseResponse::Retry(None),
        _ => LeaseResponse::Refused,
    }
}

/// One running node.
pub struct SimNode {
    /// The node's replica.
    pub replica: Replica<SimWaiters>,
    storage: DiskStorage,
    /// Deliberate bugs in how the node answers a lock contender's turn.
    pub lock_bugs: LockBugs,
}

/// Deliberate bugs in the turns a node tells lock contenders, as a Lock service could get them wrong.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockBugs {
    /// A turn that waits only for the key just before the contender's own (when it claimed) to go, not
    /// for every earlier one.
    pub predecessor_only: bool,
}

/// The node could not start from its disk.
#[derive(Debug)]
pub struct StartFailed(pub String);

impl SimNode {
    /// Starts (or restarts) a node from what `fs` holds, as `reinado-node` does; `bugs` are the storage's
    /// deliberate bugs.
    pub fn start(
        fs: &FaultyFs,
        raft_cfg: reinado_raft::Config,
        start: &Start,
        (settings, bugs): (Settings, StorageBugs),
    ) -> Result<SimNode, StartFailed> {
        let opts = Options {
            segment_size_bytes: SEGMENT_BYTES,
            bugs,
        };
        let (storage, recovered) =
            DiskStorage::open_with(Arc::new(fs.clone()), Path::new(DATA_DIR), opts)
                .map_err(|e| StartFailed(format!("storage: {e}")))?;
        let opened =
            replica::open(raft_cfg, start, recovered).map_err(|e| StartFailed(e.to_string()))?;
        let state = Arc::new(RwLock::new(opened.state));
        let replica = Replica::new(opened.raft, state, settings);
        Ok(SimNode {
            replica,
            storage,
            lock_bugs: LockBugs::default(),
        })
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

    /// True if the membership this node has applied lists `id`.
    pub fn applied_member(&self, id: NodeId) -> bool {
        let sm = self.replica.state().read().expect("state lock");
        sm.members().contains_key(&id)
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

    /// The connection from `peer` broke.
    pub fn peer_lost(&mut self, peer: NodeId) {
        self.replica.peer_lost(peer);
    }

    /// A message from a peer.
    pub fn step(&mut self, m: Message) {
        self.replica.step(m);
    }

    /// A client request: writes are proposed, reads ask for a read index.
    pub fn request(&mut self, req: Request, time_ms: u64, out: &mut Output<SimWaiters>) {
        let req = match req.op {
            KvOp::Get { .. } | KvOp::ReadGroup { .. } => replica::Request::ReadIndex {
                waiter: Waiter::Kv(req),
            },
            _ => replica::Request::Write {
                data: encode_write(&req, time_ms),
                span: tracing::Span::none(),
                waiter: Waiter::Kv(req),
            },
        };
        self.replica.request(req, out);
    }

    /// A lease holder's request, at simulated time `now` and `clock_ms` on this node's clock. A renewal is
    /// made at once and answered once a read index confirmed the leadership after it; so is a turn, as the
    /// Lock service confirms one. An immediate answer is returned.
    pub fn request_lease(
        &mut self,
        mut req: LeaseRequest,
        (now, clock_ms): (u64, u64),
        out: &mut Output<SimWaiters>,
    ) -> Option<LeaseResponse> {
        let op = match req.op {
            LeaseOp::Grant { ttl_s } => command::Op::LeaseGrant(LeaseGrant { id: 0, ttl_s }),
            LeaseOp::Claim { lease } => command::Op::EtcdTxn(recipes::claim_txn(
                &recipes::owned_key(LOCK, lease),
                &req.seq.to_le_bytes(),
                lease,
            )),
            LeaseOp::Turn { .. } => {
                let waiter = Waiter::Lease(req);
                self.replica
                    .request(replica::Request::ReadIndex { waiter }, out);
                return None;
            }
            LeaseOp::Revoke { lease } => command::Op::LeaseRevoke(LeaseRevoke {
                ids: vec![lease],
                expired: false,
            }),
            LeaseOp::Renew { lease, .. } => {
                let ttl_s = match self.replica.renew_lease(lease, clock_ms) {
                    Ok(ttl_s) => ttl_s,
                    Err(e) => return Some(lease_response(&e)),
                };
                req.op = LeaseOp::Renew {
                    lease,
                    at: now,
                    ttl_s,
                };
                let waiter = Waiter::Lease(req);
                self.replica
                    .request(replica::Request::ReadIndex { waiter }, out);
                return None;
            }
        };
        let data = Command {
            request_id: None,
            time_ms: now,
            op: Some(op),
        }
        .encode_to_vec();
        let write = replica::Request::Write {
            data,
            span: tracing::Span::none(),
            waiter: Waiter::Lease(req),
        };
        self.replica.request(write, out);
        None
    }

    /// True if every key attached to a lease names one that exists.
    pub fn lease_keys_consistent(&self) -> Result<(), String> {
        let sm = self.replica.state().read().expect("state lock");
        let all = etcd::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..etcd::RangeRequest::default()
        };
        let kvs = sm
            .etcd_range(&all, usize::MAX)
            .map_err(|e| e.to_string())?
            .kvs;
        match kvs
            .iter()
            .find(|kv| kv.lease != 0 && !sm.leases().contains(kv.lease))
        {
            Some(kv) => Err(format!(
                "Lease: n{} holds key {} attached to lease {:x}, which no longer exists",
                self.id(),
                String::from_utf8_lossy(&kv.key),
                kv.lease
            )),
            None => Ok(()),
        }
    }

    /// Deliberate bug: answers a read from local state, without a read index.
    pub fn read_locally(&self, req: Request) -> Response {
        Response::Ok(self.read(&req.op))
    }

    /// Where the holder asking `op` (a turn) stands in this node's applied state.
    fn turn(&self, op: LeaseOp) -> Turn {
        let LeaseOp::Turn {
            lease, token, pred, ..
        } = op
        else {
            unreachable!("asked for a holder's turn")
        };
        let sm = self.replica.state().read().expect("state lock");
        let mine = recipes::owned_key(LOCK, lease);
        let turn = sm.turn(&recipes::contenders(LOCK), &mine, token);
        if !self.lock_bugs.predecessor_only || turn == Turn::Gone {
            return turn;
        }
        if pred != 0 && self.created_before(&sm, pred + 1) == Some(pred) {
            Turn::Waiting
        } else {
            Turn::Mine
        }
    }

    /// The create revision of the last key under the lock created before `token`, if any.
    fn predecessor(&self, token: i64) -> i64 {
        let sm = self.replica.state().read().expect("state lock");
        self.created_before(&sm, token).unwrap_or(0)
    }

    fn created_before(&self, sm: &StateMachine, rev: i64) -> Option<i64> {
        if rev <= 1 {
            return None; // and a max_create_revision of 0 would mean none
        }
        let prefix = recipes::contenders(LOCK);
        let req = etcd::RangeRequest {
            range_end: recipes::contenders_end(&prefix),
            key: prefix,
            max_create_revision: rev - 1,
            sort_order: etcd::range_request::SortOrder::Descend as i32,
            sort_target: etcd::range_request::SortTarget::Create as i32,
            limit: 1,
            keys_only: true,
            ..etcd::RangeRequest::default()
        };
        let kvs = sm.etcd_range(&req, usize::MAX).ok()?.kvs;
        kvs.first().map(|kv| kv.create_revision)
    }

    /// Turns the replica's answers into client responses.
    pub fn responses(&self, answers: Vec<Answer<SimWaiters>>) -> Vec<Reply> {
        let mut responses = Vec::with_capacity(answers.len());
        for answer in answers {
            let reply = match answer {
                Answer::Write(Waiter::Kv(req), Ok(outcome)) => {
                    Reply::Kv(req, Response::Ok(write_output(&req.op, &outcome)))
                }
                Answer::Write(Waiter::Kv(req), Err(e)) | Answer::Read(Waiter::Kv(req), Err(e)) => {
                    Reply::Kv(req, response(&e))
                }
                Answer::Read(Waiter::Kv(req), Ok(_)) => {
                    Reply::Kv(req, Response::Ok(self.read(&req.op)))
                }
                Answer::Write(Waiter::Lease(req), Ok(outcome)) => {
                    let resp = match req.op {
                        LeaseOp::Grant { .. } => LeaseResponse::Granted {
                            lease: outcome.lease_id,
                            ttl_s: outcome.lease_ttl,
                        },
                        LeaseOp::Revoke { .. } => LeaseResponse::Revoked,
                        _ => match etcd::TxnResponse::decode(outcome.etcd_response.as_slice())
                            .ok()
                            .and_then(|resp| recipes::claimed(resp, outcome.revision))
                        {
                            Some((token, _)) => LeaseResponse::Claimed {
                                token,
                                pred: self.predecessor(token),
                            },
                            None => LeaseResponse::Refused,
                        },
                    };
                    Reply::Lease(req, resp)
                }
                Answer::Read(Waiter::Lease(req), Ok(_)) => {
                    let resp = match req.op {
                        LeaseOp::Renew { at, ttl_s, .. } => LeaseResponse::Renewed {
                            ttl_s,
                            node: self.id(),
                            at,
                        },
                        LeaseOp::Turn { .. } => LeaseResponse::Turn(self.turn(req.op)),
                        _ => unreachable!("only renewals and turns wait for a read point"),
                    };
                    Reply::Lease(req, resp)
                }
                Answer::Write(Waiter::Lease(req), Err(e))
                | Answer::Read(Waiter::Lease(req), Err(e)) => Reply::Lease(req, lease_response(&e)),
                Answer::Members(..) | Answer::Leader(..) => continue,
            };
            responses.push(reply);
        }
        responses
    }

    /// Serves a read from the applied state: one key, or a group's keys in one range (one read point).
    fn read(&self, op: &KvOp) -> KvOutput {
        let sm = self.replica.state().read().expect("state lock");
        match *op {
            KvOp::Get { key } => {
                KvOutput::Get(sm.get(&key_bytes(key)).and_then(|kv| value_of(&kv.value)))
            }
            KvOp::ReadGroup { group } => {
                let mut seen: GroupState = [None; GROUP_KEYS];
                for kv in sm.range(&group_range(group)).0 {
                    let key = key_of(&kv.key).expect("the simulator writes only its own keys");
                    seen[slot_of(key)] = value_of(&kv.value);
                }
                KvOutput::ReadGroup(seen)
            }
            _ => unreachable!("writes are answered by their outcome"),
        }
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
