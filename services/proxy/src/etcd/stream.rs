//! Streams (Watch, LeaseKeepAlive, Observe, Snapshot) proxied as streams: opened on one node (retried until
//! one opens; opening changes nothing), then relayed both ways. When the node's side breaks, or the stream
//! must follow a leader that moved, the client's stream ends with UNAVAILABLE and the client opens another
//! (etcd's clients do); a status the node sent is passed on as it is.

use super::route::{EtcdRouter, Kind};
use crate::route::Target;
use crate::topology::NodeState;
use std::future::Future;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Response, Status, Streaming};

/// Messages queued each way before the sender waits: a side that stops reading holds the other back.
const QUEUE: usize = 16;

/// The client's side of a proxied stream.
pub type Relayed<T> = ReceiverStream<Result<T, Status>>;

impl EtcdRouter {
    /// Opens a stream on a node for `target` with `open` (given the node and the stream of the client's
    /// messages to send it), then relays the client's `inbound` messages to it and its answers back. A stream
    /// to the leader ends once another node leads.
    pub async fn relay<Req, Resp, In, F, Fut>(
        &self,
        target: Target,
        metadata: &MetadataMap,
        inbound: In,
        mut open: F,
    ) -> Result<Response<Relayed<Resp>>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        In: Stream<Item = Result<Req, Status>> + Send + Unpin + 'static,
        F: FnMut(NodeState, ReceiverStream<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>>,
    {
        let opened = self
            .run(target, Kind::Read, metadata, |node, _budget| {
                let (to_node, rx) = mpsc::channel(QUEUE);
                let opening = open(node.clone(), ReceiverStream::new(rx));
                async move { Ok(Response::new((opening.await?.into_inner(), to_node, node))) }
            })
            .await?;
        let (from_node, to_node, node) = opened.into_inner();
        let (out, rx) = mpsc::channel(QUEUE);
        let relay = Relay {
            node,
            to_node: Some(to_node),
            out,
        };
        let router = self.router().clone();
        let addr = relay.node.addr.clone();
        tokio::spawn(async move {
            let leader_moved = async {
                let mut changes = router.topology().leader_changes();
                match target {
                    Target::Reader => std::future::pending().await,
                    Target::Leader | Target::Write => {
                        router.leader_moved_from(&addr, &mut changes).await
                    }
                }
            };
            relay.run(inbound, from_node, leader_moved).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One proxied stream, both ways.
struct Relay<Req, Resp> {
    node: NodeState,
    /// None once the client has sent all it will.
    to_node: Option<mpsc::Sender<Req>>,
    out: mpsc::Sender<Result<Resp, Status>>,
}

impl<Req, Resp> Relay<Req, Resp> {
    /// Relays until either side ends or `leader_moved` completes.
    async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<Req, Status>> + Unpin,
        mut from_node: Streaming<Resp>,
        leader_moved: impl Future<Output = ()>,
    ) {
        tokio::pin!(leader_moved);
        loop {
            tokio::select! {
                msg = inbound.next(), if self.to_node.is_some() => self.send_on(msg).await,
                answer = from_node.message() => {
                    let Some(item) = self.answer(answer) else { return };
                    let last = item.is_err();
                    if self.out.send(item).await.is_err() || last {
                        return;
                    }
                }
                () = self.out.closed() => return,
                () = &mut leader_moved => {
                    let moved = format!("node {} no longer leads; reconnect", self.node.id);
                    let _ = self.out.send(Err(Status::unavailable(moved))).await;
                    return;
                }
            }
        }
    }

    /// Passes a client's message on; its end (or failure) ends what is sent to the node.
    async fn send_on(&mut self, msg: Option<Result<Req, Status>>) {
        let sent = match (msg, &self.to_node) {
            (Some(Ok(m)), Some(tx)) => tx.send(m).await.is_ok(),
            _ => false,
        };
        if !sent {
            self.to_node = None;
        }
    }

    /// What the client gets for the node's next message: None to end the stream cleanly.
    fn answer(&self, answer: Result<Option<Resp>, Status>) -> Option<Result<Resp, Status>> {
        let id = self.node.id;
        match answer {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) if self.to_node.is_none() => None,
            Ok(None) => Some(Err(Status::unavailable(format!(
                "node {id} ended the stream; reconnect"
            )))),
            Err(s) if std::error::Error::source(&s).is_some() => Some(Err(Status::unavailable(
                format!("the stream to node {id} broke ({s}); reconnect"),
            ))),
            Err(s) => Some(Err(s)),
        }
    }
}
