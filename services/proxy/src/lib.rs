//! # reinado-proxy: a stateless router in front of a Reinado cluster
//!
//! Serves the same client APIs as a node (Kv and Cluster, and etcd's v3 API), so a client cannot tell a proxy from a node except
//! by speed and routing. Writes go to the leader, reads to serving followers (linearizable through the
//! follower's ReadIndex unless the client asks for serializable), both retried across leader changes within
//! the request's deadline, writes with their request id so they apply once. Any number of proxies can run
//! side by side: they keep no state but what they learn from the nodes.
//!
//! ## Layout
//! - [`config`]: configuration from `REINADO_*` environment variables.
//! - [`topology`]: the nodes, their health and the leader, refreshed by a status poller.
//! - [`pipeline`]: one stream per node carrying every Kv request for it, answered by id.
//! - [`route`]: routing with retries, deadlines and redirects.
//! - [`service`]: the Kv and Cluster services.
//! - [`etcd`]: etcd's v3 API (KV, Watch, Lease, Cluster, Maintenance, Lock, Election), routed the same way.
//! - [`sessions`]: request ids for writes that arrive without one, a session per write in flight.
//! - [`server`]: startup, health, shutdown.

pub mod config;
pub mod etcd;
pub mod pipeline;
pub mod route;
pub mod server;
pub mod service;
pub mod sessions;
pub mod topology;
