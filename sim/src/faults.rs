//! The fault mix of a run, drawn from its seed: each seed explores a different blend of message loss,
//! duplication, delay, partitions, crashes, membership changes, leadership transfers and snapshots.

use reinado_raft::Rng;

/// Which family of fault mixes a run draws from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Every probability drawn from the seed (swarm testing).
    #[default]
    Swarm,
    /// [`FaultMix::leader_churn`].
    LeaderChurn,
    /// [`FaultMix::restarts`].
    Restarts,
    /// [`FaultMix::lost_disks`].
    LostDisks,
}

/// A fault the simulator injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A random live node crashes, losing what it had not fsynced.
    Crash,
    /// The leader crashes.
    CrashLeader,
    /// One node is cut off from all others, both ways.
    Isolate,
    /// The nodes are split into two sides.
    Split,
    /// Messages from one node to another are dropped (one way only).
    OneWay,
    /// The leader hands leadership to a random voter.
    Transfer,
    /// A voter is removed, or a learner added (and promoted once caught up).
    Membership,
    /// The leader steps down without a successor.
    StepDown,
    /// A node crashes and its supervisor restarts it at once, while its last messages are still in flight.
    Restart,
    /// A node's process is paused for longer than an election timeout (a zombie leader, if it led), then
    /// resumes with everything that queued up meanwhile.
    Pause,
    /// A node loses its disk: it comes back with an empty data dir under the same id and configuration.
    Wipe,
    /// One of a node's next disk calls (a write, fsync, directory sync, rename or creation) fails with EIO
    /// or ENOSPC: the node must stop at once, and its supervisor restarts it from what reached the disk.
    DiskError,
    /// A node crashes and a byte flips in a synced record it reads at start (a WAL record followed by
    /// other synced records, or its snapshot file): it must refuse to start; the operator replaces it as a
    /// member whose disk was lost.
    Corrupt,
}

impl Fault {
    /// Every fault, in the order of [`FaultMix::weights`].
    pub const ALL: [Fault; 13] = [
        Fault::Crash,
        Fault::CrashLeader,
        Fault::Isolate,
        Fault::Split,
        Fault::OneWay,
        Fault::Transfer,
        Fault::Membership,
        Fault::StepDown,
        Fault::Restart,
        Fault::Pause,
        Fault::Wipe,
        Fault::DiskError,
        Fault::Corrupt,
    ];

    /// The fault's position in [`Fault::ALL`] and [`FaultMix::weights`].
    pub fn index(self) -> usize {
        Fault::ALL
            .iter()
            .position(|&f| f == self)
            .expect("every fault is listed in Fault::ALL")
    }

    /// The fault's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::CrashLeader => "crash-leader",
            Fault::Isolate => "isolate",
            Fault::Split => "split",
            Fault::OneWay => "one-way",
            Fault::Transfer => "transfer",
            Fault::Membership => "membership",
            Fault::StepDown => "step-down",
            Fault::Restart => "restart",
            Fault::Pause => "pause",
            Fault::Wipe => "wipe",
            Fault::DiskError => "disk-error",
            Fault::Corrupt => "corrupt",
        }
    }
}

/// Probabilities and intervals for one run.
#[derive(Clone, Debug)]
pub struct FaultMix {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is slow (which reorders it).
    pub slow: f64,
    /// The longest delay of a slow message.
    pub slow_max_ms: u64,
    /// The longest time an fsync takes.
    pub fsync_max_ms: u64,
    /// Mean time between two faults.
    pub fault_interval_ms: u64,
    /// Relative weight of each fault in [`Fault::ALL`].
    pub weights: [u64; Fault::ALL.len()],
    /// The longest a crashed node stays down.
    pub max_down_ms: u64,
    /// The longest a partition lasts.
    pub max_partition_ms: u64,
    /// Nodes take a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// The most bytes of entries in one append: sometimes a single entry per message, so that a leader's
    /// entries reach followers piecemeal.
    pub max_append_bytes: usize,
    /// Probability that a newly elected leader crashes within a few milliseconds (leader flapping), which
    /// explores the window between a new leader's first commits and its no-op reaching a quorum.
    pub crash_new_leader: f64,
    /// The most appends in flight to one peer (1 turns pipelining off).
    pub max_inflight: usize,
    /// The longest a paused process stays paused.
    pub max_pause_ms: u64,
}

impl FaultMix {
    /// Draws a mix: a few seeds are calm, most are rough.
    pub fn draw(rng: &mut Rng) -> FaultMix {
        let pct = |rng: &mut Rng, max: u64| rng.range(0, max + 1) as f64 / 100.0;
        let mut weights = [0; Fault::ALL.len()];
        for w in weights.iter_mut() {
            *w = rng.range(0, 5);
        }
        weights[0] += 1;
        FaultMix {
            drop: pct(rng, 10),
            duplicate: pct(rng, 5),
            slow: pct(rng, 10),
            slow_max_ms: rng.range(20, 120),
            fsync_max_ms: rng.range(0, 6),
            fault_interval_ms: rng.range(100, 800),
            weights,
            max_down_ms: rng.range(50, 1_500),
            max_partition_ms: rng.range(150, 1_500),
            snapshot_every: rng.range(8, 80),
            clients: rng.range(2, 7),
            max_append_bytes: [1, 256, 4096][rng.range(0, 3) as usize],
            crash_new_leader: pct(rng, 30),
            max_inflight: [1, 8, 64][rng.range(0, 3) as usize],
            max_pause_ms: rng.range(150, 1_000),
        }
    }

    /// A mix concentrated on leader churn: leaders crash or are cut off soon after election, nothing is
    /// pipelined and each append carries one entry. It exposes bugs that need a new leader to fail in the
    /// middle of catching a follower up (the Figure 8 scenario of §5.4.2).
    pub fn leader_churn(rng: &mut Rng) -> FaultMix {
        FaultMix {
            weights: [1, 4, 4, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1],
            drop: 0.05,
            duplicate: 0.01,
            fault_interval_ms: rng.range(100, 300),
            max_inflight: 1,
            max_append_bytes: 1,
            crash_new_leader: 0.5,
            ..FaultMix::draw(rng)
        }
    }

    /// A mix concentrated on processes that restart at once while their last messages are still on a slow
    /// network: what an earlier incarnation asked for is answered to the next one (read-index contexts,
    /// votes, appends of a previous life).
    pub fn restarts(rng: &mut Rng) -> FaultMix {
        let mut weights = [0; Fault::ALL.len()];
        weights[Fault::Restart.index()] = 6;
        weights[Fault::Crash.index()] = 1;
        weights[Fault::Transfer.index()] = 1;
        // A disk error is a restart too: the supervisor brings the stopped process back.
        weights[Fault::DiskError.index()] = 1;
        FaultMix {
            weights,
            slow: 0.2 + rng.range(0, 21) as f64 / 100.0,
            slow_max_ms: rng.range(60, 250),
            fault_interval_ms: rng.range(60, 200),
            ..FaultMix::draw(rng)
        }
    }

    /// A mix concentrated on lost disks: members come back empty under their old id, among leader crashes
    /// and partitions that leave the others behind. It exposes an empty log taken for one that took part
    /// (a vote forgotten, an entry its old self helped commit).
    pub fn lost_disks(rng: &mut Rng) -> FaultMix {
        let mut weights = [0; Fault::ALL.len()];
        weights[Fault::Wipe.index()] = 6;
        weights[Fault::CrashLeader.index()] = 2;
        weights[Fault::Isolate.index()] = 2;
        weights[Fault::Crash.index()] = 1;
        weights[Fault::Restart.index()] = 1;
        FaultMix {
            weights,
            fault_interval_ms: rng.range(100, 300),
            ..FaultMix::draw(rng)
        }
    }

    /// Picks a fault by weight.
    pub fn pick_fault(&self, rng: &mut Rng) -> Fault {
        let total: u64 = self.weights.iter().sum();
        let mut roll = rng.range(0, total);
        for (&fault, &w) in Fault::ALL.iter().zip(&self.weights) {
            if roll < w {
                return fault;
            }
            roll -= w;
        }
        unreachable!("roll below the total weight")
    }
}
