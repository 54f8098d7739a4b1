//! Our etcd v3 protocol definitions (`proto/etcd/`, [`reinado_proto::etcd`]) against the real etcd 3.5.1.
//!
//! Each test starts its own single-member etcd on loopback (free ports, a temporary data dir, killed when the
//! test ends) and talks to it with the tonic clients generated from our `.proto` files. The answers' fields are
//! checked one by one, so a wrong field number or type shows up as a missing, zero or garbled field, and a
//! wrong package, service or method name as UNIMPLEMENTED. etcd comes from `harness::etcd` (`make etcd-bin`,
//! or `REINADO_ETCD_BIN`); without it the tests fail, saying so: they never pass silently.
//!
//! What etcd 3.5.1 answers to bad requests, as these tests check it (gRPC code, then message), which
//! Reinado's etcd API must reproduce:
//!
//! | request | code | message |
//! |---|---|---|
//! | Range at a compacted revision | `OutOfRange` | `etcdserver: mvcc: required revision has been compacted` |
//! | Compact at or below the compacted revision | `OutOfRange` | `etcdserver: mvcc: required revision has been compacted` |
//! | Range at a revision above the current one | `OutOfRange` | `etcdserver: mvcc: required revision is a future revision` |
//! | Compact above the current revision | `OutOfRange` | `etcdserver: mvcc: required revision is a future revision` |
//! | Put or Range with an empty key | `InvalidArgument` | `etcdserver: key is not provided` |
//! | Put with ignore_value on a missing key | `InvalidArgument` | `etcdserver: key not found` |
//! | Txn with more than 128 operations in a branch (`--max-txn-ops`) | `InvalidArgument` | `etcdserver: too many operations in txn request` |
//! | Txn writing one key twice | `InvalidArgument` | `etcdserver: duplicate key given in txn request` |
//! | LeaseGrant with a TTL above 9,000,000,000 s | `OutOfRange` | `etcdserver: too large lease TTL` |
//! | LeaseGrant with an ID in use | `FailedPrecondition` | `etcdserver: lease already exists` |
//! | LeaseRevoke of an unknown lease | `NotFound` | `etcdserver: requested lease not found` |
//! | Put under an unknown lease | `NotFound` | `etcdserver: requested lease not found` |
//! | Election Leader with no leader | `Unknown` | `election: no leader` |
//!
//! Not errors, though one might expect them: LeaseTimeToLive of an unknown lease answers OK with TTL -1
//! (etcdctl prints "already expired"); a LeaseKeepAlive of an unknown lease answers with TTL 0; LeaseGrant
//! with TTL 1 grants 2 s (etcd's minimum TTL, 1.5 election timeouts rounded up); a watch from a compacted
//! revision is first created, then cancelled with `compact_revision` set to the compaction revision.

use reinado_client::harness::etcd::LocalEtcd as Etcd;
use reinado_proto::etcd::etcdserverpb::{
    self as pb, cluster_client::ClusterClient, compare, kv_client::KvClient,
    maintenance_client::MaintenanceClient, range_request, request_op, response_op,
    watch_client::WatchClient, watch_create_request, watch_request,
};
use reinado_proto::etcd::mvccpb::{self, event::EventType};
use reinado_proto::etcd::v3electionpb::{self as epb, election_client::ElectionClient};
use reinado_proto::etcd::v3lockpb::{self as lpb, lock_client::LockClient};
use std::fmt::Debug;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long a test waits for one streamed message.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// The member's name, which MemberList must give back.
const MEMBER_NAME: &str = Etcd::MEMBER_NAME;

/// The end of the range of keys that start with `prefix` (etcd's convention: the prefix with its last byte
/// that is not 0xff incremented, the rest dropped).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Asserts that a call failed with this code and exactly this message.
fn expect_status<T: Debug>(result: Result<T, Status>, code: Code, message: &str) {
    let status = result.expect_err(&format!("expected {code:?} {message:?}"));
    assert_eq!(
        (status.code(), status.message()),
        (code, message),
        "{status:?}"
    );
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> pb::PutResponse {
    let req = pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kv.put(req).await.expect("put").into_inner()
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<mvccpb::KeyValue> {
    let req = pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    kv.range(req).await.expect("range").into_inner().kvs.pop()
}

fn revision(header: Option<pb::ResponseHeader>) -> i64 {
    let header = header.expect("a response header");
    assert_ne!(header.cluster_id, 0, "{header:?}");
    assert_ne!(header.member_id, 0, "{header:?}");
    assert!(header.raft_term >= 1, "{header:?}");
    header.revision
}

fn keys(kvs: &[mvccpb::KeyValue]) -> Vec<&[u8]> {
    kvs.iter().map(|kv| kv.key.as_slice()).collect()
}

fn range_prefix(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.into(),
        range_end: prefix_end(prefix.as_bytes()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_range_delete() {
    let etcd = Etcd::start().await;
    let mut kv = etcd.kv();

    let first = revision(put(&mut kv, "wire/a", "1").await.header);
    let req = pb::PutRequest {
        key: "wire/a".into(),
        value: "2".into(),
        prev_kv: true,
        ..Default::default()
    };
    let second = kv.put(req).await.unwrap().into_inner();
    assert_eq!(revision(second.header), first + 1);
    let prev = second.prev_kv.expect("prev_kv");
    assert_eq!(
        (prev.key.as_slice(), prev.value.as_slice()),
        (&b"wire/a"[..], &b"1"[..])
    );
    assert_eq!(
        (
            prev.create_revision,
            prev.mod_revision,
            prev.version,
            prev.lease
        ),
        (first, first, 1, 0)
    );
    put(&mut kv, "wire/b", "3").await;
    let last = revision(put(&mut kv, "wire/c", "4").await.header);
    put(&mut kv, "wirex", "outside the prefix").await;

    let a = get(&mut kv, "wire/a").await.expect("wire/a");
    assert_eq!(a.value, b"2");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version, a.lease),
        (first, first + 1, 2, 0)
    );

    let limited = kv
        .range(pb::RangeRequest {
            limit: 2,
            ..range_prefix("wire/")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&limited.kvs), [b"wire/a", b"wire/b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 3);
    assert_eq!(revision(limited.header), last + 1);

    let counted = kv
        .range(pb::RangeRequest {
            count_only: true,
            ..range_prefix("wire/")
        })
        .await
        .unwrap();
    assert!(counted.get_ref().kvs.is_empty());
    assert_eq!(counted.get_ref().count, 3);

    let keys_only = kv
        .range(pb::RangeRequest {
            keys_only: true,
            ..range_prefix("wire/")
        })
        .await
        .unwrap();
    assert_eq!(
        keys(&keys_only.get_ref().kvs),
        [b"wire/a", b"wire/b", b"wire/c"]
    );
    assert!(
        keys_only
            .get_ref()
            .kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.mod_revision > 0)
    );

    let by_version = pb::RangeRequest {
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Version as i32,
        ..range_prefix("wire/")
    };
    let by_version = kv.range(by_version).await.unwrap().into_inner();
    assert_eq!(by_version.kvs[0].key, b"wire/a");
    let by_key = pb::RangeRequest {
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Key as i32,
        ..range_prefix("wire/")
    };
    assert_eq!(
        keys(&kv.range(by_key).await.unwrap().get_ref().kvs),
        [b"wire/c", b"wire/b", b"wire/a"]
    );

    let past = kv
        .range(pb::RangeRequest {
            revision: first,
            ..range_prefix("wire/")
        })
        .await
        .unwrap();
    assert_eq!(past.get_ref().kvs.len(), 1);
    assert_eq!(past.get_ref().kvs[0].value, b"1");
    let recent = pb::RangeRequest {
        min_mod_revision: last,
        serializable: true,
        ..range_prefix("wire/")
    };
    assert_eq!(
        keys(&kv.range(recent).await.unwrap().get_ref().kvs),
        [b"wire/c"]
    );

    let delete = pb::DeleteRangeRequest {
        key: "wire/".into(),
        range_end: prefix_end(b"wire/"),
        prev_kv: true,
    };
    let deleted = kv.delete_range(delete).await.unwrap().into_inner();
    assert_eq!(deleted.deleted, 3);
    assert_eq!(keys(&deleted.prev_kvs), [b"wire/a", b"wire/b", b"wire/c"]);
    assert_eq!(deleted.prev_kvs[2].value, b"4");
    assert_eq!(
        kv.range(range_prefix("wire/"))
            .await
            .unwrap()
            .get_ref()
            .count,
        0
    );
    assert!(get(&mut kv, "wirex").await.is_some());
}

fn compare(key: &str, result: compare::CompareResult, target: compare::TargetUnion) -> pb::Compare {
    let kind = match target {
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    pb::Compare {
        result: result as i32,
        target: kind as i32,
        key: key.into(),
        target_union: Some(target),
        range_end: Vec::new(),
    }
}

fn op_put(key: &str, value: &str) -> pb::RequestOp {
    let put = pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(put)),
    }
}

fn op_get(key: &str) -> pb::RequestOp {
    let range = pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(range)),
    }
}

fn range_answer(op: &pb::ResponseOp) -> &pb::RangeResponse {
    match &op.response {
        Some(response_op::Response::ResponseRange(r)) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_nesting() {
    use compare::{CompareResult as R, TargetUnion as T};
    let etcd = Etcd::start().await;
    let mut kv = etcd.kv();
    put(&mut kv, "t/k", "v1").await;
    let k = get(&mut kv, "t/k").await.unwrap();

    let all_hold = pb::TxnRequest {
        compare: vec![
            compare("t/k", R::Equal, T::Value(b"v1".to_vec())),
            compare("t/k", R::Equal, T::Version(1)),
            compare("t/k", R::Equal, T::CreateRevision(k.create_revision)),
            compare("t/k", R::Equal, T::ModRevision(k.mod_revision)),
            compare("t/k", R::Equal, T::Lease(0)),
            compare("t/k", R::NotEqual, T::Value(b"other".to_vec())),
            compare("t/k", R::Less, T::ModRevision(k.mod_revision + 1)),
            compare("t/missing", R::Equal, T::Version(0)),
        ],
        success: vec![op_put("t/k", "v2"), op_get("t/k")],
        failure: vec![op_put("t/failure", "ran")],
    };
    let done = kv.txn(all_hold).await.unwrap().into_inner();
    assert!(done.succeeded);
    assert_eq!(revision(done.header), k.mod_revision + 1);
    assert_eq!(done.responses.len(), 2);
    assert!(matches!(
        done.responses[0].response,
        Some(response_op::Response::ResponsePut(_))
    ));
    assert_eq!(range_answer(&done.responses[1]).kvs[0].value, b"v2");

    let fails = pb::TxnRequest {
        compare: vec![compare("t/k", R::Greater, T::Version(5))],
        success: vec![op_put("t/success", "ran")],
        failure: vec![op_get("t/k")],
    };
    let failed = kv.txn(fails).await.unwrap().into_inner();
    assert!(!failed.succeeded);
    assert_eq!(
        revision(failed.header),
        k.mod_revision + 1,
        "a read-only branch makes no revision"
    );
    assert_eq!(range_answer(&failed.responses[0]).kvs[0].version, 2);

    let inner = pb::TxnRequest {
        compare: vec![compare("t/k", R::Equal, T::Value(b"v2".to_vec()))],
        success: vec![op_put("t/nested", "n")],
        failure: vec![],
    };
    let outer = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(inner)),
        }],
        failure: vec![],
    };
    let nested = kv.txn(outer).await.unwrap().into_inner();
    match &nested.responses[0].response {
        Some(response_op::Response::ResponseTxn(t)) => {
            assert!(t.succeeded);
            assert!(matches!(
                t.responses[0].response,
                Some(response_op::Response::ResponsePut(_))
            ));
        }
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    assert_eq!(get(&mut kv, "t/nested").await.unwrap().value, b"n");
    assert!(get(&mut kv, "t/failure").await.is_none() && get(&mut kv, "t/success").await.is_none());

    let twice = pb::TxnRequest {
        success: vec![op_put("t/d", "1"), op_put("t/d", "2")],
        ..Default::default()
    };
    expect_status(
        kv.txn(twice).await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    let many = (0..129)
        .map(|i| op_put(&format!("t/many/{i}"), "x"))
        .collect();
    let many = pb::TxnRequest {
        success: many,
        ..Default::default()
    };
    expect_status(
        kv.txn(many).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keys_and_keep_alive() {
    let etcd = Etcd::start().await;
    let (mut kv, mut lease) = (etcd.kv(), etcd.lease());
    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(granted.id > 0);
    assert_eq!((granted.ttl, granted.error.as_str()), (60, ""));
    let id = granted.id;
    let chosen = lease
        .lease_grant(pb::LeaseGrantRequest {
            ttl: 30,
            id: 0x1234,
        })
        .await
        .unwrap();
    assert_eq!((chosen.get_ref().id, chosen.get_ref().ttl), (0x1234, 30));
    let short = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .unwrap();
    assert_eq!(
        short.get_ref().ttl,
        2,
        "etcd raises a TTL below its minimum"
    );

    let leased = pb::PutRequest {
        key: "l/k".into(),
        value: "v".into(),
        lease: id,
        ..Default::default()
    };
    kv.put(leased).await.unwrap();
    assert_eq!(get(&mut kv, "l/k").await.unwrap().lease, id);
    let keep_lease = pb::PutRequest {
        key: "l/k".into(),
        value: "w".into(),
        ignore_lease: true,
        ..Default::default()
    };
    kv.put(keep_lease).await.unwrap();
    let keep_value = pb::PutRequest {
        key: "l/k".into(),
        ignore_value: true,
        lease: 0x1234,
        ..Default::default()
    };
    kv.put(keep_value).await.unwrap();
    let k = get(&mut kv, "l/k").await.unwrap();
    assert_eq!((k.value.as_slice(), k.lease), (&b"w"[..], 0x1234));
    kv.put(pb::PutRequest {
        key: "l/k".into(),
        value: "v".into(),
        lease: id,
        ..Default::default()
    })
    .await
    .unwrap();

    let ttl = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ttl.id, ttl.granted_ttl, ttl.keys.as_slice()),
        (id, 60, &[b"l/k".to_vec()][..])
    );
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    revision(ttl.header);

    let all = lease
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<i64> = all.leases.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    let mut expected = vec![id, 0x1234, short.get_ref().id];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // etcd (grpc-go) sends a stream's response headers with its first message, so the call resolves only
    // once a request is in: queue the first one before making the call.
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
    let mut answers = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for asked in [id, 0x7777] {
        if asked != id {
            tx.send(pb::LeaseKeepAliveRequest { id: asked })
                .await
                .unwrap();
        }
        let answer = tokio::time::timeout(STREAM_WAIT, answers.message())
            .await
            .expect("keep-alive answer");
        let answer = answer.unwrap().expect("an open stream");
        let renewed_ttl = if asked == id { 60 } else { 0 };
        assert_eq!(
            (answer.id, answer.ttl),
            (asked, renewed_ttl),
            "an unknown lease is answered with TTL 0"
        );
    }
    drop(tx);

    lease
        .lease_revoke(pb::LeaseRevokeRequest { id })
        .await
        .unwrap();
    assert!(
        get(&mut kv, "l/k").await.is_none(),
        "revoking a lease deletes its keys"
    );
    let gone = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap();
    assert_eq!(
        (gone.get_ref().id, gone.get_ref().ttl),
        (id, -1),
        "an unknown lease has TTL -1, no error"
    );
}

/// Reads watch responses until `want` events have arrived in total, returning them per watch id.
async fn watch_events(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    want: usize,
) -> Vec<(i64, mvccpb::Event)> {
    let mut events = Vec::new();
    while events.len() < want {
        let response = tokio::time::timeout(STREAM_WAIT, stream.message()).await;
        let response = response
            .expect("a watch response in time")
            .unwrap()
            .expect("an open stream");
        assert!(!response.canceled, "{response:?}");
        events.extend(response.events.into_iter().map(|e| (response.watch_id, e)));
    }
    events
}

async fn next_watch_response(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
) -> pb::WatchResponse {
    let response = tokio::time::timeout(STREAM_WAIT, stream.message()).await;
    response
        .expect("a watch response in time")
        .unwrap()
        .expect("an open stream")
}

/// Opens a watch stream with a first watch on it. The create request is queued before the call, because
/// etcd (grpc-go) sends the stream's response headers with its first message, and the call resolves only then.
async fn open_watch(
    etcd: &Etcd,
    first: pb::WatchCreateRequest,
) -> (
    mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(create_watch(first)).await.unwrap();
    let mut watch = WatchClient::new(etcd.channel.clone());
    let stream = watch.watch(ReceiverStream::new(rx)).await.unwrap();
    (tx, stream.into_inner())
}

fn create_watch(create: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_filters_progress_cancel() {
    let etcd = Etcd::start().await;
    let mut kv = etcd.kv();
    let first = revision(put(&mut kv, "w/a", "1").await.header);
    put(&mut kv, "w/a", "2").await;
    let delete = pb::DeleteRangeRequest {
        key: "w/a".into(),
        ..Default::default()
    };
    let deleted_at = revision(kv.delete_range(delete).await.unwrap().into_inner().header);

    let history = pb::WatchCreateRequest {
        key: "w/".into(),
        range_end: prefix_end(b"w/"),
        start_revision: first,
        prev_kv: true,
        watch_id: 7,
        ..Default::default()
    };
    let (tx, mut stream) = open_watch(&etcd, history).await;
    let created = next_watch_response(&mut stream).await;
    assert!(created.created && !created.canceled, "{created:?}");
    assert_eq!(created.watch_id, 7);

    let replayed = watch_events(&mut stream, 3).await;
    let (kinds, values): (Vec<i32>, Vec<Vec<u8>>) = replayed
        .iter()
        .map(|(_, e)| (e.r#type, e.kv.clone().unwrap().value))
        .unzip();
    assert_eq!(
        kinds,
        [
            EventType::Put as i32,
            EventType::Put as i32,
            EventType::Delete as i32
        ]
    );
    assert_eq!(values, [b"1".to_vec(), b"2".to_vec(), Vec::new()]);
    let (_, deletion) = &replayed[2];
    assert_eq!(deletion.kv.as_ref().unwrap().mod_revision, deleted_at);
    assert_eq!(deletion.prev_kv.as_ref().expect("prev_kv").value, b"2");
    assert!(
        replayed[0].1.prev_kv.is_none(),
        "a creation has no previous value"
    );
    assert_eq!(replayed[1].1.kv.as_ref().unwrap().version, 2);

    let deletes_only = pb::WatchCreateRequest {
        key: "w/".into(),
        range_end: prefix_end(b"w/"),
        filters: vec![watch_create_request::FilterType::Noput as i32],
        watch_id: 8,
        ..Default::default()
    };
    tx.send(create_watch(deletes_only)).await.unwrap();
    assert!(next_watch_response(&mut stream).await.created);
    put(&mut kv, "w/b", "live").await;
    kv.delete_range(pb::DeleteRangeRequest {
        key: "w/b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let live = watch_events(&mut stream, 3).await;
    let seen: Vec<(i64, i32)> = live.iter().map(|(id, e)| (*id, e.r#type)).collect();
    assert!(
        seen.contains(&(8, EventType::Delete as i32))
            && !seen.contains(&(8, EventType::Put as i32)),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|(id, _)| *id == 7).count(),
        2,
        "{seen:?}"
    );

    let progress = pb::WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    };
    tx.send(progress).await.unwrap();
    let notified = next_watch_response(&mut stream).await;
    assert!(
        notified.events.is_empty() && !notified.canceled,
        "{notified:?}"
    );
    assert_eq!(revision(notified.header), deleted_at + 2);

    let cancel = pb::WatchCancelRequest { watch_id: 7 };
    tx.send(pb::WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(cancel)),
    })
    .await
    .unwrap();
    let cancelled = next_watch_response(&mut stream).await;
    assert!(cancelled.canceled, "{cancelled:?}");
    assert_eq!(cancelled.watch_id, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_fencing_and_election() {
    let etcd = Etcd::start().await;
    let (mut kv, mut lease) = (etcd.kv(), etcd.lease());
    let mut grant = async || {
        lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id
    };
    let (first_lease, second_lease, election_lease) = (grant().await, grant().await, grant().await);

    let mut locks = LockClient::new(etcd.channel.clone());
    let held = locks
        .lock(lpb::LockRequest {
            name: "lk".into(),
            lease: first_lease,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        held.key.starts_with(b"lk/"),
        "{:?}",
        String::from_utf8_lossy(&held.key)
    );
    revision(held.header);
    let first_token = get(&mut kv, std::str::from_utf8(&held.key).unwrap())
        .await
        .unwrap();
    assert_eq!(first_token.lease, first_lease);

    let mut waiter = LockClient::new(etcd.channel.clone());
    let second = tokio::spawn(async move {
        waiter
            .lock(lpb::LockRequest {
                name: "lk".into(),
                lease: second_lease,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second holder got the lock while the first held it"
    );
    locks
        .unlock(lpb::UnlockRequest {
            key: held.key.clone(),
        })
        .await
        .unwrap();
    let second = tokio::time::timeout(STREAM_WAIT, second)
        .await
        .expect("the waiter gets the lock");
    let second = second.unwrap().unwrap().into_inner();
    let second_token = get(&mut kv, std::str::from_utf8(&second.key).unwrap())
        .await
        .unwrap();
    assert!(
        second_token.create_revision > first_token.create_revision,
        "fencing tokens grow"
    );
    assert!(
        get(&mut kv, std::str::from_utf8(&held.key).unwrap())
            .await
            .is_none()
    );
    locks
        .unlock(lpb::UnlockRequest { key: second.key })
        .await
        .unwrap();

    let mut election = ElectionClient::new(etcd.channel.clone());
    let campaign = epb::CampaignRequest {
        name: "el".into(),
        lease: election_lease,
        value: "v1".into(),
    };
    let leader = election
        .campaign(campaign)
        .await
        .unwrap()
        .into_inner()
        .leader
        .expect("a leader key");
    assert_eq!(
        (leader.name.as_slice(), leader.lease),
        (&b"el"[..], election_lease)
    );
    assert!(
        leader.key.starts_with(b"el/") && leader.rev > 0,
        "{leader:?}"
    );
    let current = election
        .leader(epb::LeaderRequest { name: "el".into() })
        .await
        .unwrap()
        .into_inner();
    let kv_now = current.kv.expect("the leader's kv");
    assert_eq!(
        (kv_now.key.as_slice(), kv_now.value.as_slice()),
        (leader.key.as_slice(), &b"v1"[..])
    );
    assert_eq!(kv_now.create_revision, leader.rev);

    let proclaim = epb::ProclaimRequest {
        leader: Some(leader.clone()),
        value: "v2".into(),
    };
    election.proclaim(proclaim).await.unwrap();
    let mut observed = election
        .observe(epb::LeaderRequest { name: "el".into() })
        .await
        .unwrap()
        .into_inner();
    let seen = tokio::time::timeout(STREAM_WAIT, observed.message())
        .await
        .expect("an observation");
    assert_eq!(
        seen.unwrap().expect("an open stream").kv.expect("kv").value,
        b"v2"
    );
    drop(observed);

    election
        .resign(epb::ResignRequest {
            leader: Some(leader),
        })
        .await
        .unwrap();
    expect_status(
        election
            .leader(epb::LeaderRequest { name: "el".into() })
            .await,
        Code::Unknown,
        "election: no leader",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_members_alarms() {
    let etcd = Etcd::start().await;
    let mut maintenance = MaintenanceClient::new(etcd.channel.clone());
    put(&mut etcd.kv(), "s", "1").await;
    let status = maintenance
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let header = status.header.unwrap();
    assert_eq!(status.version, "3.5.1");
    assert!(
        status.db_size > 0 && status.db_size_in_use > 0 && status.db_size_in_use <= status.db_size
    );
    assert_eq!(status.leader, header.member_id);
    assert!(
        status.raft_index > 0 && status.raft_applied_index > 0 && status.raft_term >= 1,
        "{status:?}"
    );
    assert!(status.errors.is_empty() && !status.is_learner);

    let mut cluster = ClusterClient::new(etcd.channel.clone());
    let members = cluster
        .member_list(pb::MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 1);
    let me = &members.members[0];
    assert_eq!(
        (me.id, me.name.as_str(), me.is_learner),
        (header.member_id, MEMBER_NAME, false)
    );
    assert_eq!(
        (me.peer_ur_ls.as_slice(), me.client_ur_ls.as_slice()),
        (&[etcd.peer_url.clone()][..], &[etcd.client_url.clone()][..])
    );
    assert_eq!(members.header.unwrap().cluster_id, header.cluster_id);

    let alarms = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        member_id: 0,
        alarm: pb::AlarmType::None as i32,
    };
    assert!(
        maintenance
            .alarm(alarms)
            .await
            .unwrap()
            .into_inner()
            .alarms
            .is_empty()
    );
    let hashed = maintenance
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(
        hashed.hash != 0 && revision(hashed.header) >= 2,
        "hash {}",
        hashed.hash
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_bad_requests() {
    let etcd = Etcd::start().await;
    let (mut kv, mut lease) = (etcd.kv(), etcd.lease());
    let first = revision(put(&mut kv, "c", "1").await.header);
    put(&mut kv, "c", "2").await;
    let last = revision(put(&mut kv, "c", "3").await.header);
    kv.compact(pb::CompactionRequest {
        revision: last - 1,
        physical: true,
    })
    .await
    .unwrap();

    let at = |revision| pb::RangeRequest {
        key: "c".into(),
        revision,
        ..Default::default()
    };
    const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
    expect_status(kv.range(at(first)).await, Code::OutOfRange, COMPACTED);
    assert_eq!(
        kv.range(at(last - 1)).await.unwrap().into_inner().kvs[0].value,
        b"2"
    );
    expect_status(kv.range(at(last + 100)).await, Code::OutOfRange, FUTURE);
    expect_status(
        kv.compact(pb::CompactionRequest {
            revision: last - 1,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        COMPACTED,
    );
    expect_status(
        kv.compact(pb::CompactionRequest {
            revision: last + 100,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        FUTURE,
    );

    let from_compacted = pb::WatchCreateRequest {
        key: "c".into(),
        start_revision: first,
        ..Default::default()
    };
    let (_tx, mut stream) = open_watch(&etcd, from_compacted).await;
    let mut response = next_watch_response(&mut stream).await;
    if response.created && !response.canceled {
        response = next_watch_response(&mut stream).await;
    }
    assert!(
        response.canceled && response.events.is_empty(),
        "{response:?}"
    );
    assert_eq!(response.compact_revision, last - 1);

    let empty = pb::PutRequest {
        key: Vec::new(),
        value: "x".into(),
        ..Default::default()
    };
    expect_status(
        kv.put(empty).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    expect_status(
        kv.range(pb::RangeRequest::default()).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let missing = pb::PutRequest {
        key: "nope".into(),
        ignore_value: true,
        ..Default::default()
    };
    expect_status(
        kv.put(missing).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );

    const NO_LEASE: &str = "etcdserver: requested lease not found";
    expect_status(
        lease
            .lease_revoke(pb::LeaseRevokeRequest { id: 0x4242 })
            .await,
        Code::NotFound,
        NO_LEASE,
    );
    let orphan = pb::PutRequest {
        key: "o".into(),
        value: "x".into(),
        lease: 0x4242,
        ..Default::default()
    };
    expect_status(kv.put(orphan).await, Code::NotFound, NO_LEASE);
    let huge = pb::LeaseGrantRequest {
        ttl: 9_000_000_001,
        id: 0,
    };
    expect_status(
        lease.lease_grant(huge).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0x99 })
        .await
        .unwrap();
    let again = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0x99 })
        .await;
    expect_status(
        again,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
}
