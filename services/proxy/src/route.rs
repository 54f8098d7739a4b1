//! Routing with retries. Writes go to the leader; reads to a serving follower (falling back to the leader,
//! then to any node). A failed attempt is retried within the request's deadline with a capped pause: at
//! once on the leader a redirect names, after the next status round when the leader failed. Writes keep their
//! request id across attempts, so a write retried after a lost answer is applied once.
//!
//! Routing decisions go on the request's span: `route.node` (who answered), `route.attempts`, and an event
//! per retry or leader change.

use crate::topology::{NodeState, Topology};
use reinado_client::error::{Next, classify};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tracing::{debug, info};

/// How long a request waiting for a leader waits before it asks for another status round.
const NO_LEADER_POLL: Duration = Duration::from_millis(25);
/// A write attempt taking longer than this asks for status rounds (see `Router::leader_moved_from`); far
/// above a put's p99 under load here (~70 ms), so that normal traffic asks for none.
const SLOW_ATTEMPT: Duration = Duration::from_millis(150);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Routes requests over the topology.
#[derive(Clone)]
pub struct Router {
    topo: Arc<Topology>,
    request_timeout: Duration,
    attempt_timeout: Duration,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The leader.
    Leader,
    /// The leader, for a write that carries a request id (Put, Delete, Txn): the cluster applies it once
    /// however often it is sent, so it is sent again as soon as another node leads.
    Write,
    /// A serving follower if any.
    Reader,
}

impl Router {
    /// A router over `topo`.
    pub fn new(
        topo: Arc<Topology>,
        request_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Router {
        Router {
            topo,
            request_timeout,
            attempt_timeout,
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    /// When a request must be answered: the proxy's request timeout, or the client's `grpc-timeout` if shorter.
    pub fn deadline(&self, metadata: &tonic::metadata::MetadataMap) -> Instant {
        let budget =
            client_timeout(metadata).map_or(self.request_timeout, |c| c.min(self.request_timeout));
        Instant::now() + budget
    }

    /// The longest one attempt may take, for a request with `left` until its deadline.
    pub fn attempt_budget(&self, left: Duration) -> Duration {
        self.attempt_timeout.min(left)
    }

    /// A node for `target` now, if any: the leader, or a reader not in `failed`.
    pub fn pick(&self, target: Target, failed: &[String]) -> Option<NodeState> {
        match target {
            Target::Leader | Target::Write => self.topo.leader().map(|(_, n)| n),
            Target::Reader => self.topo.reader(failed),
        }
    }

    /// No node to send to: asks for a status round and waits for the next leader change (at most `left`, and
    /// at most NO_LEADER_POLL). Once every node has failed, `failed` starts over. While requests wait, status
    /// rounds thus run every NO_LEADER_POLL (the poller keeps them at least 20 ms apart), so a new leader is
    /// found within tens of milliseconds of its election, not at the next regular round (`make failover-bench`
    /// showed every gap a multiple of the quarter second this used to wait).
    pub async fn wait_for_node(
        &self,
        left: Duration,
        leader_changes: &mut watch::Receiver<u64>,
        failed: &mut Vec<String>,
    ) {
        self.topo.poke();
        let wait = left.min(NO_LEADER_POLL);
        let _ = tokio::time::timeout(wait, leader_changes.changed()).await;
        if failed.len() >= self.topo.addrs().len() {
            failed.clear();
        }
    }

    /// Runs `call` on `target` until it succeeds, fails for good, or `deadline` passes.
    pub async fn run<T, F, Fut>(
        &self,
        target: Target,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(NodeState, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let span = tracing::Span::current();
        let mut pause = Duration::from_millis(5);
        let mut failed: Vec<String> = Vec::new();
        let mut last: Option<Status> = None;
        for attempt in 1u32.. {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Subscribed before the leader is read, so that no change in between goes unnoticed.
            let mut leader_changes = self.topo.leader_changes();
            let Some(node) = self.pick(target, &failed) else {
                debug!(
                    attempt,
                    "no node to send to yet: waiting for the next status round"
                );
                self.wait_for_node(left, &mut leader_changes, &mut failed)
                    .await;
                continue;
            };
            span.record("route.node", node.id);
            span.record("route.attempts", attempt);
            let budget = self.attempt_budget(left);
            node.outstanding.fetch_add(1, Ordering::Relaxed);
            // A write waiting on a leader that has since been replaced (it died, or was cut off) is not left
            // to its timeout: it is sent again, under the same request id, to the new one.
            let attempt_call = tokio::time::timeout(budget, call(node.clone(), budget));
            let mut moved = false;
            let result = if target == Target::Write {
                tokio::select! {
                    result = attempt_call => result,
                    _ = self.leader_moved_from(&node.addr, &mut leader_changes) => {
                        moved = true;
                        Ok(Err(Status::unavailable(format!(
                            "node {} stopped leading during the attempt",
                            node.id
                        ))))
                    }
                }
            } else {
                attempt_call.await
            };
            node.outstanding.fetch_sub(1, Ordering::Relaxed);
            // Out of time because the request's own deadline was near, not because the node is slow.
            let cut_short = result.is_err() && budget < self.attempt_timeout;
            let status = match result {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "node {} did not answer in {budget:?}",
                    node.id
                )),
            };
            match classify(&status) {
                Next::Fail => return Err(status),
                Next::Redirect(addr) if !addr.is_empty() => {
                    info!(from = node.id, leader = %addr, "redirected: the leader changed");
                    self.topo.leader_hint(&addr);
                    last = Some(status);
                    continue;
                }
                Next::Redirect(_) | Next::Retry => {
                    info!(node = node.id, attempt, error = %status.message(), "attempt failed: retrying");
                    if target == Target::Reader {
                        failed.push(node.addr.clone());
                    } else if !moved && !cut_short {
                        self.topo.leader_failed(&node.addr);
                    }
                }
            }
            last = Some(status);
            if moved {
                continue; // the new leader is known: no pause
            }
            if Instant::now() + pause >= deadline {
                break;
            }
            if target == Target::Reader {
                tokio::time::sleep(pause).await;
            } else {
                // The pause ends early once another node is known to lead (a change since before the
                // attempt counts): it is tried at once.
                let moved = self.leader_moved_from(&node.addr, &mut leader_changes);
                let _ = tokio::time::timeout(pause, moved).await;
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
        Err(match last {
            Some(s) if s.code() == tonic::Code::Unavailable => s,
            Some(s) => Status::unavailable(format!(
                "no node could serve the request in time; last error: {}",
                s.message()
            )),
            None => Status::unavailable(
                "no leader yet: the cluster is electing one (or no node is reachable); retry",
            ),
        })
    }

    /// Completes once the known leader is no longer at `addr` (another node leads). An attempt slower than
    /// SLOW_ATTEMPT may be stuck on a leader that is gone without a word (paused, or cut off: its connection
    /// does not break), so from then on status rounds run every NO_LEADER_POLL until it ends: the new leader
    /// is found within tens of milliseconds of its election, not at the next regular round (`make
    /// failover-bench` showed writes waiting up to a whole status interval after the election).
    pub async fn leader_moved_from(&self, addr: &str, changes: &mut watch::Receiver<u64>) {
        let mut poll = tokio::time::interval_at(Instant::now() + SLOW_ATTEMPT, NO_LEADER_POLL);
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                    // Another leader known, not merely none: with none there is nowhere better to send it.
                    if self.topo.leader().is_some_and(|(l, _)| l.addr != addr) {
                        return;
                    }
                }
                _ = poll.tick() => self.topo.poke(),
            }
        }
    }
}

/// The client's deadline for its request, from its `grpc-timeout` header, if it set one.
pub fn client_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// Parses a gRPC timeout header value (`<digits><unit>`, unit one of H M S m u n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5q"), None);
    }
}
