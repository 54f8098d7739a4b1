//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact.

use super::{EtcdApi, GrpcResult, Route, etcd_error, validate};
use crate::api::validate::RANGE_MAX_BYTES;
use crate::error::NodeError;
use reinado_proto::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    kv_client::KvClient, kv_server::Kv, request_op, response_op,
};
use reinado_proto::v1::{Compact, command};
use tonic::{Request as GrpcRequest, Response};

/// A Txn of the one operation `request`, as Put and DeleteRange travel through the log.
fn single(request: request_op::Request) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![RequestOp {
            request: Some(request),
        }],
        failure: Vec::new(),
    }
}

/// The answer to the one operation of a [`single`] Txn.
fn only_response(resp: TxnResponse) -> response_op::Response {
    resp.responses
        .into_iter()
        .next()
        .and_then(|r| r.response)
        .expect("an applied one-operation Txn answers its operation")
}

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(&self, req: GrpcRequest<RangeRequest>) -> GrpcResult<RangeResponse> {
        let mut req = req.into_inner();
        let limits = &self.api.inner.limits;
        validate::range(&req, limits)?;
        // Reinado's own bound on keys per answer: beyond it the answer says `more`, as a client limit would.
        let cap = i64::try_from(limits.range_limit).unwrap_or(i64::MAX);
        if req.limit <= 0 || req.limit > cap {
            req.limit = cap;
        }
        if !req.serializable {
            self.api.linearize().await.map_err(etcd_error)?;
        }
        let (mut resp, revision) = {
            let sm = self.state();
            let resp = sm
                .etcd_range(&req, RANGE_MAX_BYTES)
                .map_err(NodeError::from)?;
            (resp, sm.revision())
        };
        resp.header = Some(self.header(revision));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: GrpcRequest<PutRequest>) -> GrpcResult<PutResponse> {
        validate::put(req.get_ref(), &self.api.inner.limits)?;
        if let Route::Leader(addr) = self.route(&req)? {
            return self
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    KvClient::new(ch).put(r).await
                })
                .await;
        }
        let txn = single(request_op::Request::RequestPut(req.into_inner()));
        let (resp, revision) = self.propose_txn(txn).await?;
        let response_op::Response::ResponsePut(mut put) = only_response(resp) else {
            panic!("an applied Put answers with a ResponsePut");
        };
        put.header = Some(self.header(revision));
        Ok(Response::new(put))
    }

    async fn delete_range(
        &self,
        req: GrpcRequest<DeleteRangeRequest>,
    ) -> GrpcResult<DeleteRangeResponse> {
        validate::delete_range(req.get_ref(), &self.api.inner.limits)?;
        if let Route::Leader(addr) = self.route(&req)? {
            return self
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    KvClient::new(ch).delete_range(r).await
                })
                .await;
        }
        let txn = single(request_op::Request::RequestDeleteRange(req.into_inner()));
        let (resp, revision) = self.propose_txn(txn).await?;
        let response_op::Response::ResponseDeleteRange(mut deleted) = only_response(resp) else {
            panic!("an applied DeleteRange answers with a ResponseDeleteRange");
        };
        deleted.header = Some(self.header(revision));
        Ok(Response::new(deleted))
    }

    /// Every Txn goes through the log, read-only ones too: one path, applied where all writes are.
    async fn txn(&self, req: GrpcRequest<TxnRequest>) -> GrpcResult<TxnResponse> {
        validate::txn(req.get_ref(), &self.api.inner.limits)?;
        if let Route::Leader(addr) = self.route(&req)? {
            return self
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    KvClient::new(ch).txn(r).await
                })
                .await;
        }
        let (mut resp, revision) = self.propose_txn(req.into_inner()).await?;
        resp.header = Some(self.header(revision));
        Ok(Response::new(resp))
    }

    /// Compacts the history (`physical` changes nothing: the compaction is applied when it commits).
    async fn compact(&self, req: GrpcRequest<CompactionRequest>) -> GrpcResult<CompactionResponse> {
        if let Route::Leader(addr) = self.route(&req)? {
            return self
                .forward(&addr, req.into_inner(), |ch, r| async move {
                    KvClient::new(ch).compact(r).await
                })
                .await;
        }
        // A negative revision is below any compaction: the state machine refuses it as compacted.
        let revision = u64::try_from(req.into_inner().revision).unwrap_or(0);
        let outcome = self
            .propose(command::Op::Compact(Compact { revision }), 0)
            .await?;
        Ok(Response::new(CompactionResponse {
            header: Some(self.header(outcome.revision)),
        }))
    }
}
