//! The proxy's Kv and Cluster services: the same API as a node, routed (see `route.rs`).

use crate::route::{Router, Target};
use crate::sessions::{LaneWrite, Lanes};
use reinado_client::watch::WatchItem;
use reinado_client::{Client, ClientError, ClientOptions};
use reinado_proto::v1::cluster_server::Cluster;
use reinado_proto::v1::kv_server::Kv;
use reinado_proto::v1::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type GrpcResult<T> = Result<Response<T>, Status>;

/// The proxy's services.
#[derive(Clone)]
pub struct ProxyApi {
    router: Router,
    /// Request ids for writes that arrive without one, so the proxy's own retries apply them once: a
    /// session per write in flight (see [`crate::sessions`]).
    lanes: Arc<Lanes>,
    attempt_timeout: Duration,
}

/// A request with a gRPC deadline for one attempt.
fn timed<T>(msg: T, budget: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(budget);
    req
}

/// Sends `msg` to `target` through the router (with retries) and answers with what the node answered.
macro_rules! forward {
    ($self:ident, $deadline:expr, $msg:expr, $target:expr, $client:ident . $method:ident) => {{
        let msg = $msg;
        #[allow(clippy::clone_on_copy)]
        let resp = $self
            .router
            .run($target, $deadline, |node, budget| {
                let req = timed(msg.clone(), budget);
                async move { node.$client().$method(req).await }
            })
            .await?;
        Ok(Response::new(resp))
    }};
}

/// Sends `msg` to `target` on the node's pipeline (with retries) and answers with what the node answered.
macro_rules! pipelined {
    ($self:ident, $deadline:expr, $msg:expr, $target:expr, $variant:ident) => {{
        use reinado_proto::v1::{
            pipeline_request::Request as Rq, pipeline_response::Response as Rs,
        };
        let msg = $msg;
        #[allow(clippy::clone_on_copy)]
        let resp = $self
            .router
            .run($target, $deadline, |node, _budget| {
                let req = Rq::$variant(msg.clone());
                async move {
                    match node.pipeline.call(req).await? {
                        Rs::$variant(r) => Ok(Response::new(r)),
                        _ => Err(Status::internal(
                            "the node answered another kind of request",
                        )),
                    }
                }
            })
            .await?;
        Ok(Response::new(resp))
    }};
}

/// A write's request id: the client's, or one of the proxy's (freed when the write is answered).
struct WriteId {
    id: RequestId,
    ours: Option<LaneWrite>,
}

impl WriteId {
    /// The write is answered.
    fn finish<T>(self, result: &Result<T, Status>) {
        if let Some(lane) = self.ours {
            lane.finish(result);
        }
    }
}

impl ProxyApi {
    /// Services over `router`.
    pub fn new(router: Router, attempt_timeout: Duration) -> Self {
        ProxyApi {
            router,
            lanes: Arc::new(Lanes::new()),
            attempt_timeout,
        }
    }

    fn write_id(&self, given: Option<RequestId>) -> WriteId {
        match given {
            Some(id) => WriteId { id, ours: None },
            None => {
                let lane = self.lanes.begin();
                WriteId {
                    id: lane.id,
                    ours: Some(lane),
                }
            }
        }
    }

    /// The Kv service.
    pub fn kv_service(&self, max_request_bytes: usize) -> kv_server::KvServer<Self> {
        kv_server::KvServer::new(self.clone()).max_decoding_message_size(max_request_bytes)
    }

    /// The Cluster service.
    pub fn cluster_service(&self) -> cluster_server::ClusterServer<Self> {
        cluster_server::ClusterServer::new(self.clone())
    }
}

/// Turns a client-library error back into the status a node would have sent.
fn to_status(e: ClientError) -> Status {
    match e {
        ClientError::InvalidArgument(m) => Status::invalid_argument(m),
        ClientError::NotFound(m) => Status::not_found(m),
        ClientError::QuotaExceeded(m) => Status::resource_exhausted(m),
        ClientError::SessionExpired(m) => {
            let mut status = Status::failed_precondition(m);
            status.metadata_mut().insert(
                reinado_client::error::REFUSAL,
                tonic::metadata::MetadataValue::from_static(reinado_client::error::SESSION_EXPIRED),
            );
            status
        }
        ClientError::Unavailable { what } => Status::unavailable(what),
        ClientError::Server { code, message } => Status::new(code, message),
        ClientError::Local(m) => Status::internal(m),
    }
}

#[tonic::async_trait]
impl Kv for ProxyApi {
    async fn put(&self, req: Request<PutRequest>) -> GrpcResult<PutResponse> {
        let deadline = self.router.deadline(req.metadata());
        let mut msg = req.into_inner();
        let id = self.write_id(msg.request_id);
        msg.request_id = Some(id.id);
        let result = async { pipelined!(self, deadline, msg, Target::Write, Put) }.await;
        id.finish(&result);
        result
    }

    async fn get(&self, req: Request<GetRequest>) -> GrpcResult<GetResponse> {
        let deadline = self.router.deadline(req.metadata());
        pipelined!(self, deadline, req.into_inner(), Target::Reader, Get)
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> GrpcResult<DeleteResponse> {
        let deadline = self.router.deadline(req.metadata());
        let mut msg = req.into_inner();
        let id = self.write_id(msg.request_id);
        msg.request_id = Some(id.id);
        let result = async { pipelined!(self, deadline, msg, Target::Write, Delete) }.await;
        id.finish(&result);
        result
    }

    async fn range(&self, req: Request<RangeRequest>) -> GrpcResult<RangeResponse> {
        let deadline = self.router.deadline(req.metadata());
        pipelined!(self, deadline, req.into_inner(), Target::Reader, Range)
    }

    async fn txn(&self, req: Request<TxnRequest>) -> GrpcResult<TxnResponse> {
        let deadline = self.router.deadline(req.metadata());
        let mut msg = req.into_inner();
        let id = self.write_id(msg.request_id);
        msg.request_id = Some(id.id);
        let result = async { pipelined!(self, deadline, msg, Target::Write, Txn) }.await;
        id.finish(&result);
        result
    }

    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    /// A watch through the proxy is served by a node, and moved to another node from the last delivered
    /// revision when its node fails: the client sees one unbroken stream.
    async fn watch(&self, req: Request<WatchRequest>) -> GrpcResult<Self::WatchStream> {
        let msg = req.into_inner();
        let opts = ClientOptions {
            attempt_timeout: self.attempt_timeout,
            ..ClientOptions::default()
        };
        let nodes = Client::new(self.router.topology().addrs(), opts).map_err(to_status)?;
        let mut items = nodes.watch(msg.key, msg.prefix, msg.start_revision);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(item) = items.recv().await {
                let out = match item {
                    Ok(WatchItem::Started { start_revision }) => Ok(WatchResponse {
                        header: Some(ResponseHeader {
                            revision: start_revision.saturating_sub(1),
                            ..ResponseHeader::default()
                        }),
                        events: Vec::new(),
                    }),
                    Ok(WatchItem::Events(events)) => Ok(WatchResponse {
                        header: None,
                        events,
                    }),
                    Ok(WatchItem::Resumed {
                        endpoint,
                        from_revision,
                    }) => {
                        tracing::info!(%endpoint, from_revision, "watch moved to another node");
                        continue;
                    }
                    Err(e) => Err(to_status(e)),
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn log_entry(&self, req: Request<LogEntryRequest>) -> GrpcResult<LogEntryResponse> {
        let deadline = self.router.deadline(req.metadata());
        let msg = req.into_inner();
        // The leader has every committed entry; a follower may not know yet that an entry committed.
        pipelined!(self, deadline, msg, Target::Leader, LogEntry)
    }
}

#[tonic::async_trait]
impl Cluster for ProxyApi {
    /// The leader's status (it alone knows every member's progress), or any node's while there is none.
    async fn status(&self, req: Request<StatusRequest>) -> GrpcResult<StatusResponse> {
        let deadline = self.router.deadline(req.metadata());
        let target = if self.router.topology().has_leader() {
            Target::Leader
        } else {
            Target::Reader
        };
        forward!(self, deadline, StatusRequest {}, target, cluster.status)
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> GrpcResult<AddMemberResponse> {
        let deadline = self.router.deadline(req.metadata());
        forward!(
            self,
            deadline,
            req.into_inner(),
            Target::Leader,
            cluster.add_member
        )
    }

    async fn remove_member(
        &self,
        req: Request<RemoveMemberRequest>,
    ) -> GrpcResult<RemoveMemberResponse> {
        let deadline = self.router.deadline(req.metadata());
        forward!(
            self,
            deadline,
            req.into_inner(),
            Target::Leader,
            cluster.remove_member
        )
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> GrpcResult<TransferLeaderResponse> {
        let deadline = self.router.deadline(req.metadata());
        forward!(
            self,
            deadline,
            req.into_inner(),
            Target::Leader,
            cluster.transfer_leader
        )
    }
}
