//! etcd's Lock and Election services, forwarded to the leader. A node that does not serve them answers
//! UNIMPLEMENTED, and so does the proxy: the node's status is passed on. Lock and Campaign wait for other
//! holders, as long as the client's deadline allows; like every write, neither is sent twice once it may
//! have reached a node.

use super::route::Kind;
use super::stream::Relayed;
use super::{EtcdProxy, GrpcResult, node_client};
use crate::route::Target;
use reinado_proto::etcd::v3electionpb::election_client::ElectionClient;
use reinado_proto::etcd::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse, election_server::Election,
};
use reinado_proto::etcd::v3lockpb::lock_client::LockClient;
use reinado_proto::etcd::v3lockpb::{
    LockRequest, LockResponse, UnlockRequest, UnlockResponse, lock_server::Lock,
};
use tonic::Request;

#[tonic::async_trait]
impl Lock for EtcdProxy {
    async fn lock(&self, req: Request<LockRequest>) -> GrpcResult<LockResponse> {
        self.unary(Target::Leader, Kind::Wait, req, |ch, r| async move {
            node_client!(LockClient, ch).lock(r).await
        })
        .await
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> GrpcResult<UnlockResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(LockClient, ch).unlock(r).await
        })
        .await
    }
}

#[tonic::async_trait]
impl Election for EtcdProxy {
    async fn campaign(&self, req: Request<CampaignRequest>) -> GrpcResult<CampaignResponse> {
        self.unary(Target::Leader, Kind::Wait, req, |ch, r| async move {
            node_client!(ElectionClient, ch).campaign(r).await
        })
        .await
    }

    async fn proclaim(&self, req: Request<ProclaimRequest>) -> GrpcResult<ProclaimResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ElectionClient, ch).proclaim(r).await
        })
        .await
    }

    async fn leader(&self, req: Request<LeaderRequest>) -> GrpcResult<LeaderResponse> {
        self.unary(Target::Leader, Kind::Read, req, |ch, r| async move {
            node_client!(ElectionClient, ch).leader(r).await
        })
        .await
    }

    type ObserveStream = Relayed<LeaderResponse>;

    /// A stream from the leader, ended with UNAVAILABLE when another node leads.
    async fn observe(&self, req: Request<LeaderRequest>) -> GrpcResult<Self::ObserveStream> {
        let (metadata, _, msg) = req.into_parts();
        let nothing = tokio_stream::empty::<Result<(), tonic::Status>>();
        self.route
            .relay(Target::Leader, &metadata, nothing, |node, _| {
                let msg = msg.clone();
                async move {
                    node_client!(ElectionClient, node.traced())
                        .observe(msg)
                        .await
                }
            })
            .await
    }

    async fn resign(&self, req: Request<ResignRequest>) -> GrpcResult<ResignResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ElectionClient, ch).resign(r).await
        })
        .await
    }
}
