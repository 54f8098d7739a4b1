//! The checkers must be able to fail: with a known bug switched on, the simulator must report a violation
//! within a bounded number of seeds (and with none, the same seeds must pass). The Figure 8 bug
//! (`commit_previous_term`) needs more seeds than a unit test should run; `make sim-bugs` covers it in release.

use reinado_sim::{SimConfig, run};

fn first_violation(
    seeds: std::ops::RangeInclusive<u64>,
    set: impl Fn(&mut SimConfig),
) -> Option<(u64, String)> {
    seeds.into_iter().find_map(|seed| {
        let mut cfg = SimConfig::new(seed);
        set(&mut cfg);
        run(cfg).violation.map(|v| (seed, v))
    })
}

#[test]
fn correct_core_passes_the_seeds_the_bugs_fail() {
    assert_eq!(first_violation(1..=10, |_| {}), None);
}

#[test]
fn granting_votes_without_the_log_check_is_caught() {
    let (seed, v) =
        first_violation(1..=30, |c| c.bugs.vote_without_log_check = true).expect("bug caught");
    assert!(
        v.contains("Leader Completeness") || v.contains("State Machine Safety"),
        "seed {seed}: {v}"
    );
}

#[test]
fn serving_reads_without_read_index_is_caught() {
    let (seed, v) =
        first_violation(1..=10, |c| c.read_without_read_index = true).expect("bug caught");
    assert!(v.contains("Linearizability"), "seed {seed}: {v}");
}

#[test]
fn a_torn_transaction_is_caught() {
    let (seed, v) =
        first_violation(1..=10, |c| c.replica_bugs.torn_txn = true).expect("bug caught");
    assert!(
        v.contains("Linearizability") && v.contains("group"),
        "seed {seed}: {v}"
    );
}

#[test]
fn evicting_a_pending_session_result_is_caught() {
    let (seed, v) = first_violation(1..=60, |c| c.replica_bugs.evict_pending_result = true)
        .expect("bug caught");
    assert!(v.contains("Linearizability"), "seed {seed}: {v}");
}

#[test]
fn retrying_a_failed_fsync_is_caught() {
    let (seed, v) =
        first_violation(1..=10, |c| c.storage_bugs.retry_failed_sync = true).expect("bug caught");
    assert!(v.contains("Disk errors"), "seed {seed}: {v}");
}

#[test]
fn skipping_record_checksums_is_caught() {
    let (seed, v) = first_violation(1..=50, |c| c.storage_bugs.skip_record_checksum = true)
        .expect("bug caught");
    assert!(v.contains("Corruption"), "seed {seed}: {v}");
}

#[test]
fn expiring_leases_without_the_new_leaders_extension_is_caught() {
    let (seed, v) = first_violation(1..=10, |c| c.replica_bugs.expire_without_extension = true)
        .expect("bug caught");
    assert!(v.contains("Lease"), "seed {seed}: {v}");
}

#[test]
fn a_lock_turn_that_waits_only_for_the_predecessor_is_caught() {
    let (seed, v) =
        first_violation(1..=40, |c| c.lock_bugs.predecessor_only = true).expect("bug caught");
    assert!(v.contains("Lock: two holders"), "seed {seed}: {v}");
}
