//! The node's configuration, read from `REINADO_*` environment variables with `envy`.
//!
//! [`VARIABLES`] is the one list of variables, defaults and meanings: `reinado-node --help` prints it, the
//! README's table is checked against it by a test, and [`Config::from_env`] refuses any `REINADO_*` variable
//! not in it, so a typo stops the node at start instead of being ignored.

use crate::state::{Limit, Limits};
pub use reinado_client::envconfig::{ConfigError, Variable};
use reinado_client::envconfig::{bad, check_host_port, default_of, parse_listen, positive, var};
use reinado_raft::NodeId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every `REINADO_*` variable the node reads.
pub const VARIABLES: &[Variable] = &[
    var(
        "REINADO_NODE_ID",
        "1",
        "This node's id: a positive integer, unique in the cluster; or `ordinal`: the hostname's trailing `-N` plus one (a StatefulSet's pod reinado-node-0 is 1), the hostname read from HOSTNAME or the kernel.",
    ),
    var(
        "REINADO_CLUSTER_ID",
        "reinado",
        "The cluster's name. Peers of another cluster are refused, and a data dir written for another cluster or node id is refused.",
    ),
    var(
        "REINADO_CLIENT_ADDR",
        "127.0.0.1:7070",
        "Where to listen for clients and proxies (Kv, Cluster, Fault, health).",
    ),
    var(
        "REINADO_PEER_ADDR",
        "127.0.0.1:7071",
        "Where to listen for Raft traffic from the other nodes. Never expose it to clients.",
    ),
    var(
        "REINADO_ADVERTISE_CLIENT_ADDR",
        "",
        "The client address others should use (default: REINADO_CLIENT_ADDR). Required when listening on 0.0.0.0.",
    ),
    var(
        "REINADO_ADVERTISE_PEER_ADDR",
        "",
        "The peer address others should use (default: REINADO_PEER_ADDR). Required when listening on 0.0.0.0.",
    ),
    var(
        "REINADO_PEERS",
        "",
        "The bootstrap members, `id=host:port,...` (peer addresses), the same on every initial member. Default: this node alone.",
    ),
    var(
        "REINADO_JOIN",
        "",
        "Client address of a member or proxy to join through, for a node added to a running cluster. With REINADO_PEERS too, only a node REINADO_PEERS does not list joins.",
    ),
    var(
        "REINADO_DATA_DIR",
        "./reinado-data",
        "Where the write-ahead log and snapshots live.",
    ),
    var(
        "REINADO_HEARTBEAT_INTERVAL_MS",
        "50",
        "A leader's heartbeat period; also the Raft tick.",
    ),
    var(
        "REINADO_ELECTION_TIMEOUT_MS",
        "250",
        "A follower that hears no leader for this long (randomized up to twice as long) starts an election. A multiple of the heartbeat interval, at least twice it.",
    ),
    var(
        "REINADO_SNAPSHOT_ENTRIES",
        "10000",
        "Take a snapshot and compact the log every this many applied entries.",
    ),
    var(
        "REINADO_SNAPSHOT_BYTES",
        "67108864",
        "Take a snapshot sooner, once the commands applied since the last one pass this many bytes and the last snapshot's size (a log of large values stays bounded; a large state is not encoded again for every few writes).",
    ),
    var(
        "REINADO_MAX_SNAPSHOT_BYTES",
        "0",
        "The largest snapshot this node assembles from a leader's chunks; a chunk beyond it is refused. 0: eight times REINADO_QUOTA_BYTES, at least 4 GiB (an image holds some 20 bytes per key besides the key and value, plus sessions and leases).",
    ),
    var(
        "REINADO_MAX_UNCOMMITTED_BYTES",
        "134217728",
        "The most bytes of writes a leader holds that are not committed yet; beyond them a write is refused, retryable (UNAVAILABLE), until the followers catch up.",
    ),
    var(
        "REINADO_SNAPSHOT_CATCHUP_ENTRIES",
        "5000",
        "A compaction keeps up to this many entries below the snapshot, so that a follower a little behind is sent entries, not the whole snapshot. 0: none.",
    ),
    var(
        "REINADO_SNAPSHOT_CATCHUP_BYTES",
        "67108864",
        "The most bytes of those kept entries (at most 1 GiB).",
    ),
    var("REINADO_MAX_KEY_BYTES", "4096", "The longest key accepted."),
    var(
        "REINADO_MAX_VALUE_BYTES",
        "1048576",
        "The longest value accepted.",
    ),
    var(
        "REINADO_MAX_REQUEST_BYTES",
        "2097152",
        "The largest gRPC request accepted.",
    ),
    var(
        "REINADO_MAX_TXN_OPS",
        "128",
        "The most comparisons, and the most operations per branch, in one transaction.",
    ),
    var(
        "REINADO_RANGE_LIMIT",
        "10000",
        "The most keys one Range returns.",
    ),
    var(
        "REINADO_QUOTA_BYTES",
        "1073741824",
        "The most bytes of keys and values stored (1 to 2^40). Writes beyond it fail with RESOURCE_EXHAUSTED; reads and deletes still work. A proposal, agreed through the log: the leader's value wins; set it the same on every member.",
    ),
    var(
        "REINADO_SESSION_TTL_MS",
        "600000",
        "A client's session (what makes retried writes apply once) is forgotten after this long idle (at most 30 days). A proposal, agreed through the log: the leader's value wins; set it the same on every member.",
    ),
    var(
        "REINADO_MAX_SESSIONS",
        "100000",
        "The most client sessions kept (at most 10,000,000). A proposal, agreed through the log: the leader's value wins; set it the same on every member.",
    ),
    var(
        "REINADO_MAX_LEASES",
        "100000",
        "The most leases held at once (at most 10,000,000); a grant beyond it is refused. A proposal, agreed through the log: the leader's value wins.",
    ),
    var(
        "REINADO_MAX_KEYS_PER_LEASE",
        "10000",
        "The most keys attached to one lease (at most 10,000,000); a put beyond it is refused. A proposal, agreed through the log: the leader's value wins.",
    ),
    var(
        "REINADO_WATCH_HISTORY_BYTES",
        "67108864",
        "Bytes of recent changes kept for watches that start in the past (at most 16 GiB). A proposal, agreed through the log: the leader's value wins; set it the same on every member.",
    ),
    var(
        "REINADO_REQUEST_TIMEOUT_MS",
        "5000",
        "The longest a request waits for commit, apply or a read index.",
    ),
    var(
        "REINADO_MAX_CONCURRENT_REQUESTS",
        "1024",
        "Requests served at once per client connection; more wait.",
    ),
    var(
        "REINADO_SHUTDOWN_TIMEOUT_MS",
        "3000",
        "On SIGTERM, how long a leader waits for a peer to take over leadership.",
    ),
    var(
        "REINADO_FAULT_INJECTION",
        "false",
        "Serve the Fault API (step down, isolate, crash), for demonstrations.",
    ),
];

/// The raw variables, as `envy` reads them (`REINADO_` prefix stripped, lower case).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct Raw {
    node_id: String,
    cluster_id: String,
    client_addr: String,
    peer_addr: String,
    advertise_client_addr: String,
    advertise_peer_addr: String,
    peers: String,
    join: String,
    data_dir: PathBuf,
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
    snapshot_entries: u64,
    snapshot_bytes: u64,
    max_snapshot_bytes: u64,
    max_uncommitted_bytes: u64,
    snapshot_catchup_entries: u64,
    snapshot_catchup_bytes: u64,
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_request_bytes: usize,
    max_txn_ops: usize,
    range_limit: usize,
    quota_bytes: u64,
    session_ttl_ms: u64,
    max_sessions: usize,
    watch_history_bytes: usize,
    max_leases: usize,
    max_keys_per_lease: usize,
    request_timeout_ms: u64,
    max_concurrent_requests: usize,
    shutdown_timeout_ms: u64,
    fault_injection: bool,
}

impl Default for Raw {
    fn default() -> Self {
        let d = |name: &str| default_of(VARIABLES, name);
        let num = |name: &str| d(name).parse::<u64>().expect("numeric default");
        Raw {
            node_id: d("REINADO_NODE_ID"),
            cluster_id: d("REINADO_CLUSTER_ID"),
            client_addr: d("REINADO_CLIENT_ADDR"),
            peer_addr: d("REINADO_PEER_ADDR"),
            advertise_client_addr: String::new(),
            advertise_peer_addr: String::new(),
            peers: String::new(),
            join: String::new(),
            data_dir: d("REINADO_DATA_DIR").into(),
            heartbeat_interval_ms: num("REINADO_HEARTBEAT_INTERVAL_MS"),
            election_timeout_ms: num("REINADO_ELECTION_TIMEOUT_MS"),
            snapshot_entries: num("REINADO_SNAPSHOT_ENTRIES"),
            snapshot_bytes: num("REINADO_SNAPSHOT_BYTES"),
            max_snapshot_bytes: num("REINADO_MAX_SNAPSHOT_BYTES"),
            max_uncommitted_bytes: num("REINADO_MAX_UNCOMMITTED_BYTES"),
            snapshot_catchup_entries: num("REINADO_SNAPSHOT_CATCHUP_ENTRIES"),
            snapshot_catchup_bytes: num("REINADO_SNAPSHOT_CATCHUP_BYTES"),
            max_key_bytes: num("REINADO_MAX_KEY_BYTES") as usize,
            max_value_bytes: num("REINADO_MAX_VALUE_BYTES") as usize,
            max_request_bytes: num("REINADO_MAX_REQUEST_BYTES") as usize,
            max_txn_ops: num("REINADO_MAX_TXN_OPS") as usize,
            range_limit: num("REINADO_RANGE_LIMIT") as usize,
            quota_bytes: num("REINADO_QUOTA_BYTES"),
            session_ttl_ms: num("REINADO_SESSION_TTL_MS"),
            max_sessions: num("REINADO_MAX_SESSIONS") as usize,
            watch_history_bytes: num("REINADO_WATCH_HISTORY_BYTES") as usize,
            max_leases: num("REINADO_MAX_LEASES") as usize,
            max_keys_per_lease: num("REINADO_MAX_KEYS_PER_LEASE") as usize,
            request_timeout_ms: num("REINADO_REQUEST_TIMEOUT_MS"),
            max_concurrent_requests: num("REINADO_MAX_CONCURRENT_REQUESTS") as usize,
            shutdown_timeout_ms: num("REINADO_SHUTDOWN_TIMEOUT_MS"),
            fault_injection: false,
        }
    }
}

/// Limits on what clients may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// The longest key.
    pub max_key_bytes: usize,
    /// The longest value.
    pub max_value_bytes: usize,
    /// The largest gRPC request.
    pub max_request_bytes: usize,
    /// The most comparisons or operations per branch in a transaction.
    pub max_txn_ops: usize,
    /// The most keys a Range returns.
    pub range_limit: usize,
    /// The longest a request waits.
    pub request_timeout: Duration,
}

/// How the node starts: a fresh member of a new cluster, a node joining a running one, or a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Bootstrap with these members (id → peer address), unless the data dir already holds state.
    Bootstrap(BTreeMap<NodeId, String>),
    /// Ask the member or proxy at this client address to add this node, unless the data dir holds state.
    Join(String),
}

/// The node's validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub node_id: NodeId,
    /// The cluster's name.
    pub cluster_id: String,
    /// Where to listen for clients.
    pub client_listen: SocketAddr,
    /// Where to listen for peers.
    pub peer_listen: SocketAddr,
    /// The client address others use.
    pub advertise_client_addr: String,
    /// The peer address others use.
    pub advertise_peer_addr: String,
    /// How to start on an empty data dir.
    pub start: Start,
    /// Where storage lives.
    pub data_dir: PathBuf,
    /// The Raft tick, which is also the heartbeat period.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Applied entries between snapshots.
    pub snapshot_entries: u64,
    /// Bytes of applied commands between snapshots.
    pub snapshot_bytes: u64,
    /// The largest snapshot assembled from a leader's chunks.
    pub max_snapshot_bytes: u64,
    /// The most bytes of uncommitted entries a leader holds.
    pub max_uncommitted_bytes: u64,
    /// Entries a compaction keeps below the snapshot for followers a little behind.
    pub catch_up_entries: u64,
    /// The most bytes of those.
    pub catch_up_bytes: usize,
    /// What clients may send.
    pub limits: RequestLimits,
    /// The state machine's bounds this node proposes when it leads (the log agrees on the ones applied).
    pub state_limits: crate::state::Limits,
    /// Requests served at once per client connection.
    pub max_concurrent_requests: usize,
    /// How long a leader waits for a successor on shutdown.
    pub shutdown_timeout: Duration,
    /// Serve the Fault API.
    pub fault_injection: bool,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the configuration from `vars` (name, value); anything not starting with `REINADO_` is ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let hostname = vars
            .iter()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v.clone())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .unwrap_or_default();
        let raw: Raw = reinado_client::envconfig::parse(VARIABLES, "reinado-node", vars)?;
        Config::validate(raw, hostname.trim())
    }

    fn validate(raw: Raw, hostname: &str) -> Result<Config, ConfigError> {
        let node_id = node_id(&raw.node_id, hostname)?;
        if raw.cluster_id.trim().is_empty() || raw.cluster_id.contains(char::is_whitespace) {
            return Err(bad("REINADO_CLUSTER_ID", "must be a non-empty word"));
        }
        let client_listen = parse_listen("REINADO_CLIENT_ADDR", &raw.client_addr)?;
        let peer_listen = parse_listen("REINADO_PEER_ADDR", &raw.peer_addr)?;
        let advertise_client_addr = advertise(
            "REINADO_ADVERTISE_CLIENT_ADDR",
            &raw.advertise_client_addr,
            client_listen,
        )?;
        let advertise_peer_addr = advertise(
            "REINADO_ADVERTISE_PEER_ADDR",
            &raw.advertise_peer_addr,
            peer_listen,
        )?;
        let start = match (raw.peers.trim(), raw.join.trim()) {
            ("", "") => Start::Bootstrap(BTreeMap::from([(node_id, advertise_peer_addr.clone())])),
            (peers, join)
                if !join.is_empty()
                    && (peers.is_empty() || !parse_peers(peers)?.contains_key(&node_id)) =>
            {
                check_host_port("REINADO_JOIN", join)?;
                Start::Join(join.to_string())
            }
            (peers, _) => {
                let peers = parse_peers(peers)?;
                match peers.get(&node_id) {
                    Some(addr) if *addr == advertise_peer_addr => {}
                    Some(addr) => {
                        return Err(bad(
                            "REINADO_PEERS",
                            format!(
                                "lists this node ({}) at {addr}, but it advertises {advertise_peer_addr} (REINADO_ADVERTISE_PEER_ADDR / REINADO_PEER_ADDR)",
                                node_id
                            ),
                        ));
                    }
                    None => {
                        return Err(bad(
                            "REINADO_PEERS",
                            format!("does not list this node ({node_id})"),
                        ));
                    }
                }
                Start::Bootstrap(peers)
            }
        };
        let hb = raw.heartbeat_interval_ms;
        if hb == 0 {
            return Err(bad("REINADO_HEARTBEAT_INTERVAL_MS", "must be positive"));
        }
        let et = raw.election_timeout_ms;
        if et < 2 * hb || !et.is_multiple_of(hb) {
            return Err(bad(
                "REINADO_ELECTION_TIMEOUT_MS",
                format!(
                    "must be a multiple of the heartbeat interval ({hb} ms), at least twice it"
                ),
            ));
        }
        positive("REINADO_SNAPSHOT_ENTRIES", raw.snapshot_entries)?;
        positive("REINADO_SNAPSHOT_BYTES", raw.snapshot_bytes)?;
        positive("REINADO_MAX_UNCOMMITTED_BYTES", raw.max_uncommitted_bytes)?;
        for (name, v) in [
            ("REINADO_MAX_KEY_BYTES", raw.max_key_bytes),
            ("REINADO_MAX_VALUE_BYTES", raw.max_value_bytes),
            ("REINADO_MAX_TXN_OPS", raw.max_txn_ops),
            ("REINADO_RANGE_LIMIT", raw.range_limit),
            (
                "REINADO_MAX_CONCURRENT_REQUESTS",
                raw.max_concurrent_requests,
            ),
        ] {
            positive(name, v as u64)?;
        }
        if raw.max_request_bytes < raw.max_key_bytes + raw.max_value_bytes + 1024 {
            return Err(bad(
                "REINADO_MAX_REQUEST_BYTES",
                "must exceed REINADO_MAX_KEY_BYTES + REINADO_MAX_VALUE_BYTES by at least 1024",
            ));
        }
        if raw.max_request_bytes > 64 << 20 {
            return Err(bad("REINADO_MAX_REQUEST_BYTES", "must be at most 64 MiB"));
        }
        positive("REINADO_REQUEST_TIMEOUT_MS", raw.request_timeout_ms)?;
        if raw.snapshot_catchup_bytes > 1 << 30 {
            return Err(bad(
                "REINADO_SNAPSHOT_CATCHUP_BYTES",
                "must be at most 1 GiB",
            ));
        }
        let state_limits = state_limits(&raw)?;
        Ok(Config {
            node_id,
            cluster_id: raw.cluster_id,
            client_listen,
            peer_listen,
            advertise_client_addr,
            advertise_peer_addr,
            start,
            data_dir: raw.data_dir,
            tick: Duration::from_millis(hb),
            election_ticks: (et / hb) as usize,
            snapshot_entries: raw.snapshot_entries,
            snapshot_bytes: raw.snapshot_bytes,
            max_snapshot_bytes: match raw.max_snapshot_bytes {
                0 => raw.quota_bytes.saturating_mul(8).max(4 << 30),
                n => n,
            },
            max_uncommitted_bytes: raw.max_uncommitted_bytes,
            catch_up_entries: raw.snapshot_catchup_entries,
            catch_up_bytes: raw.snapshot_catchup_bytes as usize,
            limits: RequestLimits {
                max_key_bytes: raw.max_key_bytes,
                max_value_bytes: raw.max_value_bytes,
                max_request_bytes: raw.max_request_bytes,
                max_txn_ops: raw.max_txn_ops,
                range_limit: raw.range_limit,
                request_timeout: Duration::from_millis(raw.request_timeout_ms),
            },
            state_limits,
            max_concurrent_requests: raw.max_concurrent_requests,
            shutdown_timeout: Duration::from_millis(raw.shutdown_timeout_ms),
            fault_injection: raw.fault_injection,
        })
    }

    /// The election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks as u32
    }
}

/// The text `reinado-node --help` prints.
pub fn help() -> String {
    let mut out = String::from(
        "reinado-node: one member of a Reinado cluster.\n\n\
         Usage:\n  reinado-node                 run the node, configured from the environment\n  \
         reinado-node health [ADDR] [--ready]\n                               exit 0 if the node at ADDR (default: REINADO_CLIENT_ADDR) serves;\n                               with --ready, only if it also serves clients (knows a leader, caught up)\n  \
         reinado-node check-config    validate the environment and print the configuration\n\n\
         Environment (with defaults):\n",
    );
    out.push_str(&reinado_client::envconfig::help_table(VARIABLES));
    out.push_str(
        "  RUST_LOG = info\n      Log filter (tracing EnvFilter syntax).\n  \
         OTEL_EXPORTER_OTLP_ENDPOINT = (none)\n      Export traces over OTLP/gRPC to this endpoint, e.g. http://jaeger:4317.\n  \
         OTEL_SERVICE_NAME = reinado-node\n      The service name traces carry.\n",
    );
    out
}

/// The state machine limits this node proposes, within the bounds the state machine accepts.
fn state_limits(raw: &Raw) -> Result<Limits, ConfigError> {
    let limits = Limits {
        quota_bytes: raw.quota_bytes,
        session_ttl_ms: raw.session_ttl_ms,
        max_sessions: raw.max_sessions,
        max_results_per_session: Limits::default().max_results_per_session,
        history_bytes: raw.watch_history_bytes,
        max_leases: raw.max_leases,
        max_keys_per_lease: raw.max_keys_per_lease,
    };
    limits.check().map_err(|e| {
        let name = match e.limit {
            Limit::QuotaBytes => "REINADO_QUOTA_BYTES",
            Limit::SessionTtlMs => "REINADO_SESSION_TTL_MS",
            Limit::MaxSessions => "REINADO_MAX_SESSIONS",
            Limit::HistoryBytes => "REINADO_WATCH_HISTORY_BYTES",
            Limit::MaxLeases => "REINADO_MAX_LEASES",
            Limit::MaxKeysPerLease => "REINADO_MAX_KEYS_PER_LEASE",
            Limit::MaxResultsPerSession => {
                unreachable!("the built-in results per session are in bounds")
            }
        };
        bad(name, format!("must be between 1 and {}", e.max))
    })?;
    Ok(limits)
}

fn advertise(name: &str, value: &str, listen: SocketAddr) -> Result<String, ConfigError> {
    let value = value.trim();
    if !value.is_empty() {
        check_host_port(name, value)?;
        return Ok(value.to_string());
    }
    if listen.ip().is_unspecified() {
        return Err(bad(
            name,
            format!("must be set: the node listens on {listen}, which others cannot dial"),
        ));
    }
    Ok(listen.to_string())
}

/// `REINADO_NODE_ID`: a positive integer, or `ordinal` for the trailing `-N` of `hostname` plus one.
fn node_id(value: &str, hostname: &str) -> Result<NodeId, ConfigError> {
    const VAR: &str = "REINADO_NODE_ID";
    if value.trim() == "ordinal" {
        let ordinal = hostname
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .ok_or_else(|| {
                bad(
                    VAR,
                    format!("is `ordinal`, but the hostname `{hostname}` does not end in `-N`"),
                )
            })?;
        return ordinal.checked_add(1).ok_or_else(|| {
            bad(
                VAR,
                format!("the hostname `{hostname}`'s ordinal is too large"),
            )
        });
    }
    match value.trim().parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(bad(
            VAR,
            format!("must be a positive integer or `ordinal`, not `{value}`"),
        )),
    }
}

/// Parses `id=host:port,...`.
pub fn parse_peers(value: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| bad("REINADO_PEERS", format!("`{item}` is not id=host:port")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| bad("REINADO_PEERS", format!("`{id}` is not a positive node id")))?;
        check_host_port("REINADO_PEERS", addr.trim())?;
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(bad("REINADO_PEERS", format!("node {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(bad("REINADO_PEERS", "lists no member"));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests;
