//! Watch streams. Each is a task that reads the state machine's change history from its next revision, sends
//! what matches, then sleeps until the applied index moves. It reads only applied state, so it goes on
//! through elections and role changes; it ends when the client goes away, the node shuts down, or it falls
//! behind the bounded history (OUT_OF_RANGE: the client restarts from a newer revision).

use super::NodeApi;
use crate::error::NodeError;
use crate::state::KeyFilter;
use reinado_proto::v1::{WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// The most events in one message.
const MAX_EVENTS_PER_MESSAGE: usize = 1000;

impl NodeApi {
    /// Starts a watch task and returns its stream.
    pub(super) fn start_watch(
        &self,
        req: WatchRequest,
    ) -> Result<ReceiverStream<Result<WatchResponse, Status>>, NodeError> {
        let permit = self
            .inner
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                NodeError::Unavailable("this node serves too many watches; retry later".into())
            })?;
        let filter = KeyFilter {
            key: req.key,
            prefix: req.prefix,
        };
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(status) = api.run_watch(filter, req.start_revision, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    async fn run_watch(
        &self,
        filter: KeyFilter,
        start: u64,
        tx: &mpsc::Sender<Result<WatchResponse, Status>>,
    ) -> Result<(), Status> {
        let mut applied = self.inner.applied.clone();
        let mut shutdown = self.inner.shutdown.clone();
        let mut next = if start == 0 {
            *applied.borrow_and_update() + 1
        } else {
            start
        };
        // The first message tells the client where the watch starts.
        let first = WatchResponse {
            header: Some(self.header()),
            events: Vec::new(),
        };
        if tx.send(Ok(first)).await.is_err() {
            return Ok(());
        }
        loop {
            let now = *applied.borrow_and_update();
            let found = self.inner.state.read().expect("state lock").events_since(
                next,
                &filter,
                MAX_EVENTS_PER_MESSAGE,
            );
            let (events, after) = found.map_err(|c| {
                Status::out_of_range(format!(
                    "revision {next} is no longer in this node's history; the oldest available is {} (restart the watch from there, or from 0 for new changes only)",
                    c.first_available
                ))
            })?;
            if !events.is_empty() {
                let msg = WatchResponse {
                    header: Some(self.header()),
                    events,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return Ok(());
                }
            }
            next = after;
            if next <= now {
                continue; // a full message was sent: there is more already applied
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return Ok(()) },
                _ = tx.closed() => return Ok(()),
                _ = shutdown.wait_for(|stop| *stop) => {
                    return Err(Status::unavailable("the node is shutting down; resume the watch elsewhere"));
                }
            }
        }
    }
}
