//! # reinado-node: one member of a Reinado cluster
//!
//! ## Layout
//! - [`config`]: configuration from `REINADO_*` environment variables.
//! - [`state`]: the replicated key-value state machine (revisions, sessions, members, watch history).
//! - [`replica`]: everything a member decides, with no I/O: the Raft core, proposals and their waiters, reads,
//!   apply, sessions and limits (through [`state`]), snapshots, membership, the start decision. The node's loop
//!   and the simulator (`reinado-sim`) both drive it.
//! - [`raft_loop`]: the tokio shell around the replica: timers, channels, the WAL's fsync on the loop's
//!   thread (group commit: one fsync a batch), messages out, answers to the API.
//! - [`transport`]: Raft traffic between nodes (gRPC streams, bounded queues, keepalive, reconnects).
//! - [`api`]: the client-facing gRPC services (Kv, Cluster, Fault) and input validation.
//! - [`server`]: startup (storage, core, servers, join) and the orderly shutdown.
//! - [`join`]: joining a running cluster through `REINADO_JOIN`.
//! - [`probe`]: an empty data dir asks the bootstrap members whether it may bootstrap (a lost disk may not).
//! - [`identity`]: the data dir's owner (cluster and node id), checked at every start.
//! - [`error`]: why a request failed, and its gRPC status.

pub mod api;
pub mod config;
pub mod error;
pub mod identity;
pub mod join;
pub mod probe;
pub mod raft_loop;
pub mod replica;
pub mod server;
pub mod state;
pub mod transport;
