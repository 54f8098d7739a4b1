//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact.

use super::{EtcdApi, GrpcResult, etcd_error, validate};
use crate::api::validate::RANGE_MAX_BYTES;
use crate::error::NodeError;
use reinado_proto::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    kv_client::KvClient, kv_server::Kv, request_op, response_op,
};
use reinado_proto::v1::{Compact, command};
use tonic::{Request as GrpcRequest, Response};

impl EtcdApi {
    /// Proposes one Put or DeleteRange, as etcd writes travel through the log: a Txn of that one operation.
    /// Its answer and the revision it was applied at.
    pub(super) async fn propose_one(
        &self,
        request: request_op::Request,
    ) -> Result<(response_op::Response, u64), NodeError> {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp {
                request: Some(request),
            }],
            failure: Vec::new(),
        };
        let (resp, revision) = self.propose_txn(txn).await?;
        let response = resp
            .responses
            .into_iter()
            .next()
            .and_then(|r| r.response)
            .expect("an applied one-operation Txn answers its operation");
        Ok((response, revision))
    }
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
        forward_unless_leader!(self, req, KvClient::put);
        let request = request_op::Request::RequestPut(req.into_inner());
        let (response, revision) = self.propose_one(request).await?;
        let response_op::Response::ResponsePut(mut put) = response else {
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
        forward_unless_leader!(self, req, KvClient::delete_range);
        let request = request_op::Request::RequestDeleteRange(req.into_inner());
        let (response, revision) = self.propose_one(request).await?;
        let response_op::Response::ResponseDeleteRange(mut deleted) = response else {
            panic!("an applied DeleteRange answers with a ResponseDeleteRange");
        };
        deleted.header = Some(self.header(revision));
        Ok(Response::new(deleted))
    }

    /// Every Txn goes through the log, read-only ones too: one path, applied where all writes are.
    async fn txn(&self, req: GrpcRequest<TxnRequest>) -> GrpcResult<TxnResponse> {
        validate::txn(req.get_ref(), &self.api.inner.limits)?;
        forward_unless_leader!(self, req, KvClient::txn);
        let (mut resp, revision) = self.propose_txn(req.into_inner()).await?;
        resp.header = Some(self.header(revision));
        Ok(Response::new(resp))
    }

    /// Compacts the history (`physical` changes nothing: the compaction is applied when it commits).
    async fn compact(&self, req: GrpcRequest<CompactionRequest>) -> GrpcResult<CompactionResponse> {
        forward_unless_leader!(self, req, KvClient::compact);
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
