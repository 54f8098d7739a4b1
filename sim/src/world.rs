//! The simulated world: an event queue in virtual milliseconds, a network that loses, duplicates, delays and
//! partitions, nodes (the node's own replica over the real storage code) that crash, restart and lose
//! unsynced data, an operator that changes membership and transfers leadership through the replica's own
//! requests, and clients whose history is checked for linearizability. Everything is drawn from one seed.

use crate::checker::{Checker, check_log_matching};
use crate::faults::{Fault, FaultMix, Profile};
use crate::linearizability::{
    self, Cond, GROUP_KEYS, Group, KvOp, Operation, Txn, Write, group_of, key_at,
};
use crate::node::{Reply, Request, Response, SimNode, SimWaiters};
use crate::sessions::{ClientSession, SessionMix};
use reinado_node::config::Start;
use reinado_node::error::NodeError;
use reinado_node::replica::{
    self, BootstrapDecision, Output, ProbeAnswer, Settings, bootstrap_decision,
};
use reinado_proto::v1::MemberContext;
use reinado_raft::{Bugs, ConfState, Config, Message, NodeId, Raft, Rng, Role};
use reinado_storage::FaultyFs;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

mod disk;
mod leases;

/// Milliseconds between two ticks of a node (each node's clock runs a little fast or slow).
const TICK_MS: u64 = 10;
/// A client attempt with no answer after this long is retried elsewhere.
const ATTEMPT_TIMEOUT_MS: u64 = 300;
/// A client gives up on an operation after this long; its outcome is then unknown.
const OP_DEADLINE_MS: u64 = 3_000;
/// The most client operations in flight at once, over all clients: a client keeps fewer than
/// [`SessionMix::in_flight`] when there are many clients (the cost of a run grows with the operations).
const MAX_OPS_IN_FLIGHT: u64 = 8;
/// Keys the clients use: few, so that operations contend; four groups for multi-key operations.
const KEYS: u64 = 4 * GROUP_KEYS as u64;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice is drawn from.
    pub seed: u64,
    /// Virtual milliseconds of the safety phase (faults on).
    pub safety_ms: u64,
    /// The most virtual milliseconds the liveness phase may take to converge after healing.
    pub liveness_ms: u64,
    /// Print a readable trace of every event.
    pub verbose: bool,
    /// Deliberate protocol bugs in the core.
    pub bugs: Bugs,
    /// Deliberate bug in the nodes: serve reads locally without ReadIndex.
    pub read_without_read_index: bool,
    /// Deliberate bugs in the nodes' answers to lock contenders.
    pub lock_bugs: crate::node::LockBugs,
    /// Deliberate bugs in the replica.
    pub replica_bugs: replica::Bugs,
    /// Deliberate bugs in the storage.
    pub storage_bugs: reinado_storage::StorageBugs,
    /// The family of fault mixes to draw from.
    pub profile: Profile,
}

impl SimConfig {
    /// The standard run for `seed`.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            safety_ms: 6_000,
            liveness_ms: 8_000,
            verbose: false,
            bugs: Bugs::default(),
            read_without_read_index: false,
            lock_bugs: crate::node::LockBugs::default(),
            replica_bugs: replica::Bugs::default(),
            storage_bugs: reinado_storage::StorageBugs::default(),
            profile: Profile::Swarm,
        }
    }
}

/// Measurements of one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Ticks from losing a leader (crash or isolation) to the next leader being elected.
    pub election_ticks: Vec<u64>,
    /// Ticks from healing to a converged cluster.
    pub recovery_ticks: Option<u64>,
    /// Client operations acknowledged.
    pub ops_ok: u64,
    /// Client operations whose outcome stayed unknown.
    pub ops_unknown: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Messages delivered.
    pub messages: u64,
    /// Entries committed.
    pub committed: u64,
    /// Lease expiries checked against the holders' acknowledged renewals.
    pub lease_expiries: u64,
    /// The smallest margin by which a lease outlived its TTL on the renewing node's clock, in milliseconds.
    pub lease_min_margin_ms: Option<u64>,
    /// Lock turns checked against the other contenders' keys.
    pub lock_grants: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The first violation found, if any.
    pub violation: Option<String>,
    /// Measurements.
    pub stats: Stats,
}

#[derive(Debug)]
enum Event {
    Tick(NodeId, u64),
    Deliver(Message),
    Synced(NodeId, u64),
    /// A client request reaching a node (boxed: a transaction is large, and events move in the heap).
    ToNode(NodeId, Box<Request>),
    /// A node's answer reaching its client.
    ToClient(Box<(Request, Response)>),
    /// (client, operation, attempt)
    AttemptTimeout(u64, u64, u64),
    ClientStart(u64),
    Restart(NodeId),
    /// (to, from): the transport tells `to` that its connection from `from` broke.
    PeerLost(NodeId, NodeId),
    Heal,
    Fault,
    CrashLeader(NodeId, u64),
    /// A supervisor restart: the node crashes and is back within milliseconds; sometimes again soon after.
    Bounce(NodeId, u64),
    /// The operator replaces a member whose disk was lost: removes it, then adds it again as a learner.
    Replace(NodeId),
    Stop(NodeId),
    /// The operator's next step in shrinking the cluster to one voter and growing it back.
    Resize,
    CheckLogs,
    CheckConverged,
    /// A lease holder's next move.
    HolderStep(u64),
    /// (holder, request number): no answer in time.
    HolderTimeout(u64, u64),
    /// A holder sends an operation again after a refusal.
    HolderRetry(u64, crate::node::LeaseOp),
    /// A lease holder's request reaching a node.
    LeaseToNode(NodeId, crate::node::LeaseRequest),
    /// A node's answer reaching a holder: (request, answer, the node, when it answered).
    LeaseAnswer(
        Box<(
            crate::node::LeaseRequest,
            crate::node::LeaseResponse,
            NodeId,
            u64,
        )>,
    ),
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Node {
    server: Option<SimNode>,
    /// The node's disk: survives crashes, minus what was not synced.
    fs: FaultyFs,
    /// How the node starts: as an initial member, or joining.
    start: Start,
    /// Bumped at each restart, so the ticks and fsyncs of an earlier life are ignored.
    incarnation: u64,
    tick_ms: u64,
    /// How fast its clock runs, in parts per million (negative: slow).
    clock_ppm: i64,
    stopped: bool,
    /// The process is paused until then: what reaches it waits.
    paused_until: u64,
    /// The last term this node was seen to lead.
    led_term: u64,
    /// The node lost its disk and has not started on the new one yet.
    wiped: bool,
    /// When it last lost its disk.
    wiped_at: u64,
    /// The operator replaces it: it joins again once removed.
    rejoin: bool,
    /// One of its next disk calls is to fail (`Fault::DiskError`): once it has, the node must be stopped.
    disk_error_armed: bool,
    /// A byte flipped in a synced record on its disk (`Fault::Corrupt`), until its next start attempt.
    flipped: Option<String>,
}

struct Client {
    seq: u64,
    /// How the client numbers and acknowledges its writes.
    session: ClientSession,
    leader_hint: Option<NodeId>,
    /// The operations in flight (at most [`SessionMix::in_flight`], fewer with many clients), by number.
    in_flight: BTreeMap<u64, InFlight>,
}

/// A client operation waiting for its answer.
#[derive(Clone, Copy)]
struct InFlight {
    /// Its latest attempt.
    req: Request,
    /// Its index in the history.
    index: usize,
    /// When it was first sent.
    started: u64,
}

/// The value operation `seq` of client `c` writes as its `n`th write (values are never written twice).
fn op_value(c: u64, seq: u64, n: usize) -> u64 {
    ((c + 1) << 40) | (seq << 3) | n as u64
}

/// One simulation run.
pub struct World {
    cfg: SimConfig,
    mix: FaultMix,
    sessions: SessionMix,
    rng: Rng,
    now: u64,
    seq: u64,
    logical: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: BTreeMap<NodeId, Node>,
    next_node_id: NodeId,
    blocked: BTreeSet<(NodeId, NodeId)>,
    healed: bool,
    clients: Vec<Client>,
    history: Vec<Operation>,
    /// Operations of `history` refused when applied: they took no effect, so the checker leaves them out.
    refused: BTreeSet<usize>,
    /// The value each key was last asked to hold (what conditions expect).
    recent: Vec<Option<u64>>,
    checker: Checker,
    stats: Stats,
    leaderless_since: Option<u64>,
    violation: Option<String>,
    converged: bool,
    /// The operator is shrinking the cluster to a single voter, or growing it back.
    resizing: Option<Resize>,
    /// Nodes the operator removed for good (not a lost disk's replacement, which joins again).
    removed: BTreeSet<NodeId>,
    holders: Vec<leases::Holder>,
    leases: crate::leases::LeaseChecker,
    locks: crate::locks::LockChecker,
}

/// The operator's resize episode: remove voters down to one, then add members back up to three voters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resize {
    Shrink,
    Grow,
}

impl World {
    /// Sets up a cluster of 3 or 5 bootstrapped voters and a few clients, all drawn from the seed.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = Rng::new(cfg.seed);
        let mix = match cfg.profile {
            Profile::Swarm => FaultMix::draw(&mut rng),
            Profile::LeaderChurn => FaultMix::leader_churn(&mut rng),
            Profile::LostDisks => FaultMix::lost_disks(&mut rng),
            Profile::Restarts => FaultMix::restarts(&mut rng),
        };
        let voters: Vec<NodeId> = (1..=if rng.range(0, 2) == 0 { 3 } else { 5 }).collect();
        let peers: BTreeMap<NodeId, String> = voters.iter().map(|&id| (id, addr(id))).collect();
        let mut world = World {
            mix,
            sessions: SessionMix::draw(cfg.seed),
            now: 0,
            seq: 0,
            logical: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            next_node_id: voters.len() as NodeId + 1,
            blocked: BTreeSet::new(),
            healed: false,
            clients: Vec::new(),
            history: Vec::new(),
            refused: BTreeSet::new(),
            recent: vec![None; KEYS as usize],
            checker: Checker::default(),
            stats: Stats::default(),
            leaderless_since: Some(0),
            violation: None,
            converged: false,
            resizing: None,
            removed: BTreeSet::new(),
            holders: Vec::new(),
            leases: crate::leases::LeaseChecker::default(),
            locks: crate::locks::LockChecker::default(),
            rng,
            cfg,
        };
        for &id in &voters {
            world.add_node(id, Start::Bootstrap(peers.clone()));
        }
        for c in 0..world.mix.clients {
            let session = ClientSession::new(c, world.sessions.lazy_acks);
            world.clients.push(Client {
                seq: 0,
                session,
                leader_hint: None,
                in_flight: BTreeMap::new(),
            });
            // Each of the client's lanes keeps one operation in flight.
            let lanes =
                (world.sessions.in_flight as u64).min(MAX_OPS_IN_FLIGHT / world.mix.clients);
            for _ in 0..lanes.max(1) {
                let at = world.rng.range(0, 50);
                world.schedule(at, Event::ClientStart(c));
            }
        }
        world.start_holders();
        let first_fault = world.mix.fault_interval_ms;
        world.schedule(first_fault, Event::Fault);
        world.schedule(100, Event::CheckLogs);
        world.schedule(world.cfg.safety_ms, Event::Heal);
        world
    }

    fn raft_config(&mut self, id: NodeId) -> Config {
        let mut cfg = Config::new(id);
        cfg.election_ticks = 10;
        cfg.heartbeat_ticks = 2;
        cfg.max_inflight = self.mix.max_inflight;
        cfg.max_append_bytes = self.mix.max_append_bytes;
        cfg.snapshot_chunk_bytes = 256;
        cfg.seed = self.rng.next_u64();
        cfg.bugs = self.cfg.bugs;
        cfg.verify_snapshot = Some(reinado_node::state::verify_snapshot);
        // A leader cut off or ahead of slow followers refuses writes beyond a few hundred bytes to two KiB of uncommitted ones.
        cfg.max_uncommitted_bytes = 512 + 256 * (self.mix.snapshot_every % 8);
        // Far above any state a run builds: a refused chunk of a correct leader fails the run.
        cfg.max_snapshot_bytes = 4 << 20;
        (cfg.catch_up_entries, cfg.catch_up_bytes) =
            catch_up(self.cfg.seed, self.mix.snapshot_every);
        cfg
    }

    fn settings(&mut self, id: NodeId, start: &Start) -> Settings {
        Settings {
            id,
            client_addr: addr(id),
            election_ticks: 10,
            tick_ms: TICK_MS,
            snapshot_entries: self.mix.snapshot_every,
            // Some seeds compact by bytes before the count: a few hundred bytes per entry of the count.
            snapshot_bytes: self.mix.snapshot_every * (100 + 50 * (self.mix.snapshot_every % 8)),
            request_timeout_ticks: ATTEMPT_TIMEOUT_MS / TICK_MS,
            bootstrap_peers: match start {
                Start::Bootstrap(peers) => peers.clone(),
                Start::Join(_) => BTreeMap::new(),
            },
            incarnation: self.rng.next_u64(),
            record_applied: true,
            limits: self.sessions.limits_for(id),
            bugs: self.cfg.replica_bugs,
        }
    }

    fn add_node(&mut self, id: NodeId, start: Start) {
        let tick_ms = TICK_MS - 1 + self.rng.range(0, 3);
        // Clocks drift by up to half a percent: far more than a real clock's, far less than the election
        // timeout's share of a lease's TTL (the leeway a new leader gives every lease).
        let clock_ppm = self.rng.range(0, 10_001) as i64 - 5_000;
        let fs = FaultyFs::new(self.rng.next_u64());
        let cfg = self.raft_config(id);
        let settings = self.settings(id, &start);
        let bugs = self.cfg.storage_bugs;
        let mut server =
            SimNode::start(&fs, cfg, &start, (settings, bugs)).expect("an empty disk opens");
        server.lock_bugs = self.cfg.lock_bugs;
        self.nodes.insert(
            id,
            Node {
                server: Some(server),
                fs,
                start,
                incarnation: 0,
                tick_ms,
                clock_ppm,
                stopped: false,
                paused_until: 0,
                led_term: 0,
                wiped: false,
                wiped_at: 0,
                rejoin: false,
                disk_error_armed: false,
                flipped: None,
            },
        );
        let at = self.rng.range(1, tick_ms + 1);
        self.schedule(at, Event::Tick(id, 0));
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.seq += 1;
        let at = self.now + after;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.cfg.verbose {
            println!("{:>6}ms  {}", self.now, what());
        }
    }

    fn fail(&mut self, violation: String) {
        if self.violation.is_none() {
            self.trace(|| format!("VIOLATION: {violation}"));
            self.violation = Some(violation);
        }
    }

    /// Runs both phases and the final checks.
    pub fn run(mut self) -> Report {
        let end = self.cfg.safety_ms + self.cfg.liveness_ms;
        while let Some(Reverse(next)) = self.queue.pop() {
            if self.violation.is_some() || self.converged || next.at > end {
                break;
            }
            self.now = next.at;
            self.handle(next.event);
        }
        if self.violation.is_none() && !self.converged {
            let why = self.describe_cluster();
            self.fail(format!(
                "Liveness: the cluster did not converge within {} ms of healing: {why}",
                self.cfg.liveness_ms
            ));
        }
        if self.violation.is_none() {
            self.check_history();
        }
        self.stats.lease_expiries = self.leases.expiries;
        self.stats.lock_grants = self.locks.grants;
        self.stats.lease_min_margin_ms = self.leases.min_margin_ms;
        Report {
            seed: self.cfg.seed,
            violation: self.violation,
            stats: self.stats,
        }
    }

    /// The node an event is handled by, if it is one that a paused process would not see yet.
    fn target(event: &Event) -> Option<NodeId> {
        match event {
            Event::Tick(id, _)
            | Event::Synced(id, _)
            | Event::ToNode(id, _)
            | Event::PeerLost(id, _) => Some(*id),
            Event::Deliver(m) => Some(m.to),
            _ => None,
        }
    }

    fn handle(&mut self, event: Event) {
        if let Some(id) = Self::target(&event)
            && let Some(until) = self.nodes.get(&id).map(|n| n.paused_until)
            && until > self.now
        {
            return self.schedule(until - self.now, event);
        }
        match event {
            Event::Tick(id, incarnation) => self.on_tick(id, incarnation),
            Event::Deliver(m) => self.on_deliver(m),
            Event::Synced(id, incarnation) => self.on_synced(id, incarnation),
            Event::ToNode(id, req) => self.on_request(id, *req),
            Event::ToClient(answer) => self.on_reply(answer.0, answer.1),
            Event::AttemptTimeout(client, seq, attempt) => {
                self.on_attempt_timeout(client, seq, attempt)
            }
            Event::ClientStart(client) => self.start_op(client),
            Event::Restart(id) => self.restart(id),
            Event::PeerLost(to, from) => {
                self.trace(|| format!("n{to}: connection from n{from} broke"));
                self.with_server(to, None, |s, _| s.peer_lost(from));
            }
            Event::Heal => self.heal(),
            Event::Fault => self.inject_fault(),
            Event::CrashLeader(id, term) => {
                let leads = self.nodes[&id].server.as_ref().map(|s| s.raft().status());
                if leads.is_some_and(|s| s.role == Role::Leader && s.term == term) {
                    self.trace(|| format!("fault: n{id}, new leader of term {term}, crashes"));
                    self.crash(id);
                }
            }
            Event::Bounce(id, left) => self.bounce(id, left),
            Event::Replace(id) => self.replace(id),
            Event::Stop(id) => self.stop(id),
            Event::Resize => self.resize(),
            Event::CheckLogs => self.check_logs(),
            Event::CheckConverged => self.check_converged(),
            Event::HolderStep(h) => self.holder_step(h),
            Event::HolderTimeout(h, seq) => self.on_holder_timeout(h, seq),
            Event::HolderRetry(h, op) => self.holder_retry(h, op),
            Event::LeaseToNode(id, req) => self.on_lease_request(id, req),
            Event::LeaseAnswer(answer) => {
                let (req, resp, node, at) = *answer;
                self.on_lease_answer(req, resp, (node, at));
            }
        }
        self.check_stopped_after_disk_error();
    }

    fn on_tick(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.incarnation != incarnation || node.server.is_none() {
            return;
        }
        let tick_ms = node.tick_ms;
        let clock = self.clock(id);
        self.with_server(id, None, |s, out| s.replica.tick_at(clock, out));
        self.schedule(tick_ms, Event::Tick(id, incarnation));
    }

    fn on_deliver(&mut self, m: Message) {
        if self.blocked.contains(&(m.from, m.to)) {
            // A partition also loses what was in flight across it.
            return;
        }
        let to = m.to;
        self.trace(|| {
            format!(
                "n{} -> n{} {} (term {})",
                m.from,
                m.to,
                describe(&m),
                m.term
            )
        });
        self.stats.messages += 1;
        let (from, kind, term) = (m.from, m.body.name(), m.term);
        let mut refused = false;
        self.with_server(to, None, |s, _| {
            let before = s.raft().refused_messages();
            s.step(m);
            refused = s.raft().refused_messages() > before;
        });
        if refused {
            // Every message here was sent by a correct node (late, duplicated or reordered at most).
            self.fail(format!(
                "Refusal: n{to} refused a {kind} of term {term} from n{from}, which a correct peer sent"
            ));
        }
    }

    fn on_request(&mut self, id: NodeId, req: Request) {
        let now = self.now;
        let local_read = self.cfg.read_without_read_index;
        let mut answered = None;
        self.with_server(id, None, |s, out| match req.op {
            op if op.is_read() && local_read => {
                answered = Some(s.read_locally(req));
                let _ = out;
            }
            _ => s.request(req, now, out),
        });
        if let Some(resp) = answered {
            let delay = self.rng.range(1, 4);
            self.schedule(delay, Event::ToClient(Box::new((req, resp))));
        }
    }

    /// The waiting Ready's sync completes; a failed sync stops the node (it must never go on with a hole).
    fn on_synced(&mut self, id: NodeId, incarnation: u64) {
        let mut failed = None;
        self.with_server(id, Some(incarnation), |s, out| {
            if let Err(e) = s.sync(out) {
                failed = Some(e.to_string());
            }
        });
        if let Some(why) = failed {
            self.trace(|| format!("n{id} stops: {why}"));
            self.crash(id);
        }
    }

    /// Runs `f` on a live node, takes its next Ready, then routes what it produced.
    fn with_server(
        &mut self,
        id: NodeId,
        incarnation: Option<u64>,
        f: impl FnOnce(&mut SimNode, &mut Output<SimWaiters>),
    ) {
        let clock = self.clock(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if incarnation.is_some_and(|i| i != node.incarnation) {
            return;
        }
        let Some(server) = node.server.as_mut() else {
            return;
        };
        server.replica.advance_clock(clock);
        let mut out = Output::default();
        f(server, &mut out);
        let sync_needed = match server.write_ready(&mut out) {
            Ok(took) => took,
            Err(e) => {
                let why = e.to_string();
                self.trace(|| format!("n{id} stops: {why}"));
                self.crash(id);
                return;
            }
        };
        let incarnation = node.incarnation;
        self.route(id, incarnation, out, sync_needed);
    }

    fn route(&mut self, id: NodeId, incarnation: u64, out: Output<SimWaiters>, sync_needed: bool) {
        // A leader is checked the moment its core wins, not when its driver reports the role change: that
        // waits for the previous write's sync, and a paused process could report it after a later term
        // committed entries this one never had to hold.
        let node = self.nodes.get_mut(&id).expect("routed from a node");
        if let Some(raft) = node.server.as_ref().map(|s| s.raft())
            && raft.role() == Role::Leader
            && raft.term() > node.led_term
        {
            let term = raft.term();
            node.led_term = term;
            self.on_new_leader(id, term);
        }
        if let Some(index) = out.installed_snapshot {
            self.trace(|| format!("n{id} installed a snapshot at {index}"));
            self.checker.on_state_reset(id, index);
        }
        for (index, term, data) in &out.applied_entries {
            if let Err(v) = self.checker.on_applied(id, *index, *term, data) {
                self.fail(v);
            }
        }
        self.check_expiries(&out.applied_entries);
        self.stats.committed = self.stats.committed.max(self.checker.max_committed());
        for m in out.messages {
            self.send(m);
        }
        let replies = match self.nodes[&id].server.as_ref() {
            Some(s) => s.responses(out.answers),
            None => Vec::new(),
        };
        for reply in replies {
            let delay = self.rng.range(1, 4);
            let event = match reply {
                Reply::Kv(req, resp) => Event::ToClient(Box::new((req, resp))),
                Reply::Lease(req, resp) => Event::LeaseAnswer(Box::new((req, resp, id, self.now))),
            };
            self.schedule(delay, event);
        }
        if sync_needed {
            let delay = self.rng.range(0, self.mix.fsync_max_ms + 1);
            self.schedule(delay, Event::Synced(id, incarnation));
        }
    }

    fn on_new_leader(&mut self, id: NodeId, term: u64) {
        self.trace(|| format!("n{id} became leader of term {term}"));
        // A leadership won in a term older than every remaining voter's is harmless: a vote granted long ago
        // (a paused candidate's answer arriving late) elects it, but every member refuses its messages.
        if self.removed.contains(&id) && self.removal_known(id) && term >= self.members_term() {
            return self.fail(format!(
                "Membership: n{id}, removed (every voter of the membership in force took the removal into \
                 force), became leader of term {term}"
            ));
        }
        let raft = self.nodes[&id].server.as_ref().expect("live").raft();
        if let Err(v) = self.checker.on_leader(id, term, raft) {
            self.fail(v);
        }
        if let Some(since) = self.leaderless_since.take() {
            self.stats.election_ticks.push((self.now - since) / TICK_MS);
        }
        if self.chance(self.mix.crash_new_leader) {
            // Leader flapping: the new leader is cut off at once (its first appends are lost) or crashes soon.
            if self.rng.range(0, 2) == 0 {
                self.trace(|| {
                    format!("fault: n{id}, new leader of term {term}, is isolated at once")
                });
                self.isolate(id);
            }
            let after = self.rng.range(1, 30);
            self.schedule(after, Event::CrashLeader(id, term));
        }
    }

    fn send(&mut self, m: Message) {
        if self.blocked.contains(&(m.from, m.to)) {
            return;
        }
        if self.chance(self.mix.drop) {
            // Now and then the loss is a connection reset between live nodes, which the receiver is told of.
            if self.rng.range(0, 8) == 0 {
                let delay = self.rng.range(1, 4);
                self.schedule(delay, Event::PeerLost(m.to, m.from));
            }
            return;
        }
        let copies = if self.chance(self.mix.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.chance(self.mix.slow) {
                self.rng.range(10, self.mix.slow_max_ms + 1)
            } else {
                self.rng.range(1, 4)
            };
            self.schedule(delay, Event::Deliver(m.clone()));
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        if self.healed {
            return false;
        }
        (self.rng.next_u64() % 1_000_000) < (p * 1_000_000.0) as u64
    }

    /// The node that leads the highest term, if any node is live and leading.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| Some((id, n.server.as_ref()?.raft())))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.server.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    fn pick(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[self.rng.range(0, ids.len() as u64) as usize])
    }

    // ---- clients ----

    /// One of the client's lanes starts its next operation.
    fn start_op(&mut self, c: u64) {
        if self.healed {
            return;
        }
        let client = &mut self.clients[c as usize];
        client.seq += 1;
        let seq = client.seq;
        let op = self.draw_op(c, seq);
        let (session_id, write_seq, acked) = match op.is_read() {
            true => (0, 0, 0),
            false => self.clients[c as usize].session.next_write(),
        };
        let req = Request {
            client: c,
            seq,
            session_id,
            write_seq,
            acked,
            op,
            attempt: 0,
        };
        self.logical += 1;
        self.history.push(Operation {
            client: c,
            call: self.logical,
            ret: u64::MAX,
            op,
            output: None,
        });
        let index = self.history.len() - 1;
        let started = self.now;
        let in_flight = InFlight {
            req,
            index,
            started,
        };
        self.clients[c as usize].in_flight.insert(seq, in_flight);
        self.send_attempt(c, req);
    }

    /// A client operation: single-key reads and writes, and multi-key transactions and reads of a group.
    fn draw_op(&mut self, c: u64, seq: u64) -> KvOp {
        let key = self.rng.range(0, KEYS);
        let value = op_value(c, seq, 0);
        let op = match self.rng.range(0, 14) {
            0..=3 => KvOp::Get { key },
            4..=6 => KvOp::Put { key, value },
            7 => KvOp::Delete { key },
            8..=9 => KvOp::Cas {
                key,
                expected: self.recent[key as usize],
                new: Some(value),
            },
            10..=11 => KvOp::Txn(self.draw_txn(c, seq, group_of(key))),
            _ => KvOp::ReadGroup {
                group: group_of(key),
            },
        };
        self.note_writes(&op);
        op
    }

    /// A transaction over two or three keys of `group`: conditions that usually hold on what was written
    /// last, writes to each of its keys if they hold, and sometimes other writes if not.
    fn draw_txn(&mut self, c: u64, seq: u64, group: Group) -> Txn {
        let skipped = match self.rng.range(0, 2) {
            0 => None,
            _ => Some(self.rng.range(0, GROUP_KEYS as u64) as usize),
        };
        let mut txn = Txn {
            group,
            compare: [None; GROUP_KEYS],
            success: [None; GROUP_KEYS],
            failure: [None; GROUP_KEYS],
        };
        for slot in (0..GROUP_KEYS).filter(|&s| Some(s) != skipped) {
            let recent = self.recent[key_at(group, slot) as usize];
            txn.compare[slot] = match self.rng.range(0, 4) {
                0 => None,
                1 => Some(Cond::Absent),
                _ => Some(recent.map_or(Cond::Absent, Cond::Equals)),
            };
            txn.success[slot] = Some(match self.rng.range(0, 5) {
                0 => Write::Delete,
                _ => Write::Put(op_value(c, seq, slot)),
            });
            if self.rng.range(0, 3) == 0 {
                txn.failure[slot] = Some(Write::Put(op_value(c, seq, GROUP_KEYS + slot)));
            }
        }
        txn
    }

    /// Remembers what `op` would leave in the keys it writes, for the conditions of later operations.
    fn note_writes(&mut self, op: &KvOp) {
        match *op {
            KvOp::Put { key, value } => self.recent[key as usize] = Some(value),
            KvOp::Delete { key } => self.recent[key as usize] = None,
            KvOp::Cas { key, new, .. } => self.recent[key as usize] = new,
            KvOp::Txn(txn) => {
                for (slot, write) in txn.success.iter().enumerate() {
                    let key = key_at(txn.group, slot) as usize;
                    match write {
                        Some(Write::Put(v)) => self.recent[key] = Some(*v),
                        Some(Write::Delete) => self.recent[key] = None,
                        None => {}
                    }
                }
            }
            KvOp::Get { .. } | KvOp::ReadGroup { .. } => {}
        }
    }

    fn send_attempt(&mut self, c: u64, req: Request) {
        let live: Vec<NodeId> = self.nodes.keys().copied().collect();
        let hint = self.clients[c as usize].leader_hint;
        let is_read = req.op.is_read();
        let target = match hint {
            Some(h) if !is_read && self.rng.range(0, 4) != 0 => Some(h),
            _ => self.pick(&live),
        };
        if let Some(target) = target {
            let delay = self.rng.range(1, 4);
            self.schedule(delay, Event::ToNode(target, Box::new(req)));
            if !is_read && let Some(late) = self.sessions.late_copy_after() {
                self.schedule(late, Event::ToNode(target, Box::new(req)));
            }
        }
        let timeout = Event::AttemptTimeout(c, req.seq, req.attempt);
        self.schedule(ATTEMPT_TIMEOUT_MS, timeout);
    }

    /// Sends operation `seq` of client `c` again, unless its deadline passed: its outcome is then unknown.
    fn retry(&mut self, c: u64, seq: u64) {
        let Some(f) = self.clients[c as usize].in_flight.get(&seq).copied() else {
            return;
        };
        if self.now - f.started > OP_DEADLINE_MS {
            self.trace(|| format!("client {c} gives up on {}: outcome unknown", f.req.op));
            self.stats.ops_unknown += 1;
            return self.finish(c, seq, false);
        }
        let next = Request {
            attempt: f.req.attempt + 1,
            ..f.req
        };
        let client = &mut self.clients[c as usize];
        client.in_flight.get_mut(&seq).expect("in flight").req = next;
        self.send_attempt(c, next);
    }

    /// Operation `seq` of client `c` is over (`applied`: answered as done); its lane starts the next one.
    fn finish(&mut self, c: u64, seq: u64, applied: bool) {
        let client = &mut self.clients[c as usize];
        if let Some(f) = client.in_flight.remove(&seq)
            && !f.req.op.is_read()
        {
            client
                .session
                .finished(f.req.session_id, f.req.write_seq, applied);
        }
        let think = self.rng.range(0, 20);
        self.schedule(think, Event::ClientStart(c));
    }

    fn on_reply(&mut self, req: Request, resp: Response) {
        let (c, seq) = (req.client, req.seq);
        let Some(f) = self.clients[c as usize].in_flight.get(&seq).copied() else {
            return;
        };
        if f.req.attempt != req.attempt {
            return;
        }
        match resp {
            Response::Ok(output) => {
                self.logical += 1;
                self.history[f.index].ret = self.logical;
                self.history[f.index].output = Some(output);
                self.trace(|| format!("client {c}: {} -> {output}", req.op));
                self.stats.ops_ok += 1;
                self.finish(c, seq, true);
            }
            Response::NotLeader(hint) => {
                self.clients[c as usize].leader_hint = hint;
                self.retry(c, seq);
            }
            Response::Retry => self.retry(c, seq),
            Response::SessionFull => {
                // Not applied: acknowledge what is no longer in flight and send it again; if nothing more
                // could be acknowledged, only after the attempt's timeout (the earlier writes must end first).
                let client = &mut self.clients[c as usize];
                let acked_more = client.session.full();
                let acked = client.session.acked();
                client.in_flight.get_mut(&seq).expect("in flight").req.acked = acked;
                if acked_more {
                    self.retry(c, seq);
                }
            }
            Response::Refused => {
                self.trace(|| format!("client {c}: {} refused: not applied", req.op));
                self.refused.insert(f.index);
                self.finish(c, seq, true);
            }
            Response::SessionExpired | Response::Failed => {
                if resp == Response::SessionExpired {
                    let clients = self.clients.len() as u64;
                    let session = &mut self.clients[c as usize].session;
                    session.expired(req.session_id, clients);
                }
                self.trace(|| format!("client {c}: {} refused: outcome unknown", req.op));
                self.stats.ops_unknown += 1;
                self.finish(c, seq, false);
            }
        }
    }

    fn on_attempt_timeout(&mut self, c: u64, seq: u64, attempt: u64) {
        let Some(f) = self.clients[c as usize].in_flight.get(&seq) else {
            return;
        };
        if f.req.attempt == attempt {
            self.clients[c as usize].leader_hint = None;
            self.retry(c, seq);
        }
    }

    fn check_history(&mut self) {
        if let Err(e) = linearizability::check_without(&self.history, &self.refused) {
            let text = match e {
                linearizability::CheckError::NotLinearizable(v) => format!("Linearizability: {v}"),
                linearizability::CheckError::Budget { keys, steps } => {
                    format!(
                        "Linearizability: search budget of {steps} steps exhausted on keys {keys:?}"
                    )
                }
            };
            self.fail(text);
        }
    }

    // ---- faults ----

    fn inject_fault(&mut self) {
        if self.healed {
            return;
        }
        let interval = self.mix.fault_interval_ms;
        let next = self.rng.range(interval / 2, interval * 3 / 2 + 1);
        self.schedule(next, Event::Fault);
        let fault = self.mix.pick_fault(&mut self.rng);
        *self.stats.faults.entry(fault.name()).or_default() += 1;
        match fault {
            Fault::Crash => {
                let live = self.live_ids();
                if let Some(id) = self.pick(&live) {
                    self.crash(id);
                }
            }
            Fault::CrashLeader => {
                if let Some(id) = self.leader() {
                    self.crash(id);
                }
            }
            Fault::Isolate => self.isolate_one(),
            Fault::Split => self.split(),
            Fault::OneWay => self.one_way(),
            Fault::Transfer => self.transfer(),
            Fault::Membership => self.change_membership(),
            Fault::Restart => {
                let live = self.live_ids();
                if let Some(id) = self.pick(&live) {
                    let times = self.rng.range(1, 4);
                    self.bounce(id, times);
                }
            }
            Fault::Pause => {
                let ids: Vec<NodeId> = self.live_ids();
                let target = match self.leader() {
                    Some(l) if self.rng.range(0, 2) == 0 => Some(l),
                    _ => self.pick(&ids),
                };
                if let Some(id) = target {
                    let pause = self.rng.range(150, self.mix.max_pause_ms + 1);
                    if Some(id) == self.leader() {
                        self.leaderless_since.get_or_insert(self.now);
                    }
                    self.trace(|| format!("fault: n{id} is paused for {pause} ms"));
                    let node = self.nodes.get_mut(&id).expect("live");
                    node.paused_until = self.now + pause;
                }
            }
            Fault::Wipe => self.wipe(),
            Fault::DiskError => self.disk_error(),
            Fault::Corrupt => self.corrupt(),
            Fault::StepDown => {
                if let Some(l) = self.leader() {
                    self.trace(|| format!("fault: n{l} steps down"));
                    self.leaderless_since.get_or_insert(self.now);
                    self.with_server(l, None, |s, _| {
                        let _ = s.replica.step_down();
                    });
                }
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        let max_down = self.mix.max_down_ms;
        self.crash_for(id, 20, max_down);
    }

    /// Crashes a live node and restarts it within milliseconds, `left` times in a row, while what its last
    /// incarnation sent is still in flight.
    fn bounce(&mut self, id: NodeId, left: u64) {
        if left == 0 || self.healed || self.nodes[&id].server.is_none() {
            return;
        }
        self.crash_for(id, 1, 15);
        let next = self.rng.range(30, 120);
        self.schedule(next, Event::Bounce(id, left - 1));
    }

    /// Crashes a node, to be restarted after `min_ms..=max_ms`.
    fn crash_for(&mut self, id: NodeId, min_ms: u64, max_ms: u64) {
        if Some(id) == self.leader() {
            self.leaderless_since.get_or_insert(self.now);
        }
        let node = self.nodes.get_mut(&id).expect("live");
        node.server = None;
        // What was not synced is lost, except any prefix of it the seed lets survive (torn writes). The
        // crash also disarms an injected disk error.
        node.fs.crash();
        node.disk_error_armed = false;
        node.paused_until = 0;
        self.trace(|| format!("fault: n{id} crashes"));
        // Its peers' connections from it break as its process dies (unless a partition keeps them from
        // hearing of it).
        let peers: Vec<NodeId> = self.nodes.keys().copied().filter(|&p| p != id).collect();
        for peer in peers {
            if !self.blocked.contains(&(id, peer)) {
                let delay = self.rng.range(1, 4);
                self.schedule(delay, Event::PeerLost(peer, id));
            }
        }
        let down = self.rng.range(min_ms, max_ms + 1);
        self.schedule(down, Event::Restart(id));
    }

    fn restart(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        if node.server.is_some() || node.stopped {
            return;
        }
        if node.wiped && !self.may_start_empty(id) {
            return;
        }
        let cfg = self.raft_config(id);
        let node = self.nodes.get_mut(&id).expect("known");
        node.wiped = false;
        let (fs, start) = (node.fs.clone(), node.start.clone());
        let settings = self.settings(id, &start);
        let started = SimNode::start(&fs, cfg, &start, (settings, self.cfg.storage_bugs));
        let Some(mut server) = self.started_or_refused(id, started) else {
            return;
        };
        server.lock_bugs = self.cfg.lock_bugs;
        let snapshot_index = server.raft().snapshot().meta.index;
        let node = self.nodes.get_mut(&id).expect("known");
        node.incarnation += 1;
        node.server = Some(server);
        let (incarnation, tick_ms) = (node.incarnation, node.tick_ms);
        self.checker.on_state_reset(id, snapshot_index);
        self.trace(|| format!("n{id} restarts from its disk (snapshot at {snapshot_index})"));
        self.schedule(tick_ms, Event::Tick(id, incarnation));
        self.with_server(id, None, |_, _| {});
    }

    /// A node loses its disk (one at a time: losing a majority's disks loses data whatever the protocol).
    fn wipe(&mut self) {
        // And only where the others are a majority without it: three voters or more, every one live, caught
        // up and agreeing on the membership (no change half done).
        if self.replacing() || self.membership_changing() || !self.settled(3) {
            return;
        }
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.stopped)
            .map(|(&id, _)| id)
            .collect();
        let Some(id) = self.pick(&ids) else { return };
        if self.nodes[&id].server.is_some() {
            self.crash(id);
        }
        self.new_disk(id);
        self.trace(|| format!("fault: n{id} loses its disk"));
    }

    /// A down node gets an empty disk (a lost one, or one the operator wiped): it must not start as if it
    /// had taken part, and is replaced.
    fn new_disk(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&id).expect("known");
        node.fs = FaultyFs::new(seed);
        node.wiped = true;
        node.wiped_at = self.now;
        self.checker.on_state_reset(id, 0);
    }

    /// What a node with an empty data dir does before it starts, as the node does it: a bootstrap member
    /// probes the others (`bootstrap_decision`), a joining one asks the leader to add it. True if it may
    /// start now; otherwise it retries later, or is refused and the operator replaces it.
    fn may_start_empty(&mut self, id: NodeId) -> bool {
        let bugs = self.cfg.replica_bugs;
        let retry = |w: &mut World| w.schedule(100, Event::Restart(id));
        let refused = match self.nodes[&id].start.clone() {
            Start::Bootstrap(peers) => {
                let members: Vec<NodeId> = peers.keys().copied().collect();
                let mut answers = BTreeMap::new();
                for &other in members.iter().filter(|&&o| o != id) {
                    if self.blocked.contains(&(id, other)) || self.blocked.contains(&(other, id)) {
                        continue;
                    }
                    let n = &self.nodes[&other];
                    let answer = match &n.server {
                        Some(s) if n.paused_until <= self.now => s.replica.probe(id),
                        Some(_) => continue,
                        None if n.wiped && !n.stopped => ProbeAnswer {
                            fresh: true,
                            started: false,
                        },
                        None => continue,
                    };
                    answers.insert(other, answer);
                }
                let decision = bootstrap_decision(id, &members, &answers, bugs);
                self.trace(|| format!("n{id} probes {answers:?} on its empty disk: {decision:?}"));
                match decision {
                    BootstrapDecision::Bootstrap => return true,
                    // The members it knows from its configuration may all be gone (the membership moved on):
                    // the operator, reading why it waits, replaces it.
                    BootstrapDecision::Wait(why) if self.now > self.nodes[&id].wiped_at + 1_500 => {
                        why
                    }
                    BootstrapDecision::Wait(_) => {
                        retry(self);
                        return false;
                    }
                    BootstrapDecision::Join(through) => {
                        self.trace(|| format!("n{id}: empty disk, the cluster runs: joins"));
                        self.nodes.get_mut(&id).expect("known").start = Start::Join(addr(through));
                        retry(self);
                        return false;
                    }
                    BootstrapDecision::Refuse(why) => why,
                }
            }
            Start::Join(_) => {
                let Some(leader) = self.leader() else {
                    retry(self);
                    return false;
                };
                let member = self.nodes[&leader]
                    .server
                    .as_ref()
                    .expect("live")
                    .raft()
                    .conf()
                    .contains(id);
                let node = self.nodes.get_mut(&id).expect("known");
                if !member && !std::mem::take(&mut node.rejoin) {
                    // The operator removed it: nobody starts it again.
                    node.stopped = true;
                    return false;
                }
                match self.ask_leader_answer(leader, add_member(id)) {
                    Ok(()) => return true,
                    Err(NodeError::FailedPrecondition(why)) => why,
                    Err(_) => {
                        retry(self);
                        return false;
                    }
                }
            }
        };
        self.trace(|| format!("n{id} refuses to start on an empty disk: {refused}"));
        self.schedule(50, Event::Replace(id));
        false
    }

    /// The operator's answer to a lost disk: remove the member, then add it again as a learner that joins.
    fn replace(&mut self, id: NodeId) {
        if self.nodes[&id].stopped {
            return;
        }
        let Some(leader) = self.leader() else {
            return self.schedule(100, Event::Replace(id));
        };
        if self.nodes[&leader]
            .server
            .as_ref()
            .expect("live")
            .raft()
            .conf()
            .contains(id)
        {
            let req = replica::Request::RemoveMember { id, waiter: () };
            if self.ask_leader(leader, req) {
                self.trace(|| format!("operator: remove n{id}, whose disk was lost"));
            }
            return self.schedule(100, Event::Replace(id));
        }
        self.trace(|| format!("operator: n{id} joins again with its empty disk"));
        let node = self.nodes.get_mut(&id).expect("known");
        node.start = Start::Join(addr(leader));
        node.rejoin = true;
        self.restart(id);
    }

    fn isolate_one(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if let Some(id) = self.pick(&ids) {
            self.isolate(id);
        }
    }

    fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if Some(id) == self.leader() {
            self.leaderless_since.get_or_insert(self.now);
        }
        for &other in &ids {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
        self.trace(|| format!("fault: n{id} is isolated"));
        self.schedule_heal();
    }

    fn split(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let side: Vec<bool> = ids.iter().map(|_| self.rng.range(0, 2) == 0).collect();
        for (i, &a) in ids.iter().enumerate() {
            for (j, &b) in ids.iter().enumerate() {
                if side[i] != side[j] {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.leaderless_since.get_or_insert(self.now);
        self.trace(|| {
            format!(
                "fault: partition {:?}",
                ids.iter().zip(&side).collect::<Vec<_>>()
            )
        });
        self.schedule_heal();
    }

    fn one_way(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let (Some(a), Some(b)) = (self.pick(&ids), self.pick(&ids)) else {
            return;
        };
        if a != b {
            self.blocked.insert((a, b));
            self.trace(|| format!("fault: messages from n{a} to n{b} are dropped"));
            self.schedule_heal();
        }
    }

    fn schedule_heal(&mut self) {
        let after = self.rng.range(100, self.mix.max_partition_ms + 1);
        self.schedule(after, Event::Heal);
    }

    fn transfer(&mut self) {
        let Some(leader) = self.leader() else { return };
        let voters = self.conf_of(leader).voters;
        let Some(target) = self.pick(&voters) else {
            return;
        };
        self.trace(|| format!("operator: transfer leadership n{leader} -> n{target}"));
        self.leaderless_since.get_or_insert(self.now);
        self.with_server(leader, None, |s, out| {
            let req = replica::Request::TransferLeader {
                target: Some(target),
                waiter: (),
            };
            s.replica.request(req, out);
        });
    }

    /// The membership in force at live node `id`.
    fn conf_of(&self, id: NodeId) -> ConfState {
        self.nodes[&id]
            .server
            .as_ref()
            .expect("live")
            .raft()
            .conf()
            .clone()
    }

    /// True if a leader's membership has at least `min` voters, each live, applied up to the leader's commit
    /// index and holding the same membership.
    fn settled(&self, min: usize) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let lead = self.nodes[&leader].server.as_ref().expect("live").raft();
        let conf = lead.conf();
        conf.voters.len() >= min
            && conf.voters.iter().all(|id| {
                self.nodes[id]
                    .server
                    .as_ref()
                    .is_some_and(|s| s.raft().conf() == conf && s.raft().applied() >= lead.commit())
            })
    }

    /// The operator is resizing the cluster, or asked to remove a member the leader still lists: the
    /// configuration about to be in force may be smaller than the one a fault would judge by.
    fn membership_changing(&self) -> bool {
        let Some(leader) = self.leader() else {
            return true;
        };
        let conf = self.conf_of(leader);
        self.resizing.is_some() || self.removed.iter().any(|&id| conf.contains(id))
    }

    /// A member lost its disk and is not back yet.
    fn replacing(&self) -> bool {
        self.nodes.values().any(|n| n.wiped && !n.stopped)
    }

    fn change_membership(&mut self) {
        // A resize episode owns the membership until it is over.
        if self.resizing.is_some() {
            return;
        }
        let Some(leader) = self.leader() else { return };
        let conf = self.conf_of(leader);
        if !self.replacing() && self.rng.range(0, 4) == 0 {
            self.trace(|| "operator: shrinks the cluster to one voter, then grows it back".into());
            self.resizing = Some(Resize::Shrink);
            return self.resize();
        }
        let remove = conf.voters.len() > 3 || (conf.voters.len() == 3 && self.rng.range(0, 3) == 0);
        // While a lost disk is being replaced, the operator removes no other member.
        if remove && conf.voters.len() > 2 && !self.replacing() {
            return self.remove_voter(leader, &conf.voters);
        }
        self.add_learner(leader);
    }

    /// Asks the leader to remove one of `voters`. The removed node is shut down once the removal is in
    /// force, at once or, half the time, only after a while: a removed node kept running must not disrupt
    /// the others.
    fn remove_voter(&mut self, leader: NodeId, voters: &[NodeId]) {
        let Some(id) = self.pick(voters) else {
            return;
        };
        // An operator removes a member only while every voter that stays is up: with one of them down (its
        // disk may be corrupt, never to come back), the smaller configuration could be left without a quorum.
        let stays_down = voters
            .iter()
            .any(|v| *v != id && self.nodes.get(v).is_none_or(|n| n.server.is_none()));
        if stays_down {
            return;
        }
        let req = replica::Request::RemoveMember { id, waiter: () };
        if self.ask_leader(leader, req) {
            let kept_ms = match self.rng.range(0, 2) {
                0 => 200,
                _ => self.rng.range(1_000, 4_000),
            };
            self.trace(|| format!("operator: remove n{id}, stop it in {kept_ms} ms"));
            self.removed.insert(id);
            self.schedule(kept_ms, Event::Stop(id));
        }
    }

    /// Asks the leader to add a new node as a learner (the leader promotes it once it caught up).
    fn add_learner(&mut self, leader: NodeId) {
        let id = self.next_node_id;
        if self.ask_leader(leader, add_member(id)) {
            self.next_node_id += 1;
            self.trace(|| format!("operator: add n{id} as a learner"));
            self.add_node(id, Start::Join(addr(leader)));
        }
    }

    /// One step of the resize episode, one membership change at a time: remove a voter while more than one
    /// is left, then add learners until three voters are back (so that the rest of the run tolerates
    /// faults again).
    fn resize(&mut self) {
        if self.healed {
            self.resizing = None;
            return;
        }
        let after = self.rng.range(100, 400);
        self.schedule(after, Event::Resize);
        let Some(leader) = self.leader() else { return };
        let conf = self.conf_of(leader);
        match self.resizing {
            Some(Resize::Shrink) if conf.voters.len() > 1 => {
                if !self.replacing() {
                    self.remove_voter(leader, &conf.voters);
                }
            }
            Some(Resize::Shrink) => {
                self.trace(|| {
                    format!("operator: n{leader} is the only voter; grows the cluster back")
                });
                self.resizing = Some(Resize::Grow);
            }
            Some(Resize::Grow) if conf.voters.len() >= 3 => self.resizing = None,
            Some(Resize::Grow) if conf.learners.is_empty() => self.add_learner(leader),
            // A learner is catching up, to be promoted.
            Some(Resize::Grow) | None => {}
        }
    }

    /// True if `id` is out of the membership in force and every voter of it is live and has applied the
    /// removal (so its commit is durable there): nothing then may make `id` leader again, and nothing needs
    /// its vote any more.
    fn removal_known(&self, id: NodeId) -> bool {
        let live: BTreeMap<NodeId, &SimNode> = self
            .nodes
            .iter()
            .filter_map(|(&n, node)| Some((n, node.server.as_ref()?)))
            .collect();
        let Some(newest) = self.newest_live() else {
            return false;
        };
        let conf = newest.raft().conf();
        // A node with no membership yet (one added but still empty) knows nothing of the removal.
        !conf.voters.is_empty()
            && !conf.contains(id)
            && conf
                .voters
                .iter()
                .all(|v| live.get(v).is_some_and(|s| !s.applied_member(id)))
    }

    /// The live node with the highest commit index: the one that knows the most of the membership.
    fn newest_live(&self) -> Option<&SimNode> {
        self.nodes
            .values()
            .filter_map(|n| n.server.as_ref())
            .max_by_key(|s| s.raft().commit())
    }

    /// The lowest term among the voters of the newest membership a live node holds (0 if one is down: its
    /// term is not known).
    fn members_term(&self) -> u64 {
        let live = |id: &NodeId| self.nodes.get(id).and_then(|n| n.server.as_ref());
        let Some(newest) = self.newest_live() else {
            return 0;
        };
        let conf = newest.raft().conf();
        conf.voters
            .iter()
            .map(|v| live(v).map_or(0, |s| s.raft().term()))
            .min()
            .unwrap_or(0)
    }

    /// Sends an operator's request to the leader; true if the leader took it (proposed or answered it).
    fn ask_leader(&mut self, leader: NodeId, req: replica::Request<SimWaiters>) -> bool {
        self.ask_leader_answer(leader, req).is_ok()
    }

    /// Sends an operator's request to the leader; the error if it refused it at once.
    fn ask_leader_answer(
        &mut self,
        leader: NodeId,
        req: replica::Request<SimWaiters>,
    ) -> Result<(), NodeError> {
        let mut refused = None;
        self.with_server(leader, None, |s, out| {
            s.replica.request(req, out);
            refused = out.answers.iter().find_map(|a| match a {
                replica::Answer::Members(_, Err(e)) => Some(e.clone()),
                _ => None,
            });
        });
        refused.map_or(Ok(()), Err)
    }

    /// Shuts down a node that is no longer a member, as the README's procedure says: once the membership
    /// in force no longer lists it and every remaining voter has taken that into force (before, a voter
    /// that has not may still need its vote: a leader that removed itself may have handed over before its
    /// commit reached the others).
    fn stop(&mut self, id: NodeId) {
        if !self.removal_known(id) {
            if self.nodes[&id].server.is_some() || !self.healed {
                self.schedule(200, Event::Stop(id));
            }
            return;
        }
        self.trace(|| format!("operator: n{id} is no longer a member and shuts down"));
        let node = self.nodes.get_mut(&id).expect("known");
        node.stopped = true;
        node.server = None;
    }

    /// Heals partitions; at the end of the safety phase also stops all faults and restarts every node.
    fn heal(&mut self) {
        self.blocked.clear();
        if self.healed {
            return;
        }
        if self.now < self.cfg.safety_ms {
            self.trace(|| "network heals".to_string());
            return;
        }
        self.healed = true;
        self.holders_stop();
        self.disarm_disk_errors();
        self.trace(|| {
            "safety phase over: faults stop, every node restarts, the network heals".to_string()
        });
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            // A node on a lost disk already has its next attempt (or its replacement) scheduled.
            .filter(|(_, n)| n.server.is_none() && !n.stopped && !n.wiped)
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.restart(id);
        }
        self.schedule(50, Event::CheckConverged);
    }

    // ---- periodic checks ----

    fn check_logs(&mut self) {
        let live: Vec<(NodeId, &Raft)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| Some((id, n.server.as_ref()?.raft())))
            .collect();
        let mut found = None;
        'pairs: for (i, &a) in live.iter().enumerate() {
            for &b in &live[i + 1..] {
                if let Err(v) = check_log_matching(a, b) {
                    found = Some(v);
                    break 'pairs;
                }
            }
        }
        if let Some(v) = found {
            return self.fail(v);
        }
        self.schedule(100, Event::CheckLogs);
    }

    /// Liveness: a leader, every member caught up with the same state, every client done.
    fn check_converged(&mut self) {
        self.schedule(50, Event::CheckConverged);
        let Some(leader) = self.leader() else { return };
        let lead = self.nodes[&leader].server.as_ref().expect("live");
        let status = lead.raft().status();
        let busy = self.clients.iter().any(|c| !c.in_flight.is_empty()) || self.holders_busy();
        if status.commit != status.last_index || busy {
            return;
        }
        // Every lease ran out or was revoked (the holders stopped at healing), with its keys.
        if !lead
            .replica
            .state()
            .read()
            .expect("state lock")
            .leases()
            .is_empty()
        {
            return;
        }
        let image = lead.state_image();
        for id in status.conf.members() {
            let Some(s) = self.nodes.get(&id).and_then(|n| n.server.as_ref()) else {
                return;
            };
            let st = s.raft().status();
            if st.applied != status.last_index
                || st.last_index != status.last_index
                || s.state_image() != image
            {
                return;
            }
        }
        self.converged = true;
        self.stats.recovery_ticks = Some((self.now - self.cfg.safety_ms) / TICK_MS);
        self.trace(|| {
            format!(
                "converged at index {} under leader n{leader}",
                status.last_index
            )
        });
    }

    fn describe_cluster(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| match &n.server {
                Some(s) => {
                    let st = s.raft().status();
                    format!(
                        "n{id}: {:?} term {} commit {} applied {} last {} conf {:?} state {:016x}",
                        st.role,
                        st.term,
                        st.commit,
                        st.applied,
                        st.last_index,
                        st.conf.voters,
                        crate::checker::fingerprint(&s.state_image())
                    )
                }
                None if n.stopped => format!("n{id}: stopped"),
                None => format!("n{id}: down"),
            })
            .collect();
        let busy = self
            .clients
            .iter()
            .filter(|c| !c.in_flight.is_empty())
            .count();
        format!("{}; {busy} clients still waiting", nodes.join("; "))
    }
}

/// The operator's request to add node `id` as a learner, at its simulated address.
fn add_member(id: NodeId) -> replica::Request<SimWaiters> {
    let ctx = MemberContext {
        peer_addr: addr(id),
        client_addr: addr(id),
        ..MemberContext::default()
    };
    replica::Request::AddMember {
        id,
        ctx,
        waiter: (),
    }
}

/// A node's address (the simulated network routes by id; addresses only name the members).
/// The catch-up margin compactions keep, drawn for the seed on a generator of its own (the rest of the run
/// is what it was without it): none on a third of the seeds, so that snapshot installs stay exercised;
/// otherwise up to twice the snapshot interval, under a byte bound that sometimes bites first.
fn catch_up(seed: u64, snapshot_every: u64) -> (u64, usize) {
    let mut rng = Rng::new(seed ^ 0xca7c_0b5e_u64.rotate_left(40));
    if rng.range(0, 3) == 0 {
        return (0, 0);
    }
    (
        rng.range(1, 2 * snapshot_every + 1),
        rng.range(100, 4_000) as usize,
    )
}

fn addr(id: NodeId) -> String {
    format!("n{id}:7070")
}

fn describe(m: &Message) -> String {
    use reinado_raft::MessageBody::*;
    match &m.body {
        Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => format!(
            "Append(prev {prev_log_index}/{prev_log_term}, {} entries, commit {commit})",
            entries.len()
        ),
        AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            format!("AppendResponse(reject {reject}, index {index}, hint {hint_index}/{hint_term})")
        }
        Vote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } => {
            format!(
                "{}(last {last_log_index}/{last_log_term})",
                if *pre_vote { "PreVote" } else { "Vote" }
            )
        }
        VoteResponse { reject, .. } => format!("{}(reject {reject})", m.body.name()),
        Snapshot {
            meta,
            offset,
            data,
            done,
        } => {
            format!(
                "Snapshot(index {}, offset {offset}, {} bytes, done {done})",
                meta.index,
                data.len()
            )
        }
        other => format!("{other:?}"),
    }
}
