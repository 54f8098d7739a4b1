//! etcd's `Election` service (`v3electionpb.Election`), served by the cluster: the leader of an election is
//! the campaigner whose key under `NAME/` was created first (see `recipes`); its value is the proposal.
//! Campaign waits to lead; Proclaim changes the leader's value; Leader reads it; Observe streams every
//! change of leader or value; Resign deletes the leader's key.

use super::recipes::check_name;
use super::{EtcdApi, GrpcResult, etcd_error};
use crate::error::NodeError;
use crate::state::recipes::{contenders, contenders_end, created_at, owned_key, put_op};
use reinado_proto::etcd::etcdserverpb::{DeleteRangeRequest, RequestOp, TxnRequest, request_op};
use reinado_proto::etcd::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse, election_client::ElectionClient,
    election_server::Election,
};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// etcd's answer when no campaigner leads.
const NO_LEADER: &str = "election: no leader";
/// etcd's answer to a proclamation by a key that does not lead.
const NOT_LEADER: &str = "election: not leader";

/// The stream of leaders `Observe` answers.
pub type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

impl EtcdApi {
    /// Runs `ops` if `leader` still holds its key (created at its revision); true if it did.
    async fn as_leader(&self, leader: &LeaderKey, ops: Vec<RequestOp>) -> Result<bool, NodeError> {
        let txn = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: ops,
            failure: Vec::new(),
        };
        let (resp, _) = self.propose_txn(txn).await.map_err(etcd_error)?;
        Ok(resp.succeeded)
    }
}

#[tonic::async_trait]
impl Election for EtcdApi {
    async fn campaign(&self, req: Request<CampaignRequest>) -> GrpcResult<CampaignResponse> {
        check_name(&req.get_ref().name)?;
        if req.get_ref().lease == 0 {
            return Err(NodeError::InvalidArgument(
                "a campaign runs under a lease: grant one and pass its id".into(),
            )
            .into());
        }
        forward_unless_leader!(self, req, ElectionClient::campaign, false);
        let CampaignRequest { name, lease, value } = req.into_inner();
        let key = owned_key(&name, lease);
        let (rev, existing) = self.claim(&key, &value, lease).await.map_err(etcd_error)?;
        let leader = LeaderKey {
            name: name.clone(),
            key: key.clone(),
            rev,
            lease,
        };
        // Campaigning again with the key of an earlier campaign: it now proposes this value.
        if existing.is_some_and(|v| v != value) {
            self.as_leader(&leader, vec![put_op(&key, &value, lease)])
                .await?;
        }
        self.wait_turn(&contenders(&name), &key, rev).await?;
        self.confirm_owned(&key).await.map_err(etcd_error)?;
        Ok(Response::new(CampaignResponse {
            header: Some(self.current_header()),
            leader: Some(leader),
        }))
    }

    async fn proclaim(&self, req: Request<ProclaimRequest>) -> GrpcResult<ProclaimResponse> {
        forward_unless_leader!(self, req, ElectionClient::proclaim);
        let ProclaimRequest { leader, value } = req.into_inner();
        let leader = leader.ok_or_else(|| NodeError::InvalidArgument(NOT_LEADER.into()))?;
        let put = put_op(&leader.key, &value, leader.lease);
        if !self.as_leader(&leader, vec![put]).await? {
            return Err(NodeError::FailedPrecondition(NOT_LEADER.into()).into());
        }
        Ok(Response::new(ProclaimResponse {
            header: Some(self.current_header()),
        }))
    }

    async fn leader(&self, req: Request<LeaderRequest>) -> GrpcResult<LeaderResponse> {
        let name = req.into_inner().name;
        check_name(&name)?;
        self.api.linearize().await.map_err(etcd_error)?;
        let kv = self.state().first_created(&contenders(&name));
        match kv {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: Some(self.current_header()),
                kv: Some(kv),
            })),
            None => Err(Status::unknown(NO_LEADER)),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, req: Request<LeaderRequest>) -> GrpcResult<Self::ObserveStream> {
        let name = req.into_inner().name;
        check_name(&name)?;
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let prefix = contenders(&name);
            let end = contenders_end(&prefix);
            let mut applied = api.api.inner.applied.clone();
            let mut shutdown = api.api.inner.shutdown.clone();
            let mut shown: Option<(Vec<u8>, i64)> = None;
            let mut next = 0;
            loop {
                let answer = {
                    let sm = api.state();
                    let touched = next == 0
                        || sm
                            .etcd_events(next, &prefix, &end, 256)
                            .map_or(true, |(events, _)| !events.is_empty());
                    next = sm.revision() + 1;
                    let leader = touched.then(|| sm.first_created(&prefix)).flatten();
                    leader
                        .filter(|kv| shown.as_ref() != Some(&(kv.key.clone(), kv.mod_revision)))
                        .map(|kv| {
                            shown = Some((kv.key.clone(), kv.mod_revision));
                            LeaderResponse {
                                header: Some(api.header(sm.revision())),
                                kv: Some(kv),
                            }
                        })
                };
                if let Some(answer) = answer
                    && tx.send(Ok(answer)).await.is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(&self, req: Request<ResignRequest>) -> GrpcResult<ResignResponse> {
        forward_unless_leader!(self, req, ElectionClient::resign);
        let Some(leader) = req.into_inner().leader else {
            return Err(NodeError::InvalidArgument(NOT_LEADER.into()).into());
        };
        let delete = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: leader.key.clone(),
                    ..DeleteRangeRequest::default()
                },
            )),
        };
        self.as_leader(&leader, vec![delete]).await?;
        Ok(Response::new(ResignResponse {
            header: Some(self.current_header()),
        }))
    }
}
