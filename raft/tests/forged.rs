//! A peer message that no correct peer sends is refused, never believed: it is counted and dropped before
//! anything (terms included) looks at it, and the node keeps its log, commit index and role. One test per
//! kind: entries that do not follow `prev`, acknowledgements beyond the leader's log, answers to a heartbeat
//! round never sent, snapshot chunks past the size bound.

mod harness;

use harness::Network;
use reinado_raft::*;

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: b"x=1".to_vec(),
    }
}

/// Node 1 leads three; a write is committed everywhere. Returns the leader's term.
fn cluster() -> (Network, Term) {
    let mut net = Network::new(3);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    let term = net.status(1).term;
    (net, term)
}

/// Steps `body` from `from` into `to` (at `term`); asserts it was refused and changed nothing.
fn refused(net: &mut Network, from: NodeId, to: NodeId, term: Term, body: MessageBody) {
    let before = net.status(to);
    let count = net.raft(to).refused_messages();
    net.raft_mut(to).step(Message {
        from,
        to,
        term,
        body,
    });
    net.deliver_all();
    let after = net.status(to);
    assert_eq!(
        (after.role, after.term, after.commit, after.last_index),
        (before.role, before.term, before.commit, before.last_index),
        "the node changed"
    );
    assert_eq!(net.raft(to).refused_messages(), count + 1, "not counted");
}

#[test]
fn entries_that_do_not_follow_prev_are_refused() {
    let (mut net, term) = cluster();
    let last = net.status(2).last_index;
    let prev_log_term = net.raft(2).status().last_term;
    // A gap after prev, an index going back, a term above the message's, a term going back.
    for entries in [
        vec![entry(last + 2, term)],
        vec![entry(last + 1, term), entry(last + 1, term)],
        vec![entry(last + 1, term + 1)],
        vec![entry(last + 1, term), entry(last + 2, term - 1)],
    ] {
        let body = MessageBody::Append {
            prev_log_index: last,
            prev_log_term,
            entries,
            commit: last + 2,
        };
        refused(&mut net, 1, 2, term, body);
    }
    // The cluster goes on.
    let (index, _) = net.propose(1, b"b=2").unwrap();
    assert_eq!(net.status(2).commit, index);
}

#[test]
fn an_acknowledgement_beyond_the_leaders_log_is_refused() {
    let (mut net, term) = cluster();
    let last = net.status(1).last_index;
    // Node 3 is cut off; a forged answer in its name claims the whole (future) log.
    net.isolate(3);
    net.isolate(2);
    net.raft_mut(1).propose(b"c=3".to_vec()).unwrap();
    let ack = MessageBody::AppendResponse {
        reject: false,
        index: u64::MAX / 2,
        hint_index: 0,
        hint_term: 0,
    };
    refused(&mut net, 3, 1, term, ack);
    assert_eq!(
        net.status(1).commit,
        last,
        "a forged answer committed an entry"
    );
    let peer = net.status(1).peers.into_iter().find(|p| p.id == 3).unwrap();
    assert!(peer.match_index <= last, "match index {}", peer.match_index);
    let reject = MessageBody::AppendResponse {
        reject: true,
        index: last,
        hint_index: u64::MAX / 2,
        hint_term: 1,
    };
    refused(&mut net, 3, 1, term, reject);
}

#[test]
fn an_answer_to_a_heartbeat_round_never_sent_is_refused() {
    let (mut net, term) = cluster();
    let body = MessageBody::HeartbeatResponse {
        read_round: u64::MAX,
    };
    refused(&mut net, 2, 1, term, body);
}

#[test]
fn snapshot_chunks_past_the_size_bound_are_refused() {
    let mut net = Network::with_config(3, |cfg| cfg.max_snapshot_bytes = 1 << 10);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    let term = net.status(1).term;
    let meta = SnapshotMeta {
        index: 100,
        term,
        conf_state: ConfState::with_voters([1, 2, 3]),
    };
    let chunk = |offset: u64, len: usize| MessageBody::Snapshot {
        meta: meta.clone(),
        offset,
        data: vec![0; len],
        done: false,
    };
    // Within the bound, chunks are taken; one that would pass it is refused, and so is one past the end of
    // the offsets a u64 counts.
    net.raft_mut(2).step(Message {
        from: 1,
        to: 2,
        term,
        body: chunk(0, 1000),
    });
    refused(&mut net, 1, 2, term, chunk(1000, 100));
    refused(&mut net, 1, 2, term, chunk(u64::MAX, 1));
}

#[test]
fn an_acknowledged_snapshot_newer_than_the_leaders_is_refused() {
    let (mut net, term) = cluster();
    let body = MessageBody::SnapshotResponse {
        index: u64::MAX / 2,
        next_offset: 0,
        reject: false,
        done: true,
    };
    refused(&mut net, 2, 1, term, body);
    let peer = net.status(1).peers.into_iter().find(|p| p.id == 2).unwrap();
    assert!(peer.match_index <= net.status(1).last_index);
}

#[test]
fn a_term_no_cluster_reaches_and_a_vote_for_a_log_from_the_future_are_refused() {
    let (mut net, term) = cluster();
    refused(&mut net, 2, 1, u64::MAX, MessageBody::TimeoutNow);
    let vote = MessageBody::Vote {
        pre_vote: false,
        last_log_index: 5,
        last_log_term: term + 5,
        transfer: false,
    };
    refused(&mut net, 3, 2, term + 1, vote);
    assert_eq!(net.leader(), Some(1));
}
