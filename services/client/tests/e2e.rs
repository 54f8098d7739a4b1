//! End-to-end failover against the compose cluster (`make e2e`): docker-compose.yml plus docker/e2e.compose.yml
//! under a project of its own, with a bounded writer and a bounded reader running through both proxies the
//! whole time. In order: a follower killed and restarted, the leader killed (several times, the write gap
//! measured), the leader paused and unpaused, the leader cut off the network and reconnected, a proxy killed,
//! the traces checked at the project's own OTLP receiver; at the end every acknowledged write is read back from
//! every node.
//!
//! Needs the images of `make images` and a Docker engine. Skipped, saying so, unless `E2E_COMPOSE` names the
//! compose command (`docker compose` or `docker-compose`); `make e2e` sets it.

mod common;

use common::*;
use reinado_client::harness::poll_until;
use reinado_client::{Client, ClientOptions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Pause between two writes (and two reads): the gap measurement's resolution, and what keeps the acknowledged
/// writes within one Range at the end.
const PACE: Duration = Duration::from_millis(20);
const LEADER_KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_in_containers() {
    let Some(tool) = compose_tool("e2e") else {
        return;
    };
    let started = Instant::now();
    // A leader is killed a few seconds after its election: its spans must be out by then.
    let (compose, proxies) = up(&tool, "reinadoe2e", &[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let client = Client::new(proxies.clone(), ClientOptions::default()).unwrap();
    let first = leader(&client, 0).await;
    eprintln!(
        "e2e: cluster up, leader {first}, after {:?}",
        started.elapsed()
    );

    let load = Arc::new(Load::default());
    let writing = tokio::spawn(writer(client.clone(), load.clone(), PACE, MAX_WRITES));
    let reading = tokio::spawn(reader(client.clone(), load.clone(), PACE));
    load.acks_after(started, 20, "start").await;
    let containers: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, compose.container(&format!("node{id}"))))
        .collect();
    let node = |id: u64| containers[&id].clone();
    let load_runs = || {
        assert!(
            !writing.is_finished() && !reading.is_finished(),
            "the writer or the reader stopped early (MAX_WRITES or MAX_READS reached?)"
        );
    };

    // 1. A follower killed: writes and reads go on; restarted, it catches up.
    let leader_id = leader(&client, 0).await;
    let follower = (1..=3).find(|id| *id != leader_id).unwrap();
    docker_ok(&["kill", &node(follower)]);
    let t = Instant::now();
    load.acks_after(t, 25, "follower killed").await;
    load.reads_continue("follower killed").await;
    let commit = leader_commit(&compose);
    docker_ok(&["start", &node(follower)]);
    let m = rejoined(&compose, follower, commit, "follower restarted").await;
    eprintln!(
        "e2e: 1. follower {follower} killed and restarted: caught up to {}",
        m["applied"]
    );

    load_runs();
    // 2. The leader killed, several times: a new leader, the write gap measured, the old leader rejoins.
    let mut gaps = Vec::new();
    for round in 1..=LEADER_KILLS {
        let old = leader(&client, 0).await;
        load.acks_after(Instant::now(), 10, "before the kill").await;
        let killed = Instant::now();
        docker_ok(&["kill", &node(old)]);
        let new = leader(&client, old).await;
        let elected = killed.elapsed();
        // `docker kill` itself takes a while: wait for writes after the new leader is known.
        load.acks_after(Instant::now(), 20, "leader killed").await;
        let gap = load.largest_gap_since(killed);
        assert!(
            gap < Duration::from_secs(5),
            "writes stopped for {gap:?} after a leader kill"
        );
        gaps.push(gap);
        let commit = leader_commit(&compose);
        docker_ok(&["start", &node(old)]);
        rejoined(&compose, old, commit, "old leader restarted").await;
        eprintln!(
            "e2e: 2.{round} leader {old} killed: status names {new} leader after {elected:?}, \
             write gap {gap:?}; {old} rejoined as a follower"
        );
    }
    let mut sorted = gaps.clone();
    eprintln!(
        "e2e: write gaps over {LEADER_KILLS} leader kills: {gaps:?}, median {:?}",
        median(&mut sorted)
    );

    load_runs();
    // 3. The leader paused (a zombie that still believes it leads), then unpaused: it steps down.
    let old = leader(&client, 0).await;
    let old_term = compose.member(old)["term"].as_u64().unwrap_or(0);
    let paused = Instant::now();
    docker_ok(&["pause", &node(old)]);
    let new = leader(&client, old).await;
    load.acks_after(Instant::now(), 20, "leader paused").await;
    let commit = leader_commit(&compose);
    docker_ok(&["unpause", &node(old)]);
    let m = rejoined(&compose, old, commit, "paused leader resumed").await;
    assert!(
        m["term"].as_u64().unwrap_or(0) > old_term,
        "the zombie's term did not move on: {m}"
    );
    eprintln!(
        "e2e: 3. leader {old} paused: {new} took over, write gap {:?}; unpaused, {old} follows in term {}",
        load.largest_gap_since(paused),
        m["term"]
    );

    load_runs();
    // 4. The leader cut off the network: the minority cannot serve, the majority does; reconnected, all converge.
    let old = leader(&client, 0).await;
    let serves = || {
        docker(&["exec", &node(old), "/reinado-node", "health", "--ready"])
            .status
            .success()
    };
    assert!(
        serves(),
        "the leader {old} does not serve before the partition"
    );
    let cut = Instant::now();
    compose.disconnect(&node(old));
    let new = leader(&client, old).await;
    load.acks_after(Instant::now(), 20, "leader partitioned")
        .await;
    poll_until(WAIT, Duration::from_millis(250), async || {
        if serves() { Err(()) } else { Ok(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("the cut-off leader {old} still serves"));
    let stepped_down = cut.elapsed();
    let commit = leader_commit(&compose);
    compose.reconnect(old, &node(old));
    rejoined(&compose, old, commit, "partitioned leader reconnected").await;
    eprintln!(
        "e2e: 4. leader {old} cut off: {new} took over, write gap {:?}, {old} stopped serving after \
         {stepped_down:?}; reconnected, it follows",
        load.largest_gap_since(cut)
    );

    load_runs();
    // 5. A proxy killed: the client carries on through the other.
    let proxy1 = compose.container("proxy1");
    docker_ok(&["kill", &proxy1]);
    let t = Instant::now();
    load.acks_after(t, 25, "proxy killed").await;
    load.reads_continue("proxy killed").await;
    docker_ok(&["start", &proxy1]);
    eprintln!("e2e: 5. proxy1 killed: writes and reads went on through proxy2");

    load_runs();
    // The load stops; what it saw.
    load.stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    reading.await.unwrap();
    let acked = load.acked();
    let failures = load.write_failures.lock().unwrap().clone();
    eprintln!(
        "e2e: {} writes acknowledged, {} failed {:?}; {} linearizable reads, {} failed",
        acked.len(),
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        load.reads.load(Ordering::Relaxed),
        load.read_failures.load(Ordering::Relaxed)
    );
    let stale = load.stale_reads.lock().unwrap().clone();
    assert!(
        stale.is_empty(),
        "linearizable reads missed acknowledged writes: {stale:?}"
    );

    // 6. Traces, at the project's own OTLP receiver: elections, leader changes, client → proxy → node.
    compose
        .reinado(&["put", "e2e-trace", "v"])
        .expect("a put from the client container");
    let sink = compose.container("otlp-sink");
    let traces = poll_until(WAIT, Duration::from_secs(1), async || {
        let logs = docker(&["logs", &sink]);
        let spans: Vec<Value> = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let named = |name: &str| spans.iter().filter(|s| s["name"] == name).count();
        let won = spans
            .iter()
            .filter(|s| s["name"] == "raft.election" && s["attributes"]["outcome"] == "won")
            .count();
        let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in &spans {
            services
                .entry(s["trace_id"].as_str().unwrap_or(""))
                .or_default()
                .insert(s["service"].as_str().unwrap_or(""));
        }
        let end_to_end = services
            .values()
            .filter(|s| {
                ["reinado", "reinado-proxy", "reinado-node"]
                    .iter()
                    .all(|n| s.contains(n))
            })
            .count();
        let (elections, changes) = (named("raft.election"), named("raft.leader_change"));
        let seen = format!(
            "{} spans, {elections} raft.election ({won} won), {changes} raft.leader_change, \
             {end_to_end} traces through client, proxy and node",
            spans.len()
        );
        // A leader elected at the start, after each kill, after the pause and after the partition (one of
        // them may be lost with a node killed before its exporter's next batch).
        if won >= LEADER_KILLS + 2 && changes >= LEADER_KILLS && end_to_end > 0 {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("traces missing: {seen}"));
    eprintln!("e2e: 6. traces: {traces}");

    // At the end, every acknowledged write is read back from every node.
    let want: BTreeMap<String, String> = acked
        .iter()
        .map(|(i, _)| (key(*i), i.to_string()))
        .collect();
    for id in 1..=3u64 {
        let addr = format!("node{id}:7070");
        let have = poll_until(WAIT, Duration::from_millis(500), async || {
            let r = compose.reinado(&[
                "--endpoints",
                &addr,
                "range",
                PREFIX,
                "--limit",
                "0",
                "--consistency",
                "serializable",
            ]);
            let have: BTreeMap<String, String> = r
                .as_ref()
                .map(|r| {
                    r["kvs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| {
                            let s = |f: &str| kv[f].as_str().unwrap_or("").to_string();
                            (s("key"), s("value"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let missing = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).count();
            if missing == 0 {
                Ok(have)
            } else {
                Err(format!(
                    "lacks {missing} of {} acknowledged writes ({r:?})",
                    want.len()
                ))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("node {id} {e}"));
        eprintln!(
            "e2e: node {id} holds all {} acknowledged writes ({} keys)",
            want.len(),
            have.len()
        );
    }
    eprintln!("e2e: done in {:?}", started.elapsed());
}
