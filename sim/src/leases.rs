//! The lease checker: a lease never runs out before its TTL has passed, on the clock of the leader that
//! granted or last renewed it, since that grant or renewal (acknowledged to its holder).
//!
//! Each node's clock runs at its own rate (a drift of a few parts per thousand); the checker measures the
//! time between the last acknowledged renewal and the expiry on the renewing node's clock. The expiry is
//! taken when the first replica applies the revoke that the leader proposed: later than the leader decided
//! it, so an early expiry shows as at least as early.

use reinado_raft::NodeId;
use std::collections::BTreeMap;

/// What the checker knows of one lease.
#[derive(Clone, Copy, Debug)]
struct Known {
    ttl_ms: u64,
    /// The last grant or renewal acknowledged: (simulated time, the node that made it).
    last: (u64, NodeId),
    expired: bool,
}

/// Checks lease expiry against grants and renewals.
#[derive(Debug, Default)]
pub struct LeaseChecker {
    leases: BTreeMap<i64, Known>,
    /// Expiries checked, and the smallest margin seen (ms of the renewing node's clock past the TTL).
    pub expiries: u64,
    /// The smallest margin seen between the TTL and an expiry, in milliseconds.
    pub min_margin_ms: Option<u64>,
}

/// A node's clock at simulated time `now`, running `ppm` parts per million fast (or slow, if negative).
pub fn clock_at(now: u64, ppm: i64) -> u64 {
    let skew = (now as i128 * ppm as i128) / 1_000_000;
    (now as i128 + skew).max(0) as u64
}

impl LeaseChecker {
    /// Lease `lease` was granted with `ttl_s` by `node` at `at`, or renewed then: acknowledged to its holder.
    pub fn renewed(&mut self, lease: i64, ttl_s: i64, node: NodeId, at: u64) {
        let ttl_ms = u64::try_from(ttl_s).unwrap_or(0) * 1000;
        let known = self.leases.entry(lease).or_insert(Known {
            ttl_ms,
            last: (at, node),
            expired: false,
        });
        if at >= known.last.0 {
            known.last = (at, node);
            known.ttl_ms = ttl_ms;
        }
    }

    /// A replica applied the expiry of `leases` at `now`; `ppm` gives each node's clock rate.
    pub fn expired(
        &mut self,
        leases: &[i64],
        now: u64,
        ppm: impl Fn(NodeId) -> i64,
    ) -> Result<(), String> {
        for id in leases {
            let Some(known) = self.leases.get_mut(id) else {
                continue; // never acknowledged to a holder: no promise was made
            };
            if known.expired {
                continue;
            }
            known.expired = true;
            let (at, node) = known.last;
            let rate = ppm(node);
            let elapsed = clock_at(now, rate).saturating_sub(clock_at(at, rate));
            if elapsed < known.ttl_ms {
                return Err(format!(
                    "Lease: lease {id:x} expired at {now} ms, {elapsed} ms on n{node}'s clock after n{node} \
                     last granted or renewed it (at {at} ms), before its TTL of {} ms",
                    known.ttl_ms
                ));
            }
            self.expiries += 1;
            let margin = elapsed - known.ttl_ms;
            self.min_margin_ms = Some(self.min_margin_ms.map_or(margin, |m| m.min(margin)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_before_the_ttl_on_the_renewing_clock_is_caught() {
        let mut c = LeaseChecker::default();
        c.renewed(7, 1, 1, 1_000);
        c.renewed(7, 1, 2, 1_500);
        // n2's clock runs 1% slow: 1,005 ms of simulated time are 994.95 ms on it.
        let err = c.expired(&[7], 2_505, |_| -10_000).unwrap_err();
        assert!(err.contains("before its TTL"), "{err}");
        let mut c = LeaseChecker::default();
        c.renewed(7, 1, 1, 1_000);
        assert!(c.expired(&[7], 2_001, |_| 0).is_ok());
        assert_eq!((c.expiries, c.min_margin_ms), (1, Some(1)));
    }
}
