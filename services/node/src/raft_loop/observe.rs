//! What the outside sees of the Raft loop: the published [`View`] (which drives health), and the trace spans
//! of elections and leadership changes, derived from the role changes each `Ready` reports.
//!
//! - `raft.election` spans from the moment a node starts asking for (pre-)votes to the moment it wins,
//!   loses or gives up, with the term, whether it started with a pre-vote, and the votes granted and refused.
//! - `raft.leader_change` marks every change of leader this node sees: old leader, new leader, term.

use super::View;
use reinado_raft::{Message, MessageBody, NodeId, Raft, Role, Term};
use std::collections::BTreeMap;
use tokio::sync::watch;
use tracing::{Span, info, info_span};

/// An election this node is running.
struct Election {
    span: Span,
    term: Term,
    granted: u32,
    refused: u32,
}

/// Derives the view and the election spans from the core's role changes.
pub(super) struct Observer {
    id: NodeId,
    view: watch::Sender<View>,
    election: Option<Election>,
    leader: Option<NodeId>,
    /// The (term, leader) the node last caught up with; it serves while that holds.
    caught_up_with: Option<(Term, NodeId)>,
}

impl Observer {
    pub(super) fn new(id: NodeId, view: watch::Sender<View>) -> Self {
        Observer {
            id,
            view,
            election: None,
            leader: None,
            caught_up_with: None,
        }
    }

    /// Counts vote answers for the election in progress.
    pub(super) fn on_message(&mut self, msg: &Message) {
        let (
            Some(e),
            MessageBody::VoteResponse {
                reject, pre_vote, ..
            },
        ) = (self.election.as_mut(), &msg.body)
        else {
            return;
        };
        // A pre-vote answer carries the term the candidate would campaign in, a vote answer the current one.
        let expected = if *pre_vote { e.term + 1 } else { e.term };
        if msg.term != expected && !*reject {
            return;
        }
        if *reject {
            e.refused += 1;
        } else {
            e.granted += 1;
        }
    }

    /// The role or leader changed.
    pub(super) fn on_soft_state(&mut self, raft: &Raft, role: Role, leader: Option<NodeId>) {
        let term = raft.term();
        match role {
            Role::PreCandidate | Role::Candidate => {
                let pre_vote = role == Role::PreCandidate;
                match &mut self.election {
                    Some(e) => {
                        e.term = term;
                        e.span.record("term", term);
                        e.span.record("reached_vote", !pre_vote);
                    }
                    None => self.start_election(term, pre_vote),
                }
            }
            Role::Leader => {
                // A campaign can start and end between two Readies (a single-member cluster always does):
                // it still gets its span.
                if self.election.is_none() {
                    self.start_election(term, false);
                }
                self.end_election("won");
            }
            Role::Follower => self.end_election(if leader.is_some() {
                "another node won"
            } else {
                "abandoned"
            }),
        }
        if leader != self.leader {
            let span = info_span!(
                parent: None,
                "raft.leader_change",
                node = self.id,
                old_leader = self.leader.unwrap_or(0),
                new_leader = leader.unwrap_or(0),
                term,
            );
            span.in_scope(|| {
                info!(
                    old_leader = ?self.leader,
                    new_leader = ?leader,
                    term,
                    "leader changed"
                );
            });
            self.leader = leader;
        }
    }

    fn start_election(&mut self, term: Term, pre_vote: bool) {
        let span = info_span!(
            parent: None,
            "raft.election",
            node = self.id,
            term,
            pre_vote,
            reached_vote = !pre_vote,
            votes_granted = 0u32,
            votes_refused = 0u32,
            outcome = tracing::field::Empty,
        );
        span.in_scope(|| info!(term, pre_vote, "campaigning"));
        self.election = Some(Election {
            span,
            term,
            granted: 0,
            refused: 0,
        });
    }

    fn end_election(&mut self, outcome: &'static str) {
        if let Some(e) = self.election.take() {
            e.span.record("votes_granted", e.granted);
            e.span.record("votes_refused", e.refused);
            e.span.record("outcome", outcome);
            e.span
                .in_scope(|| info!(term = e.term, outcome, "election ended"));
        }
    }

    /// Recomputes the view and publishes it if it changed.
    pub(super) fn publish(&mut self, raft: &Raft, client_addrs: &BTreeMap<NodeId, String>) {
        let soft = raft.soft_state();
        let member = raft.conf().contains(self.id);
        let view = View {
            role: soft.role,
            term: raft.term(),
            leader: soft.leader,
            leader_addr: soft
                .leader
                .and_then(|l| client_addrs.get(&l).cloned())
                .unwrap_or_default(),
            member,
            serving: self.serving(raft, soft.leader, member),
        };
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            if changed {
                *v = view;
            }
            changed
        });
    }

    /// A node serves once it knows a leader in the current term and has applied what it learned from it;
    /// it stops when the leader or term changes (an election, or being cut off from the majority). A leader
    /// serves once an entry of its own term is committed and applied (§5.4.2, thesis §6.4).
    fn serving(&mut self, raft: &Raft, leader: Option<NodeId>, member: bool) -> bool {
        let term = raft.term();
        let Some(leader) = leader.filter(|_| member) else {
            self.caught_up_with = None;
            return false;
        };
        if self.caught_up_with == Some((term, leader)) {
            return true;
        }
        let commit = raft.commit();
        let own_term_committed = leader != self.id || raft.term_at(commit) == Some(term);
        if own_term_committed && raft.applied() >= commit {
            self.caught_up_with = Some((term, leader));
            return true;
        }
        false
    }

    /// The node is stopping: it no longer serves.
    pub(super) fn stopping(&mut self) {
        self.view.send_modify(|v| v.serving = false);
    }
}
