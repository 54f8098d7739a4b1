//! etcd's Lease service: every call to the leader, whose clock alone says when a lease runs out; the
//! keep-alive stream as a stream, ended with UNAVAILABLE when the leader changes so that the client opens one
//! to the new leader.

use super::route::Kind;
use super::stream::Relayed;
use super::{EtcdProxy, GrpcResult, node_client};
use crate::route::Target;
use reinado_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use reinado_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};
use tonic::{Request, Streaming};

#[tonic::async_trait]
impl Lease for EtcdProxy {
    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> GrpcResult<LeaseGrantResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(LeaseClient, ch).lease_grant(r).await
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> GrpcResult<LeaseRevokeResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(LeaseClient, ch).lease_revoke(r).await
        })
        .await
    }

    type LeaseKeepAliveStream = Relayed<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> GrpcResult<Self::LeaseKeepAliveStream> {
        let (metadata, _, inbound) = req.into_parts();
        self.route
            .relay(
                Target::Leader,
                &metadata,
                inbound,
                |node, to_node| async move {
                    node_client!(LeaseClient, node.traced())
                        .lease_keep_alive(to_node)
                        .await
                },
            )
            .await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> GrpcResult<LeaseTimeToLiveResponse> {
        self.unary(Target::Leader, Kind::Read, req, |ch, r| async move {
            node_client!(LeaseClient, ch).lease_time_to_live(r).await
        })
        .await
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> GrpcResult<LeaseLeasesResponse> {
        self.unary(Target::Leader, Kind::Read, req, |ch, r| async move {
            node_client!(LeaseClient, ch).lease_leases(r).await
        })
        .await
    }
}
