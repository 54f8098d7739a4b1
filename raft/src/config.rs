//! Settings of one Raft node.

use crate::types::NodeId;

/// How a node behaves. Times are in ticks: the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// A follower that hears no leader for this many ticks (randomized up to twice as many) starts an election.
    pub election_ticks: usize,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: usize,
    /// Ask for pre-votes before starting an election (thesis §9.6), so a rejoining node cannot depose a healthy
    /// leader by bumping its term.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and followers that heard
    /// from a leader within an election timeout ignore vote requests (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// The most bytes of entries in one append message (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// The most append messages in flight to one peer while pipelining.
    pub max_inflight: usize,
    /// The bytes of snapshot data in one chunk.
    pub snapshot_chunk_bytes: usize,
    /// The most bytes of committed entries handed out by one `advance`.
    pub max_apply_bytes: usize,
    /// A compaction keeps up to this many entries at or below the snapshot's index, so that a follower a
    /// little behind is sent entries rather than the whole snapshot (0: none).
    pub catch_up_entries: u64,
    /// ... and never more bytes of them than this.
    pub catch_up_bytes: usize,
    /// Seeds the randomized election timeout.
    pub seed: u64,
    /// Checks a snapshot received from a leader once its last chunk has arrived (a checksum, say); a snapshot
    /// it calls bad is discarded, never installed, and the leader is asked to send it again from offset 0. A
    /// plain function of the bytes, so the core stays pure and deterministic. `None` accepts every snapshot.
    pub verify_snapshot: Option<fn(&[u8]) -> bool>,
    /// The largest snapshot a follower assembles: a chunk that would take it past this is refused, so that a
    /// stream of chunks cannot grow its memory without end.
    pub max_snapshot_bytes: u64,
    /// The most bytes of entry data a leader holds past its commit index; a proposal beyond it is refused
    /// ([`crate::Error::UncommittedFull`]), so that a leader whose followers do not keep up (or cannot be
    /// reached) does not grow its log without end. One entry is always accepted.
    pub max_uncommitted_bytes: u64,
    /// Deliberate protocol bugs, for proving that the simulator's checkers catch them. Never set in production.
    pub bugs: Bugs,
}

/// Known-wrong behaviours the simulator's checkers must catch (see `sim/`). All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Grant votes without the §5.4.1 up-to-date check.
    pub vote_without_log_check: bool,
    /// Commit entries of earlier terms by counting replicas, which §5.4.2 forbids (the Figure 8 bug).
    pub commit_previous_term: bool,
}

impl Config {
    /// A configuration with the usual defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_append_bytes: 1 << 20,
            max_inflight: 256,
            snapshot_chunk_bytes: 1 << 20,
            max_apply_bytes: 16 << 20,
            catch_up_entries: 0,
            catch_up_bytes: 0,
            seed: id,
            verify_snapshot: None,
            max_snapshot_bytes: u64::MAX,
            max_uncommitted_bytes: u64::MAX,
            bugs: Bugs::default(),
        }
    }

    /// Checks the settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |what: &str| Err(crate::Error::Config(what.to_string()));
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad("election_ticks must be greater than heartbeat_ticks");
        }
        if self.max_inflight == 0 || self.snapshot_chunk_bytes == 0 || self.max_append_bytes == 0 {
            return bad("max_inflight, snapshot_chunk_bytes and max_append_bytes must be positive");
        }
        Ok(())
    }
}
