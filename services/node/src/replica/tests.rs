//! Replicas of one cluster driven together over in-memory disks and a network the test controls: what the
//! replica decides (limits agreed through the log, compaction that keeps a catch-up margin, reads failed
//! when the leader changes), seen whole.

use super::*;
use crate::config::Start;
use crate::state::Limits;
use prost::Message as _;
use reinado_proto::v1::{Command, TxnPut, command};
use reinado_raft::MessageBody;
use reinado_storage::{FaultyFs, Options};
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

/// Writes and reads wait under numbers; nothing else is asked.
struct TestWaiters;

impl Waiters for TestWaiters {
    type Write = u64;
    type Read = u64;
    type Members = ();
    type Leader = ();
}

struct TestNode {
    replica: Replica<TestWaiters>,
    storage: DiskStorage,
    /// Every answer the replica gave, in order.
    answers: Vec<Answer<TestWaiters>>,
    /// The in-memory disk under `storage`: what a restart reopens.
    fs: FaultyFs,
    /// The core's configuration, to start it again on a restart.
    cfg: reinado_raft::Config,
}

impl TestNode {
    /// Opens the node's storage on `fs` and starts a replica from what it recovered (bootstrapping an empty
    /// disk with `peers`).
    fn start(
        fs: FaultyFs,
        cfg: reinado_raft::Config,
        settings: Settings,
        peers: &BTreeMap<NodeId, String>,
    ) -> TestNode {
        Self::start_as(fs, cfg, settings, &Start::Bootstrap(peers.clone()))
    }

    /// Opens the node's storage on `fs` and starts a replica as `start` says.
    fn start_as(
        fs: FaultyFs,
        cfg: reinado_raft::Config,
        settings: Settings,
        start: &Start,
    ) -> TestNode {
        let (storage, recovered) =
            DiskStorage::open_with(Arc::new(fs.clone()), Path::new("/data"), Options::default())
                .expect("open");
        let opened = open(cfg.clone(), start, recovered).expect("open");
        let state = Arc::new(RwLock::new(opened.state));
        TestNode {
            replica: Replica::new(opened.raft, state, settings),
            storage,
            answers: Vec::new(),
            fs,
            cfg,
        }
    }
}

/// A cluster whose messages go through a queue; nodes in `cut` send and receive nothing, and messages on
/// the links (from, to) in `cut_links` are lost.
struct Cluster {
    nodes: BTreeMap<NodeId, TestNode>,
    queue: VecDeque<Message>,
    cut: BTreeSet<NodeId>,
    cut_links: BTreeSet<(NodeId, NodeId)>,
    sent: Vec<Message>,
    /// The bootstrap members: id → peer address.
    peers: BTreeMap<NodeId, String>,
}

/// `n` bootstrapped members; node 1 times out first, so it leads. `tweak` adjusts each one's settings.
fn cluster(n: u64, tweak: impl Fn(&mut reinado_raft::Config, &mut Settings)) -> Cluster {
    let peers: BTreeMap<NodeId, String> = (1..=n).map(|id| (id, format!("n{id}:1"))).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=n {
        let mut cfg = reinado_raft::Config::new(id);
        cfg.election_ticks = if id == 1 { 3 } else { 30 };
        let mut settings = Settings {
            id,
            client_addr: format!("n{id}:0"),
            election_ticks: 10,
            tick_ms: 10,
            snapshot_entries: 10_000,
            snapshot_bytes: u64::MAX,
            request_timeout_ticks: 100,
            bootstrap_peers: peers.clone(),
            incarnation: id << 32,
            record_applied: false,
            limits: Limits::default(),
            bugs: Bugs::default(),
        };
        tweak(&mut cfg, &mut settings);
        let node = TestNode::start(FaultyFs::new(id), cfg, settings, &peers);
        nodes.insert(id, node);
    }
    Cluster {
        nodes,
        queue: VecDeque::new(),
        cut: BTreeSet::new(),
        cut_links: BTreeSet::new(),
        sent: Vec::new(),
        peers,
    }
}

impl Cluster {
    /// Persists and applies every node's Readies, and delivers messages, until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1_000 {
            let mut moved = false;
            for node in self.nodes.values_mut() {
                let mut out = Output::default();
                while node
                    .replica
                    .write_ready(&mut node.storage, &mut out)
                    .expect("write")
                {
                    node.storage.sync().expect("sync");
                    node.replica
                        .synced(&mut node.storage, &mut out)
                        .expect("synced");
                    moved = true;
                }
                self.queue.extend(out.messages);
                node.answers.extend(out.answers);
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                if self.cut.contains(&m.from)
                    || self.cut.contains(&m.to)
                    || self.cut_links.contains(&(m.from, m.to))
                {
                    continue;
                }
                self.sent.push(m.clone());
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    node.replica.step(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never settles");
    }

    /// `n` ticks of every node, settling after each.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                let mut out = Output::default();
                node.replica.tick(&mut out);
                self.queue.extend(out.messages);
                node.answers.extend(out.answers);
            }
            self.settle();
        }
    }

    /// Node `id` loses power and starts again from what its disk kept: everything synced, nothing else
    /// (the harness syncs every write it hands over, so only what the replica never wrote is lost).
    fn restart(&mut self, id: NodeId) {
        let old = self.nodes.remove(&id).expect("a node to restart");
        let settings = old.replica.settings().clone();
        let (fs, cfg) = (old.fs.clone(), old.cfg.clone());
        drop(old);
        fs.crash_with(&mut |_, _| 0, 0);
        let node = TestNode::start(fs, cfg, settings, &self.peers);
        self.nodes.insert(id, node);
    }

    /// Node `id` is asked `req`; the answers it gives at once.
    fn ask(&mut self, id: NodeId, req: Request<TestWaiters>) -> Vec<Answer<TestWaiters>> {
        let mut out = Output::default();
        let node = self.nodes.get_mut(&id).expect("a node to ask");
        node.replica.request(req, &mut out);
        self.queue.extend(out.messages);
        out.answers
    }

    fn replica(&self, id: NodeId) -> &Replica<TestWaiters> {
        &self.nodes[&id].replica
    }

    /// Node 1 proposes a put of `key` (a 2-byte key, an 8-byte value).
    fn put(&mut self, key: u64) {
        let cmd = Command {
            op: Some(command::Op::Put(TxnPut {
                key: format!("k{key}").into_bytes(),
                value: key.to_le_bytes().to_vec(),
            })),
            ..Command::default()
        };
        let req = Request::Write {
            data: cmd.encode_to_vec(),
            span: tracing::Span::none(),
            waiter: key,
        };
        let node = self.nodes.get_mut(&1).expect("node 1");
        node.replica.request(req, &mut Output::default());
        self.settle();
    }

    fn image(&self, id: NodeId) -> Vec<u8> {
        self.replica(id)
            .state()
            .read()
            .expect("state lock")
            .snapshot()
    }

    fn applied(&self, id: NodeId) -> Index {
        self.replica(id)
            .state()
            .read()
            .expect("state lock")
            .applied()
    }
}

#[test]
fn members_configured_with_different_limits_reach_the_same_state() {
    // A rolling configuration change: node 1, the leader, has the new quota (3 keys), node 2 the old one.
    let mut c = cluster(2, |cfg, settings| {
        if cfg.id == 1 {
            settings.limits.quota_bytes = 30;
        }
    });
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    for key in 0..6 {
        c.put(key);
    }
    c.tick(5);
    assert_eq!(c.applied(1), c.applied(2));
    assert_eq!(c.image(1), c.image(2), "the members' states differ");
    let sm = c.replica(2).state().read().expect("state lock").clone();
    assert_eq!(
        sm.quota_bytes(),
        30,
        "the leader's proposal is the agreed quota"
    );
    assert_eq!(sm.size_bytes(), 30);
}

#[test]
fn without_a_margin_a_follower_behind_a_compaction_is_sent_the_snapshot() {
    let mut c = cluster(3, |_, settings| settings.snapshot_entries = 5);
    c.tick(20);
    c.cut.insert(3);
    for key in 0..8 {
        c.put(key);
    }
    c.tick(2);
    c.cut.clear();
    c.sent.clear();
    c.tick(10);
    let snapshots = c
        .sent
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Snapshot { .. }));
    assert!(
        snapshots.count() > 0,
        "the snapshot install path is not exercised"
    );
    assert_eq!(c.applied(3), c.applied(1));
}

#[test]
fn a_follower_slightly_behind_a_compaction_catches_up_from_the_log() {
    let mut c = cluster(3, |cfg, settings| {
        settings.snapshot_entries = 5;
        cfg.catch_up_entries = 20;
        cfg.catch_up_bytes = 1 << 20;
    });
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    c.cut.insert(3);
    for key in 0..8 {
        c.put(key);
    }
    c.tick(2);
    let leader_snapshot = c.replica(1).raft().snapshot().meta.index;
    let behind = c.replica(3).raft().last_index();
    assert!(leader_snapshot > behind, "{leader_snapshot} <= {behind}");
    c.cut.clear();
    c.sent.clear();
    c.tick(10);
    let snapshots = c
        .sent
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Snapshot { .. }));
    assert_eq!(snapshots.count(), 0, "node 3 was sent a snapshot");
    assert_eq!(c.applied(3), c.applied(1));
}

/// Defect 7 of issue 9: a read that a follower forwarded to a leader which then lost leadership used to wait
/// for its full request timeout. It must fail, retryable, as soon as the follower sees another leader.
#[test]
fn a_forwarded_read_fails_fast_when_the_leader_changes() {
    let timeout_ticks = 10_000;
    let mut c = cluster(3, |_, settings| {
        settings.request_timeout_ticks = timeout_ticks
    });
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    // Node 2's request for a read index never reaches node 1.
    c.cut_links.insert((2, 1));
    let node = c.nodes.get_mut(&2).expect("node 2");
    node.replica
        .request(Request::ReadIndex { waiter: 7 }, &mut Output::default());
    c.tick(2);
    assert!(c.nodes[&2].answers.is_empty(), "the read waits");

    c.cut.insert(1);
    let mut ticks = 0;
    while c.replica(2).raft().status().leader.is_none_or(|l| l == 1) {
        assert!(ticks < 300, "node 2 sees no new leader");
        c.tick(1);
        ticks += 1;
    }
    assert!(
        matches!(
            c.nodes[&2].answers.as_slice(),
            [Answer::Read(7, Err(NodeError::Unavailable(_)))]
        ),
        "the read must fail, retryable, once the leader changed ({ticks} ticks, timeout {timeout_ticks}): {} answers",
        c.nodes[&2].answers.len()
    );
}

/// A membership change takes effect when it commits, so the commit of one is written at once (not left to
/// ride along with the next write): a node restarted just after it keeps the new membership. Had it gone
/// back to the old one, a cluster shrunk to one voter would wait forever for the removed member's vote.
#[test]
fn a_node_restarted_after_a_removal_committed_keeps_the_new_membership() {
    let mut c = cluster(3, |_, _| {});
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    let remove = Request::RemoveMember { id: 3, waiter: () };
    let node = c.nodes.get_mut(&1).expect("node 1");
    node.replica.request(remove, &mut Output::default());
    c.settle();
    assert!(
        matches!(c.nodes[&1].answers.as_slice(), [Answer::Members((), Ok(_))]),
        "the removal is not answered"
    );
    assert_eq!(c.replica(1).raft().conf().voters, vec![1, 2]);

    // No tick between the commit and the restart: nothing else is written that the commit could ride on.
    c.restart(1);
    assert_eq!(
        c.replica(1).raft().conf().voters,
        vec![1, 2],
        "node 1 went back to the membership before the removal"
    );
}

/// A member added to stay a learner (`member add --learner`) stays one after it caught up, until it is asked
/// to be promoted; promoting a voter, a stranger, or through a follower is refused with etcd's messages.
#[test]
fn a_learner_added_to_stay_one_is_promoted_only_when_asked() {
    let mut c = cluster(3, |_, _| {});
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    let settings = Settings {
        id: 4,
        client_addr: "n4:0".into(),
        bootstrap_peers: BTreeMap::new(),
        incarnation: 4 << 32,
        ..c.replica(1).settings().clone()
    };
    let mut cfg = reinado_raft::Config::new(4);
    cfg.election_ticks = 30;
    let joining = TestNode::start_as(FaultyFs::new(4), cfg, settings, &Start::Join("n1:0".into()));
    c.nodes.insert(4, joining);

    let refused = |answers: Vec<Answer<TestWaiters>>| match answers.as_slice() {
        [Answer::Members((), Err(e))] => e.to_string(),
        _ => panic!("a refusal expected at once, got {} answers", answers.len()),
    };
    let promote = || Request::PromoteMember { id: 4, waiter: () };
    let err = refused(c.ask(1, promote()));
    assert!(err.contains("etcdserver: member not found"), "{err}");

    let ctx = MemberContext {
        peer_addr: "n4:1".into(),
        stay_learner: true,
        ..MemberContext::default()
    };
    c.ask(
        1,
        Request::AddMember {
            id: 4,
            ctx,
            waiter: (),
        },
    );
    c.tick(40);
    assert_eq!(
        c.replica(1).raft().conf().learners,
        vec![4],
        "node 4 is not a learner any more"
    );
    let status = c.replica(1).raft().status();
    let learner = status.peers.iter().find(|p| p.id == 4).expect("node 4");
    assert_eq!(
        learner.match_index,
        c.replica(1).raft().last_index(),
        "node 4 caught up"
    );

    let err = refused(c.ask(1, Request::PromoteMember { id: 2, waiter: () }));
    assert!(
        err.contains("etcdserver: can only promote a learner member"),
        "{err}"
    );
    let err = refused(c.ask(2, promote()));
    assert!(err.contains("not the leader"), "{err}");

    assert!(
        c.ask(1, promote()).is_empty(),
        "the promotion waits for its commit"
    );
    c.settle();
    let answers = std::mem::take(&mut c.nodes.get_mut(&1).expect("node 1").answers);
    assert!(
        matches!(answers.last(), Some(Answer::Members((), Ok(_)))),
        "the promotion is not answered"
    );
    assert_eq!(c.replica(1).raft().conf().voters, vec![1, 2, 3, 4]);
    assert!(c.replica(1).raft().conf().learners.is_empty());
}

/// The log is compacted by bytes too: large values reach `snapshot_bytes` long before `snapshot_entries`,
/// and the snapshot then comes at once (without it, the log would hold 10,000 of them).
#[test]
fn a_log_of_large_values_is_compacted_by_bytes() {
    let mut c = cluster(3, |_, settings| settings.snapshot_bytes = 16 << 10);
    c.tick(20);
    assert_eq!(c.replica(1).raft().role(), Role::Leader);
    let first = c.replica(1).raft().snapshot().meta.index;
    let value = vec![7u8; 4 << 10];
    for key in 0..12u64 {
        let cmd = Command {
            op: Some(command::Op::Put(TxnPut {
                key: format!("big{key}").into_bytes(),
                value: value.clone(),
            })),
            ..Command::default()
        };
        let req = Request::Write {
            data: cmd.encode_to_vec(),
            span: tracing::Span::none(),
            waiter: key,
        };
        c.ask(1, req);
        c.settle();
    }
    for id in 1..=3 {
        let snap = c.replica(id).raft().snapshot().meta.index;
        assert!(
            snap > first,
            "node {id} took no snapshot past {first} ({snap})"
        );
        let kept = c.replica(id).raft().last_index() - snap;
        assert!(
            kept <= 5,
            "node {id} keeps {kept} entries past its snapshot"
        );
    }
}
