//! # reinado-sim: the deterministic simulator
//!
//! Runs a Reinado cluster (the real Raft core, a model of the disk and network) in virtual time, with every
//! choice drawn from one seed: message loss, duplication, reordering and delay; symmetric and one-way
//! partitions; crashes that lose what was not fsynced; membership changes, leadership transfers and snapshots
//! during all of that; and clients issuing put/get/delete/compare-and-swap with unique request ids. A seed
//! reproduces a whole run, so a failure is replayed with `make sim SEED=<seed> VERBOSE=1`.
//!
//! Each run has two phases: safety under faults, then liveness after healing (a leader is elected, every
//! client operation completes and every member converges to the same state, within a bound).
//!
//! ## Layout
//! - `world.rs`: the event loop, network, faults, operator, clients and the two phases.
//! - `server.rs`: one node: the Raft Ready loop over a disk that loses unsynced writes, the state machine,
//!   client requests (writes through the log, reads through ReadIndex).
//! - `kv.rs`: the replicated key-value state machine with its exactly-once session table.
//! - `faults.rs`: the fault mix drawn for each seed.
//! - `checker.rs`: Election Safety, Log Matching, Leader Completeness, State Machine Safety.
//! - `linearizability.rs`: the linearizability checker for the client history.
//! - `bin/reinado-sim.rs`: the command line (`make sim`).

pub mod checker;
pub mod faults;
pub mod kv;
pub mod linearizability;
pub mod server;
pub mod world;

pub use faults::Profile;
pub use world::{Report, SimConfig, Stats, World};

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Report {
    World::new(cfg).run()
}
