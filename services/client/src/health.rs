//! gRPC health checks (`grpc.health.v1`), for the `health` subcommand every binary has (the container
//! health check: the images have no shell and no other tool).

use crate::channel::{ChannelOptions, lazy_channel};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks the server at `addr` whether `service` (`""`: the process as a whole) is serving. Fails if the server
/// cannot be reached within `timeout`.
pub async fn check(addr: &str, service: &str, timeout: Duration) -> anyhow::Result<bool> {
    let opts = ChannelOptions {
        connect_timeout: timeout,
        ..ChannelOptions::default()
    };
    let mut client = HealthClient::new(lazy_channel(addr, opts)?);
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    let resp = tokio::time::timeout(timeout, client.check(req))
        .await
        .map_err(|_| anyhow::anyhow!("did not answer within {timeout:?}"))?
        .map_err(|s| anyhow::anyhow!("{}", crate::error::describe(&s)))?;
    Ok(resp.into_inner().status() == ServingStatus::Serving)
}

/// The address to dial for a server listening on `listen`: an unspecified IP (0.0.0.0, ::) becomes loopback.
pub fn local_addr(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(sa) if sa.ip().is_unspecified() => format!("127.0.0.1:{}", sa.port()),
        _ => listen.to_string(),
    }
}
