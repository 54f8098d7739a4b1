//! Campaigning early without disrupting anyone. A follower told that its leader's connection broke
//! (`Raft::peer_lost`, what the transport reports when the leader's process dies) campaigns within a tick or two
//! instead of a whole election timeout, and a node restarting with a term behind it within two or three (tick
//! fast-forward); neither disrupts a leader that is alive: the pre-vote is refused by the followers that still
//! hear it.

mod harness;

use harness::Network;
use reinado_raft::*;

/// Ticks the nodes one after another, delivering after each (their ticks fall at different instants, as on
/// real machines), until one of them leads; returns the rounds it took.
fn rounds_to_leader(net: &mut Network, ids: &[NodeId], max: usize) -> usize {
    for round in 1..=max {
        for &id in ids {
            net.tick_nodes(&[id], 1);
        }
        if net.leader().is_some_and(|l| ids.contains(&l)) {
            return round;
        }
    }
    panic!("no leader among {ids:?} within {max} rounds");
}

/// Three members led by node 1, which dies; nodes 2 and 3 are told its connection broke. Returns the term.
fn leader_lost(seed: u64) -> (Network, Term) {
    let mut net = Network::with_config(3, move |c| c.seed = c.id * 1000 + seed);
    net.elect(1);
    let term = net.status(1).term;
    net.crash(1);
    for id in [2, 3] {
        net.raft_mut(id).peer_lost(1);
        assert_eq!(net.status(id).leader, None, "seed {seed}");
    }
    (net, term)
}

#[test]
fn followers_that_lose_the_leader_connection_elect_within_two_ticks_in_the_next_term() {
    for seed in 0..20 {
        let (mut net, term) = leader_lost(seed);
        // An election timeout is at least 10 ticks here.
        let rounds = rounds_to_leader(&mut net, &[2, 3], 9);
        assert!(rounds <= 2, "seed {seed}: {rounds} rounds");
        let leader = net.leader().unwrap();
        assert_eq!(
            net.status(leader).term,
            term + 1,
            "seed {seed}: a split vote"
        );
    }
}

#[test]
fn followers_that_lose_the_leader_at_the_same_instant_campaign_in_id_order() {
    for seed in 0..20 {
        let (mut net, term) = leader_lost(seed);
        // Both tick at the same instant: were they to campaign at the same tick, they would split the vote.
        net.tick_nodes(&[2, 3], 1);
        assert_eq!(net.leader(), Some(2), "seed {seed}");
        assert_eq!(net.status(2).term, term + 1, "seed {seed}");
    }
}

#[test]
fn a_broken_connection_to_a_live_leader_disrupts_nothing() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.status(1).term;
    net.raft_mut(2).peer_lost(1);
    net.tick_all(40);
    assert_eq!(net.leader(), Some(1));
    for id in 1..=3 {
        let st = net.status(id);
        assert_eq!(st.term, term, "node {id}: {st:?}");
        assert_eq!(st.leader, Some(1), "node {id}: {st:?}");
    }
}

#[test]
fn only_the_leaders_connection_counts() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.status(1).term;
    // Node 2 loses node 3 (a follower), and the leader loses node 2: neither changes anything.
    net.raft_mut(2).peer_lost(3);
    net.raft_mut(1).peer_lost(2);
    assert_eq!(net.status(2).leader, Some(1));
    assert_eq!(net.status(1).role, Role::Leader);
    // With the leader gone for good but nobody told, the followers wait for their election timeout.
    net.crash(1);
    net.tick_nodes(&[2, 3], 9);
    assert!(net.leader().is_none_or(|l| l == 1));
    assert_eq!(net.status(2).term, term);
}

#[test]
fn a_whole_cluster_restarted_elects_within_a_few_ticks() {
    for seed in 0..20 {
        let mut net = Network::with_config(3, move |c| c.seed = c.id * 1000 + seed);
        net.elect(1);
        net.propose(1, b"a=1").unwrap();
        let term = net.status(1).term;
        for id in 1..=3 {
            net.crash(id);
        }
        for id in 1..=3 {
            net.restart(id);
        }
        // An election timeout is at least 10 ticks here.
        let rounds = rounds_to_leader(&mut net, &[1, 2, 3], 9);
        assert!(rounds <= 3, "seed {seed}: {rounds} rounds");
        assert_eq!(
            net.status(net.leader().unwrap()).term,
            term + 1,
            "seed {seed}"
        );
    }
}

#[test]
fn a_restarted_follower_disrupts_nothing() {
    let mut net = Network::new(3);
    net.elect(1);
    let term = net.status(1).term;
    net.crash_and_restart(3);
    // Before the leader's next heartbeat reaches it, it asks for pre-votes, which both others refuse.
    net.tick_nodes(&[3], 3);
    assert_eq!(net.status(3).role, Role::PreCandidate);
    assert_eq!(net.status(3).term, term);
    net.tick_all(40);
    assert_eq!(net.leader(), Some(1));
    for id in 1..=3 {
        assert_eq!(net.status(id).term, term, "node {id}: {:?}", net.status(id));
    }
}

#[test]
fn after_a_split_vote_the_lower_id_campaigns_first_and_wins_the_next_term() {
    for seed in 0..20 {
        let mut net = Network::with_config(3, move |c| c.seed = c.id * 1000 + seed);
        net.elect(1);
        net.crash(1);
        let term = net.status(2).term;
        // Both campaign in the same term before either hears of the other: a split vote.
        net.raft_mut(2).start_election();
        net.raft_mut(3).start_election();
        net.deliver_all();
        assert_eq!(net.leader(), None, "seed {seed}");
        assert_eq!(net.status(2).term, term + 1);
        let rounds = rounds_to_leader(&mut net, &[3, 2], 9);
        assert!(rounds <= 1, "seed {seed}: {rounds} rounds");
        assert_eq!(net.leader(), Some(2), "seed {seed}");
        assert_eq!(net.status(2).term, term + 2, "seed {seed}");
    }
}
