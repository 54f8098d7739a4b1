//! Long-lived gRPC channels with HTTP/2 keepalive.
//!
//! A connection to a peer that was partitioned away or paused (`docker pause`) never sees a FIN or RST: without
//! keepalive pings it would hang forever. Every channel Reinado opens pings its server and drops the connection
//! when a ping goes unanswered, and tonic reconnects on the next call.

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How a channel connects and checks its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Send an HTTP/2 ping this often, even when idle.
    pub keepalive_interval: Duration,
    /// Drop the connection when a ping is not answered within this long.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
        }
    }
}

/// The URI for an address given as `host:port` or as a full `http://host:port`.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The endpoint `addr` with these options, for a caller that adds its own (a per-request timeout, say).
pub fn endpoint(addr: &str, opts: ChannelOptions) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(uri(addr))?
        .connect_timeout(opts.connect_timeout)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// A channel to `addr` that connects on first use and reconnects after failures.
pub fn lazy_channel(addr: &str, opts: ChannelOptions) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr, opts)?.connect_lazy())
}
