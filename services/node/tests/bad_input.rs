//! Whatever a client sends is answered with a clear status, never a panic; the quota refuses growth but not
//! reads and deletes; bad configuration, a foreign data dir and a corrupted log stop the node at start with a
//! message that says why, while a torn log tail is repaired.

use reinado_client::harness::{LocalCluster, Process, binary};
use reinado_client::{Client, ClientError};
use reinado_proto::v1::kv_client::KvClient;
use reinado_proto::v1::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

async fn raw(cluster: &LocalCluster) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(format!("http://{}", cluster.nodes[&1].client_addr))
        .await
        .unwrap()
}

fn put(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        request_id: None,
    }
}

fn assert_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    let err = r.expect_err("the request is refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(text),
        "`{}` lacks `{text}`",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_the_node_keeps_serving() {
    let mut cluster = LocalCluster::start(
        1,
        &[
            ("REINADO_MAX_KEY_BYTES", "16"),
            ("REINADO_MAX_VALUE_BYTES", "64"),
            ("REINADO_QUOTA_BYTES", "200"),
        ],
    );
    cluster.wait_leader(WAIT).await;
    let mut kv = raw(&cluster).await;
    assert_status(
        kv.put(put(b"", b"v")).await,
        Code::InvalidArgument,
        "key must not be empty",
    );
    assert_status(
        kv.put(put(&[b'k'; 17], b"v")).await,
        Code::InvalidArgument,
        "REINADO_MAX_KEY_BYTES",
    );
    assert_status(
        kv.put(put(b"k", &[0; 65])).await,
        Code::InvalidArgument,
        "REINADO_MAX_VALUE_BYTES",
    );
    let id = RequestId {
        client_id: 0,
        seq: 1,
        acked: 0,
    };
    let mut bad_id = put(b"k", b"v");
    bad_id.request_id = Some(id);
    assert_status(kv.put(bad_id).await, Code::InvalidArgument, "must not be 0");
    let inverted = RangeRequest {
        start: b"b".to_vec(),
        end: b"a".to_vec(),
        ..RangeRequest::default()
    };
    assert_status(
        kv.range(inverted).await,
        Code::InvalidArgument,
        "greater than its start",
    );
    let bad_consistency = GetRequest {
        key: b"k".to_vec(),
        consistency: 9,
    };
    assert_status(
        kv.get(bad_consistency).await,
        Code::InvalidArgument,
        "consistency",
    );
    let bad_txn = TxnRequest {
        compare: vec![Compare {
            key: b"k".to_vec(),
            ..Compare::default()
        }],
        ..TxnRequest::default()
    };
    assert_status(
        kv.txn(bad_txn).await,
        Code::InvalidArgument,
        "compare[0].target",
    );
    assert_status(
        kv.log_entry(LogEntryRequest { index: 0 }).await,
        Code::InvalidArgument,
        "start at 1",
    );
    assert_status(
        kv.log_entry(LogEntryRequest { index: 1_000_000 }).await,
        Code::NotFound,
        "not committed",
    );
    let watch = WatchRequest {
        key: vec![],
        prefix: false,
        start_revision: 0,
    };
    assert_status(
        kv.watch(watch).await,
        Code::InvalidArgument,
        "key must not be empty",
    );

    // The quota: 200 bytes of keys and values.
    for i in 0..3 {
        kv.put(put(format!("q{i}").as_bytes(), &[b'x'; 60]))
            .await
            .unwrap();
    }
    assert_status(
        kv.put(put(b"q3", &[b'x'; 60])).await,
        Code::ResourceExhausted,
        "quota",
    );
    let got = kv
        .get(GetRequest {
            key: b"q0".to_vec(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.kv.is_some(), "reads still work when full");
    let del = kv
        .delete(DeleteRequest {
            key: b"q0".to_vec(),
            request_id: None,
        })
        .await
        .unwrap();
    assert!(del.into_inner().deleted, "deletes still work when full");
    let last = kv
        .put(put(b"q3", &[b'x'; 60]))
        .await
        .expect("room again after a delete")
        .into_inner();

    // LogEntry shows what was committed (entries of the bootstrap are compacted away early).
    let index = last.header.unwrap().revision;
    let entry = kv
        .log_entry(LogEntryRequest { index })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entry.index, index);
    let op = entry.operation.unwrap().kind.unwrap();
    assert!(
        matches!(
            op,
            log_operation::Kind::Noop(_) | log_operation::Kind::Command(_)
        ),
        "{op:?}"
    );

    // Still alive and serving.
    let client: Client = cluster.client();
    client.put(b"alive", b"yes").await.unwrap();
    assert!(cluster.nodes.get_mut(&1).unwrap().process.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_library_error_says_what_to_do() {
    let client = Client::new(
        vec!["127.0.0.1:1".into()],
        reinado_client::ClientOptions {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable { .. }));
    assert!(
        err.to_string().contains("cannot reach 127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 3);
}

fn node_env(dir: &std::path::Path, id: u64, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("REINADO_NODE_ID", id.to_string()),
        ("REINADO_DATA_DIR", dir.join("data").display().to_string()),
        (
            "REINADO_CLIENT_ADDR",
            format!("127.0.0.1:{}", reinado_client::harness::free_port()),
        ),
        (
            "REINADO_PEER_ADDR",
            format!("127.0.0.1:{}", reinado_client::harness::free_port()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

#[test]
fn bad_configuration_and_a_foreign_data_dir_stop_the_node_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut typo = Process::new(
        "typo",
        binary("reinado-node"),
        node_env(dir.path(), 1, &[("REINADO_PEERZ", "1=a:1")]),
        dir.path(),
    );
    typo.start();
    assert_eq!(typo.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(
        typo.log()
            .contains("REINADO_PEERZ: unknown variable (did you mean REINADO_PEERS?)"),
        "{}",
        typo.log()
    );

    let mut first = Process::new(
        "first",
        binary("reinado-node"),
        node_env(dir.path(), 1, &[]),
        dir.path(),
    );
    first.start();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        first.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        first.log()
    );
    let mut other = Process::new(
        "other",
        binary("reinado-node"),
        node_env(dir.path(), 2, &[]),
        dir.path(),
    );
    other.start();
    assert_eq!(other.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        other.log().contains("belongs to cluster `reinado` node 1"),
        "{}",
        other.log()
    );
}

/// The newest WAL segment of a node's data dir.
fn last_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(data_dir.join("raft/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_repaired_and_a_corrupted_middle_refused() {
    let mut cluster = LocalCluster::start(1, &[]);
    cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    for i in 0..20 {
        client
            .put(format!("k{i}").as_bytes(), b"value")
            .await
            .unwrap();
    }
    let data_dir = cluster.nodes[&1].data_dir.clone();
    cluster.node(1).process.kill();

    // A torn write: half a record at the end.
    let seg = last_segment(&data_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0x30, 0, 0, 0, 0xde, 0xad]);
    std::fs::write(&seg, &bytes).unwrap();
    cluster.node(1).process.start();
    cluster.wait_leader(WAIT).await;
    let got = client.get(b"k19", Consistency::Linearizable).await.unwrap();
    assert!(
        got.kv.is_some(),
        "every acknowledged write survived the repair"
    );
    cluster.node(1).process.kill();

    // A flipped byte in the middle: refused, naming the file and offset.
    let seg = last_segment(&data_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    cluster.node(1).process.start();
    let code = cluster.node(1).process.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1));
    let log = cluster.nodes[&1].process.log();
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(log.contains(name) && log.contains("offset"), "{log}");
}
