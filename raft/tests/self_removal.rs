//! Thesis §4.2.2, removing the current leader: a leader that commits its own removal steps down, but first it
//! makes sure the remaining voters hold the new commit index (they take a change into force only once they learn it is
//! committed, so until then they still count the old leader's vote) and hands leadership over with TimeoutNow
//! (thesis §3.10), so that the most caught-up remaining voter campaigns at once in the new configuration.

mod harness;

use harness::{Network, Verdict, drain};
use reinado_raft::*;

fn remove(id: NodeId) -> ConfChange {
    ConfChange {
        kind: ConfChangeKind::Remove,
        node_id: id,
        context: Vec::new(),
    }
}

/// The index of the last membership-change entry node `id` applied.
fn applied_conf_change(net: &Network, id: NodeId) -> Option<Index> {
    net.node(id)
        .applied
        .iter()
        .rev()
        .find(|e| e.kind == EntryKind::ConfChange)
        .map(|e| e.index)
}

#[test]
fn t4_2_2_removed_leader_of_two_voters_hands_over_and_the_other_leads_alone() {
    let mut net = Network::new(2);
    net.elect(1);
    let (removal, _) = net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();

    // No tick has passed: node 2 learned the commit index and was told to campaign at once.
    assert_eq!(net.leader(), Some(2), "{:?}", net.status(2));
    let st = net.status(2);
    assert_eq!(st.conf.voters, vec![2]);
    assert!(st.commit >= removal);
    assert_eq!(applied_conf_change(&net, 2), Some(removal));
    assert_eq!(net.status(1).role, Role::Follower);

    // Node 2 leads {2} alone: it commits without node 1.
    net.isolate(1);
    let (index, _) = net.propose(2, b"a=1").unwrap();
    assert_eq!(net.status(2).commit, index);
    assert_eq!(net.node(2).kv.get("a").map(String::as_str), Some("1"));
    net.tick_all(50);
    assert_eq!(net.leader(), Some(2));
}

#[test]
fn t4_2_2_removed_leader_of_three_voters_is_replaced_without_an_election_timeout() {
    let mut net = Network::new(3);
    net.elect(1);
    let (removal, _) = net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();

    // An election timeout is at least `election_ticks` (10) ticks; TimeoutNow needs none.
    let rounds = net.tick_until(&[1, 2, 3], 2, |n| n.leader().is_some_and(|l| l != 1));
    assert_eq!(rounds, 0, "a new leader without any tick");
    let leader = net.leader().unwrap();
    for id in [2, 3] {
        let st = net.status(id);
        assert_eq!(st.conf.voters, vec![2, 3], "node {id}");
        assert!(st.commit >= removal, "node {id}: {st:?}");
        assert_eq!(applied_conf_change(&net, id), Some(removal), "node {id}");
    }
    let (index, _) = net.propose(leader, b"a=1").unwrap();
    for id in [2, 3] {
        assert_eq!(net.status(id).commit, index, "node {id}");
    }
}

#[test]
fn t4_2_2_removed_leader_leads_until_every_remaining_voter_holds_the_commit_then_hands_over() {
    let mut raft = Raft::bootstrap(Config::new(1), &[1, 2, 3]).unwrap();
    drain(&mut raft);
    raft.start_election();
    drain(&mut raft);
    let term = raft.term();
    let from = |from: NodeId, body: MessageBody| Message {
        from,
        to: 1,
        term,
        body,
    };
    let ack = |id: NodeId, index: Index| {
        from(
            id,
            MessageBody::AppendResponse {
                reject: false,
                index,
                hint_index: 0,
                hint_term: 0,
            },
        )
    };
    raft.step(from(
        2,
        MessageBody::VoteResponse {
            pre_vote: false,
            reject: false,
            committed: 0,
            committed_term: 0,
        },
    ));
    assert_eq!(raft.status().role, Role::Leader);
    drain(&mut raft);
    let noop = raft.last_index();
    raft.step(ack(2, noop));
    raft.step(ack(3, noop));
    drain(&mut raft);
    let (removal, _) = raft.propose_conf_change(remove(1)).unwrap();
    drain(&mut raft);

    // Node 2's answer commits the removal (1 and 2 are a quorum of {1, 2, 3}); node 3 has not answered yet.
    raft.step(ack(2, removal));
    assert_eq!(raft.status().conf.voters, vec![2, 3]);
    // It leads on, taking no proposals, until both remaining voters hold the commit.
    assert_eq!(raft.status().role, Role::Leader);
    let refused = raft.propose(b"x".to_vec());
    assert!(
        matches!(refused, Err(Error::NotLeader { leader: None })),
        "{refused:?}"
    );
    drain(&mut raft);
    raft.step(ack(3, removal));
    let heartbeats = drain(&mut raft);
    let round = heartbeats.iter().find_map(|m| match m.body {
        MessageBody::Heartbeat { commit, read_round } if m.to == 3 => Some((commit, read_round)),
        _ => None,
    });
    let (commit, round) = round.unwrap_or_else(|| panic!("a heartbeat round: {heartbeats:?}"));
    assert!(commit >= removal);
    let answer = MessageBody::HeartbeatResponse { read_round: round };
    raft.step(from(2, answer.clone()));
    assert_eq!(raft.status().role, Role::Leader, "node 3 has not answered");
    raft.step(from(3, answer));
    assert_eq!(raft.status().role, Role::Follower);
    let ready = raft.ready();
    // A leader's appends and TimeoutNow may leave before its disk write (thesis §10.2.1): they are all here.
    let msgs = ready.messages.clone();
    let done = raft.advance(ready);
    assert!(
        done.messages.is_empty(),
        "nothing waits: {:?}",
        done.messages
    );
    for to in [2, 3] {
        let pos = msgs.iter().position(|m| {
            m.to == to
                && m.term == term
                && matches!(m.body, MessageBody::Append { commit, .. } if commit >= removal)
        });
        assert!(pos.is_some(), "no commit index for {to}: {msgs:?}");
    }
    // The most caught-up voter (node 2) is told to campaign, after its append.
    let timeout_nows: Vec<usize> = (0..msgs.len())
        .filter(|&i| msgs[i].body == MessageBody::TimeoutNow)
        .collect();
    assert_eq!(timeout_nows.len(), 1, "{msgs:?}");
    let t = timeout_nows[0];
    assert_eq!(msgs[t].to, 2);
    let append_to_2 = msgs.iter().position(|m| m.to == 2).unwrap();
    assert!(append_to_2 < t, "{msgs:?}");
}

/// Found by the simulator (a cluster shrunk to one voter): the removed leader had an entry of its own past
/// the removal that the remaining voter lacked, and the one message that carried the commit was lost. Had it
/// stepped down then, the remaining voter, still counting its vote, would never have been elected (the
/// removed node refuses it: its log is longer). It leads on until the remaining voter holds the commit.
#[test]
fn t4_2_2_removed_leader_whose_commit_message_is_lost_hands_over_once_it_is_delivered() {
    let mut net = Network::new(2);
    net.elect(1);
    let removal = net.status(1).last_index + 1;
    // Node 2's answer to the removal waits; meanwhile node 1 appends an entry node 2 does not get.
    net.set_hook(|m| match m.body {
        MessageBody::AppendResponse { .. } if m.from == 2 => Verdict::Hold,
        _ => Verdict::Deliver,
    });
    net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();
    net.set_hook(|m| match m.body {
        MessageBody::Append { .. } if m.to == 2 => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.propose(1, b"b=2").unwrap();
    // The answer arrives, the removal commits, and the first message carrying that commit to node 2 is lost.
    let mut lost = false;
    net.set_hook(move |m| match m.body {
        MessageBody::Append { commit, .. } | MessageBody::Heartbeat { commit, .. }
            if m.to == 2 && commit >= removal && !lost =>
        {
            lost = true;
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.release_held();
    net.tick_all(60);
    assert_eq!(net.leader(), Some(2), "{:?}", net.status(2));
    assert_eq!(net.status(2).conf.voters, vec![2]);
    assert_eq!(net.status(1).role, Role::Follower);
}

/// Thesis §4.2.3, found by the simulator: a removed node that never learned its removal committed has a log
/// as long as the others' and campaigns in its old configuration. Once their leader is gone, no lease holds
/// the remaining voters back; they refuse it because their configuration does not list it.
#[test]
fn t4_2_3_a_removed_node_is_not_elected_by_voters_that_applied_its_removal() {
    let mut net = Network::new(3);
    net.elect(1);
    let (removal, _) = net.conf_change(1, ConfChangeKind::Remove, 3).unwrap();
    net.tick_nodes(&[1], 4);
    assert!(net.status(2).commit >= removal, "{:?}", net.status(2));
    assert_eq!(
        net.status(3).conf.voters,
        vec![1, 2, 3],
        "node 3 never learned it"
    );
    net.isolate(1);
    net.tick_nodes(&[2, 3], 100);
    let led = net
        .sent
        .iter()
        .any(|m| m.from == 3 && matches!(m.body, MessageBody::Append { .. }));
    assert!(!led, "the removed node became leader");
    net.heal();
    net.tick_all(60);
    assert!(matches!(net.leader(), Some(1 | 2)), "{:?}", net.leader());
}

/// A node that joins with an empty log knows no configuration: it grants no vote, not even to a removed
/// member whose stale configuration lists its id (simulator seed 542: a node removed, then added again with
/// an empty disk, completed the quorum of a removed member's old configuration).
#[test]
fn a_node_with_an_empty_log_grants_no_vote() {
    let mut raft = Raft::new(Config::new(1), Restore::default()).expect("empty node");
    for pre_vote in [true, false] {
        raft.step(Message {
            from: 2,
            to: 1,
            term: 5,
            body: MessageBody::Vote {
                pre_vote,
                last_log_index: 377,
                last_log_term: 4,
                transfer: false,
            },
        });
        let ready = raft.ready();
        let mut msgs = ready.messages.clone();
        msgs.extend(raft.advance(ready).messages);
        let granted = msgs
            .iter()
            .any(|m| matches!(m.body, MessageBody::VoteResponse { reject: false, .. }));
        assert!(!granted, "an empty log voted (pre_vote {pre_vote})");
    }
}

/// Node 1, whose removal (at `removal`) committed, waits for node 2 (cut off) in vain and hands over; node
/// 2, which never learned the commit, comes back and must lead `{2}` alone.
fn hand_over_unlearned_then_node_2_leads(net: &mut Network, removal: Index) {
    let timeout = net.config(1).election_ticks;
    net.tick_nodes(&[1], 3 * timeout);
    assert_eq!(net.status(1).role, Role::Follower, "node 1 handed over");
    assert!(net.status(2).commit < removal, "node 2 never learned it");

    net.clear_hook();
    net.tick_all(20 * timeout);
    assert_eq!(net.leader(), Some(2), "{:?}", net.status(2));
    assert_eq!(net.status(2).conf.voters, vec![2]);
}

/// Simulator seed 53039: the remaining voter was cut off for longer than the removed leader waits for it (two
/// election timeouts), so the leader handed over with the commit unlearned; then the removed node, its log
/// longer, refused the remaining voter's votes forever, and the remaining voter still counted it. A node that
/// refuses a candidate whose log ends at an entry it knows is committed says so, and the candidate takes that
/// commit (and the change with it) into force.
#[test]
fn t4_2_2_a_remaining_voter_that_missed_the_hand_over_learns_the_commit_from_a_refusal() {
    let mut net = Network::new(2);
    net.elect(1);
    let removal = net.status(1).last_index + 1;
    net.set_hook(|m| match m.body {
        MessageBody::AppendResponse { .. } if m.from == 2 => Verdict::Hold,
        _ => Verdict::Deliver,
    });
    net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();
    // From now on node 2 hears nothing; node 1 appends an entry past the removal.
    net.set_hook(|m| {
        if m.to == 2 {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    });
    net.propose(1, b"b=2").unwrap();
    net.release_held();
    assert_eq!(net.status(1).conf.voters, vec![2], "the removal committed");
    hand_over_unlearned_then_node_2_leads(&mut net, removal);
}

/// The same, with the remaining voter holding an entry past the removal that was never committed (its
/// answer to it was lost): the removed node knows the removal committed but not that entry, and says so.
#[test]
fn t4_2_2_a_remaining_voter_ahead_of_the_commit_it_missed_learns_it_from_a_refusal() {
    let mut net = Network::new(2);
    net.elect(1);
    let removal = net.status(1).last_index + 1;
    // Node 2's answer to the removal waits; its answers past it are lost.
    net.set_hook(move |m| match m.body {
        MessageBody::AppendResponse { index, .. } if m.from == 2 && index == removal => {
            Verdict::Hold
        }
        MessageBody::AppendResponse { index, .. } if m.from == 2 && index > removal => {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();
    net.propose(1, b"a=1").unwrap();
    assert_eq!(
        net.status(2).last_index,
        removal + 1,
        "node 2 holds the entry past the removal"
    );
    net.set_hook(move |m| match m.body {
        _ if m.to == 2 => Verdict::Drop,
        MessageBody::AppendResponse { index, .. } if m.from == 2 && index > removal => {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.propose(1, b"b=2").unwrap();
    net.release_held();
    assert_eq!(net.status(1).commit, removal, "only the removal committed");
    hand_over_unlearned_then_node_2_leads(&mut net, removal);
}

/// A candidate that learns from a refusal that its own removal committed stops campaigning: only a voter
/// leads (a review of the commit learned from refusals).
#[test]
fn a_candidate_that_learns_its_own_removal_committed_does_not_lead() {
    let mut net = Network::new(3);
    net.elect(1);
    let removal = net.status(1).last_index + 1;
    // Node 3 gets the removal of node 2 but never the commit: it still counts node 2.
    net.set_hook(move |m| match m.body {
        MessageBody::Append { commit, .. } | MessageBody::Heartbeat { commit, .. }
            if m.to == 3 && commit >= removal =>
        {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.conf_change(1, ConfChangeKind::Remove, 3).unwrap();
    assert!(net.status(1).commit >= removal);
    assert!(net.status(3).commit < removal);
    assert_eq!(net.status(3).last_index, removal);
    // Node 1 is gone; node 3 campaigns; node 2 refuses it (its membership no longer lists node 3) and
    // says the removal committed.
    net.isolate(1);
    net.clear_hook();
    net.tick_nodes(&[2, 3], 200);
    assert_ne!(net.leader(), Some(3), "{:?}", net.status(3));
    assert_eq!(
        net.status(3).conf.voters,
        vec![1, 2],
        "node 3 learned its removal"
    );
    assert_eq!(net.status(3).role, Role::Follower);
}

/// The commit told in a refusal travels whatever the terms: a pre-vote of a term below the voter's is refused
/// with it, and a node takes in an answer of a term below its own (it missed the commit all the same).
#[test]
fn the_commit_told_in_a_refusal_travels_at_a_lower_term() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.status(1).term;
    // Node 3 gets the entry but never the commit of it.
    let index = net.status(1).last_index + 1;
    net.set_hook(move |m| match m.body {
        MessageBody::Append { commit, .. } | MessageBody::Heartbeat { commit, .. }
            if m.to == 3 && commit >= index =>
        {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.propose(1, b"a=1").unwrap();
    assert!(net.status(1).commit >= index);
    assert_eq!(
        (net.status(3).last_index, net.status(3).commit < index),
        (index, true)
    );

    // The voter's half: a pre-vote of an older term, for a log ending at a committed entry of that term.
    let old = (1..index)
        .rev()
        .find(|&i| net.raft(1).term_at(i) == Some(term - 1))
        .expect("an entry of the term before");
    net.take_sent();
    net.raft_mut(1).step(Message {
        from: 2,
        to: 1,
        term: term - 1,
        body: MessageBody::Vote {
            pre_vote: true,
            last_log_index: old,
            last_log_term: term - 1,
            transfer: false,
        },
    });
    let answer = net.raft_mut(1).ready().messages;
    let told = answer.iter().find_map(|m| match m.body {
        MessageBody::VoteResponse {
            reject: true,
            committed,
            committed_term,
            ..
        } if m.to == 2 => Some((committed, committed_term)),
        _ => None,
    });
    assert_eq!(told, Some((old, term - 1)), "{answer:?}");

    // The candidate's half: an answer of a term below node 3's still tells it the entry is committed.
    net.raft_mut(3).step(Message {
        from: 1,
        to: 3,
        term: term - 1,
        body: MessageBody::VoteResponse {
            pre_vote: true,
            reject: true,
            committed: index,
            committed_term: term,
        },
    });
    assert_eq!(net.status(3).commit, index);
}
