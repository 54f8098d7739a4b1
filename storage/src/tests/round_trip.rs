//! Round trips on real files and on `FaultyFs`: what is synced comes back on reopen.

use super::support::*;
use crate::{DiskStorage, FaultyFs, Options};

fn wal_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|d| {
            d.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn append_overwrite_hard_state_reopen_on_real_files() {
    let tmp = TempDir::new("round-trip");
    let (mut s, rec) = DiskStorage::open(tmp.path(), Options::default()).expect("open");
    assert_eq!(State::from(rec), State::default());
    assert_eq!((s.first_index(), s.last_index()), (1, 0));

    s.append(&entries(1..=10, 1)).expect("append");
    s.append(&entries(8..=9, 2)).expect("overwrite a suffix");
    s.set_hard_state(&hs(2, Some(3), 7)).expect("hard state");
    s.sync().expect("sync");
    assert_eq!(s.last_index(), 9);
    drop(s);

    let (s, rec) = DiskStorage::open(tmp.path(), Options::default()).expect("reopen");
    let mut want = entries(1..=7, 1);
    want.extend(entries(8..=9, 2));
    assert_eq!(rec.entries, want);
    assert_eq!(rec.hard_state, hs(2, Some(3), 7));
    assert_eq!(rec.snapshot, None);
    assert_eq!((s.first_index(), s.last_index()), (1, 9));
    assert_eq!(s.hard_state(), hs(2, Some(3), 7));
    assert_eq!(s.term(8), Some(2));
}

#[test]
fn segments_roll_and_snapshot_compacts_on_real_files() {
    let tmp = TempDir::new("roll");
    let opts = small_segments();
    let (mut s, _) = DiskStorage::open(tmp.path(), opts).expect("open");
    for i in 1..=40 {
        s.append(&entries(i..=i, 1)).expect("append");
        s.sync().expect("sync");
    }
    let before = wal_files(tmp.path());
    assert!(before.len() >= 5, "segments rolled: {before:?}");

    s.save_snapshot(&snapshot(30, 1)).expect("snapshot");
    assert_eq!((s.first_index(), s.last_index()), (31, 40));
    let after = wal_files(tmp.path());
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(after.iter().all(|name| before.contains(name)));
    assert!(
        after.first() > before.first(),
        "the oldest segments went away"
    );
    drop(s);

    let (mut s, rec) = DiskStorage::open(tmp.path(), opts).expect("reopen");
    assert_eq!(rec.snapshot, Some(snapshot(30, 1)));
    assert_eq!(rec.entries, entries(31..=40, 1));
    assert_eq!((s.first_index(), s.last_index()), (31, 40));

    // A conflicting snapshot from a leader discards the whole log and every old segment.
    s.save_snapshot(&snapshot(35, 7))
        .expect("conflicting snapshot");
    assert_eq!((s.first_index(), s.last_index()), (36, 35));
    assert_eq!(wal_files(tmp.path()).len(), 1, "only the fresh segment");
    s.append(&entries(36..=37, 7)).expect("append");
    s.sync().expect("sync");
    drop(s);
    let (_, rec) = DiskStorage::open(tmp.path(), opts).expect("reopen");
    assert_eq!(rec.snapshot, Some(snapshot(35, 7)));
    assert_eq!(rec.entries, entries(36..=37, 7));
    let snaps: Vec<_> = std::fs::read_dir(tmp.path().join("snap"))
        .expect("snap dir")
        .collect();
    assert_eq!(snaps.len(), 1, "the older snapshot was deleted");
}

#[test]
fn workload_reopens_to_its_final_state() {
    let fs = FaultyFs::new(1);
    let (mut s, rec) = open(&fs, small_segments()).expect("open");
    let mut history = History::starting_from(rec.into());
    run(&mut s, &workload(), &mut history).expect("workload");
    let want = history.latest();
    assert_eq!(s.first_index(), 27);
    assert_eq!(s.last_index(), 29);
    drop(s);
    fs.crash_with(&mut |_, _| 0, 0); // everything was synced: nothing may be lost
    let (s, rec) = open(&fs, small_segments()).expect("reopen");
    assert_eq!(State::from(rec), want);
    assert_eq!((s.first_index(), s.last_index()), (27, 29));
}

#[test]
fn append_does_not_sync_and_sync_syncs_once() {
    let fs = FaultyFs::new(2);
    let (mut s, _) = open(&fs, Options::default()).expect("open");
    let (data0, dir0) = (fs.data_syncs(), fs.dir_syncs());
    s.append(&entries(1..=3, 1)).expect("append");
    s.set_hard_state(&hs(1, None, 1)).expect("hs");
    assert_eq!(
        (fs.data_syncs(), fs.dir_syncs()),
        (data0, dir0),
        "append syncs nothing"
    );
    s.sync().expect("first sync starts a segment");
    assert_eq!((fs.data_syncs(), fs.dir_syncs()), (data0 + 1, dir0 + 1));
    for i in 4..=10 {
        s.append(&entries(i..=i, 1)).expect("append");
        s.set_hard_state(&hs(1, None, i)).expect("hs");
        s.sync().expect("sync");
    }
    assert_eq!(
        (fs.data_syncs(), fs.dir_syncs()),
        (data0 + 8, dir0 + 1),
        "one fsync per sync"
    );
    s.sync().expect("empty sync");
    assert_eq!(fs.data_syncs(), data0 + 8, "nothing to sync, no fsync");
}

#[test]
fn leftover_temp_snapshot_is_removed() {
    use crate::FileSystem;
    let fs = FaultyFs::new(3);
    let (mut s, _) = open(&fs, Options::default()).expect("open");
    s.append(&entries(1..=3, 1)).expect("append");
    s.sync().expect("sync");
    drop(s);
    let tmp = dir().join("snap/0000000000000003-0000000000000001.snap.tmp");
    let mut f = fs.create(&tmp).expect("create tmp");
    f.write_all(b"half a snapshot").expect("write");
    let (_, rec) = open(&fs, Options::default()).expect("reopen");
    assert_eq!(rec.entries, entries(1..=3, 1));
    assert!(!fs.files().contains(&tmp), "temp file removed");
}
