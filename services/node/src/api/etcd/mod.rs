//! etcd's v3 gRPC API on the node's client port, so that etcd clients (`etcdctl`, clientv3) talk to Reinado.
//!
//! Reads are served from the state machine's etcd view (after the same ReadIndex barrier the v1 API uses,
//! unless the client asks for a serializable read). Every etcd write (Put, DeleteRange, Txn) travels through
//! the log as one `Command::EtcdTxn`, and Compact as one `Command::Compact`; the state machine applies them as
//! etcd does and writes etcd's answer into the outcome. A follower forwards writes to the leader once, over
//! one cached channel per leader address; a forwarded request that finds no leader there is refused, never
//! forwarded again. Errors are [`NodeError`]s with etcd's own messages where etcd has one, turned into a gRPC
//! status by the one `From<NodeError> for tonic::Status`.
//!
//! Lock and Election run etcd's recipes in the cluster (`recipes.rs`).
//!
//! ## Layout
//! - `mod.rs`: [`EtcdApi`], the response header, the write path and the forwarding to the leader.
//! - `kv.rs`: the KV service. `validate.rs`: etcd's input checks on its requests.
//! - `watch.rs`: the Watch service (one task per stream, many watches on it).
//! - `cluster.rs`: the Cluster service. `maintenance.rs`: the Maintenance service.
//! - `lock.rs`, `election.rs`: the Lock and Election services, over `recipes.rs` (a contender's key under
//!   the name, created under its lease; its turn when every key created before it is gone).
//! - `lease.rs`: the Lease service (grant, revoke, keep-alive, time-to-live, leases), over the leader's lease
//!   clock.

/// In a handler of a request that needs the leader: on a follower, forwards `$req` to the leader with
/// `$client::$method` and returns its answer (see [`EtcdApi::forward`]); on the leader, goes on.
macro_rules! forward_unless_leader {
    ($api:expr, $req:ident, $client:ident :: $method:ident) => {
        forward_unless_leader!($api, $req, $client::$method, true)
    };
    // `bounded: false` for requests that wait as long as their client does (Lock, Campaign).
    ($api:expr, $req:ident, $client:ident :: $method:ident, $bounded:expr) => {
        if let $crate::api::etcd::Route::Leader(addr) = $api.route(&$req)? {
            return $api
                .forward(&addr, $req.into_inner(), $bounded, |ch, r| async move {
                    $client::new(ch).$method(r).await
                })
                .await;
        }
    };
}

mod cluster;
mod election;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod recipes;
mod validate;
mod watch;

use super::{NodeApi, etcd_cluster_id};
use crate::error::{NodeError, refusal_error};
use crate::state::StateMachine;
use prost::Message as _;
use reinado_client::channel::{ChannelOptions, lazy_channel};
use reinado_proto::etcd::etcdserverpb::{ResponseHeader, TxnRequest, TxnResponse};
use reinado_proto::v1::{WriteOutcome, command};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request as GrpcRequest, Response, Status};

type GrpcResult<T> = Result<Response<T>, Status>;

/// The metadata key a follower sets on a request it forwards to the leader: the leader must not forward it
/// on (no chains of forwards while leadership moves).
const FORWARDED: &str = "reinado-etcd-forwarded";

/// etcd's answer to a request that needs the leader, on a node that is not it.
const NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's answer while no leader is known.
const NO_LEADER: &str = "etcdserver: no leader";
/// etcd's answer when leadership changed before the request was done (it may have been applied).
const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// The most leader channels kept; beyond it the cache starts over (leaders are members, so this is only
/// reached in a cluster whose membership changed a lot).
const MAX_LEADER_CHANNELS: usize = 16;

/// How much longer than the request timeout a follower waits for the leader's answer to a forwarded request:
/// the leader gives up first and says why.
const FORWARD_GRACE: Duration = Duration::from_secs(1);

/// The etcd services, sharing the node's [`NodeApi`].
#[derive(Clone)]
pub struct EtcdApi {
    api: NodeApi,
    cluster_hash: u64,
    leaders: Arc<LeaderChannels>,
}

/// Where a request that needs the leader is served.
enum Route {
    /// This node leads.
    Here,
    /// Forward it to the leader at this client address.
    Leader(String),
}

impl EtcdApi {
    /// The etcd services over `api`.
    pub fn new(api: &NodeApi) -> EtcdApi {
        EtcdApi {
            cluster_hash: etcd_cluster_id(&api.inner.cluster_id),
            api: api.clone(),
            leaders: Arc::new(LeaderChannels::default()),
        }
    }

    /// etcd's KV service.
    pub fn kv_service(&self) -> reinado_proto::etcd::etcdserverpb::kv_server::KvServer<Self> {
        reinado_proto::etcd::etcdserverpb::kv_server::KvServer::new(self.clone())
            .max_decoding_message_size(self.api.inner.limits.max_request_bytes)
    }

    /// etcd's Watch service.
    pub fn watch_service(
        &self,
    ) -> reinado_proto::etcd::etcdserverpb::watch_server::WatchServer<Self> {
        reinado_proto::etcd::etcdserverpb::watch_server::WatchServer::new(self.clone())
            .max_decoding_message_size(self.api.inner.limits.max_request_bytes)
    }

    /// etcd's Cluster service.
    pub fn cluster_service(
        &self,
    ) -> reinado_proto::etcd::etcdserverpb::cluster_server::ClusterServer<Self> {
        reinado_proto::etcd::etcdserverpb::cluster_server::ClusterServer::new(self.clone())
    }

    /// etcd's Lock service.
    pub fn lock_service(&self) -> reinado_proto::etcd::v3lockpb::lock_server::LockServer<Self> {
        reinado_proto::etcd::v3lockpb::lock_server::LockServer::new(self.clone())
            .max_decoding_message_size(self.api.inner.limits.max_request_bytes)
    }

    /// etcd's Election service.
    pub fn election_service(
        &self,
    ) -> reinado_proto::etcd::v3electionpb::election_server::ElectionServer<Self> {
        reinado_proto::etcd::v3electionpb::election_server::ElectionServer::new(self.clone())
            .max_decoding_message_size(self.api.inner.limits.max_request_bytes)
    }

    /// etcd's Lease service.
    pub fn lease_service(
        &self,
    ) -> reinado_proto::etcd::etcdserverpb::lease_server::LeaseServer<Self> {
        reinado_proto::etcd::etcdserverpb::lease_server::LeaseServer::new(self.clone())
            .max_decoding_message_size(self.api.inner.limits.max_request_bytes)
    }

    /// etcd's Maintenance service.
    pub fn maintenance_service(
        &self,
    ) -> reinado_proto::etcd::etcdserverpb::maintenance_server::MaintenanceServer<Self> {
        reinado_proto::etcd::etcdserverpb::maintenance_server::MaintenanceServer::new(self.clone())
    }

    fn state(&self) -> RwLockReadGuard<'_, StateMachine> {
        self.api.inner.state.read().expect("state lock")
    }

    /// The header of an answer at `revision`.
    fn header(&self, revision: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_hash,
            member_id: self.api.inner.id,
            revision: i64::try_from(revision).unwrap_or(i64::MAX),
            raft_term: self.api.inner.view.borrow().term,
        }
    }

    /// The header of an answer at the state machine's current revision.
    fn current_header(&self) -> ResponseHeader {
        let revision = self.state().revision();
        self.header(revision)
    }

    /// Where a request that needs the leader goes: here, to the leader, or nowhere (a forwarded request on a
    /// node that does not lead, or no leader known).
    fn route<T>(&self, req: &GrpcRequest<T>) -> Result<Route, NodeError> {
        let view = self.api.view();
        if view.role == reinado_raft::Role::Leader {
            return Ok(Route::Here);
        }
        if req.metadata().contains_key(FORWARDED) {
            return Err(NodeError::Unavailable(NOT_LEADER.into()));
        }
        match view.leader {
            Some(_) if !view.leader_addr.is_empty() => Ok(Route::Leader(view.leader_addr)),
            _ => Err(etcd_error(NodeError::NoLeader)),
        }
    }

    /// Sends `msg` to the leader at `addr` once, marked as forwarded. The leader's answer, error or not, is
    /// passed on as it is; a failure to get one (connection, timeout) is UNAVAILABLE saying that the outcome is
    /// unknown. Never retried: the write may have been applied.
    async fn forward<M, T, Fut>(
        &self,
        addr: &str,
        msg: M,
        bounded: bool,
        call: impl FnOnce(Channel, GrpcRequest<M>) -> Fut,
    ) -> GrpcResult<T>
    where
        Fut: Future<Output = GrpcResult<T>>,
    {
        let channel = self.leaders.get(addr)?;
        let mut req = GrpcRequest::new(msg);
        req.metadata_mut()
            .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        if !bounded {
            // A request that waits (a lock, a campaign) waits as long as its client: the client's deadline
            // or cancellation ends the forwarded call with it.
            return call(channel, req)
                .await
                .map(|r| Response::new(r.into_inner()));
        }
        let timeout = self.api.inner.limits.request_timeout;
        req.set_timeout(timeout);
        let unknown = |why: String| -> Status {
            NodeError::Unavailable(format!(
                "etcdserver: forwarding to the leader at {addr} failed ({why}); the request may or may not have been applied"
            ))
            .into()
        };
        match tokio::time::timeout(timeout + FORWARD_GRACE, call(channel, req)).await {
            Ok(Ok(resp)) => Ok(Response::new(resp.into_inner())),
            Ok(Err(status)) if from_transport(&status) => Err(unknown(status.to_string())),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(unknown(format!(
                "no answer within {:?}",
                timeout + FORWARD_GRACE
            ))),
        }
    }

    /// Proposes one etcd write as one log entry and waits until it is applied: its answer (header unset) and
    /// the revision it was applied at. A refusal is the state machine's error, with etcd's text.
    async fn propose(&self, op: command::Op, grows_by: u64) -> Result<WriteOutcome, NodeError> {
        let outcome = self
            .api
            .write(None, op, grows_by)
            .await
            .map_err(etcd_error)?;
        match refusal_error(&outcome) {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Proposes a Txn (an etcd Put and DeleteRange are Txns of one operation).
    async fn propose_txn(&self, txn: TxnRequest) -> Result<(TxnResponse, u64), NodeError> {
        let grows_by = validate::txn_growth(&txn);
        let outcome = self.propose(command::Op::EtcdTxn(txn), grows_by).await?;
        let resp = TxnResponse::decode(outcome.etcd_response.as_slice())
            .expect("an applied etcd write's outcome holds its TxnResponse");
        Ok((resp, outcome.revision))
    }
}

/// A status that the client side of a channel made (no connection, reset stream), not one the server
/// answered: only those carry a source error; statuses read from the server's trailers have none.
fn from_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The node's errors as etcd clients understand them: the leader's absence or loss is UNAVAILABLE with etcd's
/// text (clients retry reads elsewhere), not the v1 API's FAILED_PRECONDITION with the leader's address, nor
/// its advice to retry with the same request id (etcd requests have none).
fn etcd_error(e: NodeError) -> NodeError {
    match e {
        NodeError::NotLeader { .. } => NodeError::Unavailable(NOT_LEADER.into()),
        NodeError::NoLeader => NodeError::Unavailable(NO_LEADER.into()),
        NodeError::LeadershipLost => NodeError::Unavailable(LEADER_CHANGED.into()),
        e => e,
    }
}

/// One long-lived channel per leader client address, made on first use and reused by every forward.
#[derive(Default)]
struct LeaderChannels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl LeaderChannels {
    fn get(&self, addr: &str) -> Result<Channel, NodeError> {
        let mut channels = self.channels.lock().expect("leader channels lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = lazy_channel(addr, ChannelOptions::default()).map_err(|e| {
            NodeError::Unavailable(format!(
                "etcdserver: the leader's client address `{addr}` is not usable: {e}"
            ))
        })?;
        if channels.len() >= MAX_LEADER_CHANNELS {
            channels.clear();
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_is_fnv1a_64() {
        // The published FNV-1a test vectors.
        assert_eq!(etcd_cluster_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(etcd_cluster_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(etcd_cluster_id("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_cluster_id_is_stable_and_tells_clusters_apart() {
        assert_eq!(etcd_cluster_id("reinado"), etcd_cluster_id("reinado"));
        assert_ne!(etcd_cluster_id("reinado"), etcd_cluster_id("reinado2"));
        assert_ne!(etcd_cluster_id("reinado"), 0);
    }

    #[tokio::test]
    async fn a_leader_out_of_reach_is_told_from_a_leaders_answer() {
        use reinado_proto::etcd::etcdserverpb::{PutRequest, kv_client::KvClient};
        // Port 1 on loopback: nothing listens, the connection is refused.
        let channel = lazy_channel("127.0.0.1:1", ChannelOptions::default()).unwrap();
        let failed = KvClient::new(channel)
            .put(PutRequest::default())
            .await
            .expect_err("no server");
        assert!(from_transport(&failed), "{failed:?}");
        assert!(!from_transport(&Status::unavailable(NOT_LEADER)));
    }

    #[test]
    fn not_leader_is_etcds_unavailable() {
        let e = etcd_error(NodeError::NotLeader {
            id: 2,
            addr: "x:1".into(),
        });
        let status = Status::from(e);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), NOT_LEADER);
        for (e, text) in [
            (NodeError::NoLeader, NO_LEADER),
            (NodeError::LeadershipLost, LEADER_CHANGED),
        ] {
            assert_eq!(etcd_error(e), NodeError::Unavailable(text.into()));
        }
        let other = NodeError::InvalidArgument("x".into());
        assert_eq!(etcd_error(other.clone()), other);
    }
}
