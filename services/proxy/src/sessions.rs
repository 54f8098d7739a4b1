//! Request ids for the writes that reach the proxy without one, so the proxy's own retries apply them once.
//!
//! Not one session shared by every such write: the cluster keeps a session's results until the client
//! acknowledges them, and a session's `acked` is the lowest write still waiting, so one slow write would hold
//! back the acknowledgement of every later one until the session filled and the cluster refused new writes.
//! Instead a lane, a session of its own ([`RequestIds`]), carries one write at a time, and each write of a
//! lane acknowledges the lane's earlier ones: a lane's session holds at most one unacknowledged result. Lanes
//! are reused most recently freed first, so the proxy keeps about as many sessions in the cluster as it has
//! writes in flight at its busiest; a lane left idle starts a new session ([`RequestIds::RENEW_IDLE`]), and
//! one the cluster says expired is renewed.

use reinado_client::client::RequestIds;
use reinado_client::error::is_session_expired;
use reinado_proto::v1::RequestId;
use std::sync::{Arc, Mutex};

/// The free lanes, most recently freed last.
#[derive(Debug, Default)]
pub struct Lanes {
    free: Mutex<Vec<Arc<RequestIds>>>,
}

impl Lanes {
    /// No lanes yet: they are made as writes need them.
    pub fn new() -> Self {
        Lanes::default()
    }

    /// A request id on a free lane (a new lane if none is free); the lane is busy until the write ends.
    pub fn begin(self: &Arc<Self>) -> LaneWrite {
        let lane = self
            .free
            .lock()
            .expect("lanes lock")
            .pop()
            .unwrap_or_default();
        let id = lane.begin();
        LaneWrite {
            id,
            lane: Some(lane),
            lanes: Arc::clone(self),
        }
    }

    /// How many lanes are free.
    pub fn free(&self) -> usize {
        self.free.lock().expect("lanes lock").len()
    }
}

/// One write on a lane. Dropped without [`LaneWrite::finish`] (the request was cancelled), it counts as given
/// up on; either way the lane is freed.
#[derive(Debug)]
pub struct LaneWrite {
    /// The write's request id.
    pub id: RequestId,
    lane: Option<Arc<RequestIds>>,
    lanes: Arc<Lanes>,
}

impl LaneWrite {
    /// The write is answered: with `Ok` it was applied; a refusal because the session expired renews it.
    pub fn finish<T>(mut self, result: &Result<T, tonic::Status>) {
        if let Some(lane) = self.lane.take() {
            match result {
                Err(status) if is_session_expired(status) => lane.renew(&self.id),
                _ => lane.end(&self.id, result.is_ok()),
            }
            self.lanes.free.lock().expect("lanes lock").push(lane);
        }
    }
}

impl Drop for LaneWrite {
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            lane.end(&self.id, false);
            self.lanes.free.lock().expect("lanes lock").push(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writes_get_their_own_lanes_and_each_acknowledges_its_lane() {
        let lanes = Arc::new(Lanes::new());
        let (a, b) = (lanes.begin(), lanes.begin());
        assert_ne!(a.id.client_id, b.id.client_id, "one write per lane");
        let (a_id, b_id) = (a.id, b.id);
        a.finish::<()>(&Ok(()));
        // `b` is still in flight: the next write reuses `a`'s lane and acknowledges `a`, whatever `b` does.
        let c = lanes.begin();
        assert_eq!(c.id.client_id, a_id.client_id);
        assert_eq!((c.id.seq, c.id.acked), (2, 2));
        b.finish::<()>(&Err(tonic::Status::unavailable("gone")));
        c.finish::<()>(&Ok(()));
        assert_eq!(lanes.free(), 2);
        // Over many writes one after another, a lane's `acked` follows its own writes: nothing piles up.
        for _ in 0..100 {
            let w = lanes.begin();
            assert_eq!(w.id.acked, w.id.seq, "{:?}", w.id);
            w.finish::<()>(&Ok(()));
        }
        assert!(lanes.free() <= 2);
        let _ = b_id;
    }

    #[test]
    fn a_lane_whose_session_expired_starts_a_new_one() {
        let lanes = Arc::new(Lanes::new());
        let w = lanes.begin();
        let old = w.id;
        w.finish::<()>(&Ok(()));
        let w = lanes.begin();
        let mut expired = tonic::Status::failed_precondition("session expired");
        expired.metadata_mut().insert(
            reinado_client::error::REFUSAL,
            tonic::metadata::MetadataValue::from_static(reinado_client::error::SESSION_EXPIRED),
        );
        w.finish::<()>(&Err(expired));
        let w = lanes.begin();
        assert_ne!(w.id.client_id, old.client_id);
        assert_eq!((w.id.seq, w.id.acked), (1, 1), "a new session starts at 1");
    }
}
