//! End-to-end failover against the compose cluster (`make e2e`): docker-compose.yml plus docker/e2e.compose.yml
//! under a project of its own, with a bounded writer and a bounded reader running through both proxies the
//! whole time. In order: a follower killed and restarted, the leader killed (several times, the write gap
//! measured), the leader paused and unpaused, the leader cut off the network and reconnected, a proxy killed,
//! the traces checked at the project's own OTLP receiver; at the end every acknowledged write is read back from
//! every node.
//!
//! Needs the images of `make images` and a Docker engine. Skipped, saying so, unless `E2E_COMPOSE` names the
//! compose command (`docker compose` or `docker-compose`); `make e2e` sets it.

use reinado_client::harness::{free_port, poll_until};
use reinado_client::{Client, ClientOptions};
use reinado_proto::v1::Consistency;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The writer stops after this many writes, the reader after this many reads, whatever happens.
const MAX_WRITES: u64 = 9_000;
const MAX_READS: u64 = 20_000;
/// Pause between two writes (and two reads): the gap measurement's resolution, and what keeps the acknowledged
/// writes within one Range at the end.
const PACE: Duration = Duration::from_millis(20);
const LEADER_KILLS: usize = 5;
const WAIT: Duration = Duration::from_secs(60);
const PREFIX: &str = "e2e/";

/// The compose project: commands against it, and `down` when dropped.
struct Compose {
    tool: Vec<String>,
    project: String,
    root: PathBuf,
    env: Vec<(String, String)>,
}

impl Compose {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tool[0]);
        cmd.args(&self.tool[1..])
            .args(["-p", &self.project])
            .args(["-f", "docker-compose.yml", "-f", "docker/e2e.compose.yml"])
            .args(args)
            .current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run {:?} {args:?}: {e}", self.tool))
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The container id of a service (`-a`: compose v2 lists only running containers without it).
    fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-a", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// `reinado --output json ARGS` in a one-off client container on the cluster's network.
    fn reinado(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = vec![
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "client",
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        let out = self.output(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "reinado {args:?}: {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Compose may print its own lines first; the answer is the last line.
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line).map_err(|e| format!("reinado {args:?}: {e}: {stdout}"))
    }

    /// Member `id` as it sees itself, asking until a status names it.
    fn member(&self, id: u64) -> Value {
        for _ in 0..10 {
            if let Some(m) = self.members().remove(&id) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no status names member {id}");
    }

    /// Every member as it sees itself (`reinado status`), by id.
    fn members(&self) -> BTreeMap<u64, Value> {
        match self.reinado(&["status"]) {
            Ok(status) => status["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| (m["id"].as_u64().unwrap_or(0), m.clone()))
                .collect(),
            Err(e) => {
                eprintln!("e2e: status: {e}");
                BTreeMap::new()
            }
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // Never panics: a panic while unwinding would abort before `down`.
        if std::thread::panicking()
            && let Ok(logs) = self
                .command(&["logs", "--no-color", "--tail", "60"])
                .output()
        {
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self
            .command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .output();
    }
}

fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"));
    eprintln!("e2e: docker {} -> {}", args.join(" "), out.status);
    out
}

fn docker_ok(args: &[&str]) {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the writer and reader saw.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Acknowledged writes: (number, when).
    acks: Mutex<Vec<(u64, Instant)>>,
    write_failures: Mutex<Vec<String>>,
    reads: AtomicU64,
    read_failures: AtomicU64,
    /// Linearizable reads that missed an acknowledged write.
    stale_reads: Mutex<Vec<String>>,
}

impl Load {
    fn acked(&self) -> Vec<(u64, Instant)> {
        self.acks.lock().unwrap().clone()
    }

    /// The longest time without an acknowledgement since the last one before `t`: the outage a fault at `t`
    /// caused (the writer otherwise acknowledges one write every PACE or so).
    fn largest_gap_since(&self, t: Instant) -> Duration {
        let acked = self.acked();
        let from = acked.iter().rposition(|(_, at)| *at <= t).unwrap_or(0);
        acked[from..]
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default()
    }

    /// Waits for `n` writes acknowledged after `t`.
    async fn acks_after(&self, t: Instant, n: usize, what: &str) {
        let done = poll_until(WAIT, Duration::from_millis(20), async || {
            let after = self.acked().iter().filter(|(_, at)| *at > t).count();
            if after >= n { Ok(()) } else { Err(after) }
        })
        .await;
        if let Err(after) = done {
            let failures = self.write_failures.lock().unwrap();
            let last: Vec<_> = failures.iter().rev().take(3).collect();
            panic!("{what}: only {after} writes acknowledged in {WAIT:?} (failures: {last:?})");
        }
    }

    async fn reads_continue(&self, what: &str) {
        let start = self.reads.load(Ordering::Relaxed);
        poll_until(WAIT, Duration::from_millis(50), async || {
            if self.reads.load(Ordering::Relaxed) >= start + 10 {
                Ok(())
            } else {
                Err(())
            }
        })
        .await
        .unwrap_or_else(|()| panic!("{what}: reads stopped"));
    }
}

fn key(i: u64) -> String {
    format!("{PREFIX}{i:06}")
}

async fn writer(client: Client, load: Arc<Load>) {
    for i in 0..MAX_WRITES {
        if load.stop.load(Ordering::Relaxed) {
            break;
        }
        match client
            .put(key(i).as_bytes(), i.to_string().as_bytes())
            .await
        {
            Ok(_) => load.acks.lock().unwrap().push((i, Instant::now())),
            Err(e) => load
                .write_failures
                .lock()
                .unwrap()
                .push(format!("{}: {e}", key(i))),
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Reads the latest acknowledged write, linearizably: it must be there.
async fn reader(client: Client, load: Arc<Load>) {
    for _ in 0..MAX_READS {
        if load.stop.load(Ordering::Relaxed) {
            break;
        }
        let latest = load.acks.lock().unwrap().last().map(|(i, _)| *i);
        if let Some(i) = latest {
            match client
                .get(key(i).as_bytes(), Consistency::Linearizable)
                .await
            {
                Ok(r) => {
                    load.reads.fetch_add(1, Ordering::Relaxed);
                    let value = r.kv.map(|kv| kv.value).unwrap_or_default();
                    if value != i.to_string().as_bytes() {
                        load.stale_reads.lock().unwrap().push(format!(
                            "{} read {:?}",
                            key(i),
                            String::from_utf8_lossy(&value)
                        ));
                    }
                }
                Err(_) => {
                    load.read_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// The leader the proxies report, once there is one that is not `not`.
async fn leader(client: &Client, not: u64) -> u64 {
    poll_until(WAIT, Duration::from_millis(20), async || {
        match client.status().await {
            Ok(s) if s.leader_id != 0 && s.leader_id != not => Ok(s.leader_id),
            _ => Err(()),
        }
    })
    .await
    .unwrap_or_else(|()| panic!("no leader other than {not}"))
}

/// Waits until `id` is a serving follower that has applied at least `applied`; returns its status.
async fn rejoined(compose: &Compose, id: u64, applied: u64, what: &str) -> Value {
    poll_until(WAIT, Duration::from_millis(500), async || {
        let members = compose.members();
        if let Some(m) = members.get(&id)
            && m["role"] == "follower"
            && m["health"] == "serving"
            && m["applied"].as_u64().unwrap_or(0) >= applied
        {
            return Ok(m.clone());
        }
        Err(members)
    })
    .await
    .unwrap_or_else(|members| {
        panic!("{what}: node {id} did not rejoin as a serving follower: {members:?}")
    })
}

fn leader_commit(compose: &Compose) -> u64 {
    compose
        .members()
        .values()
        .filter_map(|m| m["commit"].as_u64())
        .max()
        .unwrap_or(0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_in_containers() {
    let Ok(tool) = std::env::var("E2E_COMPOSE") else {
        eprintln!("e2e: skipped: set E2E_COMPOSE to the compose command (make e2e does)");
        return;
    };
    assert!(
        !tool.trim().is_empty(),
        "E2E_COMPOSE is empty: neither `docker compose` nor `docker-compose` is installed"
    );
    let started = Instant::now();
    let (port1, port2) = (free_port(), free_port());
    let compose = Compose {
        tool: tool.split_whitespace().map(String::from).collect(),
        project: format!("reinadoe2e{}", std::process::id()),
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        env: vec![
            ("PROXY1_PORT".into(), port1.to_string()),
            ("PROXY2_PORT".into(), port2.to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "http://otlp-sink:4317".into(),
            ),
            // A leader is killed a few seconds after its election: its spans must be out by then.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            ("RUST_LOG".into(), "info".into()),
        ],
    };
    compose.run(&[
        "up",
        "-d",
        "--no-build",
        "otlp-sink",
        "node1",
        "node2",
        "node3",
        "proxy1",
        "proxy2",
    ]);
    let proxies = vec![format!("127.0.0.1:{port1}"), format!("127.0.0.1:{port2}")];
    let client = Client::new(proxies.clone(), ClientOptions::default()).unwrap();
    let first = leader(&client, 0).await;
    eprintln!(
        "e2e: cluster up, leader {first}, after {:?}",
        started.elapsed()
    );

    let load = Arc::new(Load::default());
    let writing = tokio::spawn(writer(client.clone(), load.clone()));
    let reading = tokio::spawn(reader(client.clone(), load.clone()));
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
    let net = compose.network();
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
    docker_ok(&["network", "disconnect", &net, &node(old)]);
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
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        &format!("node{old}"),
        &net,
        &node(old),
    ]);
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
