//! The Raft state machine: its state, role transitions, ticks and message dispatch.
//!
//! The per-role message handling lives in `election.rs`, `leader.rs` and `follower.rs`; the interface the
//! driver uses (`ready`/`advance`, proposals, reads) lives in `node.rs`.

use crate::config::Config;
use crate::election::Campaign;
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::types::*;
use std::collections::{BTreeMap, VecDeque};

/// What a driver restores a node from: everything its storage holds.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The persisted hard state.
    pub hard_state: HardState,
    /// The latest persisted snapshot; its `conf_state` is the membership at its index.
    pub snapshot: Option<Snapshot>,
    /// The persisted entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A read waiting for a quorum to confirm the leader's leadership (thesis §6.4).
#[derive(Debug)]
pub(crate) struct PendingRead {
    /// The node that asked (this node for local reads).
    pub from: NodeId,
    /// The reader's context.
    pub ctx: Vec<u8>,
    /// The commit index when the read arrived: the read may be served once it is applied.
    pub index: Index,
    /// The read round whose confirmation by a quorum releases this read.
    pub round: u64,
}

/// A snapshot being received in chunks. It belongs to one stream: one sender, in one term, of one snapshot;
/// a chunk of any other stream never extends it, so two streams are never spliced into one snapshot.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    /// The leader whose first chunk (offset 0) started the assembly.
    pub from: NodeId,
    /// The term that first chunk was sent in.
    pub term: Term,
    pub meta: SnapshotMeta,
    /// The bytes received so far, from offset 0.
    pub data: Vec<u8>,
}

/// The highest term a message may carry: no cluster elects 2^62 leaders, and above it `term + 1` could
/// overflow.
const MAX_TERM: Term = 1 << 62;

/// Role and leader, reported to the driver when they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The node's role.
    pub role: Role,
    /// The leader it knows of in the current term.
    pub leader: Option<NodeId>,
}

/// One Raft node. Single-threaded and deterministic: see the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Raft {
    pub(crate) cfg: Config,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    /// The membership in force: the snapshot's plus every committed membership change after it.
    pub(crate) conf: ConfState,
    /// Leader only: one entry per member other than this node.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// (Pre-)candidate only: the answers received, true for granted.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: usize,
    pub(crate) heartbeat_elapsed: usize,
    pub(crate) randomized_election_ticks: usize,
    pub(crate) rng: Rng,
    /// Leader only: the index of the last membership change proposed; no other may be proposed until it commits.
    pub(crate) pending_conf_index: Index,
    /// Leader only: the target of a leadership transfer in progress, and for how many ticks it has run.
    pub(crate) transferee: Option<NodeId>,
    pub(crate) transfer_elapsed: usize,
    /// Leader only: its own removal committed, and it leads on (taking no proposals) until every remaining
    /// voter has been told so; see `Leaving`.
    pub(crate) leaving: Option<Leaving>,
    /// Leader only: the current read round and the reads waiting on it.
    pub(crate) read_round: u64,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Leader only: reads that arrived before the leader committed an entry of its term (thesis §6.4 step 1).
    pub(crate) reads_before_commit: Vec<(NodeId, Vec<u8>)>,
    /// Leader only: appends must go out to every peer at the next `ready`.
    pub(crate) need_broadcast: bool,
    /// Leader only: a heartbeat round for pending reads must go out at the next `ready`.
    pub(crate) need_read_round: bool,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// Peer messages refused because they could not have been sent by a correct peer.
    pub(crate) refused: u64,
    /// Leader only: bytes of the entries in the log past the commit index.
    pub(crate) uncommitted_bytes: u64,
    /// Output: messages that may be sent at once.
    pub(crate) msgs: Vec<Message>,
    /// Output: messages that may leave only once everything before them is durable.
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    /// A snapshot received from the leader, to be persisted and installed by the driver.
    pub(crate) snapshot_to_install: Option<Snapshot>,
    pub(crate) persisted_hs: HardState,
    pub(crate) reported_soft: SoftState,
    pub(crate) ready_outstanding: bool,
}

impl Raft {
    /// Restores a node from what its storage holds. A node with no membership (a new node waiting to be added)
    /// never campaigns; it learns the membership from the leader's log or snapshot.
    pub fn new(cfg: Config, restore: Restore) -> Result<Raft, crate::Error> {
        cfg.validate()?;
        let snapshot = restore.snapshot.unwrap_or_default();
        let hs = restore.hard_state;
        let log = RaftLog::new(snapshot, restore.entries, hs.commit);
        let mut rng = Rng::new(cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9));
        let randomized = random_election_ticks(&mut rng, &cfg);
        let conf = log.snapshot.meta.conf_state.clone();
        let mut raft = Raft {
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            conf,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: randomized,
            rng,
            pending_conf_index: 0,
            transferee: None,
            transfer_elapsed: 0,
            leaving: None,
            read_round: 0,
            pending_reads: VecDeque::new(),
            reads_before_commit: Vec::new(),
            need_broadcast: false,
            need_read_round: false,
            incoming_snapshot: None,
            refused: 0,
            uncommitted_bytes: 0,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            snapshot_to_install: None,
            persisted_hs: hs,
            reported_soft: SoftState {
                role: Role::Follower,
                leader: None,
            },
            ready_outstanding: false,
            log,
            cfg,
        };
        let snap_index = raft.log.snapshot_index();
        raft.apply_conf_changes(snap_index, raft.log.commit);
        // etcd's tick fast-forward: a node restarting with a term behind it campaigns within two or three
        // ticks, not a whole election timeout. If the whole cluster restarted, nobody is left to wait for; if
        // a leader is alive, its heartbeat comes first, and otherwise the followers it keeps in its lease
        // refuse the pre-vote. Only with PreVote and CheckQuorum, which keep the early campaign harmless.
        if raft.term > 0 && raft.cfg.pre_vote && raft.cfg.check_quorum {
            let early = raft.rng.range(2, 4) as usize;
            raft.election_elapsed = randomized.saturating_sub(early);
        }
        Ok(raft)
    }

    /// Creates the first members of a new cluster. Every initial member must be bootstrapped with the same
    /// `voters`: their logs then start with the same membership entries (term 1), which a node added later
    /// replays to learn the membership. The entries are not yet durable: the first `ready` persists them.
    pub fn bootstrap(cfg: Config, voters: &[NodeId]) -> Result<Raft, crate::Error> {
        let members: Vec<(NodeId, Vec<u8>)> = voters.iter().map(|&id| (id, Vec::new())).collect();
        Raft::bootstrap_with_context(cfg, &members)
    }

    /// [`Raft::bootstrap`] with an application context (such as the member's address) in each member's
    /// membership entry. Every initial member must be given the same list, contexts included, or their logs
    /// would differ at the same index and term.
    pub fn bootstrap_with_context(
        cfg: Config,
        members: &[(NodeId, Vec<u8>)],
    ) -> Result<Raft, crate::Error> {
        let mut members = members.to_vec();
        members.sort_by_key(|(id, _)| *id);
        members.dedup_by_key(|(id, _)| *id);
        if members.is_empty() || members.iter().any(|(id, _)| *id == 0) {
            return Err(crate::Error::Config(
                "bootstrap needs voter ids other than 0".into(),
            ));
        }
        let count = members.len() as Index;
        let mut raft = Raft::new(cfg, Restore::default())?;
        let entries = members
            .into_iter()
            .enumerate()
            .map(|(i, (id, context))| Entry {
                term: 1,
                index: i as Index + 1,
                kind: EntryKind::ConfChange,
                data: ConfChange {
                    kind: ConfChangeKind::AddVoter,
                    node_id: id,
                    context,
                }
                .encode(),
            });
        raft.log.truncate_and_append(entries);
        raft.log.stable = 0;
        raft.term = 1;
        raft.persisted_hs = HardState::default();
        raft.commit_to(count);
        Ok(raft)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The number of votes that make a majority of the voters.
    pub(crate) fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    /// True if this node may campaign: it is a voter and it is not in the middle of installing a snapshot.
    pub(crate) fn promotable(&self) -> bool {
        self.conf.is_voter(self.cfg.id) && self.snapshot_to_install.is_none()
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    /// Queues a message from this node. A leader's messages may leave at once (it may write its log in parallel
    /// with sending, thesis §10.2.1) once its term is durable; anything else depends on state that must be
    /// durable first (a vote, a term, appended entries), so it waits for the next `advance`. (A single voter
    /// becomes leader without sending a vote request, so its new term may not be durable yet: were its appends
    /// sent and the node crashed, it could reuse the term for different entries at the same indexes.)
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.cfg.id,
            to,
            term: self.term,
            body,
        };
        if self.role == Role::Leader && self.persisted_hs.term == self.term {
            self.msgs.push(msg);
        } else {
            self.persisted_msgs.push(msg);
        }
    }

    /// Like [`Raft::send`] but with an explicit term (pre-votes carry the term they would campaign in).
    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let msg = Message {
            from: self.cfg.id,
            to,
            term,
            body,
        };
        self.persisted_msgs.push(msg);
    }

    pub(crate) fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_ticks = random_election_ticks(&mut self.rng, &self.cfg);
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.transfer_elapsed = 0;
        self.leaving = None;
        self.need_broadcast = false;
        self.need_read_round = false;
        self.fail_pending_reads();
    }

    /// §5.1: any node that sees a higher term, or a leader of its own term, becomes a follower.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// Applies committed membership changes in `(from, to]` to `conf`.
    pub(crate) fn apply_conf_changes(&mut self, from: Index, to: Index) {
        for cc in self.conf_changes(from + 1, to) {
            apply_conf_change(&mut self.conf, &cc);
            self.on_conf_applied(&cc);
        }
    }

    /// The membership changes held in the log at indexes `[lo, hi]`.
    pub(crate) fn conf_changes(&self, lo: Index, hi: Index) -> Vec<ConfChange> {
        (lo.max(self.log.first_index())..=hi)
            .map_while(|i| self.log.entry(i))
            .filter(|e| e.kind == EntryKind::ConfChange)
            .filter_map(|e| ConfChange::decode(&e.data))
            .collect()
    }

    /// Bytes of the data of the entries `lo..=hi` this log holds.
    pub(crate) fn entry_bytes(&self, lo: Index, hi: Index) -> u64 {
        (lo.max(self.log.first_index())..=hi)
            .map_while(|i| self.log.entry(i))
            .map(|e| e.data.len() as u64)
            .sum()
    }

    /// Moves the commit index forward, taking committed membership changes into force.
    pub(crate) fn commit_to(&mut self, index: Index) {
        let index = index.min(self.log.last_index());
        if index <= self.log.commit {
            return;
        }
        let from = self.log.commit;
        self.log.commit = index;
        if self.role == Role::Leader {
            let committed = self.entry_bytes(from + 1, index);
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed);
        }
        self.apply_conf_changes(from, index);
    }

    /// The membership as of `index` (the snapshot's plus the changes committed up to `index`).
    pub(crate) fn conf_at(&self, index: Index) -> ConfState {
        let mut conf = self.log.snapshot.meta.conf_state.clone();
        // Entries at or below the snapshot's index (a catch-up margin) are in its membership already.
        for cc in self.conf_changes(self.log.snapshot_index() + 1, index) {
            apply_conf_change(&mut conf, &cc);
        }
        conf
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_ticks && self.promotable() {
            self.election_elapsed = 0;
            let kind = if self.cfg.pre_vote {
                Campaign::PreElection
            } else {
                Campaign::Election
            };
            self.campaign(kind);
        }
    }

    /// Handles a message from a peer. Messages for another node or from a stale term are dropped (and a stale
    /// leader is told the newer term), and so are messages that make no sense (counted in
    /// [`Raft::refused_messages`]).
    pub fn step(&mut self, m: Message) {
        if m.to != self.cfg.id || m.from == self.cfg.id || m.from == 0 {
            return;
        }
        if !self.makes_sense(&m) {
            self.refused += 1;
            return;
        }
        if !self.step_term(&m) {
            return;
        }
        match &m.body {
            MessageBody::Vote { .. } => self.handle_vote_request(m),
            MessageBody::VoteResponse { .. } => self.handle_vote_response(m),
            MessageBody::TimeoutNow => self.handle_timeout_now(),
            // Only a leader hands out read indexes; any other role says so at once and the asker retries.
            MessageBody::ReadIndex { ctx } if self.role != Role::Leader => {
                self.refuse_read(m.from, ctx.clone())
            }
            MessageBody::ReadIndexResponse { ctx, index } if self.role != Role::Leader => {
                self.read_states.push(ReadState {
                    ctx: ctx.clone(),
                    index: *index,
                })
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Follower => self.step_follower(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            },
        }
    }

    /// False for a message no correct peer sends: it is refused before anything else (terms included) looks at
    /// it, and counted ([`Raft::refused_messages`]): a term past [`MAX_TERM`]; appends whose entries do not
    /// follow `prev` one by one in terms that do not go back or pass the message's; votes for a log of a later
    /// term than the campaign's; acknowledgements of entries beyond this log, of a snapshot newer than this
    /// leader's, or rejections pointing past it; answers to a heartbeat round never sent; snapshot chunks
    /// of a later term than their message or that would assemble more than [`Config::max_snapshot_bytes`].
    /// These are what cannot have been sent; a forged message that could have been is believed (peers are
    /// to be authenticated for that).
    fn makes_sense(&self, m: &Message) -> bool {
        // A term no cluster reaches; past it, `term + 1` would overflow.
        if m.term > MAX_TERM {
            return false;
        }
        let last = self.log.last_index();
        let leader_now = self.role == Role::Leader && m.term == self.term;
        match &m.body {
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                let mut term = *prev_log_term;
                *prev_log_term <= m.term
                    && entries.iter().enumerate().all(|(i, e)| {
                        let follows = prev_log_index.checked_add(1 + i as Index) == Some(e.index)
                            && e.term >= term
                            && e.term <= m.term;
                        term = e.term;
                        follows
                    })
            }
            MessageBody::Vote { last_log_term, .. } => *last_log_term <= m.term,
            // Only a leader's own messages are answered with these; in another role they are ignored anyway.
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } if leader_now => {
                *index <= last && (!reject || (*hint_index <= last + 1 && *hint_term <= m.term))
            }
            MessageBody::HeartbeatResponse { read_round } if leader_now => {
                *read_round <= self.read_round
            }
            // A follower answers with the index of a snapshot this leader sent, and that only grows.
            MessageBody::SnapshotResponse { index, .. } if leader_now => {
                *index <= self.log.snapshot_index()
            }
            MessageBody::Snapshot {
                meta, offset, data, ..
            } => {
                meta.term <= m.term
                    && offset
                        .checked_add(data.len() as u64)
                        .is_some_and(|end| end <= self.cfg.max_snapshot_bytes)
            }
            _ => true,
        }
    }

    /// §5.1 term rules, with the PreVote and CheckQuorum refinements. Returns false if `m` is to be ignored.
    fn step_term(&mut self, m: &Message) -> bool {
        use MessageBody::*;
        if m.term > self.term {
            match m.body {
                Vote {
                    pre_vote, transfer, ..
                } => {
                    if !transfer && self.in_leader_lease() {
                        // §4.2.3: a node that heard from a leader recently ignores requests to replace it.
                        return false;
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                // A granted pre-vote carries the term the pre-candidate would campaign in: not a newer term.
                VoteResponse {
                    pre_vote: true,
                    reject: false,
                    ..
                } => {}
                Append { .. } | Heartbeat { .. } | Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from))
                }
                _ => self.become_follower(m.term, None),
            }
            return true;
        }
        if m.term < self.term {
            match m.body {
                // A leader cut off in an older term learns the current term (so it steps down): with PreVote the
                // rest of the cluster would otherwise never raise its term past it.
                Append { .. } | Heartbeat { .. } | Snapshot { .. } => self.send(
                    m.from,
                    AppendResponse {
                        reject: true,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                ),
                Vote {
                    pre_vote: true,
                    last_log_index,
                    ..
                } => {
                    let (committed, committed_term) = self.commit_hint(last_log_index);
                    self.send(
                        m.from,
                        VoteResponse {
                            pre_vote: true,
                            reject: true,
                            committed,
                            committed_term,
                        },
                    );
                }
                // Every read-index request gets an answer; "none" tells the asker to retry.
                ReadIndex { ref ctx } => self.refuse_read(m.from, ctx.clone()),
                VoteResponse {
                    committed,
                    committed_term,
                    ..
                } => self.learn_committed(committed, committed_term),
                _ => {}
            }
            return false;
        }
        true
    }

    /// Answers a read-index request this node cannot serve: "none", so the asker retries elsewhere.
    fn refuse_read(&mut self, to: NodeId, ctx: Vec<u8>) {
        self.send(to, MessageBody::ReadIndexResponse { ctx, index: None });
    }

    /// True while this node has heard from a leader within the election timeout (only with CheckQuorum).
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && match self.role {
                Role::Leader => true,
                _ => self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks,
            }
    }
}

/// A leader whose own removal committed, telling the remaining voters before it hands over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Leaving {
    /// The commit index once the removal committed: every remaining voter must learn it.
    pub(crate) index: Index,
    /// The heartbeat round sent once every remaining voter held the entries up to `index`.
    pub(crate) round: Option<u64>,
    /// Ticks since the removal committed.
    pub(crate) ticks: usize,
}

/// §5.2: an election timeout drawn from `[election_ticks, 2 × election_ticks)`, so that split votes are rare.
fn random_election_ticks(rng: &mut Rng, cfg: &Config) -> usize {
    rng.range(cfg.election_ticks as u64, 2 * cfg.election_ticks as u64) as usize
}

/// Applies one membership change to a configuration.
pub(crate) fn apply_conf_change(conf: &mut ConfState, cc: &ConfChange) {
    let id = cc.node_id;
    conf.voters.retain(|&v| v != id);
    conf.learners.retain(|&v| v != id);
    match cc.kind {
        ConfChangeKind::AddLearner => conf.learners.push(id),
        ConfChangeKind::AddVoter => conf.voters.push(id),
        ConfChangeKind::Remove => {}
    }
    conf.voters.sort_unstable();
    conf.learners.sort_unstable();
}
