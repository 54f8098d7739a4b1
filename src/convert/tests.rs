//! Round trips (core → proto → bytes → proto → core) and malformed input.

use prost::Message as _;
use reinado_raft as raft;

use super::ConvertError;
use crate::raft::v1 as pb;

/// A position for each `MessageBody` variant. The match is exhaustive, so a variant added to the core fails
/// to compile here until `samples` covers it.
fn variant_index(body: &raft::MessageBody) -> usize {
    use raft::MessageBody as M;
    match body {
        M::Vote { .. } => 0,
        M::VoteResponse { .. } => 1,
        M::Append { .. } => 2,
        M::AppendResponse { .. } => 3,
        M::Heartbeat { .. } => 4,
        M::HeartbeatResponse { .. } => 5,
        M::Snapshot { .. } => 6,
        M::SnapshotResponse { .. } => 7,
        M::TimeoutNow => 8,
        M::ReadIndex { .. } => 9,
        M::ReadIndexResponse { .. } => 10,
    }
}
const VARIANTS: usize = 11;

fn meta() -> raft::SnapshotMeta {
    raft::SnapshotMeta {
        index: 40,
        term: 3,
        conf_state: raft::ConfState {
            voters: vec![1, 2, 3],
            learners: vec![7],
        },
    }
}

/// Every body variant, with non-default values in every field (and both values of each flag somewhere).
fn samples() -> Vec<raft::MessageBody> {
    use raft::MessageBody as M;
    let conf_change = raft::ConfChange {
        kind: raft::ConfChangeKind::AddVoter,
        node_id: 4,
        context: b"10.0.0.4:7000".to_vec(),
    };
    vec![
        M::Vote {
            pre_vote: true,
            last_log_index: 9,
            last_log_term: 2,
            transfer: false,
        },
        M::Vote {
            pre_vote: false,
            last_log_index: 9,
            last_log_term: 2,
            transfer: true,
        },
        M::VoteResponse {
            pre_vote: true,
            reject: false,
            committed: 0,
            committed_term: 0,
        },
        M::VoteResponse {
            pre_vote: false,
            reject: true,
            committed: 7,
            committed_term: 2,
        },
        M::Append {
            prev_log_index: 5,
            prev_log_term: 2,
            entries: vec![
                raft::Entry {
                    term: 2,
                    index: 6,
                    kind: raft::EntryKind::Normal,
                    data: vec![],
                },
                raft::Entry {
                    term: 3,
                    index: 7,
                    kind: raft::EntryKind::Normal,
                    data: b"set x 1".to_vec(),
                },
                raft::Entry {
                    term: 3,
                    index: 8,
                    kind: raft::EntryKind::ConfChange,
                    data: conf_change.encode(),
                },
            ],
            commit: 6,
        },
        M::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            commit: 0,
        },
        M::AppendResponse {
            reject: true,
            index: 8,
            hint_index: 5,
            hint_term: 2,
        },
        M::AppendResponse {
            reject: false,
            index: 8,
            hint_index: 0,
            hint_term: 0,
        },
        M::Heartbeat {
            commit: 7,
            read_round: 12,
        },
        M::HeartbeatResponse { read_round: 12 },
        M::Snapshot {
            meta: meta(),
            offset: 4096,
            data: vec![0xAB; 100],
            done: false,
        },
        M::Snapshot {
            meta: raft::SnapshotMeta::default(),
            offset: 0,
            data: vec![],
            done: true,
        },
        M::SnapshotResponse {
            index: 40,
            next_offset: 4196,
            reject: false,
            done: true,
        },
        M::SnapshotResponse {
            index: 40,
            next_offset: 0,
            reject: true,
            done: false,
        },
        M::TimeoutNow,
        M::ReadIndex {
            ctx: b"reader-1".to_vec(),
        },
        M::ReadIndexResponse {
            ctx: b"reader-1".to_vec(),
            index: Some(7),
        },
        M::ReadIndexResponse {
            ctx: vec![],
            index: Some(0),
        },
        M::ReadIndexResponse {
            ctx: b"reader-2".to_vec(),
            index: None,
        },
    ]
}

fn message(body: raft::MessageBody) -> raft::Message {
    raft::Message {
        from: 1,
        to: 2,
        term: 3,
        body,
    }
}

/// core → proto → bytes → proto → core.
fn round_trip(original: &raft::Message) -> raft::Message {
    let bytes = pb::Message::from(original.clone()).encode_to_vec();
    let decoded = pb::Message::decode(bytes.as_slice()).expect("decodes");
    raft::Message::try_from(decoded).expect("converts back")
}

#[test]
fn samples_cover_every_body_variant() {
    let mut seen = [false; VARIANTS];
    for body in samples() {
        seen[variant_index(&body)] = true;
    }
    assert_eq!(seen, [true; VARIANTS]);
}

#[test]
fn every_message_body_round_trips() {
    for body in samples() {
        let original = message(body);
        assert_eq!(round_trip(&original), original, "{}", original.body.name());
    }
}

#[test]
fn batch_round_trips_in_order() {
    let originals: Vec<raft::Message> = samples().into_iter().map(message).collect();
    let bytes = pb::MessageBatch::from(originals.clone()).encode_to_vec();
    let decoded = pb::MessageBatch::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(Vec::<raft::Message>::try_from(decoded), Ok(originals));
}

#[test]
fn snapshot_message_round_trips_as_chunk() {
    let original = message(raft::MessageBody::Snapshot {
        meta: meta(),
        offset: 8192,
        data: vec![1, 2, 3],
        done: true,
    });
    let chunk = pb::SnapshotChunk::try_from(original.clone()).expect("a snapshot message");
    let decoded = pb::SnapshotChunk::decode(chunk.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(raft::Message::try_from(decoded), Ok(original));
}

#[test]
fn other_messages_are_handed_back_not_chunked() {
    let original = message(raft::MessageBody::TimeoutNow);
    assert_eq!(pb::SnapshotChunk::try_from(original.clone()), Err(original));
}

#[test]
fn state_types_round_trip() {
    for state in [
        raft::HardState {
            term: 5,
            vote: Some(2),
            commit: 9,
        },
        raft::HardState {
            term: 5,
            vote: None,
            commit: 0,
        },
    ] {
        let bytes = pb::HardState::from(state).encode_to_vec();
        let decoded = pb::HardState::decode(bytes.as_slice()).unwrap();
        assert_eq!(raft::HardState::try_from(decoded), Ok(state));
    }
    for kind in [
        raft::ConfChangeKind::AddLearner,
        raft::ConfChangeKind::AddVoter,
        raft::ConfChangeKind::Remove,
    ] {
        let change = raft::ConfChange {
            kind,
            node_id: 9,
            context: b"ctx".to_vec(),
        };
        let bytes = pb::ConfChange::from(change.clone()).encode_to_vec();
        let decoded = pb::ConfChange::decode(bytes.as_slice()).unwrap();
        assert_eq!(raft::ConfChange::try_from(decoded), Ok(change));
    }
    let bytes = pb::SnapshotMeta::from(meta()).encode_to_vec();
    let decoded = pb::SnapshotMeta::decode(bytes.as_slice()).unwrap();
    assert_eq!(raft::SnapshotMeta::try_from(decoded), Ok(meta()));
}

fn pb_message(body: Option<pb::message::Body>) -> pb::Message {
    pb::Message {
        from: 1,
        to: 2,
        term: 3,
        body,
    }
}

fn append_with_kind(kind: i32) -> pb::Message {
    pb_message(Some(pb::message::Body::Append(pb::Append {
        entries: vec![pb::Entry {
            term: 1,
            index: 1,
            kind,
            data: vec![],
        }],
        ..Default::default()
    })))
}

fn snapshot_with(meta: Option<pb::SnapshotMeta>) -> pb::Message {
    pb_message(Some(pb::message::Body::Snapshot(pb::Snapshot {
        meta,
        ..Default::default()
    })))
}

fn meta_with(voters: Vec<u64>, learners: Vec<u64>) -> Option<pb::SnapshotMeta> {
    Some(pb::SnapshotMeta {
        index: 1,
        term: 1,
        conf_state: Some(pb::ConfState { voters, learners }),
    })
}

#[test]
fn malformed_messages_are_errors() {
    let heartbeat = Some(pb::message::Body::Heartbeat(pb::Heartbeat::default()));
    let cases: Vec<(pb::Message, ConvertError)> = vec![
        (
            pb_message(None),
            ConvertError::MissingField {
                field: "Message.body",
            },
        ),
        (
            pb::Message {
                to: 0,
                ..pb_message(heartbeat.clone())
            },
            ConvertError::ZeroNodeId {
                field: "Message.to",
            },
        ),
        (
            pb::Message {
                from: 0,
                ..pb_message(heartbeat)
            },
            ConvertError::ZeroNodeId {
                field: "Message.from",
            },
        ),
        (
            append_with_kind(0),
            ConvertError::InvalidEnum {
                field: "Entry.kind",
                value: 0,
            },
        ),
        (
            append_with_kind(99),
            ConvertError::InvalidEnum {
                field: "Entry.kind",
                value: 99,
            },
        ),
        (
            append_with_kind(-1),
            ConvertError::InvalidEnum {
                field: "Entry.kind",
                value: -1,
            },
        ),
        (
            snapshot_with(None),
            ConvertError::MissingField {
                field: "Snapshot.meta",
            },
        ),
        (
            snapshot_with(Some(pb::SnapshotMeta {
                index: 1,
                term: 1,
                conf_state: None,
            })),
            ConvertError::MissingField {
                field: "SnapshotMeta.conf_state",
            },
        ),
        (
            snapshot_with(meta_with(vec![2, 1], vec![])),
            ConvertError::Unsorted {
                field: "ConfState.voters",
            },
        ),
        (
            snapshot_with(meta_with(vec![1, 1], vec![])),
            ConvertError::Unsorted {
                field: "ConfState.voters",
            },
        ),
        (
            snapshot_with(meta_with(vec![1], vec![0])),
            ConvertError::ZeroNodeId {
                field: "ConfState.learners",
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            raft::Message::try_from(input.clone()),
            Err(expected),
            "{input:?}"
        );
    }
}

#[test]
fn malformed_conf_changes_chunks_and_batches_are_errors() {
    let change = |kind, node_id| pb::ConfChange {
        kind,
        node_id,
        context: vec![],
    };
    assert_eq!(
        raft::ConfChange::try_from(change(0, 1)),
        Err(ConvertError::InvalidEnum {
            field: "ConfChange.kind",
            value: 0
        })
    );
    assert_eq!(
        raft::ConfChange::try_from(change(4, 1)),
        Err(ConvertError::InvalidEnum {
            field: "ConfChange.kind",
            value: 4
        })
    );
    assert_eq!(
        raft::ConfChange::try_from(change(1, 0)),
        Err(ConvertError::ZeroNodeId {
            field: "ConfChange.node_id"
        })
    );
    let chunk = pb::SnapshotChunk {
        from: 1,
        to: 2,
        term: 1,
        snapshot: None,
    };
    assert_eq!(
        raft::Message::try_from(chunk),
        Err(ConvertError::MissingField {
            field: "SnapshotChunk.snapshot"
        })
    );
    let good = pb::Message::from(message(raft::MessageBody::TimeoutNow));
    let batch = pb::MessageBatch {
        messages: vec![good, pb_message(None)],
    };
    assert_eq!(
        Vec::<raft::Message>::try_from(batch),
        Err(ConvertError::MissingField {
            field: "Message.body"
        })
    );
}

#[test]
fn errors_name_the_field() {
    let error = ConvertError::ZeroNodeId {
        field: "Message.to",
    };
    assert_eq!(
        error.to_string(),
        "field `Message.to` is 0, which is not a node id"
    );
}

/// Arbitrary bytes either fail to decode or convert to a result; neither step may panic.
#[test]
fn arbitrary_bytes_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid: Vec<Vec<u8>> = samples()
        .into_iter()
        .map(|body| pb::Message::from(message(body)).encode_to_vec())
        .collect();
    for round in 0..20_000 {
        let mut bytes = valid[round % valid.len()].clone();
        // Flip a few bytes of a valid encoding, so most inputs get past the decoder.
        for _ in 0..=(next() % 4) {
            if bytes.is_empty() {
                break;
            }
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if let Ok(decoded) = pb::Message::decode(bytes.as_slice()) {
            let _ = raft::Message::try_from(decoded);
        }
    }
}
