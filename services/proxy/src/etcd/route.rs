//! How an etcd request is routed and when it may be sent again.
//!
//! etcd requests carry no request id, so a write sent twice may apply twice. A write is sent again only when
//! it cannot have been applied: it never reached a node (no connection could be made), or the node refused it
//! with etcd's `not leader` / `no leader` before proposing anything. A write whose answer was lost (the
//! connection broke after it was sent, or no answer came in time) fails with UNAVAILABLE saying its outcome is
//! unknown, as a node forwarding to its leader does. Reads are sent again after any transient failure. Every
//! other answer is the node's, passed on unchanged.

use crate::route::{Router, Target, client_timeout};
use crate::topology::NodeState;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Code, Response, Status};
use tracing::info;

/// etcd's refusal of a request that needs the leader, on a node that is not it.
const NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's refusal while no leader is known.
const NO_LEADER: &str = "etcdserver: no leader";

/// The first pause between two attempts, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// What a request may suffer without being applied twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Reads nothing into the cluster: sent again after any transient failure.
    Read,
    /// Changes the cluster: sent again only if it cannot have been applied.
    Write,
    /// A write that waits on others (a lock, a campaign): as a write, bounded by the client's deadline only.
    Wait,
}

/// What a failed attempt tells about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// It never reached a node: no connection could be made.
    NotSent,
    /// The node refused it before proposing it (etcd's `not leader`, `no leader`).
    NotLeader,
    /// It was sent and its answer lost: the connection broke, or no answer came in time.
    Lost,
    /// The node's own answer.
    Answer,
}

/// Where a status came from: a connection that could not be made, the client side of a connection that
/// broke (only those statuses carry a source error), or the node's trailers.
fn failure(status: &Status) -> Failure {
    let mut source = std::error::Error::source(status);
    if source.is_none() {
        let refused = status.code() == Code::Unavailable
            && matches!(status.message(), NOT_LEADER | NO_LEADER);
        return if refused {
            Failure::NotLeader
        } else {
            Failure::Answer
        };
    }
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return Failure::NotSent;
        }
        source = e.source();
    }
    Failure::Lost
}

/// True if an attempt of `kind` that failed so may be sent again.
fn may_retry(kind: Kind, failure: Failure, code: Code) -> bool {
    match failure {
        Failure::NotSent | Failure::NotLeader => true,
        Failure::Lost => kind == Kind::Read,
        Failure::Answer => kind == Kind::Read && code == Code::Unavailable,
    }
}

/// The answer to a write whose answer was lost.
fn outcome_unknown(node: &NodeState, why: &str) -> Status {
    Status::unavailable(format!(
        "etcdserver: the request to node {} at {} failed ({why}); the request may or may not have been applied",
        node.id, node.addr
    ))
}

/// A pause of about `pause` (between half and all of it), so that clients retrying together spread out.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(rand::random_range(0.5..=1.0))
}

/// Runs etcd requests over the proxy's router.
#[derive(Clone)]
pub struct EtcdRouter {
    router: Router,
}

impl EtcdRouter {
    /// Routes over `router`'s topology and timeouts.
    pub fn new(router: Router) -> EtcdRouter {
        EtcdRouter { router }
    }

    /// The proxy's router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Runs `call` on a node for `target` until it answers, fails in a way that forbids another attempt, or
    /// the request's deadline passes. `call` gets the node and the attempt's time limit (None: the client's
    /// deadline alone bounds it).
    pub async fn run<T, F, Fut>(
        &self,
        target: Target,
        kind: Kind,
        metadata: &MetadataMap,
        mut call: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnMut(NodeState, Option<Duration>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = self.router.deadline(metadata);
        let client_deadline = client_timeout(metadata).map(|t| Instant::now() + t);
        let mut failed: Vec<String> = Vec::new();
        let mut pause = FIRST_PAUSE;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or_else(|| Status::unavailable(NO_LEADER)));
            }
            let mut leader_changes = self.router.topology().leader_changes();
            let Some(node) = self.router.pick(target, &failed) else {
                self.router
                    .wait_for_node(left, &mut leader_changes, &mut failed)
                    .await;
                continue;
            };
            let budget = match kind {
                Kind::Read => Some(self.router.attempt_budget(left)),
                Kind::Write => Some(left),
                Kind::Wait => client_deadline.map(|d| d.saturating_duration_since(Instant::now())),
            };
            let status = match attempt(&node, budget, &mut call).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(status)) => status,
                Err(timed_out) if kind == Kind::Read => Status::unavailable(timed_out),
                Err(timed_out) => return Err(outcome_unknown(&node, &timed_out)),
            };
            let failure = failure(&status);
            if !may_retry(kind, failure, status.code()) {
                return Err(match failure {
                    Failure::Lost => outcome_unknown(&node, &status.to_string()),
                    _ => status,
                });
            }
            info!(node = node.id, ?failure, error = %status.message(), "etcd request failed: retrying");
            failed.push(node.addr.clone());
            if target != Target::Reader {
                self.router.topology().leader_failed(&node.addr);
            }
            last = Some(status);
            tokio::time::sleep(jittered(pause).min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

/// One attempt on `node`, within `budget` if set; `Err` says how long it waited in vain.
async fn attempt<T, F, Fut>(
    node: &NodeState,
    budget: Option<Duration>,
    call: &mut F,
) -> Result<Result<Response<T>, Status>, String>
where
    F: FnMut(NodeState, Option<Duration>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let answer = call(node.clone(), budget);
    match budget {
        Some(b) => tokio::time::timeout(b, answer)
            .await
            .map_err(|_| format!("no answer within {b:?}")),
        None => Ok(answer.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_write_that_cannot_have_applied_is_sent_again() {
        for failure in [Failure::NotSent, Failure::NotLeader] {
            for kind in [Kind::Read, Kind::Write, Kind::Wait] {
                assert!(may_retry(kind, failure, Code::Unavailable));
            }
        }
        assert!(!may_retry(Kind::Write, Failure::Lost, Code::Unavailable));
        assert!(!may_retry(Kind::Wait, Failure::Lost, Code::Unavailable));
        assert!(may_retry(Kind::Read, Failure::Lost, Code::Unavailable));
        assert!(!may_retry(Kind::Write, Failure::Answer, Code::Unavailable));
        assert!(may_retry(Kind::Read, Failure::Answer, Code::Unavailable));
        assert!(!may_retry(Kind::Read, Failure::Answer, Code::OutOfRange));
    }

    #[test]
    fn a_nodes_refusals_are_told_from_its_answers() {
        assert_eq!(
            failure(&Status::unavailable(NOT_LEADER)),
            Failure::NotLeader
        );
        assert_eq!(failure(&Status::unavailable(NO_LEADER)), Failure::NotLeader);
        let changed = Status::unavailable("etcdserver: leader changed");
        assert_eq!(failure(&changed), Failure::Answer);
        assert_eq!(failure(&Status::unimplemented("")), Failure::Answer);
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        use reinado_proto::etcd::etcdserverpb::{PutRequest, kv_client::KvClient};
        let opts = reinado_client::channel::ChannelOptions::default();
        // Port 1 on loopback: nothing listens, the connection is refused.
        let channel = reinado_client::channel::lazy_channel("127.0.0.1:1", opts).unwrap();
        let refused = KvClient::new(channel)
            .put(PutRequest::default())
            .await
            .expect_err("no server");
        assert_eq!(failure(&refused), Failure::NotSent, "{refused:?}");
    }

    #[test]
    fn pauses_are_jittered_below_the_pause() {
        for _ in 0..100 {
            let p = jittered(Duration::from_millis(100));
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&p));
        }
    }
}
