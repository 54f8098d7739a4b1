//! The replicated state machine: keys and values with their revisions, the session table that applies a
//! retried write once, the members' addresses, and a bounded history of changes for watches.
//!
//! Everything here is deterministic: it reads time only from the commands (the proposing leader's clock, made
//! monotonic), so every replica that applies the same log reaches the same state, sessions included.

use prost::Message as _;
use reinado_proto::etcd::mvccpb;
use reinado_proto::v1::{
    Command, Compare, CompareOp, CompareTarget, Event, EventType, KeyValue, LeaseGrant,
    LeaseRecord, LeaseRevoke, MemberAddress, MemberContext, Refusal, RequestId,
    Session as SessionPb, SessionResult, StateLimits, StateSnapshot, TxnOp, WriteOutcome, command,
    txn_op,
};
use reinado_raft::{ConfChange, ConfChangeKind, Entry, EntryKind, Index, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The bounds that keep the state machine's memory in check. They shape the replicated state (a quota reached
/// on one member and not another would part their states), so the state machine applies only the ones the
/// log agreed on (a `SetLimits` command), and the defaults before any; a node's configured values are what
/// it proposes when it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of keys and values stored; writes that would exceed it are refused.
    pub quota_bytes: u64,
    /// A session idle for this long (in the leaders' clock) is forgotten.
    pub session_ttl_ms: u64,
    /// The most sessions kept; beyond it the least recently active is forgotten.
    pub max_sessions: usize,
    /// The most unacknowledged results a session holds; at it, a new write of the session is refused until
    /// the client acknowledges earlier ones.
    pub max_results_per_session: usize,
    /// The most bytes of change history kept for watches.
    pub history_bytes: usize,
    /// The most leases held at once; a grant beyond it is refused.
    pub max_leases: usize,
    /// The most keys attached to one lease; a put beyond it is refused.
    pub max_keys_per_lease: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quota_bytes: 1 << 30,
            session_ttl_ms: 10 * 60 * 1000,
            max_sessions: 100_000,
            max_results_per_session: 4096,
            history_bytes: 64 << 20,
            max_leases: 100_000,
            max_keys_per_lease: 10_000,
        }
    }
}

/// One of the [`Limits`], to name it in a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::quota_bytes`].
    QuotaBytes,
    /// [`Limits::session_ttl_ms`].
    SessionTtlMs,
    /// [`Limits::max_sessions`].
    MaxSessions,
    /// [`Limits::max_results_per_session`].
    MaxResultsPerSession,
    /// [`Limits::history_bytes`].
    HistoryBytes,
    /// [`Limits::max_leases`].
    MaxLeases,
    /// [`Limits::max_keys_per_lease`].
    MaxKeysPerLease,
}

/// A limit outside what the state machine accepts: 0, or above its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit:?} is {value}; it must be between 1 and {max}")]
pub struct BadLimit {
    /// Which limit.
    pub limit: Limit,
    /// Its value.
    pub value: u64,
    /// The largest accepted.
    pub max: u64,
}

impl Limits {
    /// Each limit with its value and the largest the state machine accepts (an absurd value would let one
    /// proposal exhaust every member's memory).
    fn bounded(&self) -> [(Limit, u64, u64); 7] {
        [
            (Limit::QuotaBytes, self.quota_bytes, 1 << 40),
            (
                Limit::SessionTtlMs,
                self.session_ttl_ms,
                30 * 24 * 3_600_000,
            ),
            (Limit::MaxSessions, self.max_sessions as u64, 10_000_000),
            (
                Limit::MaxResultsPerSession,
                self.max_results_per_session as u64,
                1_000_000,
            ),
            (Limit::HistoryBytes, self.history_bytes as u64, 1 << 34),
            (Limit::MaxLeases, self.max_leases as u64, 10_000_000),
            (
                Limit::MaxKeysPerLease,
                self.max_keys_per_lease as u64,
                10_000_000,
            ),
        ]
    }

    /// Refuses a limit of 0 or above its bound.
    pub fn check(&self) -> Result<(), BadLimit> {
        match self
            .bounded()
            .into_iter()
            .find(|&(_, v, max)| v == 0 || v > max)
        {
            Some((limit, value, max)) => Err(BadLimit { limit, value, max }),
            None => Ok(()),
        }
    }

    /// As the log and snapshots carry them.
    pub fn to_proto(&self) -> StateLimits {
        StateLimits {
            quota_bytes: self.quota_bytes,
            session_ttl_ms: self.session_ttl_ms,
            max_sessions: self.max_sessions as u64,
            max_results_per_session: self.max_results_per_session as u64,
            history_bytes: self.history_bytes as u64,
            max_leases: self.max_leases as u64,
            max_keys_per_lease: self.max_keys_per_lease as u64,
        }
    }

    /// From the log or a snapshot, checked (counts saturate, so a huge one is refused, not truncated). The
    /// lease limits are 0 in entries and images written before they existed: those get the defaults.
    pub fn from_proto(l: &StateLimits) -> Result<Limits, BadLimit> {
        let count = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let or_default = |v: u64, default: usize| if v == 0 { default } else { count(v) };
        let defaults = Limits::default();
        let limits = Limits {
            quota_bytes: l.quota_bytes,
            session_ttl_ms: l.session_ttl_ms,
            max_sessions: count(l.max_sessions),
            max_results_per_session: count(l.max_results_per_session),
            history_bytes: count(l.history_bytes),
            max_leases: or_default(l.max_leases, defaults.max_leases),
            max_keys_per_lease: or_default(l.max_keys_per_lease, defaults.max_keys_per_lease),
        };
        limits.check().map(|()| limits)
    }
}

/// One key's value and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    /// The lease the key is attached to; 0 for none.
    lease: i64,
}

impl Record {
    fn to_kv(&self, key: &[u8], keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if keys_only {
                Vec::new()
            } else {
                self.value.clone()
            },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// A client's recent writes (Raft thesis §6.3).
///
/// A result is kept until the client acknowledges it (`RequestId.acked` above its number), never evicted
/// before: the write it answers may still be retried, and a retry that found nothing would run again. The
/// bound is on what a session may hold unacknowledged: at `max_results_per_session`, a new write is refused
/// ([`Refusal::SessionFull`]) until the client acknowledges earlier ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    /// Every write numbered below this was acknowledged; their results are gone.
    acked: u64,
    last_active_ms: u64,
    results: BTreeMap<u64, WriteOutcome>,
}

impl Session {
    /// Forgets the results the client acknowledged.
    fn acknowledge(&mut self, acked: u64) {
        if acked > self.acked {
            self.acked = acked;
            self.results = self.results.split_off(&acked);
        }
    }

    /// The answer to `id` without running it: a retry's first outcome, or a refusal. `None` if it is a new
    /// write the session has room to record. With `evict_pending` (a deliberate bug), a full session makes
    /// room by forgetting its lowest result instead of refusing.
    fn admit(
        &mut self,
        id: &RequestId,
        max_results: usize,
        evict_pending: bool,
    ) -> Option<WriteOutcome> {
        if id.seq < self.acked {
            let why = format!(
                "request {} of client {} was already acknowledged",
                id.seq, id.client_id
            );
            return Some(refusal(Refusal::Acknowledged, why));
        }
        if let Some(first) = self.results.get(&id.seq) {
            return Some(first.clone());
        }
        if self.results.len() >= max_results {
            if !evict_pending {
                let why = format!(
                    "session of client {} has {} unacknowledged results; acknowledge earlier ones",
                    id.client_id,
                    self.results.len()
                );
                return Some(refusal(Refusal::SessionFull, why));
            }
            while self.results.len() >= max_results.max(1) {
                self.results.pop_first();
            }
        }
        None
    }
}

/// A write refused for `why`: it changed nothing.
fn refusal(kind: Refusal, why: String) -> WriteOutcome {
    WriteOutcome {
        refused: why,
        refusal: kind as i32,
        ..WriteOutcome::default()
    }
}

/// The refusal of a write for a session the table does not hold although `id` says it had answers before.
fn expired(id: &RequestId) -> WriteOutcome {
    let why = format!(
        "session of client {} expired (idle past its TTL, or evicted for newer ones) while its writes below \
         {} were answered; request {} may have been applied before: not applied again, start a new session",
        id.client_id, id.acked, id.seq
    );
    refusal(Refusal::SessionExpired, why)
}

/// The session table, with an index by last activity for expiry and eviction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sessions {
    map: BTreeMap<u64, Session>,
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    fn touch(&mut self, client: u64, now_ms: u64) -> &mut Session {
        let session = self.map.entry(client).or_default();
        self.by_activity.remove(&(session.last_active_ms, client));
        session.last_active_ms = now_ms;
        self.by_activity.insert((now_ms, client));
        session
    }

    fn remove(&mut self, client: u64) {
        if let Some(s) = self.map.remove(&client) {
            self.by_activity.remove(&(s.last_active_ms, client));
        }
    }

    /// Forgets sessions idle since before `now_ms - ttl_ms`, then the least active beyond `max`.
    fn expire(&mut self, now_ms: u64, limits: &Limits) {
        let cutoff = now_ms.saturating_sub(limits.session_ttl_ms);
        while let Some(&(at, client)) = self.by_activity.first() {
            if at >= cutoff && self.map.len() <= limits.max_sessions {
                break;
            }
            self.remove(client);
        }
    }
}

/// The changes applied recently, for watches and reads at past revisions: complete from `first_revision`
/// on. Each event carries the key's previous version (`prev_kv`), so later changes can be undone.
#[derive(Clone, Debug, Default)]
struct History {
    events: VecDeque<(u64, mvccpb::Event)>,
    bytes: usize,
    first_revision: u64,
}

fn event_bytes(e: &mvccpb::Event) -> usize {
    let kv_bytes = |kv: &Option<mvccpb::KeyValue>| {
        kv.as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len() + 40)
    };
    kv_bytes(&e.kv) + kv_bytes(&e.prev_kv) + 16
}

impl History {
    fn push(&mut self, revision: u64, event: mvccpb::Event, max_bytes: usize) {
        self.bytes += event_bytes(&event);
        self.events.push_back((revision, event));
        // Drop whole revisions from the front, so the history is complete from `first_revision` on.
        while self.bytes > max_bytes {
            let Some(&(oldest, _)) = self.events.front() else {
                break;
            };
            self.drop_below(oldest + 1);
        }
    }

    /// The changes from revision `start` on whose key `follows` says yes to, as `show` turns them out, in
    /// revision order and whole revisions at a time, about `max` of them; and the revision to continue from
    /// (past `applied` once everything was returned). `None` if the history no longer reaches back to `start`.
    fn since<T>(
        &self,
        start: u64,
        applied: u64,
        max: usize,
        follows: impl Fn(&[u8]) -> bool,
        show: impl Fn(&mvccpb::Event) -> T,
    ) -> Option<(Vec<T>, u64)> {
        if start < self.first_revision {
            return None;
        }
        let from = self.events.partition_point(|(r, _)| *r < start);
        let mut out = Vec::new();
        let mut next = start.max(applied + 1);
        for (revision, event) in self.events.range(from..) {
            if out.len() >= max && *revision >= next {
                return Some((out, next));
            }
            if event.kv.as_ref().is_some_and(|kv| follows(&kv.key)) {
                out.push(show(event));
                next = revision + 1;
            }
        }
        Some((out, applied + 1))
    }

    /// Forgets the changes below `revision`.
    fn drop_below(&mut self, revision: u64) {
        while self.events.front().is_some_and(|(r, _)| *r < revision) {
            let (_, e) = self.events.pop_front().expect("checked non-empty");
            self.bytes -= event_bytes(&e);
        }
        self.first_revision = self.first_revision.max(revision);
    }
}

/// An etcd event as the v1 API shows it.
fn v1_event(e: &mvccpb::Event) -> Event {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 {
        EventType::Delete
    } else {
        EventType::Put
    };
    let kv = e.kv.as_ref().map(|kv| KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision as u64,
        mod_revision: kv.mod_revision as u64,
        version: kv.version as u64,
        lease: kv.lease,
    });
    Event {
        r#type: kind as i32,
        kv,
    }
}

/// Which keys a watch follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFilter {
    /// The key, or the prefix.
    pub key: Vec<u8>,
    /// `key` is a prefix.
    pub prefix: bool,
}

impl KeyFilter {
    /// True if `key` is followed.
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key.as_slice()
        }
    }
}

/// A watch asked for history the node no longer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The oldest revision still available.
    pub first_available: u64,
}

/// The snapshot data is not a state machine image this node can restore.
#[derive(Debug, thiserror::Error)]
pub enum BadSnapshot {
    /// Shorter than the envelope's header.
    #[error("snapshot data is truncated: {len} bytes, shorter than its 5-byte header")]
    Truncated {
        /// The data's length.
        len: usize,
    },
    /// Written in an envelope layout this node does not know.
    #[error("snapshot data has envelope version {0}; this node reads version {v}", v = envelope::VERSION)]
    Version(u8),
    /// The image does not match its checksum: damaged on disk or on the wire.
    #[error(
        "snapshot data is damaged: its CRC32C is {computed:#010x}, the envelope says {stored:#010x}"
    )]
    Checksum {
        /// The checksum the envelope carries.
        stored: u32,
        /// The checksum of the image as received.
        computed: u32,
    },
    /// The checksum holds but the image does not decode.
    #[error("snapshot data is not a valid state machine image: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The image decodes but no state machine wrote it: the same key, lease, session or member twice, or
    /// a key under a lease the image does not hold.
    #[error("snapshot image is inconsistent: {0}")]
    Inconsistent(String),
}

/// Checks what a decoded image promises: a state machine writes its keys, leases, sessions and members in
/// strictly increasing order (they are ordered maps), and a key's lease among its leases. Anything else is
/// refused before it replaces anything (a duplicate session id, say, would leave the session table's
/// activity index pointing at sessions that are gone).
fn check_image(image: &StateSnapshot) -> Result<(), BadSnapshot> {
    fn increasing<T: PartialOrd>(
        what: &str,
        mut ids: impl Iterator<Item = T>,
    ) -> Result<(), BadSnapshot> {
        let Some(mut prev) = ids.next() else {
            return Ok(());
        };
        for id in ids {
            if id <= prev {
                return Err(BadSnapshot::Inconsistent(format!(
                    "{what} repeated or out of order"
                )));
            }
            prev = id;
        }
        Ok(())
    }
    increasing("a key", image.kvs.iter().map(|kv| kv.key.as_slice()))?;
    increasing("a lease id", image.leases.iter().map(|l| l.id))?;
    increasing("a session id", image.sessions.iter().map(|s| s.client_id))?;
    increasing("a member id", image.members.iter().map(|m| m.id))?;
    for s in &image.sessions {
        increasing("a session's result", s.results.iter().map(|r| r.seq))?;
    }
    let held = |id: i64| image.leases.binary_search_by_key(&id, |l| l.id).is_ok();
    if let Some(kv) = image.kvs.iter().find(|kv| kv.lease != 0 && !held(kv.lease)) {
        return Err(BadSnapshot::Inconsistent(format!(
            "a key is attached to lease {:x}, which the image does not hold",
            kv.lease
        )));
    }
    Ok(())
}

/// True if `data` is a state machine image in an intact envelope (version known, checksum matching, image
/// decoding and consistent). Stateless, for [`reinado_raft::Config::verify_snapshot`]: the core refuses a snapshot from
/// the leader that fails it before anything is installed.
pub fn verify_snapshot(data: &[u8]) -> bool {
    envelope::open(data)
        .ok()
        .and_then(|image| StateSnapshot::decode(image).ok())
        .is_some_and(|image| check_image(&image).is_ok())
}

/// What a range read covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeQuery {
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End key (exclusive); `None` for no bound.
    pub end: Option<Vec<u8>>,
    /// The most keys to return.
    pub limit: usize,
    /// Omit values.
    pub keys_only: bool,
    /// Stop once the keys and values returned reach this many bytes (at least one key is returned).
    pub max_bytes: usize,
}

/// The key-value state machine.
#[derive(Clone, Debug)]
pub struct StateMachine {
    kvs: BTreeMap<Vec<u8>, Record>,
    size_bytes: u64,
    sessions: Sessions,
    members: BTreeMap<NodeId, MemberContext>,
    history: History,
    leases: Leases,
    /// The revision history was last compacted to (etcd's Compact); 0 if never.
    compact_revision: u64,
    applied: Index,
    clock_ms: u64,
    limits: Limits,
    /// Deliberate bug (simulator only): a full session forgets its lowest result instead of refusing.
    evict_pending_result: bool,
    /// Deliberate bug (simulator only): a transaction applies only the first write of its branch.
    torn_txn: bool,
}

impl StateMachine {
    /// An empty state machine that applies with `limits` until the log agrees on others. A replica starts
    /// every member from [`Limits::default`], so that they all apply the same log the same way.
    pub fn new(limits: Limits) -> Self {
        StateMachine {
            kvs: BTreeMap::new(),
            size_bytes: 0,
            sessions: Sessions::default(),
            members: BTreeMap::new(),
            history: History {
                first_revision: 1,
                ..History::default()
            },
            leases: Leases::default(),
            compact_revision: 0,
            applied: 0,
            clock_ms: 0,
            limits,
            evict_pending_result: false,
            torn_txn: false,
        }
    }

    /// Switches on the deliberate bug that evicts a session's lowest unacknowledged result when it is full,
    /// instead of refusing the new write (`reinado-sim --bug evict-pending-result`).
    pub fn set_evict_pending_result(&mut self, on: bool) {
        self.evict_pending_result = on;
    }

    /// Switches on the deliberate bug that applies only the first write of a transaction's branch
    /// (`reinado-sim --bug torn-txn`): the other keys of a multi-key transaction keep their old values.
    pub fn set_torn_txn(&mut self, on: bool) {
        self.torn_txn = on;
    }

    /// The last index applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Bytes of keys and values stored.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The quota on [`StateMachine::size_bytes`].
    pub fn quota_bytes(&self) -> u64 {
        self.limits.quota_bytes
    }

    /// The limits it applies with: the last ones the log agreed on.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The members' addresses, as the log recorded them.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberContext> {
        &self.members
    }

    /// Applies one committed entry. Returns the write's outcome for a client command.
    pub fn apply(&mut self, entry: &Entry) -> Option<WriteOutcome> {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "entries are applied in order without gaps"
        );
        self.applied = entry.index;
        match entry.kind {
            EntryKind::ConfChange => {
                if let Some(cc) = ConfChange::decode(&entry.data) {
                    self.apply_member_change(&cc);
                }
                None
            }
            EntryKind::Normal if entry.data.is_empty() => None,
            // The leader only proposes commands it encoded itself; anything else is skipped, identically on
            // every replica, rather than taking the node down.
            EntryKind::Normal => match Command::decode(entry.data.as_slice()) {
                Ok(Command {
                    op: Some(command::Op::MembersStarted(started)),
                    ..
                }) => {
                    self.mark_started(&started.ids);
                    None
                }
                Ok(Command {
                    op: Some(command::Op::SetLimits(limits)),
                    ..
                }) => {
                    self.set_limits(entry.index, &limits);
                    None
                }
                Ok(cmd) => Some(self.apply_command(entry.index, cmd)),
                Err(_) => None,
            },
        }
    }

    /// Applies limits the log agreed on; out-of-bounds ones are refused, identically on every member.
    fn set_limits(&mut self, index: Index, proposed: &StateLimits) {
        match Limits::from_proto(proposed) {
            Ok(limits) => self.limits = limits,
            Err(e) => tracing::warn!(index, "limits refused: {e}; the earlier ones stay"),
        }
    }

    /// Records that these members took part; ids that are not members (removed meanwhile) are skipped.
    fn mark_started(&mut self, ids: &[NodeId]) {
        for id in ids {
            if let Some(member) = self.members.get_mut(id) {
                member.started = true;
            }
        }
    }

    /// True if some member is recorded as having taken part: the cluster has run (a leader recorded it).
    pub fn any_started(&self) -> bool {
        self.members.values().any(|m| m.started)
    }

    /// True if member `id` is recorded as having taken part in the cluster: an empty data dir under its id is
    /// a lost disk, and it must be removed and added again rather than start over as a voter.
    pub fn started(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.started)
    }

    fn apply_member_change(&mut self, cc: &ConfChange) {
        match cc.kind {
            ConfChangeKind::Remove => {
                self.members.remove(&cc.node_id);
            }
            ConfChangeKind::AddLearner | ConfChangeKind::AddVoter => {
                let ctx = MemberContext::decode(cc.context.as_slice()).unwrap_or_default();
                let known = self.members.entry(cc.node_id).or_default();
                if !ctx.peer_addr.is_empty() {
                    known.peer_addr = ctx.peer_addr;
                }
                if !ctx.client_addr.is_empty() {
                    known.client_addr = ctx.client_addr;
                }
                // A learner added to stay one waits to be promoted; a voter is none.
                known.stay_learner = cc.kind == ConfChangeKind::AddLearner && ctx.stay_learner;
            }
        }
    }

    fn apply_command(&mut self, index: Index, cmd: Command) -> WriteOutcome {
        self.clock_ms = self.clock_ms.max(cmd.time_ms);
        let now = self.clock_ms;
        self.sessions.expire(now, &self.limits);
        let Some(id) = cmd.request_id.filter(|id| id.client_id != 0 && id.seq != 0) else {
            return self.execute(index, cmd.op);
        };
        // An unknown session is a new one only while its client has had no answer yet: clients number writes
        // from 1 and send as `acked` their lowest write still waiting (so 1, or 0, until an answer came in).
        // Above that, the session existed and was forgotten, and this write may be the retry of one applied
        // then: refuse it rather than run it twice. Writes of a client's first wave (all `acked <= 1`) are
        // the one case a forgotten session cannot protect; a TTL far above the clients' retry window (and
        // `max_sessions` above the number of active clients) keeps that from happening.
        if !self.sessions.map.contains_key(&id.client_id) && id.acked > 1 {
            return expired(&id);
        }
        let max_results = self.limits.max_results_per_session;
        let evict_pending = self.evict_pending_result;
        let session = self.sessions.touch(id.client_id, now);
        session.acknowledge(id.acked);
        let outcome = match session.admit(&id, max_results, evict_pending) {
            Some(answer) => answer,
            None => {
                let outcome = self.execute(index, cmd.op);
                let session = self.sessions.map.get_mut(&id.client_id);
                let session = session.expect("touched above");
                session.results.insert(id.seq, outcome.clone());
                outcome
            }
        };
        self.sessions.expire(now, &self.limits);
        outcome
    }

    /// Executes a write at revision `index`, unless it would take the store over its quota.
    fn execute(&mut self, index: Index, op: Option<command::Op>) -> WriteOutcome {
        let mut outcome = WriteOutcome {
            revision: index,
            ..WriteOutcome::default()
        };
        let ops: Vec<TxnOp> = match op {
            // Not a client's: applied by `apply` before sessions are looked at.
            None | Some(command::Op::MembersStarted(_)) | Some(command::Op::SetLimits(_)) => {
                return outcome;
            }
            Some(command::Op::LeaseGrant(grant)) => return self.grant_lease(index, grant),
            Some(command::Op::LeaseRevoke(revoke)) => return self.revoke_leases(index, revoke),
            Some(command::Op::EtcdTxn(txn)) => return self.apply_etcd_txn(index, txn),
            Some(command::Op::Compact(c)) => return self.compact(index, c.revision),
            Some(command::Op::Put(p)) => vec![TxnOp {
                op: Some(txn_op::Op::Put(p)),
            }],
            Some(command::Op::Delete(d)) => {
                outcome.deleted = self.kvs.contains_key(&d.key);
                vec![TxnOp {
                    op: Some(txn_op::Op::Delete(d)),
                }]
            }
            Some(command::Op::Txn(txn)) => {
                outcome.succeeded = txn.compare.iter().all(|c| self.compare(c));
                let mut ops = if outcome.succeeded {
                    txn.success
                } else {
                    txn.failure
                };
                if self.torn_txn {
                    ops.truncate(1);
                }
                ops
            }
        };
        let grows_by = self.size_delta(&ops);
        if grows_by > 0 && self.size_bytes.saturating_add(grows_by as u64) > self.limits.quota_bytes
        {
            let why = format!(
                "database quota of {} bytes reached ({} bytes stored)",
                self.limits.quota_bytes, self.size_bytes
            );
            return refusal(Refusal::Quota, why);
        }
        for op in ops {
            match op.op {
                Some(txn_op::Op::Put(p)) => self.put(index, p.key, p.value, 0),
                Some(txn_op::Op::Delete(d)) => self.delete(index, d.key),
                None => {}
            }
        }
        outcome
    }

    /// Grants a lease: the id asked for, or (0) the entry's index or the next free id above it, the same on
    /// every replica.
    fn grant_lease(&mut self, index: Index, grant: LeaseGrant) -> WriteOutcome {
        if self.leases.len() >= self.limits.max_leases {
            let why = format!(
                "etcdserver: too many leases: {} are held, the most allowed (REINADO_MAX_LEASES)",
                self.leases.len()
            );
            return refusal(Refusal::LeaseLimit, why);
        }
        let id = if grant.id != 0 {
            grant.id
        } else {
            let mut id = i64::try_from(index).unwrap_or(i64::MAX).max(1);
            while self.leases.contains(id) {
                id = id.checked_add(1).unwrap_or(1);
            }
            id
        };
        if id <= 0 || grant.ttl_s <= 0 {
            let why = format!("lease id {id} and TTL {}s must be positive", grant.ttl_s);
            return refusal(Refusal::None, why);
        }
        if self.leases.contains(id) {
            let why = "etcdserver: lease already exists".to_string();
            return refusal(Refusal::LeaseExists, why);
        }
        self.leases.grant(id, grant.ttl_s);
        WriteOutcome {
            revision: index,
            lease_id: id,
            lease_ttl: grant.ttl_s,
            ..WriteOutcome::default()
        }
    }

    /// Revokes leases and deletes their keys at revision `index`. A client's revoke of a lease that does not
    /// exist is refused; a leader's expiry of one that is gone already (revoked meanwhile) skips it.
    fn revoke_leases(&mut self, index: Index, revoke: LeaseRevoke) -> WriteOutcome {
        if !revoke.expired && revoke.ids.iter().any(|&id| !self.leases.contains(id)) {
            let why = "etcdserver: requested lease not found".to_string();
            return refusal(Refusal::LeaseNotFound, why);
        }
        for id in revoke.ids {
            let Some(lease) = self.leases.remove(id) else {
                continue;
            };
            for key in lease.keys {
                self.delete(index, key);
            }
        }
        WriteOutcome {
            revision: index,
            ..WriteOutcome::default()
        }
    }

    /// The leases, for `Lease.LeaseLeases` and the leader's expiry clock.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// How many bytes `ops` would add (negative if they free space). Keys in one transaction are distinct
    /// (the API refuses duplicates), so each op's effect is independent.
    fn size_delta(&self, ops: &[TxnOp]) -> i64 {
        ops.iter()
            .map(|op| match &op.op {
                Some(txn_op::Op::Put(p)) => {
                    let old = self.kvs.get(&p.key).map(|r| r.value.len() + p.key.len());
                    (p.key.len() + p.value.len()) as i64 - old.unwrap_or(0) as i64
                }
                Some(txn_op::Op::Delete(d)) => {
                    -(self
                        .kvs
                        .get(&d.key)
                        .map_or(0, |r| r.value.len() + d.key.len()) as i64)
                }
                None => 0,
            })
            .sum()
    }

    /// Writes `key` at `revision`, attached to `lease` (0: none; an existing lease, checked by the caller).
    /// The only way a key is written: it keeps the size, the lease's key set and the history in step.
    fn put(&mut self, revision: u64, key: Vec<u8>, value: Vec<u8>, lease: i64) {
        let added = (key.len() + value.len()) as u64;
        let old = self.kvs.remove(&key);
        let prev_kv = old.as_ref().map(|r| r.to_etcd(&key));
        let record = match old {
            Some(old) => {
                self.size_bytes -= (key.len() + old.value.len()) as u64;
                if old.lease != lease {
                    self.leases.detach(old.lease, &key);
                }
                Record {
                    value,
                    create_revision: old.create_revision,
                    mod_revision: revision,
                    version: old.version + 1,
                    lease,
                }
            }
            None => Record {
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease,
            },
        };
        if lease != 0 {
            self.leases.attach(lease, &key);
        }
        self.size_bytes += added;
        let event = mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(record.to_etcd(&key)),
            prev_kv,
        };
        self.kvs.insert(key, record);
        self.history
            .push(revision, event, self.limits.history_bytes);
    }

    /// Deletes `key` at `revision`. The only way a key is deleted (see [`StateMachine::put`]).
    fn delete(&mut self, revision: u64, key: Vec<u8>) {
        let Some(old) = self.kvs.remove(&key) else {
            return;
        };
        self.size_bytes -= (key.len() + old.value.len()) as u64;
        self.leases.detach(old.lease, &key);
        let event = mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                mod_revision: revision as i64,
                key: key.clone(),
                ..mvccpb::KeyValue::default()
            }),
            prev_kv: Some(old.to_etcd(&key)),
        };
        self.history
            .push(revision, event, self.limits.history_bytes);
    }

    /// Evaluates one transaction condition against the current state.
    fn compare(&self, c: &Compare) -> bool {
        let record = self.kvs.get(&c.key);
        let op = CompareOp::try_from(c.op).unwrap_or(CompareOp::Unspecified);
        let ordering = match CompareTarget::try_from(c.target) {
            Ok(CompareTarget::Value) => match record {
                Some(r) => r.value.as_slice().cmp(c.value.as_slice()),
                None => return false,
            },
            Ok(CompareTarget::Version) => record.map_or(0, |r| r.version).cmp(&c.number),
            Ok(CompareTarget::CreateRevision) => {
                record.map_or(0, |r| r.create_revision).cmp(&c.number)
            }
            Ok(CompareTarget::ModRevision) => record.map_or(0, |r| r.mod_revision).cmp(&c.number),
            Ok(CompareTarget::Exists) => record.is_some().cmp(&c.exists),
            Ok(CompareTarget::Unspecified) | Err(_) => return false,
        };
        match op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Less => ordering.is_lt(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Unspecified => false,
        }
    }

    /// The current value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.kvs.get(key).map(|r| r.to_kv(key, false))
    }

    /// The keys in `q`, in order, and whether more matched than `q.limit`.
    pub fn range(&self, q: &RangeQuery) -> (Vec<KeyValue>, bool) {
        use std::ops::Bound;
        let upper = match &q.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let mut iter = self
            .kvs
            .range::<[u8], _>((Bound::Included(q.start.as_slice()), upper));
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut bytes = 0;
        for (k, r) in iter.by_ref() {
            if kvs.len() >= q.limit || (!kvs.is_empty() && bytes >= q.max_bytes) {
                return (kvs, true);
            }
            let kv = r.to_kv(k, q.keys_only);
            bytes += kv.key.len() + kv.value.len();
            kvs.push(kv);
        }
        (kvs, false)
    }

    /// The changes matching `filter` from revision `start` on, in revision order, whole revisions at a time,
    /// at most about `max_events`; and the revision to continue from.
    pub fn events_since(
        &self,
        start: u64,
        filter: &KeyFilter,
        max_events: usize,
    ) -> Result<(Vec<Event>, u64), Compacted> {
        self.history
            .since(
                start,
                self.applied,
                max_events,
                |k| filter.matches(k),
                v1_event,
            )
            .ok_or(Compacted {
                first_available: self.history.first_revision,
            })
    }

    /// The state machine's image in its checksummed envelope, for a Raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let image = StateSnapshot {
            kvs: self.kvs.iter().map(|(k, r)| r.to_kv(k, false)).collect(),
            sessions: self
                .sessions
                .map
                .iter()
                .map(|(&client_id, s)| SessionPb {
                    client_id,
                    acked: s.acked,
                    last_active_ms: s.last_active_ms,
                    results: s
                        .results
                        .iter()
                        .map(|(&seq, o)| SessionResult {
                            seq,
                            outcome: Some(o.clone()),
                        })
                        .collect(),
                })
                .collect(),
            members: self
                .members
                .iter()
                .map(|(&id, ctx)| MemberAddress {
                    id,
                    context: Some(ctx.clone()),
                })
                .collect(),
            clock_ms: self.clock_ms,
            limits: Some(self.limits.to_proto()),
            leases: self
                .leases
                .iter()
                .map(|(id, l)| LeaseRecord { id, ttl_s: l.ttl_s })
                .collect(),
            compact_revision: self.compact_revision,
        };
        envelope::seal(&image.encode_to_vec())
    }

    /// Rebuilds the state machine from a snapshot taken at `index`, refusing one whose envelope is damaged.
    /// The limits are the image's (the defaults for an image written before they were agreed through the
    /// log). The change history starts after it.
    pub fn restore(data: &[u8], index: Index) -> Result<Self, BadSnapshot> {
        let image = StateSnapshot::decode(envelope::open(data)?)?;
        check_image(&image)?;
        let limits = image
            .limits
            .as_ref()
            .and_then(|l| Limits::from_proto(l).ok());
        let mut sm = StateMachine::new(limits.unwrap_or_default());
        for l in &image.leases {
            sm.leases.grant(l.id, l.ttl_s);
        }
        for kv in image.kvs {
            sm.leases.attach(kv.lease, &kv.key);
            sm.size_bytes += (kv.key.len() + kv.value.len()) as u64;
            let record = Record {
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            };
            sm.kvs.insert(kv.key, record);
        }
        for s in image.sessions {
            let session = Session {
                acked: s.acked,
                last_active_ms: s.last_active_ms,
                results: s
                    .results
                    .into_iter()
                    .map(|r| (r.seq, r.outcome.unwrap_or_default()))
                    .collect(),
            };
            sm.sessions
                .by_activity
                .insert((s.last_active_ms, s.client_id));
            sm.sessions.map.insert(s.client_id, session);
        }
        for m in image.members {
            sm.members.insert(m.id, m.context.unwrap_or_default());
        }
        sm.clock_ms = image.clock_ms;
        sm.applied = index;
        sm.compact_revision = image.compact_revision;
        sm.history.first_revision = index + 1;
        Ok(sm)
    }
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is none (the prefix is
/// empty or all 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

mod envelope;
mod etcd;
mod leases;
pub mod recipes;

pub use etcd::{COMPACTED, FUTURE_REVISION, Interval, RevisionError};
pub use leases::{Lease, Leases};

#[cfg(test)]
mod tests;
