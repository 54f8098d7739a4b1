//! The replica in a small in-memory cluster: three replicas over `DiskStorage` on `FaultyFs`, a router that
//! can cut links, and ticks driven by the test.

use super::*;
use crate::config::Start;
use crate::state::Limits;
use reinado_raft::{Config, Role};
use reinado_storage::{FaultyFs, Options};
use std::collections::BTreeSet;
use std::path::Path;

/// Waiters that are plain numbers, so a test can tell answers apart.
struct Ids;

impl Waiters for Ids {
    type Write = u64;
    type Read = u64;
    type Members = u64;
    type Leader = u64;
}

/// Long enough that no answer in these tests can come from a timeout.
const REQUEST_TIMEOUT_TICKS: u64 = 10_000;

struct Member {
    replica: Replica<Ids>,
    storage: DiskStorage,
    answers: Vec<Answer<Ids>>,
}

struct Cluster {
    members: BTreeMap<NodeId, Member>,
    /// Links (from, to) whose messages are dropped.
    cut: BTreeSet<(NodeId, NodeId)>,
    ticks: u64,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let peers: BTreeMap<NodeId, String> =
            (1..=size).map(|id| (id, format!("n{id}:1"))).collect();
        let start = Start::Bootstrap(peers.clone());
        let members = peers
            .keys()
            .map(|&id| (id, Self::member(id, &start, &peers)))
            .collect();
        Cluster {
            members,
            cut: BTreeSet::new(),
            ticks: 0,
        }
    }

    fn member(id: NodeId, start: &Start, peers: &BTreeMap<NodeId, String>) -> Member {
        let fs = FaultyFs::new(id);
        let opts = Options {
            segment_size_bytes: 64 << 10,
            ..Options::default()
        };
        let (storage, recovered) =
            DiskStorage::open_with(Arc::new(fs), Path::new("/data"), opts).expect("empty disk");
        let mut cfg = Config::new(id);
        cfg.seed = id * 7919;
        let opened = open(cfg, start, recovered, Limits::default()).expect("bootstrap");
        let settings = Settings {
            id,
            client_addr: format!("n{id}:2"),
            election_ticks: 10,
            snapshot_entries: 1_000,
            request_timeout_ticks: REQUEST_TIMEOUT_TICKS,
            bootstrap_peers: peers.clone(),
            incarnation: id << 32,
            record_applied: false,
            limits: Limits::default(),
            bugs: Bugs::default(),
        };
        let state = Arc::new(RwLock::new(opened.state));
        Member {
            replica: Replica::new(opened.raft, state, settings),
            storage,
            answers: Vec::new(),
        }
    }

    /// Runs every member's Ready loop and delivers messages until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut messages = Vec::new();
            for m in self.members.values_mut() {
                let mut out = Output::default();
                while m
                    .replica
                    .write_ready(&mut m.storage, &mut out)
                    .expect("write")
                {
                    m.storage.sync().expect("sync");
                    m.replica.synced(&mut m.storage, &mut out).expect("synced");
                }
                messages.append(&mut out.messages);
                m.answers.append(&mut out.answers);
            }
            if messages.is_empty() {
                return;
            }
            for msg in messages {
                if self.cut.contains(&(msg.from, msg.to)) {
                    continue;
                }
                if let Some(m) = self.members.get_mut(&msg.to) {
                    m.replica.step(msg);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        for m in self.members.values_mut() {
            let mut out = Output::default();
            m.replica.tick(&mut out);
            m.answers.append(&mut out.answers);
        }
        self.settle();
    }

    /// Ticks until `until` holds, failing the test after `max` ticks.
    fn tick_until(&mut self, max: u64, what: &str, until: impl Fn(&Cluster) -> bool) {
        for _ in 0..max {
            if until(self) {
                return;
            }
            self.tick();
        }
        panic!("{what}: not within {max} ticks");
    }

    fn leader(&self) -> Option<NodeId> {
        self.members
            .iter()
            .find(|(_, m)| m.replica.raft().role() == Role::Leader)
            .map(|(&id, _)| id)
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.members.keys() {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    fn request(&mut self, id: NodeId, req: Request<Ids>) {
        let m = self.members.get_mut(&id).expect("member");
        let mut out = Output::default();
        m.replica.request(req, &mut out);
        m.answers.append(&mut out.answers);
        self.settle();
    }
}

/// Defect 7 of issue 9: a read a follower forwarded to a leader that then lost leadership used to wait for
/// its full request timeout. It must fail (retryable) as soon as the follower sees another leader.
#[test]
fn a_forwarded_read_fails_fast_when_the_leader_changes() {
    let mut c = Cluster::new(3);
    c.tick_until(200, "a first leader", |c| c.leader().is_some());
    let old = c.leader().expect("leader");
    let follower = *c.members.keys().find(|&&id| id != old).expect("follower");
    // The read index request never reaches the old leader.
    c.cut.insert((follower, old));
    c.request(follower, Request::ReadIndex { waiter: 7 });
    c.tick();
    assert!(c.members[&follower].answers.is_empty(), "the read waits");

    c.isolate(old);
    let start = c.ticks;
    c.tick_until(200, "the follower sees a new leader", |c| {
        let leader = c.members[&follower].replica.raft().status().leader;
        leader.is_some_and(|l| l != old)
    });
    let answers = &c.members[&follower].answers;
    assert!(
        matches!(
            answers.as_slice(),
            [Answer::Read(7, Err(NodeError::Unavailable(_)))]
        ),
        "the read must fail, retryable, once the leader changed (after {} ticks, timeout {}): {} answers",
        c.ticks - start,
        REQUEST_TIMEOUT_TICKS,
        answers.len()
    );
}
