//! Starting and stopping the proxy: the status poller, the client-facing server (Reinado's API and etcd's),
//! health.

use crate::config::Config;
use crate::etcd::EtcdProxy;
use crate::route::Router;
use crate::service::ProxyApi;
use crate::topology::Topology;
use anyhow::Context as _;
use reinado_client::channel::ChannelOptions;
use reinado_proto::v1::kv_server::KvServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tracing::info;

/// How the proxy keeps its node channels alive: a node that misses a ping for a second is dropped, and
/// requests reconnect.
const NODE_CHANNEL: ChannelOptions = ChannelOptions {
    connect_timeout: Duration::from_secs(1),
    keepalive_interval: Duration::from_millis(500),
    keepalive_timeout: Duration::from_secs(1),
};

/// Runs the proxy until `shutdown` completes, then drains its requests (at most two seconds).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (REINADO_LISTEN)", cfg.listen))?;
    info!(listen = %cfg.listen, nodes = ?cfg.nodes, "starting");
    let topo = Topology::new(cfg.nodes.clone(), NODE_CHANNEL);
    topo.refresh(cfg.attempt_timeout.min(Duration::from_secs(1)))
        .await;
    let poller = tokio::spawn(topo.clone().run(cfg.status_interval, cfg.attempt_timeout));
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(track_health(
        health.clone(),
        topo.clone(),
        cfg.status_interval,
    ));

    let router = Router::new(topo, cfg.request_timeout, cfg.attempt_timeout);
    let etcd = EtcdProxy::new(router.clone());
    let api = ProxyApi::new(router, cfg.attempt_timeout);
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let server = Server::builder()
        .trace_fn(reinado_client::telemetry::server_span)
        .concurrency_limit_per_connection(cfg.max_concurrent_requests)
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(api.kv_service(cfg.max_request_bytes))
        .add_service(api.cluster_service())
        .add_service(reinado_proto::no_auth::NoAuth::service());
    let server = etcd
        .add_to(server, cfg.max_request_bytes)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let mut server = tokio::spawn(server);
    tokio::select! {
        _ = shutdown => {}
        result = &mut server => {
            poller.abort();
            return Ok(result.context("the server panicked")??);
        }
    }
    info!("shutting down");
    health_task.abort();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health.set_not_serving::<KvServer<ProxyApi>>().await;
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(2), &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    poller.abort();
    info!("stopped");
    Ok(())
}

/// Serving (for `""` and the Kv service) only while a reachable leader is known.
async fn track_health(
    health: tonic_health::server::HealthReporter,
    topo: Arc<Topology>,
    interval: Duration,
) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let mut last = None;
    loop {
        let serving = topo.has_leader();
        if last != Some(serving) {
            let status = if serving { Serving } else { NotServing };
            health.set_service_status("", status).await;
            health
                .set_service_status(reinado_proto::v1::kv_server::SERVICE_NAME, status)
                .await;
            last = Some(serving);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC frames must not wait for the peer's delayed
/// ACK (about 40 ms per round trip otherwise). `Server::tcp_nodelay` covers only sockets tonic binds itself.
fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
