//! What the proxy knows of the cluster: the nodes (seeded from `REINADO_NODES`, completed from the members
//! their status lists), which of them serve, and who leads. A background task asks every node for its
//! status every `REINADO_STATUS_INTERVAL_MS`, and at once when a request saw the leader fail; a redirect
//! names the new leader even sooner.
//!
//! Each node has one long-lived channel (HTTP/2 keepalive), shared by every request routed to it.

use crate::pipeline::PipelineConn;
use reinado_client::channel::{ChannelOptions, lazy_channel};
use reinado_client::client::Traced;
use reinado_client::telemetry::TracePropagation;
use reinado_proto::v1::cluster_client::ClusterClient;
use reinado_proto::v1::kv_client::KvClient;
use reinado_proto::v1::{Role, StatusRequest, StatusResponse};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{info, warn};

/// The largest message the proxy exchanges with a node (a request, or a Range answer of a few MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// One node as the proxy sees it.
#[derive(Clone, Debug)]
pub struct NodeState {
    /// Its client address.
    pub addr: String,
    /// Its id, once its status answered.
    pub id: u64,
    /// The channel to it.
    pub channel: Channel,
    /// Its last status answered.
    pub reachable: bool,
    /// It serves linearizable requests (knows a leader, caught up).
    pub serving: bool,
    /// Its role, from its last status.
    pub role: Role,
    /// Requests routed to it and not answered yet.
    pub outstanding: Arc<AtomicUsize>,
    /// The Kv requests' stream to it.
    pub pipeline: Arc<PipelineConn>,
}

impl NodeState {
    fn new(addr: &str, opts: ChannelOptions) -> Option<NodeState> {
        let channel = lazy_channel(addr, opts)
            .map_err(|e| warn!(%addr, "ignoring node with a bad address: {e}"))
            .ok()?;
        Some(NodeState {
            addr: addr.to_string(),
            id: 0,
            pipeline: Arc::new(PipelineConn::new(channel.clone(), MAX_MESSAGE_BYTES)),
            channel,
            reachable: false,
            serving: false,
            role: Role::Unspecified,
            outstanding: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A Kv client that carries the trace context.
    pub fn kv(&self) -> KvClient<Traced> {
        KvClient::new(InterceptedService::new(
            self.channel.clone(),
            TracePropagation,
        ))
    }

    /// A Cluster client that carries the trace context.
    pub fn cluster(&self) -> ClusterClient<Traced> {
        ClusterClient::new(InterceptedService::new(
            self.channel.clone(),
            TracePropagation,
        ))
    }
}

/// The leader as last learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// Its id.
    pub id: u64,
    /// Its client address.
    pub addr: String,
    /// The term it leads.
    pub term: u64,
}

#[derive(Debug, Default)]
struct Known {
    nodes: BTreeMap<String, NodeState>,
    leader: Option<Leader>,
}

/// The proxy's shared view of the cluster.
#[derive(Debug)]
pub struct Topology {
    known: RwLock<Known>,
    seeds: Vec<String>,
    opts: ChannelOptions,
    /// Asks the poller for a status round now.
    poke: Notify,
    /// Bumped whenever the leader changes.
    leader_changed: watch::Sender<u64>,
    next: AtomicUsize,
}

impl Topology {
    /// A topology seeded with `seeds`.
    pub fn new(seeds: Vec<String>, opts: ChannelOptions) -> Arc<Topology> {
        let nodes = seeds
            .iter()
            .filter_map(|a| NodeState::new(a, opts).map(|n| (a.clone(), n)))
            .collect();
        Arc::new(Topology {
            known: RwLock::new(Known {
                nodes,
                leader: None,
            }),
            seeds,
            opts,
            poke: Notify::new(),
            leader_changed: watch::channel(0).0,
            next: AtomicUsize::new(0),
        })
    }

    /// The leader and its node, if known.
    pub fn leader(&self) -> Option<(Leader, NodeState)> {
        let known = self.known.read().expect("topology lock");
        let leader = known.leader.clone()?;
        let node = known.nodes.get(&leader.addr)?.clone();
        Some((leader, node))
    }

    /// Some node to read from: a serving follower with the fewest requests outstanding (round robin among
    /// equals), else the leader, else any reachable node. `exclude` lists addresses that just failed.
    pub fn reader(&self, exclude: &[String]) -> Option<NodeState> {
        let known = self.known.read().expect("topology lock");
        let leader = known.leader.as_ref().map(|l| l.addr.as_str());
        let candidates: Vec<&NodeState> = known
            .nodes
            .values()
            .filter(|n| n.reachable && !exclude.contains(&n.addr))
            .collect();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pick = |set: Vec<&NodeState>| -> Option<NodeState> {
            let n = set.len();
            (0..n)
                .map(|i| set[(start + i) % n])
                .min_by_key(|s| s.outstanding.load(Ordering::Relaxed))
                .cloned()
        };
        let followers: Vec<&NodeState> = candidates
            .iter()
            .copied()
            .filter(|n| n.serving && Some(n.addr.as_str()) != leader)
            .collect();
        if !followers.is_empty() {
            return pick(followers);
        }
        if let Some(l) = leader
            .and_then(|a| known.nodes.get(a))
            .filter(|n| !exclude.contains(&n.addr))
        {
            return Some(l.clone());
        }
        pick(candidates)
    }

    /// Every node address known.
    pub fn addrs(&self) -> Vec<String> {
        self.known
            .read()
            .expect("topology lock")
            .nodes
            .keys()
            .cloned()
            .collect()
    }

    /// A node asked about redirected to `addr`: it leads now (until the next status round says otherwise).
    pub fn leader_hint(&self, addr: &str) {
        {
            let mut known = self.known.write().expect("topology lock");
            if known.leader.as_ref().is_some_and(|l| l.addr == addr) {
                return;
            }
            if !known.nodes.contains_key(addr)
                && let Some(n) = NodeState::new(addr, self.opts)
            {
                known.nodes.insert(addr.to_string(), n);
            }
            let id = known.nodes.get(addr).map_or(0, |n| n.id);
            let term = known.leader.as_ref().map_or(0, |l| l.term);
            known.leader = Some(Leader {
                id,
                addr: addr.to_string(),
                term,
            });
        }
        self.leader_changed.send_modify(|g| *g += 1);
        self.poke.notify_one();
    }

    /// A request saw the leader fail: forget it and ask every node now.
    pub fn leader_failed(&self, addr: &str) {
        let mut known = self.known.write().expect("topology lock");
        if known.leader.as_ref().is_some_and(|l| l.addr == addr) {
            known.leader = None;
            drop(known);
            self.leader_changed.send_modify(|g| *g += 1);
        }
        self.poke.notify_one();
    }

    /// Waits until the leader changes or `timeout` passes.
    pub async fn wait_leader_change(&self, timeout: Duration) {
        let mut rx = self.leader_changed.subscribe();
        self.poke.notify_one();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// True if a leader is known and was reachable at the last status round.
    pub fn has_leader(&self) -> bool {
        self.leader().is_some_and(|(_, n)| n.reachable)
    }

    /// Polls every node's status every `interval` (or when poked), forever.
    pub async fn run(self: Arc<Self>, interval: Duration, attempt: Duration) {
        loop {
            self.refresh(attempt.min(Duration::from_secs(1))).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.poke.notified() => {}
            }
        }
    }

    /// One status round: asks every node at once, then updates health, roles, members and the leader.
    pub async fn refresh(&self, timeout: Duration) {
        let nodes: Vec<NodeState> = self
            .known
            .read()
            .expect("topology lock")
            .nodes
            .values()
            .cloned()
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for node in nodes {
            tasks.spawn(async move {
                let mut client = node.cluster();
                let status = tokio::time::timeout(timeout, client.status(StatusRequest {})).await;
                let status = match status {
                    Ok(Ok(resp)) => Some(resp.into_inner()),
                    _ => None,
                };
                (node.addr, status)
            });
        }
        let results: Vec<(String, Option<StatusResponse>)> = tasks.join_all().await;
        self.update(results);
    }

    fn update(&self, results: Vec<(String, Option<StatusResponse>)>) {
        let mut known = self.known.write().expect("topology lock");
        let mut best: Option<(u64, u64)> = None; // (term, leader id) claimed by the nodes
        let mut members: Vec<String> = Vec::new();
        for (addr, status) in &results {
            let Some(node) = known.nodes.get_mut(addr) else {
                continue;
            };
            node.reachable = status.is_some();
            let Some(s) = status else {
                node.serving = false;
                continue;
            };
            node.id = s.id;
            node.serving = s.serving;
            node.role = Role::try_from(s.role).unwrap_or(Role::Unspecified);
            if s.leader_id != 0 && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, s.leader_id));
            }
            if node.role == Role::Leader {
                members = s.members.iter().map(|m| m.client_addr.clone()).collect();
            }
        }
        // Members learned from the leader; nodes that left are dropped unless they are seeds.
        if !members.is_empty() {
            for addr in members.iter().filter(|a| !a.is_empty()) {
                if !known.nodes.contains_key(addr)
                    && let Some(n) = NodeState::new(addr, self.opts)
                {
                    info!(%addr, "new member");
                    known.nodes.insert(addr.clone(), n);
                }
            }
            let seeds = &self.seeds;
            known
                .nodes
                .retain(|a, _| members.contains(a) || seeds.contains(a));
        }
        let leader = best.and_then(|(term, id)| {
            let addr = known.nodes.values().find(|n| n.id == id)?.addr.clone();
            Some(Leader { id, addr, term })
        });
        if leader != known.leader && leader.is_some() {
            info!(
                old = ?known.leader.as_ref().map(|l| l.id),
                new = ?leader.as_ref().map(|l| l.id),
                term = leader.as_ref().map(|l| l.term),
                "leader changed"
            );
            known.leader = leader;
            drop(known);
            self.leader_changed.send_modify(|g| *g += 1);
        } else if leader.is_none() && known.leader.is_some() {
            known.leader = None;
            drop(known);
            self.leader_changed.send_modify(|g| *g += 1);
        }
    }
}
