//! Raft traffic between nodes: one long-lived gRPC channel per peer, carrying one client stream of message
//! batches (`RaftPeer.Send`) and, separately, snapshot chunks (`RaftPeer.InstallSnapshot`), so a large
//! snapshot never holds up heartbeats.
//!
//! Sending never blocks the Raft loop: [`Transport::send`] puts one batch per peer straight into the peer's
//! open stream (a bounded queue the HTTP/2 connection drains) and drops it when the queue is full or no
//! stream is open. Raft is built for lost messages (heartbeats repeat, appends are retried),
//! and dropping is the backpressure: the leader's in-flight window stops it from sending more. Receiving is
//! bounded too: [`PeerService`] forwards messages into the Raft loop's bounded inbox and waits when it is
//! full, which stops reading the stream and lets HTTP/2 flow control push back on the sender.
//!
//! Every stream carries the sender's identity in metadata (cluster id, node id, addresses), so a node learns
//! each peer's client address (for redirecting clients to the leader) and refuses peers of another cluster.

use reinado_client::channel::{ChannelOptions, lazy_channel};
use reinado_proto::raft::v1 as pb;
use reinado_proto::raft::v1::raft_peer_client::RaftPeerClient;
use reinado_raft::{Message, MessageBody, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info_span, warn};

/// The shortest wait before a broken stream to a peer is opened again.
const MIN_RECONNECT: Duration = Duration::from_millis(20);

/// Metadata keys on peer streams.
const CLUSTER_ID: &str = "reinado-cluster-id";
const FROM_ID: &str = "reinado-from-id";
const CLIENT_ADDR: &str = "reinado-client-addr";
const PEER_ADDR: &str = "reinado-peer-addr";

/// Batches queued on one peer's stream before new ones are dropped.
const STREAM_QUEUE: usize = 1024;
/// The most bytes of entries in one batch (beyond the first message).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// The largest message a peer may send us; above the largest batch and snapshot chunk.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 << 20;

/// An isolation fault (the Fault API): traffic to and from some peers is dropped until a deadline.
#[derive(Debug, Default)]
pub struct Isolation {
    state: Mutex<Option<Cut>>,
}

#[derive(Debug)]
struct Cut {
    /// `None`: every peer.
    peers: Option<BTreeSet<NodeId>>,
    until: Option<Instant>,
}

impl Isolation {
    /// Cuts this node off from `peers` (all if empty) for `duration` (until [`Isolation::heal`] if `None`).
    pub fn isolate(&self, peers: &[NodeId], duration: Option<Duration>) {
        let cut = Cut {
            peers: (!peers.is_empty()).then(|| peers.iter().copied().collect()),
            until: duration.map(|d| Instant::now() + d),
        };
        *self.state.lock().expect("isolation lock") = Some(cut);
    }

    /// Ends any isolation.
    pub fn heal(&self) {
        *self.state.lock().expect("isolation lock") = None;
    }

    /// True if traffic with `peer` is being dropped now.
    pub fn is_cut(&self, peer: NodeId) -> bool {
        let mut state = self.state.lock().expect("isolation lock");
        let Some(cut) = state.as_ref() else {
            return false;
        };
        if cut.until.is_some_and(|t| Instant::now() >= t) {
            *state = None;
            return false;
        }
        cut.peers.as_ref().is_none_or(|p| p.contains(&peer))
    }
}

/// Who this node is, as its peers learn it from stream metadata.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster's name.
    pub cluster_id: String,
    /// This node.
    pub id: NodeId,
    /// Where clients reach this node.
    pub client_addr: String,
    /// Where peers reach this node.
    pub peer_addr: String,
}

/// The stream a peer's messages go on, while one is open: the Raft loop puts batches straight into it.
type StreamSlot = Arc<Mutex<Option<mpsc::Sender<pb::MessageBatch>>>>;

/// One peer: its stream, its snapshot queue, and the tasks keeping them going.
struct Peer {
    addr: String,
    stream: StreamSlot,
    /// Cuts the reconnect backoff short: the peer was just heard from, so it is up.
    up: Arc<tokio::sync::Notify>,
    snapshots: mpsc::Sender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Peer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The sending half of the transport, owned by the Raft loop.
pub struct Transport {
    me: Arc<Identity>,
    opts: ChannelOptions,
    isolation: Arc<Isolation>,
    peers: HashMap<NodeId, Peer>,
    dropped: u64,
}

impl Transport {
    /// A transport with no peers yet.
    pub fn new(me: Identity, opts: ChannelOptions, isolation: Arc<Isolation>) -> Self {
        Transport {
            me: Arc::new(me),
            opts,
            isolation,
            peers: HashMap::new(),
            dropped: 0,
        }
    }

    /// Makes the peer set `addrs` (id → peer address): new peers get a stream and tasks, departed ones lose
    /// theirs, and a peer whose address changed is reconnected.
    pub fn set_peers(&mut self, addrs: &BTreeMap<NodeId, String>) {
        self.peers
            .retain(|id, p| addrs.get(id).is_some_and(|a| *a == p.addr));
        for (&id, addr) in addrs {
            if id == self.me.id || self.peers.contains_key(&id) {
                continue;
            }
            match self.spawn_peer(id, addr) {
                Ok(peer) => {
                    self.peers.insert(id, peer);
                }
                Err(e) => warn!(peer = id, %addr, "cannot reach peer at this address: {e}"),
            }
        }
    }

    fn spawn_peer(&self, id: NodeId, addr: &str) -> Result<Peer, tonic::transport::Error> {
        let channel = lazy_channel(addr, self.opts)?;
        let stream = StreamSlot::default();
        let (snapshots, snap_rx) = mpsc::channel(16);
        let sender = StreamSender {
            peer: id,
            me: self.me.clone(),
            client: RaftPeerClient::new(channel)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES),
            isolation: self.isolation.clone(),
        };
        let up = Arc::new(tokio::sync::Notify::new());
        let tasks = [
            tokio::spawn(sender.clone().keep_stream(stream.clone(), up.clone())),
            tokio::spawn(sender.run_snapshots(snap_rx)),
        ];
        Ok(Peer {
            addr: addr.to_string(),
            stream,
            up,
            snapshots,
            tasks,
        })
    }

    /// `peer` opened a stream to this node: it is up, so a stream to it that is waiting out its reconnect
    /// backoff reconnects now. Without this, a node restarting into a cluster that is restarting too waited
    /// up to the backoff (a second) before its answers (a pre-vote grant) reached the peer that asked.
    pub fn peer_up(&self, peer: NodeId) {
        if let Some(p) = self.peers.get(&peer) {
            // Wakes only a stream waiting now: a stored permit would cut a later, unrelated backoff short.
            p.up.notify_waiters();
        }
    }

    /// Sends messages: one batch per peer on its stream, snapshot chunks on their own stream. Never waits: a
    /// message for an unknown, isolated or disconnected peer, or one whose stream is full, is dropped (Raft
    /// resends what matters, and the in-flight window bounds what a leader sends).
    pub fn send(&mut self, messages: Vec<Message>) {
        let mut batches: HashMap<NodeId, Vec<Message>> = HashMap::new();
        for msg in messages {
            let Some(peer) = self.peers.get(&msg.to) else {
                self.dropped += 1;
                continue;
            };
            if let MessageBody::Snapshot { .. } = msg.body {
                if peer.snapshots.try_send(msg).is_err() {
                    self.dropped += 1;
                }
                continue;
            }
            batches.entry(msg.to).or_default().push(msg);
        }
        for (to, msgs) in batches {
            let count = msgs.len() as u64;
            if !self.send_batch(to, msgs) {
                self.dropped += count;
                if self.dropped.is_power_of_two() {
                    debug!(
                        dropped = self.dropped,
                        "peer unreachable or its stream full: messages dropped"
                    );
                }
            }
        }
    }

    fn send_batch(&self, to: NodeId, msgs: Vec<Message>) -> bool {
        if self.isolation.is_cut(to) {
            return false;
        }
        let Some(peer) = self.peers.get(&to) else {
            return false;
        };
        let slot = peer.stream.lock().expect("stream slot lock");
        let Some(stream) = slot.as_ref() else {
            return false;
        };
        let mut batch = Vec::new();
        let mut bytes = 0;
        for m in msgs {
            if let MessageBody::Append { entries, .. } = &m.body {
                bytes += entries.iter().map(|e| e.size_bytes()).sum::<usize>();
            }
            batch.push(m);
            if bytes >= MAX_BATCH_BYTES {
                if stream.try_send(std::mem::take(&mut batch).into()).is_err() {
                    return false;
                }
                bytes = 0;
            }
        }
        batch.is_empty() || stream.try_send(batch.into()).is_ok()
    }
}

/// Doubles a delay from `min` up to `max`.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Drains one peer's queues onto gRPC streams.
#[derive(Clone)]
struct StreamSender {
    peer: NodeId,
    me: Arc<Identity>,
    client: RaftPeerClient<tonic::transport::Channel>,
    isolation: Arc<Isolation>,
}

impl StreamSender {
    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        let md = req.metadata_mut();
        for (key, value) in [
            (CLUSTER_ID, self.me.cluster_id.as_str()),
            (FROM_ID, &self.me.id.to_string()),
            (CLIENT_ADDR, &self.me.client_addr),
            (PEER_ADDR, &self.me.peer_addr),
        ] {
            if let Ok(value) = value.parse() {
                md.insert(key, value);
            }
        }
        req
    }

    /// Keeps a `Send` stream open to the peer, reopening it with capped backoff whenever it breaks (the
    /// connection fails, a keepalive ping goes unanswered, the peer restarts), or at once when the peer is
    /// heard from ([`Transport::peer_up`]). While it is open, the Raft loop
    /// writes batches into it directly.
    async fn keep_stream(mut self, slot: StreamSlot, up: Arc<tokio::sync::Notify>) {
        let mut backoff = Backoff::new(MIN_RECONNECT, Duration::from_secs(1));
        loop {
            let (tx, rx) = mpsc::channel::<pb::MessageBatch>(STREAM_QUEUE);
            let req = self.request(ReceiverStream::new(rx));
            *slot.lock().expect("stream slot lock") = Some(tx);
            let opened = tokio::time::Instant::now();
            let ended = self.client.send(req).await;
            slot.lock().expect("stream slot lock").take();
            if let Err(status) = ended {
                debug!(peer = self.peer, "peer stream ended: {}", status.message());
            }
            if opened.elapsed() > Duration::from_secs(5) {
                backoff.reset();
            }
            let ended = tokio::time::Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(backoff.step()) => {}
                _ = up.notified() => {
                    // Still the shortest backoff after the end (and the backoff keeps growing), so that two
                    // peers whose streams fail right after opening cannot wake each other in a tight loop.
                    tokio::time::sleep_until(ended + MIN_RECONNECT).await;
                }
            }
        }
    }

    /// Streams snapshot chunks: one `InstallSnapshot` call per snapshot, closed after its last chunk.
    async fn run_snapshots(mut self, mut queue: mpsc::Receiver<Message>) {
        while let Some(first) = queue.recv().await {
            let index = match &first.body {
                MessageBody::Snapshot { meta, .. } => meta.index,
                _ => 0,
            };
            let span = info_span!("raft.snapshot.send", peer = self.peer, index, bytes = 0u64);
            self.send_snapshot(first, &mut queue).instrument(span).await;
        }
    }

    async fn send_snapshot(&mut self, first: Message, queue: &mut mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel::<pb::SnapshotChunk>(4);
        let req = self.request(ReceiverStream::new(rx));
        let mut client = self.client.clone();
        let call = tokio::spawn(async move { client.install_snapshot(req).await });
        let mut next = Some(first);
        let mut bytes = 0u64;
        // Chunks go one at a time (the core waits for each answer); a snapshot stalled for this long is
        // abandoned here, and the core resends its chunk on a new stream.
        let idle = Duration::from_secs(10);
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match tokio::time::timeout(idle, queue.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                },
            };
            let done = matches!(msg.body, MessageBody::Snapshot { done: true, .. });
            if let MessageBody::Snapshot { data, .. } = &msg.body {
                bytes += data.len() as u64;
            }
            if self.isolation.is_cut(self.peer) {
                continue;
            }
            let Ok(chunk) = pb::SnapshotChunk::try_from(msg) else {
                continue;
            };
            if tx.send(chunk).await.is_err() || done {
                break;
            }
        }
        drop(tx);
        tracing::Span::current().record("bytes", bytes);
        if let Ok(Err(status)) = call.await {
            warn!(
                peer = self.peer,
                "snapshot stream failed: {}",
                status.message()
            );
        }
    }
}

/// What the peer server hands the Raft loop.
#[derive(Debug)]
pub enum Inbound {
    /// A Raft message for this node.
    Message(Message),
    /// A peer announced its addresses when it opened a stream.
    PeerAddrs {
        /// The peer.
        id: NodeId,
        /// Where clients reach it.
        client_addr: String,
        /// Where peers reach it.
        peer_addr: String,
    },
    /// A peer's message stream ended: its connection broke or it closed the stream.
    PeerLost {
        /// The peer.
        id: NodeId,
    },
    /// A node with an empty data dir asks whether its id took part in the cluster.
    Probe {
        /// The asking node.
        id: NodeId,
        /// Where the replica's answer goes.
        reply: oneshot::Sender<crate::replica::ProbeAnswer>,
    },
}

/// Message streams open from each peer.
type OpenStreams = Arc<Mutex<HashMap<NodeId, usize>>>;

/// One open message stream from a peer, counted while it lasts (uncounted also if its handler is dropped
/// midway, so that a count never sticks).
struct OpenStream {
    open: OpenStreams,
    from: NodeId,
}

impl OpenStream {
    fn open(open: &OpenStreams, from: NodeId) -> OpenStream {
        *open
            .lock()
            .expect("open streams lock")
            .entry(from)
            .or_default() += 1;
        OpenStream {
            open: open.clone(),
            from,
        }
    }

    /// Stops counting this stream (dropping it does); true if it was the peer's last open one.
    fn close(self) -> bool {
        let open = self.open.lock().expect("open streams lock");
        let last = open.get(&self.from).is_none_or(|&n| n <= 1);
        drop(open);
        last
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open streams lock");
        match open.get_mut(&self.from) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                open.remove(&self.from);
            }
        }
    }
}

/// Who ended a peer's message stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndedBy {
    /// The peer, or its connection breaking.
    Peer,
    /// This node: it refused a batch, or is shutting down.
    Us,
}

/// The `RaftPeer` gRPC service: receives peers' streams and feeds the Raft loop.
#[derive(Clone)]
pub struct PeerService {
    me: Arc<Identity>,
    inbox: mpsc::Sender<Inbound>,
    isolation: Arc<Isolation>,
    /// Message streams open from each peer (a reconnected peer's new stream may open before the old one's end
    /// is noticed).
    open: OpenStreams,
    /// This node has no state yet and is probing its peers itself; probes are answered "fresh".
    probing: Arc<AtomicBool>,
}

/// How long a probe waits for the Raft loop's answer.
const PROBE_ANSWER: Duration = Duration::from_secs(2);

impl PeerService {
    /// A service feeding `inbox`.
    pub fn new(me: Identity, inbox: mpsc::Sender<Inbound>, isolation: Arc<Isolation>) -> Self {
        PeerService {
            me: Arc::new(me),
            inbox,
            isolation,
            open: Arc::default(),
            probing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// While on, this node has no state (it probes before bootstrapping) and answers probes "fresh".
    pub fn set_probing(&self, on: bool) {
        self.probing.store(on, Ordering::Release);
    }

    /// Checks a stream's metadata and announces the peer's addresses; returns the peer's id.
    async fn accept<T>(&self, req: &tonic::Request<T>) -> Result<NodeId, tonic::Status> {
        let md = req.metadata();
        let text = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let cluster = text(CLUSTER_ID);
        if cluster != self.me.cluster_id {
            return Err(tonic::Status::failed_precondition(format!(
                "this node belongs to cluster `{}`, not `{cluster}`",
                self.me.cluster_id
            )));
        }
        let id: NodeId = text(FROM_ID)
            .parse()
            .ok()
            .filter(|&id| id != 0 && id != self.me.id)
            .ok_or_else(|| tonic::Status::invalid_argument("missing or invalid reinado-from-id"))?;
        let addrs = Inbound::PeerAddrs {
            id,
            client_addr: text(CLIENT_ADDR),
            peer_addr: text(PEER_ADDR),
        };
        self.inbox
            .send(addrs)
            .await
            .map_err(|_| tonic::Status::unavailable("the node is shutting down"))?;
        Ok(id)
    }

    /// Forwards a peer's batches into the Raft loop until its stream ends. An error says who ended it.
    async fn receive(
        &self,
        from: NodeId,
        stream: &mut tonic::Streaming<pb::MessageBatch>,
        ack: &mut pb::SendAck,
    ) -> Result<(), (tonic::Status, EndedBy)> {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|status| (status, EndedBy::Peer))?;
            let messages: Vec<Message> = batch.try_into().map_err(|e| {
                let status = tonic::Status::invalid_argument(format!("bad message batch: {e}"));
                (status, EndedBy::Us)
            })?;
            ack.batches += 1;
            for msg in messages {
                let delivered = self.deliver(from, msg).await;
                ack.messages += u64::from(delivered.map_err(|status| (status, EndedBy::Us))?);
            }
        }
        Ok(())
    }

    /// Forwards one message unless it is not for us or its sender is isolated.
    async fn deliver(&self, from: NodeId, msg: Message) -> Result<bool, tonic::Status> {
        if msg.to != self.me.id || msg.from != from || self.isolation.is_cut(from) {
            return Ok(false);
        }
        self.inbox
            .send(Inbound::Message(msg))
            .await
            .map_err(|_| tonic::Status::unavailable("the node is shutting down"))?;
        Ok(true)
    }
}

#[tonic::async_trait]
impl pb::raft_peer_server::RaftPeer for PeerService {
    async fn send(
        &self,
        req: tonic::Request<tonic::Streaming<pb::MessageBatch>>,
    ) -> Result<tonic::Response<pb::SendAck>, tonic::Status> {
        let from = self.accept(&req).await?;
        let mut stream = req.into_inner();
        let mut ack = pb::SendAck::default();
        let counted = OpenStream::open(&self.open, from);
        let received = self.receive(from, &mut stream, &mut ack).await;
        let last = counted.close();
        // The peer's last stream ended on its side: its connection broke (its process died and the kernel
        // closed the socket) or it dropped the stream. A follower whose leader that is campaigns soon
        // (`Raft::peer_lost`). Not told: an end this node caused (a batch it refused, shutting down), an old
        // stream ending while a newer one is open, and an isolated peer's (the isolation fault models a network
        // that says nothing).
        let by_peer = !matches!(received, Err((_, EndedBy::Us)));
        if last && by_peer && !self.isolation.is_cut(from) {
            let _ = self.inbox.send(Inbound::PeerLost { id: from }).await;
        }
        received.map_err(|(status, _)| status)?;
        Ok(tonic::Response::new(ack))
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<tonic::Response<pb::SnapshotAck>, tonic::Status> {
        let from = self.accept(&req).await?;
        let mut stream = req.into_inner();
        let mut ack = pb::SnapshotAck::default();
        while let Some(chunk) = stream.next().await {
            let msg = Message::try_from(chunk?)
                .map_err(|e| tonic::Status::invalid_argument(format!("bad snapshot chunk: {e}")))?;
            if let MessageBody::Snapshot { data, .. } = &msg.body {
                ack.bytes += data.len() as u64;
            }
            ack.chunks += u64::from(self.deliver(from, msg).await?);
        }
        Ok(tonic::Response::new(ack))
    }

    async fn probe(
        &self,
        req: tonic::Request<pb::ProbeRequest>,
    ) -> Result<tonic::Response<pb::ProbeResponse>, tonic::Status> {
        let req = req.into_inner();
        if req.cluster_id != self.me.cluster_id {
            return Err(tonic::Status::failed_precondition(format!(
                "this node belongs to cluster `{}`, not `{}`",
                self.me.cluster_id, req.cluster_id
            )));
        }
        if req.id == 0 || req.id == self.me.id {
            return Err(tonic::Status::invalid_argument(format!(
                "bad probe id {}",
                req.id
            )));
        }
        let answer = if self.probing.load(Ordering::Acquire) {
            crate::replica::ProbeAnswer {
                fresh: true,
                started: false,
            }
        } else {
            let (reply, answer) = oneshot::channel();
            let unavailable = || tonic::Status::unavailable("the node is not running yet");
            self.inbox
                .send(Inbound::Probe { id: req.id, reply })
                .await
                .map_err(|_| unavailable())?;
            tokio::time::timeout(PROBE_ANSWER, answer)
                .await
                .map_err(|_| unavailable())?
                .map_err(|_| unavailable())?
        };
        Ok(tonic::Response::new(pb::ProbeResponse {
            cluster_id: self.me.cluster_id.clone(),
            fresh: answer.fresh,
            started: answer.started,
            client_addr: self.me.client_addr.clone(),
        }))
    }
}
