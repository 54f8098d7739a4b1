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
use std::time::{Duration, Instant};

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
        for trial in 1..=trials {
            let before_quiet = max_term(&compose);
            tokio::time::sleep(QUIET).await;
            let term = max_term(&compose);
            spurious += term - before_quiet;
            let old = leader(&client, 0).await;
            load.acks_after(Instant::now(), 5, "before the fault").await;
            let t = Instant::now();
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
                    for id in 1..=3 {
                        docker_ok(&["kill", &node(id)]);
                    }
                    let started = Instant::now();
                    for id in 1..=3 {
                        docker_ok(&["start", &node(id)]);
                    }
                    started
                }
            };
            load.acks_after(Instant::now(), 10, fault.name()).await;
            let gap = if fault == Fault::RestartAll {
                let acked = load.acked();
                let first = acked.iter().find(|(_, at)| *at > from).map(|(_, at)| *at);
                first.map_or(Duration::ZERO, |at| at - from)
            } else {
                load.largest_gap_since(from)
            };
            match fault {
                Fault::KillLeader => docker_ok(&["start", &node(old)]),
                Fault::CutLeader => compose.reconnect(old, &node(old)),
                Fault::PauseLeader => docker_ok(&["unpause", &node(old)]),
                Fault::RestartAll => {}
            }
            all_serving(&compose, fault.name()).await;
            let took = max_term(&compose) - term;
            eprintln!(
                "failover-bench: {} {trial}/{trials}: gap {gap:?}, {took} terms",
                fault.name()
            );
            gaps.push(gap);
            terms.push(took);
        }
        rows.push((fault, gaps, terms, spurious));
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
    for (fault, mut gaps, mut terms, spurious) in rows {
        gaps.sort();
        terms.sort();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
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
}
