//! The Pipeline service: many Kv requests on one stream (what proxies use). Each request is served by the same
//! handler as its unary call, concurrently with the others, and answered by id as soon as it is done.

use super::NodeApi;
use reinado_proto::v1::kv_server::Kv;
use reinado_proto::v1::pipeline_server::Pipeline;
use reinado_proto::v1::{PipelineRequest, PipelineResponse, pipeline_request, pipeline_response};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Requests of one stream being served at once; more wait (and so does the sender, through flow control).
const MAX_IN_FLIGHT: usize = 4096;

#[tonic::async_trait]
impl Pipeline for NodeApi {
    type PipelineStream = ReceiverStream<Result<PipelineResponse, Status>>;

    async fn pipeline(
        &self,
        req: Request<Streaming<PipelineRequest>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let api = self.clone();
        let mut shutdown = self.inner.shutdown.clone();
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = incoming.next() => m,
                    _ = shutdown.wait_for(|stop| *stop) => None,
                };
                let Some(Ok(msg)) = msg else { break };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (api, tx) = (api.clone(), tx.clone());
                tokio::spawn(async move {
                    let resp = api.serve_pipelined(msg).await;
                    drop(slot);
                    let _ = tx.send(Ok(resp)).await;
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl NodeApi {
    async fn serve_pipelined(&self, msg: PipelineRequest) -> PipelineResponse {
        use pipeline_request::Request as Rq;
        use pipeline_response::Response as Rs;
        let id = msg.id;
        let Some(request) = msg.request else {
            return failure(
                id,
                Status::invalid_argument("a pipeline request must carry a request"),
            );
        };
        let path = match &request {
            Rq::Put(_) => "/reinado.v1.Kv/Put",
            Rq::Get(_) => "/reinado.v1.Kv/Get",
            Rq::Delete(_) => "/reinado.v1.Kv/Delete",
            Rq::Range(_) => "/reinado.v1.Kv/Range",
            Rq::Txn(_) => "/reinado.v1.Kv/Txn",
            Rq::LogEntry(_) => "/reinado.v1.Kv/LogEntry",
        };
        let span = reinado_client::telemetry::pipelined_span(path, &msg.traceparent);
        let served = async {
            Ok::<_, Status>(match request {
                Rq::Put(r) => Rs::Put(Kv::put(self, Request::new(r)).await?.into_inner()),
                Rq::Get(r) => Rs::Get(Kv::get(self, Request::new(r)).await?.into_inner()),
                Rq::Delete(r) => Rs::Delete(Kv::delete(self, Request::new(r)).await?.into_inner()),
                Rq::Range(r) => Rs::Range(Kv::range(self, Request::new(r)).await?.into_inner()),
                Rq::Txn(r) => Rs::Txn(Kv::txn(self, Request::new(r)).await?.into_inner()),
                Rq::LogEntry(r) => {
                    Rs::LogEntry(Kv::log_entry(self, Request::new(r)).await?.into_inner())
                }
            })
        }
        .instrument(span)
        .await;
        match served {
            Ok(response) => PipelineResponse {
                id,
                response: Some(response),
                ..PipelineResponse::default()
            },
            Err(status) => failure(id, status),
        }
    }
}

/// The failure of request `id`, with the redirect a unary call carries in metadata.
fn failure(id: u64, status: Status) -> PipelineResponse {
    let md = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    PipelineResponse {
        id,
        code: status.code() as i32,
        message: status.message().to_string(),
        leader_id: md(crate::error::LEADER_ID).parse().unwrap_or(0),
        leader_addr: md(crate::error::LEADER_ADDR),
        refusal: md(crate::error::REFUSAL),
        response: None,
    }
}
