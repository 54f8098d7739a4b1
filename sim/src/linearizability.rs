//! Linearizability checker for key-value client histories.
//!
//! The simulator records, for every client request, when it was called, when it returned and what
//! it returned (or that the client timed out and the outcome is unknown). [`check`] decides whether
//! some sequential execution of the requests against a plain map explains every output while
//! respecting real time: an operation that returned before another was called must take effect
//! first (Herlihy & Wing's linearizability).
//!
//! # Algorithm
//!
//! - **Partition per independent object** (P-compositionality, Horn & Kroening, "Faster
//!   linearizability checking via P-compositionality", FORTE 2015). Linearizability is
//!   compositional: a history is linearizable iff the sub-history of every independent object is.
//!   Keys are grouped in fixed runs of [`GROUP_KEYS`], and a multi-key operation (a transaction, a
//!   read of a whole group) touches one group only; the objects are the connected components of keys
//!   that operations touch together, so a key no multi-key operation links to another is still
//!   searched alone. Each component is searched on its own, in the order of its lowest key, with its
//!   own step budget; the state of the model is its group's values ([`GroupState`]).
//! - **Wing & Gong search** (Wing & Gong, "Testing and verifying concurrent objects", JPDC 17(1),
//!   1993), in the shape of Porcupine (Athalye, <https://github.com/anishathalye/porcupine>,
//!   `checker.go`). Call and return entries live in one doubly linked list sorted by time. A
//!   depth-first search walks the list from its head: a call entry is an operation that may take
//!   effect next; if the model accepts its output, the operation is *linearized*: its call and
//!   return entries are lifted out of the list (dancing links) and the walk restarts. Reaching a
//!   return entry means an operation returned without having taken effect, so the search backtracks:
//!   it pops the last linearized operation, restores the state, puts the entries back and tries the
//!   next candidate after it.
//! - **Memoization** (Lowe, "Testing for linearizability", Concurrency and Computation: Practice and
//!   Experience 29(4), 2017). A configuration is the set of linearized operations (`Vec<u64>`
//!   bitsets) plus the model state. The future of the search depends only on it, so a configuration
//!   already explored without success is not explored again.
//!
//! # Operations with unknown outcome
//!
//! A timed-out request may take effect at any point after its call, or never; its output is
//! unconstrained and its `ret` is ignored (it never bounds another operation). It has a call entry
//! and no return entry. Reads of unknown outcome constrain nothing and are dropped. Without care,
//! every pending unknown write doubles the search on a failing history (each subset of them could
//! have happened, at many places), so the search is restricted to canonical linearizations, which
//! loses nothing:
//!
//! 1. Known operations are tried before unknown ones at each step (the candidate order only
//!    changes which linearization is found first).
//! 2. An unknown operation U is placed only if it changes the state, and only if the operation
//!    placed right after it depends on it: it would be rejected without U, or end in a different
//!    state without U, and it is not a no-op both with and without U. Otherwise U could be
//!    dropped (moved to the end: "never"), or moved one step later, without changing any output.
//! 3. Unknown operations that are identical after rule 4 are interchangeable once both are called,
//!    so only the earliest-called pending one of a kind is tried.
//! 4. A written value that no read returns and no CAS or transaction expects cannot be told apart
//!    from another such value, so all of them become one placeholder value; their states then share
//!    memo entries.
//! 5. Subsumption in the memo: a configuration is dead if one with the same known operations,
//!    state and rule-2 context, and a *subset* of its unknown operations, was explored without
//!    success (having used fewer of them, it could do everything this one can). Configurations are
//!    recorded when the search backtracks out of them, so only finished explorations prune.
//!
//! The memo key includes the state before the last operation when that one is unknown (rule 2
//! depends on it). The unit tests compare the checker with a brute-force search on many small
//! random histories (most outcomes unknown in one batch) to back these rules.
//!
//! # Time
//!
//! `call < ret` is required of every operation with a known outcome. When one operation's return
//! and another's call carry the same time, the call is ordered first: the two are treated as
//! concurrent, which can only accept more histories, never report a false violation. Entries at
//! equal time and kind keep history order.
//!
//! # Layout
//!
//! Public types and [`check`] / [`check_without`] / [`check_with`] first; then the model ([`apply_op`]), a partition's
//! preparation, the entry list, the search, the explanation of a violation, and the tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A key of the store.
pub type Key = u64;

/// A value of the store. The simulator writes each value at most once, which makes stale reads
/// recognisable; the checker is correct without it but finds violations faster with it.
pub type Value = u64;

/// Keys per group. Keys are grouped in fixed runs of this many (`key / GROUP_KEYS`): a multi-key
/// operation touches the keys of one group only, so that groups stay independent objects.
pub const GROUP_KEYS: usize = 3;

/// A group of keys (the keys `group * GROUP_KEYS ..` of it).
pub type Group = u64;

/// The state of a group: the value of each of its keys, by slot (`key % GROUP_KEYS`).
pub type GroupState = [Option<Value>; GROUP_KEYS];

/// The group `key` belongs to.
pub fn group_of(key: Key) -> Group {
    key / GROUP_KEYS as u64
}

/// The position of `key` in its group's state.
pub fn slot_of(key: Key) -> usize {
    (key % GROUP_KEYS as u64) as usize
}

/// The key at `slot` of `group`.
pub fn key_at(group: Group, slot: usize) -> Key {
    group * GROUP_KEYS as u64 + slot as u64
}

/// A transaction's condition on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    /// The key holds this value.
    Equals(Value),
    /// The key is absent.
    Absent,
}

/// A transaction's write of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Write {
    /// Sets the key to this value.
    Put(Value),
    /// Removes the key.
    Delete,
}

/// A multi-key transaction over one group: if every condition holds, the `success` writes are applied,
/// otherwise the `failure` writes; all at once. Slot `i` of each array is about key `key_at(group, i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Txn {
    /// The group whose keys it reads and writes.
    pub group: Group,
    /// The condition on each key, if any (none at all: the transaction always succeeds).
    pub compare: [Option<Cond>; GROUP_KEYS],
    /// The writes if every condition holds.
    pub success: [Option<Write>; GROUP_KEYS],
    /// The writes otherwise.
    pub failure: [Option<Write>; GROUP_KEYS],
}

impl Txn {
    /// Whether every condition holds in `state`.
    pub fn holds(&self, state: &GroupState) -> bool {
        self.compare
            .iter()
            .zip(state)
            .all(|(cond, value)| match cond {
                None => true,
                Some(Cond::Equals(v)) => *value == Some(*v),
                Some(Cond::Absent) => value.is_none(),
            })
    }

    /// The slots the transaction compares or may write.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..GROUP_KEYS).filter(|&s| {
            self.compare[s].is_some() || self.success[s].is_some() || self.failure[s].is_some()
        })
    }
}

/// A client request against the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Sets `key` to `value`. Always succeeds.
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Reads the current value of `key`.
    Get {
        /// The key read.
        key: Key,
    },
    /// Removes `key`, reporting whether it existed.
    Delete {
        /// The key removed.
        key: Key,
    },
    /// If the current value of `key` equals `expected`, sets it to `new` (`None`: absent / delete).
    Cas {
        /// The key compared and swapped.
        key: Key,
        /// The value the key must hold for the swap to happen (`None`: the key must be absent).
        expected: Option<Value>,
        /// The value after a successful swap (`None`: the key is removed).
        new: Option<Value>,
    },
    /// A multi-key transaction (boxed in spirit: it is the largest variant, but stays `Copy`).
    Txn(Txn),
    /// Reads every key of `group` at one point in time.
    ReadGroup {
        /// The group read.
        group: Group,
    },
}

impl KvOp {
    /// The group of keys this operation touches.
    pub fn group(&self) -> Group {
        match *self {
            KvOp::Put { key, .. }
            | KvOp::Get { key }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => group_of(key),
            KvOp::Txn(txn) => txn.group,
            KvOp::ReadGroup { group } => group,
        }
    }

    /// The keys this operation reads or writes (those of a transaction's conditions and branches), at
    /// least one.
    pub fn keys(&self) -> Vec<Key> {
        match *self {
            KvOp::Put { key, .. }
            | KvOp::Get { key }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => vec![key],
            KvOp::Txn(txn) => {
                let keys: Vec<Key> = txn.slots().map(|s| key_at(txn.group, s)).collect();
                // One that names no key still has an output to check: it goes with its group's first key.
                match keys.is_empty() {
                    true => vec![key_at(txn.group, 0)],
                    false => keys,
                }
            }
            KvOp::ReadGroup { group } => (0..GROUP_KEYS).map(|s| key_at(group, s)).collect(),
        }
    }

    /// True if the operation only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, KvOp::Get { .. } | KvOp::ReadGroup { .. })
    }
}

/// What the store answered to a [`KvOp`] of the same variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A put was acknowledged.
    Put,
    /// The value read (`None`: the key was absent).
    Get(Option<Value>),
    /// A delete was acknowledged.
    Delete {
        /// Whether the key existed before the delete.
        existed: bool,
    },
    /// A CAS was acknowledged.
    Cas {
        /// Whether the swap happened.
        succeeded: bool,
    },
    /// A transaction was applied.
    Txn {
        /// Whether every condition held (the success branch was applied).
        succeeded: bool,
    },
    /// The values of a group's keys, by slot.
    ReadGroup(GroupState),
}

/// One client request as the simulator observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the request (only shown in explanations).
    pub client: u64,
    /// Logical time at which the request was issued.
    pub call: u64,
    /// Logical time at which the response arrived; `call < ret`. Ignored when `output` is `None`
    /// (by convention the simulator sets it to `u64::MAX`).
    pub ret: u64,
    /// The request.
    pub op: KvOp,
    /// The response, or `None` if the client timed out: the request may or may not have taken
    /// effect, at any time after `call`.
    pub output: Option<KvOutput>,
}

/// The sequential specification: applies `op` to its group in `state` and returns the group's new
/// state and the output a correct store gives. Every key starts absent (`None`).
pub fn apply_op(state: &GroupState, op: &KvOp) -> (GroupState, KvOutput) {
    let mut after = *state;
    let output = match *op {
        KvOp::Put { key, value } => {
            after[slot_of(key)] = Some(value);
            KvOutput::Put
        }
        KvOp::Get { key } => KvOutput::Get(state[slot_of(key)]),
        KvOp::Delete { key } => {
            after[slot_of(key)] = None;
            KvOutput::Delete {
                existed: state[slot_of(key)].is_some(),
            }
        }
        KvOp::Cas { key, expected, new } => {
            let succeeded = state[slot_of(key)] == expected;
            if succeeded {
                after[slot_of(key)] = new;
            }
            KvOutput::Cas { succeeded }
        }
        KvOp::Txn(txn) => {
            let succeeded = txn.holds(state);
            let branch = if succeeded { txn.success } else { txn.failure };
            for (value, write) in after.iter_mut().zip(branch) {
                match write {
                    Some(Write::Put(v)) => *value = Some(v),
                    Some(Write::Delete) => *value = None,
                    None => {}
                }
            }
            KvOutput::Txn { succeeded }
        }
        KvOp::ReadGroup { .. } => KvOutput::ReadGroup(*state),
    };
    (after, output)
}

/// Limits of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    /// Search steps allowed per partition (one step = one entry visited) before giving up with
    /// [`CheckError::Budget`].
    pub max_steps_per_key: u64,
}

/// The default of [`CheckConfig::max_steps_per_key`]: generous, about a second of search.
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 5_000_000;

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            max_steps_per_key: DEFAULT_MAX_STEPS_PER_KEY,
        }
    }
}

/// Why [`check`] did not accept a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The history of one partition has no linearization (boxed: a violation is large and rare).
    NotLinearizable(Box<Violation>),
    /// The search of a partition used up its step budget: the history may or may not be linearizable.
    Budget {
        /// The keys of the partition whose search was abandoned.
        keys: Vec<Key>,
        /// The budget that was exhausted.
        steps: u64,
    },
}

/// Proof material for a non-linearizable partition, meant for a human reading a failed simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The keys (of one group) whose operations cannot be linearized.
    pub keys: Vec<Key>,
    /// Their group.
    pub group: Group,
    /// One-sentence summary.
    pub message: String,
    /// Every operation on these keys that the search considered, as (index in the history, operation),
    /// in history order. Reads with unknown outcome are left out.
    pub ops: Vec<(usize, Operation)>,
    /// The longest linearizable prefix the search found, as history indices in linearization order.
    pub longest_prefix: Vec<usize>,
    /// The state of the group after `longest_prefix`.
    pub state_after_prefix: GroupState,
    /// History index of the first operation (by return time) left out of the prefix: it returned,
    /// so something had to take effect before then.
    pub deadline: usize,
    /// History indices of the operations that could take effect right after the prefix; each one
    /// either returns the wrong output there or leads to a dead end.
    pub stuck: Vec<usize>,
}

/// Checks `history` with the default [`CheckConfig`].
///
/// # Panics
///
/// If an operation with a known output has `call >= ret`, or its output is not of its op's
/// variant: both are bugs in the simulator, not in the system under test.
pub fn check(history: &[Operation]) -> Result<(), CheckError> {
    check_with(history, &BTreeSet::new(), &CheckConfig::default())
}

/// Checks `history` with the default [`CheckConfig`], leaving out the operations at the indices in
/// `left_out`: writes the system refused, which took no effect. A violation names operations by their
/// index in the whole `history`.
///
/// # Panics
///
/// As [`check`], for the operations not left out.
pub fn check_without(history: &[Operation], left_out: &BTreeSet<usize>) -> Result<(), CheckError> {
    check_with(history, left_out, &CheckConfig::default())
}

/// Checks that `history`, but for the operations at the indices in `left_out`, is linearizable,
/// partition by partition in ascending order of their lowest key, and returns the first partition that is
/// not (or whose search ran out of budget).
///
/// # Panics
///
/// As [`check`].
pub fn check_with(
    history: &[Operation],
    left_out: &BTreeSet<usize>,
    config: &CheckConfig,
) -> Result<(), CheckError> {
    let kept = || (0..history.len()).filter(|i| !left_out.contains(i));
    for index in kept() {
        validate(index, &history[index]);
    }
    let considered = kept().filter(|&i| {
        let operation = &history[i];
        // Reads of unknown outcome constrain nothing.
        operation.output.is_some() || !operation.op.is_read()
    });
    for (keys, indices) in partitions(history, considered) {
        let partition = Partition::new(history, indices);
        let mut search = Search::new(&partition.ops);
        match search.run(config.max_steps_per_key) {
            Outcome::Linearizable => {}
            Outcome::Budget => {
                let steps = config.max_steps_per_key;
                return Err(CheckError::Budget { keys, steps });
            }
            Outcome::NotLinearizable => {
                let longest: Vec<usize> = search
                    .longest
                    .iter()
                    .map(|&i| partition.history_index[i])
                    .collect();
                let violation = explain(keys, history, &partition.history_index, longest);
                return Err(CheckError::NotLinearizable(Box::new(violation)));
            }
        }
    }
    Ok(())
}

/// Splits the operations `indices` of `history` into independent objects: the connected components of
/// keys that some operation touches together (P-compositionality). A component lies inside one group,
/// since an operation touches one group only. Returns (the component's keys, ascending; its operations,
/// in history order), in ascending order of the lowest key.
fn partitions(
    history: &[Operation],
    indices: impl Iterator<Item = usize>,
) -> Vec<(Vec<Key>, Vec<usize>)> {
    let mut root: BTreeMap<Key, Key> = BTreeMap::new();
    fn find(root: &mut BTreeMap<Key, Key>, key: Key) -> Key {
        let parent = *root.entry(key).or_insert(key);
        if parent == key {
            return key;
        }
        let top = find(root, parent);
        root.insert(key, top);
        top
    }
    let indices: Vec<usize> = indices.collect();
    for &i in &indices {
        let keys = history[i].op.keys();
        let mut top = find(&mut root, keys[0]);
        for &key in &keys[1..] {
            let other = find(&mut root, key);
            // Union by the lower key, so that a component's root is its lowest key.
            let (low, high) = (top.min(other), top.max(other));
            root.insert(high, low);
            top = low;
        }
    }
    let mut components: BTreeMap<Key, (Vec<Key>, Vec<usize>)> = BTreeMap::new();
    let keys: Vec<Key> = root.keys().copied().collect();
    for key in keys {
        let top = find(&mut root, key);
        components.entry(top).or_default().0.push(key);
    }
    for i in indices {
        let top = find(&mut root, history[i].op.keys()[0]);
        components
            .get_mut(&top)
            .expect("every key has a component")
            .1
            .push(i);
    }
    components.into_values().collect()
}

fn validate(index: usize, operation: &Operation) {
    let Some(output) = operation.output else {
        return;
    };
    assert!(
        operation.call < operation.ret,
        "history[{index}]: call {} must be before ret {}",
        operation.call,
        operation.ret
    );
    let kinds_match = matches!(
        (operation.op, output),
        (KvOp::Put { .. }, KvOutput::Put)
            | (KvOp::Get { .. }, KvOutput::Get(_))
            | (KvOp::Delete { .. }, KvOutput::Delete { .. })
            | (KvOp::Cas { .. }, KvOutput::Cas { .. })
            | (KvOp::Txn(_), KvOutput::Txn { .. })
            | (KvOp::ReadGroup { .. }, KvOutput::ReadGroup(_))
    );
    assert!(
        kinds_match,
        "history[{index}]: output {output:?} does not answer {:?}",
        operation.op
    );
}

// ---------------------------------------------------------------------------------------------
// One partition's operations, prepared for the search.

/// The model state of one partition: its group's keys.
type State = GroupState;

/// An operation as the search sees it (values canonicalized, rule 4 of the module docs).
struct SearchOp {
    call: u64,
    ret: u64,
    op: KvOp,
    output: Option<KvOutput>,
    /// Whether this operation's output or effect depends on the state before it. Configurations
    /// entered by an unknown operation that is not an observer are not memoized (see `backtrack`).
    observer: bool,
    /// For an unknown operation, the previous unknown operation (by call entry) identical to it:
    /// this one is tried only once that one is linearized (rule 3).
    same_before: Option<usize>,
}

impl SearchOp {
    fn known(&self) -> bool {
        self.output.is_some()
    }
}

struct Partition {
    /// Partition-local index -> history index.
    history_index: Vec<usize>,
    ops: Vec<SearchOp>,
}

impl Partition {
    fn new(history: &[Operation], history_index: Vec<usize>) -> Self {
        let canonical = Canonicalizer::new(history_index.iter().map(|&i| &history[i]));
        let mut ops: Vec<SearchOp> = history_index
            .iter()
            .map(|&i| {
                let operation = &history[i];
                let observer = match operation.op {
                    KvOp::Put { .. } => false,
                    KvOp::Get { .. } | KvOp::Delete { .. } | KvOp::ReadGroup { .. } => {
                        operation.output.is_some()
                    }
                    KvOp::Cas { .. } | KvOp::Txn(_) => true,
                };
                SearchOp {
                    call: operation.call,
                    ret: operation.ret,
                    op: canonical.op(operation.op),
                    output: operation.output,
                    observer,
                    same_before: None,
                }
            })
            .collect();
        link_identical_unknowns(&mut ops);
        Partition { history_index, ops }
    }
}

/// Sets `same_before` on unknown operations, in the order of their call entries.
fn link_identical_unknowns(ops: &mut [SearchOp]) {
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| !ops[i].known()).collect();
    order.sort_by_key(|&i| (ops[i].call, i));
    let mut last: HashMap<KvOp, usize> = HashMap::new();
    for i in order {
        ops[i].same_before = last.insert(ops[i].op, i);
    }
}

/// Maps every value that no read returns and no CAS or transaction expects to one placeholder (rule 4).
struct Canonicalizer {
    observed: HashSet<Value>,
    placeholder: Value,
}

impl Canonicalizer {
    fn new<'h>(operations: impl Iterator<Item = &'h Operation>) -> Self {
        let mut observed = HashSet::new();
        for operation in operations {
            match operation.output {
                Some(KvOutput::Get(Some(value))) => {
                    observed.insert(value);
                }
                Some(KvOutput::ReadGroup(state)) => observed.extend(state.iter().flatten()),
                _ => {}
            }
            match operation.op {
                KvOp::Cas {
                    expected: Some(value),
                    ..
                } => {
                    observed.insert(value);
                }
                KvOp::Txn(txn) => observed.extend(txn.compare.iter().filter_map(|c| match c {
                    Some(Cond::Equals(value)) => Some(*value),
                    _ => None,
                })),
                _ => {}
            }
        }
        let placeholder = (0..=u64::MAX)
            .rev()
            .find(|v| !observed.contains(v))
            .expect("fewer than 2^64 values are observed");
        Canonicalizer {
            observed,
            placeholder,
        }
    }

    fn value(&self, value: Value) -> Value {
        if self.observed.contains(&value) {
            value
        } else {
            self.placeholder
        }
    }

    fn op(&self, op: KvOp) -> KvOp {
        match op {
            KvOp::Put { key, value } => KvOp::Put {
                key,
                value: self.value(value),
            },
            KvOp::Cas { key, expected, new } => KvOp::Cas {
                key,
                expected,
                new: new.map(|v| self.value(v)),
            },
            KvOp::Txn(txn) => KvOp::Txn(Txn {
                success: txn.success.map(|w| w.map(|w| self.write(w))),
                failure: txn.failure.map(|w| w.map(|w| self.write(w))),
                ..txn
            }),
            KvOp::Get { .. } | KvOp::Delete { .. } | KvOp::ReadGroup { .. } => op,
        }
    }

    fn write(&self, write: Write) -> Write {
        match write {
            Write::Put(value) => Write::Put(self.value(value)),
            Write::Delete => Write::Delete,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Porcupine's entry list.

const NIL: usize = usize::MAX;

/// Call and return entries in one doubly linked list sorted by (time, call before return, op).
/// Node 0 is the head sentinel; `NIL` ends the list. Lifted nodes keep their own links, so
/// `unlift` in reverse order of `lift` restores the list exactly (dancing links).
struct EntryList {
    prev: Vec<usize>,
    next: Vec<usize>,
    /// The partition-local operation of each node (unused for the head).
    op: Vec<usize>,
    /// For a call node, its return node (`NIL` when the outcome is unknown); `NIL` for returns.
    ret: Vec<usize>,
    is_call: Vec<bool>,
    /// Partition-local operation -> its call node.
    call_node: Vec<usize>,
}

impl EntryList {
    fn new(ops: &[SearchOp]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if op.known() {
                events.push((op.ret, true, i));
            }
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut list = EntryList {
            prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            next: (1..=nodes)
                .map(|n| if n == nodes { NIL } else { n })
                .collect(),
            op: vec![NIL; nodes],
            ret: vec![NIL; nodes],
            is_call: vec![false; nodes],
            call_node: vec![NIL; ops.len()],
        };
        for (position, &(_, is_return, i)) in events.iter().enumerate() {
            let node = position + 1;
            list.op[node] = i;
            if is_return {
                list.ret[list.call_node[i]] = node;
            } else {
                list.is_call[node] = true;
                list.call_node[i] = node;
            }
        }
        list
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Removes a call node and its return node.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.ret[call] != NIL {
            self.unlink(self.ret[call]);
        }
    }

    /// Undoes the matching `lift`; must be called in reverse order of the lifts.
    fn unlift(&mut self, call: usize) {
        if self.ret[call] != NIL {
            self.relink(self.ret[call]);
        }
        self.relink(call);
    }
}

// ---------------------------------------------------------------------------------------------
// The search.

/// A fixed-size set of partition-local operation indices.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// Lowe's memo, with subsumption (rule 5): configurations explored without success, grouped by
/// (known operations linearized, state, [`Search::unknown_from`]). A configuration is dead if a
/// recorded one of its group linearized a subset of its unknown operations: having used fewer of
/// them, the recorded one could do everything this one can. Entries are added on backtrack, so
/// only finished explorations prune.
#[derive(Default)]
struct DeadConfigs {
    groups: HashMap<u64, Vec<DeadConfig>, BuildHasherDefault<FastHasher>>,
}

struct DeadConfig {
    known: Box<[u64]>,
    state: State,
    unknown_from: Option<State>,
    unknown: Box<[u64]>,
}

/// A configuration of the search, borrowed from it.
struct Config<'s> {
    known: &'s Bitset,
    unknown: &'s Bitset,
    state: State,
    unknown_from: Option<State>,
}

impl Config<'_> {
    fn group_hash(&self) -> u64 {
        let mut hasher = FastHasher::default();
        self.known.0.iter().for_each(|&word| hasher.write_u64(word));
        let before = self.unknown_from.unwrap_or([None; GROUP_KEYS]);
        let mut flags = u64::from(self.unknown_from.is_some());
        for value in self.state.iter().chain(&before) {
            hasher.write_u64(value.map_or(0, |v| v ^ 0x9e37_79b9_7f4a_7c15));
            flags = flags << 1 | u64::from(value.is_some());
        }
        hasher.write_u64(flags);
        hasher.finish()
    }
}

impl DeadConfigs {
    fn contains(&self, config: &Config<'_>) -> bool {
        let Some(group) = self.groups.get(&config.group_hash()) else {
            return false;
        };
        group.iter().any(|dead| {
            dead.state == config.state
                && dead.unknown_from == config.unknown_from
                && *dead.known == config.known.0[..]
                && dead
                    .unknown
                    .iter()
                    .zip(&config.unknown.0)
                    .all(|(d, c)| d & !c == 0)
        })
    }

    fn insert(&mut self, config: &Config<'_>) {
        let dead = DeadConfig {
            known: config.known.0.clone().into_boxed_slice(),
            state: config.state,
            unknown_from: config.unknown_from,
            unknown: config.unknown.0.clone().into_boxed_slice(),
        };
        self.groups
            .entry(config.group_hash())
            .or_default()
            .push(dead);
    }
}

/// FxHash's mixing step with a splitmix64 finalizer: SipHash would dominate the search's cost.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Trying operations with a known outcome.
    Known,
    /// Every known candidate failed: trying operations with an unknown outcome (rule 1).
    Unknown,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Linearizable,
    NotLinearizable,
    Budget,
}

/// What to restore when a linearized operation is popped.
struct Frame {
    call_node: usize,
    state: State,
    unknown_from: Option<State>,
}

struct Search<'p> {
    ops: &'p [SearchOp],
    list: EntryList,
    /// Linearized operations with a known outcome.
    known: Bitset,
    /// Linearized operations with an unknown outcome.
    unknown: Bitset,
    state: State,
    /// When the last linearized operation has an unknown outcome: the state before it (rule 2).
    unknown_from: Option<State>,
    stack: Vec<Frame>,
    dead: DeadConfigs,
    /// Known operations not yet linearized; at zero the search has succeeded (the remaining
    /// unknown ones take effect "never", i.e. at the end).
    known_left: usize,
    /// The longest stack seen when backtracking, as partition-local indices.
    longest: Vec<usize>,
    steps: u64,
}

impl<'p> Search<'p> {
    fn new(ops: &'p [SearchOp]) -> Self {
        Search {
            ops,
            list: EntryList::new(ops),
            known: Bitset::new(ops.len()),
            unknown: Bitset::new(ops.len()),
            state: [None; GROUP_KEYS],
            unknown_from: None,
            stack: Vec::new(),
            dead: DeadConfigs::default(),
            known_left: ops.iter().filter(|op| op.known()).count(),
            longest: Vec::new(),
            steps: 0,
        }
    }

    /// Porcupine's loop. The cursor walks call entries up to the first return entry, first for
    /// known operations, then again from the head for unknown ones; then it backtracks.
    fn run(&mut self, max_steps: u64) -> Outcome {
        let (mut node, mut phase) = (self.list.first(), Phase::Known);
        while self.known_left > 0 {
            self.steps += 1;
            if self.steps > max_steps {
                return Outcome::Budget;
            }
            let end_of_candidates = node == NIL || !self.list.is_call[node];
            if end_of_candidates && phase == Phase::Known {
                (node, phase) = (self.list.first(), Phase::Unknown);
            } else if end_of_candidates {
                match self.backtrack() {
                    Some(resume) => (node, phase) = resume,
                    None => return Outcome::NotLinearizable,
                }
            } else if self.try_linearize(node, phase) {
                (node, phase) = (self.list.first(), Phase::Known);
            } else {
                node = self.list.next[node];
            }
        }
        Outcome::Linearizable
    }

    /// Linearizes the operation of call node `node` if the phase and rules 2-3 allow it, the model
    /// accepts its output and the resulting configuration is new.
    fn try_linearize(&mut self, node: usize, phase: Phase) -> bool {
        let i = self.list.op[node];
        let op = &self.ops[i];
        let known = op.known();
        if known != (phase == Phase::Known) {
            return false;
        }
        if op.same_before.is_some_and(|j| !self.unknown.contains(j)) {
            return false;
        }
        let (state, actual) = apply_op(&self.state, &op.op);
        let accepted = match op.output {
            Some(output) => output == actual,
            None => state != self.state,
        };
        if !accepted || !self.depends_on_last_unknown(op, state) {
            return false;
        }
        let unknown_from = (!known).then_some(self.state);
        let set = if known {
            &mut self.known
        } else {
            &mut self.unknown
        };
        set.set(i);
        let config = Config {
            known: &self.known,
            unknown: &self.unknown,
            state,
            unknown_from,
        };
        if self.dead.contains(&config) {
            let set = if known {
                &mut self.known
            } else {
                &mut self.unknown
            };
            set.clear(i);
            return false;
        }
        self.stack.push(Frame {
            call_node: node,
            state: self.state,
            unknown_from: self.unknown_from,
        });
        (self.state, self.unknown_from) = (state, unknown_from);
        self.known_left -= usize::from(known);
        self.list.lift(node);
        true
    }

    /// Rule 2: right after an unknown operation U, an operation `op` (taking the state to `after`)
    /// is placed only if its output or effect depends on U. Otherwise U could be moved past `op`
    /// (`op` leaves both states alone) or dropped (`op` ends in the same state either way).
    fn depends_on_last_unknown(&self, op: &SearchOp, after: State) -> bool {
        let Some(before) = self.unknown_from else {
            return true;
        };
        let (after_without, output_without) = apply_op(&before, &op.op);
        if op.output.is_some_and(|output| output != output_without) {
            return true;
        }
        let droppable = after_without == after;
        let commutes = after_without == before && after == self.state;
        !droppable && !commutes
    }

    /// Pops the last linearized operation and returns where to resume: just after its call entry,
    /// in its phase. `None` when nothing is left to pop: no linearization exists.
    fn backtrack(&mut self) -> Option<(usize, Phase)> {
        if self.stack.len() > self.longest.len() {
            self.longest = self
                .stack
                .iter()
                .map(|f| self.list.op[f.call_node])
                .collect();
        }
        let frame = self.stack.pop()?;
        let i = self.list.op[frame.call_node];
        let known = self.ops[i].known();
        // After a blind unknown write (rule 2) only an operation depending on it may follow, so
        // that configuration is cheap to explore again and not worth remembering.
        if known || self.ops[i].observer {
            self.dead.insert(&Config {
                known: &self.known,
                unknown: &self.unknown,
                state: self.state,
                unknown_from: self.unknown_from,
            });
        }
        self.list.unlift(frame.call_node);
        let set = if known {
            &mut self.known
        } else {
            &mut self.unknown
        };
        set.clear(i);
        (self.state, self.unknown_from) = (frame.state, frame.unknown_from);
        self.known_left += usize::from(known);
        let phase = if known { Phase::Known } else { Phase::Unknown };
        Some((self.list.next[frame.call_node], phase))
    }
}

// ---------------------------------------------------------------------------------------------
// Explaining a violation.

/// Builds the [`Violation`] for the partition of `keys` from the longest prefix the search found
/// (history indices). The prefix is replayed with the original values, so the explanation shows real
/// values.
fn explain(
    keys: Vec<Key>,
    history: &[Operation],
    indices: &[usize],
    longest_prefix: Vec<usize>,
) -> Violation {
    let state_after_prefix = longest_prefix.iter().fold([None; GROUP_KEYS], |state, &h| {
        apply_op(&state, &history[h].op).0
    });
    let placed: HashSet<usize> = longest_prefix.iter().copied().collect();
    let left: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|h| !placed.contains(h))
        .collect();
    let deadline = left
        .iter()
        .copied()
        .filter(|&h| history[h].output.is_some())
        .min_by_key(|&h| (history[h].ret, h))
        .expect("a failed search leaves an operation with a known outcome unplaced");
    let deadline_ret = history[deadline].ret;
    let stuck: Vec<usize> = left
        .into_iter()
        .filter(|&h| history[h].call <= deadline_ret)
        .collect();
    let message = format!(
        "after the longest linearizable prefix found ({} of {} operations), none of the {} \
         operations that may take effect next leads to a linearization, yet #{} returned at t={}",
        longest_prefix.len(),
        indices.len(),
        stuck.len(),
        deadline,
        deadline_ret,
    );
    Violation {
        group: group_of(keys[0]),
        keys,
        message,
        ops: indices.iter().map(|&h| (h, history[h].clone())).collect(),
        longest_prefix,
        state_after_prefix,
        deadline,
        stuck,
    }
}

/// How many prefix operations a [`Violation`]'s `Display` shows (the last ones).
const SHOWN_PREFIX_OPS: usize = 20;

impl Violation {
    fn operation(&self, index: usize) -> &Operation {
        let position = self
            .ops
            .binary_search_by_key(&index, |(h, _)| *h)
            .expect("a violation refers only to its own operations");
        &self.ops[position].1
    }

    /// Why the operation at history index `index` cannot take effect right after the prefix.
    fn reason(&self, index: usize) -> String {
        let operation = self.operation(index);
        let (_, actual) = apply_op(&self.state_after_prefix, &operation.op);
        match operation.output {
            Some(output) if output != actual => format!("here it would return {actual}"),
            _ => "it could take effect here, but no linearization continues from it".to_string(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = self.ops.iter().filter(|(_, o)| o.output.is_none()).count();
        let keys = ShownKeys(&self.keys);
        writeln!(f, "{keys} not linearizable: {}", self.message)?;
        writeln!(
            f,
            "operations on them: {} ({} with unknown outcome)",
            self.ops.len(),
            unknown
        )?;
        let prefix = &self.longest_prefix;
        writeln!(
            f,
            "longest linearizable prefix found ({} ops), in order:",
            prefix.len()
        )?;
        let skipped = prefix.len().saturating_sub(SHOWN_PREFIX_OPS);
        if skipped > 0 {
            writeln!(f, "  ... {skipped} earlier ops")?;
        }
        for &h in &prefix[skipped..] {
            writeln!(f, "  {}", Shown(h, self.operation(h)))?;
        }
        let values: Vec<String> = self
            .keys
            .iter()
            .map(|&k| format!("{k} = {}", ShownValue(self.state_after_prefix[slot_of(k)])))
            .collect();
        writeln!(f, "after the prefix: {}", values.join(", "))?;
        let deadline = self.operation(self.deadline);
        writeln!(
            f,
            "#{} returned at t={}, so one of these had to take effect next, and none can:",
            self.deadline, deadline.ret
        )?;
        for &h in &self.stuck {
            writeln!(f, "  {}: {}", Shown(h, self.operation(h)), self.reason(h))?;
        }
        Ok(())
    }
}

/// Displays an operation with its history index.
struct Shown<'a>(usize, &'a Operation);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(index, operation) = *self;
        let (call, client) = (operation.call, operation.client);
        match operation.output {
            Some(output) => {
                let ret = operation.ret;
                write!(
                    f,
                    "#{index} client {client} [{call}, {ret}] {} -> {output}",
                    operation.op
                )
            }
            None => write!(
                f,
                "#{index} client {client} [{call}, ?] {} -> unknown",
                operation.op
            ),
        }
    }
}

struct ShownValue(Option<Value>);

/// "key K is" or "keys K1, K2 of group G are".
struct ShownKeys<'a>(&'a [Key]);

impl fmt::Display for ShownKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [key] => write!(f, "key {key} is"),
            keys => {
                let listed: Vec<String> = keys.iter().map(Key::to_string).collect();
                let group = keys.first().map_or(0, |&k| group_of(k));
                write!(f, "keys {} of group {group} are", listed.join(", "))
            }
        }
    }
}

impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |s: usize| key_at(self.group, s);
        let conds: Vec<String> = (0..GROUP_KEYS)
            .filter_map(|s| match self.compare[s]? {
                Cond::Equals(v) => Some(format!("{}=={v}", key(s))),
                Cond::Absent => Some(format!("{} absent", key(s))),
            })
            .collect();
        let writes = |branch: &[Option<Write>; GROUP_KEYS]| -> String {
            let shown: Vec<String> = (0..GROUP_KEYS)
                .filter_map(|s| match branch[s]? {
                    Write::Put(v) => Some(format!("put({}, {v})", key(s))),
                    Write::Delete => Some(format!("delete({})", key(s))),
                })
                .collect();
            shown.join(" ")
        };
        write!(
            f,
            "txn(if {} then {} else {})",
            conds.join(" && "),
            writes(&self.success),
            writes(&self.failure)
        )
    }
}

impl fmt::Display for ShownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => write!(f, "absent"),
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvOp::Put { key, value } => write!(f, "put({key}, {value})"),
            KvOp::Get { key } => write!(f, "get({key})"),
            KvOp::Delete { key } => write!(f, "delete({key})"),
            KvOp::Cas { key, expected, new } => {
                write!(
                    f,
                    "cas({key}, {} -> {})",
                    ShownValue(expected),
                    ShownValue(new)
                )
            }
            KvOp::Txn(txn) => write!(f, "{txn}"),
            KvOp::ReadGroup { group } => write!(f, "read(group {group})"),
        }
    }
}

impl fmt::Display for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvOutput::Put => write!(f, "ok"),
            KvOutput::Get(value) => write!(f, "{}", ShownValue(value)),
            KvOutput::Delete { existed: true } => write!(f, "existed"),
            KvOutput::Delete { existed: false } => write!(f, "was absent"),
            KvOutput::Cas { succeeded: true } => write!(f, "swapped"),
            KvOutput::Cas { succeeded: false } => write!(f, "not swapped"),
            KvOutput::Txn { succeeded: true } => write!(f, "succeeded"),
            KvOutput::Txn { succeeded: false } => write!(f, "failed"),
            KvOutput::ReadGroup(state) => {
                let values: Vec<String> =
                    state.iter().map(|v| ShownValue(*v).to_string()).collect();
                write!(f, "[{}]", values.join(", "))
            }
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NotLinearizable(violation) => violation.fmt(f),
            CheckError::Budget { keys, steps } => write!(
                f,
                "checking keys {keys:?} used up their budget of {steps} search steps; \
                 the history may or may not be linearizable"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    // -- Building histories by hand ----------------------------------------------------------

    fn known(client: u64, call: u64, ret: u64, op: KvOp, output: KvOutput) -> Operation {
        Operation {
            client,
            call,
            ret,
            op,
            output: Some(output),
        }
    }

    fn unknown(client: u64, call: u64, op: KvOp) -> Operation {
        Operation {
            client,
            call,
            ret: u64::MAX,
            op,
            output: None,
        }
    }

    fn put(client: u64, call: u64, ret: u64, key: Key, value: Value) -> Operation {
        known(client, call, ret, KvOp::Put { key, value }, KvOutput::Put)
    }

    fn get(client: u64, call: u64, ret: u64, key: Key, seen: Option<Value>) -> Operation {
        known(client, call, ret, KvOp::Get { key }, KvOutput::Get(seen))
    }

    fn delete(client: u64, call: u64, ret: u64, key: Key, existed: bool) -> Operation {
        known(
            client,
            call,
            ret,
            KvOp::Delete { key },
            KvOutput::Delete { existed },
        )
    }

    fn cas(
        client: u64,
        (call, ret): (u64, u64),
        key: Key,
        swap: (Option<Value>, Option<Value>),
        succeeded: bool,
    ) -> Operation {
        let (expected, new) = swap;
        known(
            client,
            call,
            ret,
            KvOp::Cas { key, expected, new },
            KvOutput::Cas { succeeded },
        )
    }

    fn violation(history: &[Operation]) -> Box<Violation> {
        match check(history) {
            Err(CheckError::NotLinearizable(violation)) => violation,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    // -- Hand-written histories --------------------------------------------------------------

    #[test]
    fn sequential_specification() {
        let (k, v) = (1, 5);
        let cas = |expected, new| KvOp::Cas {
            key: k,
            expected,
            new,
        };
        let swapped = |succeeded| KvOutput::Cas { succeeded };
        let cases = [
            (None, KvOp::Put { key: k, value: v }, Some(v), KvOutput::Put),
            (
                Some(4),
                KvOp::Get { key: k },
                Some(4),
                KvOutput::Get(Some(4)),
            ),
            (None, KvOp::Get { key: k }, None, KvOutput::Get(None)),
            (
                Some(4),
                KvOp::Delete { key: k },
                None,
                KvOutput::Delete { existed: true },
            ),
            (
                None,
                KvOp::Delete { key: k },
                None,
                KvOutput::Delete { existed: false },
            ),
            (Some(4), cas(Some(4), Some(v)), Some(v), swapped(true)),
            (Some(4), cas(Some(3), Some(v)), Some(4), swapped(false)),
            (Some(4), cas(None, Some(v)), Some(4), swapped(false)),
            (None, cas(None, Some(v)), Some(v), swapped(true)),
            (None, cas(Some(4), Some(v)), None, swapped(false)),
            (Some(4), cas(Some(4), None), None, swapped(true)),
        ];
        let one = |value| {
            let mut state = [None; GROUP_KEYS];
            state[slot_of(k)] = value;
            state
        };
        for (before, op, after, output) in cases {
            assert_eq!(
                apply_op(&one(before), &op),
                (one(after), output),
                "{op} on {before:?}"
            );
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            get(1, 0, 1, 7, None),
            put(1, 2, 3, 7, 10),
            get(2, 4, 5, 7, Some(10)),
            cas(1, (6, 7), 7, (Some(10), Some(11)), true),
            cas(2, (8, 9), 7, (Some(10), Some(12)), false),
            delete(1, 10, 11, 7, true),
            delete(2, 12, 13, 7, false),
            get(1, 14, 15, 7, None),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn concurrent_put_and_get_may_take_effect_in_either_order() {
        let old = [
            put(1, 0, 1, 1, 5),
            put(1, 2, 10, 1, 6),
            get(2, 3, 4, 1, Some(5)),
        ];
        let new = [
            put(1, 0, 1, 1, 5),
            put(1, 2, 10, 1, 6),
            get(2, 3, 4, 1, Some(6)),
        ];
        assert_eq!(check(&old), Ok(()));
        assert_eq!(check(&new), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_is_a_violation() {
        let history = [
            put(1, 0, 1, 1, 5),
            put(1, 2, 3, 1, 6),
            get(2, 4, 5, 1, Some(5)),
        ];
        let violation = violation(&history);
        assert_eq!(violation.keys, vec![1]);
        assert_eq!(violation.longest_prefix, vec![0, 1]);
        assert_eq!(violation.state_after_prefix[slot_of(1)], Some(6));
        assert_eq!((violation.deadline, violation.stuck.clone()), (2, vec![2]));
    }

    #[test]
    fn read_of_a_value_never_written_is_a_violation() {
        let history = [put(1, 0, 5, 3, 5), get(2, 1, 6, 3, Some(99))];
        assert_eq!(violation(&history).keys, vec![3]);
    }

    #[test]
    fn lost_update_via_cas_is_a_violation() {
        // Two concurrent increments from 1 both claim success: one update is lost.
        let history = [
            put(1, 0, 1, 1, 1),
            cas(1, (2, 6), 1, (Some(1), Some(2)), true),
            cas(2, (3, 7), 1, (Some(1), Some(3)), true),
        ];
        assert_eq!(violation(&history).keys, vec![1]);
        let one_fails = [
            put(1, 0, 1, 1, 1),
            cas(1, (2, 6), 1, (Some(1), Some(2)), true),
            cas(2, (3, 7), 1, (Some(1), Some(3)), false),
        ];
        assert_eq!(check(&one_fails), Ok(()));
    }

    #[test]
    fn delete_existed_mismatch_is_a_violation() {
        assert_eq!(
            violation(&[put(1, 0, 1, 1, 5), delete(2, 2, 3, 1, false)]).keys,
            vec![1]
        );
        assert_eq!(violation(&[delete(2, 2, 3, 1, true)]).keys, vec![1]);
        assert_eq!(
            check(&[put(1, 0, 4, 1, 5), delete(2, 1, 3, 1, false)]),
            Ok(())
        );
    }

    #[test]
    fn unknown_put_that_later_becomes_visible_is_linearizable() {
        let history = [
            put(1, 0, 1, 1, 5),
            unknown(1, 2, KvOp::Put { key: 1, value: 6 }),
            get(2, 10, 11, 1, Some(5)),
            get(2, 20, 21, 1, Some(6)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn unknown_put_never_visible_is_linearizable() {
        let history = [
            put(1, 0, 1, 1, 5),
            unknown(1, 2, KvOp::Put { key: 1, value: 6 }),
            get(2, 10, 11, 1, Some(5)),
            get(2, 20, 21, 1, Some(5)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn unknown_put_seen_then_older_value_seen_is_a_violation() {
        let history = [
            put(1, 0, 1, 1, 5),
            unknown(1, 2, KvOp::Put { key: 1, value: 6 }),
            get(2, 10, 11, 1, Some(6)),
            get(2, 20, 21, 1, Some(5)),
        ];
        let violation = violation(&history);
        assert_eq!(violation.longest_prefix, vec![0, 1, 2]);
        assert_eq!(violation.stuck, vec![3]);
    }

    /// A write the system refused took no effect: left out, a read that saw it is a violation (where the
    /// same write of unknown outcome could have taken effect), named by its index in the whole history.
    #[test]
    fn a_left_out_write_cannot_explain_a_read() {
        let refused_put = unknown(1, 0, KvOp::Put { key: 1, value: 6 });
        let history = [refused_put, get(2, 10, 11, 1, Some(6))];
        assert_eq!(check(&history), Ok(()));
        let refused = BTreeSet::from([0]);
        let Err(CheckError::NotLinearizable(violation)) = check_without(&history, &refused) else {
            panic!("a read of a refused write is accepted");
        };
        assert_eq!(violation.ops.len(), 1, "only the read is considered");
        assert_eq!(violation.stuck, vec![1]);
    }

    #[test]
    fn unknown_operations_chain_and_unknown_reads_are_ignored() {
        let history = [
            unknown(1, 0, KvOp::Put { key: 1, value: 5 }),
            unknown(
                2,
                1,
                KvOp::Cas {
                    key: 1,
                    expected: Some(5),
                    new: Some(6),
                },
            ),
            unknown(3, 2, KvOp::Get { key: 1 }),
            get(4, 3, 4, 1, Some(6)),
            unknown(1, 5, KvOp::Delete { key: 1 }),
            cas(2, (6, 7), 1, (None, Some(7)), true),
        ];
        assert_eq!(check(&history), Ok(()));
        let impossible = [
            unknown(1, 0, KvOp::Delete { key: 1 }),
            get(2, 1, 2, 1, Some(5)),
        ];
        assert_eq!(violation(&impossible).keys, vec![1]);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The get is called at the put's return time: ordered either way, so both reads pass.
        assert_eq!(check(&[put(1, 0, 5, 1, 5), get(2, 5, 6, 1, None)]), Ok(()));
        assert_eq!(
            violation(&[put(1, 0, 5, 1, 5), get(2, 6, 7, 1, None)]).keys,
            vec![1]
        );
    }

    #[test]
    fn keys_are_checked_independently_and_the_failing_key_is_named() {
        let history = [
            put(1, 0, 1, 1, 5),
            put(1, 2, 3, 2, 6),
            get(2, 4, 5, 1, Some(5)),
            get(2, 6, 7, 2, None),
        ];
        // Keys 1 and 2 share a group, but no multi-key operation links them: checked apart.
        assert_eq!(group_of(1), group_of(2));
        let violation = violation(&history);
        assert_eq!(violation.keys, vec![2]);
        assert!(violation.ops.iter().all(|(_, o)| o.op.keys() == vec![2]));
    }

    #[test]
    fn violation_display_names_prefix_and_stuck_operations() {
        let history = [
            put(1, 0, 1, 1, 5),
            put(1, 2, 3, 1, 6),
            get(2, 4, 5, 1, Some(5)),
        ];
        let text = CheckError::NotLinearizable(violation(&history)).to_string();
        println!("{text}");
        assert!(text.contains("key 1 is not linearizable"), "{text}");
        assert!(
            text.contains("#1 client 1 [2, 3] put(1, 6) -> ok"),
            "{text}"
        );
        assert!(text.contains("after the prefix: 1 = 6"), "{text}");
        assert!(
            text.contains("#2 client 2 [4, 5] get(1) -> 5: here it would return 6"),
            "{text}"
        );
    }

    #[test]
    fn exhausted_budget_is_reported_not_a_verdict() {
        let history = generate(7, &Shape::small());
        let config = CheckConfig {
            max_steps_per_key: 3,
        };
        assert!(matches!(
            check_with(&history, &BTreeSet::new(), &config),
            Err(CheckError::Budget { steps: 3, .. })
        ));
    }

    #[test]
    #[should_panic(expected = "call 5 must be before ret 5")]
    fn operation_returning_at_its_call_time_is_a_simulator_bug() {
        let _ = check(&[put(1, 5, 5, 1, 1)]);
    }

    // -- Randomized histories from a real store ----------------------------------------------

    /// splitmix64 (Steele, Lea & Flood 2014): a seeded PRNG for reproducible tests.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    struct Shape {
        ops: usize,
        keys: u64,
        clients: usize,
        /// Chance that a write times out (its effect then happens late, or never).
        unknown_write_percent: u64,
        /// Chance that an operation is a transaction or a read of a whole group.
        multi_key_percent: u64,
    }

    impl Shape {
        fn small() -> Shape {
            Shape {
                ops: 120,
                keys: 2,
                clients: 5,
                unknown_write_percent: 15,
                multi_key_percent: 0,
            }
        }

        /// Two groups' worth of keys, a third of the operations multi-key.
        fn multi_key() -> Shape {
            Shape {
                keys: 2 * GROUP_KEYS as u64,
                multi_key_percent: 35,
                ..Shape::small()
            }
        }
    }

    /// A store: each group's state.
    type Store = HashMap<Group, GroupState>;

    fn group_state(store: &Store, group: Group) -> GroupState {
        store.get(&group).copied().unwrap_or([None; GROUP_KEYS])
    }

    fn value_in(store: &Store, key: Key) -> Option<Value> {
        group_state(store, group_of(key))[slot_of(key)]
    }

    /// A real store run: each operation takes effect at a random time strictly inside its
    /// [call, ret] interval (timed-out writes: any time after the call, or never), and outputs are
    /// what the store returned. Values are unique. The result is linearizable by construction.
    fn generate(seed: u64, shape: &Shape) -> Vec<Operation> {
        let mut rng = SplitMix64(seed);
        let mut store = Store::new();
        let mut history: Vec<Operation> = Vec::new();
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let mut idle_at = vec![0u64; shape.clients];
        let mut time = 0;
        while history.len() < shape.ops || !effects.is_empty() {
            time += 1;
            apply_effects(&mut store, &mut history, &mut effects, time);
            for (client, idle) in (0..).zip(idle_at.iter_mut()) {
                if history.len() < shape.ops && *idle <= time && rng.percent(40) {
                    let (operation, effect_at, idle_again) =
                        new_operation(&mut rng, shape, (client, time), &store);
                    if let Some(at) = effect_at {
                        effects.push((at, history.len()));
                    }
                    history.push(operation);
                    *idle = idle_again;
                }
            }
        }
        history
    }

    fn apply_effects(
        store: &mut Store,
        history: &mut [Operation],
        effects: &mut Vec<(u64, usize)>,
        time: u64,
    ) {
        effects.sort_unstable();
        let due = effects.iter().take_while(|(at, _)| *at <= time).count();
        for (_, i) in effects.drain(..due) {
            let group = history[i].op.group();
            let (state, output) = apply_op(&group_state(store, group), &history[i].op);
            store.insert(group, state);
            if history[i].output.is_some() {
                history[i].output = Some(output);
            }
        }
    }

    /// A new operation called at `time`: (operation, when it takes effect, when its client is
    /// idle again). Values written are unique: a client calls at most one operation per tick.
    fn new_operation(
        rng: &mut SplitMix64,
        shape: &Shape,
        (client, time): (u64, u64),
        store: &Store,
    ) -> (Operation, Option<u64>, u64) {
        assert!(
            shape.clients <= 256,
            "values are ((time << 8) | client) << 3 | n"
        );
        let key = rng.below(shape.keys);
        let fresh = ((time << 8) | client) << 3;
        let op = if rng.percent(shape.multi_key_percent) {
            multi_key_op(rng, group_of(key), fresh, store)
        } else {
            match rng.below(10) {
                0..=3 => KvOp::Get { key },
                4..=5 => KvOp::Put { key, value: fresh },
                6 => KvOp::Delete { key },
                _ => KvOp::Cas {
                    key,
                    expected: if rng.percent(70) {
                        value_in(store, key)
                    } else {
                        None
                    },
                    new: if rng.percent(20) { None } else { Some(fresh) },
                },
            }
        };
        let is_write = !op.is_read();
        if is_write && rng.percent(shape.unknown_write_percent) {
            let effect_at = rng.percent(70).then(|| time + 1 + rng.below(40));
            return (
                unknown(client, time, op),
                effect_at,
                time + 2 + rng.below(8),
            );
        }
        let effect_at = time + 1 + rng.below(4);
        let ret = effect_at + 1 + rng.below(4);
        let placeholder = apply_op(&[None; GROUP_KEYS], &op).1;
        (
            known(client, time, ret, op, placeholder),
            Some(effect_at),
            ret + rng.below(2),
        )
    }

    /// A read of `group`, or a transaction over it whose conditions usually hold; it writes the values
    /// `fresh + 0..6`.
    fn multi_key_op(rng: &mut SplitMix64, group: Group, fresh: Value, store: &Store) -> KvOp {
        if rng.percent(40) {
            return KvOp::ReadGroup { group };
        }
        let state = group_state(store, group);
        let mut txn = Txn {
            group,
            compare: [None; GROUP_KEYS],
            success: [None; GROUP_KEYS],
            failure: [None; GROUP_KEYS],
        };
        #[allow(clippy::needless_range_loop)] // one index into four parallel arrays
        for s in 0..GROUP_KEYS {
            if rng.percent(50) {
                let current = if rng.percent(80) { state[s] } else { None };
                txn.compare[s] = Some(current.map_or(Cond::Absent, Cond::Equals));
            }
            if rng.percent(70) {
                txn.success[s] = Some(if rng.percent(20) {
                    Write::Delete
                } else {
                    Write::Put(fresh + s as u64)
                });
            }
            if rng.percent(30) {
                txn.failure[s] = Some(Write::Put(fresh + (GROUP_KEYS + s) as u64));
            }
        }
        KvOp::Txn(txn)
    }

    fn known_gets(history: &[Operation]) -> Vec<usize> {
        (0..history.len())
            .filter(|&i| matches!(history[i].op, KvOp::Get { .. }) && history[i].output.is_some())
            .collect()
    }

    /// Values written to `key` by operations known to have written them, with their op.
    fn known_writes(history: &[Operation], key: Key) -> Vec<(Value, &Operation)> {
        let written = |o: &Operation| match (o.op, o.output) {
            (KvOp::Put { value, .. }, Some(_)) => Some(value),
            (KvOp::Cas { new, .. }, Some(KvOutput::Cas { succeeded: true })) => new,
            _ => None,
        };
        history
            .iter()
            .filter(|o| o.op.keys() == [key])
            .filter_map(|o| written(o).map(|v| (v, o)))
            .collect()
    }

    /// A read changed to return a value that was certainly overwritten before the read was called:
    /// its writer returned before a known put was called, and that put returned before the read.
    fn make_definitely_stale(
        history: &[Operation],
        rng: &mut SplitMix64,
    ) -> Option<Vec<Operation>> {
        let mut choices = Vec::new();
        for g in known_gets(history) {
            let read = &history[g];
            let writes = known_writes(history, read.op.keys()[0]);
            let puts = writes
                .iter()
                .filter(|(_, o)| matches!(o.op, KvOp::Put { .. }));
            let overwriters: Vec<&Operation> = puts
                .map(|(_, o)| *o)
                .filter(|o| o.ret < read.call)
                .collect();
            for (value, writer) in &writes {
                if overwriters.iter().any(|w| writer.ret < w.call) {
                    choices.push((g, *value));
                }
            }
        }
        let (g, value) = *choices.get(rng.below(choices.len().max(1) as u64) as usize)?;
        let mut mutated = history.to_vec();
        mutated[g].output = Some(KvOutput::Get(Some(value)));
        Some(mutated)
    }

    /// A read changed to return some other value once written to its key before it returned:
    /// usually, but not always, impossible.
    fn make_maybe_stale(history: &[Operation], rng: &mut SplitMix64) -> Option<Vec<Operation>> {
        let mut choices = Vec::new();
        for g in known_gets(history) {
            let read = &history[g];
            for (value, writer) in known_writes(history, read.op.keys()[0]) {
                if writer.call < read.ret && read.output != Some(KvOutput::Get(Some(value))) {
                    choices.push((g, value));
                }
            }
        }
        let (g, value) = *choices.get(rng.below(choices.len().max(1) as u64) as usize)?;
        let mut mutated = history.to_vec();
        mutated[g].output = Some(KvOutput::Get(Some(value)));
        Some(mutated)
    }

    fn seeds() -> std::ops::Range<u64> {
        if cfg!(debug_assertions) {
            0..150
        } else {
            0..1000
        }
    }

    #[test]
    fn histories_of_a_real_store_are_linearizable() {
        for (shape, name) in [
            (Shape::small(), "single-key"),
            (Shape::multi_key(), "multi-key"),
        ] {
            for seed in seeds() {
                let history = generate(seed, &shape);
                if let Err(error) = check(&history) {
                    panic!("{name} seed {seed}: a real store's history was rejected:\n{error}");
                }
            }
        }
    }

    #[test]
    fn read_of_a_never_written_value_is_always_caught() {
        for seed in seeds() {
            let mut history = generate(seed, &Shape::small());
            let gets = known_gets(&history);
            let g = gets[SplitMix64(seed).below(gets.len() as u64) as usize];
            history[g].output = Some(KvOutput::Get(Some(u64::MAX - seed)));
            let violation = violation(&history);
            assert_eq!(violation.keys, history[g].op.keys(), "seed {seed}");
        }
    }

    #[test]
    fn definitely_stale_read_is_always_caught() {
        let mut mutated = 0;
        for seed in seeds() {
            let history = generate(seed, &Shape::small());
            let Some(history) = make_definitely_stale(&history, &mut SplitMix64(seed)) else {
                continue;
            };
            mutated += 1;
            assert!(
                matches!(check(&history), Err(CheckError::NotLinearizable(_))),
                "seed {seed}"
            );
        }
        assert!(
            mutated * 10 >= seeds().count() * 9,
            "only {mutated} seeds had a stale candidate"
        );
    }

    #[test]
    fn most_reads_of_an_older_value_are_caught() {
        let (mut mutated, mut caught) = (0, 0);
        for seed in seeds() {
            let history = generate(seed, &Shape::small());
            let Some(history) = make_maybe_stale(&history, &mut SplitMix64(seed)) else {
                continue;
            };
            mutated += 1;
            match check(&history) {
                Err(CheckError::NotLinearizable(_)) => caught += 1,
                Ok(()) => {}
                Err(error) => panic!("seed {seed}: {error}"),
            }
        }
        println!("caught {caught} of {mutated} reads changed to another written value");
        assert!(
            caught * 10 >= mutated * 8,
            "caught only {caught} of {mutated}"
        );
    }

    // -- Cross-check against brute force -----------------------------------------------------

    /// Tries every order of every subset of operations with unknown outcome: no pruning at all.
    fn brute_force(ops: &[Operation], placed: &mut [bool], store: &mut Store) -> bool {
        if (0..ops.len()).all(|i| placed[i] || ops[i].output.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            let blocked =
                |j: usize| !placed[j] && ops[j].output.is_some() && ops[j].ret < ops[i].call;
            if placed[i] || (0..ops.len()).any(blocked) {
                continue;
            }
            let group = ops[i].op.group();
            let before = group_state(store, group);
            let (after, output) = apply_op(&before, &ops[i].op);
            if ops[i].output.is_some_and(|o| o != output) {
                continue;
            }
            store.insert(group, after);
            placed[i] = true;
            let found = brute_force(ops, placed, store);
            placed[i] = false;
            store.insert(group, before);
            if found {
                return true;
            }
        }
        false
    }

    /// Up to `max_len` operations on `keys` keys with values in 1..=3 (not unique) and random
    /// outputs; `unknown_percent` of them time out, `multi_percent` are multi-key.
    fn tiny_random_history(
        rng: &mut SplitMix64,
        (max_len, keys, unknown_percent, multi_percent): TinyShape,
    ) -> Vec<Operation> {
        let len = 1 + rng.below(max_len);
        (0..len)
            .map(|client| {
                let (key, call) = (rng.below(keys), rng.below(12));
                let ret = call + 1 + rng.below(6);
                let (op, output) = if rng.percent(multi_percent) {
                    tiny_multi_key_op(rng, group_of(key))
                } else {
                    tiny_op(rng, key)
                };
                if rng.percent(unknown_percent) {
                    unknown(client, call, op)
                } else {
                    known(client, call, ret, op, output)
                }
            })
            .collect()
    }

    /// (most operations, keys, percent unknown, percent multi-key)
    type TinyShape = (u64, u64, u64, u64);

    fn tiny_value(rng: &mut SplitMix64) -> Option<Value> {
        (rng.percent(75)).then(|| 1 + rng.below(3))
    }

    fn tiny_op(rng: &mut SplitMix64, key: Key) -> (KvOp, KvOutput) {
        match rng.below(4) {
            0 => (
                KvOp::Put {
                    key,
                    value: 1 + rng.below(3),
                },
                KvOutput::Put,
            ),
            1 => (KvOp::Get { key }, KvOutput::Get(tiny_value(rng))),
            2 => (
                KvOp::Delete { key },
                KvOutput::Delete {
                    existed: rng.percent(50),
                },
            ),
            _ => {
                let (expected, new) = (tiny_value(rng), tiny_value(rng));
                (
                    KvOp::Cas { key, expected, new },
                    KvOutput::Cas {
                        succeeded: rng.percent(50),
                    },
                )
            }
        }
    }

    /// A read of the group (its output right for one of its keys at most) or a transaction on two
    /// of its keys.
    fn tiny_multi_key_op(rng: &mut SplitMix64, group: Group) -> (KvOp, KvOutput) {
        let first = rng.below(GROUP_KEYS as u64) as usize;
        let slots = [first, (first + 1) % GROUP_KEYS];
        if rng.percent(30) {
            let mut seen = [None; GROUP_KEYS];
            for s in slots {
                seen[s] = tiny_value(rng);
            }
            return (KvOp::ReadGroup { group }, KvOutput::ReadGroup(seen));
        }
        let mut txn = Txn {
            group,
            compare: [None; GROUP_KEYS],
            success: [None; GROUP_KEYS],
            failure: [None; GROUP_KEYS],
        };
        let write = |rng: &mut SplitMix64| tiny_value(rng).map_or(Write::Delete, Write::Put);
        for s in slots {
            if rng.percent(60) {
                txn.compare[s] = Some(tiny_value(rng).map_or(Cond::Absent, Cond::Equals));
            }
            txn.success[s] = Some(write(rng));
            txn.failure[s] = rng.percent(30).then(|| write(rng));
        }
        let succeeded = rng.percent(50);
        (KvOp::Txn(txn), KvOutput::Txn { succeeded })
    }

    /// Runs `cases` tiny histories of `shape` through both checkers; returns how many were
    /// linearizable.
    fn compare_with_brute_force(seed: u64, cases: usize, shape: TinyShape) -> usize {
        let mut rng = SplitMix64(seed);
        let mut linearizable = 0;
        for case in 0..cases {
            let history = tiny_random_history(&mut rng, shape);
            let expected =
                brute_force(&history, &mut vec![false; history.len()], &mut Store::new());
            let verdict = check(&history);
            assert_eq!(
                verdict.is_ok(),
                expected,
                "case {case}: {history:#?}\n{verdict:?}"
            );
            linearizable += usize::from(expected);
        }
        println!("{linearizable} of {cases} tiny histories of shape {shape:?} were linearizable");
        assert!(
            linearizable * 10 > cases && linearizable * 10 < cases * 9,
            "{linearizable} of {cases}"
        );
        linearizable
    }

    /// `release` cases in a release build, a tenth of them in a debug one.
    fn cases(release: usize) -> usize {
        if cfg!(debug_assertions) {
            release / 10
        } else {
            release
        }
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_random_histories() {
        compare_with_brute_force(2024, cases(100_000), (7, 2, 30, 0));
    }

    #[test]
    fn agrees_with_brute_force_when_most_outcomes_are_unknown() {
        compare_with_brute_force(2025, cases(50_000), (9, 1, 60, 0));
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_multi_key_histories() {
        compare_with_brute_force(2026, cases(100_000), (7, 4, 30, 40));
    }

    #[test]
    fn agrees_with_brute_force_on_multi_key_histories_of_unknown_outcome() {
        compare_with_brute_force(2027, cases(50_000), (8, 3, 60, 50));
    }

    // -- Multi-key operations -----------------------------------------------------------------

    /// A transaction over keys 0 and 1 (group 0) that writes `values` if key 0 holds `expected`.
    fn txn_writing(expected: Option<Value>, values: (Value, Value)) -> KvOp {
        let mut txn = Txn {
            group: 0,
            compare: [None; GROUP_KEYS],
            success: [None; GROUP_KEYS],
            failure: [None; GROUP_KEYS],
        };
        txn.compare[0] = Some(expected.map_or(Cond::Absent, Cond::Equals));
        txn.success[0] = Some(Write::Put(values.0));
        txn.success[1] = Some(Write::Put(values.1));
        txn.failure[1] = Some(Write::Delete);
        KvOp::Txn(txn)
    }

    fn txn(client: u64, (call, ret): (u64, u64), op: KvOp, succeeded: bool) -> Operation {
        known(client, call, ret, op, KvOutput::Txn { succeeded })
    }

    fn read_group(client: u64, (call, ret): (u64, u64), seen: GroupState) -> Operation {
        known(
            client,
            call,
            ret,
            KvOp::ReadGroup { group: 0 },
            KvOutput::ReadGroup(seen),
        )
    }

    #[test]
    fn transaction_specification() {
        let op = txn_writing(Some(5), (6, 7));
        let state = [Some(5), Some(1), Some(9)];
        let swapped = (
            [Some(6), Some(7), Some(9)],
            KvOutput::Txn { succeeded: true },
        );
        assert_eq!(apply_op(&state, &op), swapped);
        let failed = ([Some(4), None, Some(9)], KvOutput::Txn { succeeded: false });
        assert_eq!(apply_op(&[Some(4), Some(1), Some(9)], &op), failed);
        let read = KvOp::ReadGroup { group: 0 };
        assert_eq!(apply_op(&state, &read), (state, KvOutput::ReadGroup(state)));
    }

    #[test]
    fn atomic_transactions_and_group_reads_are_linearizable() {
        let history = [
            put(1, 0, 1, 0, 5),
            txn(1, (2, 6), txn_writing(Some(5), (6, 7)), true),
            // Concurrent with the transaction: all of it or none of it.
            read_group(2, (3, 4), [Some(5), None, None]),
            read_group(3, (3, 8), [Some(6), Some(7), None]),
            get(2, 7, 8, 1, Some(7)),
            // The condition no longer holds: the failure branch deletes key 1.
            txn(2, (9, 10), txn_writing(Some(5), (8, 9)), false),
            read_group(1, (11, 12), [Some(6), None, None]),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn torn_transaction_seen_half_applied_is_a_violation() {
        // The transaction said it succeeded, but only its first write is visible afterwards.
        let history = [
            txn(1, (0, 1), txn_writing(None, (6, 7)), true),
            read_group(2, (2, 3), [Some(6), None, None]),
        ];
        let violation = violation(&history);
        assert_eq!(
            (violation.keys.clone(), violation.group),
            (vec![0, 1, 2], 0)
        );
        assert_eq!(violation.stuck, vec![1]);
        let text = CheckError::NotLinearizable(violation).to_string();
        assert!(
            text.contains("keys 0, 1, 2 of group 0 are not linearizable"),
            "{text}"
        );
        assert!(
            text.contains("here it would return [6, 7, absent]"),
            "{text}"
        );
    }

    #[test]
    fn group_read_mixing_new_and_old_values_is_a_violation() {
        // Concurrent with the transaction, the read may see before or after, never a mix.
        for seen in [[Some(6), None, None], [None, Some(7), None]] {
            let history = [
                txn(1, (0, 10), txn_writing(None, (6, 7)), true),
                read_group(2, (2, 3), seen),
            ];
            assert_eq!(violation(&history).keys, vec![0, 1, 2], "{seen:?}");
        }
        for seen in [[None, None, None], [Some(6), Some(7), None]] {
            let history = [
                txn(1, (0, 10), txn_writing(None, (6, 7)), true),
                read_group(2, (2, 3), seen),
            ];
            assert_eq!(check(&history), Ok(()), "{seen:?}");
        }
    }

    #[test]
    fn single_key_reads_in_order_seeing_new_then_old_are_a_violation() {
        // Key 0 is read after the transaction, then key 1 before it: no order explains both.
        let history = [
            txn(1, (0, 10), txn_writing(None, (6, 7)), true),
            get(2, 2, 3, 0, Some(6)),
            get(2, 4, 5, 1, None),
        ];
        assert_eq!(violation(&history).keys, vec![0, 1]);
        let reversed = [
            txn(1, (0, 10), txn_writing(None, (6, 7)), true),
            get(2, 2, 3, 1, None),
            get(2, 4, 5, 0, Some(6)),
        ];
        assert_eq!(check(&reversed), Ok(()));
    }

    #[test]
    fn groups_are_independent_objects() {
        // A violation on group 1 is found whatever group 0 does; group 0's keys form one partition.
        let history = [
            txn(1, (0, 1), txn_writing(None, (6, 7)), true),
            read_group(2, (2, 3), [Some(6), Some(7), None]),
            put(1, 4, 5, 3, 5),
            get(2, 6, 7, 3, None),
        ];
        assert_eq!(violation(&history).keys, vec![3]);
        let parts = partitions(&history, 0..history.len());
        let keys: Vec<Vec<Key>> = parts.into_iter().map(|(keys, _)| keys).collect();
        assert_eq!(keys, vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn group_reads_changed_to_a_torn_state_are_mostly_caught() {
        let (mut mutated, mut caught) = (0, 0);
        for seed in seeds() {
            let mut history = generate(seed, &Shape::multi_key());
            let mut rng = SplitMix64(seed);
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].output, Some(KvOutput::ReadGroup(_))))
                .collect();
            let Some(&r) = reads.get(rng.below(reads.len().max(1) as u64) as usize) else {
                continue;
            };
            // One key as read, another as some other value once written there (or absent).
            let Some(KvOutput::ReadGroup(mut seen)) = history[r].output else {
                unreachable!("filtered above")
            };
            let slot = rng.below(GROUP_KEYS as u64) as usize;
            let key = key_at(history[r].op.group(), slot);
            let other = known_writes(&history, key)
                .into_iter()
                .map(|(v, _)| Some(v))
                .find(|&v| v != seen[slot]);
            seen[slot] = other.unwrap_or(None);
            if Some(KvOutput::ReadGroup(seen)) == history[r].output {
                continue;
            }
            history[r].output = Some(KvOutput::ReadGroup(seen));
            mutated += 1;
            match check(&history) {
                Err(CheckError::NotLinearizable(_)) => caught += 1,
                Ok(()) => {}
                Err(error) => panic!("seed {seed}: {error}"),
            }
        }
        println!("caught {caught} of {mutated} group reads changed on one key");
        assert!(mutated * 2 >= seeds().count(), "only {mutated} mutated");
        assert!(
            caught * 10 >= mutated * 7,
            "caught only {caught} of {mutated}"
        );
    }

    // -- Performance --------------------------------------------------------------------------

    #[test]
    fn two_thousand_ops_on_five_keys_check_quickly() {
        let ops = if cfg!(debug_assertions) { 500 } else { 2_000 };
        let shape = Shape {
            ops,
            keys: 5,
            clients: 10,
            unknown_write_percent: 10,
            multi_key_percent: 0,
        };
        let (mut slowest_ok, mut slowest_violation) = (Duration::ZERO, Duration::ZERO);
        for seed in 0..10 {
            let history = generate(seed, &shape);
            let start = Instant::now();
            assert_eq!(check(&history), Ok(()), "seed {seed}");
            slowest_ok = slowest_ok.max(start.elapsed());
            let Some(stale) = make_definitely_stale(&history, &mut SplitMix64(seed)) else {
                continue;
            };
            let start = Instant::now();
            let verdict = check(&stale);
            assert!(
                matches!(verdict, Err(CheckError::NotLinearizable(_))),
                "seed {seed}: {verdict:?}"
            );
            slowest_violation = slowest_violation.max(start.elapsed());
        }
        println!(
            "{ops} ops: slowest linearizable check {slowest_ok:?}, slowest violation {slowest_violation:?}"
        );
        let limit = Duration::from_millis(if cfg!(debug_assertions) { 2_000 } else { 100 });
        assert!(
            slowest_ok.max(slowest_violation) < limit,
            "{slowest_ok:?} / {slowest_violation:?}"
        );
    }
}
