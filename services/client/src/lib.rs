//! # reinado-client: talking to a Reinado cluster
//!
//! The library the `reinado` CLI, the proxy, the node and the tests use to reach Reinado processes.
//!
//! ## Layout
//! - [`client`]: [`Client`], over a list of endpoints: failover, deadlines, retries with the same request id.
//! - [`etcd`]: [`EtcdClient`], etcd's v3 API (KV put and range, leases, locks, elections) on the same
//!   endpoints and channels, with the same failover; keep-alive and observe streams that move between endpoints.
//! - [`watch`]: watches that resume on another endpoint from the last delivered revision.
//! - [`error`]: [`ClientError`] (messages that say what to do) and the retry classification of statuses.
//! - [`envconfig`]: configuration from `REINADO_*` variables, the same way in every binary.
//! - [`channel`]: long-lived gRPC channels with HTTP/2 keepalive.
//! - [`health`]: gRPC health checks, for the binaries' `health` subcommands.
//! - `harness`, `otlp_sink` (feature `harness`): local node and proxy processes, and an OTLP trace receiver,
//!   for tests.
//! - [`telemetry`]: logs, OTLP trace export and W3C trace-context propagation, for every Reinado process.

pub mod channel;
pub mod client;
pub mod envconfig;
pub mod error;
pub mod etcd;
#[cfg(feature = "harness")]
pub mod harness;
pub mod health;
#[cfg(feature = "harness")]
pub mod otlp_sink;
pub mod telemetry;
pub mod watch;

pub use client::{Client, ClientOptions};
pub use error::ClientError;
pub use etcd::EtcdClient;

/// Completes on SIGTERM (what `docker stop` and Kubernetes send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}
