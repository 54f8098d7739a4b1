//! The requests a replica serves: writes, membership changes, leadership transfers, step-down, status and
//! log entries.

use super::{Answer, Output, PendingWrite, Replica, Waiters};
use crate::error::NodeError;
use prost::Message as _;
use reinado_proto::v1::{Command, MemberContext, command};
use reinado_raft::{ConfChange, ConfChangeKind, Entry, Index, NodeId, Role, Term};
use tracing::{info, info_span};

/// A learner is promoted once it is at most this many entries behind the leader's log.
const PROMOTE_MAX_LAG: u64 = 64;

/// etcd's refusals of a promotion.
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";

/// One member, as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member.
    pub id: NodeId,
    /// Where peers reach it.
    pub peer_addr: String,
    /// Where clients reach it.
    pub client_addr: String,
    /// It votes.
    pub voter: bool,
    /// Leader only: the highest index known replicated on it.
    pub match_index: Index,
    /// Leader only: how far behind the leader's last index it is.
    pub lag: u64,
    /// Leader only: it answered within the last election timeout.
    pub active: bool,
}

/// The node's state, for `Status`.
#[derive(Clone, Debug)]
pub struct StatusReport {
    /// This node.
    pub id: NodeId,
    /// Its Raft role.
    pub role: Role,
    /// It is a voter or a learner.
    pub member: bool,
    /// It is a learner.
    pub learner: bool,
    /// Its term.
    pub term: Term,
    /// The leader, if known.
    pub leader: Option<NodeId>,
    /// The leader's client address, if known.
    pub leader_addr: String,
    /// The commit index.
    pub commit: Index,
    /// The applied index.
    pub applied: Index,
    /// The last log index.
    pub last_index: Index,
    /// The last index the snapshot covers.
    pub snapshot_index: Index,
    /// The members.
    pub members: Vec<MemberInfo>,
    /// Bytes stored.
    pub db_size_bytes: u64,
    /// The quota.
    pub quota_bytes: u64,
}

impl<W: Waiters> Replica<W> {
    /// A leader steps down (Fault API).
    pub fn step_down(&mut self) -> Result<String, NodeError> {
        if self.raft.soft_state().role != Role::Leader {
            return Err(NodeError::FailedPrecondition(format!(
                "node {} is not the leader",
                self.settings.id
            )));
        }
        let term = self.raft.term();
        self.raft.step_down();
        info!(term, "stepped down on request (Fault API)");
        Ok(format!(
            "node {} stepped down from leading term {term}",
            self.settings.id
        ))
    }

    /// The error for a request the core refused.
    fn core_error(&self, e: reinado_raft::Error) -> NodeError {
        match e {
            reinado_raft::Error::NotLeader { leader: Some(id) } => NodeError::NotLeader {
                id,
                addr: self.announced_client.get(&id).cloned().unwrap_or_default(),
            },
            reinado_raft::Error::NotLeader { leader: None } => NodeError::NoLeader,
            reinado_raft::Error::TransferInProgress(to) => {
                NodeError::Unavailable(format!("leadership is being handed to node {to}; retry"))
            }
            reinado_raft::Error::ConfChangePending(index) => NodeError::Unavailable(format!(
                "another membership change (log index {index}) is in progress; retry"
            )),
            reinado_raft::Error::InvalidConfChange(why) => NodeError::FailedPrecondition(why),
            e @ reinado_raft::Error::UncommittedFull { .. } => {
                NodeError::Unavailable(format!("{e} (REINADO_MAX_UNCOMMITTED_BYTES)"))
            }
            other => NodeError::FailedPrecondition(other.to_string()),
        }
    }

    pub(super) fn propose_write(
        &mut self,
        data: Vec<u8>,
        span: tracing::Span,
        waiter: W::Write,
        out: &mut Output<W>,
    ) {
        match self.raft.propose(data) {
            Ok((index, term)) => {
                let commit_span = info_span!(parent: &span, "raft.commit", index, term);
                let pending = PendingWrite {
                    term,
                    waiter,
                    commit_span,
                    request_span: span,
                };
                if let Some(old) = self.writes.insert(index, pending) {
                    out.answers
                        .push(Answer::Write(old.waiter, Err(NodeError::LeadershipLost)));
                }
            }
            Err(e) => {
                let err = self.core_error(e);
                out.answers.push(Answer::Write(waiter, Err(err)));
            }
        }
    }

    pub(super) fn add_member(
        &mut self,
        id: NodeId,
        ctx: MemberContext,
        waiter: W::Members,
        out: &mut Output<W>,
    ) {
        if self.raft.conf().contains(id) {
            if !self.applied_before_term() {
                let err = NodeError::Unavailable(
                    "the leader is applying what earlier terms committed; retry".into(),
                );
                out.answers.push(Answer::Members(waiter, Err(err)));
                return;
            }
            let (known, started) = {
                let state = self.state.read().expect("state lock");
                (state.members().get(&id).cloned(), state.started(id))
            };
            let result = match known {
                Some(k) if k.peer_addr != ctx.peer_addr => Err(NodeError::FailedPrecondition(
                    format!("node {id} is already a member, at {}", k.peer_addr),
                )),
                // A member that took part asks to be added again: only an empty data dir does that, a lost
                // disk (see `started.rs`). As a voter with an empty log it would be unsafe.
                Some(_) if started && !self.settings.bugs.accept_wiped_member => {
                    Err(NodeError::FailedPrecondition(format!(
                        "node {id} is already a member and took part in this cluster: adding it again would \
                         make an empty log a voter. If its data dir was lost, remove it first (`reinado \
                         members remove {id}`), then join it again"
                    )))
                }
                // Added, but it never answered a leader: a retried join, safe to answer again.
                _ => Ok(self.members()),
            };
            out.answers.push(Answer::Members(waiter, result));
            return;
        }
        let cc = ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: id,
            context: ctx.encode_to_vec(),
        };
        self.propose_member_change(cc, waiter, out);
    }

    /// True once this leader committed an entry of its term and applied everything up to it: its state
    /// machine has seen every record committed before its term.
    pub(super) fn applied_before_term(&self) -> bool {
        let commit = self.raft.commit();
        self.raft.term_at(commit) == Some(self.raft.term())
            && self.state.read().expect("state lock").applied() >= commit
    }

    pub(super) fn remove_member(&mut self, id: NodeId, waiter: W::Members, out: &mut Output<W>) {
        if !self.raft.conf().contains(id) {
            let err = NodeError::NotFound(format!("node {id} is not a member"));
            out.answers.push(Answer::Members(waiter, Err(err)));
            return;
        }
        let cc = ConfChange {
            kind: ConfChangeKind::Remove,
            node_id: id,
            context: Vec::new(),
        };
        self.propose_member_change(cc, waiter, out);
    }

    /// Promotes learner `id` to voter, if it caught up; refused with etcd's messages otherwise (etcd's
    /// clients recognise its errors by their exact message).
    pub(super) fn promote_member(&mut self, id: NodeId, waiter: W::Members, out: &mut Output<W>) {
        let refused = if self.raft.soft_state().role != Role::Leader {
            let leader = self.raft.soft_state().leader;
            Some(self.core_error(reinado_raft::Error::NotLeader { leader }))
        } else if !self.raft.conf().contains(id) {
            Some(NodeError::NotFound(MEMBER_NOT_FOUND.into()))
        } else if !self.raft.conf().learners.contains(&id) {
            Some(NodeError::FailedPrecondition(NOT_A_LEARNER.into()))
        } else if !self.caught_up(id) {
            Some(NodeError::FailedPrecondition(LEARNER_NOT_READY.into()))
        } else {
            None
        };
        if let Some(err) = refused {
            out.answers.push(Answer::Members(waiter, Err(err)));
            return;
        }
        let known = self
            .state
            .read()
            .expect("state lock")
            .members()
            .get(&id)
            .cloned();
        let Some(known) = known else {
            // Its addition committed but is not applied here yet: the entry would carry no addresses.
            let err = NodeError::Unavailable(format!("node {id} is being added; retry"));
            out.answers.push(Answer::Members(waiter, Err(err)));
            return;
        };
        let ctx = MemberContext {
            stay_learner: false,
            ..known
        };
        let cc = ConfChange {
            kind: ConfChangeKind::AddVoter,
            node_id: id,
            context: ctx.encode_to_vec(),
        };
        self.propose_member_change(cc, waiter, out);
    }

    /// True if learner `id` caught up with this leader: it holds the leader's snapshot (or, before any, an
    /// entry) and is within PROMOTE_MAX_LAG entries. In a short log, "within the lag" alone holds for a
    /// learner that holds nothing yet (simulator seed 499: promoted at match 0, it crashed, and two voters
    /// lost their quorum).
    fn caught_up(&self, id: NodeId) -> bool {
        let status = self.raft.status();
        status
            .peers
            .iter()
            .any(|p| p.id == id && self.peer_caught_up(p.match_index))
    }

    /// True if a peer whose log matches this leader's up to `match_index` caught up (see `caught_up`).
    fn peer_caught_up(&self, match_index: Index) -> bool {
        let holds = self.raft.snapshot().meta.index.max(1);
        match_index >= holds && match_index + PROMOTE_MAX_LAG >= self.raft.last_index()
    }

    fn propose_member_change(&mut self, cc: ConfChange, waiter: W::Members, out: &mut Output<W>) {
        let (kind, node) = (cc.kind, cc.node_id);
        match self.raft.propose_conf_change(cc) {
            Ok((index, term)) => {
                info!(?kind, node, index, "membership change proposed");
                self.conf_waiters.insert(index, (term, waiter));
            }
            Err(e) => {
                let err = self.core_error(e);
                out.answers.push(Answer::Members(waiter, Err(err)));
            }
        }
    }

    pub(super) fn answer_conf_change(&mut self, index: Index, term: Term, out: &mut Output<W>) {
        let Some((proposed_in, waiter)) = self.conf_waiters.remove(&index) else {
            return;
        };
        let result = if proposed_in == term {
            Ok(self.members())
        } else {
            Err(NodeError::LeadershipLost)
        };
        out.answers.push(Answer::Members(waiter, result));
    }

    /// A leader promotes a learner that caught up, unless it was added to stay a learner. One change at a
    /// time: the core refuses a second while one is pending.
    pub(super) fn maybe_promote(&mut self) {
        if self.raft.soft_state().role != Role::Leader || self.raft.conf().learners.is_empty() {
            return;
        }
        let status = self.raft.status();
        let members = self.state.read().expect("state lock").members().clone();
        let ready = status.peers.iter().find(|p| {
            !p.voter
                && self.peer_caught_up(p.match_index)
                && members.get(&p.id).is_some_and(|ctx| !ctx.stay_learner)
        });
        if let Some(p) = ready {
            let ctx = members.get(&p.id).cloned().unwrap_or_default();
            let cc = ConfChange {
                kind: ConfChangeKind::AddVoter,
                node_id: p.id,
                context: ctx.encode_to_vec(),
            };
            if let Ok((index, _)) = self.raft.propose_conf_change(cc) {
                info!(
                    node = p.id,
                    index, "learner caught up: promoting it to voter"
                );
            }
        }
    }

    /// The limits that shape the state machine are agreed through the log: a leader whose configured limits
    /// differ from the agreed ones proposes its own, once in its term, after the first entry of the term
    /// committed and everything up to it was applied (so it compares with the latest agreement). A rolling
    /// configuration change thus takes effect when an updated node leads; until then, every member applies
    /// the same ones.
    pub(super) fn propose_limits(&mut self) {
        let term = self.raft.term();
        if self.raft.role() != Role::Leader
            || self.limits_checked == term
            || !self.applied_before_term()
        {
            return;
        }
        let agreed = self.state.read().expect("state lock").limits();
        let mine = self.settings.limits;
        if agreed != mine {
            let cmd = Command {
                op: Some(command::Op::SetLimits(mine.to_proto())),
                ..Command::default()
            };
            if let Err(e) = self.raft.propose(cmd.encode_to_vec()) {
                info!("limits not proposed yet: {e}");
                return;
            }
            info!(?agreed, ?mine, "proposing this node's state machine limits");
        }
        self.limits_checked = term;
    }

    pub(super) fn transfer(
        &mut self,
        target: Option<NodeId>,
        waiter: W::Leader,
        out: &mut Output<W>,
    ) {
        let me = self.settings.id;
        if self.raft.soft_state().role != Role::Leader {
            let leader = self.raft.soft_state().leader;
            let err = self.core_error(reinado_raft::Error::NotLeader { leader });
            out.answers.push(Answer::Leader(waiter, Err(err)));
            return;
        }
        let Some(target) = target.or_else(|| self.most_caught_up_voter()) else {
            let err = NodeError::FailedPrecondition(
                "there is no other voter to hand leadership to".into(),
            );
            out.answers.push(Answer::Leader(waiter, Err(err)));
            return;
        };
        if target == me {
            out.answers.push(Answer::Leader(waiter, Ok(me)));
            return;
        }
        match self.raft.transfer_leader(target) {
            Ok(()) => {
                info!(target, "transferring leadership");
                let deadline = self.ticks + 2 * self.settings.election_ticks;
                self.transfers.push((target, deadline, waiter));
            }
            Err(e) => {
                let err = self.core_error(e);
                out.answers.push(Answer::Leader(waiter, Err(err)));
            }
        }
    }

    /// Starts handing leadership to the most caught-up voter (on shutdown); returns the target.
    pub fn hand_over(&mut self) -> Option<NodeId> {
        if self.raft.soft_state().role != Role::Leader {
            return None;
        }
        let target = self.most_caught_up_voter()?;
        self.raft.transfer_leader(target).ok()?;
        Some(target)
    }

    /// Answers the transfers waiting for `leader`.
    pub(super) fn complete_transfers(&mut self, leader: Option<NodeId>, out: &mut Output<W>) {
        let Some(leader) = leader else { return };
        for (target, _, waiter) in self.transfers.drain(..) {
            let result = if leader == target {
                Ok(leader)
            } else {
                Err(NodeError::FailedPrecondition(format!(
                    "leadership went to node {leader}, not {target}"
                )))
            };
            out.answers.push(Answer::Leader(waiter, result));
        }
    }

    pub(super) fn expire_transfers(&mut self, out: &mut Output<W>) {
        let now = self.ticks;
        let (expired, waiting): (Vec<_>, Vec<_>) = self
            .transfers
            .drain(..)
            .partition(|(_, deadline, _)| now >= *deadline);
        self.transfers = waiting;
        for (_, _, waiter) in expired {
            let err = NodeError::Timeout("the leadership transfer");
            out.answers.push(Answer::Leader(waiter, Err(err)));
        }
    }

    /// The voter (other than this node) with the highest match index among those recently heard from.
    fn most_caught_up_voter(&self) -> Option<NodeId> {
        self.raft
            .status()
            .peers
            .into_iter()
            .filter(|p| p.voter && p.id != self.settings.id && p.recent_active)
            .max_by_key(|p| p.match_index)
            .map(|p| p.id)
    }

    /// The members with their addresses and, on a leader, their progress.
    pub fn members(&self) -> Vec<MemberInfo> {
        let status = self.raft.status();
        let sm = self.state.read().expect("state lock");
        let conf = &status.conf;
        conf.members()
            .map(|id| {
                let recorded = sm.members().get(&id).cloned().unwrap_or_default();
                let peer_addr = self
                    .announced_peer
                    .get(&id)
                    .cloned()
                    .or_else(|| self.settings.bootstrap_peers.get(&id).cloned())
                    .unwrap_or(recorded.peer_addr);
                let client_addr = self
                    .announced_client
                    .get(&id)
                    .cloned()
                    .unwrap_or(recorded.client_addr);
                let mut info = MemberInfo {
                    id,
                    peer_addr,
                    client_addr,
                    voter: conf.is_voter(id),
                    ..MemberInfo::default()
                };
                if status.role == Role::Leader {
                    if id == self.settings.id {
                        info.match_index = status.last_index;
                        info.active = true;
                    } else if let Some(p) = status.peers.iter().find(|p| p.id == id) {
                        info.match_index = p.match_index;
                        info.lag = status.last_index.saturating_sub(p.match_index);
                        info.active = p.recent_active;
                    }
                }
                info
            })
            .collect()
    }

    /// The node's state, for `Status`.
    pub fn status_report(&self) -> StatusReport {
        let status = self.raft.status();
        let (db_size_bytes, quota_bytes) = {
            let sm = self.state.read().expect("state lock");
            (sm.size_bytes(), sm.quota_bytes())
        };
        StatusReport {
            id: self.settings.id,
            role: status.role,
            member: status.conf.contains(self.settings.id),
            learner: status.conf.learners.contains(&self.settings.id),
            term: status.term,
            leader: status.leader,
            leader_addr: status
                .leader
                .and_then(|l| self.announced_client.get(&l).cloned())
                .unwrap_or_default(),
            commit: status.commit,
            applied: status.applied,
            last_index: status.last_index,
            snapshot_index: status.snapshot_index,
            members: self.members(),
            db_size_bytes,
            quota_bytes,
        }
    }

    /// The committed entry at `index`.
    pub fn log_entry(&self, index: Index) -> Result<Entry, NodeError> {
        let commit = self.raft.commit();
        let snapshot = self.raft.snapshot().meta.index;
        if index == 0 {
            return Err(NodeError::InvalidArgument("log indexes start at 1".into()));
        }
        if index > commit {
            return Err(NodeError::NotFound(format!(
                "entry {index} is not committed yet (commit index {commit})"
            )));
        }
        self.raft.entry(index).cloned().ok_or_else(|| {
            NodeError::Compacted(format!(
                "entry {index} was compacted into the snapshot at index {snapshot}"
            ))
        })
    }
}
