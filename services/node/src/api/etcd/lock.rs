//! etcd's `Lock` service (`v3lockpb.Lock`), served by the cluster: a lock is held by the contender whose key
//! under `NAME/` was created first (see `recipes`). Lock waits for the turn and answers the owned key; its
//! create revision is the fencing token. Unlock deletes the key.

use super::recipes::check_name;
use super::{EtcdApi, GrpcResult, etcd_error};
use crate::error::NodeError;
use crate::state::recipes::{contenders, owned_key};
use reinado_proto::etcd::etcdserverpb::{DeleteRangeRequest, request_op};
use reinado_proto::etcd::v3lockpb::{
    LockRequest, LockResponse, UnlockRequest, UnlockResponse, lock_client::LockClient,
    lock_server::Lock,
};
use tonic::{Request, Response};

#[tonic::async_trait]
impl Lock for EtcdApi {
    async fn lock(&self, req: Request<LockRequest>) -> GrpcResult<LockResponse> {
        check_name(&req.get_ref().name)?;
        if req.get_ref().lease == 0 {
            return Err(NodeError::InvalidArgument(
                "a lock is held under a lease: grant one and pass its id".into(),
            )
            .into());
        }
        forward_unless_leader!(self, req, LockClient::lock, false);
        let LockRequest { name, lease } = req.into_inner();
        let key = owned_key(&name, lease);
        let (rev, _) = self.claim(&key, b"", lease).await.map_err(etcd_error)?;
        self.wait_turn(&contenders(&name), &key, rev).await?;
        self.confirm_owned(&key).await.map_err(etcd_error)?;
        Ok(Response::new(LockResponse {
            header: Some(self.current_header()),
            key,
        }))
    }

    async fn unlock(&self, req: Request<UnlockRequest>) -> GrpcResult<UnlockResponse> {
        forward_unless_leader!(self, req, LockClient::unlock);
        let key = req.into_inner().key;
        check_name(&key)?;
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key,
            ..DeleteRangeRequest::default()
        });
        let (_, revision) = self.propose_one(delete).await?;
        Ok(Response::new(UnlockResponse {
            header: Some(self.header(revision)),
        }))
    }
}
