//! The client-facing gRPC services: `Kv`, `Cluster` and `Fault`.
//!
//! Handlers validate input, then either read the state machine directly (serializable reads, watches), ask
//! the Raft loop for a read index first (linearizable reads), or send a proposal to the Raft loop and wait for
//! it to be applied (writes). Every failure is a [`NodeError`], turned into a gRPC status in one place
//! (`impl From<NodeError> for tonic::Status`).
//!
//! ## Layout
//! - `mod.rs`: [`NodeApi`], the handle the services share, and the waits every handler uses.
//! - `kv.rs`: the Kv service. `watches.rs`: its Watch streams.
//! - `pipeline.rs`: the Pipeline service: many Kv requests on one stream, for proxies.
//! - `cluster.rs`: the Cluster and Fault services.
//! - `validate.rs`: input checks.
//! - `etcd/`: etcd's v3 API (KV, Watch, Cluster, Maintenance) over the same node, for etcd clients.

mod cluster;
mod etcd;
mod kv;
mod pipeline;
mod validate;
mod watches;

use crate::config::RequestLimits;
use crate::error::NodeError;
use crate::raft_loop::{Reply, Request, View};
use crate::state::StateMachine;
use crate::transport::Isolation;
use reinado_proto::v1::ResponseHeader;
use reinado_raft::{Index, NodeId};
use std::sync::{Arc, RwLock};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

pub use etcd::EtcdApi;
pub use validate::prefix_end;

/// The cluster id etcd's headers carry: a fixed hash (FNV-1a, 64 bits) of the cluster's name, never 0.
pub fn etcd_cluster_id(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash.max(1)
}

/// The most watch streams one node serves at once.
const MAX_WATCHES: usize = 10_000;

/// What the API services share: channels to the Raft loop and read access to what it publishes.
#[derive(Clone)]
pub struct NodeApi {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    cluster_id: String,
    requests: mpsc::Sender<Request>,
    state: Arc<RwLock<StateMachine>>,
    applied: watch::Receiver<Index>,
    view: watch::Receiver<View>,
    limits: RequestLimits,
    isolation: Arc<Isolation>,
    fault_injection: bool,
    min_lease_ttl_s: i64,
    watches: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

/// Everything [`NodeApi::new`] needs.
pub struct ApiParts {
    /// This node.
    pub id: NodeId,
    /// The cluster's name.
    pub cluster_id: String,
    /// Requests to the Raft loop.
    pub requests: mpsc::Sender<Request>,
    /// The state machine.
    pub state: Arc<RwLock<StateMachine>>,
    /// The applied index.
    pub applied: watch::Receiver<Index>,
    /// The node's view.
    pub view: watch::Receiver<View>,
    /// Input limits.
    pub limits: RequestLimits,
    /// The isolation fault.
    pub isolation: Arc<Isolation>,
    /// Serve the Fault API.
    pub fault_injection: bool,
    /// The shortest lease TTL granted, in seconds (a shorter one is raised to it, as etcd does).
    pub min_lease_ttl_s: i64,
    /// Flips to true when the client server stops: watch streams end.
    pub shutdown: watch::Receiver<bool>,
}

impl NodeApi {
    /// The shared handle.
    pub fn new(p: ApiParts) -> Self {
        NodeApi {
            inner: Arc::new(Inner {
                id: p.id,
                cluster_id: p.cluster_id,
                requests: p.requests,
                state: p.state,
                applied: p.applied,
                view: p.view,
                limits: p.limits,
                isolation: p.isolation,
                fault_injection: p.fault_injection,
                min_lease_ttl_s: p.min_lease_ttl_s,
                watches: Arc::new(Semaphore::new(MAX_WATCHES)),
                shutdown: p.shutdown,
            }),
        }
    }

    /// The Kv service.
    pub fn kv_service(&self) -> reinado_proto::v1::kv_server::KvServer<Self> {
        reinado_proto::v1::kv_server::KvServer::new(self.clone())
            .max_decoding_message_size(self.inner.limits.max_request_bytes)
    }

    /// The Pipeline service.
    pub fn pipeline_service(&self) -> reinado_proto::v1::pipeline_server::PipelineServer<Self> {
        reinado_proto::v1::pipeline_server::PipelineServer::new(self.clone())
            .max_decoding_message_size(self.inner.limits.max_request_bytes)
    }

    /// The Cluster service.
    pub fn cluster_service(&self) -> reinado_proto::v1::cluster_server::ClusterServer<Self> {
        reinado_proto::v1::cluster_server::ClusterServer::new(self.clone())
    }

    /// etcd's v3 services over this node (KV, Watch, Cluster, Maintenance).
    pub fn etcd(&self) -> EtcdApi {
        EtcdApi::new(self)
    }

    /// The Fault service.
    pub fn fault_service(&self) -> reinado_proto::v1::fault_server::FaultServer<Self> {
        reinado_proto::v1::fault_server::FaultServer::new(self.clone())
    }

    fn view(&self) -> View {
        self.inner.view.borrow().clone()
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            member_id: self.inner.id,
            revision: *self.inner.applied.borrow(),
            raft_term: self.inner.view.borrow().term,
        }
    }

    /// Sends a request to the Raft loop and waits for its answer, at most the request timeout.
    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let wait = async {
            self.inner
                .requests
                .send(make(tx))
                .await
                .map_err(|_| NodeError::ShuttingDown)?;
            rx.await.map_err(|_| NodeError::ShuttingDown)?
        };
        tokio::time::timeout(self.inner.limits.request_timeout, wait)
            .await
            .map_err(|_| NodeError::Timeout(what))?
    }

    /// Waits until the state machine has applied `index`.
    async fn wait_applied(&self, index: Index) -> Result<(), NodeError> {
        let mut applied = self.inner.applied.clone();
        let wait = applied.wait_for(|a| *a >= index);
        match tokio::time::timeout(self.inner.limits.request_timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::ShuttingDown),
            Err(_) => Err(NodeError::Timeout("this node to apply the read index")),
        }
    }

    /// Waits until a linearizable read may be served here (thesis §6.4): obtains a read index (from the
    /// leader if this node follows) and waits until it is applied.
    async fn linearize(&self) -> Result<(), NodeError> {
        let index = self
            .ask("a read index", |reply| Request::ReadIndex { reply })
            .await?;
        self.wait_applied(index).await
    }

    /// Fails fast unless this node leads: writes go to the leader.
    fn require_leader(&self) -> Result<(), NodeError> {
        let view = self.view();
        if view.role == reinado_raft::Role::Leader {
            Ok(())
        } else {
            Err(view.not_leader())
        }
    }
}
