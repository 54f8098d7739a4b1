//! Watches that survive the loss of the endpoint serving them: the stream is reopened on another endpoint
//! from the revision after the last one delivered, so no event is lost or repeated.

use crate::client::Client;
use crate::error::{ClientError, Next, classify};
use reinado_proto::v1::{Event, WatchRequest};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tracing::debug;

/// What a watch delivers.
#[derive(Debug)]
pub enum WatchItem {
    /// The watch is established; changes from `start_revision` on follow.
    Started {
        /// The first revision delivered.
        start_revision: u64,
    },
    /// Changes, in revision order.
    Events(Vec<Event>),
    /// The stream moved to another endpoint after its endpoint failed.
    Resumed {
        /// The new endpoint.
        endpoint: String,
        /// The revision it resumes from.
        from_revision: u64,
    },
}

/// The revision an event was made at.
pub fn event_revision(e: &Event) -> u64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl Client {
    /// Watches `key` (or every key under it if `prefix`) from `start_revision` (0: from now). Items arrive on
    /// the returned channel until it is dropped or a final error arrives.
    pub fn watch(
        &self,
        key: Vec<u8>,
        prefix: bool,
        start_revision: u64,
    ) -> mpsc::Receiver<Result<WatchItem, ClientError>> {
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move {
            let mut w = Watcher {
                client,
                key,
                prefix,
                next: start_revision,
                tx,
            };
            if let Err(e) = w.run().await {
                let _ = w.tx.send(Err(e)).await;
            }
        });
        rx
    }
}

struct Watcher {
    client: Client,
    key: Vec<u8>,
    prefix: bool,
    /// The next revision to deliver; 0 until the first endpoint said where "now" is.
    next: u64,
    tx: mpsc::Sender<Result<WatchItem, ClientError>>,
}

impl Watcher {
    async fn run(&mut self) -> Result<(), ClientError> {
        let endpoints = self.client.endpoints().to_vec();
        let mut failures = 0usize;
        let mut started = false;
        for attempt in 0.. {
            let addr = endpoints[attempt % endpoints.len()].clone();
            if started {
                let resumed = WatchItem::Resumed {
                    endpoint: addr.clone(),
                    from_revision: self.next,
                };
                if self.tx.send(Ok(resumed)).await.is_err() {
                    return Ok(());
                }
            }
            let status = match self.stream_from(&addr, &mut started).await {
                Ok(()) => return Ok(()),
                Err(status) => status,
            };
            match classify(&status) {
                Next::Fail => return Err(ClientError::from_status(&status)),
                Next::Retry | Next::Redirect(_) => {
                    debug!(%addr, "watch stream broke: {}", status.message());
                    failures += 1;
                    if failures > 50 {
                        return Err(ClientError::exhausted(&status, &endpoints));
                    }
                    let pause = Duration::from_millis(20 * (failures as u64).min(10));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Ok(())
    }

    /// Streams from one endpoint until it fails (Err) or the receiver is gone (Ok).
    async fn stream_from(&mut self, addr: &str, started: &mut bool) -> Result<(), tonic::Status> {
        let mut kv = self
            .client
            .kv(addr)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let req = WatchRequest {
            key: self.key.clone(),
            prefix: self.prefix,
            start_revision: self.next,
        };
        let mut stream = kv.watch(req).await?.into_inner();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if self.next == 0 {
                self.next = msg.header.as_ref().map_or(0, |h| h.revision) + 1;
            }
            if !*started {
                *started = true;
                let item = WatchItem::Started {
                    start_revision: self.next,
                };
                if self.tx.send(Ok(item)).await.is_err() {
                    return Ok(());
                }
            }
            let events: Vec<Event> = msg
                .events
                .into_iter()
                .filter(|e| event_revision(e) >= self.next)
                .collect();
            let Some(last) = events.last().map(event_revision) else {
                continue;
            };
            self.next = last + 1;
            if self.tx.send(Ok(WatchItem::Events(events))).await.is_err() {
                return Ok(());
            }
        }
        Err(tonic::Status::unavailable(format!(
            "{addr} closed the watch stream"
        )))
    }
}
