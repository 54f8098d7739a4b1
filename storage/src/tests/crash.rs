//! Crash at every cut point: whatever a crash keeps, recovery succeeds and yields a prefix of what was
//! issued that contains everything acknowledged; and the checker is shown to catch a disk that loses
//! acknowledged writes.

use super::support::*;
use crate::{FaultyFs, Options};

/// Seeds per cut point: each draws different torn prefixes and lost renames.
const SEEDS_PER_CUT: u64 = 4;

/// Runs the workload on a fresh `fs` until power is lost after `cut` mutating calls (never, for `None`).
fn run_until_crash(fs: &FaultyFs, cut: Option<u64>) -> History {
    fs.crash_after_mutations(cut);
    let Ok((mut s, rec)) = open(fs, small_segments()) else {
        assert!(fs.is_down(), "open failed without a crash");
        return History::default();
    };
    let mut history = History::starting_from(rec.into());
    if run(&mut s, &workload(), &mut history).is_err() {
        assert!(fs.is_down(), "workload failed without a crash");
    }
    history
}

/// Recovers after a crash, checks the result against `history`, then checks the recovered storage still
/// works: a write acknowledged after recovery survives another crash.
fn recover_and_check(fs: &FaultyFs, history: &History, what: &str) -> usize {
    let (mut s, rec) =
        open(fs, small_segments()).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    let recovered = State::from(rec);
    let kept = history
        .check(&recovered)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(s.hard_state(), recovered.hard_state, "{what}");
    assert_eq!(
        s.last_index(),
        recovered
            .entries
            .last()
            .map_or(s.first_index() - 1, |e| e.index)
    );

    let next = s.last_index() + 1;
    let mut after = History::starting_from(recovered);
    let steps = [
        Step::Append(entries(next..=next + 1, 50)),
        Step::SetHardState(hs(50, Some(2), next)),
        Step::Sync,
    ];
    run(&mut s, &steps, &mut after).unwrap_or_else(|e| panic!("{what}: write after recovery: {e}"));
    drop(s);
    fs.crash();
    let (_, rec) =
        open(fs, small_segments()).unwrap_or_else(|e| panic!("{what}: second recovery: {e}"));
    assert_eq!(
        State::from(rec),
        after.latest(),
        "{what}: write after recovery lost"
    );
    kept
}

#[test]
fn crash_after_every_mutation_recovers_a_prefix_with_everything_acknowledged() {
    let total = {
        let fs = FaultyFs::new(0);
        run_until_crash(&fs, None);
        fs.mutations()
    };
    assert!(total > 50, "the workload makes {total} mutating calls");
    let mut kept_all = 0;
    for cut in 0..=total {
        for seed in 0..SEEDS_PER_CUT {
            let fs = FaultyFs::new(cut * 1000 + seed);
            let history = run_until_crash(&fs, Some(cut));
            fs.crash();
            let what = format!("cut {cut} of {total}, seed {}", cut * 1000 + seed);
            let kept = recover_and_check(&fs, &history, &what);
            if kept == history.issued.len() {
                kept_all += 1;
            }
        }
    }
    eprintln!(
        "{total} cut points x {SEEDS_PER_CUT} seeds; {kept_all} crashes kept every issued change"
    );
    // Sanity: the crashes are not all trivial.
    assert!(kept_all > 0 && kept_all < (total + 1) * SEEDS_PER_CUT);
}

#[test]
fn torn_tail_at_every_byte_is_cut_off() {
    let opts = Options::default();
    let prefix = [
        Step::SetHardState(hs(1, Some(1), 0)),
        Step::Append(entries(1..=3, 1)),
        Step::Sync,
        Step::Append(entries(4..=6, 1)),
        Step::Append(entries(5..=5, 2)),
        Step::SetHardState(hs(2, Some(2), 3)),
    ];
    // The mutation count at which the last sync's write happens: crash right after it, before its fsync.
    let write_at = {
        let fs = FaultyFs::new(0);
        let (mut s, _) = open(&fs, opts).expect("open");
        run(&mut s, &prefix, &mut History::default()).expect("prefix");
        fs.mutations() + 1
    };
    let mut last_kept = 0;
    let mut keep = 0;
    loop {
        let fs = FaultyFs::new(0);
        let (mut s, rec) = open(&fs, opts).expect("open");
        let mut history = History::starting_from(rec.into());
        run(&mut s, &prefix, &mut history).expect("prefix");
        fs.crash_after_mutations(Some(write_at));
        assert!(s.sync().is_err(), "the fsync is cut off");
        drop(s);
        let segment = fs
            .files()
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "wal"));
        let segment = segment.expect("one segment");
        let unsynced = fs.unsynced_len(&segment).expect("segment exists");
        assert!(unsynced > 100, "the batch spans {unsynced} bytes");
        fs.crash_with(&mut |_, _| keep, 0);

        let (_, rec) = open(&fs, opts).unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        let kept = history
            .check(&State::from(rec))
            .unwrap_or_else(|e| panic!("keep {keep} of {unsynced} unsynced bytes: {e}"));
        assert!(kept >= last_kept, "keeping more bytes never recovers less");
        last_kept = kept;
        if keep == unsynced {
            assert_eq!(
                kept,
                history.issued.len(),
                "the whole batch survives when all of it does"
            );
            break;
        }
        keep += 1;
    }
}

/// The crash test has teeth: with a disk that acknowledges fsync without doing it, the checker reports lost
/// acknowledged writes.
#[test]
fn a_disk_that_skips_fsync_is_caught() {
    let fs = FaultyFs::new(7);
    fs.set_ignore_sync(true);
    let history = run_until_crash(&fs, None);
    assert!(history.acked > 0);
    fs.crash_with(&mut |_, _| 0, 0);
    let (_, rec) = open(&fs, small_segments()).expect("an empty disk opens");
    let err = history
        .check(&State::from(rec))
        .expect_err("acknowledged writes were lost and the checker must say so");
    assert!(err.contains("acknowledged"), "{err}");

    // And with random crashes, most seeds catch it too.
    let mut caught = 0;
    for seed in 0..20 {
        let fs = FaultyFs::new(seed);
        fs.set_ignore_sync(true);
        let history = run_until_crash(&fs, None);
        fs.crash();
        match open(&fs, small_segments()) {
            Ok((_, rec)) => caught += usize::from(history.check(&State::from(rec)).is_err()),
            Err(_) => caught += 1,
        }
    }
    assert!(
        caught >= 15,
        "only {caught} of 20 seeds caught the lying disk"
    );
}

/// Recovery's own repairs (torn-tail truncation, removals) can be cut by a second crash: the next recovery
/// must still hold everything acknowledged.
#[test]
fn crash_during_recovery_is_recoverable() {
    let total = {
        let fs = FaultyFs::new(0);
        run_until_crash(&fs, None);
        fs.mutations()
    };
    let mut cut_recoveries = 0;
    for cut in 0..=total {
        let seed = cut * 7919 + 1;
        // How many mutating calls the first recovery makes after this crash.
        let repairs = {
            let fs = FaultyFs::new(seed);
            run_until_crash(&fs, Some(cut));
            fs.crash();
            let before = fs.mutations();
            open(&fs, small_segments()).expect("recovery");
            fs.mutations() - before
        };
        for second_cut in 0..repairs {
            let fs = FaultyFs::new(seed);
            let history = run_until_crash(&fs, Some(cut));
            fs.crash();
            fs.crash_after_mutations(Some(fs.mutations() + second_cut));
            assert!(
                open(&fs, small_segments()).is_err(),
                "power lost during recovery"
            );
            fs.crash();
            let what = format!("cut {cut}, seed {seed}, recovery cut after {second_cut}");
            recover_and_check(&fs, &history, &what);
            cut_recoveries += 1;
        }
    }
    assert!(
        cut_recoveries > total,
        "recoveries were cut {cut_recoveries} times"
    );
}

#[test]
fn storage_can_move_to_its_own_thread() {
    fn is_send<T: Send>() {}
    is_send::<crate::DiskStorage>();
}
