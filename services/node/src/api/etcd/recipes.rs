//! What the Lock and Election services share, etcd's recipes run by the cluster: claim a contender's key,
//! wait for its turn, confirm it. What a claim and a turn are is a fact of the state (`state::recipes`),
//! which the simulator's lock holders run too; this is the waiting.

use super::{EtcdApi, validate};
use crate::error::NodeError;
use crate::state::recipes::{Turn, claim_txn, claimed, contenders_end};

/// The most changes looked at per wake-up while waiting for a turn (the rest the next time).
const EVENTS_PER_WAKE: usize = 256;

/// Refuses an empty name (etcd's own check would fail on the key).
pub(super) fn check_name(name: &[u8]) -> Result<(), NodeError> {
    if name.is_empty() {
        return Err(NodeError::InvalidArgument(
            "etcdserver: key is not provided (the lock or election name is empty)".into(),
        ));
    }
    Ok(())
}

impl EtcdApi {
    /// Creates `key` with `value` under `lease` unless it exists. Returns the key's create revision and,
    /// if it existed already, its value.
    pub(super) async fn claim(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<(i64, Option<Vec<u8>>), NodeError> {
        let txn = claim_txn(key, value, lease);
        validate::txn(&txn, &self.api.inner.limits)?;
        let (resp, revision) = self.propose_txn(txn).await?;
        match claimed(resp, revision) {
            Some(claim) => Ok(claim),
            // Deleted between the comparison and the range: impossible inside one transaction.
            None => Err(NodeError::Unavailable(
                "the contender's key vanished inside its own transaction; retry".into(),
            )),
        }
    }

    /// Waits until no key under `prefix` created before `rev` is left: `mine`'s turn. Fails if `mine` is
    /// deleted meanwhile (its lease ran out or was revoked), and when the node shuts down. Wakes up on every
    /// applied entry, but looks again only when a change touched `prefix`.
    pub(super) async fn wait_turn(
        &self,
        prefix: &[u8],
        mine: &[u8],
        rev: i64,
    ) -> Result<(), NodeError> {
        let end = contenders_end(prefix);
        let mut applied = self.api.inner.applied.clone();
        let mut shutdown = self.api.inner.shutdown.clone();
        let mut next = 0;
        loop {
            {
                let sm = self.state();
                let touched = next == 0
                    || match sm.etcd_events(next, prefix, &end, EVENTS_PER_WAKE) {
                        Ok((events, resume)) => {
                            next = resume;
                            !events.is_empty()
                        }
                        // History trimmed under us: look at the state itself.
                        Err(_) => {
                            next = sm.revision() + 1;
                            true
                        }
                    };
                if next == 0 {
                    next = sm.revision() + 1;
                }
                if touched {
                    match sm.turn(prefix, mine, rev) {
                        Turn::Mine => return Ok(()),
                        Turn::Gone => return Err(session_expired()),
                        Turn::Waiting => {}
                    }
                }
            }
            tokio::select! {
                changed = applied.changed() => changed.map_err(|_| NodeError::ShuttingDown)?,
                _ = shutdown.wait_for(|stop| *stop) => return Err(NodeError::ShuttingDown),
            }
        }
    }

    /// After a wait, confirms with a linearizable read that `mine` still exists: the turn is real.
    pub(super) async fn confirm_owned(&self, mine: &[u8]) -> Result<(), NodeError> {
        self.api.linearize().await?;
        match self.state().get(mine) {
            Some(_) => Ok(()),
            None => Err(session_expired()),
        }
    }
}

/// The contender's key is gone: its lease ran out or was revoked while it waited.
fn session_expired() -> NodeError {
    NodeError::FailedPrecondition(
        "the contender's key was deleted while it waited (its lease ran out or was revoked); grant a new \
         lease and try again"
            .into(),
    )
}
