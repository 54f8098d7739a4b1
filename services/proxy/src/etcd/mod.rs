//! etcd's v3 API on the proxy's client port, routed to the nodes (which serve it themselves, see the node's
//! `api/etcd`): writes, lease calls and membership changes to the leader, Range to a serving follower
//! (linearizable through its ReadIndex unless serializable, falling back to the leader), Watch to a follower as
//! a stream, LeaseKeepAlive to the leader as a stream, Cluster's reads and Maintenance to any live node, Lock
//! and Election to the leader. Every call travels on the proxy's one channel per node; the node's answers and
//! errors are passed on unchanged, so an etcd client sees what a node (or etcd) would say.
//!
//! ## Layout
//! - `mod.rs`: [`EtcdProxy`], its servers, and the one unary forwarding path.
//! - `route.rs`: which failures allow another attempt ([`route::Kind`]); a write is never sent twice.
//! - `stream.rs`: streams opened on one node and relayed both ways.
//! - `kv.rs`: KV and Watch. `lease.rs`: Lease. `cluster.rs`: Cluster and Maintenance. `lock.rs`: Lock and
//!   Election.

mod cluster;
mod kv;
mod lease;
mod lock;
pub mod route;
pub mod stream;

use crate::route::{Router, Target};
use crate::topology::MAX_MESSAGE_BYTES;
use reinado_client::client::Traced;
use reinado_proto::etcd::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use reinado_proto::etcd::v3electionpb::election_server::ElectionServer;
use reinado_proto::etcd::v3lockpb::lock_server::LockServer;
use route::{EtcdRouter, Kind};
use std::future::Future;
use tonic::{Request, Response, Status};

type GrpcResult<T> = Result<Response<T>, Status>;

/// The etcd services of the proxy.
#[derive(Clone)]
pub struct EtcdProxy {
    route: EtcdRouter,
}

/// A client of `$client`'s kind on a node's channel, taking answers as large as the proxy's own API does.
macro_rules! node_client {
    ($client:path, $ch:expr) => {{
        use $client as C;
        C::new($ch).max_decoding_message_size($crate::topology::MAX_MESSAGE_BYTES)
    }};
}
pub(crate) use node_client;

/// Implements etcd service `$service` for [`EtcdProxy`]: each listed method forwards its request with
/// [`EtcdProxy::unary`] to a node for `Target::$target`, retried as `Kind::$kind` allows, through
/// `$client`'s method of the same name; the items in `extra` complete the implementation (streams).
macro_rules! forward_service {
    (
        $service:path, $client:path {
            $( $(#[$doc:meta])* $method:ident($req:ty) -> $resp:ty => $target:ident, $kind:ident; )*
        }
        extra { $($extra:tt)* }
    ) => {
        #[tonic::async_trait]
        impl $service for $crate::etcd::EtcdProxy {
            $(
                $(#[$doc])*
                async fn $method(
                    &self,
                    req: tonic::Request<$req>,
                ) -> $crate::etcd::GrpcResult<$resp> {
                    use $crate::etcd::route::Kind;
                    use $crate::route::Target;
                    self.unary(Target::$target, Kind::$kind, req, |ch, r| async move {
                        $crate::etcd::node_client!($client, ch).$method(r).await
                    })
                    .await
                }
            )*
            $($extra)*
        }
    };
}
pub(crate) use forward_service;

impl EtcdProxy {
    /// etcd's services over `router`.
    pub fn new(router: Router) -> EtcdProxy {
        EtcdProxy {
            route: EtcdRouter::new(router),
        }
    }

    /// Adds etcd's KV, Watch, Lease, Cluster, Maintenance, Lock and Election services to `server`, taking
    /// requests of at most `max_request_bytes`.
    pub fn add_to<L>(
        &self,
        server: tonic::transport::server::Router<L>,
        max_request_bytes: usize,
    ) -> tonic::transport::server::Router<L> {
        let max = max_request_bytes;
        let send = MAX_MESSAGE_BYTES;
        server
            .add_service(KvServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(WatchServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(LeaseServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(ClusterServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(
                MaintenanceServer::new(self.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(send),
            )
            .add_service(LockServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(ElectionServer::new(self.clone()).max_decoding_message_size(max))
    }

    /// Sends `req` to a node for `target` with `call` (retried as [`route::Kind`] allows) and answers with
    /// what the node answered. Each attempt carries its time limit as the request's gRPC timeout.
    async fn unary<M, T, F, Fut>(
        &self,
        target: Target,
        kind: Kind,
        req: Request<M>,
        call: F,
    ) -> GrpcResult<T>
    where
        M: Clone,
        F: Fn(Traced, Request<M>) -> Fut,
        Fut: Future<Output = GrpcResult<T>>,
    {
        let (metadata, _, msg) = req.into_parts();
        let resp = self
            .route
            .run(target, kind, &metadata, |node, budget| {
                let mut req = Request::new(msg.clone());
                if let Some(b) = budget {
                    req.set_timeout(b);
                }
                call(node.traced(), req)
            })
            .await?;
        Ok(Response::new(resp.into_inner()))
    }
}
