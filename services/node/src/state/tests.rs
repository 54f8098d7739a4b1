use super::*;
use reinado_proto::v1::{MembersStarted, RequestId, StateLimits, TxnDelete, TxnPut, TxnRequest};

fn entry(index: Index, cmd: &Command) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::Normal,
        data: cmd.encode_to_vec(),
    }
}

fn put(key: &str, value: &str) -> Option<command::Op> {
    Some(command::Op::Put(TxnPut {
        key: key.into(),
        value: value.into(),
    }))
}

fn del(key: &str) -> Option<command::Op> {
    Some(command::Op::Delete(TxnDelete { key: key.into() }))
}

fn cmd(op: Option<command::Op>, id: Option<(u64, u64, u64)>, time_ms: u64) -> Command {
    Command {
        request_id: id.map(|(client_id, seq, acked)| RequestId {
            client_id,
            seq,
            acked,
        }),
        time_ms,
        op,
    }
}

/// Applies `cmds` from index `sm.applied() + 1` on; returns their outcomes.
fn apply_all(sm: &mut StateMachine, cmds: &[Command]) -> Vec<WriteOutcome> {
    cmds.iter()
        .map(|c| {
            let index = sm.applied() + 1;
            sm.apply(&entry(index, c))
                .expect("a command has an outcome")
        })
        .collect()
}

fn value(sm: &StateMachine, key: &str) -> Option<String> {
    sm.get(key.as_bytes())
        .map(|kv| String::from_utf8(kv.value).unwrap())
}

#[test]
fn puts_and_deletes_keep_revisions_and_versions() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(
        &mut sm,
        &[
            cmd(put("a", "1"), None, 0),
            cmd(put("a", "2"), None, 0),
            cmd(put("b", "x"), None, 0),
        ],
    );
    let a = sm.get(b"a").unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (1, 2, 2),
        "a was created at 1 and changed at 2"
    );
    assert_eq!(sm.size_bytes(), 4);
    let out = apply_all(&mut sm, &[cmd(del("a"), None, 0), cmd(del("zz"), None, 0)]);
    assert!(out[0].deleted && !out[1].deleted);
    assert_eq!(out[1].revision, 5);
    assert_eq!(sm.get(b"a"), None);
    assert_eq!(sm.size_bytes(), 2);
    // Recreated keys start a new life.
    apply_all(&mut sm, &[cmd(put("a", "3"), None, 0)]);
    let a = sm.get(b"a").unwrap();
    assert_eq!((a.create_revision, a.version), (6, 1));
}

#[test]
fn a_retried_write_applies_once_and_answers_its_first_outcome() {
    let mut sm = StateMachine::new(Limits::default());
    let first = cmd(put("k", "v1"), Some((7, 1, 0)), 10);
    let out = apply_all(
        &mut sm,
        &[
            first.clone(),
            cmd(put("k", "v2"), Some((8, 1, 0)), 11),
            first,
        ],
    );
    assert_eq!(out[0], out[2], "the retry answers the first outcome");
    assert_eq!(out[2].revision, 1);
    assert_eq!(value(&sm, "k").as_deref(), Some("v2"), "not applied again");
    assert_eq!(sm.get(b"k").unwrap().version, 2);
}

#[test]
fn concurrent_requests_of_one_client_are_each_applied_once() {
    let mut sm = StateMachine::new(Limits::default());
    // Sequence numbers 1..=3 in flight at once, arriving out of order, each retried once.
    let cmds: Vec<Command> = [3, 1, 2, 1, 3, 2]
        .iter()
        .map(|&seq| cmd(put(&format!("k{seq}"), "v"), Some((5, seq, 0)), 1))
        .collect();
    let out = apply_all(&mut sm, &cmds);
    assert_eq!(out[1], out[3]);
    assert_eq!(out[0], out[4]);
    assert_eq!(out[2], out[5]);
    for seq in 1..=3 {
        assert_eq!(sm.get(format!("k{seq}").as_bytes()).unwrap().version, 1);
    }
}

#[test]
fn acknowledged_results_are_forgotten_and_their_late_retries_refused() {
    let mut sm = StateMachine::new(Limits::default());
    let stale = cmd(put("k", "old"), Some((5, 1, 0)), 1);
    apply_all(
        &mut sm,
        &[stale.clone(), cmd(put("k", "new"), Some((5, 2, 2)), 2)],
    );
    assert_eq!(sm.sessions.map[&5].results.len(), 1, "result 1 was dropped");
    let out = apply_all(&mut sm, &[stale]);
    assert!(!out[0].refused.is_empty());
    assert_eq!(value(&sm, "k").as_deref(), Some("new"));
}

#[test]
fn sessions_expire_by_idle_time_and_by_count() {
    let limits = Limits {
        session_ttl_ms: 1000,
        max_sessions: 2,
        ..Limits::default()
    };
    let mut sm = StateMachine::new(limits);
    apply_all(
        &mut sm,
        &[
            cmd(put("a", "1"), Some((1, 1, 0)), 100),
            cmd(put("a", "1"), Some((2, 1, 0)), 200),
            cmd(put("a", "1"), Some((3, 1, 0)), 300),
        ],
    );
    let clients: Vec<u64> = sm.sessions.map.keys().copied().collect();
    assert_eq!(clients, [2, 3], "the least active session was evicted");
    apply_all(&mut sm, &[cmd(put("a", "1"), Some((4, 1, 0)), 1250)]);
    let clients: Vec<u64> = sm.sessions.map.keys().copied().collect();
    assert_eq!(clients, [3, 4], "client 2 idled past the ttl");
    assert_eq!(sm.sessions.by_activity.len(), 2);
}

#[test]
fn the_quota_refuses_growth_but_not_deletes_or_shrinking() {
    let limits = Limits {
        quota_bytes: 10,
        ..Limits::default()
    };
    let mut sm = StateMachine::new(limits);
    let out = apply_all(
        &mut sm,
        &[
            cmd(put("k", "123456789"), None, 0),
            cmd(put("j", "1"), None, 0),
            cmd(put("k", "12"), None, 0),
        ],
    );
    assert!(out[0].refused.is_empty());
    assert!(out[1].refused.contains("quota"), "{:?}", out[1]);
    assert!(out[2].refused.is_empty(), "shrinking a value is allowed");
    assert_eq!(sm.get(b"j"), None);
    let out = apply_all(&mut sm, &[cmd(del("k"), None, 0)]);
    assert!(out[0].deleted);
    assert_eq!(sm.size_bytes(), 0);
}

fn cas(key: &str, expected_version: u64, new: &str) -> Option<command::Op> {
    Some(command::Op::Txn(TxnRequest {
        compare: vec![Compare {
            key: key.into(),
            target: CompareTarget::Version as i32,
            op: CompareOp::Equal as i32,
            number: expected_version,
            ..Compare::default()
        }],
        success: vec![TxnOp {
            op: put(key, new).map(|op| match op {
                command::Op::Put(p) => txn_op::Op::Put(p),
                _ => unreachable!(),
            }),
        }],
        failure: vec![],
        request_id: None,
    }))
}

#[test]
fn a_transaction_applies_one_branch_atomically() {
    let mut sm = StateMachine::new(Limits::default());
    let out = apply_all(
        &mut sm,
        &[
            cmd(cas("lock", 0, "me"), None, 0),
            cmd(cas("lock", 0, "you"), None, 0),
        ],
    );
    assert!(out[0].succeeded && !out[1].succeeded);
    assert_eq!(value(&sm, "lock").as_deref(), Some("me"));
}

#[test]
fn every_compare_target_and_op() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(&mut sm, &[cmd(put("k", "m"), None, 0)]);
    let c = |target: CompareTarget, op: CompareOp, value: &str, number: u64, exists: bool| {
        sm.compare(&Compare {
            key: "k".into(),
            target: target as i32,
            op: op as i32,
            value: value.into(),
            number,
            exists,
        })
    };
    use CompareOp::*;
    use CompareTarget::*;
    assert!(c(Value, Equal, "m", 0, false));
    assert!(c(Value, Less, "n", 0, false));
    assert!(c(Value, Greater, "a", 0, false));
    assert!(c(Value, NotEqual, "a", 0, false));
    assert!(c(Version, Equal, "", 1, false));
    assert!(c(CreateRevision, Equal, "", 1, false));
    assert!(c(ModRevision, Less, "", 2, false));
    assert!(c(Exists, Equal, "", 0, true));
    assert!(!c(Exists, Equal, "", 0, false));
    assert!(!c(CompareTarget::Unspecified, Equal, "", 0, false));
    let missing = Compare {
        key: "nope".into(),
        target: Value as i32,
        op: NotEqual as i32,
        ..Compare::default()
    };
    assert!(
        !sm.compare(&missing),
        "a missing key fails value comparisons"
    );
}

#[test]
fn range_respects_bounds_limit_and_keys_only() {
    let mut sm = StateMachine::new(Limits::default());
    let cmds: Vec<Command> = ["a", "b1", "b2", "b3", "c"]
        .iter()
        .map(|k| cmd(put(k, "v"), None, 0))
        .collect();
    apply_all(&mut sm, &cmds);
    let q = RangeQuery {
        start: b"b".to_vec(),
        end: Some(b"c".to_vec()),
        limit: 2,
        keys_only: true,
        max_bytes: 1 << 20,
    };
    let (kvs, more) = sm.range(&q);
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"b1".as_slice(), b"b2"]);
    assert!(more);
    assert!(kvs.iter().all(|kv| kv.value.is_empty()));
    let (kvs, more) = sm.range(&RangeQuery {
        limit: 10,
        end: None,
        ..q
    });
    assert_eq!(kvs.len(), 4);
    assert!(!more);
    // The byte cap: each key and value is 3 bytes; a cap of 5 stops after the second key.
    let (kvs, more) = sm.range(&RangeQuery {
        start: Vec::new(),
        end: None,
        limit: 10,
        keys_only: false,
        max_bytes: 5,
    });
    assert_eq!((kvs.len(), more), (2, true));
}

#[test]
fn history_serves_watches_and_reports_compaction() {
    let limits = Limits {
        history_bytes: 200,
        ..Limits::default()
    };
    let mut sm = StateMachine::new(limits);
    let all = KeyFilter {
        key: Vec::new(),
        prefix: true,
    };
    apply_all(
        &mut sm,
        &[cmd(put("a", "1"), None, 0), cmd(del("a"), None, 0)],
    );
    let (events, next) = sm.events_since(1, &all, 100).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].r#type, EventType::Delete as i32);
    assert_eq!(next, 3);
    // Each event costs about 50 bytes: after ten more, the first ones are gone.
    let cmds: Vec<Command> = (0..10)
        .map(|i| cmd(put(&format!("k{i}"), "v"), None, 0))
        .collect();
    apply_all(&mut sm, &cmds);
    let err = sm.events_since(1, &all, 100).unwrap_err();
    assert!(err.first_available > 1);
    let (events, next) = sm.events_since(err.first_available, &all, 100).unwrap();
    assert_eq!(next, 13);
    assert_eq!(events.len() as u64, 13 - err.first_available);
    let only_k9 = KeyFilter {
        key: b"k9".to_vec(),
        prefix: false,
    };
    let (events, _) = sm.events_since(err.first_available, &only_k9, 100).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn watch_batches_end_on_revision_boundaries() {
    let mut sm = StateMachine::new(Limits::default());
    let both = Some(command::Op::Txn(TxnRequest {
        success: ["x", "y"]
            .iter()
            .map(|k| TxnOp {
                op: Some(txn_op::Op::Put(TxnPut {
                    key: (*k).into(),
                    value: "v".into(),
                })),
            })
            .collect(),
        ..TxnRequest::default()
    }));
    apply_all(
        &mut sm,
        &[
            cmd(put("w", "1"), None, 0),
            cmd(both, None, 0),
            cmd(put("z", "1"), None, 0),
        ],
    );
    let all = KeyFilter {
        key: Vec::new(),
        prefix: true,
    };
    let (events, next) = sm.events_since(1, &all, 2).unwrap();
    assert_eq!(events.len(), 3, "revision 2's two events stay together");
    assert_eq!(next, 3);
    let (events, next) = sm.events_since(next, &all, 2).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(next, 4);
}

#[test]
fn a_snapshot_restores_the_same_state() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(
        &mut sm,
        &[
            cmd(put("a", "1"), Some((9, 1, 0)), 50),
            cmd(put("b", "2"), Some((9, 2, 1)), 60),
        ],
    );
    sm.apply(&Entry {
        term: 1,
        index: 3,
        kind: EntryKind::ConfChange,
        data: ConfChange {
            kind: ConfChangeKind::AddLearner,
            node_id: 4,
            context: MemberContext {
                peer_addr: "n4:7071".into(),
                client_addr: "n4:7070".into(),
                ..MemberContext::default()
            }
            .encode_to_vec(),
        }
        .encode(),
    });
    let image = sm.snapshot();
    let restored = StateMachine::restore(&image, sm.applied()).unwrap();
    assert_eq!(restored.kvs, sm.kvs);
    assert_eq!(restored.sessions, sm.sessions);
    assert_eq!(restored.members, sm.members);
    assert_eq!(restored.clock_ms, 60);
    assert_eq!(restored.size_bytes(), sm.size_bytes());
    assert_eq!(restored.snapshot(), image);
    assert_eq!(restored.members()[&4].client_addr, "n4:7070");
    assert!(StateMachine::restore(b"\xff\xff", 1).is_err());
}

#[test]
fn undecodable_and_empty_entries_change_nothing() {
    let mut sm = StateMachine::new(Limits::default());
    for (index, data) in [(1, vec![]), (2, vec![0xff, 0x01, 0x02])] {
        let out = sm.apply(&Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data,
        });
        assert_eq!(out, None);
    }
    assert_eq!(sm.applied(), 2);
    assert_eq!(sm.size_bytes(), 0);
}

fn conf_entry(index: Index, kind: ConfChangeKind, node_id: NodeId) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::ConfChange,
        data: ConfChange {
            kind,
            node_id,
            context: MemberContext {
                peer_addr: format!("n{node_id}:7071"),
                // A context cannot mark a member started: only MembersStarted does.
                started: true,
                ..MemberContext::default()
            }
            .encode_to_vec(),
        }
        .encode(),
    }
}

#[test]
fn members_are_recorded_started_through_the_log_and_forgotten_when_removed() {
    let mut sm = StateMachine::new(Limits::default());
    sm.apply(&conf_entry(1, ConfChangeKind::AddVoter, 1));
    sm.apply(&conf_entry(2, ConfChangeKind::AddVoter, 2));
    assert!(!sm.started(1) && !sm.started(2));
    let started = Command {
        op: Some(command::Op::MembersStarted(MembersStarted {
            ids: vec![2, 9],
        })),
        ..Command::default()
    };
    assert!(sm.apply(&entry(3, &started)).is_none());
    assert!(sm.started(2));
    assert!(
        !sm.started(1) && !sm.started(9),
        "only members named are started"
    );
    let image = sm.snapshot();
    let restored = StateMachine::restore(&image, 3).unwrap();
    assert!(restored.started(2), "the record survives a snapshot");
    sm.apply(&conf_entry(4, ConfChangeKind::Remove, 2));
    sm.apply(&conf_entry(5, ConfChangeKind::AddLearner, 2));
    assert!(!sm.started(2), "a removed member's record goes with it");
}

#[test]
fn a_snapshot_with_a_flipped_byte_is_refused_by_restore_and_verify() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(
        &mut sm,
        &[
            cmd(put("alpha", "one"), Some((3, 1, 0)), 5),
            cmd(put("beta", "two"), None, 6),
        ],
    );
    let image = sm.snapshot();
    assert!(verify_snapshot(&image));
    assert!(StateMachine::restore(&image, sm.applied()).is_ok());
    // Every single flipped bit anywhere in the image (header or body) is caught.
    for at in 0..image.len() {
        let mut bad = image.clone();
        bad[at] ^= 0x10;
        assert!(!verify_snapshot(&bad), "byte {at} flipped passes verify");
        let err = StateMachine::restore(&bad, sm.applied()).expect_err("a flipped byte is refused");
        let text = err.to_string();
        assert!(
            text.contains("damaged") || text.contains("version"),
            "byte {at}: {text}"
        );
    }
    assert!(!verify_snapshot(&image[..3]), "truncated");
    assert!(!verify_snapshot(&[]), "empty");
}

fn refusal_of(o: &WriteOutcome) -> Refusal {
    Refusal::try_from(o.refusal).expect("a known refusal")
}

#[test]
fn a_full_session_refuses_new_writes_but_still_answers_retries() {
    let mut sm = StateMachine::new(Limits {
        max_results_per_session: 2,
        ..Limits::default()
    });
    // Writes 1..=3 of client 5 in flight at once, none acknowledged: the third finds the session full.
    let out = apply_all(
        &mut sm,
        &[
            cmd(put("a", "1"), Some((5, 1, 1)), 1),
            cmd(put("b", "1"), Some((5, 2, 1)), 2),
            cmd(put("c", "1"), Some((5, 3, 1)), 3),
        ],
    );
    assert_eq!(refusal_of(&out[2]), Refusal::SessionFull, "{:?}", out[2]);
    assert!(
        out[2].refused.contains("2 unacknowledged results"),
        "{}",
        out[2].refused
    );
    assert_eq!(sm.get(b"c"), None, "a refused write is not executed");
    // The retry of write 1, the one most likely still waiting, answers its first outcome: it is not run
    // again (an evicted result would let `a` be written a second time, at version 2).
    let retry = apply_all(&mut sm, &[cmd(put("a", "1"), Some((5, 1, 1)), 4)]);
    assert_eq!(retry[0], out[0]);
    assert_eq!(sm.get(b"a").unwrap().version, 1);
    // Once write 1 is acknowledged, write 3 has room.
    let out = apply_all(&mut sm, &[cmd(put("c", "1"), Some((5, 3, 2)), 5)]);
    assert_eq!(refusal_of(&out[0]), Refusal::None, "{:?}", out[0]);
    assert_eq!(value(&sm, "c").as_deref(), Some("1"));
}

#[test]
fn every_replica_refuses_a_full_session_at_the_same_entry() {
    let limits = Limits {
        max_results_per_session: 3,
        ..Limits::default()
    };
    let cmds: Vec<Command> = (1..=6)
        .map(|seq| cmd(put(&format!("k{seq}"), "v"), Some((9, seq, 1)), seq))
        .collect();
    let (mut a, mut b) = (StateMachine::new(limits), StateMachine::new(limits));
    let (out_a, out_b) = (apply_all(&mut a, &cmds), apply_all(&mut b, &cmds));
    assert_eq!(out_a, out_b);
    let refused: Vec<u64> = (1..=6u64)
        .filter(|&seq| !out_a[seq as usize - 1].refused.is_empty())
        .collect();
    assert_eq!(refused, [4, 5, 6]);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn a_forgotten_session_refuses_a_write_that_may_be_a_retry() {
    let limits = Limits {
        session_ttl_ms: 1000,
        max_sessions: 1,
        ..Limits::default()
    };
    let mut sm = StateMachine::new(limits);
    let write_2 = cmd(put("k", "two"), Some((1, 2, 2)), 20);
    apply_all(
        &mut sm,
        &[
            cmd(put("k", "one"), Some((1, 1, 1)), 10),
            write_2.clone(),
            // Client 2 evicts client 1 (max_sessions = 1), then client 1 writes something else.
            cmd(put("other", "x"), Some((2, 1, 1)), 30),
            cmd(put("k", "three"), None, 40),
        ],
    );
    assert!(!sm.sessions.map.contains_key(&1), "client 1 was evicted");
    // The late retry of write 2 would put "two" back over "three".
    let out = apply_all(&mut sm, &[write_2]);
    assert_eq!(refusal_of(&out[0]), Refusal::SessionExpired, "{:?}", out[0]);
    assert!(out[0].refused.contains("expired"), "{}", out[0].refused);
    assert_eq!(value(&sm, "k").as_deref(), Some("three"));
    assert!(
        !sm.sessions.map.contains_key(&1),
        "a refused session stays forgotten"
    );
    // Idle past the TTL: the same.
    let out = apply_all(&mut sm, &[cmd(put("k", "late"), Some((2, 2, 2)), 5000)]);
    assert_eq!(refusal_of(&out[0]), Refusal::SessionExpired);
    assert_eq!(value(&sm, "k").as_deref(), Some("three"));
    // A new session's first writes (nothing answered yet: acked 0 or 1) are accepted, in any order.
    let out = apply_all(
        &mut sm,
        &[
            cmd(put("n", "2"), Some((3, 2, 1)), 5001),
            cmd(put("n", "1"), Some((3, 1, 1)), 5002),
            cmd(put("m", "1"), Some((4, 1, 0)), 5003),
        ],
    );
    assert!(out.iter().all(|o| o.refused.is_empty()), "{out:?}");
}

#[test]
fn refusals_carry_their_kind() {
    let mut sm = StateMachine::new(Limits {
        quota_bytes: 4,
        ..Limits::default()
    });
    let out = apply_all(
        &mut sm,
        &[
            cmd(put("k", "123456"), Some((1, 1, 1)), 1),
            cmd(put("k", "1"), Some((1, 3, 3)), 2),
            cmd(put("k", "1"), Some((1, 2, 1)), 3),
        ],
    );
    assert_eq!(refusal_of(&out[0]), Refusal::Quota);
    assert_eq!(refusal_of(&out[1]), Refusal::None);
    assert_eq!(refusal_of(&out[2]), Refusal::Acknowledged);
}

fn set_limits(limits: &Limits) -> Command {
    Command {
        op: Some(command::Op::SetLimits(limits.to_proto())),
        ..Command::default()
    }
}

#[test]
fn limits_are_agreed_through_the_log_and_kept_in_snapshots() {
    let mut sm = StateMachine::new(Limits::default());
    let small = Limits {
        quota_bytes: 4,
        ..Limits::default()
    };
    assert_eq!(sm.apply(&entry(1, &set_limits(&small))), None);
    assert_eq!(sm.limits(), small);
    let outcomes = apply_all(
        &mut sm,
        &[cmd(put("a", "1"), None, 5), cmd(put("b", "22"), None, 6)],
    );
    assert_eq!(refusal_of(&outcomes[0]), Refusal::None);
    assert_eq!(refusal_of(&outcomes[1]), Refusal::Quota);
    let restored = StateMachine::restore(&sm.snapshot(), sm.applied()).unwrap();
    assert_eq!(restored.limits(), small);
}

#[test]
fn limits_out_of_bounds_are_refused_at_apply_and_the_earlier_ones_stay() {
    let mut sm = StateMachine::new(Limits::default());
    let zero_quota = Limits {
        quota_bytes: 0,
        ..Limits::default()
    };
    let absurd_sessions = Limits {
        max_sessions: usize::MAX,
        ..Limits::default()
    };
    let absurd_ttl = StateLimits {
        session_ttl_ms: u64::MAX,
        ..Limits::default().to_proto()
    };
    sm.apply(&entry(1, &set_limits(&zero_quota)));
    sm.apply(&entry(2, &set_limits(&absurd_sessions)));
    let cmd = Command {
        op: Some(command::Op::SetLimits(absurd_ttl)),
        ..Command::default()
    };
    sm.apply(&entry(3, &cmd));
    assert_eq!(sm.limits(), Limits::default());
    assert_eq!(
        zero_quota.check(),
        Err(BadLimit {
            limit: Limit::QuotaBytes,
            value: 0,
            max: 1 << 40
        })
    );
}

#[test]
fn an_image_without_limits_restores_with_the_defaults() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(&mut sm, &[cmd(put("a", "1"), None, 5)]);
    let mut image = StateSnapshot::decode(envelope::open(&sm.snapshot()).unwrap()).unwrap();
    image.limits = None;
    let old = envelope::seal(&image.encode_to_vec());
    let restored = StateMachine::restore(&old, 1).unwrap();
    assert_eq!(restored.limits(), Limits::default());
    assert_eq!(restored.get(b"a").unwrap().value, b"1");
}

/// A snapshot that decodes but that no state machine wrote (the same session, key, lease or member twice,
/// or a key under a lease it does not hold) is refused by verify and restore before it replaces anything
/// (a duplicate session id left the session table's activity index pointing at a session that was gone).
#[test]
fn a_snapshot_image_with_duplicate_ids_is_refused() {
    let mut sm = StateMachine::new(Limits::default());
    apply_all(
        &mut sm,
        &[
            cmd(put("alpha", "one"), Some((3, 1, 0)), 5),
            cmd(put("beta", "two"), Some((4, 1, 0)), 6),
        ],
    );
    let good = StateSnapshot::decode(envelope::open(&sm.snapshot()).unwrap()).unwrap();
    assert_eq!(good.sessions.len(), 2);
    let forged = |tweak: &dyn Fn(&mut StateSnapshot)| {
        let mut image = good.clone();
        tweak(&mut image);
        envelope::seal(&image.encode_to_vec())
    };
    type Tweak<'a> = &'a dyn Fn(&mut StateSnapshot);
    let cases: [(&str, Tweak); 5] = [
        ("session", &|i| {
            i.sessions[1].client_id = i.sessions[0].client_id
        }),
        ("key", &|i| i.kvs[1].key = i.kvs[0].key.clone()),
        ("member", &|i| {
            let m = MemberAddress {
                id: 1,
                context: None,
            };
            i.members = vec![m.clone(), m]
        }),
        ("lease", &|i| {
            i.leases = vec![
                LeaseRecord { id: 7, ttl_s: 5 },
                LeaseRecord { id: 7, ttl_s: 5 },
            ]
        }),
        ("unheld lease", &|i| i.kvs[0].lease = 9),
    ];
    for (what, tweak) in cases {
        let image = forged(tweak);
        assert!(!verify_snapshot(&image), "a duplicate {what} passes verify");
        let err = StateMachine::restore(&image, sm.applied()).expect_err("refused");
        assert!(err.to_string().contains("inconsistent"), "{what}: {err}");
    }
    assert!(verify_snapshot(&forged(&|_| {})));
}
