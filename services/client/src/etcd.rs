//! [`EtcdClient`]: etcd's v3 API (KV put and range, Lease, Lock, Election) on the endpoints of a [`Client`],
//! with its channels and its failover. Reinado nodes and etcd itself serve this API, so the same calls reach
//! either.
//!
//! Three kinds of call:
//! - quick ones (put, range, lease grant, revoke, time-to-live, list, unlock, resign) go through
//!   [`Client`]'s retry loop, with its deadlines;
//! - waiting ones (Lock, Campaign) may wait as long as another holder keeps the lock or the leadership, so they
//!   have no deadline; they move to the next endpoint only when one fails. Retrying them is safe: etcd's lock and
//!   election keys are named after the lease (`NAME/<lease>`), so a retry finds the key of the first attempt;
//! - streams (keep-alive, observe) run in a task that reopens the stream on the next endpoint when it breaks,
//!   and report through a bounded channel.

use crate::client::{Client, Kind, Traced, timed};
use crate::error::{ClientError, Next, classify};
use reinado_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    kv_client::KvClient, lease_client::LeaseClient,
};
use reinado_proto::etcd::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ResignRequest,
    election_client::ElectionClient,
};
use reinado_proto::etcd::v3lockpb::{
    LockRequest, LockResponse, UnlockRequest, lock_client::LockClient,
};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// How many notices a stream's channel holds; a keep-alive drops a renewal notice when it is full (never
/// the renewal itself).
const STREAM_QUEUE: usize = 16;

/// The shortest pause between two renewals of a lease.
const MIN_RENEW_EVERY: Duration = Duration::from_millis(500);

/// A lease ID as etcdctl prints it: 16 hex digits.
pub fn lease_hex(id: i64) -> String {
    format!("{id:016x}")
}

/// Parses a lease ID written in hex as etcdctl prints it (a `0x` prefix is allowed).
pub fn parse_lease_hex(s: &str) -> Result<i64, String> {
    let digits = s.trim().trim_start_matches("0x");
    i64::from_str_radix(digits, 16).map_err(|e| format!("`{s}` is not a lease ID in hex: {e}"))
}

/// One renewal of a lease by a keep-alive stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The lease.
    pub id: i64,
    /// Its time to live from now on, in seconds.
    pub ttl_s: i64,
}

/// A lease kept alive by a task over one keep-alive stream, until this is dropped.
#[derive(Debug)]
pub struct KeepAlive {
    rx: mpsc::Receiver<Result<Renewal, ClientError>>,
    task: JoinHandle<()>,
}

impl KeepAlive {
    /// The next renewal; an error when the lease expired, was revoked, or could not be renewed in time (the
    /// stream has then stopped).
    pub async fn next(&mut self) -> Result<Renewal, ClientError> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(ClientError::Local("the keep-alive stream stopped".into())),
        }
    }

    /// Completes, with the reason, once the lease can no longer be kept alive; drains renewal notices.
    pub async fn lost(&mut self) -> ClientError {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A lease granted for a lock or an election and kept alive in the background.
#[derive(Debug)]
pub struct Session {
    /// The lease.
    pub lease: i64,
    /// Its keep-alive.
    pub keep_alive: KeepAlive,
}

/// An etcd v3 client over a [`Client`]'s endpoints. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdClient {
    client: Client,
}

impl EtcdClient {
    /// An etcd client on `client`'s endpoints, sharing its channels.
    pub fn new(client: Client) -> Self {
        EtcdClient { client }
    }

    /// KV.Put (with a lease, for instance).
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, ClientError> {
        self.client
            .run(Kind::Write, |ch, budget| {
                let req = timed(req.clone(), budget);
                async move { KvClient::new(ch).put(req).await }
            })
            .await
    }

    /// KV.Range.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.client
            .run(Kind::Read, |ch, budget| {
                let req = timed(req.clone(), budget);
                async move { KvClient::new(ch).range(req).await }
            })
            .await
    }

    /// Grants a lease of `ttl_s` seconds (the server picks the ID).
    pub async fn grant(&self, ttl_s: i64) -> Result<LeaseGrantResponse, ClientError> {
        let resp: LeaseGrantResponse = self
            .client
            .run(Kind::Write, |ch, budget| {
                let req = timed(LeaseGrantRequest { ttl: ttl_s, id: 0 }, budget);
                async move { LeaseClient::new(ch).lease_grant(req).await }
            })
            .await?;
        if resp.error.is_empty() {
            Ok(resp)
        } else {
            Err(ClientError::Server {
                code: tonic::Code::Unknown,
                message: resp.error,
            })
        }
    }

    /// Revokes a lease, deleting its keys.
    pub async fn revoke(&self, id: i64) -> Result<LeaseRevokeResponse, ClientError> {
        self.client
            .run(Kind::Write, |ch, budget| {
                let req = timed(LeaseRevokeRequest { id }, budget);
                async move { LeaseClient::new(ch).lease_revoke(req).await }
            })
            .await
    }

    /// A lease's remaining and granted TTL (TTL -1: it does not exist), and its keys if asked.
    pub async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ClientError> {
        self.client
            .run(Kind::Read, |ch, budget| {
                let req = timed(LeaseTimeToLiveRequest { id, keys }, budget);
                async move { LeaseClient::new(ch).lease_time_to_live(req).await }
            })
            .await
    }

    /// Every lease.
    pub async fn leases(&self) -> Result<LeaseLeasesResponse, ClientError> {
        self.client
            .run(Kind::Read, |ch, budget| {
                let req = timed(LeaseLeasesRequest {}, budget);
                async move { LeaseClient::new(ch).lease_leases(req).await }
            })
            .await
    }

    /// Keeps lease `id` alive over one stream, renewing at a third of its TTL; the stream moves to the next
    /// endpoint when it breaks, and gives up once the lease would have run out since its last renewal.
    pub fn keep_alive(&self, id: i64) -> KeepAlive {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let task = tokio::spawn(keep_alive_task(self.client.clone(), id, tx));
        KeepAlive { rx, task }
    }

    /// Grants a lease of `ttl_s` seconds and keeps it alive until the session is dropped or closed.
    pub async fn session(&self, ttl_s: i64) -> Result<Session, ClientError> {
        let lease = self.grant(ttl_s).await?.id;
        Ok(Session {
            lease,
            keep_alive: self.keep_alive(lease),
        })
    }

    /// Ends a session: stops its keep-alive and revokes its lease (deleting its lock or election key).
    pub async fn close(&self, session: Session) -> Result<(), ClientError> {
        drop(session.keep_alive);
        self.revoke(session.lease).await.map(drop)
    }

    /// v3lockpb.Lock: waits until the lock NAME is held under `lease`.
    pub async fn lock(&self, name: &[u8], lease: i64) -> Result<LockResponse, ClientError> {
        self.waiting(|ch| {
            let req = LockRequest {
                name: name.to_vec(),
                lease,
            };
            async move { LockClient::new(ch).lock(req).await }
        })
        .await
        .map_err(|e| not_served(e, "v3lockpb.Lock"))
    }

    /// v3lockpb.Unlock: deletes the lock key.
    pub async fn unlock(&self, key: &[u8]) -> Result<(), ClientError> {
        self.client
            .run(Kind::Write, |ch, budget| {
                let req = timed(UnlockRequest { key: key.to_vec() }, budget);
                async move { LockClient::new(ch).unlock(req).await }
            })
            .await
            .map(drop)
    }

    /// v3electionpb.Campaign: waits until `lease`'s proposal `value` leads the election NAME.
    pub async fn campaign(
        &self,
        name: &[u8],
        lease: i64,
        value: &[u8],
    ) -> Result<LeaderKey, ClientError> {
        let resp = self
            .waiting(|ch| {
                let req = CampaignRequest {
                    name: name.to_vec(),
                    lease,
                    value: value.to_vec(),
                };
                async move { ElectionClient::new(ch).campaign(req).await }
            })
            .await
            .map_err(|e| not_served(e, "v3electionpb.Election"))?;
        resp.leader
            .ok_or_else(|| ClientError::Local("the campaign's answer names no leader key".into()))
    }

    /// v3electionpb.Resign: gives up leadership.
    pub async fn resign(&self, leader: LeaderKey) -> Result<(), ClientError> {
        self.client
            .run(Kind::Write, |ch, budget| {
                let req = timed(
                    ResignRequest {
                        leader: Some(leader.clone()),
                    },
                    budget,
                );
                async move { ElectionClient::new(ch).resign(req).await }
            })
            .await
            .map(drop)
    }

    /// v3electionpb.Observe: each leader of the election NAME, from the current one on. The stream reopens
    /// on the next endpoint when it breaks (the current leader may then be reported again).
    pub fn observe(&self, name: &[u8]) -> mpsc::Receiver<Result<LeaderResponse, ClientError>> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(observe_task(self.client.clone(), name.to_vec(), tx));
        rx
    }

    /// Runs a call that may wait indefinitely: no deadline on an attempt, the next endpoint after a failure,
    /// until one succeeds, one fails for good, or failures went on for the client's timeout.
    async fn waiting<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Traced) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retry = Backoff::new(&self.client);
        loop {
            let addr = retry.endpoint();
            let status = match call(self.client.traced(&addr)?).await {
                Ok(resp) => {
                    self.client.remember(&addr);
                    return Ok(resp.into_inner());
                }
                Err(status) => status,
            };
            if classify(&status) == Next::Fail {
                return Err(ClientError::from_status(&status));
            }
            retry.failed(&status).await?;
        }
    }
}

/// An UNIMPLEMENTED answer, said as what it means: the endpoint does not serve `service`.
fn not_served(e: ClientError, service: &str) -> ClientError {
    match e {
        ClientError::Server {
            code: tonic::Code::Unimplemented,
            message,
        } => ClientError::Server {
            code: tonic::Code::Unimplemented,
            message: if message.is_empty() {
                format!("the endpoint does not serve etcd's {service}")
            } else {
                format!("the endpoint does not serve etcd's {service}: {message}")
            },
        },
        e => e,
    }
}

/// Endpoint rotation and capped pauses between failed attempts of a stream or waiting call, giving up after
/// the client's timeout of consecutive failures.
struct Backoff {
    client: Client,
    attempt: usize,
    pause: Duration,
    failing_since: Option<Instant>,
}

impl Backoff {
    fn new(client: &Client) -> Self {
        Backoff {
            client: client.clone(),
            attempt: 0,
            pause: Duration::from_millis(10),
            failing_since: None,
        }
    }

    fn endpoint(&self) -> String {
        self.client.pick(Kind::Read, self.attempt)
    }

    /// The last attempt worked: the next failure starts a new count.
    fn succeeded(&mut self) {
        self.pause = Duration::from_millis(10);
        self.failing_since = None;
    }

    /// Pauses before the next attempt, on the next endpoint, or gives up.
    async fn failed(&mut self, status: &tonic::Status) -> Result<(), ClientError> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() + self.pause >= self.client.options().timeout {
            return Err(ClientError::exhausted(status, self.client.endpoints()));
        }
        tracing::debug!("etcd stream or call failed: {}", status.message());
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(250));
        self.attempt += 1;
        Ok(())
    }
}

/// Why a stream ended before its work was over.
enum Broke {
    /// It broke: reopen it on the next endpoint.
    Retry(tonic::Status),
    /// It cannot go on: report this and stop.
    Stop(ClientError),
}

/// After a stream ended with `broke`: true to reopen it on the next endpoint (after a pause), false once it
/// cannot go on or the endpoints failed for the client's timeout (the final error is then sent on `tx`).
async fn carry_on<T>(
    retry: &mut Backoff,
    tx: &mpsc::Sender<Result<T, ClientError>>,
    broke: Broke,
) -> bool {
    let error = match broke {
        Broke::Stop(e) => e,
        Broke::Retry(status) => match retry.failed(&status).await {
            Ok(()) => return true,
            Err(e) => e,
        },
    };
    let _ = tx.send(Err(error)).await;
    false
}

/// Renews lease `id` over one stream until the lease is gone or the receiver is dropped.
async fn keep_alive_task(client: Client, id: i64, tx: mpsc::Sender<Result<Renewal, ClientError>>) {
    let mut retry = Backoff::new(&client);
    // The lease surely ran out after this; until the first renewal, the client's timeout bounds the tries.
    let mut expires = Instant::now() + client.options().timeout;
    loop {
        let addr = retry.endpoint();
        let renewing = renew_over_stream(&client, &addr, id, &tx, &mut retry, &mut expires);
        let broke = match renewing.await {
            Ok(()) => return,
            Err(status) if Instant::now() >= expires => {
                Broke::Stop(ClientError::exhausted(&status, client.endpoints()))
            }
            Err(status) => Broke::Retry(status),
        };
        if !carry_on(&mut retry, &tx, broke).await {
            return;
        }
    }
}

/// One keep-alive stream to `addr`: a request, its answer, a pause of a third of the TTL, and again. Ok when
/// the work is over (the lease is gone, or nobody listens); the status when the stream broke.
async fn renew_over_stream(
    client: &Client,
    addr: &str,
    id: i64,
    tx: &mpsc::Sender<Result<Renewal, ClientError>>,
    retry: &mut Backoff,
    expires: &mut Instant,
) -> Result<(), tonic::Status> {
    let channel = client
        .traced(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let attempt_timeout = client.options().attempt_timeout;
    let (requests, outgoing) = mpsc::channel(1);
    let request = LeaseKeepAliveRequest { id };
    requests
        .send(request)
        .await
        .expect("the receiver is held below");
    let mut answers = tokio::time::timeout(
        attempt_timeout,
        LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(outgoing)),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded(format!("{addr} did not open the stream")))??
    .into_inner();
    loop {
        let answer = tokio::time::timeout(attempt_timeout, answers.message())
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded(format!("{addr} did not renew in time"))
            })??
            .ok_or_else(|| {
                tonic::Status::unavailable(format!("{addr} closed the keep-alive stream"))
            })?;
        if answer.ttl <= 0 {
            let gone =
                ClientError::NotFound(format!("lease {} expired or was revoked", lease_hex(id)));
            let _ = tx.send(Err(gone)).await;
            return Ok(());
        }
        client.remember(addr);
        retry.succeeded();
        let ttl = Duration::from_secs(answer.ttl as u64);
        *expires = Instant::now() + ttl;
        let renewal = Renewal {
            id,
            ttl_s: answer.ttl,
        };
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(renewal)) {
            return Ok(());
        }
        tokio::time::sleep((ttl / 3).max(MIN_RENEW_EVERY)).await;
        if requests.send(request).await.is_err() {
            return Err(tonic::Status::unavailable(format!(
                "{addr} closed the keep-alive stream"
            )));
        }
    }
}

/// Observes the election NAME until the receiver is dropped or the endpoints fail for too long.
async fn observe_task(
    client: Client,
    name: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, ClientError>>,
) {
    let mut retry = Backoff::new(&client);
    loop {
        let addr = retry.endpoint();
        let broke = match observe_once(&client, &addr, &name, &tx, &mut retry).await {
            Ok(()) => return,
            Err(status) if classify(&status) == Next::Fail => {
                Broke::Stop(ClientError::from_status(&status))
            }
            Err(status) => Broke::Retry(status),
        };
        if !carry_on(&mut retry, &tx, broke).await {
            return;
        }
    }
}

/// One Observe stream to `addr`; Ok once nobody listens, the status when the stream broke.
async fn observe_once(
    client: &Client,
    addr: &str,
    name: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, ClientError>>,
    retry: &mut Backoff,
) -> Result<(), tonic::Status> {
    let channel = client
        .traced(addr)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let req = LeaderRequest {
        name: name.to_vec(),
    };
    let mut stream = ElectionClient::new(channel)
        .observe(req)
        .await?
        .into_inner();
    while let Some(leader) = stream.message().await? {
        retry.succeeded();
        if tx.send(Ok(leader)).await.is_err() {
            return Ok(());
        }
    }
    Err(tonic::Status::unavailable(format!(
        "{addr} closed the observe stream"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_in_hex() {
        assert_eq!(lease_hex(0x694d_7a3b_5c1e_2f01), "694d7a3b5c1e2f01");
        assert_eq!(lease_hex(9), "0000000000000009");
        assert_eq!(parse_lease_hex("0000000000000009"), Ok(9));
        assert_eq!(parse_lease_hex("0x1f"), Ok(31));
        assert!(parse_lease_hex("xyz").is_err());
    }
}
