//! Damage other than a torn tail is refused with `Corrupt`, naming the file and the bad record's offset; a
//! damaged last record is a torn tail and is cut off.

use std::path::PathBuf;

use super::support::*;
use crate::rng::SplitMix64;
use crate::{FaultyFs, FileSystem, Options, StorageError, wal};

/// A storage with entries 1..=30, one per sync, spread over several small segments; returns its segments.
fn several_segments(fs: &FaultyFs) -> Vec<PathBuf> {
    let (mut s, _) = open(fs, small_segments()).expect("open");
    s.set_hard_state(&hs(1, Some(1), 0)).expect("hs");
    for i in 1..=30 {
        s.append(&entries(i..=i, 1)).expect("append");
        s.sync().expect("sync");
    }
    let segments: Vec<PathBuf> = fs
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert!(segments.len() >= 4, "{segments:?}");
    segments
}

fn record_offsets(fs: &FaultyFs, path: &std::path::Path) -> Vec<u64> {
    let bytes = fs.read(path).expect("read");
    let scan = wal::scan(&bytes);
    assert!(scan.bad.is_none());
    scan.records.iter().map(|r| r.offset).collect()
}

fn expect_corrupt(fs: &FaultyFs, file: &std::path::Path, offset: u64) -> String {
    match open(fs, small_segments()) {
        Err(err @ StorageError::Corrupt { .. }) => {
            let StorageError::Corrupt {
                file: f, offset: o, ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!((f.as_path(), *o), (file, offset), "{err}");
            let shown = err.to_string();
            assert!(shown.contains(&file.display().to_string()), "{shown}");
            assert!(shown.contains(&format!("offset {offset}")), "{shown}");
            shown
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok((_, rec)) => panic!(
            "expected Corrupt, opened with {} entries",
            rec.entries.len()
        ),
    }
}

#[test]
fn flip_in_a_segment_that_is_not_the_last_is_refused() {
    // Flip the length, the CRC, the type and a payload byte of a record in the middle of an early segment.
    for field_offset in [0u64, 5, 8, 12] {
        let fs = FaultyFs::new(1);
        let segments = several_segments(&fs);
        let victim = &segments[1];
        let offsets = record_offsets(&fs, victim);
        let record = offsets[offsets.len() / 2];
        fs.flip_byte(victim, record + field_offset, 0x40)
            .expect("flip");
        let shown = expect_corrupt(&fs, victim, record);
        assert!(shown.contains("not the last"), "{shown}");
    }
}

#[test]
fn flip_in_a_record_followed_by_valid_records_is_refused() {
    let fs = FaultyFs::new(2);
    let segments = several_segments(&fs);
    let last = segments.last().expect("segments");
    let offsets = record_offsets(&fs, last);
    assert!(offsets.len() >= 3, "{offsets:?}");
    let record = offsets[offsets.len() - 2];
    fs.flip_byte(last, record + 20, 0x01).expect("flip");
    let shown = expect_corrupt(&fs, last, record);
    assert!(shown.contains("followed by valid records"), "{shown}");
}

#[test]
fn flip_in_the_last_record_is_a_torn_tail() {
    let fs = FaultyFs::new(3);
    let segments = several_segments(&fs);
    let last = segments.last().expect("segments");
    let record = *record_offsets(&fs, last).last().expect("records");
    fs.flip_byte(last, record + 20, 0x01).expect("flip");
    let (s, rec) = open(&fs, small_segments()).expect("a torn tail opens");
    assert_eq!(rec.entries, entries(1..=29, 1));
    assert_eq!(s.last_index(), 29);
    assert_eq!(
        fs.read(last).expect("read").len() as u64,
        record,
        "truncated"
    );
    drop(s);
    let (_, again) = open(&fs, small_segments()).expect("reopen");
    assert_eq!(again, rec);
}

#[test]
fn a_bad_snapshot_file_is_refused() {
    let fs = FaultyFs::new(4);
    several_segments(&fs);
    let (mut s, _) = open(&fs, small_segments()).expect("open");
    s.save_snapshot(&snapshot(20, 1)).expect("snapshot");
    drop(s);
    let snap = fs
        .files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .expect("snapshot file");
    let len = fs.read(&snap).expect("read").len() as u64;
    fs.flip_byte(&snap, len - 3, 0x08).expect("flip");
    let shown = expect_corrupt(&fs, &snap, 8);
    assert!(shown.contains("checksum"), "{shown}");
}

#[test]
fn a_gap_in_the_log_is_refused() {
    let fs = FaultyFs::new(5);
    let wal_dir = dir().join("wal");
    fs.create_dir_all(&wal_dir).expect("mkdir");
    let path = wal_dir.join(wal::segment_name(1, 1));
    let mut buf = Vec::new();
    wal::put_header(&mut buf, 1);
    let mut gap_at = 0;
    for i in [1, 2, 4, 5] {
        if i == 4 {
            gap_at = buf.len() as u64;
        }
        let e = entry(i, 1);
        wal::put_record(&mut buf, wal::ENTRY, |out| {
            crate::codec::encode_entry(&e, out)
        });
    }
    let mut f = fs.create(&path).expect("create");
    f.write_all(&buf).expect("write");
    let shown = expect_corrupt(&fs, &path, gap_at);
    assert!(shown.contains("gap"), "{shown}");
}

/// Random garbage after a valid prefix of the last segment never panics: it opens (torn tail) or is refused.
#[test]
fn garbage_tails_never_panic() {
    let mut rng = SplitMix64::new(99);
    let mut torn = 0;
    for round in 0..200 {
        let fs = FaultyFs::new(round);
        let (mut s, _) = open(&fs, Options::default()).expect("open");
        s.append(&entries(1..=4, 1)).expect("append");
        s.sync().expect("sync");
        drop(s);
        let segment = fs.files().into_iter().next().expect("segment");
        let len = rng.below(64) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Append the garbage as a new, synced write through a fresh handle on a copy of the file.
        let mut bytes = fs.read(&segment).expect("read");
        bytes.extend_from_slice(&garbage);
        let mut f = fs.create(&segment).expect("recreate");
        f.write_all(&bytes).expect("write");
        f.sync_data().expect("sync");
        match open(&fs, Options::default()) {
            Ok((_, rec)) => {
                assert_eq!(rec.entries, entries(1..=4, 1));
                torn += 1;
            }
            Err(StorageError::Corrupt { .. }) => {}
            Err(other) => panic!("round {round}: {other}"),
        }
    }
    assert!(
        torn > 150,
        "garbage is almost always a torn tail ({torn}/200)"
    );
}
