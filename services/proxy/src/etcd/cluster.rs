//! etcd's Cluster service (the member list from any live node, changes to the leader) and Maintenance (any
//! live node; its Status describes the node that answers, as an etcd endpoint's does).

use super::route::Kind;
use super::stream::Relayed;
use super::{GrpcResult, forward_service, node_client};
use crate::route::Target;
use reinado_proto::etcd::etcdserverpb::cluster_client::ClusterClient;
use reinado_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use reinado_proto::etcd::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MemberAddRequest,
    MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, alarm_request::AlarmAction, cluster_server::Cluster,
    maintenance_server::Maintenance,
};
use tonic::Request;

forward_service! {
    Cluster, ClusterClient {
        member_add(MemberAddRequest) -> MemberAddResponse => Leader, Write;
        member_remove(MemberRemoveRequest) -> MemberRemoveResponse => Leader, Write;
        member_update(MemberUpdateRequest) -> MemberUpdateResponse => Leader, Write;
        member_list(MemberListRequest) -> MemberListResponse => Reader, Read;
        member_promote(MemberPromoteRequest) -> MemberPromoteResponse => Leader, Write;
    }
    extra {}
}

forward_service! {
    Maintenance, MaintenanceClient {
        /// The status of the node that answers (as an etcd endpoint describes itself).
        status(StatusRequest) -> StatusResponse => Reader, Read;
        defragment(DefragmentRequest) -> DefragmentResponse => Reader, Write;
        hash(HashRequest) -> HashResponse => Reader, Read;
        hash_kv(HashKvRequest) -> HashKvResponse => Reader, Read;
        move_leader(MoveLeaderRequest) -> MoveLeaderResponse => Leader, Write;
        downgrade(DowngradeRequest) -> DowngradeResponse => Leader, Write;
    }
    extra {
        /// Listing goes to any live node; raising or clearing an alarm to the leader.
        async fn alarm(&self, req: Request<AlarmRequest>) -> GrpcResult<AlarmResponse> {
            let (target, kind) = if req.get_ref().action == AlarmAction::Get as i32 {
                (Target::Reader, Kind::Read)
            } else {
                (Target::Leader, Kind::Write)
            };
            self.unary(target, kind, req, |ch, r| async move {
                node_client!(MaintenanceClient, ch).alarm(r).await
            })
            .await
        }

        type SnapshotStream = Relayed<SnapshotResponse>;

        async fn snapshot(&self, req: Request<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
            let nothing = tokio_stream::empty::<Result<(), tonic::Status>>();
            self.route
                .relay(Target::Reader, req.metadata(), nothing, |node, _| async move {
                    node_client!(MaintenanceClient, node.traced())
                        .snapshot(SnapshotRequest {})
                        .await
                })
                .await
        }
    }
}
