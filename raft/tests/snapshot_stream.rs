//! §7, InstallSnapshot in chunks: an assembly belongs to one sender in one term, so chunks of two streams
//! never splice into one snapshot, and a snapshot the `verify_snapshot` hook calls bad is never installed.

mod harness;

use harness::{Network, drain};
use reinado_raft::*;

/// The snapshot every hand-made chunk below belongs to: the same meta whoever sends it.
fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 10,
        term: 2,
        conf_state: ConfState::with_voters([1, 2, 3]),
    }
}

fn chunk(from: NodeId, term: Term, offset: u64, data: &[u8], done: bool) -> Message {
    Message {
        from,
        to: 3,
        term,
        body: MessageBody::Snapshot {
            meta: meta(),
            offset,
            data: data.to_vec(),
            done,
        },
    }
}

/// Node 3 of a new cluster {1, 2, 3}, with everything it starts with persisted.
fn follower(verify: Option<fn(&[u8]) -> bool>) -> Raft {
    let mut cfg = Config::new(3);
    cfg.verify_snapshot = verify;
    let mut raft = Raft::bootstrap(cfg, &[1, 2, 3]).unwrap();
    drain(&mut raft);
    raft
}

/// Runs `ready`/`advance` until `raft` has nothing to do; returns the snapshots it was told to install and
/// every message it sent.
fn run(raft: &mut Raft) -> (Vec<Snapshot>, Vec<Message>) {
    let (mut snapshots, mut msgs) = (Vec::new(), Vec::new());
    while raft.has_ready() {
        let mut ready = raft.ready();
        snapshots.extend(ready.snapshot.clone());
        msgs.append(&mut ready.messages);
        msgs.extend(raft.advance(ready).messages);
    }
    (snapshots, msgs)
}

/// A snapshot answer: to whom, next offset, reject, done.
type Answer = (NodeId, u64, bool, bool);

/// Steps `m` into `raft`, runs it, and returns the snapshot answer it sent and any snapshot to install.
fn step(raft: &mut Raft, m: Message) -> (Vec<Snapshot>, Vec<Answer>) {
    raft.step(m);
    let (snapshots, msgs) = run(raft);
    let answers = msgs
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::SnapshotResponse {
                next_offset,
                reject,
                done,
                ..
            } => Some((m.to, next_offset, reject, done)),
            _ => None,
        })
        .collect();
    (snapshots, answers)
}

#[test]
fn s7_chunks_of_two_leaders_with_the_same_meta_are_never_spliced() {
    let mut raft = follower(None);
    let (installed, answers) = step(&mut raft, chunk(1, 2, 0, b"AAAA", false));
    assert!(installed.is_empty());
    assert_eq!(answers, vec![(1, 4, false, false)]);

    // Leader 2 of term 3 sends the rest of *its* stream: it must not be glued onto leader 1's first chunk.
    let (installed, answers) = step(&mut raft, chunk(2, 3, 4, b"BBBB", true));
    assert!(installed.is_empty(), "spliced: {installed:?}");
    assert_eq!(answers, vec![(2, 0, true, false)], "restart from 0");
    assert_eq!(raft.status().snapshot_index, 0);

    // Leader 2's whole stream installs, and only its bytes.
    step(&mut raft, chunk(2, 3, 0, b"BBBB", false));
    let (installed, answers) = step(&mut raft, chunk(2, 3, 4, b"BBBB", true));
    assert_eq!(answers, vec![(2, 8, false, true)]);
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].data, b"BBBBBBBB");
    assert_eq!(raft.snapshot().data, b"BBBBBBBB");

    // A late chunk of the old leader's stream is of an older term (§5.1): refused, nothing installed.
    let (installed, answers) = step(&mut raft, chunk(1, 2, 4, b"AAAA", true));
    assert!(installed.is_empty());
    assert!(answers.is_empty());
    assert_eq!(raft.snapshot().data, b"BBBBBBBB");
}

#[test]
fn s7_a_first_chunk_of_a_new_term_restarts_the_assembly() {
    let mut raft = follower(None);
    step(&mut raft, chunk(1, 2, 0, b"AAAA", false));
    // Node 1, re-elected in term 3, starts its stream again: the term-2 bytes are dropped.
    let (installed, answers) = step(&mut raft, chunk(1, 3, 0, b"CCCC", false));
    assert!(installed.is_empty());
    assert_eq!(answers, vec![(1, 4, false, false)]);
    let (installed, _) = step(&mut raft, chunk(1, 3, 4, b"CCCC", true));
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].data, b"CCCCCCCC", "no term-2 bytes");
}

/// The test hook: a snapshot is bad if it contains the marker.
fn no_poison(data: &[u8]) -> bool {
    !data.windows(6).any(|w| w == b"POISON")
}

#[test]
fn verify_snapshot_a_bad_snapshot_never_reaches_a_ready_and_the_leader_is_asked_for_offset_0() {
    let mut raft = follower(Some(no_poison));
    let before = raft.status();
    let log_before = raft.log_entries().to_vec();
    step(&mut raft, chunk(1, 2, 0, b"xxPOI", false));
    let (installed, answers) = step(&mut raft, chunk(1, 2, 5, b"SONxx", true));
    assert!(installed.is_empty(), "installed {installed:?}");
    assert_eq!(answers, vec![(1, 0, true, false)], "resend from offset 0");
    let after = raft.status();
    assert_eq!(
        (
            after.commit,
            after.last_index,
            after.snapshot_index,
            after.conf
        ),
        (
            before.commit,
            before.last_index,
            before.snapshot_index,
            before.conf
        )
    );
    assert_eq!(raft.log_entries(), &log_before[..]);

    // The assembly was discarded: a chunk continuing it is refused too.
    let (installed, answers) = step(&mut raft, chunk(1, 2, 10, b"yy", true));
    assert!(installed.is_empty());
    assert_eq!(answers, vec![(1, 0, true, false)]);

    // A good stream of the same snapshot installs.
    step(&mut raft, chunk(1, 2, 0, b"good ", false));
    let (installed, answers) = step(&mut raft, chunk(1, 2, 5, b"data!", true));
    assert_eq!(answers, vec![(1, 10, false, true)]);
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].data, b"good data!");
    assert_eq!(raft.status().snapshot_index, meta().index);
}

/// A cluster of three checking snapshots with [`no_poison`], in which node 3 fell behind a compaction of
/// node 1's log that holds `poison`'s value.
fn lagging_follower(poison: &str) -> Network {
    let mut net = Network::with_config(3, |c| {
        c.snapshot_chunk_bytes = 40;
        c.verify_snapshot = Some(no_poison);
    });
    net.elect(1);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, format!("key{i:02}=value{i:02}").as_bytes())
            .unwrap();
    }
    net.propose(1, format!("poison={poison}").as_bytes())
        .unwrap();
    net.compact(1);
    net
}

fn snapshot_offsets_to(sent: &[Message], to: NodeId) -> Vec<u64> {
    sent.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match m.body {
            MessageBody::Snapshot { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

#[test]
fn verify_snapshot_a_rejected_snapshot_is_never_installed_and_is_resent_only_after_a_pause() {
    let mut net = lagging_follower("POISON");
    let before = net.status(3);
    let log_before = net.raft(3).log_entries().to_vec();
    let kv_before = net.node(3).kv.clone();
    net.heal();
    net.take_sent();
    let ticks = 30;
    net.tick_all(ticks);

    let st = net.status(3);
    assert_eq!(st.snapshot_index, 0, "{st:?}");
    assert!(net.node(3).storage.snapshot.is_none());
    // Heartbeats may tell it that entries it already had are committed (up to its match index), nothing more.
    assert_eq!(st.last_index, before.last_index);
    assert!(st.commit <= before.last_index, "{st:?}");
    assert_eq!(net.raft(3).log_entries(), &log_before[..]);
    assert_eq!(net.node(3).kv, kv_before);

    // The leader retried, from offset 0, but paced by the stall timeout rather than at once (which would
    // never let the network quiesce).
    let sent = net.take_sent();
    let restarts = snapshot_offsets_to(&sent, 3)
        .iter()
        .filter(|&&o| o == 0)
        .count();
    assert!(
        (2..=ticks / 2).contains(&restarts),
        "{restarts} restarts in {ticks} ticks"
    );
    let rejections = sent
        .iter()
        .filter(|m| {
            m.from == 3
                && matches!(
                    m.body,
                    MessageBody::SnapshotResponse {
                        reject: true,
                        next_offset: 0,
                        ..
                    }
                )
        })
        .count();
    assert!(rejections >= 2, "{rejections} rejections");

    // Once the leader's snapshot no longer holds the marker, the follower installs it and catches up.
    net.propose(1, b"poison=gone").unwrap();
    let meta = net.compact(1);
    net.tick_until(&[1, 2, 3], 20, |n| n.status(3).snapshot_index == meta.index);
    let (index, _) = net.propose(1, b"after=1").unwrap();
    assert_eq!(net.status(3).commit, index);
    assert_eq!(net.node(3).kv, net.node(1).kv);
}

#[test]
fn verify_snapshot_a_good_snapshot_installs() {
    let mut net = lagging_follower("harmless");
    let meta = net.raft(1).snapshot().meta.clone();
    net.heal();
    net.tick_until(&[1, 2, 3], 10, |n| n.status(3).snapshot_index == meta.index);
    assert_eq!(net.node(3).storage.snapshot.as_ref().unwrap().meta, meta);
    assert_eq!(net.node(3).kv, net.node(1).kv);
}

/// A cluster of three whose compactions keep `entries` entries (within `bytes`) below the snapshot, in
/// which node 3 misses two entries before node 1 compacts.
fn behind_a_margin(entries: u64, bytes: usize) -> (Network, SnapshotMeta) {
    let mut net = Network::with_config(3, move |c| {
        c.catch_up_entries = entries;
        c.catch_up_bytes = bytes;
    });
    net.elect(1);
    net.isolate(3);
    for i in 0..2 {
        net.propose(1, format!("key{i}=value{i}").as_bytes())
            .unwrap();
    }
    let meta = net.compact(1);
    (net, meta)
}

fn snapshots_to(sent: &[Message], to: NodeId) -> usize {
    snapshot_offsets_to(sent, to).len()
}

#[test]
fn compaction_keeps_a_catch_up_margin_and_a_follower_within_it_gets_entries() {
    let (mut net, meta) = behind_a_margin(3, 1 << 20);
    let first = net.raft(1).log_entries()[0].index;
    assert_eq!(first, meta.index - 2, "the last 3 compacted entries stay");
    assert_eq!(
        net.raft(1).entry(meta.index - 1).map(|e| e.index),
        Some(meta.index - 1)
    );
    net.heal();
    net.take_sent();
    let (index, _) = net.propose(1, b"after=1").unwrap();
    net.tick_all(5);
    assert_eq!(
        snapshots_to(&net.take_sent(), 3),
        0,
        "node 3 was sent the snapshot"
    );
    assert_eq!(net.status(3).commit, index);
    assert_eq!(net.node(3).kv, net.node(1).kv);
    // The membership is the snapshot's: the entries kept below it are not counted twice.
    assert_eq!(net.status(1).conf, net.status(3).conf);
}

#[test]
fn the_margin_is_bounded_in_bytes_and_a_follower_beyond_it_gets_the_snapshot() {
    // Each entry takes its data plus 24 bytes: 40 bytes hold one of them.
    let (mut net, meta) = behind_a_margin(100, 40);
    assert_eq!(net.raft(1).log_entries()[0].index, meta.index);
    net.heal();
    net.take_sent();
    net.tick_until(&[1, 2, 3], 20, |n| n.status(3).snapshot_index == meta.index);
    assert_eq!(net.node(3).kv, net.node(1).kv);
}
