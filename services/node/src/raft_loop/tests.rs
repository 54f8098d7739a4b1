//! The Raft loop over a fault-injecting disk: a failed fsync stops the loop with the storage's error, and the
//! write it was to make durable is never acknowledged; a write that fails during the shutdown hand-over is
//! returned too.

use super::*;
use crate::config::Start;
use crate::state::Limits;
use crate::transport::{Identity, Isolation};
use prost::Message as _;
use reinado_proto::v1::{Command, TxnPut, command};
use reinado_raft::{Message, MessageBody};
use reinado_storage::{FaultyFs, IoCall, IoFault, Options, StorageError};
use std::collections::BTreeMap;
use std::path::Path;

/// A loop for node 1 and what the test holds to talk to it: its inputs (to run it), the senders of its peer
/// messages, requests and shutdown, and the receiver of its view. The senders live as long as the test: a
/// loop whose shutdown sender is dropped stops at once (`changed()` fails), as if asked to.
struct TestLoop {
    lp: RaftLoop,
    inputs: LoopInputs,
    inbox: mpsc::Sender<Inbound>,
    requests: mpsc::Sender<Request>,
    stop: watch::Sender<bool>,
    view: watch::Receiver<View>,
}

/// Node 1's loop on `fs`, in a cluster bootstrapped with members `1..=members`; `tweak` adjusts its core.
fn node_loop(
    fs: &FaultyFs,
    members: u64,
    tweak: impl FnOnce(&mut reinado_raft::Config),
) -> TestLoop {
    let (storage, recovered) =
        DiskStorage::open_with(Arc::new(fs.clone()), Path::new("/data"), Options::default())
            .expect("an empty disk opens");
    let mut raft_cfg = reinado_raft::Config {
        election_ticks: 5,
        heartbeat_ticks: 1,
        ..reinado_raft::Config::new(1)
    };
    tweak(&mut raft_cfg);
    let timing = Timing {
        tick: Duration::from_millis(2),
        shutdown_timeout: Duration::from_millis(100),
    };
    let peers: BTreeMap<_, _> = (1..=members)
        .map(|id| (id, format!("127.0.0.1:{id}")))
        .collect();
    let opened =
        replica::open(raft_cfg, &Start::Bootstrap(peers.clone()), recovered).expect("bootstrap");
    let settings = Settings {
        id: 1,
        client_addr: "127.0.0.1:0".into(),
        election_ticks: 5,
        tick_ms: 10,
        snapshot_entries: 1_000,
        snapshot_bytes: u64::MAX,
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
    let (inbox_tx, inbox) = mpsc::channel(8);
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
    let (stop, shutdown) = watch::channel(false);
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
    let (lp, inputs) = RaftLoop::new(replica, timing, parts);
    TestLoop {
        lp,
        inputs,
        inbox: inbox_tx,
        requests: requests_tx,
        stop,
        view: view_rx,
    }
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
        let TestLoop {
            lp,
            inputs,
            requests,
            mut view,
            inbox: _inbox,
            stop: _stop,
        } = node_loop(&fs, 1, |_| {});
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

/// A message from node 2 to node 1.
fn from_2(term: Term, body: MessageBody) -> Message {
    Message {
        from: 2,
        to: 1,
        term,
        body,
    }
}

/// Node 1 leads a two-member cluster and node 2, played by the test, has every entry. The steps are taken
/// on the loop directly (not in `run`), so the order of events is the test's.
fn leader_of_two(fs: &FaultyFs) -> TestLoop {
    let mut t = node_loop(fs, 2, |cfg| cfg.pre_vote = false);
    let mut out = Output::default();
    let mut ticks = 0;
    while t.lp.replica.raft().role() != Role::Candidate {
        assert!(ticks < 100, "node 1 never campaigns");
        t.lp.replica.tick(&mut out);
        t.lp.drive(&mut out).expect("drive");
        ticks += 1;
    }
    let term = t.lp.replica.raft().term();
    let granted = MessageBody::VoteResponse {
        pre_vote: false,
        reject: false,
        committed: 0,
        committed_term: 0,
    };
    t.lp.replica.step(from_2(term, granted));
    t.lp.drive(&mut out).expect("drive");
    assert_eq!(t.lp.replica.raft().role(), Role::Leader);
    let appended = MessageBody::AppendResponse {
        reject: false,
        index: t.lp.replica.raft().last_index(),
        hint_index: 0,
        hint_term: 0,
    };
    t.lp.replica.step(from_2(term, appended));
    t.lp.drive(&mut out).expect("drive");
    t
}

/// Defect of issue 9: on shutdown a leader hands leadership over; a write that fails meanwhile (here: the
/// vote for its successor, at the successor's term) used to be dropped, and the node exited as if all was
/// well. The storage's error must come out of the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_during_the_shutdown_hand_over_is_returned() {
    let fs = FaultyFs::new(4);
    let mut t = leader_of_two(&fs);
    let term = t.lp.replica.raft().term();
    // Node 2, told to campaign at once, asks for node 1's vote; node 1 must persist its new term and vote.
    let campaign = MessageBody::Vote {
        pre_vote: false,
        last_log_index: t.lp.replica.raft().last_index(),
        last_log_term: term,
        transfer: true,
    };
    let vote = Inbound::Message(from_2(term + 1, campaign));
    t.inbox.send(vote).await.expect("the loop's inbox");
    fs.fail_call(IoCall::SyncData, 0, IoFault::Eio);

    let handed_over = tokio::time::timeout(Duration::from_secs(10), t.lp.hand_over(&mut t.inputs))
        .await
        .expect("the hand-over ends by itself");
    assert_ne!(
        t.lp.replica.raft().role(),
        Role::Leader,
        "node 1 did not step down for node 2"
    );
    match handed_over {
        Err(LoopError::Storage(StorageError::Io { source, .. })) => {
            assert_eq!(
                source.raw_os_error(),
                IoFault::Eio.to_io_error().raw_os_error()
            );
        }
        other => panic!("the hand-over must return the storage's error, got {other:?}"),
    }
}
