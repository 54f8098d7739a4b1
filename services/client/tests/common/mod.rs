//! What the compose-cluster tests share (`e2e.rs`, `failover_bench.rs`): the compose project, docker, a
//! bounded writer and reader through the proxies, and waits on the cluster's status.
#![allow(dead_code)] // each test crate uses its own part

use reinado_client::Client;
use reinado_client::harness::{free_port, poll_until};
use reinado_proto::v1::Consistency;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The writer stops after this many writes, the reader after this many reads, whatever happens.
pub const MAX_WRITES: u64 = 9_000;
pub const MAX_READS: u64 = 20_000;
pub const WAIT: Duration = Duration::from_secs(60);
pub const PREFIX: &str = "e2e/";

/// The compose project: commands against it, and `down` when dropped.
/// The compose command from `E2E_COMPOSE` (`make e2e` and `make failover-bench` set it), or `None`, saying
/// that `what` is skipped.
pub fn compose_tool(what: &str) -> Option<String> {
    let Ok(tool) = std::env::var("E2E_COMPOSE") else {
        eprintln!("{what}: skipped: set E2E_COMPOSE to the compose command (make e2e does)");
        return None;
    };
    assert!(
        !tool.trim().is_empty(),
        "E2E_COMPOSE is empty: neither `docker compose` nor `docker-compose` is installed"
    );
    Some(tool)
}

/// Starts the OTLP sink, the three nodes and both proxies under a compose project of its own (`name` and this
/// process's id), with `env` on top of the defaults; returns it and the proxies' addresses on the host.
pub fn up(tool: &str, name: &str, env: &[(&str, &str)]) -> (Compose, Vec<String>) {
    let (port1, port2) = (free_port(), free_port());
    let mut vars: Vec<(String, String)> = vec![
        ("PROXY1_PORT".into(), port1.to_string()),
        ("PROXY2_PORT".into(), port2.to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://otlp-sink:4317".into(),
        ),
        ("RUST_LOG".into(), "info".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let compose = Compose {
        tool: tool.split_whitespace().map(String::from).collect(),
        project: format!("{name}{}", std::process::id()),
        root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        env: vars,
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
    (compose, proxies)
}

pub struct Compose {
    pub tool: Vec<String>,
    pub project: String,
    pub root: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Compose {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tool[0]);
        cmd.args(&self.tool[1..])
            .args(["-p", &self.project])
            .args(["-f", "docker-compose.yml", "-f", "docker/e2e.compose.yml"])
            .args(args)
            .current_dir(&self.root)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run {:?} {args:?}: {e}", self.tool))
    }

    pub fn run(&self, args: &[&str]) -> String {
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
    pub fn container(&self, service: &str) -> String {
        let id = self.run(&["ps", "-a", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// Cuts a node's container off the project's network.
    pub fn disconnect(&self, container: &str) {
        docker_ok(&["network", "disconnect", &self.network(), container]);
    }

    /// Puts node `id` (container `container`) back on the project's network under its service name.
    pub fn reconnect(&self, id: u64, container: &str) {
        let alias = format!("node{id}");
        docker_ok(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.network(),
            container,
        ]);
    }

    /// `reinado --output json ARGS` in a one-off client container on the cluster's network.
    pub fn reinado(&self, args: &[&str]) -> Result<Value, String> {
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
    pub fn member(&self, id: u64) -> Value {
        for _ in 0..10 {
            if let Some(m) = self.members().remove(&id) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no status names member {id}");
    }

    /// Every member as it sees itself (`reinado status`), by id.
    pub fn members(&self) -> BTreeMap<u64, Value> {
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

pub fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"));
    eprintln!("e2e: docker {} -> {}", args.join(" "), out.status);
    out
}

pub fn docker_ok(args: &[&str]) {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the writer and reader saw.
#[derive(Default)]
pub struct Load {
    pub stop: AtomicBool,
    /// Acknowledged writes: (number, when).
    pub acks: Mutex<Vec<(u64, Instant)>>,
    pub write_failures: Mutex<Vec<String>>,
    pub reads: AtomicU64,
    pub read_failures: AtomicU64,
    /// Linearizable reads that missed an acknowledged write.
    pub stale_reads: Mutex<Vec<String>>,
}

impl Load {
    pub fn acked(&self) -> Vec<(u64, Instant)> {
        self.acks.lock().unwrap().clone()
    }

    /// The longest time without an acknowledgement since the last one before `t`: the outage a fault at `t`
    /// caused (the writer otherwise acknowledges one write every `pace` or so).
    pub fn largest_gap_since(&self, t: Instant) -> Duration {
        self.largest_gap_from(t).0
    }

    /// [`Load::largest_gap_since`], and when that gap began (the acknowledgement before it; `t` if none).
    pub fn largest_gap_from(&self, t: Instant) -> (Duration, Instant) {
        let acked = self.acked();
        let from = acked.iter().rposition(|(_, at)| *at <= t).unwrap_or(0);
        acked
            .get(from..)
            .unwrap_or_default()
            .windows(2)
            .map(|w| (w[1].1 - w[0].1, w[0].1))
            .max_by_key(|(gap, _)| *gap)
            .unwrap_or((Duration::ZERO, t))
    }

    /// Waits for `n` writes acknowledged after `t`.
    pub async fn acks_after(&self, t: Instant, n: usize, what: &str) {
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

    pub async fn reads_continue(&self, what: &str) {
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

pub fn key(i: u64) -> String {
    format!("{PREFIX}{i:06}")
}

/// Writes one key every `pace`, through `client`, until stopped or after `max` writes.
pub async fn writer(client: Client, load: Arc<Load>, pace: Duration, max: u64) {
    for i in 0..max {
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
        tokio::time::sleep(pace).await;
    }
}

/// Reads the latest acknowledged write every `pace`, linearizably: it must be there.
pub async fn reader(client: Client, load: Arc<Load>, pace: Duration) {
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
        tokio::time::sleep(pace).await;
    }
}

/// The leader the proxies report, once there is one that is not `not`.
pub async fn leader(client: &Client, not: u64) -> u64 {
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
pub async fn rejoined(compose: &Compose, id: u64, applied: u64, what: &str) -> Value {
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

pub fn leader_commit(compose: &Compose) -> u64 {
    compose
        .members()
        .values()
        .filter_map(|m| m["commit"].as_u64())
        .max()
        .unwrap_or(0)
}

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
