//! One pipeline stream per node (the node's `Pipeline` service): the proxy sends every Kv request for that
//! node as a message on one long-lived stream and matches answers by id, instead of paying for an HTTP/2
//! exchange per request. If the stream breaks, every request waiting on it fails with UNAVAILABLE (the router
//! retries it, writes under the same request id) and the next request opens a new stream.

use reinado_client::error::{LEADER_ADDR, LEADER_ID, REFUSAL};
use reinado_proto::v1::pipeline_client::PipelineClient;
use reinado_proto::v1::{PipelineRequest, PipelineResponse, pipeline_request, pipeline_response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

type Answer = Result<pipeline_response::Response, Status>;
type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// Requests queued for one stream before senders wait.
const QUEUE: usize = 4096;

/// The stream in use.
#[derive(Clone)]
struct Stream {
    tx: mpsc::Sender<PipelineRequest>,
    waiters: Waiters,
    closed: Arc<AtomicBool>,
}

/// The pipeline to one node.
#[derive(Debug)]
pub struct PipelineConn {
    channel: Channel,
    max_message_bytes: usize,
    stream: Mutex<Option<Stream>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

/// Removes a waiter whose caller gave up (its future was dropped on a timeout).
struct Forget<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.waiters.lock().expect("waiters lock").remove(&self.id);
    }
}

impl PipelineConn {
    /// A pipeline over `channel` (opened at the first request).
    pub fn new(channel: Channel, max_message_bytes: usize) -> Self {
        PipelineConn {
            channel,
            max_message_bytes,
            stream: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// The open stream, or a new one.
    fn stream(&self) -> Stream {
        let mut current = self.stream.lock().expect("stream lock");
        if let Some(s) = current.as_ref()
            && !s.closed.load(Ordering::Acquire)
        {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let stream = Stream {
            tx,
            waiters: Arc::default(),
            closed: Arc::default(),
        };
        *current = Some(stream.clone());
        let client = PipelineClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        tokio::spawn(read_answers(client, rx, stream.clone()));
        stream
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, request: pipeline_request::Request) -> Answer {
        let stream = self.stream();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        stream.waiters.lock().expect("waiters lock").insert(id, tx);
        let _forget = Forget {
            waiters: &stream.waiters,
            id,
        };
        if stream.closed.load(Ordering::Acquire) {
            return Err(Status::unavailable("the pipeline to the node broke"));
        }
        let msg = PipelineRequest {
            id,
            traceparent: reinado_client::telemetry::current_traceparent(),
            request: Some(request),
        };
        if stream.tx.send(msg).await.is_err() {
            return Err(Status::unavailable("the pipeline to the node is closed"));
        }
        rx.await
            .unwrap_or_else(|_| Err(Status::unavailable("the pipeline to the node broke")))
    }
}

/// Reads the answers of one stream until it ends, then fails whoever still waits.
async fn read_answers(
    mut client: PipelineClient<Channel>,
    rx: mpsc::Receiver<PipelineRequest>,
    stream: Stream,
) {
    let reason = match client.pipeline(ReceiverStream::new(rx)).await {
        Ok(resp) => {
            let mut answers = resp.into_inner();
            loop {
                match answers.next().await {
                    Some(Ok(answer)) => deliver(&stream.waiters, answer),
                    Some(Err(status)) => break status,
                    None => break Status::unavailable("the node closed the pipeline"),
                }
            }
        }
        Err(status) => status,
    };
    stream.closed.store(true, Ordering::Release);
    let waiting: Vec<_> = stream
        .waiters
        .lock()
        .expect("waiters lock")
        .drain()
        .collect();
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(Status::unavailable(format!(
            "the pipeline to the node broke: {}",
            reason.message()
        ))));
    }
}

fn deliver(waiters: &Waiters, answer: PipelineResponse) {
    let Some(waiter) = waiters.lock().expect("waiters lock").remove(&answer.id) else {
        return;
    };
    let _ = waiter.send(into_answer(answer));
}

/// A pipelined answer as the unary call would have returned it (a redirect or a refusal carries its
/// metadata again).
fn into_answer(answer: PipelineResponse) -> Answer {
    if answer.code != 0 {
        let mut status = Status::new(tonic::Code::from(answer.code), answer.message);
        if let Ok(v) = answer.refusal.parse()
            && !answer.refusal.is_empty()
        {
            status.metadata_mut().insert(REFUSAL, v);
        }
        if answer.leader_id != 0 {
            let md = status.metadata_mut();
            if let Ok(v) = answer.leader_id.to_string().parse() {
                md.insert(LEADER_ID, v);
            }
            if let Ok(v) = answer.leader_addr.parse() {
                md.insert(LEADER_ADDR, v);
            }
        }
        return Err(status);
    }
    answer
        .response
        .ok_or_else(|| Status::internal("the node answered a pipelined request with nothing"))
}
