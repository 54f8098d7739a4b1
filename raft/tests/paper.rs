//! Paper tests: each test checks one rule of the Raft paper (§ numbers) or of Ongaro's thesis ("thesis §"),
//! through the public API only, on the in-memory network of `harness/`.

mod harness;

use harness::{Network, Verdict, drain};
use reinado_raft::*;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

// ----- helpers -----

/// Plain Raft: no PreVote, no CheckQuorum, so that single rules can be checked in isolation.
fn plain(cfg: &mut Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
}

fn entry(term: Term, index: Index, data: &[u8]) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: data.to_vec(),
    }
}

fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Append {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            commit: 0,
        },
    }
}

fn vote(from: NodeId, to: NodeId, term: Term, last: (Index, Term), transfer: bool) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            pre_vote: false,
            last_log_index: last.0,
            last_log_term: last.1,
            transfer,
        },
    }
}

/// The vote answers `from` sent to `to`, as `reject` flags.
fn vote_answers(sent: &[Message], from: NodeId, to: NodeId) -> Vec<bool> {
    sent.iter()
        .filter(|m| m.from == from && m.to == to)
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse {
                pre_vote: false,
                reject,
                ..
            } => Some(reject),
            _ => None,
        })
        .collect()
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::Append { .. })
}

fn append_entries(m: &Message) -> &[Entry] {
    match &m.body {
        MessageBody::Append { entries, .. } => entries,
        _ => &[],
    }
}

fn terms(net: &Network, id: NodeId) -> Vec<(Index, Term)> {
    net.raft(id)
        .log_entries()
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

// ----- §5.1 terms -----

#[test]
fn s5_1_higher_term_turns_leader_and_candidate_into_follower() {
    let mut net = Network::with_config(3, plain);
    net.elect(1);
    assert_eq!(net.status(1).term, 2);
    let hb = Message {
        from: 2,
        to: 1,
        term: 5,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    };
    net.raft_mut(1).step(hb);
    let st = net.status(1);
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 5, Some(2)));

    // A candidate that hears of a newer term in an answer gives up its campaign.
    net.raft_mut(3).start_election();
    let candidate_term = net.status(3).term;
    let answer = Message {
        from: 2,
        to: 3,
        term: candidate_term + 3,
        body: MessageBody::VoteResponse {
            pre_vote: false,
            reject: true,
            committed: 0,
            committed_term: 0,
        },
    };
    net.raft_mut(3).step(answer);
    let st = net.status(3);
    assert_eq!(
        (st.role, st.term, st.leader),
        (Role::Follower, candidate_term + 3, None)
    );
}

#[test]
fn s5_1_stale_term_message_is_rejected() {
    let mut net = Network::with_config(3, plain);
    net.elect(1);
    net.elect(2); // term 3
    let before = terms(&net, 3);
    net.take_sent();
    net.isolate(1);
    net.send(append(1, 3, 2, (4, 2), vec![entry(2, 5, b"stale")]));
    assert_eq!(
        terms(&net, 3),
        before,
        "a stale append must not touch the log"
    );
    assert_eq!(net.status(3).term, 3);
    let answer = net
        .take_sent()
        .into_iter()
        .find(|m| m.from == 3 && m.to == 1);
    let answer = answer.expect("the stale leader is answered");
    assert_eq!(answer.term, 3, "the answer carries the newer term");
    assert!(matches!(
        answer.body,
        MessageBody::AppendResponse { reject: true, .. }
    ));
}

#[test]
fn s5_1_stale_leader_learns_newer_term_and_steps_down() {
    let mut net = Network::with_config(3, plain);
    net.elect(1);
    net.isolate(1);
    net.elect(2);
    assert_eq!(
        net.status(1).role,
        Role::Leader,
        "isolated: it cannot know yet"
    );
    net.heal();
    net.tick_nodes(&[1], 1); // its heartbeats reach nodes of term 3
    let st = net.status(1);
    assert_eq!((st.role, st.term), (Role::Follower, 3));
    assert_eq!(net.leader(), Some(2));
}

// ----- §5.2 leader election -----

#[test]
fn s5_2_follower_campaigns_after_randomized_election_timeout() {
    let mut timeouts = BTreeSet::new();
    for seed in 1..=20 {
        let mut cfg = Config::new(1);
        cfg.seed = seed;
        plain(&mut cfg);
        let mut raft = Raft::bootstrap(cfg, &[1, 2, 3]).unwrap();
        drain(&mut raft);
        let mut ticks = 0;
        while raft.status().role == Role::Follower {
            raft.tick();
            ticks += 1;
            assert!(
                ticks < 20,
                "seed {seed}: no election within 2 x election_ticks"
            );
        }
        assert!(
            ticks >= 10,
            "seed {seed}: election after only {ticks} ticks"
        );
        timeouts.insert(ticks);
        let st = raft.status();
        assert_eq!((st.role, st.term, st.vote), (Role::Candidate, 2, Some(1)));
        let mut asked: Vec<NodeId> = drain(&mut raft)
            .iter()
            .filter(|m| {
                matches!(
                    m.body,
                    MessageBody::Vote {
                        pre_vote: false,
                        ..
                    }
                ) && m.term == 2
            })
            .map(|m| m.to)
            .collect();
        asked.sort_unstable();
        assert_eq!(asked, vec![2, 3], "the candidate asks every other voter");
    }
    assert!(
        timeouts.len() >= 3,
        "timeouts are not randomized: {timeouts:?}"
    );
}

#[test]
fn s5_2_candidate_votes_for_itself_and_wins_with_a_majority() {
    let mut net = Network::with_config(5, plain);
    net.isolate(4);
    net.isolate(5);
    net.raft_mut(1).start_election();
    net.deliver_all();
    let st = net.status(1);
    assert_eq!((st.role, st.term, st.vote), (Role::Leader, 2, Some(1)));
    for id in [2, 3] {
        assert_eq!(net.status(id).vote, Some(1));
        assert_eq!(net.status(id).leader, Some(1));
    }

    // Without a majority a candidate stays a candidate.
    let mut net = Network::with_config(5, plain);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.raft_mut(1).start_election();
    net.deliver_all();
    assert_eq!(net.status(1).role, Role::Candidate);
}

#[test]
fn s5_2_at_most_one_vote_per_term_even_across_a_restart() {
    let mut net = Network::with_config(3, plain);
    for id in [1, 2, 3] {
        net.isolate(id);
    }
    net.send(vote(1, 3, 2, (3, 1), false));
    net.send(vote(2, 3, 2, (3, 1), false));
    let sent = net.take_sent();
    assert_eq!(
        vote_answers(&sent, 3, 1),
        vec![false],
        "first candidate granted"
    );
    assert_eq!(
        vote_answers(&sent, 3, 2),
        vec![true],
        "second candidate refused"
    );

    // The vote is durable: a restarted node still refuses, and still grants a repeated request.
    net.crash_and_restart(3);
    assert_eq!(net.status(3).vote, Some(1));
    net.send(vote(2, 3, 2, (3, 1), false));
    net.send(vote(1, 3, 2, (3, 1), false));
    let sent = net.take_sent();
    assert_eq!(vote_answers(&sent, 3, 2), vec![true]);
    assert_eq!(vote_answers(&sent, 3, 1), vec![false]);
}

#[test]
fn s5_2_candidate_steps_down_on_append_of_its_term() {
    let mut net = Network::with_config(3, plain);
    net.isolate(1);
    net.raft_mut(1).start_election();
    net.deliver_all();
    assert_eq!(net.status(1).role, Role::Candidate);
    net.send(append(2, 1, 2, (3, 1), vec![]));
    let st = net.status(1);
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 2, Some(2)));
}

#[test]
fn s5_2_split_vote_leads_to_a_new_election() {
    let mut net = Network::with_config(3, plain);
    net.isolate(3);
    net.raft_mut(1).start_election();
    net.raft_mut(2).start_election();
    net.deliver_all();
    for id in [1, 2] {
        let st = net.status(id);
        assert_eq!((st.role, st.term), (Role::Candidate, 2), "split vote");
    }
    let rounds = net.tick_until(&[1, 2], 40, |n| n.leader().is_some());
    assert!(rounds <= 20, "a new election within an election timeout");
    let leader = net.leader().unwrap();
    assert!(
        net.status(leader).term >= 3,
        "the new election is in a new term"
    );
}

// ----- §5.3 log replication -----

#[test]
fn s5_3_leader_replicates_and_commits_a_proposal() {
    let mut net = Network::new(3);
    net.elect(1);
    let (index, term) = net.propose(1, b"a=1").unwrap();
    assert_eq!((index, term), (5, 2));
    for id in [1, 2, 3] {
        assert_eq!(net.status(id).commit, 5, "node {id}");
        assert_eq!(net.node(id).kv.get("a").map(String::as_str), Some("1"));
        assert_eq!(net.node(id).applied.last().unwrap().index, 5);
    }
}

#[test]
fn s5_3_follower_rejects_on_prev_mismatch_with_a_hint() {
    let mut net = Network::with_config(3, plain);
    net.elect(1); // every log: 1..=3 (term 1), 4 (term 2)
    net.isolate(1);
    let before = terms(&net, 2);
    // Beyond the follower's log: the hint is its last index + 1.
    net.take_sent();
    net.send(append(1, 2, 2, (9, 2), vec![entry(2, 10, b"x")]));
    let m = net.take_sent().into_iter().find(|m| m.from == 2).unwrap();
    assert!(matches!(
        m.body,
        MessageBody::AppendResponse {
            reject: true,
            index: 9,
            hint_index: 5,
            hint_term: 0
        }
    ));
    // Within the log, but of another term: the hint names the follower's term there.
    net.send(append(1, 2, 2, (4, 1), vec![entry(2, 5, b"x")]));
    let m = net.take_sent().into_iter().find(|m| m.from == 2).unwrap();
    assert!(matches!(
        m.body,
        MessageBody::AppendResponse {
            reject: true,
            index: 4,
            hint_term: 2,
            ..
        }
    ));
    assert_eq!(terms(&net, 2), before);
}

/// Builds a follower (node 3) holding 50 uncommitted entries of term 2 that the leader (node 2, term 4)
/// does not have, and returns the network with node 3 still cut off.
fn divergent_follower() -> Network {
    let mut net = Network::with_config(3, plain);
    net.elect(3); // term 2, no-op at 4
    net.isolate(3);
    for i in 0..50 {
        net.raft_mut(3)
            .propose(format!("lost{i}=x").into_bytes())
            .unwrap();
    }
    net.deliver_all();
    assert_eq!(net.status(3).last_index, 54);
    net.elect(1); // term 3
    for i in 0..60 {
        net.raft_mut(1)
            .propose(format!("k{i}=v").into_bytes())
            .unwrap();
    }
    net.deliver_all();
    assert_eq!(net.status(1).commit, 65);
    net.elect(2); // term 4: its first probe of node 3 starts past node 3's log
    net
}

#[test]
fn s5_3_conflict_hint_skips_a_whole_term_at_once() {
    let mut net = divergent_follower();
    let leader_log_before = terms(&net, 2);
    net.heal();
    net.take_sent();
    net.tick_nodes(&[2], 1);
    let appends = net
        .take_sent()
        .into_iter()
        .filter(|m| m.from == 2 && m.to == 3 && is_append(m))
        .count();
    assert_eq!(terms(&net, 3), terms(&net, 2), "node 3 repaired");
    // Probe past the end, then jump back over all 50 entries of term 2 in one step, then the matching append.
    assert!(
        appends <= 3,
        "{appends} appends to repair 50 conflicting entries of one term"
    );
    assert!(
        terms(&net, 2).starts_with(&leader_log_before),
        "the leader's log only grows"
    );
}

#[test]
fn s5_3_conflicting_entries_are_overwritten() {
    let mut net = divergent_follower();
    net.heal();
    net.tick_all(2);
    let log = terms(&net, 3);
    assert_eq!(log, terms(&net, 2));
    assert!(
        !log.iter().any(|&(i, t)| t == 2 && i > 4),
        "node 3's own uncommitted entries of term 2 are gone"
    );
    assert!(!net.node(3).kv.keys().any(|k| k.starts_with("lost")));
    assert_eq!(net.node(3).kv, net.node(2).kv);
}

#[test]
fn s5_3_leader_never_overwrites_its_own_log() {
    let mut net = Network::with_config(3, plain);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    let before = terms(&net, 1);
    // An append of the leader's own term (which no correct node sends) and one of an older term.
    net.raft_mut(1)
        .step(append(2, 1, 2, (3, 1), vec![entry(2, 4, b"z")]));
    net.raft_mut(1)
        .step(append(3, 1, 1, (3, 1), vec![entry(1, 4, b"z")]));
    net.deliver_all();
    assert_eq!(net.status(1).role, Role::Leader);
    assert_eq!(terms(&net, 1), before);
}

// ----- §5.4.1 election restriction -----

fn vote_answers_after_log_check(bugs: Bugs) -> Vec<bool> {
    let mut net = Network::with_config(3, move |c| {
        plain(c);
        c.bugs = bugs;
    });
    net.elect(1); // node 2's log ends at (4, term 2)
    for id in [1, 2, 3] {
        net.isolate(id);
    }
    net.take_sent();
    // Older last term, though longer; same last term, but shorter; then as up to date.
    net.send(vote(3, 2, 5, (10, 1), false));
    net.send(vote(3, 2, 6, (3, 2), false));
    net.send(vote(3, 2, 7, (4, 2), false));
    vote_answers(&net.take_sent(), 2, 3)
}

#[test]
fn s5_4_1_votes_refused_to_a_less_up_to_date_log() {
    assert_eq!(
        vote_answers_after_log_check(Bugs::default()),
        vec![true, true, false]
    );
    // The check has teeth: without it, both stale candidates get the vote.
    let bugs = Bugs {
        vote_without_log_check: true,
        ..Bugs::default()
    };
    assert_eq!(
        vote_answers_after_log_check(bugs),
        vec![false, false, false]
    );
}

// ----- §5.4.2 committing entries from previous terms (Figure 8) -----

/// Figure 8 (a)-(c) on five nodes (one entry per append). Returns the network with node 1 leading term 4,
/// the term-2 entry at index 7 stored on nodes 1-4 and known by the leader to be on 1, 3 and 4, while its
/// own no-op (index 8, term 4) is known only on 1 and 2.
fn figure_8(bugs: Bugs) -> Network {
    let mut net = Network::with_config(5, move |c| {
        plain(c);
        c.max_append_bytes = 1;
        c.bugs = bugs;
    });
    // (a) Node 1 leads term 2 and replicates index 7 to node 2 only, then crashes.
    net.elect(1);
    for to in [3, 4, 5] {
        net.drop(1, to);
    }
    assert_eq!(net.propose(1, b"x=term2").unwrap(), (7, 2));
    net.crash(1);
    net.heal();
    // (b) Node 5 wins term 3 with votes from 3 and 4, appends its no-op at index 7 alone, and crashes.
    net.set_hook(|m| match (m.from, &m.body) {
        (5, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.elect(5);
    assert_eq!(net.status(5).term, 3);
    assert_eq!(
        net.status(2).vote,
        None,
        "node 2's log is more up to date than 5's"
    );
    net.crash(5);
    net.clear_hook();
    // (c) Node 1 restarts and wins term 4; it replicates index 7 to 3 and 4, but not yet its own no-op.
    net.restart(1);
    let acked = Rc::new(RefCell::new(BTreeSet::new()));
    let seen = acked.clone();
    net.set_hook(move |m| match &m.body {
        MessageBody::AppendResponse {
            reject: false,
            index: 7,
            ..
        } => {
            seen.borrow_mut().insert(m.from);
            Verdict::Deliver
        }
        MessageBody::Append { entries, .. }
            if seen.borrow().contains(&m.to) && entries.iter().any(|e| e.term == 4) =>
        {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.elect(1);
    assert_eq!(net.status(1).term, 4);
    for id in [3, 4] {
        assert!(acked.borrow().contains(&id));
        assert_eq!(
            net.raft(id).log_entries().last().map(|e| (e.index, e.term)),
            Some((7, 2))
        );
    }
    net
}

#[test]
fn s5_4_2_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas() {
    let mut net = figure_8(Bugs::default());
    // Index 7 is on a majority (1, 3, 4), but it is of term 2: not committed.
    assert_eq!(net.status(1).commit, 6);
    assert!(!net.node(1).kv.contains_key("x"));
    // Once the leader's own no-op is on a majority, both commit.
    net.clear_hook();
    net.tick_nodes(&[1], 2);
    assert_eq!(net.status(1).commit, 8);
    for id in [1, 2, 3, 4] {
        assert_eq!(net.node(id).kv.get("x").map(String::as_str), Some("term2"));
    }
}

#[test]
fn s5_4_2_with_commit_previous_term_bug_the_entry_commits_early_and_safety_breaks() {
    let bugs = Bugs {
        commit_previous_term: true,
        ..Bugs::default()
    };
    let mut net = figure_8(bugs);
    net.strict = false;
    assert_eq!(
        net.status(1).commit,
        7,
        "the bug commits index 7 by counting"
    );
    assert_eq!(net.node(1).kv.get("x").map(String::as_str), Some("term2"));
    // (d) Node 1 crashes (and node 2, which learnt the early commit); node 5 (last entry of term 3) wins with
    // 3 and 4 and overwrites index 7.
    net.crash(1);
    net.crash(2);
    net.clear_hook();
    net.restart(5);
    net.elect(5);
    net.tick_nodes(&[5], 2);
    assert!(
        !net.violations.is_empty(),
        "the harness's checker must see index 7 applied with two different terms"
    );
}

// ----- thesis §9.6 PreVote, §6.2 and §4.2.3 CheckQuorum -----

#[test]
fn t9_6_prevote_rejoining_node_does_not_disrupt_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(3);
    net.tick_all(100);
    assert_eq!(net.status(3).term, 2, "pre-votes do not raise the term");
    assert_eq!(net.leader(), Some(1));
    net.heal();
    net.tick_all(5);
    assert_eq!(net.leader(), Some(1));
    for id in [1, 2, 3] {
        assert_eq!(net.status(id).term, 2, "node {id}");
    }
    assert_eq!(net.status(3).leader, Some(1));
}

#[test]
fn t9_6_without_prevote_the_rejoining_node_disrupts_the_leader() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.elect(1);
    net.isolate(3);
    net.tick_all(100);
    assert!(
        net.status(3).term > 2,
        "elections in isolation raise the term"
    );
    net.heal();
    net.tick_all(5);
    assert!(
        net.status(1).term > 2,
        "the leader was deposed by the higher term"
    );
}

#[test]
fn t6_2_check_quorum_leader_cut_off_from_majority_steps_down() {
    let mut net = Network::new(3);
    net.elect(1);
    net.tick_all(50);
    assert_eq!(net.leader(), Some(1), "a connected leader stays");
    net.isolate(1);
    let rounds = net.tick_until(&[1], 25, |n| n.status(1).role != Role::Leader);
    assert!(rounds <= 20, "stepped down after {rounds} ticks");
}

#[test]
fn t4_2_3_followers_in_lease_ignore_vote_requests() {
    let mut net = Network::new(3);
    net.elect(1);
    net.tick_all(2);
    net.take_sent();
    for to in [1, 2] {
        net.send(vote(3, to, 9, (100, 9), false));
    }
    let sent = net.take_sent();
    assert!(vote_answers(&sent, 2, 3).is_empty() && vote_answers(&sent, 1, 3).is_empty());
    assert_eq!(net.status(2).term, 2);
    assert_eq!(net.leader(), Some(1));
    // A campaign started by a leadership transfer is not ignored.
    net.send(vote(3, 2, 9, (100, 9), true));
    assert_eq!(vote_answers(&net.take_sent(), 2, 3), vec![false]);
}

// ----- thesis §6.4 ReadIndex -----

fn drop_heartbeat_answers(from: Vec<NodeId>) -> impl FnMut(&Message) -> Verdict {
    move |m| match m.body {
        MessageBody::HeartbeatResponse { .. } if from.contains(&m.from) => Verdict::Drop,
        _ => Verdict::Deliver,
    }
}

#[test]
fn t6_4_leader_read_waits_for_a_heartbeat_quorum() {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    let commit = net.status(1).commit;
    net.set_hook(drop_heartbeat_answers(vec![2, 3]));
    net.read_index(1, b"r");
    net.tick_nodes(&[1], 3);
    assert!(
        net.take_read_states(1).is_empty(),
        "no quorum confirmed leadership"
    );
    net.set_hook(drop_heartbeat_answers(vec![3]));
    net.tick_nodes(&[1], 1);
    let states = net.take_read_states(1);
    assert_eq!(
        states,
        vec![ReadState {
            ctx: b"r".to_vec(),
            index: Some(commit)
        }]
    );
}

#[test]
fn t6_4_follower_read_goes_through_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    // Node 2 misses the write; the leader commits it with node 3.
    net.set_hook(|m| match (m.to, &m.body) {
        (2, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.propose(1, b"a=1").unwrap();
    let commit = net.status(1).commit;
    assert!(net.status(2).commit < commit);
    net.read_index(2, b"r");
    let states = net.take_read_states(2);
    assert_eq!(states.len(), 1);
    let index = states[0].index.expect("answered by the leader");
    assert!(
        index >= commit,
        "read index {index} below the commit {commit}"
    );
}

#[test]
fn t6_4_new_leader_serves_reads_only_after_its_noop_commits() {
    let mut net = Network::new(3);
    net.set_hook(|m| match (m.from, &m.body) {
        (1, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.elect(1);
    let noop = net.status(1).last_index;
    net.read_index(1, b"r");
    net.tick_all(3);
    assert!(
        net.take_read_states(1).is_empty(),
        "no entry of its term is committed"
    );
    net.clear_hook();
    net.tick_all(2);
    assert_eq!(net.status(1).commit, noop);
    assert_eq!(
        net.take_read_states(1),
        vec![ReadState {
            ctx: b"r".to_vec(),
            index: Some(noop)
        }]
    );
}

#[test]
fn t6_4_partitioned_stale_leader_never_answers_a_read() {
    for check_quorum in [true, false] {
        let mut net = Network::with_config(3, move |c| c.check_quorum = check_quorum);
        net.elect(1);
        net.isolate(1);
        net.read_index(1, b"r");
        net.tick_all(40);
        let new_leader = net.leader().filter(|&l| l != 1).expect("2 or 3 leads");
        net.propose(new_leader, b"a=2").unwrap();
        net.heal();
        net.tick_all(3);
        let states = net.take_read_states(1);
        assert!(
            states.iter().all(|s| s.index.is_none()),
            "check_quorum={check_quorum}: stale leader answered {states:?}"
        );
        assert_eq!(states.len(), 1, "the read is failed once it steps down");
    }
}

// ----- thesis §3.10 leadership transfer -----

fn timeout_nows(sent: &[Message]) -> Vec<(NodeId, NodeId)> {
    sent.iter()
        .filter(|m| m.body == MessageBody::TimeoutNow)
        .map(|m| (m.from, m.to))
        .collect()
}

#[test]
fn t3_10_transfer_to_an_up_to_date_target() {
    let mut net = Network::new(3);
    net.elect(1);
    net.take_sent();
    net.raft_mut(1).transfer_leader(2).unwrap();
    net.deliver_all();
    assert_eq!(timeout_nows(&net.take_sent()), vec![(1, 2)]);
    assert_eq!(net.leader(), Some(2));
    assert_eq!(net.status(2).term, 3);
    assert_eq!(net.status(1).leader, Some(2));
}

#[test]
fn t3_10_transfer_to_a_lagging_target_after_it_catches_up() {
    let mut net = Network::new(3);
    net.elect(1);
    net.set_hook(|m| match (m.to, &m.body) {
        (3, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    for i in 0..5 {
        net.propose(1, format!("k{i}=v").as_bytes()).unwrap();
    }
    let last = net.status(1).last_index;
    assert!(net.status(3).last_index < last);
    net.clear_hook();
    net.take_sent();
    net.raft_mut(1).transfer_leader(3).unwrap();
    net.deliver_all();
    let sent = net.take_sent();
    let timeout_at = sent
        .iter()
        .position(|m| m.body == MessageBody::TimeoutNow)
        .expect("TimeoutNow sent");
    let caught_up_at = sent
        .iter()
        .position(|m| {
            m.from == 3
                && matches!(m.body, MessageBody::AppendResponse { reject: false, index, .. } if index == last)
        })
        .expect("node 3 caught up");
    assert!(
        caught_up_at < timeout_at,
        "TimeoutNow only after the target caught up"
    );
    assert_eq!(net.leader(), Some(3));
    assert_eq!(net.node(3).kv.len(), 5);
}

#[test]
fn t3_10_proposals_refused_during_transfer_which_is_abandoned_after_a_timeout() {
    let mut net = Network::new(3);
    net.elect(1);
    net.crash(3);
    net.raft_mut(1).transfer_leader(3).unwrap();
    net.deliver_all();
    assert_eq!(
        net.propose(1, b"a=1"),
        Err(Error::TransferInProgress(3)),
        "proposals wait while leadership is handed over"
    );
    net.tick_all(10);
    assert_eq!(net.leader(), Some(1), "the target never campaigned");
    assert!(net.propose(1, b"a=1").is_ok(), "transfer abandoned");
    assert_eq!(net.node(2).kv.get("a").map(String::as_str), Some("1"));
}

// ----- thesis §4.1 membership changes -----

#[test]
fn t4_1_learner_receives_entries_but_neither_votes_nor_counts_then_is_promoted() {
    let mut net = Network::new(3);
    net.elect(1);
    net.add_node(4);
    net.conf_change(1, ConfChangeKind::AddLearner, 4).unwrap();
    net.propose(1, b"a=1").unwrap();
    // A node added later replays the whole log, bootstrap membership entries included.
    assert_eq!(terms(&net, 4), terms(&net, 1));
    let conf = net.status(4).conf;
    assert_eq!((conf.voters, conf.learners), (vec![1, 2, 3], vec![4]));
    assert_eq!(net.node(4).kv.get("a").map(String::as_str), Some("1"));

    // It does not count for commitment: leader + learner is not a majority of {1, 2, 3}.
    net.cut(1, 2);
    net.cut(1, 3);
    let commit = net.status(1).commit;
    let (index, _) = net.propose(1, b"b=1").unwrap();
    assert_eq!(net.status(4).last_index, index, "the learner has the entry");
    assert_eq!(net.status(1).commit, commit, "but it does not count");
    net.heal();
    net.tick_nodes(&[1], 1);
    assert_eq!(net.status(1).commit, index);

    // It never campaigns, and candidates do not ask it.
    net.isolate(4);
    net.tick_nodes(&[4], 100);
    assert_eq!(net.status(4).role, Role::Follower);
    net.heal();
    net.take_sent();
    net.raft_mut(1).transfer_leader(2).unwrap();
    net.deliver_all();
    assert_eq!(net.leader(), Some(2));
    assert!(
        !net.take_sent()
            .iter()
            .any(|m| m.to == 4 && matches!(m.body, MessageBody::Vote { .. }))
    );

    // Promoted, it counts: with 4 voters, 2 and 4 are a majority with the leader; 2 alone is not.
    net.conf_change(2, ConfChangeKind::AddVoter, 4).unwrap();
    for id in [1, 2, 3, 4] {
        assert_eq!(net.status(id).conf.voters, vec![1, 2, 3, 4], "node {id}");
    }
    net.cut(2, 3);
    net.cut(2, 4);
    let commit = net.status(2).commit;
    let (index, _) = net.propose(2, b"c=1").unwrap();
    assert_eq!(net.status(2).commit, commit, "2 of 4 is not a majority");
    net.heal();
    net.cut(2, 3);
    net.tick_nodes(&[2], 1);
    assert_eq!(net.status(2).commit, index, "1, 2 and 4 are");
}

#[test]
fn t4_1_remove_a_voter() {
    let mut net = Network::new(3);
    net.elect(1);
    net.conf_change(1, ConfChangeKind::Remove, 3).unwrap();
    for id in [1, 2] {
        assert_eq!(net.status(id).conf.voters, vec![1, 2]);
    }
    assert!(net.status(1).peers.iter().all(|p| p.id != 3));
    // Two voters now: both are needed, and node 3 is not.
    net.isolate(3);
    let (index, _) = net.propose(1, b"a=1").unwrap();
    assert_eq!(net.status(1).commit, index);
}

#[test]
fn t4_1_leader_removing_itself_steps_down() {
    let mut net = Network::new(3);
    net.elect(1);
    net.conf_change(1, ConfChangeKind::Remove, 1).unwrap();
    let st = net.status(1);
    assert_eq!(st.role, Role::Follower);
    assert_eq!(st.conf.voters, vec![2, 3]);
    net.tick_until(&[1, 2, 3], 60, |n| n.leader().is_some());
    let leader = net.leader().unwrap();
    assert_ne!(leader, 1);
    net.propose(leader, b"a=1").unwrap();
    assert_eq!(net.status(leader).conf.voters, vec![2, 3]);
    net.tick_all(50);
    assert_ne!(
        net.status(1).role,
        Role::Leader,
        "a removed node never campaigns"
    );
    assert!(net.status(1).term <= net.status(leader).term);
}

#[test]
fn t4_1_one_pending_membership_change_at_a_time() {
    let mut net = Network::new(3);
    net.elect(1);
    net.add_node(4);
    net.add_node(5);
    let cc = |id| ConfChange {
        kind: ConfChangeKind::AddLearner,
        node_id: id,
        context: Vec::new(),
    };
    let (index, _) = net.raft_mut(1).propose_conf_change(cc(4)).unwrap();
    assert_eq!(
        net.raft_mut(1).propose_conf_change(cc(5)),
        Err(Error::ConfChangePending(index))
    );
    net.deliver_all();
    assert!(net.raft_mut(1).propose_conf_change(cc(5)).is_ok());
    net.deliver_all();
    assert_eq!(net.status(1).conf.learners, vec![4, 5]);

    // A new leader accepts none before its no-op commits.
    net.set_hook(|m| match (m.from, &m.body) {
        (2, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    net.raft_mut(1).transfer_leader(2).unwrap();
    net.deliver_all();
    assert_eq!(net.leader(), Some(2));
    let noop = net.status(2).last_index;
    let remove = ConfChange {
        kind: ConfChangeKind::Remove,
        node_id: 5,
        context: Vec::new(),
    };
    assert_eq!(
        net.raft_mut(2).propose_conf_change(remove.clone()),
        Err(Error::ConfChangePending(noop))
    );
    net.clear_hook();
    net.tick_nodes(&[2], 1);
    assert!(net.raft_mut(2).propose_conf_change(remove).is_ok());
}

// ----- §7 log compaction -----

#[test]
fn s7_lagging_follower_installs_a_chunked_snapshot_with_a_resent_chunk() {
    let mut net = Network::with_config(3, |c| c.snapshot_chunk_bytes = 40);
    net.elect(1);
    net.isolate(3);
    for i in 0..20 {
        net.propose(1, format!("key{i:02}=value{i:02}").as_bytes())
            .unwrap();
    }
    let meta = net.compact(1);
    assert_eq!(net.status(1).snapshot_index, meta.index);
    let size = net.raft(1).snapshot().data.len();
    assert!(size > 4 * 40, "snapshot of {size} bytes");

    let dropped = Rc::new(RefCell::new(None));
    let record = dropped.clone();
    net.set_hook(move |m| match m.body {
        MessageBody::Snapshot { offset, .. } if offset > 0 && record.borrow().is_none() => {
            *record.borrow_mut() = Some(offset);
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    net.heal();
    net.take_sent();
    net.tick_until(&[1, 2, 3], 30, |n| n.status(3).snapshot_index == meta.index);
    let offset = dropped.borrow().expect("a chunk was dropped");
    let offsets: Vec<u64> = net
        .take_sent()
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Snapshot { offset, .. } => Some(offset),
            _ => None,
        })
        .collect();
    assert!(offsets.len() >= 5, "sent in chunks: {offsets:?}");
    assert_eq!(
        offsets.iter().filter(|&&o| o == offset).count(),
        2,
        "resent once"
    );
    assert_eq!(net.node(3).kv, net.node(1).kv);
    assert_eq!(net.node(3).storage.snapshot.as_ref().unwrap().meta, meta);

    // Then it continues from the log.
    net.clear_hook();
    let (index, _) = net.propose(1, b"after=1").unwrap();
    assert_eq!(net.status(3).commit, index);
    assert_eq!(net.node(3).kv, net.node(1).kv);
    assert_eq!(net.node(3).applied.last().unwrap().index, index);
    // And survives a restart from what it persisted.
    net.crash_and_restart(3);
    net.tick_all(2);
    assert_eq!(net.node(3).kv, net.node(1).kv);
}

#[test]
fn s7_new_node_catches_up_from_a_snapshot() {
    let mut net = Network::with_config(3, |c| c.snapshot_chunk_bytes = 16);
    net.elect(1);
    for i in 0..10 {
        net.propose(1, format!("k{i}=v{i}").as_bytes()).unwrap();
    }
    net.compact(1);
    net.add_node(4);
    net.conf_change(1, ConfChangeKind::AddLearner, 4).unwrap();
    net.tick_all(3);
    let st = net.status(4);
    assert!(st.snapshot_index > 0);
    assert_eq!(st.conf.voters, vec![1, 2, 3]);
    assert_eq!(st.conf.learners, vec![4]);
    assert_eq!(net.node(4).kv, net.node(1).kv);
    assert_eq!(st.last_index, net.status(1).last_index);
}

// ----- durability ordering, pipelining, restarts -----

#[test]
fn durability_votes_and_append_answers_leave_only_after_persisting() {
    let mut cfg = Config::new(2);
    plain(&mut cfg);
    let mut raft = Raft::bootstrap(cfg, &[1, 2, 3]).unwrap();
    drain(&mut raft);

    raft.step(vote(1, 2, 2, (3, 1), false));
    let ready = raft.ready();
    assert!(ready.messages.is_empty(), "the vote waits for the disk");
    assert_eq!(
        ready.hard_state.map(|hs| (hs.term, hs.vote)),
        Some((2, Some(1)))
    );
    let done = raft.advance(ready);
    assert_eq!(vote_answers(&done.messages, 2, 1), vec![false]);

    raft.step(append(1, 2, 2, (3, 1), vec![entry(2, 4, b"a=1")]));
    let ready = raft.ready();
    assert!(
        ready.messages.is_empty(),
        "the append answer waits for the disk"
    );
    assert_eq!(ready.entries.len(), 1);
    let done = raft.advance(ready);
    assert!(matches!(
        done.messages.as_slice(),
        [Message {
            body: MessageBody::AppendResponse {
                reject: false,
                index: 4,
                ..
            },
            ..
        }]
    ));
    // Every Ready of every other test goes through the same check in the harness.
}

#[test]
fn pipelining_keeps_at_most_max_inflight_appends_to_a_slow_follower() {
    let mut net = Network::with_config(3, |c| {
        c.max_inflight = 4;
        c.max_append_bytes = 1;
    });
    net.elect(1);
    net.propose(1, b"warm=up").unwrap();
    net.set_hook(|m| match (m.to, &m.body) {
        (3, MessageBody::Append { .. }) => Verdict::Hold,
        _ => Verdict::Deliver,
    });
    for i in 0..10 {
        net.propose(1, format!("k{i}=v").as_bytes()).unwrap();
    }
    let in_flight = net
        .held
        .iter()
        .filter(|m| !append_entries(m).is_empty())
        .count();
    assert_eq!(in_flight, 4, "pipelined, but bounded by max_inflight");
    assert_eq!(net.status(2).last_index, net.status(1).last_index);
    net.clear_hook();
    net.release_held();
    assert_eq!(terms(&net, 3), terms(&net, 1));
}

#[test]
fn heartbeats_repair_a_lost_append_in_an_idle_cluster() {
    let mut net = Network::new(3);
    net.elect(1);
    net.set_hook(|m| match (m.to, &m.body) {
        (3, MessageBody::Append { .. }) => Verdict::Drop,
        _ => Verdict::Deliver,
    });
    let (index, _) = net.propose(1, b"a=1").unwrap();
    net.clear_hook();
    net.tick_all(3);
    assert_eq!(net.status(3).commit, index, "no new proposal needed");
}

#[test]
fn heartbeats_repair_a_follower_that_missed_the_new_leaders_first_probe() {
    let mut net = Network::with_config(3, plain);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    net.isolate(3);
    net.elect(2);
    net.heal();
    net.tick_nodes(&[2], 3);
    assert_eq!(terms(&net, 3), terms(&net, 2));
}

#[test]
fn restarted_nodes_recover_their_log_and_state_machine() {
    let mut net = Network::new(3);
    net.elect(1);
    for i in 0..5 {
        net.propose(1, format!("k{i}=v").as_bytes()).unwrap();
    }
    for id in [2, 1, 3] {
        net.crash_and_restart(id);
    }
    net.tick_until(&[1, 2, 3], 60, |n| n.leader().is_some());
    let leader = net.leader().unwrap();
    net.propose(leader, b"after=restart").unwrap();
    for id in [1, 2, 3] {
        assert_eq!(net.node(id).kv.len(), 6, "node {id}");
    }
}

/// Thesis §10.2.1 lets a leader send appends while it writes them, but only once its term is durable: a lone
/// voter wins its election without sending a vote request, so its first appends (here to a learner) must wait
/// for the Ready that persists the new term. Otherwise a crash could let it reuse the term for other entries.
#[test]
fn thesis_10_2_1_a_lone_voter_sends_nothing_before_its_new_term_is_durable() {
    let mut node = Raft::bootstrap(Config::new(1), &[1]).expect("bootstrap");
    let cycle = |node: &mut Raft| {
        let ready = node.ready();
        let now = ready.messages.clone();
        let done = node.advance(ready);
        (now, done.messages)
    };
    node.start_election();
    cycle(&mut node);
    let learner = ConfChange {
        kind: ConfChangeKind::AddLearner,
        node_id: 2,
        context: Vec::new(),
    };
    node.propose_conf_change(learner)
        .expect("leader accepts the change");
    while node.has_ready() {
        cycle(&mut node);
    }
    assert!(node.status().conf.learners.contains(&2));

    node.step_down();
    node.start_election();
    assert_eq!(node.status().role, Role::Leader);
    node.propose(b"x".to_vec())
        .expect("leader accepts the proposal");
    let (immediate, after_persist) = cycle(&mut node);
    assert!(
        immediate.is_empty(),
        "sent before the new term was durable: {immediate:?}"
    );
    assert!(
        after_persist
            .iter()
            .any(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }))
    );
}

/// Thesis §6.4 with lossy forwarding: every read-index request gets an answer. A candidate cannot give a read
/// index, so it answers "none" at once and the asker retries elsewhere instead of waiting for a timeout.
#[test]
fn thesis_6_4_a_candidate_refuses_a_read_index_request_at_once() {
    let mut node = Raft::bootstrap(Config::new(1), &[1, 2, 3]).expect("bootstrap");
    let ready = node.ready();
    let _ = node.advance(ready);
    node.start_election();
    assert_eq!(node.status().role, Role::Candidate);
    let term = node.status().term;
    let ctx = b"read-7".to_vec();
    node.step(Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::ReadIndex { ctx: ctx.clone() },
    });
    let ready = node.ready();
    let done = node.advance(ready);
    let refused = MessageBody::ReadIndexResponse { ctx, index: None };
    assert!(
        done.messages.iter().any(|m| m.to == 2 && m.body == refused),
        "{:?}",
        done.messages
    );
}
