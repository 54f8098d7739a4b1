//! Test support (feature `harness`): real `reinado-node` and `reinado-proxy` processes on loopback, each
//! with its own ports, data dir and log file, which a test can kill (`kill -9`), stop (SIGTERM), pause
//! (SIGSTOP) and restart. Every process is killed when its handle is dropped. [`etcdctl`] runs the real
//! etcdctl against them.

pub mod etcdctl;

pub mod etcd;

use crate::client::{Client, ClientOptions};
use reinado_proto::v1::{Role, StatusResponse};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The lines `child` prints on its (piped) stdout, read by a thread as they come; the channel closes when
/// the child closes its stdout.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("the child's stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// Runs `probe` every `every` until it succeeds, and returns what it gave; after `timeout`, returns its last
/// error instead (the caller says what did not happen, with it).
pub async fn poll_until<T, E>(
    timeout: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The path of a workspace binary: `CARGO_BIN_EXE_<name>` when the test belongs to its package, else the
/// target directory the test executable runs from (built with `cargo build` if missing).
pub fn binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("CARGO_BIN_EXE_{name}")) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let package = if name == "reinado" {
            "reinado-client"
        } else {
            name
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", name, "-p", package])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// One process: how to start it, and the running child.
#[derive(Debug)]
pub struct Process {
    /// A short name for messages and the log file.
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// A process to start with `env` (and nothing of the test's own `REINADO_*` or `OTEL_*` variables).
    pub fn new(
        name: &str,
        program: PathBuf,
        env: BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        Process {
            name: name.to_string(),
            program,
            args: Vec::new(),
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Sets or replaces an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_string(), value.to_string());
    }

    /// Starts the process (appending to its log).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log file");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("REINADO_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&self.env);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.name)),
        );
    }

    /// True if the process runs (it may have exited by itself).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// The process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit (then kills). Returns the exit code, if any.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGSTOP (a frozen process, like `docker pause`).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A node process and its addresses.
#[derive(Debug)]
pub struct LocalNode {
    /// Its id.
    pub id: u64,
    /// Where clients reach it.
    pub client_addr: String,
    /// Where peers reach it.
    pub peer_addr: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The process.
    pub process: Process,
}

/// A proxy process and its address.
#[derive(Debug)]
pub struct LocalProxy {
    /// Where clients reach it.
    pub addr: String,
    /// The process.
    pub process: Process,
}

/// A cluster of local processes in a temporary directory.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, LocalNode>,
    /// The proxies.
    pub proxies: Vec<LocalProxy>,
    /// Logs and data live here.
    pub dir: tempfile::TempDir,
    extra_env: BTreeMap<String, String>,
}

impl LocalCluster {
    /// Starts `n` bootstrapped nodes with `extra` environment on top of the defaults.
    pub fn start(n: u64, extra: &[(&str, &str)]) -> LocalCluster {
        let dir = tempfile::Builder::new()
            .prefix("reinado-test-")
            .tempdir()
            .expect("a temporary directory");
        let mut cluster = LocalCluster {
            nodes: BTreeMap::new(),
            proxies: Vec::new(),
            dir,
            extra_env: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let ports: Vec<(u64, u16, u16)> =
            (1..=n).map(|id| (id, free_port(), free_port())).collect();
        let peers: Vec<String> = ports
            .iter()
            .map(|(id, _, peer)| format!("{id}=127.0.0.1:{peer}"))
            .collect();
        let peers = peers.join(",");
        for (id, client, peer) in ports {
            let node = cluster.node_process(id, client, peer, &[("REINADO_PEERS", &peers)]);
            cluster.nodes.insert(id, node);
        }
        for node in cluster.nodes.values_mut() {
            node.process.start();
        }
        cluster
    }

    fn node_process(&self, id: u64, client: u16, peer: u16, env: &[(&str, &str)]) -> LocalNode {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let client_addr = format!("127.0.0.1:{client}");
        let peer_addr = format!("127.0.0.1:{peer}");
        let mut vars: BTreeMap<String, String> = [
            ("REINADO_NODE_ID", id.to_string()),
            ("REINADO_CLIENT_ADDR", client_addr.clone()),
            ("REINADO_PEER_ADDR", peer_addr.clone()),
            ("REINADO_DATA_DIR", data_dir.display().to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.extend(self.extra_env.clone());
        for (k, v) in env {
            vars.insert(k.to_string(), v.to_string());
        }
        let process = Process::new(
            &format!("node{id}"),
            binary("reinado-node"),
            vars,
            self.dir.path(),
        );
        LocalNode {
            id,
            client_addr,
            peer_addr,
            data_dir,
            process,
        }
    }

    /// Starts a new node that joins through `through` (a member's or proxy's client address).
    pub fn add_joining_node(&mut self, id: u64, through: &str) -> &mut LocalNode {
        let node = self.node_process(id, free_port(), free_port(), &[("REINADO_JOIN", through)]);
        self.nodes.insert(id, node);
        let node = self.nodes.get_mut(&id).expect("just inserted");
        node.process.start();
        node
    }

    /// Starts a proxy in front of every node (plus `extra` environment).
    pub fn add_proxy(&mut self, extra: &[(&str, &str)]) -> &mut LocalProxy {
        let addr = format!("127.0.0.1:{}", free_port());
        let nodes: Vec<&str> = self
            .nodes
            .values()
            .map(|n| n.client_addr.as_str())
            .collect();
        let mut vars: BTreeMap<String, String> = [
            ("REINADO_LISTEN", addr.clone()),
            ("REINADO_NODES", nodes.join(",")),
            ("RUST_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let name = format!("proxy{}", self.proxies.len() + 1);
        let mut process = Process::new(&name, binary("reinado-proxy"), vars, self.dir.path());
        process.start();
        self.proxies.push(LocalProxy { addr, process });
        self.proxies.last_mut().expect("just pushed")
    }

    /// A node by id.
    pub fn node(&mut self, id: u64) -> &mut LocalNode {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// The client addresses of every node.
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.client_addr.clone()).collect()
    }

    /// A client of every node (no proxy).
    pub fn client(&self) -> Client {
        Client::new(self.node_addrs(), ClientOptions::default()).expect("valid endpoints")
    }

    /// A client of the proxies only.
    pub fn proxy_client(&self) -> Client {
        let addrs = self.proxies.iter().map(|p| p.addr.clone()).collect();
        Client::new(addrs, ClientOptions::default()).expect("valid endpoints")
    }

    /// The status of every running node that answers.
    pub async fn statuses(&mut self) -> BTreeMap<u64, StatusResponse> {
        let client = self.client();
        let mut out = BTreeMap::new();
        let running: Vec<(u64, String)> = self
            .nodes
            .iter_mut()
            .filter_map(|(id, n)| n.process.is_running().then(|| (*id, n.client_addr.clone())))
            .collect();
        for (id, addr) in running {
            if let Ok(s) = client.status_of(&addr).await {
                out.insert(id, s);
            }
        }
        out
    }

    /// Waits for a leader and for a follower that knows the leader's client address (it can forward to it);
    /// returns (leader, follower).
    pub async fn wait_follower(&mut self, timeout: Duration) -> (u64, u64) {
        let leader = self.wait_leader(timeout).await;
        let follower = *self
            .nodes
            .keys()
            .find(|&&id| id != leader)
            .expect("a cluster of more than one node");
        self.wait_until("the follower knows the leader's address", timeout, |st| {
            !st[&follower].leader_addr.is_empty()
        })
        .await;
        (leader, follower)
    }

    /// Waits until the running nodes agree on one leader that says it leads and serves; returns its id.
    pub async fn wait_leader(&mut self, timeout: Duration) -> u64 {
        let found = poll_until(timeout, Duration::from_millis(50), async || {
            let st = self.statuses().await;
            let leaders: Vec<u64> = st
                .values()
                .filter(|s| s.role == Role::Leader as i32 && s.serving)
                .map(|s| s.id)
                .collect();
            if let [leader] = leaders[..] {
                let term = st[&leader].term;
                let agreed = st
                    .values()
                    .filter(|s| s.role != Role::None as i32)
                    .all(|s| s.leader_id == leader && s.term == term);
                if agreed {
                    return Ok(leader);
                }
            }
            Err(st)
        })
        .await;
        found.unwrap_or_else(|st| {
            panic!(
                "no agreed leader within {timeout:?}: {st:#?}\n{}",
                self.logs()
            )
        })
    }

    /// Waits until `check` holds for the statuses, or panics after `timeout` with the statuses and logs.
    pub async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&BTreeMap<u64, StatusResponse>) -> bool,
    ) -> BTreeMap<u64, StatusResponse> {
        let found = poll_until(timeout, Duration::from_millis(50), async || {
            let st = self.statuses().await;
            if check(&st) { Ok(st) } else { Err(st) }
        })
        .await;
        found
            .unwrap_or_else(|st| panic!("{what}: not within {timeout:?}: {st:#?}\n{}", self.logs()))
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let procs = self
            .nodes
            .values()
            .map(|n| &n.process)
            .chain(self.proxies.iter().map(|p| &p.process));
        for p in procs {
            let log = p.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- {} (last {} lines)\n{}\n",
                p.name,
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }
}
