//! Starting and stopping a node: storage, the Raft core, the Raft loop, the two gRPC servers (peers on one
//! port, clients on another), health, joining, and the orderly shutdown.

use crate::api::{ApiParts, NodeApi};
use crate::config::{Config, Start};
use crate::raft_loop::{self, Parts, RaftLoop, Timing, View};
use crate::replica::{self, Replica, Settings};
use crate::transport::{self, Identity, Isolation, PeerService, Transport};
use anyhow::Context as _;
use reinado_client::channel::ChannelOptions;
use reinado_proto::raft::v1::raft_peer_server::RaftPeerServer;
use reinado_raft::Role;
use reinado_storage::{DiskStorage, Options};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::transport::Server;
use tracing::{error, info, warn};

/// Peer messages waiting for the Raft loop before the peer server stops reading.
const INBOX: usize = 4096;
/// API requests waiting for the Raft loop before handlers wait.
const REQUESTS: usize = 8192;

/// How peers keep their connections alive. A peer that does not answer a ping within a second and a half is
/// dropped, and the next message reconnects.
const PEER_CHANNEL: ChannelOptions = ChannelOptions {
    connect_timeout: Duration::from_secs(1),
    keepalive_interval: Duration::from_millis(500),
    keepalive_timeout: Duration::from_secs(1),
};

/// Runs a node until `shutdown` completes (or the disk fails), then stops it in order: health goes to
/// NOT_SERVING, the client server drains, a leader hands leadership to a caught-up peer, the write-ahead log
/// is flushed, and the peer server stops last.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::identity::check_or_claim(&cfg.data_dir, &cfg.cluster_id, cfg.node_id)?;
    let raft_dir = cfg.data_dir.join("raft");
    let (storage, recovered) = DiskStorage::open(&raft_dir, Options::default())
        .with_context(|| format!("opening the storage in {}", raft_dir.display()))?;
    let raft_cfg = reinado_raft::Config {
        election_ticks: cfg.election_ticks,
        heartbeat_ticks: 1,
        seed: rand::random(),
        verify_snapshot: Some(crate::state::verify_snapshot),
        max_snapshot_bytes: cfg.max_snapshot_bytes,
        max_uncommitted_bytes: cfg.max_uncommitted_bytes,
        catch_up_entries: cfg.catch_up_entries,
        catch_up_bytes: cfg.catch_up_bytes,
        ..reinado_raft::Config::new(cfg.node_id)
    };
    let fresh = replica::is_empty(&recovered);
    info!(
        node = cfg.node_id,
        cluster = %cfg.cluster_id,
        client = %cfg.client_listen,
        peer = %cfg.peer_listen,
        fresh,
        "starting"
    );

    let client_listener = bind(cfg.client_listen, "REINADO_CLIENT_ADDR").await?;
    let peer_listener = bind(cfg.peer_listen, "REINADO_PEER_ADDR").await?;

    let identity = Identity {
        cluster_id: cfg.cluster_id.clone(),
        id: cfg.node_id,
        client_addr: cfg.advertise_client_addr.clone(),
        peer_addr: cfg.advertise_peer_addr.clone(),
    };
    let isolation = Arc::new(Isolation::default());
    let (inbox_tx, inbox) = mpsc::channel(INBOX);

    // The peer server comes first: peers that probe this node while it probes them are answered "fresh",
    // and their messages wait in the inbox until the Raft loop runs.
    let peer_service = PeerService::new(identity.clone(), inbox_tx, isolation.clone());
    let peer_server = Server::builder()
        .http2_keepalive_interval(Some(PEER_CHANNEL.keepalive_interval))
        .http2_keepalive_timeout(Some(PEER_CHANNEL.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(
            RaftPeerServer::new(peer_service.clone())
                .max_decoding_message_size(transport::MAX_PEER_MESSAGE_BYTES),
        )
        .serve_with_incoming(incoming(peer_listener));
    let peer_task = tokio::spawn(peer_server);
    let mut start = cfg.start.clone();
    if let (true, Start::Bootstrap(peers)) = (fresh, &cfg.start)
        && peers.len() > 1
    {
        peer_service.set_probing(true);
        let verdict = crate::probe::empty_data_dir(&identity, peers, replica::Bugs::default());
        if let crate::probe::Verdict::Join(through) = verdict.await? {
            start = Start::Join(through);
        }
        peer_service.set_probing(false);
    }

    let opened = replica::open(raft_cfg, &start, recovered)?;
    let state = Arc::new(RwLock::new(opened.state));
    let (requests_tx, requests) = mpsc::channel(REQUESTS);
    let (applied_tx, applied) = watch::channel(opened.raft.applied());
    let (view_tx, view) = watch::channel(initial_view());
    let (loop_stop_tx, loop_stop) = watch::channel(false);
    let (client_stop_tx, client_stop) = watch::channel(false);

    let settings = Settings {
        id: cfg.node_id,
        client_addr: cfg.advertise_client_addr.clone(),
        election_ticks: cfg.election_ticks as u64,
        tick_ms: cfg.tick.as_millis() as u64,
        snapshot_entries: cfg.snapshot_entries,
        snapshot_bytes: cfg.snapshot_bytes,
        request_timeout_ticks: ticks(cfg.limits.request_timeout, cfg.tick),
        bootstrap_peers: match &cfg.start {
            Start::Bootstrap(peers) => peers.clone(),
            Start::Join(_) => BTreeMap::new(),
        },
        incarnation: rand::random(),
        record_applied: false,
        limits: cfg.state_limits,
        bugs: replica::Bugs::default(),
    };
    let timing = Timing {
        tick: cfg.tick,
        shutdown_timeout: cfg.shutdown_timeout,
    };
    let parts = Parts {
        storage,
        transport: Transport::new(identity.clone(), PEER_CHANNEL, isolation.clone()),
        applied: applied_tx,
        view: view_tx,
        inbox,
        requests,
        shutdown: loop_stop,
    };
    let replica = Replica::new(opened.raft, state.clone(), settings);
    let (raft_loop, inputs) = RaftLoop::new(replica, timing, parts);

    let (health, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(track_health(health.clone(), view.clone()));

    let api = NodeApi::new(ApiParts {
        id: cfg.node_id,
        cluster_id: cfg.cluster_id.clone(),
        requests: requests_tx,
        state,
        applied,
        view,
        limits: cfg.limits,
        isolation,
        fault_injection: cfg.fault_injection,
        min_lease_ttl_s: min_lease_ttl_s(cfg.election_timeout()),
        shutdown: client_stop.clone(),
    });
    let etcd = api.etcd();
    let client_server = Server::builder()
        .trace_fn(reinado_client::telemetry::server_span)
        .concurrency_limit_per_connection(cfg.max_concurrent_requests)
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(api.kv_service())
        .add_service(etcd.kv_service())
        .add_service(etcd.watch_service())
        .add_service(etcd.cluster_service())
        .add_service(etcd.maintenance_service())
        .add_service(etcd.lease_service())
        .add_service(etcd.lock_service())
        .add_service(etcd.election_service())
        .add_service(reinado_proto::no_auth::NoAuth::service())
        .add_service(api.pipeline_service())
        .add_service(api.cluster_service())
        .add_service(api.fault_service())
        .serve_with_incoming_shutdown(incoming(client_listener), stopped(client_stop));
    let mut client_task = tokio::spawn(client_server);

    // An empty data dir that joins takes no part (no vote, no acknowledgement) until it is added: if its id
    // is a member whose disk was lost, the join is refused and the node stops.
    let mut shutdown = std::pin::pin!(shutdown);
    if let (true, Start::Join(target)) = (fresh, &start) {
        let joiner = crate::join::Joiner {
            cluster_id: cfg.cluster_id.clone(),
            id: cfg.node_id,
            peer_addr: cfg.advertise_peer_addr.clone(),
            client_addr: cfg.advertise_client_addr.clone(),
        };
        tokio::select! {
            joined = crate::join::join(target.clone(), joiner) => {
                joined.context("cannot join the cluster")?;
            }
            _ = &mut shutdown => {
                info!("shut down before joining");
                return Ok(());
            }
        }
    }
    let mut loop_task = tokio::spawn(raft_loop.run(inputs));

    let failed = tokio::select! {
        _ = shutdown => None,
        result = &mut loop_task => Some(result),
        result = &mut client_task => {
            error!("the client server stopped: {result:?}");
            None
        }
    };
    if let Some(result) = failed {
        let result = result.context("the Raft loop panicked")?;
        raft_loop::report(&result);
        result?;
        return Ok(());
    }

    info!("shutting down: no longer serving clients");
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health_task.abort();
    health
        .set_not_serving::<reinado_proto::v1::kv_server::KvServer<NodeApi>>()
        .await;
    let _ = client_stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(2), &mut client_task)
        .await
        .is_err()
    {
        warn!("client requests still running after 2 s: dropping them");
        client_task.abort();
    }
    let _ = loop_stop_tx.send(true);
    let result = loop_task.await.context("the Raft loop panicked")?;
    raft_loop::report(&result);
    // Peers' streams never end by themselves: stop serving them without waiting for them to close.
    peer_task.abort();
    info!("stopped");
    Ok(result?)
}

/// `duration` in whole ticks, at least one.
fn ticks(duration: Duration, tick: Duration) -> u64 {
    (duration.as_millis() / tick.as_millis().max(1)).max(1) as u64
}

async fn bind(addr: std::net::SocketAddr, var: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({var})"))
}

fn initial_view() -> View {
    View {
        role: Role::Follower,
        term: 0,
        leader: None,
        leader_addr: String::new(),
        member: false,
        serving: false,
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Keeps the Kv service's health in step with the node's view: serving only while it knows a leader of the
/// current term and has caught up with it.
async fn track_health(
    health: tonic_health::server::HealthReporter,
    mut view: watch::Receiver<View>,
) {
    use reinado_proto::v1::kv_server::KvServer;
    let mut serving = None;
    loop {
        let now = view.borrow_and_update().serving;
        if serving != Some(now) {
            if now {
                health.set_serving::<KvServer<NodeApi>>().await;
            } else {
                health.set_not_serving::<KvServer<NodeApi>>().await;
            }
            serving = Some(now);
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames must not wait for the peer's delayed
/// ACK (about 40 ms per round trip otherwise). `Server::tcp_nodelay` covers only sockets tonic binds itself.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// etcd's shortest lease TTL: one and a half of the longest election timeout (randomized up to twice the
/// configured one), in whole seconds, at least one.
fn min_lease_ttl_s(election_timeout: std::time::Duration) -> i64 {
    let ms = election_timeout.as_millis() * 3;
    (ms.div_ceil(1000) as i64).max(1)
}
