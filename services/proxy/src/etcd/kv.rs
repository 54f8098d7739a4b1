//! etcd's KV service (Range to a serving follower, writes to the leader) and Watch (a stream on one node, a
//! follower preferred).

use super::stream::Relayed;
use super::{EtcdProxy, GrpcResult, forward_service, node_client};
use crate::route::Target;
use reinado_proto::etcd::etcdserverpb::kv_client::KvClient;
use reinado_proto::etcd::etcdserverpb::watch_client::WatchClient;
use reinado_proto::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
    kv_server::Kv, watch_server::Watch,
};
use tonic::{Request, Streaming};

forward_service! {
    Kv, KvClient {
        /// A follower serves it: at once if serializable, after a ReadIndex from the leader otherwise.
        range(RangeRequest) -> RangeResponse => Reader, Read;
        put(PutRequest) -> PutResponse => Leader, Write;
        delete_range(DeleteRangeRequest) -> DeleteRangeResponse => Leader, Write;
        txn(TxnRequest) -> TxnResponse => Leader, Write;
        compact(CompactionRequest) -> CompactionResponse => Leader, Write;
    }
    extra {}
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
