//! etcd's Lock and Election services, forwarded to the leader. A node that does not serve them answers
//! UNIMPLEMENTED, and so does the proxy: the node's status is passed on. Lock and Campaign wait for other
//! holders, as long as the client's deadline allows; like every write, neither is sent twice once it may
//! have reached a node.

use super::stream::Relayed;
use super::{GrpcResult, forward_service, node_client};
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

forward_service! {
    Lock, LockClient {
        lock(LockRequest) -> LockResponse => Leader, Wait;
        unlock(UnlockRequest) -> UnlockResponse => Leader, Write;
    }
    extra {}
}

forward_service! {
    Election, ElectionClient {
        campaign(CampaignRequest) -> CampaignResponse => Leader, Wait;
        proclaim(ProclaimRequest) -> ProclaimResponse => Leader, Write;
        leader(LeaderRequest) -> LeaderResponse => Leader, Read;
        resign(ResignRequest) -> ResignResponse => Leader, Write;
    }
    extra {
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
    }
}
