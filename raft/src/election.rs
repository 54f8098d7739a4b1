//! Leader election (§5.2), with PreVote (thesis §9.6) and leadership transfer (thesis §3.10).

use crate::progress::Progress;
use crate::raft::Raft;
use crate::types::*;

/// What kind of campaign to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// Ask whether peers would vote, without changing anyone's term (thesis §9.6).
    PreElection,
    /// A real election in a new term (§5.2).
    Election,
    /// A real election asked for by the leader (TimeoutNow): peers ignore their leader lease.
    Transfer,
}

impl Raft {
    /// Starts a pre-election or an election.
    pub(crate) fn campaign(&mut self, kind: Campaign) {
        if !self.promotable() {
            return;
        }
        match kind {
            Campaign::PreElection => self.become_pre_candidate(),
            Campaign::Election | Campaign::Transfer => self.become_candidate(),
        }
        let transfer = kind == Campaign::Transfer;
        let pre_vote = kind == Campaign::PreElection;
        let term = if pre_vote { self.term + 1 } else { self.term };
        let me = self.cfg.id;
        self.votes.insert(me, true);
        if self.election_won() {
            return self.on_election_won();
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&v| v != me)
            .collect();
        for to in voters {
            let body = MessageBody::Vote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            };
            self.send_with_term(to, term, body);
        }
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote (`reset` to the same term keeps both): nothing changes
        // unless the pre-vote succeeds.
        self.reset(self.term);
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
    }

    /// Called when a (pre-)election collected a quorum of grants.
    fn on_election_won(&mut self) {
        match self.role {
            Role::PreCandidate => self.campaign(Campaign::Election),
            // Only a voter leads (a commit learned meanwhile may have removed it).
            Role::Candidate if self.promotable() => self.become_leader(),
            _ => {}
        }
    }

    fn election_won(&self) -> bool {
        self.count_votes(true) >= self.quorum()
    }

    fn election_lost(&self) -> bool {
        self.count_votes(false) >= self.quorum()
    }

    fn count_votes(&self, granted: bool) -> usize {
        self.votes
            .iter()
            .filter(|&(id, &g)| g == granted && self.conf.is_voter(*id))
            .count()
    }

    pub(crate) fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        let next = self.log.last_index() + 1;
        let me = self.cfg.id;
        for id in self
            .conf
            .members()
            .filter(|&id| id != me)
            .collect::<Vec<_>>()
        {
            self.progress.insert(id, Progress::new(next));
        }
        // §8: a new leader commits a no-op entry of its own term, which also commits everything before it
        // (§5.4.2) and makes reads and membership changes safe to serve.
        self.append_entry(EntryKind::Normal, Vec::new());
        self.pending_conf_index = self.log.last_index();
    }

    /// RequestVote and pre-vote handling (§5.2, §5.4.1). The term rules were applied by `step`.
    pub(crate) fn handle_vote_request(&mut self, m: Message) {
        let MessageBody::Vote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        else {
            return;
        };
        let log_ok = self.cfg.bugs.vote_without_log_check
            || self.log.is_up_to_date(last_log_index, last_log_term);
        let log_ok = log_ok && self.may_elect(m.from, last_log_index, last_log_term);
        let grant = if pre_vote {
            // Would we vote in the proposed term? Nobody's term or vote changes.
            m.term > self.term && log_ok
        } else {
            let free = self.vote.is_none_or(|v| v == m.from) && self.leader.is_none();
            m.term == self.term && free && log_ok
        };
        if grant && !pre_vote {
            self.vote = Some(m.from);
            self.election_elapsed = 0;
        }
        let me = self.cfg.id;
        if !pre_vote
            && self.role == Role::Candidate
            && m.term == self.term
            && self.conf.is_voter(m.from)
        {
            // A split vote: another candidate campaigns in this term too. The one with the lower id campaigns
            // again at its next tick and the other only after a whole timeout from now, so that the next
            // round does not split as well.
            self.election_elapsed = if me < m.from {
                self.randomized_election_ticks.saturating_sub(1)
            } else {
                0
            };
        }
        let term = if grant { m.term } else { self.term };
        let (committed, committed_term) = if grant {
            (0, 0)
        } else {
            self.commit_hint(last_log_index)
        };
        let body = MessageBody::VoteResponse {
            pre_vote,
            reject: !grant,
            committed,
            committed_term,
        };
        self.send_with_term(m.from, term, body);
    }

    /// Thesis §4.2.3: a removed server that did not learn of its removal campaigns in its old
    /// configuration; with its log as long as the others', the remaining members would elect it as soon as
    /// their leader is gone (the leader lease no longer holds them). So a candidate this node's configuration
    /// does not list is refused, unless it may be a member this node has not heard of yet: an entry of this
    /// node's uncommitted log adds it, or its log is ahead of this node's.
    fn may_elect(&self, candidate: NodeId, last_log_index: Index, last_log_term: Term) -> bool {
        // A node that knows no configuration (an empty log waiting to join) is nobody's voter yet. A stale
        // member whose old configuration still lists this id (removed, then added again with an empty disk)
        // would otherwise complete a quorum of that old configuration with its vote.
        if self.conf.voters.is_empty() {
            return false;
        }
        if self.conf.contains(candidate) {
            return true;
        }
        let ahead = last_log_term > self.log.last_term()
            || (last_log_term == self.log.last_term() && last_log_index > self.log.last_index());
        ahead
            || self
                .conf_changes(self.log.commit + 1, self.log.last_index())
                .iter()
                .any(|cc| cc.node_id == candidate && cc.kind != ConfChangeKind::Remove)
    }

    pub(crate) fn handle_vote_response(&mut self, m: Message) {
        let MessageBody::VoteResponse {
            pre_vote,
            reject,
            committed,
            committed_term,
        } = m.body
        else {
            return;
        };
        self.learn_committed(committed, committed_term);
        let expected = match self.role {
            Role::PreCandidate => pre_vote && (reject || m.term == self.term + 1),
            Role::Candidate => !pre_vote && m.term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.entry(m.from).or_insert(!reject);
        if self.election_won() {
            self.on_election_won();
        } else if self.election_lost() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// What a voter tells a candidate it refuses, whose log ends at `last_log_index`: the newest entry at
    /// or below it that this node holds and knows committed, with its term ((0, 0) for none). A candidate
    /// holding the same entry holds everything up to it (Log Matching, §5.3), all committed: a commit it may
    /// have missed (the leader that made it handed over or stopped), which may change the membership it
    /// campaigns in.
    pub(crate) fn commit_hint(&self, last_log_index: Index) -> (Index, Term) {
        let index = self.log.commit.min(last_log_index);
        match self.log.term(index) {
            Some(term) if index > 0 => (index, term),
            _ => (0, 0),
        }
    }

    /// A voter's refusal said that this log's entry `index` of `term` is committed: a fact whatever the
    /// message's term, as long as this log still holds that entry. A candidate that learns so that it is no
    /// longer a voter (its removal committed) stops campaigning.
    pub(crate) fn learn_committed(&mut self, index: Index, term: Term) {
        // A leader commits by its own count (a late answer from its campaign may still arrive).
        if self.role == Role::Leader
            || index <= self.log.commit
            || self.log.term(index) != Some(term)
        {
            return;
        }
        self.commit_to(index);
        if matches!(self.role, Role::PreCandidate | Role::Candidate) && !self.promotable() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Thesis §3.10: the leader asks this node to start an election at once.
    pub(crate) fn handle_timeout_now(&mut self) {
        // Only the leader of this term sends TimeoutNow, and `step` checked the term.
        if self.role != Role::Leader {
            self.campaign(Campaign::Transfer);
        }
    }
}
