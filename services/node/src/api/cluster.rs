//! The Cluster and Fault services on a node.

use super::NodeApi;
use crate::error::NodeError;
use crate::raft_loop::{MemberInfo, Request, StatusReport};
use reinado_proto::v1::{
    AddMemberRequest, AddMemberResponse, CrashRequest, FaultResponse, HealRequest, IsolateRequest,
    Member, MemberContext, RemoveMemberRequest, RemoveMemberResponse, Role, StatusRequest,
    StatusResponse, StepDownRequest, TransferLeaderRequest, TransferLeaderResponse,
    cluster_server::Cluster, fault_server::Fault,
};
use std::time::Duration;
use tonic::{Request as GrpcRequest, Response, Status};
use tracing::warn;

type GrpcResult<T> = Result<Response<T>, Status>;

fn member(m: MemberInfo) -> Member {
    Member {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
        voter: m.voter,
        match_index: m.match_index,
        lag: m.lag,
        active: m.active,
    }
}

fn role(report: &StatusReport) -> Role {
    if !report.member {
        return Role::None;
    }
    if report.learner {
        return Role::Learner;
    }
    match report.role {
        reinado_raft::Role::Follower => Role::Follower,
        reinado_raft::Role::PreCandidate => Role::PreCandidate,
        reinado_raft::Role::Candidate => Role::Candidate,
        reinado_raft::Role::Leader => Role::Leader,
    }
}

fn check_addr(field: &str, addr: &str, required: bool) -> Result<(), NodeError> {
    if addr.is_empty() && !required {
        return Ok(());
    }
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidArgument(format!(
            "{field} `{addr}` is not host:port"
        )))
    }
}

#[tonic::async_trait]
impl Cluster for NodeApi {
    async fn status(&self, _: GrpcRequest<StatusRequest>) -> GrpcResult<StatusResponse> {
        let report = self
            .ask("the node's status", |reply| Request::Status { reply })
            .await?;
        let serving = self.inner.view.borrow().serving;
        Ok(Response::new(StatusResponse {
            header: Some(self.header()),
            id: report.id,
            role: role(&report) as i32,
            term: report.term,
            leader_id: report.leader.unwrap_or(0),
            leader_addr: report.leader_addr.clone(),
            commit: report.commit,
            applied: report.applied,
            last_index: report.last_index,
            snapshot_index: report.snapshot_index,
            members: report.members.into_iter().map(member).collect(),
            cluster_id: self.inner.cluster_id.clone(),
            serving,
            db_size_bytes: report.db_size_bytes,
            quota_bytes: report.quota_bytes,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn add_member(
        &self,
        req: GrpcRequest<AddMemberRequest>,
    ) -> GrpcResult<AddMemberResponse> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(NodeError::InvalidArgument("id must not be 0".into()).into());
        }
        check_addr("peer_addr", &req.peer_addr, true)?;
        check_addr("client_addr", &req.client_addr, false)?;
        self.require_leader()?;
        let ctx = MemberContext {
            peer_addr: req.peer_addr,
            client_addr: req.client_addr,
            stay_learner: req.learner,
            started: false,
        };
        let id = req.id;
        let members = self
            .ask("the membership change to commit", |reply| {
                Request::AddMember { id, ctx, reply }
            })
            .await?;
        Ok(Response::new(AddMemberResponse {
            header: Some(self.header()),
            members: members.into_iter().map(member).collect(),
            cluster_id: self.inner.cluster_id.clone(),
        }))
    }

    async fn remove_member(
        &self,
        req: GrpcRequest<RemoveMemberRequest>,
    ) -> GrpcResult<RemoveMemberResponse> {
        let id = req.into_inner().id;
        if id == 0 {
            return Err(NodeError::InvalidArgument("id must not be 0".into()).into());
        }
        self.require_leader()?;
        let members = self
            .ask("the membership change to commit", |reply| {
                Request::RemoveMember { id, reply }
            })
            .await?;
        Ok(Response::new(RemoveMemberResponse {
            header: Some(self.header()),
            members: members.into_iter().map(member).collect(),
        }))
    }

    async fn transfer_leader(
        &self,
        req: GrpcRequest<TransferLeaderRequest>,
    ) -> GrpcResult<TransferLeaderResponse> {
        let target = Some(req.into_inner().target).filter(|&t| t != 0);
        self.require_leader()?;
        let leader = self
            .ask("the leadership transfer", |reply| Request::TransferLeader {
                target,
                reply,
            })
            .await?;
        Ok(Response::new(TransferLeaderResponse {
            header: Some(self.header()),
            leader_id: leader,
        }))
    }
}

impl NodeApi {
    fn require_faults(&self) -> Result<(), NodeError> {
        if self.inner.fault_injection {
            Ok(())
        } else {
            Err(NodeError::FaultInjectionDisabled)
        }
    }
}

fn done(message: String) -> GrpcResult<FaultResponse> {
    Ok(Response::new(FaultResponse { message }))
}

#[tonic::async_trait]
impl Fault for NodeApi {
    async fn step_down(&self, _: GrpcRequest<StepDownRequest>) -> GrpcResult<FaultResponse> {
        self.require_faults()?;
        let message = self
            .ask("the step-down", |reply| Request::StepDown { reply })
            .await?;
        done(message)
    }

    async fn isolate(&self, req: GrpcRequest<IsolateRequest>) -> GrpcResult<FaultResponse> {
        self.require_faults()?;
        let req = req.into_inner();
        let duration = (req.duration_ms > 0).then(|| Duration::from_millis(req.duration_ms));
        self.inner.isolation.isolate(&req.peers, duration);
        let whom = if req.peers.is_empty() {
            "every peer".to_string()
        } else {
            format!("peers {:?}", req.peers)
        };
        let until = duration.map_or("until healed".to_string(), |d| format!("for {d:?}"));
        warn!("isolated from {whom} {until} (Fault API)");
        done(format!(
            "node {} isolated from {whom} {until}",
            self.inner.id
        ))
    }

    async fn heal(&self, _: GrpcRequest<HealRequest>) -> GrpcResult<FaultResponse> {
        self.require_faults()?;
        self.inner.isolation.heal();
        warn!("isolation healed (Fault API)");
        done(format!("node {} healed", self.inner.id))
    }

    async fn crash(&self, _: GrpcRequest<CrashRequest>) -> GrpcResult<FaultResponse> {
        self.require_faults()?;
        warn!("crashing on request (Fault API): exiting without flushing anything");
        // Answer first, then exit as abruptly as kill -9: no destructor, no flush, no hand-over.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::process::exit(137);
        });
        done(format!("node {} is crashing", self.inner.id))
    }
}
