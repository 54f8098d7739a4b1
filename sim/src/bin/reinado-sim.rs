//! `reinado-sim`: runs the deterministic simulator over a range of seeds, or replays one with a trace.

use reinado_sim::{Profile, Report, SimConfig, run};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

struct Args {
    seed: Option<u64>,
    seeds: u64,
    seed_start: u64,
    verbose: bool,
    threads: usize,
    bug: Option<String>,
    profile: Profile,
    expect_violation: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: None,
        seeds: 1000,
        seed_start: 1,
        verbose: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bug: None,
        profile: Profile::Swarm,
        expect_violation: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: '{v}' is not a whole number"))
        };
        match flag.as_str() {
            "--seed" => args.seed = Some(value("--seed")?),
            "--seeds" => args.seeds = value("--seeds")?,
            "--seed-start" => args.seed_start = value("--seed-start")?,
            "--threads" => args.threads = value("--threads")?.max(1) as usize,
            "--verbose" => args.verbose = true,
            "--expect-violation" => args.expect_violation = true,
            "--profile" => {
                args.profile = match it.next().as_deref() {
                    Some("swarm") => Profile::Swarm,
                    Some("leader-churn") => Profile::LeaderChurn,
                    Some("lost-disks") => Profile::LostDisks,
                    Some("restarts") => Profile::Restarts,
                    _ => {
                        return Err(
                            "--profile takes swarm, leader-churn, restarts or lost-disks".into(),
                        );
                    }
                }
            }
            "--bug" => args.bug = Some(it.next().ok_or("--bug needs a name")?),
            "-h" | "--help" => {
                println!(
                    "usage: reinado-sim [--seeds N] [--seed-start S] [--threads T] | --seed S [--verbose]\n\
                     \x20      [--profile swarm|leader-churn|restarts|lost-disks] [--bug {}] [--expect-violation]\n\
                     \x20      (--bug switches on a known bug; --expect-violation stops at the first violation and\n\
                     \x20      succeeds only if there was one: proof that the checkers catch the bug on a known bug to see the checkers catch it)",
                    BUGS.join("|")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}' (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reinado-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(bug) = &args.bug
        && !BUGS.contains(&bug.as_str())
    {
        eprintln!(
            "reinado-sim: unknown bug '{bug}': one of {}",
            BUGS.join(", ")
        );
        return ExitCode::from(2);
    }
    if let Some(seed) = args.seed {
        let report = run(config(seed, &args));
        print_violation(&report);
        let reports = [report];
        print_summary(&reports, None);
        return verdict(&reports);
    }
    let started = Instant::now();
    let reports = run_range(&args);
    print_summary(&reports, Some(started.elapsed().as_secs_f64()));
    if args.expect_violation {
        return expect_violation(&reports, &args);
    }
    verdict(&reports)
}

fn run_range(args: &Args) -> Vec<Report> {
    let next = AtomicU64::new(args.seed_start);
    let stop = AtomicBool::new(false);
    let end = args.seed_start + args.seeds;
    let mut reports: Vec<Report> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end || stop.load(Ordering::Relaxed) {
                            return mine;
                        }
                        let report = run(config(seed, args));
                        print_violation(&report);
                        if args.expect_violation && report.violation.is_some() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        mine.push(report);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("simulation thread"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}

fn print_violation(report: &Report) {
    if let Some(v) = &report.violation {
        let seed = report.seed;
        eprintln!("seed {seed}: {v}\n  replay: make sim SEED={seed} VERBOSE=1");
    }
}

/// The known bugs `--bug` can switch on.
const BUGS: [&str; 12] = [
    "vote-without-log-check",
    "commit-previous-term",
    "read-without-read-index",
    "reuse-read-context",
    "ack-before-fsync",
    "accept-wiped-member",
    "evict-pending-result",
    "torn-txn",
    "retry-failed-fsync",
    "skip-record-checksum",
    "expire-without-extension",
    "lock-waits-for-predecessor",
];

fn config(seed: u64, args: &Args) -> SimConfig {
    let mut cfg = SimConfig {
        verbose: args.verbose,
        profile: args.profile,
        ..SimConfig::new(seed)
    };
    match args.bug.as_deref() {
        Some("vote-without-log-check") => cfg.bugs.vote_without_log_check = true,
        Some("commit-previous-term") => cfg.bugs.commit_previous_term = true,
        Some("read-without-read-index") => cfg.read_without_read_index = true,
        Some("reuse-read-context") => cfg.replica_bugs.reuse_read_context = true,
        Some("ack-before-fsync") => cfg.replica_bugs.ack_before_fsync = true,
        Some("accept-wiped-member") => cfg.replica_bugs.accept_wiped_member = true,
        Some("evict-pending-result") => cfg.replica_bugs.evict_pending_result = true,
        Some("torn-txn") => cfg.replica_bugs.torn_txn = true,
        Some("retry-failed-fsync") => cfg.storage_bugs.retry_failed_sync = true,
        Some("skip-record-checksum") => cfg.storage_bugs.skip_record_checksum = true,
        Some("expire-without-extension") => cfg.replica_bugs.expire_without_extension = true,
        Some("lock-waits-for-predecessor") => cfg.lock_bugs.predecessor_only = true,
        _ => {}
    }
    cfg
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_summary(reports: &[Report], elapsed: Option<f64>) {
    let mut elections: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.stats.election_ticks.iter().copied())
        .collect();
    let mut recovery: Vec<u64> = reports
        .iter()
        .filter_map(|r| r.stats.recovery_ticks)
        .collect();
    elections.sort_unstable();
    recovery.sort_unstable();
    let mut faults = std::collections::BTreeMap::new();
    for r in reports {
        for (k, v) in &r.stats.faults {
            *faults.entry(*k).or_insert(0u64) += v;
        }
    }
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let failed = reports.iter().filter(|r| r.violation.is_some()).count();
    println!("seeds: {} run, {failed} with violations", reports.len());
    if let Some(secs) = elapsed {
        println!(
            "speed: {:.1} seeds/s ({secs:.1} s)",
            reports.len() as f64 / secs
        );
    }
    println!(
        "client ops: {} acknowledged, {} unknown outcome; entries committed: {}; messages delivered: {}",
        sum(|r| r.stats.ops_ok),
        sum(|r| r.stats.ops_unknown),
        sum(|r| r.stats.committed),
        sum(|r| r.stats.messages)
    );
    println!("faults injected: {faults:?}");
    println!(
        "election after leader loss (ticks): median {}, p99 {}, max {} over {} elections",
        percentile(&elections, 0.5),
        percentile(&elections, 0.99),
        elections.last().copied().unwrap_or(0),
        elections.len()
    );
    println!(
        "recovery after healing (ticks): median {}, p99 {}, max {}",
        percentile(&recovery, 0.5),
        percentile(&recovery, 0.99),
        recovery.last().copied().unwrap_or(0)
    );
    let margin = reports
        .iter()
        .filter_map(|r| r.stats.lease_min_margin_ms)
        .min();
    println!(
        "lease expiries checked: {}; least time past the TTL on the renewing node's clock: {}; lock turns \
         checked: {}",
        sum(|r| r.stats.lease_expiries),
        margin.map_or("none".to_string(), |m| format!("{m} ms")),
        sum(|r| r.stats.lock_grants)
    );
}

fn expect_violation(reports: &[Report], args: &Args) -> ExitCode {
    let bug = args.bug.as_deref().unwrap_or("none");
    match reports.iter().find(|r| r.violation.is_some()) {
        Some(r) => {
            println!(
                "bug {bug}: caught at seed {} (after {} seeds)",
                r.seed,
                r.seed - args.seed_start + 1
            );
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "bug {bug}: NOT caught within {} seeds: the checkers missed it",
                reports.len()
            );
            ExitCode::FAILURE
        }
    }
}

fn verdict(reports: &[Report]) -> ExitCode {
    match reports.iter().find(|r| r.violation.is_some()) {
        Some(r) => {
            eprintln!(
                "FAILED: first violation at seed {}; replay: make sim SEED={} VERBOSE=1",
                r.seed, r.seed
            );
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
