//! The Raft loop over a fault-injecting disk: a failed fsync stops the loop with the storage's error, and the
//! write it was to make durable is never acknowledged.

use super::*;
use crate::config::Start;
use crate::state::Limits;
use crate::transport::{Identity, Isolation};
use prost::Message as _;
use reinado_proto::v1::{Command, TxnPut, command};
use reinado_storage::{FaultyFs, IoCall, IoFault, Options, StorageError};
use std::collections::BTreeMap;
use std::path::Path;

/// A one-member cluster's loop on `fs`, with the sender of its requests and the receiver of its view.
fn single_node_loop(
    fs: &FaultyFs,
) -> (
    RaftLoop,
    LoopInputs,
    mpsc::Sender<Request>,
    watch::Receiver<View>,
) {
    let (storage, recovered) =
        DiskStorage::open_with(Arc::new(fs.clone()), Path::new("/data"), Options::default())
            .expect("an empty disk opens");
    let raft_cfg = reinado_raft::Config {
        election_ticks: 5,
        heartbeat_ticks: 1,
        ..reinado_raft::Config::new(1)
    };
    let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
    let start = Start::Bootstrap(peers.clone());
    let opened = replica::open(raft_cfg, &start, recovered).expect("open");
    let settings = Settings {
        id: 1,
        client_addr: "127.0.0.1:2".into(),
        election_ticks: 5,
        tick_ms: 10,
        snapshot_entries: 1_000,
        request_timeout_ticks: 100,
        bootstrap_peers: peers,
        incarnation: 1,
        record_applied: false,
        limits: Limits::default(),
        bugs: replica::Bugs::default(),
    };
    let identity = Identity {
        cluster_id: "test".into(),
        id: 1,
        client_addr: settings.client_addr.clone(),
        peer_addr: "127.0.0.1:1".into(),
    };
    let isolation = Arc::new(Isolation::default());
    let (_inbox_tx, inbox) = mpsc::channel(8);
    let (requests_tx, requests) = mpsc::channel(8);
    let (applied, _) = watch::channel(0);
    let initial = View {
        role: Role::Follower,
        term: 0,
        leader: None,
        leader_addr: String::new(),
        member: false,
        serving: false,
    };
    let (view, view_rx) = watch::channel(initial);
    let (_stop_tx, shutdown) = watch::channel(false);
    // The loop must outlive the test's senders of shutdown and peer messages: leak them.
    std::mem::forget((_inbox_tx, _stop_tx));
    let parts = Parts {
        storage,
        transport: Transport::new(identity, Default::default(), isolation),
        applied,
        view,
        inbox,
        requests,
        shutdown,
    };
    let replica = Replica::new(opened.raft, Arc::new(RwLock::new(opened.state)), settings);
    let timing = Timing {
        tick: Duration::from_millis(2),
        shutdown_timeout: Duration::from_millis(100),
    };
    let (lp, inputs) = RaftLoop::new(replica, timing, parts);
    (lp, inputs, requests_tx, view_rx)
}

fn put(key: &[u8]) -> Vec<u8> {
    Command {
        request_id: None,
        time_ms: 0,
        op: Some(command::Op::Put(TxnPut {
            key: key.to_vec(),
            value: b"v".to_vec(),
        })),
    }
    .encode_to_vec()
}

async fn write(
    requests: &mpsc::Sender<Request>,
    key: &[u8],
) -> Option<Result<WriteOutcome, NodeError>> {
    let (reply, answer) = oneshot::channel();
    let req = Request::Write {
        data: put(key),
        span: tracing::Span::none(),
        reply,
    };
    requests.send(req).await.ok()?;
    answer.await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_loop_and_acknowledges_nothing() {
    for fault in [IoFault::Eio, IoFault::NoSpace] {
        let fs = FaultyFs::new(3);
        let (lp, inputs, requests, mut view) = single_node_loop(&fs);
        let running = tokio::spawn(lp.run(inputs));
        view.wait_for(|v| v.serving).await.expect("the loop runs");
        let first = write(&requests, b"a").await.expect("answered");
        assert!(first.is_ok(), "a write before the fault: {first:?}");

        fs.fail_call(IoCall::SyncData, 0, fault);
        let second = write(&requests, b"b").await;
        assert!(
            !matches!(second, Some(Ok(_))),
            "a write whose fsync failed was acknowledged: {second:?}"
        );
        let stopped = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the loop stops by itself")
            .expect("no panic");
        match stopped {
            Err(LoopError::Storage(StorageError::Io { source, .. })) => {
                assert_eq!(
                    source.raw_os_error(),
                    Some(fault.to_io_error().raw_os_error().unwrap())
                );
            }
            other => panic!("the loop must stop with the storage's error, got {other:?}"),
        }
        // Nothing is served after the failure.
        assert!(write(&requests, b"c").await.is_none_or(|r| r.is_err()));
    }
}
