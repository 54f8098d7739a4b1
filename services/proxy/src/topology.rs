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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// The leader its last status named: (term, leader id, leader's client address if known); None if it
    /// named none or did not answer.
    claim: Option<(u64, u64, String)>,
    /// Its last status request failed: whatever the others say, it cannot be the leader to send to. Unlike
    /// `!reachable`, false for a node not asked yet (one a redirect just named, say).
    failed_poll: bool,
    /// A status request to it is under way (a slow node is not asked twice at once).
    polling: Arc<AtomicBool>,
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
            claim: None,
            failed_poll: false,
            polling: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The channel to it, carrying the trace context on every request.
    pub fn traced(&self) -> Traced {
        InterceptedService::new(self.channel.clone(), TracePropagation)
    }

    /// A Kv client that carries the trace context.
    pub fn kv(&self) -> KvClient<Traced> {
        KvClient::new(self.traced())
    }

    /// A Cluster client that carries the trace context.
    pub fn cluster(&self) -> ClusterClient<Traced> {
        ClusterClient::new(self.traced())
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
            // The node that redirected knows a leader newer than the one known here: at least a term later.
            // Claims of the older term still arriving must not bring the old leader back.
            let term = known.leader.as_ref().map_or(0, |l| l.term + 1);
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

    /// Signals each change of leader.
    pub fn leader_changes(&self) -> watch::Receiver<u64> {
        self.leader_changed.subscribe()
    }

    /// Asks the poller for a status round now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// True if a leader is known and was reachable at the last status round.
    pub fn has_leader(&self) -> bool {
        self.leader().is_some_and(|(_, n)| n.reachable)
    }

    /// Polls every node's status every `interval` (or when poked), forever. Each node is asked on its own
    /// and its answer used as soon as it comes: a paused or cut-off node, which answers only with the
    /// timeout, delays nothing else (the leader a live node names, in particular).
    pub async fn run(self: Arc<Self>, interval: Duration, attempt: Duration) {
        let timeout = attempt.min(Duration::from_secs(1));
        // Requests waiting for a leader poke the poller; this keeps their rounds from spinning.
        const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
        loop {
            let round = tokio::time::Instant::now();
            for node in self.nodes() {
                if node.polling.swap(true, Ordering::AcqRel) {
                    continue;
                }
                let topo = self.clone();
                tokio::spawn(async move {
                    let status = Self::status(&node, timeout).await;
                    node.polling.store(false, Ordering::Release);
                    topo.apply(&node.addr, status);
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.poke.notified() => {}
            }
            tokio::time::sleep_until(round + MIN_ROUND_GAP).await;
        }
    }

    /// One status round, waited for: asks every node at once and uses each answer.
    pub async fn refresh(&self, timeout: Duration) {
        let mut tasks = tokio::task::JoinSet::new();
        for node in self.nodes() {
            tasks.spawn(async move {
                let status = Self::status(&node, timeout).await;
                (node.addr, status)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((addr, status)) = joined {
                self.apply(&addr, status);
            }
        }
    }

    fn nodes(&self) -> Vec<NodeState> {
        let known = self.known.read().expect("topology lock");
        known.nodes.values().cloned().collect()
    }

    async fn status(node: &NodeState, timeout: Duration) -> Option<StatusResponse> {
        let mut client = node.cluster();
        match tokio::time::timeout(timeout, client.status(StatusRequest {})).await {
            Ok(Ok(resp)) => Some(resp.into_inner()),
            _ => None,
        }
    }

    /// Takes in one node's status (None: it did not answer): its health and role, the members if it leads,
    /// and the leader, which is the one named in the latest term by any node that answered last time.
    fn apply(&self, addr: &str, status: Option<StatusResponse>) {
        let mut known = self.known.write().expect("topology lock");
        // The known leader's own answer settles its term (a redirect only guessed it): what it says if it
        // still leads, else nothing, so that the others' claims replace it.
        if let Some(l) = known.leader.as_mut().filter(|l| l.addr == addr) {
            l.term = match &status {
                Some(s) if s.role == Role::Leader as i32 => s.term,
                _ => 0,
            };
        }
        let Some(node) = known.nodes.get_mut(addr) else {
            return;
        };
        node.reachable = status.is_some();
        node.failed_poll = status.is_none();
        let Some(s) = status else {
            node.serving = false;
            node.claim = None;
            return self.choose_leader(known);
        };
        node.id = s.id;
        node.serving = s.serving;
        node.role = Role::try_from(s.role).unwrap_or(Role::Unspecified);
        node.claim = (s.leader_id != 0).then(|| (s.term, s.leader_id, s.leader_addr.clone()));
        // Members learned from the leader; nodes that left are dropped unless they are seeds.
        if node.role == Role::Leader {
            let members: Vec<String> = s
                .members
                .iter()
                .map(|m| m.client_addr.clone())
                .filter(|a| !a.is_empty())
                .collect();
            if !members.is_empty() {
                for addr in &members {
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
        }
        self.choose_leader(known);
    }

    /// The leader is the one named in the latest term, among the nodes that answered, leaving out a node
    /// that did not answer itself. Waiting requests are woken only when the leader's address changes.
    fn choose_leader(&self, mut known: std::sync::RwLockWriteGuard<'_, Known>) {
        // A claim names the leader by its client address when the claimant knows it, else by id.
        let resolve = |id: u64, addr: &str| -> Option<&NodeState> {
            known
                .nodes
                .get(addr)
                .or_else(|| known.nodes.values().find(|n| n.id == id))
        };
        let leader = known
            .nodes
            .values()
            .filter_map(|n| n.claim.as_ref())
            .filter_map(|(term, id, addr)| Some((*term, *id, resolve(*id, addr)?)))
            .filter(|(_, _, n)| !n.failed_poll)
            .max_by_key(|(term, id, _)| (*term, *id))
            .map(|(term, id, n)| Leader {
                id,
                addr: n.addr.clone(),
                term,
            });
        if let (Some(new), Some(old)) = (&leader, &known.leader)
            && new.term < old.term
        {
            return; // older news than a redirect already gave
        }
        if leader == known.leader {
            return;
        }
        let moved = leader.as_ref().map(|l| &l.addr) != known.leader.as_ref().map(|l| &l.addr);
        if moved && let Some(l) = &leader {
            info!(
                old = ?known.leader.as_ref().map(|l| l.id),
                new = l.id,
                term = l.term,
                "leader changed"
            );
        }
        known.leader = leader;
        drop(known);
        if moved {
            self.leader_changed.send_modify(|g| *g += 1);
        }
    }
}
