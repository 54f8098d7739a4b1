//! `make failover-bench`: how long each kind of fault stops writes, on a compose cluster of its own (three
//! nodes, two proxies; `docker-compose.yml` plus `docker/e2e.compose.yml`), with a writer putting one key
//! every 5 ms through both proxies the whole time. For each fault kind, `FAILOVER_TRIALS` trials (default 10):
//! the leader killed (`docker kill`), cut off the network, paused (`docker pause`), and all three nodes killed
//! at once and started again. It prints per kind the median, p90, p99 and max of the gap (the longest time
//! without an acknowledged write from the fault on; for the whole-cluster restart, from the start commands to
//! the first acknowledged write), the terms each trial took, and the elections seen in the quiet seconds
//! before each trial (spurious: no fault caused them).
//!
//! A benchmark, not a test: it asserts nothing but that the cluster recovers. Skipped unless `FAILOVER_BENCH`
//! is set and `E2E_COMPOSE` names the compose command (`make failover-bench` sets both).

mod common;

use common::*;
use reinado_client::harness::poll_until;
use reinado_client::{Client, ClientOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PACE: Duration = Duration::from_millis(5);
/// The writer stops after this many writes whatever happens (some 20 minutes at PACE).
const MAX_BENCH_WRITES: u64 = 250_000;
/// The quiet time before each trial, in which any election is spurious.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillLeader,
    CutLeader,
    PauseLeader,
    RestartAll,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "docker kill the leader",
            Fault::CutLeader => "leader cut off the network",
            Fault::PauseLeader => "leader paused",
            Fault::RestartAll => "all three killed, then started",
        }
    }
}

/// The highest term any member reports.
fn max_term(compose: &Compose) -> u64 {
    compose
        .members()
        .values()
        .filter_map(|m| m["term"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Waits until all three members serve and one leads.
async fn all_serving(compose: &Compose, what: &str) {
    poll_until(WAIT, Duration::from_millis(500), async || {
        let members = compose.members();
        let serving = members
            .values()
            .filter(|m| m["health"] == "serving")
            .count();
        let leaders = members.values().filter(|m| m["role"] == "leader").count();
        if serving == 3 && leaders == 1 {
            Ok(())
        } else {
            Err(members)
        }
    })
    .await
    .unwrap_or_else(|m| panic!("{what}: the cluster did not recover: {m:?}"));
}

/// Seconds since the Unix epoch of a log line's leading RFC 3339 UTC time (`2026-12-07T23:45:01.123456Z`, as
/// the nodes' log lines begin).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let date: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let time: Vec<f64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, d], &[h, min, sec]) = (&date[..], &time[..]) else {
        return None;
    };
    // Days from 1970-01-01 to the civil date (the proleptic Gregorian calendar, years from March).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days as f64 * 86_400.0 + h * 3_600.0 + min * 60.0 + sec)
}

/// When, after `since` (Unix seconds), a node first started campaigning and first won an election, from the
/// nodes' logs (their `campaigning` and `election ended ... outcome="won"` lines), as Unix seconds.
fn election_times(containers: &[String], since: f64) -> (Option<f64>, Option<f64>) {
    let (mut campaign, mut won): (Option<f64>, Option<f64>) = (None, None);
    for text in node_logs(containers, since) {
        for line in text.lines() {
            let Some(at) = log_time(line).filter(|&at| at >= since) else {
                continue;
            };
            let first = |t: Option<f64>| Some(t.map_or(at, |t| t.min(at)));
            if line.contains(": campaigning ") {
                campaign = first(campaign);
            } else if line.contains("election ended") && line.contains("outcome=\"won\"") {
                won = first(won);
            }
        }
    }
    (campaign, won)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One trial's gap in parts: from its start (the last write acknowledged before the fault; for the
/// whole-cluster restart, the start commands) to the first campaign (detection), to the first won election,
/// and from the win to the first acknowledged write after it (the new leader's first commit, the proxy
/// finding it, the client's retry).
#[derive(Clone, Copy, Default)]
struct Parts {
    detect: Option<Duration>,
    elect: Option<Duration>,
    serve: Option<Duration>,
}

fn parts(load: &Load, containers: &[String], from: (Instant, f64)) -> Parts {
    let (campaign, won) = election_times(containers, from.1);
    let secs = |a: f64, b: f64| (b >= a).then(|| Duration::from_secs_f64(b - a));
    let won_at = won.and_then(|w| secs(from.1, w)).map(|d| from.0 + d);
    let serve = won_at.and_then(|w| {
        let acked = load.acked();
        acked.iter().find(|(_, at)| *at > w).map(|(_, at)| *at - w)
    });
    Parts {
        detect: campaign.and_then(|c| secs(from.1, c)),
        elect: campaign.zip(won).and_then(|(c, w)| secs(c, w)),
        serve,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_bench() {
    if std::env::var_os("FAILOVER_BENCH").is_none() {
        eprintln!("failover-bench: skipped: make failover-bench sets FAILOVER_BENCH");
        return;
    }
    let Some(tool) = compose_tool("failover-bench") else {
        return;
    };
    let trials: usize = std::env::var("FAILOVER_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(10);
    let (compose, proxies) = up(&tool, "reinadofb", &[]);
    let client = Client::new(proxies, ClientOptions::default()).unwrap();
    leader(&client, 0).await;
    let load = Arc::new(Load::default());
    let writing = tokio::spawn(writer(client.clone(), load.clone(), PACE, MAX_BENCH_WRITES));
    load.acks_after(Instant::now(), 20, "start").await;
    let containers: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, compose.container(&format!("node{id}"))))
        .collect();
    let node = |id: u64| containers[&id].clone();

    let mut rows = Vec::new();
    for fault in [
        Fault::KillLeader,
        Fault::CutLeader,
        Fault::PauseLeader,
        Fault::RestartAll,
    ] {
        let (mut gaps, mut terms, mut spurious) = (Vec::new(), Vec::new(), 0);
        let mut breakdown = Vec::new();
        for trial in 1..=trials {
            let before_quiet = max_term(&compose);
            tokio::time::sleep(QUIET).await;
            let term = max_term(&compose);
            spurious += term - before_quiet;
            let old = leader(&client, 0).await;
            load.acks_after(Instant::now(), 5, "before the fault").await;
            let t = Instant::now();
            let mut wall = unix_now();
            let from = match fault {
                Fault::KillLeader => {
                    docker_ok(&["kill", &node(old)]);
                    t
                }
                Fault::CutLeader => {
                    compose.disconnect(&node(old));
                    t
                }
                Fault::PauseLeader => {
                    docker_ok(&["pause", &node(old)]);
                    t
                }
                Fault::RestartAll => {
                    docker_ok(&["kill", &node(1), &node(2), &node(3)]);
                    let started = Instant::now();
                    wall = unix_now();
                    // One command for the three, as an operator (or an orchestrator) would start them.
                    docker_ok(&["start", &node(1), &node(2), &node(3)]);
                    started
                }
            };
            load.acks_after(Instant::now(), 10, fault.name()).await;
            // For the parts: the start of the gap (the fault command takes a while to act), in both clocks.
            let (gap, gap_from) = if fault == Fault::RestartAll {
                let acked = load.acked();
                let first = acked.iter().find(|(_, at)| *at > from).map(|(_, at)| *at);
                (first.map_or(Duration::ZERO, |at| at - from), (from, wall))
            } else {
                let (gap, start) = load.largest_gap_from(from);
                let wall = wall + start.saturating_duration_since(t).as_secs_f64()
                    - t.saturating_duration_since(start).as_secs_f64();
                (gap, (start, wall))
            };
            match fault {
                Fault::KillLeader => docker_ok(&["start", &node(old)]),
                Fault::CutLeader => compose.reconnect(old, &node(old)),
                Fault::PauseLeader => docker_ok(&["unpause", &node(old)]),
                Fault::RestartAll => {}
            }
            all_serving(&compose, fault.name()).await;
            let took = max_term(&compose) - term;
            let all: Vec<String> = containers.values().cloned().collect();
            let part = parts(&load, &all, gap_from);
            eprintln!(
                "failover-bench: {} {trial}/{trials}: gap {gap:?} (detect {:?}, elect {:?}, serve {:?}), {took} terms",
                fault.name(),
                part.detect,
                part.elect,
                part.serve
            );
            gaps.push(gap);
            terms.push(took);
            breakdown.push(part);
        }
        rows.push((fault, gaps, terms, spurious, breakdown));
    }
    assert!(
        !writing.is_finished(),
        "the writer stopped early (MAX_BENCH_WRITES reached)"
    );
    load.stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();

    println!(
        "\nfailover-bench: {trials} trials per fault; a writer through both proxies every {PACE:?}; {} writes \
         acknowledged, {} failed",
        load.acked().len(),
        load.write_failures.lock().unwrap().len()
    );
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>13} {:>9}",
        "fault", "median", "p90", "p99", "max", "terms/trial", "spurious"
    );
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut parts_rows = Vec::new();
    for (fault, mut gaps, mut terms, spurious, breakdown) in rows {
        gaps.sort();
        terms.sort();
        let median_of = |pick: fn(&Parts) -> Option<Duration>| {
            let mut v: Vec<Duration> = breakdown.iter().filter_map(pick).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                ms(median(&mut v))
            }
        };
        parts_rows.push(format!(
            "{:<32} {:>9} {:>9} {:>9}",
            fault.name(),
            median_of(|p| p.detect),
            median_of(|p| p.elect),
            median_of(|p| p.serve)
        ));
        println!(
            "{:<32} {:>9} {:>9} {:>9} {:>9} {:>13} {:>9}",
            fault.name(),
            ms(percentile(&gaps, 0.5)),
            ms(percentile(&gaps, 0.9)),
            ms(percentile(&gaps, 0.99)),
            ms(*gaps.last().unwrap()),
            format!("{}-{}", terms[0], terms[terms.len() - 1]),
            spurious
        );
    }
    println!(
        "\nthe gap in parts (medians; from the nodes' logs): from its start to the first campaign, to the first \
         won election, and from it to the first acknowledged write"
    );
    println!(
        "{:<32} {:>9} {:>9} {:>9}",
        "fault", "detect", "elect", "serve"
    );
    for row in parts_rows {
        println!("{row}");
    }
}

/// Each node's log since `since` (Unix seconds).
fn node_logs(containers: &[String], since: f64) -> Vec<String> {
    containers
        .iter()
        .map(|c| {
            let out = docker(&["logs", "--since", &format!("{since:.3}"), c]);
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect()
}

/// Lines of the nodes' logs since `since` (Unix seconds) that contain `what`.
fn log_lines(containers: &[String], since: f64, what: &str) -> usize {
    node_logs(containers, since)
        .iter()
        .map(|text| text.lines().filter(|l| l.contains(what)).count())
        .sum()
}

/// `make soak`: `reinado bench --clients 64` through both proxies for `SOAK_SECS` seconds on a compose cluster
/// of its own, snapshots being taken all along (every `REINADO_SNAPSHOT_ENTRIES` entries); prints the elections
/// and leader changes seen after the first leader, and the snapshots taken. Skipped unless `SOAK_SECS` is set
/// and `E2E_COMPOSE` names the compose command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    let Some(secs) = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
    else {
        eprintln!("soak: skipped: make soak sets SOAK_SECS");
        return;
    };
    let Some(tool) = compose_tool("soak") else {
        return;
    };
    let (compose, proxies) = up(&tool, "reinadosk", &[]);
    let client = Client::new(proxies, ClientOptions::default()).unwrap();
    leader(&client, 0).await;
    all_serving(&compose, "before the soak").await;
    let containers: Vec<String> = (1..=3)
        .map(|id| compose.container(&format!("node{id}")))
        .collect();
    let term = max_term(&compose);
    let since = unix_now();
    // Shared, so that the cluster comes down once, when the test is over.
    let compose = Arc::new(compose);
    let bench = compose.clone();
    let duration = secs.to_string();
    let run = std::thread::spawn(move || {
        bench.reinado(&[
            "bench",
            "--clients",
            "64",
            "--duration",
            &duration,
            "--no-progress",
        ])
    });
    let result = tokio::task::spawn_blocking(move || run.join().expect("bench thread"))
        .await
        .unwrap();
    let elections = max_term(&compose) - term;
    let changes = log_lines(&containers, since, "leader changed");
    let snapshots = log_lines(&containers, since, "snapshot saved");
    let report = result.unwrap_or_else(|e| panic!("soak: the bench failed: {e}"));
    println!(
        "\nsoak: {secs} s of `reinado bench --clients 64` through both proxies: {report}\n\
         soak: terms after the first leader: {elections}; leader changes logged by the nodes: {changes}; \
         snapshots taken: {snapshots}"
    );
}
