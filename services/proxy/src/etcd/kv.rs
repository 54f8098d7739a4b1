//! etcd's KV service (Range to a serving follower, writes to the leader) and Watch (a stream on one node, a
//! follower preferred).

use super::route::Kind;
use super::stream::Relayed;
use super::{EtcdProxy, GrpcResult, node_client};
use crate::route::Target;
use reinado_proto::etcd::etcdserverpb::kv_client::KvClient;
use reinado_proto::etcd::etcdserverpb::watch_client::WatchClient;
use reinado_proto::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
    kv_server::Kv, watch_server::Watch,
};
use tonic::{Request, Streaming};

#[tonic::async_trait]
impl Kv for EtcdProxy {
    /// A follower serves it: at once if serializable, after a ReadIndex from the leader otherwise.
    async fn range(&self, req: Request<RangeRequest>) -> GrpcResult<RangeResponse> {
        self.unary(Target::Reader, Kind::Read, req, |ch, r| async move {
            node_client!(KvClient, ch).range(r).await
        })
        .await
    }

    async fn put(&self, req: Request<PutRequest>) -> GrpcResult<PutResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(KvClient, ch).put(r).await
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> GrpcResult<DeleteRangeResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(KvClient, ch).delete_range(r).await
        })
        .await
    }

    async fn txn(&self, req: Request<TxnRequest>) -> GrpcResult<TxnResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(KvClient, ch).txn(r).await
        })
        .await
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> GrpcResult<CompactionResponse> {
        self.unary(Target::Leader, Kind::Write, req, |ch, r| async move {
            node_client!(KvClient, ch).compact(r).await
        })
        .await
    }
}

#[tonic::async_trait]
impl Watch for EtcdProxy {
    type WatchStream = Relayed<WatchResponse>;

    /// The stream goes to one node; when that node goes away it ends with UNAVAILABLE, and etcd's clients
    /// open the watches again from the last revision they saw.
    async fn watch(&self, req: Request<Streaming<WatchRequest>>) -> GrpcResult<Self::WatchStream> {
        let (metadata, _, inbound) = req.into_parts();
        self.route
            .relay(
                Target::Reader,
                &metadata,
                inbound,
                |node, to_node| async move {
                    node_client!(WatchClient, node.traced())
                        .watch(to_node)
                        .await
                },
            )
            .await
    }
}
