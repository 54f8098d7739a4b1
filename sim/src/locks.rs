//! The lock checker: at most one holder at a time, in the order of the fencing tokens. A holder holds the
//! lock from the moment a node tells it its turn came until its key is deleted at the state machine (its
//! lease revoked or run out: the first replica to apply that). Two holders' spans must not overlap.
//!
//! The checker is conservative, never guessing: a turn is answered at some point between the request and
//! the answer, so it is a violation only if the holder's key was gone before it even asked, or if a key
//! created before it (a lower token) was still there when the answer was given.

use std::collections::BTreeMap;

/// Checks the lock holders' turns against the keys' deletions.
#[derive(Debug, Default)]
pub struct LockChecker {
    /// Each acknowledged contender: lease → the create revision of its key (its token).
    tokens: BTreeMap<i64, i64>,
    /// When a replica first applied the revoke of a lease, deleting its key (simulated time).
    deleted: BTreeMap<i64, u64>,
    /// Turns checked.
    pub grants: u64,
}

impl LockChecker {
    /// The contender with `lease` was told its key was created at `token`.
    pub fn claimed(&mut self, lease: i64, token: i64) {
        self.tokens.insert(lease, token);
    }

    /// A replica applied, at `now`, the revoke of `leases` (with their keys).
    pub fn revoked(&mut self, leases: &[i64], now: u64) {
        for &lease in leases {
            self.deleted.entry(lease).or_insert(now);
        }
    }

    /// The contender with `lease`, whose key was created at `token`, asked at `asked` and was told at
    /// `answered` that its turn came.
    pub fn granted(
        &mut self,
        lease: i64,
        token: i64,
        (asked, answered): (u64, u64),
    ) -> Result<(), String> {
        if let Some(&gone) = self.deleted.get(&lease)
            && gone <= asked
        {
            return Err(format!(
                "Lock: the holder of lease {lease:x} was told at {answered} ms that it holds the lock (token \
                 {token}), asked at {asked} ms, but its key was deleted at {gone} ms"
            ));
        }
        let earlier = self.tokens.iter().find(|&(&other, &t)| {
            other != lease && t < token && self.deleted.get(&other).is_none_or(|&d| d > answered)
        });
        if let Some((&other, &t)) = earlier {
            return Err(format!(
                "Lock: two holders: lease {lease:x} was told at {answered} ms that it holds the lock with token \
                 {token}, while the key of lease {other:x} (token {t}, created before it) was still there{}",
                self.deleted
                    .get(&other)
                    .map_or(String::new(), |d| format!(" (deleted at {d} ms)"))
            ));
        }
        self.grants += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_given_while_an_earlier_key_is_there_is_caught() {
        let mut c = LockChecker::default();
        c.claimed(1, 10);
        c.claimed(2, 12);
        assert!(c.granted(1, 10, (100, 110)).is_ok());
        let err = c.granted(2, 12, (120, 130)).unwrap_err();
        assert!(err.contains("two holders"), "{err}");
        // Lease 1's key went at 140: a turn answered at 140 or later is fine, one asked after is too.
        c.revoked(&[1], 140);
        assert!(c.granted(2, 12, (120, 140)).is_ok());
        assert_eq!(c.grants, 2);
    }

    #[test]
    fn a_turn_given_after_the_holders_own_key_went_is_caught() {
        let mut c = LockChecker::default();
        c.claimed(1, 10);
        c.revoked(&[1], 50);
        // Asked before the deletion: the answer may have been true when it was made.
        assert!(c.granted(1, 10, (50 - 1, 60)).is_ok());
        let err = c.granted(1, 10, (50, 60)).unwrap_err();
        assert!(err.contains("its key was deleted"), "{err}");
    }
}
