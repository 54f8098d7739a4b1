//! Safety checkers run while the simulation goes (Figure 3 of the Raft paper): Election Safety, Log Matching,
//! Leader Completeness and State Machine Safety. Linearizability of the client history is checked at the end
//! by `linearizability.rs`.

use reinado_raft::{Index, NodeId, Raft, Term};
use std::collections::BTreeMap;

/// A cheap fingerprint of entry data (FNV-1a), so the checkers need not keep every payload.
pub fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the checkers have seen so far.
#[derive(Default)]
pub struct Checker {
    /// Election Safety: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry some node applied: index → (term, fingerprint, the highest term any leader was seen to
    /// lead when it was first applied). It was committed by a leader of a term no higher than that last.
    committed: BTreeMap<Index, (Term, u64, Term)>,
    /// The last index each node applied (or installed by snapshot), to check applying is gapless.
    applied: BTreeMap<NodeId, Index>,
}

impl Checker {
    /// Election Safety (at most one leader per term) and Leader Completeness (a leader holds every entry
    /// committed in an earlier term). A vote that arrives late can make a leader of an old term after a later
    /// term committed entries, so only the entries known committed by a leader of an earlier term are required.
    pub fn on_leader(&mut self, id: NodeId, term: Term, raft: &Raft) -> Result<(), String> {
        if let Some(&other) = self.leaders.get(&term)
            && other != id
        {
            return Err(format!(
                "Election Safety: nodes {other} and {id} both led term {term}"
            ));
        }
        self.leaders.insert(term, id);
        let snapshot_index = raft.snapshot().meta.index;
        for (&index, &(t, fp, by)) in self.committed.range(snapshot_index + 1..) {
            if by >= term {
                continue;
            }
            let held = raft.entry(index);
            if held.is_none_or(|e| e.term != t || fingerprint(&e.data) != fp) {
                return Err(format!(
                    "Leader Completeness: node {id}, leader of term {term}, lacks committed entry {index} \
                     (term {t}); it holds {:?}",
                    held.map(|e| e.term)
                ));
            }
        }
        Ok(())
    }

    /// State Machine Safety: no two nodes apply different entries at one index, and each applies in order.
    pub fn on_applied(
        &mut self,
        id: NodeId,
        index: Index,
        term: Term,
        data: &[u8],
    ) -> Result<(), String> {
        let last = self.applied.get(&id).copied().unwrap_or(0);
        if index != last + 1 {
            return Err(format!(
                "State Machine Safety: node {id} applied {index} after {last}"
            ));
        }
        self.applied.insert(id, index);
        let fp = fingerprint(data);
        match self.committed.get(&index) {
            Some(&(t, f, _)) if (t, f) != (term, fp) => Err(format!(
                "State Machine Safety: node {id} applied entry {index} of term {term}, another node applied \
                 one of term {t} there"
            )),
            Some(_) => Ok(()),
            None => {
                let by = self.leaders.keys().next_back().copied().unwrap_or(0);
                self.committed.insert(index, (term, fp, by));
                Ok(())
            }
        }
    }

    /// A node's state machine jumped to `index` by installing a snapshot, or restarted from one.
    pub fn on_state_reset(&mut self, id: NodeId, index: Index) {
        self.applied.insert(id, index);
    }

    /// The highest index any node applied.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}

/// Log Matching (§5.3): if two logs hold an entry with the same index and term, they are identical up to it.
pub fn check_log_matching(a: (NodeId, &Raft), b: (NodeId, &Raft)) -> Result<(), String> {
    let lo = a.1.snapshot().meta.index.max(b.1.snapshot().meta.index) + 1;
    let hi = a.1.status().last_index.min(b.1.status().last_index);
    let mut matched_above = None;
    for index in (lo..=hi).rev() {
        let (x, y) = (
            a.1.entry(index).expect("in range"),
            b.1.entry(index).expect("in range"),
        );
        if x.term == y.term && x.data != y.data {
            return Err(format!(
                "Log Matching: nodes {} and {} hold different entries at {index} in term {}",
                a.0, b.0, x.term
            ));
        }
        if x.term == y.term {
            matched_above.get_or_insert(index);
        } else if let Some(m) = matched_above {
            return Err(format!(
                "Log Matching: nodes {} and {} agree at {m} but differ at {index} (terms {} and {})",
                a.0, b.0, x.term, y.term
            ));
        }
    }
    Ok(())
}
