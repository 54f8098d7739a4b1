//! Injected I/O errors: what [`FaultyFs`] leaves behind after a failed call (Linux's behaviour after a
//! failed fsync included), and that the storage stops at the first failure and never goes on with a hole.

use std::path::PathBuf;

use super::support::*;
use crate::{
    FaultyFs, FileSystem, IoCall, IoFault, Options, StorageBugs, StorageError, WritableFile,
};

fn file(name: &str) -> PathBuf {
    dir().join(name)
}

fn fs_with_dir() -> FaultyFs {
    let fs = FaultyFs::new(11);
    fs.create_dir_all(dir()).expect("mkdir");
    fs
}

#[test]
fn an_armed_error_fails_the_nth_call_once() {
    let fs = fs_with_dir();
    let mut f = fs.create(&file("a")).expect("create");
    fs.fail_call(IoCall::SyncData, 2, IoFault::Eio);
    f.sync_data().expect("first");
    f.sync_data().expect("second");
    let err = f.sync_data().expect_err("the third fails");
    assert_eq!(err.raw_os_error(), Some(5));
    assert!(!fs.has_armed_error());
    f.sync_data().expect("once only");

    fs.fail_call(IoCall::Write, 0, IoFault::NoSpace);
    let err = f.write_all(b"x").expect_err("full");
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(err.raw_os_error(), Some(28));

    fs.fail_call(IoCall::Create, 0, IoFault::Eio);
    fs.create(&file("b")).expect_err("create fails");
    assert!(!fs.files().contains(&file("b")), "nothing was created");

    fs.fail_call(IoCall::Rename, 0, IoFault::Eio);
    fs.rename(&file("a"), &file("c")).expect_err("rename fails");
    assert_eq!(fs.files(), vec![file("a")], "the name is unchanged");

    fs.fail_call(IoCall::SyncDir, 0, IoFault::NoSpace);
    fs.sync_dir(dir()).expect_err("sync_dir fails");
    fs.crash_with(&mut |_, n| n, 0);
    assert!(fs.files().is_empty(), "the creation never became durable");

    fs.fail_call(IoCall::Create, 0, IoFault::Eio);
    fs.crash();
    assert!(!fs.has_armed_error(), "a crash disarms");
}

#[test]
fn a_failed_write_may_leave_a_prefix() {
    let buf: Vec<u8> = (0..64).collect();
    let mut lengths = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let fs = FaultyFs::new(seed);
        fs.create_dir_all(dir()).expect("mkdir");
        let mut f = fs.create(&file("a")).expect("create");
        fs.fail_call(IoCall::Write, 0, IoFault::Eio);
        f.write_all(&buf).expect_err("fails");
        let data = fs.read(&file("a")).expect("read");
        assert!(buf.starts_with(&data), "a prefix: {data:?}");
        lengths.insert(data.len());
    }
    assert!(lengths.len() > 5, "prefixes of many lengths: {lengths:?}");
}

/// A durable file `wal` holding `AAAA` (synced), then `BBBB` whose fsync failed with `fault`.
fn wal_after_a_failed_fsync(fault: IoFault) -> (FaultyFs, PathBuf, Box<dyn WritableFile>) {
    let fs = fs_with_dir();
    let path = file("wal");
    let mut f = fs.create(&path).expect("create");
    fs.sync_dir(dir()).expect("sync_dir");
    f.write_all(b"AAAA").expect("write");
    f.sync_data().expect("sync");
    f.write_all(b"BBBB").expect("write");
    fs.fail_call(IoCall::SyncData, 0, fault);
    f.sync_data().expect_err("the fsync fails");
    (fs, path, f)
}

/// "fsyncgate": the bytes a failed fsync was to write stay visible but are not durable, and a later fsync
/// that succeeds does not write them either: the disk holds a hole of zeros under later data.
#[test]
fn a_failed_fsync_loses_its_bytes_even_after_a_later_fsync() {
    let (fs, path, mut f) = wal_after_a_failed_fsync(IoFault::Eio);
    assert_eq!(fs.read(&path).expect("read"), b"AAAABBBB", "still visible");
    assert_eq!(fs.unsynced_len(&path), Some(4), "not durable");
    f.write_all(b"CCCC").expect("write");
    f.sync_data().expect("a later fsync reports success");
    assert_eq!(fs.unsynced_len(&path), Some(0));
    fs.crash_with(&mut |_, n| n, 0);
    assert_eq!(fs.read(&path).expect("read"), b"AAAA\0\0\0\0CCCC", "a hole");
}

#[test]
fn a_failed_fsync_then_a_crash_keeps_at_most_a_prefix() {
    let (fs, path, _f) = wal_after_a_failed_fsync(IoFault::NoSpace);
    fs.crash_with(&mut |_, _| 0, 0);
    assert_eq!(fs.read(&path).expect("read"), b"AAAA");
}

/// Runs `steps` with an error armed on the `skip`-th next call of kind `call`; returns what it recorded and
/// whether the error fired.
fn run_with_error(
    fs: &FaultyFs,
    opts: Options,
    steps: &[Step],
    (call, skip, fault): (IoCall, u64, IoFault),
) -> (History, bool) {
    let (mut s, rec) = open(fs, opts).expect("open");
    let mut history = History::starting_from(rec.into());
    fs.fail_call(call, skip, fault);
    let result = run(&mut s, steps, &mut history);
    let fired = !fs.has_armed_error();
    match result {
        Err(StorageError::Io { .. }) => {
            assert!(fired, "an I/O error only from the armed call");
            // Nothing is accepted after a failure: the caller must stop.
            assert!(matches!(s.sync(), Err(StorageError::Failed)));
            assert!(matches!(
                s.append(&entries(100..=100, 9)),
                Err(StorageError::Failed)
            ));
        }
        Err(other) => panic!("{call:?} after {skip}: unexpected {other}"),
        Ok(()) => assert!(
            !fired || opts.bugs.retry_failed_sync,
            "a failure went unreported"
        ),
    }
    (history, fired)
}

const CALLS: [IoCall; 5] = [
    IoCall::Write,
    IoCall::SyncData,
    IoCall::SyncDir,
    IoCall::Rename,
    IoCall::Create,
];

/// Every failure of every call the workload makes stops the storage, and what a crash then keeps holds
/// every acknowledged change, with no hole.
#[test]
fn the_first_io_error_stops_the_storage_and_loses_nothing_acknowledged() {
    for call in CALLS {
        let mut fired = 0;
        for skip in 0..40 {
            for (k, fault) in [IoFault::Eio, IoFault::NoSpace].into_iter().enumerate() {
                let seed = skip * 31 + k as u64;
                let fs = FaultyFs::new(seed);
                let armed = (call, skip, fault);
                let (history, hit) = run_with_error(&fs, small_segments(), &workload(), armed);
                fired += usize::from(hit);
                fs.crash();
                let (_, rec) = open(&fs, small_segments())
                    .unwrap_or_else(|e| panic!("{call:?} after {skip}, seed {seed}: {e}"));
                history
                    .check(&State::from(rec))
                    .unwrap_or_else(|e| panic!("{call:?} after {skip}, seed {seed}: {e}"));
            }
        }
        assert!(fired >= 4, "only {fired} errors on {call:?} fired");
    }
}

/// The injected bug has teeth: a storage that retries a failed fsync and goes on loses acknowledged changes
/// (or leaves a hole that recovery must refuse).
#[test]
fn retrying_a_failed_fsync_is_caught() {
    let opts = Options {
        bugs: StorageBugs {
            retry_failed_sync: true,
            ..StorageBugs::default()
        },
        ..small_segments()
    };
    // One entry per sync and no snapshot, so that the batch a failed fsync lost stays in the live log.
    let mut steps = vec![Step::SetHardState(hs(1, Some(1), 0))];
    for i in 1..=20 {
        steps.extend([Step::Append(entries(i..=i, 1)), Step::Sync]);
    }
    let mut caught = 0;
    for skip in 0..10 {
        let fs = FaultyFs::new(skip);
        let armed = (IoCall::SyncData, skip, IoFault::Eio);
        let (history, fired) = run_with_error(&fs, opts, &steps, armed);
        assert!(fired);
        fs.crash_with(&mut |_, _| 0, usize::MAX);
        caught += match open(&fs, opts) {
            Ok((_, rec)) => usize::from(history.check(&State::from(rec)).is_err()),
            Err(StorageError::Corrupt { .. }) => 1,
            Err(other) => panic!("{other}"),
        };
    }
    assert!(
        caught >= 8,
        "only {caught} of 10 runs lost acknowledged data"
    );
}

/// The other injected bug: without checksums, a flipped payload byte is read back as data.
#[test]
fn skipping_record_checksums_reads_a_flipped_byte() {
    let fs = FaultyFs::new(5);
    let (mut s, _) = open(&fs, small_segments()).expect("open");
    s.append(&entries(1..=3, 1)).expect("append");
    s.sync().expect("sync");
    drop(s);
    let wal = fs
        .files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a segment");
    let records = crate::segment_records(&fs.read(&wal).expect("read"));
    let middle = &records[records.len() - 2];
    fs.flip_byte(&wal, middle.end - 1, 0x01).expect("flip");
    assert!(matches!(
        open(&fs, small_segments()),
        Err(StorageError::Corrupt { .. })
    ));
    let opts = Options {
        bugs: StorageBugs {
            skip_record_checksum: true,
            ..StorageBugs::default()
        },
        ..small_segments()
    };
    let (_, rec) = open(&fs, opts).expect("the bug opens it");
    assert_ne!(rec.entries, entries(1..=3, 1), "and reads the flipped byte");
}
