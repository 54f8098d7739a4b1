//! The codec round-trips and never panics on garbage.

use reinado_raft::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

use crate::codec::*;
use crate::rng::SplitMix64;

fn random_bytes(rng: &mut SplitMix64, max_len: u64) -> Vec<u8> {
    let len = rng.below(max_len + 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn random_ids(rng: &mut SplitMix64) -> Vec<u64> {
    (0..rng.below(5)).map(|_| rng.next_u64()).collect()
}

#[test]
fn round_trips() {
    let mut rng = SplitMix64::new(1);
    for _ in 0..500 {
        let entry = Entry {
            term: rng.next_u64(),
            index: rng.next_u64(),
            kind: if rng.one_in(2) {
                EntryKind::Normal
            } else {
                EntryKind::ConfChange
            },
            data: random_bytes(&mut rng, 40),
        };
        let mut buf = Vec::new();
        encode_entry(&entry, &mut buf);
        assert_eq!(buf.len(), ENTRY_HEADER_BYTES + entry.data.len());
        assert_eq!(decode_entry(&buf), Ok(entry));

        let hs = HardState {
            term: rng.next_u64(),
            vote: rng.one_in(2).then(|| rng.next_u64()),
            commit: rng.next_u64(),
        };
        buf.clear();
        encode_hard_state(&hs, &mut buf);
        assert_eq!(buf.len(), HARD_STATE_BYTES);
        assert_eq!(decode_hard_state(&buf), Ok(hs));

        let meta = SnapshotMeta {
            index: rng.next_u64(),
            term: rng.next_u64(),
            conf_state: ConfState {
                voters: random_ids(&mut rng),
                learners: random_ids(&mut rng),
            },
        };
        buf.clear();
        encode_snapshot_meta(&meta, &mut buf);
        assert_eq!(decode_snapshot_meta(&buf), Ok(meta));
    }
}

fn decode_all(bytes: &[u8]) -> usize {
    usize::from(decode_entry(bytes).is_ok())
        + usize::from(decode_hard_state(bytes).is_ok())
        + usize::from(decode_snapshot_meta(bytes).is_ok())
}

#[test]
fn garbage_never_panics() {
    let mut rng = SplitMix64::new(2);
    for _ in 0..20_000 {
        let bytes = random_bytes(&mut rng, 64);
        decode_all(&bytes);
    }
    // Lengths and counts that claim gigabytes must fail without allocating them.
    let mut huge = vec![0u8; 16];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_snapshot_meta(&huge).is_err());
    let mut huge = vec![0u8; 17];
    huge[16] = 1;
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_entry(&huge).is_err());
}

#[test]
fn mutated_encodings_never_panic() {
    let mut rng = SplitMix64::new(3);
    let meta = SnapshotMeta {
        index: 9,
        term: 2,
        conf_state: ConfState::with_voters([1, 2, 3]),
    };
    let mut valid = Vec::new();
    encode_snapshot_meta(&meta, &mut valid);
    let mut entry = Vec::new();
    let e = Entry {
        term: 1,
        index: 2,
        kind: EntryKind::Normal,
        data: b"abc".to_vec(),
    };
    encode_entry(&e, &mut entry);
    for _ in 0..20_000 {
        let mut bytes = if rng.one_in(2) {
            valid.clone()
        } else {
            entry.clone()
        };
        match rng.below(3) {
            0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            1 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            _ => bytes.extend(random_bytes(&mut rng, 8)),
        }
        decode_all(&bytes);
        assert!(decode_all(&bytes[..bytes.len().min(3)]) == 0);
    }
    assert!(decode_hard_state(&[0u8; HARD_STATE_BYTES - 1]).is_err());
    let mut bad_vote = vec![0u8; HARD_STATE_BYTES];
    bad_vote[8] = 2;
    assert!(decode_hard_state(&bad_vote).is_err());
}
