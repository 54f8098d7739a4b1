//! # reinado-node: one member of a Reinado cluster
//!
//! ## Layout
//! - [`config`]: configuration from `REINADO_*` environment variables.
//! - [`state`]: the replicated key-value state machine (revisions, sessions, members, watch history).
//! - [`raft_loop`]: the task that owns the Raft core: ticks, messages, proposals, `Ready`s, apply.
//! - [`wal`]: persistence of each Ready batch (write-ahead log and snapshots, group commit: one fsync a batch).
//! - [`transport`]: Raft traffic between nodes (gRPC streams, bounded queues, keepalive, reconnects).
//! - [`api`]: the client-facing gRPC services (Kv, Cluster, Fault) and input validation.
//! - [`server`]: startup (storage, core, servers, join) and the orderly shutdown.
//! - [`join`]: joining a running cluster through `REINADO_JOIN`.
//! - [`identity`]: the data dir's owner (cluster and node id), checked at every start.
//! - [`error`]: why a request failed, and its gRPC status.

pub mod api;
pub mod config;
pub mod error;
pub mod identity;
pub mod join;
pub mod raft_loop;
pub mod server;
pub mod state;
pub mod transport;
pub mod wal;
