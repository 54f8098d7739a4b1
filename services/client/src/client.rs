//! [`Client`]: a Reinado client over a list of endpoints (proxies or nodes) with failover, deadlines and
//! retries that reuse the request id, so a retried write is applied once.
//!
//! Each call has a deadline ([`ClientOptions::timeout`]) and each attempt a shorter one. An attempt that
//! fails with a retryable status moves to the next endpoint after a short, capped pause; a node that answers
//! "not the leader" names the leader, and the next attempt goes there directly.

use crate::channel::{ChannelOptions, lazy_channel};
use crate::error::{ClientError, Next, classify};
use crate::telemetry::TracePropagation;
use reinado_proto::v1::cluster_client::ClusterClient;
use reinado_proto::v1::fault_client::FaultClient;
use reinado_proto::v1::kv_client::KvClient;
use reinado_proto::v1::*;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::debug;

/// A channel that carries the caller's trace context.
pub type Traced = InterceptedService<Channel, TracePropagation>;

/// How a [`Client`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// A call gives up after this long, whatever the retries.
    pub timeout: Duration,
    /// One attempt gives up after this long.
    pub attempt_timeout: Duration,
    /// How channels connect and check their connections.
    pub channel: ChannelOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            channel: ChannelOptions::default(),
        }
    }
}

/// Hands out request ids and tracks which answers the client has, so the cluster can forget them.
///
/// Writes are numbered from 1 under one session (a random client id). Each id's `acked` is the lowest number
/// still waiting for its answer, once a write of the session was answered as applied; until then it is 1,
/// because the cluster may not know the session yet (the first writes may all have been lost) and refuses a
/// write for an unknown session whose `acked` is above 1 as expired. A new session starts when the cluster
/// says the session expired ([`RequestIds::renew`]), and before a write after [`RequestIds::RENEW_IDLE`]
/// of idleness (the cluster's session TTL is longer: it forgets idle sessions, and a write numbered above
/// the first for a forgotten session is refused).
#[derive(Debug)]
pub struct RequestIds {
    session: Mutex<Session>,
}

/// One session's numbering.
#[derive(Debug)]
struct Session {
    client_id: u64,
    next: u64,
    outstanding: BTreeSet<u64>,
    /// A write of this session was answered as applied: the cluster holds the session.
    established: bool,
    /// When the last write began or ended.
    last_active: std::time::Instant,
}

impl Session {
    fn new() -> Self {
        Session {
            client_id: rand::random::<u64>().max(1),
            next: 1,
            outstanding: BTreeSet::new(),
            established: false,
            last_active: std::time::Instant::now(),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

impl RequestIds {
    /// A session idle this long is replaced by a new one at the next write.
    pub const RENEW_IDLE: Duration = Duration::from_secs(60);

    /// A sequence under a random client id.
    pub fn new() -> Self {
        RequestIds {
            session: Mutex::new(Session::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().expect("sequencer lock")
    }

    /// The current session's client id.
    pub fn client_id(&self) -> u64 {
        self.lock().client_id
    }

    /// The next request id; call [`RequestIds::end`] once its answer is in (or given up on).
    pub fn begin(&self) -> RequestId {
        let mut s = self.lock();
        if s.outstanding.is_empty() && s.last_active.elapsed() >= Self::RENEW_IDLE {
            *s = Session::new();
        }
        let seq = s.next;
        s.next += 1;
        s.outstanding.insert(seq);
        s.last_active = std::time::Instant::now();
        let lowest = *s.outstanding.first().expect("just inserted");
        RequestId {
            client_id: s.client_id,
            seq,
            acked: if s.established { lowest } else { 1 },
        }
    }

    /// The answer to `id` is in, or it was given up on; `applied` says the cluster applied it.
    pub fn end(&self, id: &RequestId, applied: bool) {
        let mut s = self.lock();
        if s.client_id == id.client_id {
            s.outstanding.remove(&id.seq);
            s.established |= applied;
            s.last_active = std::time::Instant::now();
        }
    }

    /// The cluster forgot the session of `id`: later writes go under a new session.
    pub fn renew(&self, id: &RequestId) {
        let mut s = self.lock();
        if s.client_id == id.client_id {
            *s = Session::new();
        }
    }
}

/// A client of a Reinado cluster. Cheap to clone; clones share channels and the request-id sequence.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The endpoint that last answered: the next call starts there.
    preferred: AtomicUsize,
    /// The leader's address, when a node named it: writes go there first.
    leader_hint: Mutex<Option<String>>,
    seq: RequestIds,
    opts: ClientOptions,
}

/// What a call reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

impl Client {
    /// A client of `endpoints` (`host:port` of proxies or nodes). Connects lazily.
    pub fn new(endpoints: Vec<String>, opts: ClientOptions) -> Result<Client, ClientError> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::Local("no endpoint given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                endpoints,
                channels: Mutex::new(HashMap::new()),
                preferred: AtomicUsize::new(0),
                leader_hint: Mutex::new(None),
                seq: RequestIds::new(),
                opts,
            }),
        };
        for e in &client.inner.endpoints {
            client.channel(e)?;
        }
        Ok(client)
    }

    /// The endpoints this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// This client's id (the `client_id` of its request ids).
    pub fn client_id(&self) -> u64 {
        self.inner.seq.client_id()
    }

    /// The (cached) channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.inner.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = lazy_channel(addr, self.inner.opts.channel)
            .map_err(|e| ClientError::Local(format!("bad endpoint `{addr}`: {e}")))?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The options this client was made with.
    pub fn options(&self) -> ClientOptions {
        self.inner.opts
    }

    pub(crate) fn traced(&self, addr: &str) -> Result<Traced, ClientError> {
        Ok(InterceptedService::new(
            self.channel(addr)?,
            TracePropagation,
        ))
    }

    /// The order to try endpoints in for one attempt number.
    pub(crate) fn pick(&self, kind: Kind, attempt: usize) -> String {
        if kind == Kind::Write
            && attempt == 0
            && let Some(leader) = self.inner.leader_hint.lock().expect("hint lock").clone()
        {
            return leader;
        }
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed);
        self.inner.endpoints[(start + attempt) % n].clone()
    }

    /// Runs `call` against endpoints until it succeeds, fails for good, or the deadline passes.
    pub(crate) async fn run<T, F, Fut>(&self, kind: Kind, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Traced, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let opts = self.inner.opts;
        let deadline = Instant::now() + opts.timeout;
        let mut pause = Duration::from_millis(10);
        let mut redirect: Option<String> = None;
        let mut attempt = 0usize;
        loop {
            let addr = redirect.take().unwrap_or_else(|| self.pick(kind, attempt));
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = opts.attempt_timeout.min(left);
            let result = tokio::time::timeout(budget, call(self.traced(&addr)?, budget)).await;
            let status = match result {
                Ok(Ok(resp)) => {
                    self.remember(&addr);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    tonic::Status::deadline_exceeded(format!("{addr} did not answer in {budget:?}"))
                }
            };
            match classify(&status) {
                Next::Fail => return Err(ClientError::from_status(&status)),
                Next::Redirect(leader) if !leader.is_empty() => {
                    debug!(%addr, %leader, "redirected to the leader");
                    *self.inner.leader_hint.lock().expect("hint lock") = Some(leader.clone());
                    redirect = Some(leader);
                }
                Next::Redirect(_) | Next::Retry => {
                    debug!(%addr, "attempt failed: {}", status.message());
                    if kind == Kind::Write {
                        self.inner.leader_hint.lock().expect("hint lock").take();
                    }
                }
            }
            attempt += 1;
            if Instant::now() + pause >= deadline {
                return Err(ClientError::exhausted(&status, &self.inner.endpoints));
            }
            if redirect.is_none() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }

    pub(crate) fn remember(&self, addr: &str) {
        if let Some(i) = self.inner.endpoints.iter().position(|e| e == addr) {
            self.inner.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// Runs a write under a fresh request id, reused by every retry.
    async fn write<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Traced, Duration, RequestId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let id = self.inner.seq.begin();
        let result = self
            .run(Kind::Write, |ch, budget| call(ch, budget, id))
            .await;
        match &result {
            Err(ClientError::SessionExpired(_)) => self.inner.seq.renew(&id),
            _ => self.inner.seq.end(&id, result.is_ok()),
        }
        result
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<PutResponse, ClientError> {
        self.write(|ch, budget, id| {
            let req = timed(
                PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    request_id: Some(id),
                },
                budget,
            );
            async move { KvClient::new(ch).put(req).await }
        })
        .await
    }

    /// Reads `key`.
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Consistency,
    ) -> Result<GetResponse, ClientError> {
        self.run(Kind::Read, |ch, budget| {
            let req = timed(
                GetRequest {
                    key: key.to_vec(),
                    consistency: consistency as i32,
                },
                budget,
            );
            async move { KvClient::new(ch).get(req).await }
        })
        .await
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<DeleteResponse, ClientError> {
        self.write(|ch, budget, id| {
            let req = timed(
                DeleteRequest {
                    key: key.to_vec(),
                    request_id: Some(id),
                },
                budget,
            );
            async move { KvClient::new(ch).delete(req).await }
        })
        .await
    }

    /// Reads a range of keys.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.run(Kind::Read, |ch, budget| {
            let req = timed(req.clone(), budget);
            async move { KvClient::new(ch).range(req).await }
        })
        .await
    }

    /// Runs a transaction (its request id is set here).
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.write(|ch, budget, id| {
            let req = timed(
                TxnRequest {
                    request_id: Some(id),
                    ..txn.clone()
                },
                budget,
            );
            async move { KvClient::new(ch).txn(req).await }
        })
        .await
    }

    /// Compare-and-swap: sets `key` to `new` only if its value is `expected` (`None`: only if it does not
    /// exist). Returns whether it swapped.
    pub async fn cas(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<TxnResponse, ClientError> {
        let compare = match expected {
            Some(v) => Compare {
                key: key.to_vec(),
                target: CompareTarget::Value as i32,
                op: CompareOp::Equal as i32,
                value: v.to_vec(),
                ..Compare::default()
            },
            None => Compare {
                key: key.to_vec(),
                target: CompareTarget::Exists as i32,
                op: CompareOp::Equal as i32,
                exists: false,
                ..Compare::default()
            },
        };
        let put = TxnOp {
            op: Some(txn_op::Op::Put(TxnPut {
                key: key.to_vec(),
                value: new.to_vec(),
            })),
        };
        self.txn(TxnRequest {
            compare: vec![compare],
            success: vec![put],
            failure: vec![],
            request_id: None,
        })
        .await
    }

    /// The committed operation at a log index.
    pub async fn log_entry(&self, index: u64) -> Result<LogEntryResponse, ClientError> {
        self.run(Kind::Read, |ch, budget| {
            let req = timed(LogEntryRequest { index }, budget);
            async move { KvClient::new(ch).log_entry(req).await }
        })
        .await
    }

    /// The status of whichever endpoint answers first (a proxy answers with the leader's).
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.run(Kind::Read, |ch, budget| {
            let req = timed(StatusRequest {}, budget);
            async move { ClusterClient::new(ch).status(req).await }
        })
        .await
    }

    /// The status of the process at `addr` only, with one attempt.
    pub async fn status_of(&self, addr: &str) -> Result<StatusResponse, ClientError> {
        let budget = self.inner.opts.attempt_timeout;
        let mut client = ClusterClient::new(self.traced(addr)?);
        match tokio::time::timeout(budget, client.status(timed(StatusRequest {}, budget))).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status(&status)),
            Err(_) => Err(ClientError::Unavailable {
                what: format!("{addr} did not answer in {budget:?}"),
            }),
        }
    }

    /// Adds a member (sent to the leader).
    pub async fn add_member(
        &self,
        req: AddMemberRequest,
    ) -> Result<AddMemberResponse, ClientError> {
        self.run(Kind::Write, |ch, budget| {
            let req = timed(req.clone(), budget);
            async move { ClusterClient::new(ch).add_member(req).await }
        })
        .await
    }

    /// Removes a member (sent to the leader).
    pub async fn remove_member(&self, id: u64) -> Result<RemoveMemberResponse, ClientError> {
        self.run(Kind::Write, |ch, budget| {
            let req = timed(RemoveMemberRequest { id }, budget);
            async move { ClusterClient::new(ch).remove_member(req).await }
        })
        .await
    }

    /// Hands leadership to `target` (0: the most caught-up voter).
    pub async fn transfer_leader(
        &self,
        target: u64,
    ) -> Result<TransferLeaderResponse, ClientError> {
        self.run(Kind::Write, |ch, budget| {
            let req = timed(TransferLeaderRequest { target }, budget);
            async move { ClusterClient::new(ch).transfer_leader(req).await }
        })
        .await
    }

    /// A Fault API client for the node at `addr` (faults target one node, never a proxy).
    pub fn fault(&self, addr: &str) -> Result<FaultClient<Traced>, ClientError> {
        Ok(FaultClient::new(self.traced(addr)?))
    }

    /// A raw Kv client for the endpoint at `addr`, for callers that manage streams themselves.
    pub fn kv(&self, addr: &str) -> Result<KvClient<Traced>, ClientError> {
        Ok(KvClient::new(self.traced(addr)?))
    }
}

/// A request with a gRPC deadline.
pub(crate) fn timed<T>(msg: T, budget: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(budget);
    req
}
