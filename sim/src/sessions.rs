//! The clients' sessions: how each seed bounds them and how a client numbers and acknowledges its writes.
//!
//! Some seeds give sessions few results (`max_results_per_session` 2..8) and clients that acknowledge
//! lazily (only when the cluster says their session is full), so results pile up to the bound; and some
//! seeds deliver late copies of client writes (a proxy or a network that retries long after the client
//! moved on). Together they put a write's retry behind several newer writes of its session: a session table
//! that evicted an unacknowledged result to make room would run that retry a second time, and the
//! linearizability checker sees the value come back. Drawn from their own generator, so the rest of a
//! seed's run (faults, timing) is what it was without them.
//!
//! Some seeds run a rolling configuration change: some nodes are configured with one set of state machine
//! limits, the others with another, small enough to bite (a quota a few keys fill, few results per
//! session). The limits that shape replicated state must be agreed through the log, or those nodes' states
//! part ways. Drawn from a generator of their own too.

use reinado_node::state::Limits;
use reinado_raft::{NodeId, Rng};
use std::collections::BTreeSet;

/// The session side of a run.
#[derive(Clone, Debug)]
pub struct SessionMix {
    /// The limits the nodes are configured with, unless a rolling change gives some of them `upgraded`'s.
    pub limits: Limits,
    /// A rolling configuration change: the new limits, and the nodes (a bit per id, modulo 64) that have them.
    pub upgraded: Option<(Limits, u64)>,
    /// Clients acknowledge their results only when the cluster refuses a write for a full session.
    pub lazy_acks: bool,
    /// The chance that a client write is delivered once more, late.
    pub late_copy: f64,
    /// Late copies arrive this many milliseconds after the attempt, at most.
    pub late_copy_max_ms: u64,
    /// Operations each client keeps in flight at once (1..=4), its writes numbered apart in one session.
    /// Never more than a session holds results: the results of writes answered after a lower-numbered
    /// one still waits cannot be acknowledged, so more writes in flight could fill the session for good.
    pub in_flight: usize,
    rng: Rng,
}

impl SessionMix {
    /// The mix for `seed`.
    pub fn draw(seed: u64) -> SessionMix {
        let mut rng = Rng::new(seed ^ 0x5e55_1095_u64.rotate_left(32));
        let small = rng.range(0, 3) == 0;
        let limits = Limits {
            max_results_per_session: if small {
                rng.range(2, 9) as usize
            } else {
                Limits::default().max_results_per_session
            },
            ..Limits::default()
        };
        let (limits, upgraded) = match rolling_change(seed, &limits) {
            Some((old, new)) => (old, Some(new)),
            None => (limits, None),
        };
        let lazy_acks = small && rng.range(0, 4) != 0;
        let late_copy = if rng.range(0, 2) == 0 { 0.0 } else { 0.1 };
        let late_copy_max_ms = rng.range(300, 2_000);
        // Whichever configuration the log agrees on, a session holds the results of every write in flight.
        let fewest_results = upgraded.map_or(limits.max_results_per_session, |(new, _)| {
            new.max_results_per_session
                .min(limits.max_results_per_session)
        });
        let in_flight = (rng.range(1, 5) as usize).min(fewest_results);
        SessionMix {
            limits,
            upgraded,
            lazy_acks,
            late_copy,
            late_copy_max_ms,
            in_flight,
            rng,
        }
    }

    /// The limits node `id` is configured with.
    pub fn limits_for(&self, id: NodeId) -> Limits {
        match self.upgraded {
            Some((new, nodes)) if nodes & (1 << (id % 64)) != 0 => new,
            _ => self.limits,
        }
    }

    /// After how many milliseconds a late copy of a write arrives, if it gets one.
    pub fn late_copy_after(&mut self) -> Option<u64> {
        let chance = (self.late_copy * 1_000_000.0) as u64;
        ((self.rng.next_u64() % 1_000_000) < chance)
            .then(|| self.rng.range(100, self.late_copy_max_ms + 1))
    }
}

/// On one seed in four, a rolling change of the limits: once as the old values and once as the new, each
/// with a quota a few keys fill and, on some seeds, few results per session or a shorter session TTL; and
/// the nodes that have the new ones. The TTL stays above the clients' retry window (an operation's deadline
/// plus the latest copy of a write), and the most sessions is left alone (above the number of clients): below
/// either, a forgotten session runs the retry of a first write again, the documented limit of sessions.
fn rolling_change(seed: u64, base: &Limits) -> Option<(Limits, (Limits, u64))> {
    let mut rng = Rng::new(seed ^ 0x1a17_5e75_u64.rotate_left(16));
    if rng.range(0, 4) != 0 {
        return None;
    }
    let (results, ttl) = (rng.range(0, 2) == 1, rng.range(0, 2) == 1);
    let small = |rng: &mut Rng| Limits {
        // A key and its value take about 10 bytes.
        quota_bytes: rng.range(15, 40),
        max_results_per_session: if results {
            rng.range(2, 9) as usize
        } else {
            base.max_results_per_session
        },
        session_ttl_ms: if ttl {
            rng.range(6_000, 12_000)
        } else {
            base.session_ttl_ms
        },
        ..*base
    };
    let old = small(&mut rng);
    let new = small(&mut rng);
    Some((old, (new, rng.next_u64())))
}

/// How one client numbers its writes: from 1 under a session id, with `acked` 1 until a write of the session
/// was answered as applied (the cluster may not know the session before), then the client's watermark: never
/// above its lowest write still in flight.
#[derive(Clone, Debug)]
pub struct ClientSession {
    id: u64,
    writes: u64,
    acked: u64,
    established: bool,
    lazy: bool,
    /// Writes of this session still in flight.
    pending: BTreeSet<u64>,
}

impl ClientSession {
    /// The first session of client `client` (0-based).
    pub fn new(client: u64, lazy: bool) -> Self {
        ClientSession {
            id: client + 1,
            writes: 0,
            acked: 1,
            established: false,
            lazy,
            pending: BTreeSet::new(),
        }
    }

    /// The request id of the client's next write: (client id, seq, acked). An eager client acknowledges
    /// with each new write every earlier one that is no longer in flight.
    pub fn next_write(&mut self) -> (u64, u64, u64) {
        self.writes += 1;
        self.pending.insert(self.writes);
        if !self.lazy {
            self.acked = self.lowest_pending();
        }
        (self.id, self.writes, self.acked())
    }

    /// The lowest write still in flight (or the next one).
    fn lowest_pending(&self) -> u64 {
        self.pending.first().copied().unwrap_or(self.writes + 1)
    }

    /// The `acked` the session's requests carry now.
    pub fn acked(&self) -> u64 {
        if self.established { self.acked } else { 1 }
    }

    /// Write `seq` of session `id` is over: answered (`applied`: the cluster holds the session), refused,
    /// or given up on (it is never sent again, so its result may go). Ignored for an earlier session.
    pub fn finished(&mut self, id: u64, seq: u64, applied: bool) {
        if id == self.id {
            self.pending.remove(&seq);
            self.established |= applied;
        }
    }

    /// The cluster refused a write for a full session: acknowledge every write no longer in flight. True if
    /// that acknowledges more than the session's requests did (a retry may then find room).
    pub fn full(&mut self) -> bool {
        let before = self.acked();
        // A full session is one the cluster holds.
        self.established = true;
        self.acked = self.acked.max(self.lowest_pending());
        self.acked() > before
    }

    /// The cluster forgot session `id`: if it is the current one, the next write starts a new one (ids stay
    /// distinct across clients); the writes of the old one still in flight end on their own.
    pub fn expired(&mut self, id: u64, clients: u64) {
        if id == self.id {
            *self = ClientSession {
                id: self.id + clients,
                ..ClientSession::new(0, self.lazy)
            };
        }
    }
}
