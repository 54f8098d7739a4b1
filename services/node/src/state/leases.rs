//! Leases (etcd's): a TTL granted through the log, and the keys attached to it, deleted with it.
//!
//! The state machine holds what every replica agrees on: which leases exist, their TTLs and their keys.
//! When a lease runs out is not replicated state: the leader keeps that clock (`replica::lessor`) and
//! proposes a revoke once a lease expired on it, so every replica deletes the same keys at the same entry.

use std::collections::{BTreeMap, BTreeSet};

/// One lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The TTL granted, in seconds.
    pub ttl_s: i64,
    /// The keys attached to it.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Every lease, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    map: BTreeMap<i64, Lease>,
}

impl Leases {
    /// True if lease `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        self.map.contains_key(&id)
    }

    /// Lease `id`.
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.map.get(&id)
    }

    /// How many leases exist.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if no lease exists.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every lease, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.map.iter().map(|(&id, l)| (id, l))
    }

    /// Creates lease `id` (which must not exist) with no keys.
    pub fn grant(&mut self, id: i64, ttl_s: i64) {
        self.map.insert(
            id,
            Lease {
                ttl_s,
                keys: BTreeSet::new(),
            },
        );
    }

    /// Removes lease `id`, returning the keys that were attached to it.
    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        self.map.remove(&id)
    }

    /// Attaches `key` to lease `id`; nothing if the lease does not exist (callers check first).
    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    /// Detaches `key` from lease `id` (0, or a lease that is gone: nothing).
    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}
