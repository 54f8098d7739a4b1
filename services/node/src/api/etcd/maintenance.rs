//! etcd's Maintenance service: Status, Alarm (listing: Reinado raises no alarms) and MoveLeader (Reinado's
//! leadership transfer). Defragment, Hash, HashKV, Snapshot and Downgrade are about etcd's bbolt file and
//! release upgrades, which Reinado does not have: UNIMPLEMENTED, saying so.

use super::{EtcdApi, GrpcResult, etcd_error};
use crate::raft_loop::Request;
use reinado_proto::etcd::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    alarm_request::AlarmAction, maintenance_client::MaintenanceClient,
    maintenance_server::Maintenance,
};
use tonic::{Request as GrpcRequest, Response, Status};

/// The etcd server version Status reports: the etcd API version Reinado emulates (etcd 3.5's v3 API), not
/// Reinado's own version. etcd clients parse it to decide which calls the server supports.
pub const EMULATED_ETCD_VERSION: &str = "3.5.0";

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("Reinado does not do etcd's {what}"))
}

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn alarm(&self, req: GrpcRequest<AlarmRequest>) -> GrpcResult<AlarmResponse> {
        match AlarmAction::try_from(req.into_inner().action) {
            Ok(AlarmAction::Get) => Ok(Response::new(AlarmResponse {
                header: Some(self.current_header()),
                alarms: Vec::new(),
            })),
            _ => Err(unimplemented(
                "alarm activation and deactivation: it raises no alarms (a full store refuses writes with RESOURCE_EXHAUSTED until keys are deleted)",
            )),
        }
    }

    async fn status(&self, _: GrpcRequest<StatusRequest>) -> GrpcResult<StatusResponse> {
        let report = self
            .api
            .ask("the node's status", |reply| Request::Status { reply })
            .await?;
        let db_size = i64::try_from(report.db_size_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            header: Some(self.current_header()),
            version: EMULATED_ETCD_VERSION.to_string(),
            db_size,
            leader: report.leader.unwrap_or(0),
            raft_index: report.commit,
            raft_term: report.term,
            raft_applied_index: report.applied,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: report.learner,
        }))
    }

    async fn defragment(
        &self,
        _: GrpcRequest<DefragmentRequest>,
    ) -> GrpcResult<DefragmentResponse> {
        Err(unimplemented(
            "Defragment: it has no database file to defragment",
        ))
    }

    async fn hash(&self, _: GrpcRequest<HashRequest>) -> GrpcResult<HashResponse> {
        Err(unimplemented("Hash: it has no database file to hash"))
    }

    async fn hash_kv(&self, _: GrpcRequest<HashKvRequest>) -> GrpcResult<HashKvResponse> {
        Err(unimplemented("HashKV"))
    }

    type SnapshotStream = tokio_stream::Empty<Result<SnapshotResponse, Status>>;

    async fn snapshot(&self, _: GrpcRequest<SnapshotRequest>) -> GrpcResult<Self::SnapshotStream> {
        Err(unimplemented(
            "Snapshot: its snapshots are Raft snapshots in the data dir, not etcd database files",
        ))
    }

    async fn move_leader(
        &self,
        req: GrpcRequest<MoveLeaderRequest>,
    ) -> GrpcResult<MoveLeaderResponse> {
        forward_unless_leader!(self, req, MaintenanceClient::move_leader);
        let target = Some(req.into_inner().target_id).filter(|&t| t != 0);
        self.api
            .ask("the leadership transfer", |reply| Request::TransferLeader {
                target,
                reply,
            })
            .await
            .map_err(etcd_error)?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.current_header()),
        }))
    }

    async fn downgrade(&self, _: GrpcRequest<DowngradeRequest>) -> GrpcResult<DowngradeResponse> {
        Err(unimplemented(
            "Downgrade: it has no etcd release to downgrade",
        ))
    }
}
