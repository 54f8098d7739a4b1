//! etcd's `Lease` service on a node: grant and revoke go through the log; keep-alive and time-to-live ask
//! the leader's lease clock (`replica::lessor`), and are answered only once a read index confirmed the
//! leadership after the renewal. A follower forwards them to the leader (a keep-alive stream as a whole).

use super::{EtcdApi, Route};
use crate::error::NodeError;
use reinado_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use reinado_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};
use reinado_proto::v1::{LeaseGrant, LeaseRevoke, command};
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// etcd's largest TTL, in seconds.
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;

/// The keep-alive stream's answers.
pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

impl EtcdApi {
    /// Renews lease `id` and confirms the leadership after it: its TTL, 0 if it does not exist.
    async fn keep_alive_once(&self, id: i64) -> Result<i64, NodeError> {
        let renewed = self
            .api
            .ask("the leader's lease clock", |reply| {
                crate::raft_loop::Request::LeaseKeepAlive { id, reply }
            })
            .await;
        match renewed {
            Ok(ttl) => {
                self.api.linearize().await?;
                Ok(ttl)
            }
            Err(NodeError::NotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl Lease for EtcdApi {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        forward_unless_leader!(self, req, LeaseClient::lease_grant);
        let req = req.into_inner();
        if req.ttl > MAX_LEASE_TTL_S {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        if req.id < 0 {
            return Err(NodeError::InvalidArgument(format!(
                "lease id {} is negative; ids are positive (0 lets the cluster choose)",
                req.id
            ))
            .into());
        }
        // etcd's minimum: a lease outlives the election that a leader's loss starts.
        let ttl = req.ttl.max(self.api.inner.min_lease_ttl_s);
        let op = command::Op::LeaseGrant(LeaseGrant {
            id: req.id,
            ttl_s: ttl,
        });
        let outcome = self.propose(op, 0).await?;
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.header(outcome.revision)),
            id: outcome.lease_id,
            ttl: outcome.lease_ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        forward_unless_leader!(self, req, LeaseClient::lease_revoke);
        let id = req.into_inner().id;
        let op = command::Op::LeaseRevoke(LeaseRevoke {
            ids: vec![id],
            expired: false,
        });
        let outcome = self.propose(op, 0).await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.header(outcome.revision)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        if let Route::Leader(addr) = self.route(&req)? {
            // The whole stream goes to the leader; if leadership moves, it ends and the client opens another.
            let renewals = req.into_inner().map_while(Result::ok);
            let answers = self
                .forward(&addr, renewals, false, |ch, r| async move {
                    LeaseClient::new(ch).lease_keep_alive(r).await
                })
                .await?;
            return Ok(Response::new(Box::pin(answers.into_inner())));
        }
        let mut requests = req.into_inner();
        let api = self.clone();
        // One renewal at a time per stream, answers through a small channel: a client that stops reading
        // stops its renewals.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(next) = requests.next().await {
                let answer = match next {
                    Ok(req) => {
                        api.keep_alive_once(req.id)
                            .await
                            .map(|ttl| LeaseKeepAliveResponse {
                                header: Some(api.current_header()),
                                id: req.id,
                                ttl,
                            })
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let failed = answer.is_err();
                if tx.send(answer.map_err(Status::from)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        forward_unless_leader!(self, req, LeaseClient::lease_time_to_live);
        let req = req.into_inner();
        let id = req.id;
        let asked = self
            .api
            .ask("the leader's lease clock", |reply| {
                crate::raft_loop::Request::LeaseTimeToLive {
                    id,
                    keys: req.keys,
                    reply,
                }
            })
            .await;
        let resp = match asked {
            Ok(ttl) => {
                self.api.linearize().await?;
                LeaseTimeToLiveResponse {
                    header: Some(self.current_header()),
                    id,
                    ttl: ttl.remaining_s,
                    granted_ttl: ttl.granted_s,
                    keys: ttl.keys,
                }
            }
            // etcd answers an unknown lease with TTL -1, not an error.
            Err(NodeError::NotFound(_)) => LeaseTimeToLiveResponse {
                header: Some(self.current_header()),
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(super::etcd_error(e).into()),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.api.linearize().await.map_err(super::etcd_error)?;
        let leases = self
            .state()
            .leases()
            .iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.current_header()),
            leases,
        }))
    }
}
