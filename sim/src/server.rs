//! One simulated Reinado node: a Raft core, a disk that loses what was not fsynced, the key-value state
//! machine, and the client requests it is serving. It is the same Ready loop the real node runs, with the disk
//! and the network replaced by the simulator's.

use crate::kv::{Command, Kv};
use crate::linearizability::{KvOp, KvOutput};
use reinado_raft::{
    Entry, EntryKind, HardState, Index, Message, Raft, Ready, Restore, Snapshot, Term,
};
use std::collections::BTreeMap;

/// What a client asked a node to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's command (its sequence number is reused by retries).
    pub cmd: Command,
    /// Which attempt of the client this is, so a late answer to an earlier attempt is recognised.
    pub attempt: u64,
}

/// A node's answer to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Done, with the state machine's output.
    Ok(KvOutput),
    /// Not the leader; try the given node, if known.
    NotLeader(Option<u64>),
    /// Could not be served now (leadership lost, proposal overwritten); retry.
    Retry,
}

/// What the node's disk holds durably.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// The hard state.
    pub hard_state: HardState,
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot.
    pub entries: Vec<Entry>,
}

impl Disk {
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let base = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let keep = first.index.saturating_sub(base + 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    fn install(&mut self, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        let matching = self
            .entries
            .iter()
            .position(|e| e.index == index && e.term == snapshot.meta.term);
        match matching {
            Some(pos) => drop(self.entries.drain(..=pos)),
            None => self.entries.clear(),
        }
        self.snapshot = Some(snapshot.clone());
    }

    /// Compacts after a snapshot taken by the application.
    fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = Some(snapshot);
    }
}

/// Everything a node did that the world must act on or check.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to peers.
    pub messages: Vec<Message>,
    /// Answers to clients: (client, request, response).
    pub replies: Vec<(Request, Response)>,
    /// Entries applied, in order, as (index, term, data).
    pub applied: Vec<(Index, Term, Vec<u8>)>,
    /// A snapshot was installed at this index.
    pub installed_snapshot: Option<Index>,
    /// A Ready was taken and waits for its fsync.
    pub sync_needed: bool,
    /// The node became leader of this term.
    pub became_leader: Option<Term>,
}

/// Simulator knobs that change how a node serves.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    /// Take a snapshot once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// Deliberate bug: answer reads from local state, without ReadIndex.
    pub read_without_read_index: bool,
}

/// One node.
pub struct Server {
    /// The consensus core.
    pub raft: Raft,
    /// What is durable.
    pub disk: Disk,
    /// The state machine (volatile: rebuilt from disk at restart).
    pub kv: Kv,
    /// The Ready waiting for its fsync.
    pending: Option<Ready>,
    /// Writes waiting to be applied: index → (term proposed in, request).
    writes: BTreeMap<Index, (Term, Request)>,
    /// Reads waiting for a read index: ctx → request.
    reads: BTreeMap<u64, Request>,
    /// Reads with a read index, waiting for it to be applied.
    reads_at: Vec<(Index, Request)>,
    next_ctx: u64,
    options: ServeOptions,
}

impl Server {
    /// Starts (or restarts) a node from what its disk holds.
    pub fn start(raft: Raft, disk: Disk, options: ServeOptions) -> Server {
        let kv = disk
            .snapshot
            .as_ref()
            .map_or_else(Kv::default, |s| Kv::decode(&s.data));
        Server {
            raft,
            disk,
            kv,
            pending: None,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_at: Vec::new(),
            next_ctx: 0,
            options,
        }
    }

    /// The restore material for a restart from this disk.
    pub fn restore_from(disk: &Disk) -> Restore {
        Restore {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.clone(),
            entries: disk.entries.clone(),
        }
    }

    /// Handles a client request.
    pub fn request(&mut self, req: Request, out: &mut Output) {
        match req.cmd.op {
            KvOp::Get { key } if self.options.read_without_read_index => {
                out.replies
                    .push((req, Response::Ok(KvOutput::Get(self.kv.get(key)))));
            }
            KvOp::Get { .. } => {
                self.next_ctx += 1;
                self.reads.insert(self.next_ctx, req);
                self.raft.read_index(self.next_ctx.to_le_bytes().to_vec());
            }
            _ => match self.raft.propose(req.cmd.encode()) {
                Ok((index, term)) => {
                    if let Some((_, old)) = self.writes.insert(index, (term, req)) {
                        out.replies.push((old, Response::Retry));
                    }
                }
                Err(reinado_raft::Error::NotLeader { leader }) => {
                    out.replies.push((req, Response::NotLeader(leader)))
                }
                Err(_) => out.replies.push((req, Response::Retry)),
            },
        }
        self.drive(out);
    }

    /// Takes the next Ready if none is waiting for its fsync: sends what may go at once.
    pub fn drive(&mut self, out: &mut Output) {
        if self.pending.is_some() || !self.raft.has_ready() {
            return;
        }
        let mut ready = self.raft.ready();
        if let Some(soft) = ready.soft_state
            && soft.role == reinado_raft::Role::Leader
        {
            out.became_leader = Some(self.raft.term());
        }
        out.messages.append(&mut ready.messages);
        self.pending = Some(ready);
        out.sync_needed = true;
    }

    /// The fsync of the waiting Ready completed: make it durable, advance, apply, answer.
    pub fn synced(&mut self, out: &mut Output) {
        let Some(ready) = self.pending.take() else {
            return;
        };
        if let Some(snapshot) = &ready.snapshot {
            self.disk.install(snapshot);
            self.kv = Kv::decode(&snapshot.data);
            out.installed_snapshot = Some(snapshot.meta.index);
            self.fail_writes_up_to(snapshot.meta.index, out);
        }
        self.disk.append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            self.disk.hard_state = hs;
        }
        let done = self.raft.advance(ready);
        out.messages.extend(done.messages);
        for entry in done.committed_entries {
            self.apply(entry, out);
        }
        for rs in done.read_states {
            self.read_state(rs.ctx, rs.index, out);
        }
        self.serve_reads(out);
        self.maybe_snapshot();
        self.drive(out);
    }

    /// A crash: what was not fsynced is lost, except that a prefix of the unsynced writes may have reached
    /// the disk anyway (`keep` entries of the waiting Ready, and its hard state if `keep_hard_state`).
    pub fn crash(mut self, keep: usize, keep_hard_state: bool) -> Disk {
        if let Some(ready) = self.pending.take()
            && ready.snapshot.is_none()
        {
            let kept = keep.min(ready.entries.len());
            self.disk.append(&ready.entries[..kept]);
            if keep_hard_state
                && kept == ready.entries.len()
                && let Some(hs) = ready.hard_state
            {
                self.disk.hard_state = hs;
            }
        }
        self.disk
    }

    /// The number of entries in the Ready waiting for its fsync.
    pub fn unsynced_entries(&self) -> usize {
        self.pending.as_ref().map_or(0, |r| r.entries.len())
    }

    fn apply(&mut self, entry: Entry, out: &mut Output) {
        let (index, term) = (entry.index, entry.term);
        let mut output = None;
        if entry.kind == EntryKind::Normal
            && let Some(cmd) = Command::decode(&entry.data)
        {
            output = Some(self.kv.apply(&cmd));
        }
        if let Some((proposed_term, req)) = self.writes.remove(&index) {
            let response = match output {
                Some(o) if proposed_term == term => Response::Ok(o),
                _ => Response::Retry,
            };
            out.replies.push((req, response));
        }
        out.applied.push((index, term, entry.data));
    }

    fn fail_writes_up_to(&mut self, index: Index, out: &mut Output) {
        let rest = self.writes.split_off(&(index + 1));
        for (_, (_, req)) in std::mem::replace(&mut self.writes, rest) {
            out.replies.push((req, Response::Retry));
        }
    }

    fn read_state(&mut self, ctx: Vec<u8>, index: Option<Index>, out: &mut Output) {
        let Ok(ctx) = <[u8; 8]>::try_from(ctx.as_slice()) else {
            return;
        };
        let Some(req) = self.reads.remove(&u64::from_le_bytes(ctx)) else {
            return;
        };
        match index {
            Some(index) => self.reads_at.push((index, req)),
            None => out.replies.push((req, Response::Retry)),
        }
    }

    fn serve_reads(&mut self, out: &mut Output) {
        if self.reads_at.is_empty() {
            return;
        }
        let applied = self.raft.applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.reads_at.drain(..).partition(|(i, _)| *i <= applied);
        self.reads_at = waiting;
        for (_, req) in ready {
            let KvOp::Get { key } = req.cmd.op else {
                continue;
            };
            out.replies
                .push((req, Response::Ok(KvOutput::Get(self.kv.get(key)))));
        }
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.raft.applied();
        let snapshot_index = self.raft.snapshot().meta.index;
        if self.options.snapshot_every == 0
            || applied < snapshot_index + self.options.snapshot_every
        {
            return;
        }
        let data = self.kv.encode();
        if let Ok(meta) = self.raft.compact(applied, data.clone()) {
            self.disk.compact(Snapshot { meta, data });
        }
    }
}
