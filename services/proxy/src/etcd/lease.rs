//! etcd's Lease service: every call to the leader, whose clock alone says when a lease runs out; the
//! keep-alive stream as a stream, ended with UNAVAILABLE when the leader changes so that the client opens one
//! to the new leader.

use super::stream::Relayed;
use super::{GrpcResult, forward_service, node_client};
use crate::route::Target;
use reinado_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use reinado_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};
use tonic::{Request, Streaming};

forward_service! {
    Lease, LeaseClient {
        lease_grant(LeaseGrantRequest) -> LeaseGrantResponse => Leader, Write;
        lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse => Leader, Write;
        lease_time_to_live(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse => Leader, Read;
        lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse => Leader, Read;
    }
    extra {
        type LeaseKeepAliveStream = Relayed<LeaseKeepAliveResponse>;

        async fn lease_keep_alive(
            &self,
            req: Request<Streaming<LeaseKeepAliveRequest>>,
        ) -> GrpcResult<Self::LeaseKeepAliveStream> {
            let (metadata, _, inbound) = req.into_parts();
            self.route
                .relay(Target::Leader, &metadata, inbound, |node, to_node| async move {
                    node_client!(LeaseClient, node.traced())
                        .lease_keep_alive(to_node)
                        .await
                })
                .await
        }
    }
}
