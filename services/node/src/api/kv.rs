//! The Kv service on a node.

use super::{NodeApi, validate};
use crate::error::NodeError;
use crate::raft_loop::Request;
use prost::Message as _;
use reinado_proto::v1::{
    Command, Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse, LogEntryRequest,
    LogEntryResponse, LogOperation, MemberChange, MemberChangeKind, MemberContext, Noop,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestId, TxnDelete, TxnPut, TxnRequest,
    TxnResponse, WatchRequest, WatchResponse, WriteOutcome, command, kv_server::Kv, log_operation,
};
use reinado_raft::{ConfChange, ConfChangeKind, Entry, EntryKind};
use tonic::{Request as GrpcRequest, Response, Status};

type GrpcResult<T> = Result<Response<T>, Status>;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl NodeApi {
    /// Proposes a write and waits until it is applied.
    pub(super) async fn write(
        &self,
        request_id: Option<RequestId>,
        op: command::Op,
        grows_by: u64,
    ) -> Result<WriteOutcome, NodeError> {
        validate::request_id(request_id.as_ref())?;
        self.require_leader()?;
        self.check_quota(grows_by)?;
        let data = Command {
            request_id,
            time_ms: now_ms(),
            op: Some(op),
        }
        .encode_to_vec();
        let span = tracing::Span::current();
        self.ask("the write to commit", |reply| Request::Write {
            data,
            span,
            reply,
        })
        .await
    }

    /// Refuses early a write that could take the store over its quota; the state machine checks exactly when
    /// it applies, this only spares the log a doomed entry.
    fn check_quota(&self, grows_by: u64) -> Result<(), NodeError> {
        let sm = self.inner.state.read().expect("state lock");
        if grows_by > 0 && sm.size_bytes() + grows_by > sm.quota_bytes() {
            return Err(NodeError::QuotaExceeded(format!(
                "database quota of {} bytes reached ({} bytes stored); delete keys or raise REINADO_QUOTA_BYTES",
                sm.quota_bytes(),
                sm.size_bytes()
            )));
        }
        Ok(())
    }

    async fn read_barrier(&self, consistency: i32) -> Result<(), NodeError> {
        match Consistency::try_from(consistency) {
            Ok(Consistency::Serializable) => Ok(()),
            Ok(Consistency::Linearizable | Consistency::Unspecified) => self.linearize().await,
            Err(_) => Err(NodeError::InvalidArgument(format!(
                "consistency {consistency} is not a known level"
            ))),
        }
    }
}

#[tonic::async_trait]
impl Kv for NodeApi {
    async fn put(&self, req: GrpcRequest<PutRequest>) -> GrpcResult<PutResponse> {
        let req = req.into_inner();
        let limits = &self.inner.limits;
        validate::key(&req.key, limits, "key")?;
        validate::value(&req.value, limits, "value")?;
        let grows_by = (req.key.len() + req.value.len()) as u64;
        let op = command::Op::Put(TxnPut {
            key: req.key,
            value: req.value,
        });
        let outcome = self.write(req.request_id, op, grows_by).await?;
        Ok(Response::new(PutResponse {
            header: Some(self.header()),
            revision: outcome.revision,
        }))
    }

    async fn get(&self, req: GrpcRequest<GetRequest>) -> GrpcResult<GetResponse> {
        let req = req.into_inner();
        validate::key(&req.key, &self.inner.limits, "key")?;
        self.read_barrier(req.consistency).await?;
        let kv = self.inner.state.read().expect("state lock").get(&req.key);
        Ok(Response::new(GetResponse {
            header: Some(self.header()),
            kv,
        }))
    }

    async fn delete(&self, req: GrpcRequest<DeleteRequest>) -> GrpcResult<DeleteResponse> {
        let req = req.into_inner();
        validate::key(&req.key, &self.inner.limits, "key")?;
        let op = command::Op::Delete(TxnDelete { key: req.key });
        let outcome = self.write(req.request_id, op, 0).await?;
        Ok(Response::new(DeleteResponse {
            header: Some(self.header()),
            deleted: outcome.deleted,
            revision: outcome.revision,
        }))
    }

    async fn range(&self, req: GrpcRequest<RangeRequest>) -> GrpcResult<RangeResponse> {
        let req = req.into_inner();
        let query = validate::range(&req, &self.inner.limits)?;
        self.read_barrier(req.consistency).await?;
        let (kvs, more) = self.inner.state.read().expect("state lock").range(&query);
        Ok(Response::new(RangeResponse {
            header: Some(self.header()),
            kvs,
            more,
        }))
    }

    async fn txn(&self, req: GrpcRequest<TxnRequest>) -> GrpcResult<TxnResponse> {
        let mut req = req.into_inner();
        validate::txn(&req, &self.inner.limits)?;
        let request_id = req.request_id.take();
        let grows_by = req
            .success
            .iter()
            .chain(&req.failure)
            .map(|op| match &op.op {
                Some(reinado_proto::v1::txn_op::Op::Put(p)) => (p.key.len() + p.value.len()) as u64,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let outcome = self
            .write(request_id, command::Op::Txn(req), grows_by)
            .await?;
        Ok(Response::new(TxnResponse {
            header: Some(self.header()),
            succeeded: outcome.succeeded,
            revision: outcome.revision,
        }))
    }

    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, req: GrpcRequest<WatchRequest>) -> GrpcResult<Self::WatchStream> {
        let req = req.into_inner();
        if !req.prefix {
            validate::key(&req.key, &self.inner.limits, "key")?;
        }
        let stream = self.start_watch(req)?;
        Ok(Response::new(stream))
    }

    async fn log_entry(&self, req: GrpcRequest<LogEntryRequest>) -> GrpcResult<LogEntryResponse> {
        let index = req.into_inner().index;
        let entry = self
            .ask("the log entry", |reply| Request::LogEntry { index, reply })
            .await?;
        Ok(Response::new(LogEntryResponse {
            header: Some(self.header()),
            term: entry.term,
            index: entry.index,
            operation: Some(log_operation(&entry)),
        }))
    }
}

/// What a committed entry did, for `LogEntry`.
fn log_operation(entry: &Entry) -> LogOperation {
    let kind = match entry.kind {
        EntryKind::Normal if entry.data.is_empty() => log_operation::Kind::Noop(Noop {}),
        EntryKind::Normal => match Command::decode(entry.data.as_slice()) {
            Ok(cmd) => log_operation::Kind::Command(cmd),
            Err(_) => log_operation::Kind::Noop(Noop {}),
        },
        EntryKind::ConfChange => {
            let cc = ConfChange::decode(&entry.data);
            let kind = match cc.as_ref().map(|c| c.kind) {
                Some(ConfChangeKind::AddLearner) => MemberChangeKind::AddLearner,
                Some(ConfChangeKind::AddVoter) => MemberChangeKind::AddVoter,
                Some(ConfChangeKind::Remove) => MemberChangeKind::Remove,
                None => MemberChangeKind::Unspecified,
            };
            log_operation::Kind::MemberChange(MemberChange {
                kind: kind as i32,
                id: cc.as_ref().map_or(0, |c| c.node_id),
                context: cc.and_then(|c| MemberContext::decode(c.context.as_slice()).ok()),
            })
        }
    };
    LogOperation { kind: Some(kind) }
}
