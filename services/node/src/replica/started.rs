//! Lost disks. A member whose data dir is lost must not come back as a voter with an empty log: its vote
//! would elect a leader that lacks entries the cluster committed with its help, and it could vote twice in
//! one term. So the cluster records which members took part, and an empty data dir asks before it writes the
//! bootstrap log.
//!
//! - A leader records a voter as *started* (a `MembersStarted` command) once the voter acknowledged an
//!   append of the leader's term: from then on its disk holds state the cluster counts on. Removing the
//!   member clears the record, so the id can be added again.
//! - A node that starts with an empty data dir and is listed in the bootstrap members probes them
//!   ([`bootstrap_decision`]). It writes the bootstrap log only when the cluster is new (every member that
//!   answered is empty too, and they are a majority with it). If the cluster runs, it joins instead, and the
//!   leader decides: a member that never took part starts with an empty log (it never voted, so it cannot
//!   vote twice), a removed one is added as a learner, and one that took part (a lost disk) is refused and
//!   told to be removed and added again.
//! - AddMember of a member that started is refused for the same reason; the leader answers it only once it
//!   has applied everything committed before its term, so that it has seen every record.
//!
//! What this cannot see: a disk lost in the moment between a member's first acknowledgement and the commit
//! of its record, on a node that then also loses the leader that proposed it (the leader answers probes
//! with what it proposed, not only what committed, which narrows that window to the leader's crash).

use super::{Replica, Waiters};
use prost::Message as _;
use reinado_proto::v1::{Command, MembersStarted, command};
use reinado_raft::{Index, NodeId, Role};
use std::collections::BTreeMap;
use tracing::info;

/// One bootstrap member's answer to a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The member has no state either (it is probing too).
    pub fresh: bool,
    /// The member knows the asking id took part in the cluster.
    pub started: bool,
}

/// What an empty data dir listed in the bootstrap members does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapDecision {
    /// The cluster is new: write the bootstrap log.
    Bootstrap,
    /// The cluster runs: ask to join through this member, whose leader decides.
    Join(NodeId),
    /// Not enough members answered to tell; probe again.
    Wait(String),
    /// This id took part and its disk was lost: it must not start as a voter.
    Refuse(String),
}

/// Decides from the answers of the other bootstrap `members` (ids that did not answer are absent) what node
/// `me`, with an empty data dir, does. A single member never asks.
pub fn bootstrap_decision(
    me: NodeId,
    members: &[NodeId],
    answers: &BTreeMap<NodeId, ProbeAnswer>,
    bugs: super::Bugs,
) -> BootstrapDecision {
    if bugs.accept_wiped_member {
        return BootstrapDecision::Bootstrap;
    }
    let others: Vec<NodeId> = members.iter().copied().filter(|&id| id != me).collect();
    let heard: Vec<(NodeId, ProbeAnswer)> = others
        .iter()
        .filter_map(|&id| Some((id, *answers.get(&id)?)))
        .collect();
    if heard.iter().any(|(_, a)| a.started) {
        return BootstrapDecision::Refuse(lost_disk(me));
    }
    if let Some(&(running, _)) = heard.iter().find(|(_, a)| !a.fresh) {
        return BootstrapDecision::Join(running);
    }
    let majority = members.len() / 2 + 1;
    if others.is_empty() || heard.len() + 1 >= majority {
        return BootstrapDecision::Bootstrap;
    }
    BootstrapDecision::Wait(format!(
        "{} of the {} other bootstrap members answered, all empty too; {} must, to start a new cluster",
        heard.len(),
        others.len(),
        majority - 1
    ))
}

/// Why a member whose disk was lost may not start, and what the operator does.
pub fn lost_disk(id: NodeId) -> String {
    format!(
        "node {id} took part in this cluster before, and its data dir is empty: its disk was lost. A member \
         with an empty log must not vote. Remove it (`reinado members remove {id}`), then start it with \
         REINADO_JOIN set to a member or proxy, so that it joins as a learner and catches up"
    )
}

impl<W: Waiters> Replica<W> {
    /// A leader records the voters that acknowledged its appends (and itself) as started, once per term.
    pub(super) fn record_started(&mut self) {
        if self.raft.role() != Role::Leader {
            return;
        }
        let term = self.raft.term();
        if self.started_proposed.0 != term {
            self.started_proposed = (term, Default::default());
        }
        let me = self.settings.id;
        let acked = self
            .raft
            .match_indexes()
            .filter(|&(_, matched)| matched > 0)
            .map(|(id, _)| id)
            .chain(std::iter::once(me));
        let conf = self.raft.conf();
        let state = self.state.read().expect("state lock");
        let applied = state.applied();
        // A record proposed and applied that did not take (the member was removed and added again since)
        // is proposed again.
        let pending = |id: &NodeId| {
            self.started_proposed
                .1
                .get(id)
                .is_some_and(|&at| at > applied)
        };
        let ids: Vec<NodeId> = acked
            .filter(|&id| conf.is_voter(id) && !state.started(id))
            .filter(|id| !pending(id))
            .collect();
        drop(state);
        if ids.is_empty() {
            return;
        }
        let cmd = Command {
            op: Some(command::Op::MembersStarted(MembersStarted {
                ids: ids.clone(),
            })),
            ..Command::default()
        };
        if let Ok((index, _)) = self.raft.propose(cmd.encode_to_vec()) {
            info!(?ids, "recording members as started");
            self.started_proposed
                .1
                .extend(ids.iter().map(|&id| (id, index)));
        }
    }

    /// The answer to a probe from `id`, which starts with an empty data dir: has the cluster run, and does
    /// this node know `id` took part? What this node recorded, and, as leader, what it proposed to record.
    /// A node that bootstrapped but has no record of anyone taking part answers "fresh": the cluster has not
    /// run yet, and the asking member bootstraps with it rather than waiting to join a cluster with no leader.
    pub fn probe(&self, id: NodeId) -> ProbeAnswer {
        let (recorded, ran, applied) = {
            let state = self.state.read().expect("state lock");
            (state.started(id), state.any_started(), state.applied())
        };
        let proposing =
            self.raft.role() == Role::Leader && self.started_proposed.0 == self.raft.term();
        // Proposed and not applied yet; once applied, the record (or its removal since) speaks.
        let pending = |&at: &Index| at > applied;
        let proposed = proposing && self.started_proposed.1.get(&id).is_some_and(pending);
        ProbeAnswer {
            fresh: !ran && !proposing,
            started: recorded || proposed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[(NodeId, bool, bool)]) -> BTreeMap<NodeId, ProbeAnswer> {
        list.iter()
            .map(|&(id, fresh, started)| (id, ProbeAnswer { fresh, started }))
            .collect()
    }

    fn decide(me: NodeId, members: &[NodeId], list: &[(NodeId, bool, bool)]) -> BootstrapDecision {
        bootstrap_decision(me, members, &answers(list), super::super::Bugs::default())
    }

    fn is_wait(d: &BootstrapDecision) -> bool {
        matches!(d, BootstrapDecision::Wait(_))
    }

    #[test]
    fn a_single_member_bootstraps_without_asking() {
        assert_eq!(decide(1, &[1], &[]), BootstrapDecision::Bootstrap);
    }

    #[test]
    fn a_new_cluster_bootstraps_with_a_majority_of_empty_answers() {
        assert_eq!(
            decide(3, &[1, 2, 3], &[(1, true, false)]),
            BootstrapDecision::Bootstrap
        );
        assert!(is_wait(&decide(3, &[1, 2, 3], &[])));
        assert!(is_wait(&decide(5, &[1, 2, 3, 4, 5], &[(1, true, false)])));
        assert_eq!(
            decide(5, &[1, 2, 3, 4, 5], &[(1, true, false), (2, true, false)]),
            BootstrapDecision::Bootstrap
        );
    }

    #[test]
    fn a_running_cluster_is_joined_and_its_leader_decides() {
        assert_eq!(
            decide(3, &[1, 2, 3], &[(1, true, false), (2, false, false)]),
            BootstrapDecision::Join(2)
        );
        assert_eq!(
            decide(5, &[1, 2, 3, 4, 5], &[(4, false, false)]),
            BootstrapDecision::Join(4)
        );
    }

    #[test]
    fn a_lost_disk_is_refused_as_soon_as_one_member_knows_it_took_part() {
        let d = decide(3, &[1, 2, 3], &[(1, false, false), (2, false, true)]);
        assert!(
            matches!(&d, BootstrapDecision::Refuse(why) if why.contains("reinado members remove 3")),
            "{d:?}"
        );
    }

    #[test]
    fn with_the_bug_a_lost_disk_bootstraps() {
        let bugs = super::super::Bugs {
            accept_wiped_member: true,
            ..Default::default()
        };
        let d = bootstrap_decision(3, &[1, 2, 3], &answers(&[(2, false, true)]), bugs);
        assert_eq!(d, BootstrapDecision::Bootstrap);
    }
}
