//! etcd's Watch stream on a node, driven with the generated client: what etcdctl does not exercise (several
//! watches on one stream, ids chosen by the client and by the server, a duplicate id, filters, prev_kv, cancel,
//! a progress request, a watch from a compacted revision).

use reinado_client::harness::LocalCluster;
use reinado_proto::etcd::etcdserverpb::{
    CompactionRequest, PutRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse, kv_client::KvClient, watch_client::WatchClient,
    watch_create_request::FilterType, watch_request::RequestUnion,
};
use reinado_proto::etcd::mvccpb::event::EventType;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl Stream {
    async fn open(channel: Channel) -> Stream {
        let (requests, rx) = mpsc::channel(16);
        let responses = WatchClient::new(channel)
            .watch(ReceiverStream::new(rx))
            .await
            .expect("a watch stream")
            .into_inner();
        Stream {
            requests,
            responses,
        }
    }

    async fn send(&self, request: RequestUnion) {
        let req = WatchRequest {
            request_union: Some(request),
        };
        self.requests.send(req).await.expect("the stream is open");
    }

    async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a response in time")
            .expect("no error")
            .expect("the stream goes on")
    }
}

fn watch_key(key: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.to_vec(),
        ..WatchCreateRequest::default()
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &[u8], value: &[u8]) -> i64 {
    let req = PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    };
    kv.put(req)
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_carries_many_watches() {
    let mut cluster = LocalCluster::start(1, &[]);
    cluster.wait_leader(WAIT).await;
    let url = format!("http://{}", cluster.nodes[&1].client_addr);
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut kv = KvClient::new(channel.clone());
    let mut stream = Stream::open(channel).await;

    // The server picks 0 for the first watch; the client picks 7 for the second, which wants deletes only
    // and previous values.
    stream.create(watch_key(b"a")).await;
    let first = stream.next().await;
    assert!(first.created && !first.canceled);
    assert_eq!(first.watch_id, 0);
    stream
        .create(WatchCreateRequest {
            watch_id: 7,
            prev_kv: true,
            filters: vec![FilterType::Noput as i32],
            ..watch_key(b"a")
        })
        .await;
    assert_eq!(stream.next().await.watch_id, 7);
    // A duplicate id is refused.
    stream
        .create(WatchCreateRequest {
            watch_id: 7,
            ..watch_key(b"b")
        })
        .await;
    let duplicate = stream.next().await;
    assert!(duplicate.created && duplicate.canceled, "{duplicate:?}");
    assert!(duplicate.cancel_reason.contains("duplicate watch ID"));

    let put_rev = put(&mut kv, b"a", b"1").await;
    let seen = stream.next().await;
    assert_eq!(seen.watch_id, 0, "watch 7 filters puts out: {seen:?}");
    assert_eq!(seen.events.len(), 1);
    assert_eq!(seen.events[0].kv.as_ref().unwrap().mod_revision, put_rev);
    assert_eq!(seen.header.unwrap().revision, put_rev);

    let req = reinado_proto::etcd::etcdserverpb::DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    kv.delete_range(req).await.unwrap();
    let mut deletes = [stream.next().await, stream.next().await];
    deletes.sort_by_key(|r| r.watch_id);
    assert_eq!(deletes[0].events[0].r#type, EventType::Delete as i32);
    assert!(
        deletes[0].events[0].prev_kv.is_none(),
        "watch 0 did not ask for it"
    );
    assert_eq!(deletes[1].watch_id, 7);
    let prev = deletes[1].events[0].prev_kv.as_ref().expect("prev_kv");
    assert_eq!(prev.value, b"1");

    // Cancel watch 0; a progress request then answers for the stream.
    stream
        .send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 0,
        }))
        .await;
    let canceled = stream.next().await;
    assert!(canceled.canceled && canceled.watch_id == 0, "{canceled:?}");
    let last = put(&mut kv, b"a", b"2").await;
    stream
        .send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = stream.next().await;
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.unwrap().revision, last);

    // A watch from below the compaction is created, then canceled with the compaction revision.
    let compact = CompactionRequest {
        revision: last,
        physical: false,
    };
    kv.compact(compact).await.unwrap();
    stream
        .create(WatchCreateRequest {
            start_revision: put_rev,
            ..watch_key(b"a")
        })
        .await;
    let created = stream.next().await;
    assert!(created.created && !created.canceled, "{created:?}");
    let compacted = stream.next().await;
    assert!(compacted.canceled, "{compacted:?}");
    assert_eq!(compacted.watch_id, created.watch_id);
    assert!(compacted.compact_revision >= last, "{compacted:?}");
}
