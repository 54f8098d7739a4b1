//! # reinado-sim: the deterministic simulator
//!
//! Runs a Reinado cluster in virtual time: each node is the node's own replica (`reinado_node::replica`: the
//! Raft core, the state machine with its sessions and limits, proposals, reads, snapshots, membership, the
//! start decision) over `reinado-storage`'s real write-ahead log on a fault-injecting file system; only the
//! network, the clock and the disk are simulated. Every choice is drawn from one seed: message loss,
//! duplication, reordering and delay; symmetric and one-way partitions; crashes that lose what was not
//! fsynced; disk calls that fail (EIO, ENOSPC) and bytes that flip in synced records; membership changes,
//! leadership transfers and snapshots during all of that (down to a single voter, with removed nodes kept
//! running); and clients with several operations in flight issuing put/get/delete/compare-and-swap,
//! multi-key transactions and atomic reads of a group of keys, with unique request ids; and lease holders
//! that grant leases, attach keys and keep them alive or let them lapse, on clocks that drift. A seed reproduces a
//! whole run, so a failure is replayed with `make sim SEED=<seed> VERBOSE=1`.
//!
//! Each run has two phases: safety under faults, then liveness after healing (a leader is elected, every
//! client operation completes and every member converges to the same state, within a bound).
//!
//! ## Layout
//! - `world.rs`: the event loop, network, faults, operator, clients and the two phases.
//! - `world/disk.rs`: the disk faults: a failed disk call (the node must stop) and a flipped byte in a synced
//!   record (the node must refuse to start, and is replaced).
//! - `node.rs`: the simulator's driver of one replica (the counterpart of the node's tokio loop), and the
//!   clients' operations as the node's own commands.
//! - `faults.rs`: the fault mix drawn for each seed.
//! - `sessions.rs`: the session limits and client acknowledgement habits drawn for each seed.
//! - `checker.rs`: Election Safety, Log Matching, Leader Completeness, State Machine Safety.
//! - `linearizability.rs`: the linearizability checker for the client history.
//! - `leases.rs`: the lease checker (no lease runs out before its TTL on the renewing leader's clock).
//! - `locks.rs`: the lock checker (at most one holder at a time, in the order of the fencing tokens).
//! - `world/leases.rs`: the lease holders contending for a lock: grant, claim, wait for the turn while
//!   keeping the lease alive, hold, let it lapse.
//! - `bin/reinado-sim.rs`: the command line (`make sim`).

pub mod checker;
pub mod faults;
pub mod leases;
pub mod linearizability;
pub mod locks;
pub mod node;
pub mod sessions;
pub mod world;

pub use faults::Profile;
pub use world::{Report, SimConfig, Stats, World};

/// Runs one seed.
pub fn run(cfg: SimConfig) -> Report {
    World::new(cfg).run()
}
