//! etcd's Cluster service (the member list from any live node, changes to the leader) and Maintenance (any
//! live node; its Status describes the node that answers, as an etcd endpoint's does).

use super::route::Kind;
use super::stream::Relayed;
use super::{EtcdProxy, GrpcResult, node_client};
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

#[tonic::async_trait]
impl Cluster for EtcdProxy {
    async fn member_add(&self, req: Request<MemberAddRequest>) -> GrpcResult<MemberAddResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ClusterClient, ch).member_add(r).await
        })
        .await
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> GrpcResult<MemberRemoveResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ClusterClient, ch).member_remove(r).await
        })
        .await
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> GrpcResult<MemberUpdateResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ClusterClient, ch).member_update(r).await
        })
        .await
    }

    async fn member_list(&self, req: Request<MemberListRequest>) -> GrpcResult<MemberListResponse> {
        self.unary(Target::Reader, Kind::Read, req, |ch, r| async move {
            node_client!(ClusterClient, ch).member_list(r).await
        })
        .await
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> GrpcResult<MemberPromoteResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(ClusterClient, ch).member_promote(r).await
        })
        .await
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdProxy {
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

    async fn status(&self, req: Request<StatusRequest>) -> GrpcResult<StatusResponse> {
        self.unary(Target::Reader, Kind::Read, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).status(r).await
        })
        .await
    }

    async fn defragment(&self, req: Request<DefragmentRequest>) -> GrpcResult<DefragmentResponse> {
        self.unary(Target::Reader, Kind::Write, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).defragment(r).await
        })
        .await
    }

    async fn hash(&self, req: Request<HashRequest>) -> GrpcResult<HashResponse> {
        self.unary(Target::Reader, Kind::Read, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).hash(r).await
        })
        .await
    }

    async fn hash_kv(&self, req: Request<HashKvRequest>) -> GrpcResult<HashKvResponse> {
        self.unary(Target::Reader, Kind::Read, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).hash_kv(r).await
        })
        .await
    }

    type SnapshotStream = Relayed<SnapshotResponse>;

    async fn snapshot(&self, req: Request<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
        let nothing = tokio_stream::empty::<Result<(), tonic::Status>>();
        self.route
            .relay(
                Target::Reader,
                req.metadata(),
                nothing,
                |node, _| async move {
                    node_client!(MaintenanceClient, node.traced())
                        .snapshot(SnapshotRequest {})
                        .await
                },
            )
            .await
    }

    async fn move_leader(&self, req: Request<MoveLeaderRequest>) -> GrpcResult<MoveLeaderResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).move_leader(r).await
        })
        .await
    }

    async fn downgrade(&self, req: Request<DowngradeRequest>) -> GrpcResult<DowngradeResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(MaintenanceClient, ch).downgrade(r).await
        })
        .await
    }
}
