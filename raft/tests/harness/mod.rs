//! An in-memory, deterministic network of Raft nodes for the integration tests.
//!
//! Each [`Node`] is a [`Raft`] plus what a real server would keep around it: a [`Storage`] (the durable entries,
//! hard state and snapshot, written synchronously at every `Ready`) and a toy key-value state machine fed by the
//! committed entries (`"key=value"` sets a key). Delivery is explicit: messages wait in one FIFO queue and
//! [`Network::deliver_all`] steps them into their receivers, driving every `ready`/`advance` cycle, until
//! nothing is left to do. Nothing depends on a clock or on hashing order, so a test replays exactly.
//!
//! Faults: `drop`/`cut`/`isolate`/`heal` block links, a [`Verdict`] hook drops or holds messages by predicate,
//! `crash`/`restart` rebuild a node from its storage. Every `Ready` is checked (durability ordering) and every
//! applied entry is checked against what the other nodes applied at that index (state-machine safety).

#![allow(dead_code)]

use reinado_raft::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

/// What the hook decides for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it for delivery.
    Deliver,
    /// Lose it.
    Drop,
    /// Keep it aside until [`Network::release_held`].
    Hold,
}

/// What one node has made durable.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The last persisted snapshot.
    pub snapshot: Option<Snapshot>,
    /// The persisted entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl Storage {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    /// The last durable index (the snapshot's if there are no entries after it).
    pub fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if let Some(s) = &self.snapshot
            && s.meta.index == index
        {
            return Some(s.meta.term);
        }
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    /// Writes what a `Ready` asks for: snapshot first, then entries (replacing a suffix), then the hard state.
    fn persist(&mut self, ready: &Ready) {
        if let Some(snap) = &ready.snapshot {
            let index = snap.meta.index;
            if self.term(index) == Some(snap.meta.term) {
                self.entries.retain(|e| e.index > index);
            } else {
                self.entries.clear();
            }
            self.snapshot = Some(snap.clone());
        }
        if let Some(first) = ready.entries.first() {
            assert!(
                first.index > self.snapshot_index() && first.index <= self.last_index() + 1,
                "Ready entries from {} leave a gap after {}",
                first.index,
                self.last_index()
            );
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hs) = ready.hard_state {
            self.hard_state = hs;
        }
    }

    /// Records a snapshot the application took and drops the entries it covers.
    fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = Some(snapshot);
    }

    /// What `Raft::new` needs to rebuild the node after a restart.
    pub fn restore(&self) -> Restore {
        Restore {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// One member: the Raft core, its storage and its state machine.
#[derive(Debug)]
pub struct Node {
    /// The consensus core.
    pub raft: Raft,
    /// What it has made durable.
    pub storage: Storage,
    /// The entries applied since the node started (or last installed a snapshot), in order.
    pub applied: Vec<Entry>,
    /// The last applied index.
    pub applied_index: Index,
    /// The toy state machine.
    pub kv: BTreeMap<String, String>,
    /// Answers to `read_index`, oldest first.
    pub read_states: Vec<ReadState>,
    /// False while crashed: it neither ticks nor receives.
    pub up: bool,
}

impl Node {
    fn new(raft: Raft) -> Node {
        Node {
            raft,
            storage: Storage::default(),
            applied: Vec::new(),
            applied_index: 0,
            kv: BTreeMap::new(),
            read_states: Vec::new(),
            up: true,
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) {
        self.kv = decode_kv(&snapshot.data);
        self.applied.clear();
        self.applied_index = snapshot.meta.index;
    }

    fn apply(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "node {} applied out of order",
            self.raft.id()
        );
        self.applied_index = entry.index;
        if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
            let text = String::from_utf8_lossy(&entry.data).into_owned();
            let (k, v) = text.split_once('=').unwrap_or((&text, ""));
            self.kv.insert(k.to_string(), v.to_string());
        }
        self.applied.push(entry.clone());
    }
}

/// The state machine's snapshot form: one `key=value` line per key, sorted.
pub fn encode_kv(kv: &BTreeMap<String, String>) -> Vec<u8> {
    kv.iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>()
        .into_bytes()
}

/// The inverse of [`encode_kv`].
pub fn decode_kv(data: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Messages a node may send before its `Ready` is durable: only a leader's (thesis §10.2.1). Everything else a
/// node says (votes, append and snapshot answers, heartbeat answers) depends on durable state.
fn may_leave_before_persist(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndexResponse { .. }
            // A leader telling a stale leader its newer term.
            | MessageBody::AppendResponse { reject: true, index: 0, .. }
    )
}

type Hook = Box<dyn FnMut(&Message) -> Verdict>;

/// A cluster of nodes joined by an in-memory network.
pub struct Network {
    /// The members, by id.
    pub nodes: BTreeMap<NodeId, Node>,
    tweak: Rc<dyn Fn(&mut Config)>,
    queue: VecDeque<Message>,
    /// Messages the hook held back.
    pub held: Vec<Message>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    hook: Option<Hook>,
    /// Every message that left a node, before any filter, in order.
    pub sent: Vec<Message>,
    /// Every message stepped into a node, in order.
    pub delivered: Vec<Message>,
    applied_terms: BTreeMap<Index, (Term, NodeId)>,
    leaders: BTreeMap<Term, NodeId>,
    /// Safety violations seen (two entries applied at one index, two leaders in one term).
    pub violations: Vec<String>,
    /// Panic as soon as a violation is seen (the default).
    pub strict: bool,
}

impl Network {
    /// `n` nodes (ids 1..=n) bootstrapped as the voters of a new cluster, with the default configuration.
    pub fn new(n: u64) -> Network {
        Network::with_config(n, |_| {})
    }

    /// Like [`Network::new`], with `tweak` applied to every node's configuration (also to nodes added later).
    pub fn with_config(n: u64, tweak: impl Fn(&mut Config) + 'static) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            tweak: Rc::new(tweak),
            queue: VecDeque::new(),
            held: Vec::new(),
            blocked: BTreeSet::new(),
            hook: None,
            sent: Vec::new(),
            delivered: Vec::new(),
            applied_terms: BTreeMap::new(),
            leaders: BTreeMap::new(),
            violations: Vec::new(),
            strict: true,
        };
        let voters: Vec<NodeId> = (1..=n).collect();
        for &id in &voters {
            let raft = Raft::bootstrap(net.config(id), &voters).expect("bootstrap");
            net.nodes.insert(id, Node::new(raft));
        }
        net.deliver_all();
        net
    }

    /// The configuration node `id` gets.
    pub fn config(&self, id: NodeId) -> Config {
        let mut cfg = Config::new(id);
        (self.tweak)(&mut cfg);
        cfg
    }

    /// Starts an empty node (not yet a member): it waits to be added and learns everything from the leader.
    pub fn add_node(&mut self, id: NodeId) {
        let raft = Raft::new(self.config(id), Restore::default()).expect("new node");
        self.nodes.insert(id, Node::new(raft));
    }

    /// Node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Node `id`, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Node `id`'s Raft.
    pub fn raft(&self, id: NodeId) -> &Raft {
        &self.node(id).raft
    }

    /// Node `id`'s Raft, mutably (call [`Network::deliver_all`] after driving it).
    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        &mut self.node_mut(id).raft
    }

    /// Node `id`'s status.
    pub fn status(&self, id: NodeId) -> Status {
        self.raft(id).status()
    }

    // ----- filters -----

    /// Loses every message from `from` to `to`.
    pub fn drop(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Loses every message between `a` and `b`, both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.drop(a, b);
        self.drop(b, a);
    }

    /// Cuts `id` off from every other node (including nodes added later only if isolated again).
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for other in others {
            self.cut(id, other);
        }
    }

    /// Removes every blocked link (the hook stays).
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Decides the fate of every message sent from now on (after the link filters).
    pub fn set_hook(&mut self, hook: impl FnMut(&Message) -> Verdict + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Removes the hook.
    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    /// Queues the held messages for delivery and delivers everything.
    pub fn release_held(&mut self) {
        self.queue.extend(self.held.drain(..));
        self.deliver_all();
    }

    /// Takes the record of sent messages.
    pub fn take_sent(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.sent)
    }

    // ----- delivery -----

    fn route(&mut self, m: Message) {
        self.sent.push(m.clone());
        if self.blocked.contains(&(m.from, m.to)) {
            return;
        }
        let verdict = self.hook.as_mut().map_or(Verdict::Deliver, |h| h(&m));
        match verdict {
            Verdict::Deliver => self.queue.push_back(m),
            Verdict::Hold => self.held.push(m),
            Verdict::Drop => {}
        }
    }

    /// Steps `m` into its receiver, bypassing the filters (as if it had just arrived), and delivers everything.
    pub fn send(&mut self, m: Message) {
        self.queue.push_back(m);
        self.deliver_all();
    }

    /// Runs `ready`/`advance` cycles and delivers messages until no node has anything left to do.
    pub fn deliver_all(&mut self) {
        let mut budget = 100_000;
        loop {
            budget -= 1;
            if budget == 0 {
                let tail = &self.delivered[self.delivered.len().saturating_sub(12)..];
                panic!("the network did not quiesce; last delivered: {tail:#?}");
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.process(id);
            }
            let Some(m) = self.queue.pop_front() else {
                break;
            };
            let Some(node) = self.nodes.get_mut(&m.to) else {
                continue;
            };
            if !node.up {
                continue;
            }
            self.delivered.push(m.clone());
            node.raft.step(m);
        }
        if self.strict && !self.violations.is_empty() {
            panic!("safety violations: {:?}", self.violations);
        }
    }

    /// Drives node `id`'s `ready`/`advance` cycles: send at once, persist, advance, send the rest, apply.
    fn process(&mut self, id: NodeId) {
        for _ in 0..10_000 {
            let node = self.nodes.get_mut(&id).expect("no such node");
            if !node.up || !node.raft.has_ready() {
                return;
            }
            let mut ready = node.raft.ready();
            for m in &ready.messages {
                assert!(
                    may_leave_before_persist(m),
                    "node {id} sent {m:?} before persisting (role {:?})",
                    node.raft.status().role
                );
            }
            let early = std::mem::take(&mut ready.messages);
            let became_leader = ready
                .soft_state
                .is_some_and(|s| s.role == Role::Leader)
                .then(|| node.raft.status().term);
            node.storage.persist(&ready);
            if let Some(snap) = &ready.snapshot {
                node.install_snapshot(snap);
            }
            let done = node.raft.advance(ready);
            for m in &done.messages {
                check_durable(id, &node.storage, m);
            }
            for entry in &done.committed_entries {
                node.apply(entry);
            }
            node.read_states.extend(done.read_states);
            for entry in &done.committed_entries {
                self.check_applied(id, entry);
            }
            if let Some(term) = became_leader {
                self.check_leader(id, term);
            }
            for m in early.into_iter().chain(done.messages) {
                self.route(m);
            }
        }
        panic!("node {id} keeps reporting a Ready: {:?}", self.status(id));
    }

    fn check_applied(&mut self, id: NodeId, entry: &Entry) {
        let first = *self
            .applied_terms
            .entry(entry.index)
            .or_insert((entry.term, id));
        if first.0 != entry.term {
            self.violations.push(format!(
                "node {id} applied index {} of term {}, node {} applied term {}",
                entry.index, entry.term, first.1, first.0
            ));
        }
    }

    fn check_leader(&mut self, id: NodeId, term: Term) {
        let first = *self.leaders.entry(term).or_insert(id);
        if first != id {
            self.violations
                .push(format!("nodes {first} and {id} both led term {term}"));
        }
    }

    // ----- time -----

    /// Ticks every live node once, `n` times, delivering everything after each round.
    pub fn tick_all(&mut self, n: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.tick_nodes(&ids, n);
    }

    /// Ticks only the given nodes, `n` rounds, delivering after each round.
    pub fn tick_nodes(&mut self, ids: &[NodeId], n: usize) {
        for _ in 0..n {
            for &id in ids {
                if self.node(id).up {
                    self.raft_mut(id).tick();
                }
            }
            self.deliver_all();
        }
    }

    /// Ticks the given nodes one round at a time until `done` holds; returns the rounds it took (panics after
    /// `max` rounds).
    pub fn tick_until(
        &mut self,
        ids: &[NodeId],
        max: usize,
        mut done: impl FnMut(&Network) -> bool,
    ) -> usize {
        for round in 0..=max {
            if done(self) {
                return round;
            }
            self.tick_nodes(ids, 1);
        }
        panic!("condition not reached within {max} rounds");
    }

    // ----- client operations -----

    /// Makes `id` campaign (skipping the pre-vote) until it leads; a few attempts cover term collisions.
    pub fn elect(&mut self, id: NodeId) {
        for _ in 0..5 {
            self.raft_mut(id).start_election();
            self.deliver_all();
            if self.status(id).role == Role::Leader {
                return;
            }
        }
        panic!("node {id} could not be elected: {:?}", self.status(id));
    }

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.up && n.raft.status().role == Role::Leader)
            .max_by_key(|n| n.raft.status().term)
            .map(|n| n.raft.id())
    }

    /// Proposes `data` on `id` and delivers everything.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<(Index, Term), Error> {
        let res = self.raft_mut(id).propose(data.to_vec());
        self.deliver_all();
        res
    }

    /// Proposes a membership change on `id` and delivers everything.
    pub fn conf_change(
        &mut self,
        id: NodeId,
        kind: ConfChangeKind,
        node_id: NodeId,
    ) -> Result<(Index, Term), Error> {
        let cc = ConfChange {
            kind,
            node_id,
            context: Vec::new(),
        };
        let res = self.raft_mut(id).propose_conf_change(cc);
        self.deliver_all();
        res
    }

    /// Asks `id` for a read index and delivers everything.
    pub fn read_index(&mut self, id: NodeId, ctx: &[u8]) {
        self.raft_mut(id).read_index(ctx.to_vec());
        self.deliver_all();
    }

    /// Takes node `id`'s read answers.
    pub fn take_read_states(&mut self, id: NodeId) -> Vec<ReadState> {
        std::mem::take(&mut self.node_mut(id).read_states)
    }

    /// Snapshots node `id`'s state machine at its applied index and compacts its log there.
    pub fn compact(&mut self, id: NodeId) -> SnapshotMeta {
        let node = self.node_mut(id);
        let data = encode_kv(&node.kv);
        let index = node.applied_index;
        let meta = node.raft.compact(index, data.clone()).expect("compact");
        node.storage.compact(Snapshot {
            meta: meta.clone(),
            data,
        });
        self.deliver_all();
        meta
    }

    // ----- crashes -----

    /// Stops node `id`: it loses everything but its storage.
    pub fn crash(&mut self, id: NodeId) {
        self.node_mut(id).up = false;
    }

    /// Rebuilds node `id` from its storage with `Raft::new`, as a real server does after a restart, and
    /// re-applies its committed entries from its snapshot.
    pub fn restart(&mut self, id: NodeId) {
        let cfg = self.config(id);
        let node = self.node_mut(id);
        node.raft = Raft::new(cfg, node.storage.restore()).expect("restart");
        node.up = true;
        node.read_states.clear();
        match node.storage.snapshot.clone() {
            Some(snap) => node.install_snapshot(&snap),
            None => {
                node.kv.clear();
                node.applied.clear();
                node.applied_index = 0;
            }
        }
        self.deliver_all();
    }

    /// [`Network::crash`] then [`Network::restart`].
    pub fn crash_and_restart(&mut self, id: NodeId) {
        self.crash(id);
        self.restart(id);
    }
}

/// Checks that a message released by `advance` only claims what `storage` holds.
fn check_durable(id: NodeId, storage: &Storage, m: &Message) {
    let hs = storage.hard_state;
    match m.body {
        MessageBody::VoteResponse {
            pre_vote: false,
            reject: false,
            ..
        } => assert!(
            hs.term == m.term && hs.vote == Some(m.to),
            "node {id} granted a vote to {} in term {} before persisting it ({hs:?})",
            m.to,
            m.term
        ),
        MessageBody::AppendResponse {
            reject: false,
            index,
            ..
        } => assert!(
            storage.last_index() >= index,
            "node {id} acknowledged index {index} with only {} durable",
            storage.last_index()
        ),
        _ => {}
    }
    let pre_vote = matches!(
        m.body,
        MessageBody::Vote { pre_vote: true, .. } | MessageBody::VoteResponse { pre_vote: true, .. }
    );
    if !pre_vote {
        assert!(
            m.term <= hs.term,
            "node {id} sent term {} with term {} durable: {m:?}",
            m.term,
            hs.term
        );
    }
}

/// Runs `ready`/`advance` on a lone Raft until it has nothing to do; returns every message it sent.
pub fn drain(raft: &mut Raft) -> Vec<Message> {
    let mut out = Vec::new();
    while raft.has_ready() {
        let mut ready = raft.ready();
        out.append(&mut ready.messages);
        let done = raft.advance(ready);
        out.extend(done.messages);
    }
    out
}
