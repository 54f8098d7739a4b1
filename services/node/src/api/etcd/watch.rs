//! etcd's Watch service: one bidirectional stream carries many watches.
//!
//! Each stream is one task. It reads the client's create, cancel and progress requests, and whenever the
//! applied index moves it brings every watch up to date from the state machine's etcd history (whole
//! revisions at a time), then sleeps until the next request, the next applied entry, the next progress tick,
//! the client going away or the node shutting down. It reads only applied state, so it goes on through
//! elections and role changes.
//!
//! Bounded: at most [`MAX_WATCHES_PER_STREAM`] watches on a stream, each holding a permit of the node-wide
//! watch semaphore; at most [`MAX_EVENTS_PER_READ`] events read from the state machine at once; at most
//! about [`MAX_MESSAGE_BYTES`] of events in one message (a revision is split across messages only for a
//! watch created with `fragment`); at most [`OUTBOX`] messages queued for the client, after which the task
//! waits for it.

use super::{EtcdApi, GrpcResult};
use crate::state::RevisionError;
use prost::Message as _;
use reinado_proto::etcd::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_create_request::FilterType,
    watch_request::RequestUnion, watch_server::Watch,
};
use reinado_proto::etcd::mvccpb::{Event, event::EventType};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

/// The most watches on one stream.
pub const MAX_WATCHES_PER_STREAM: usize = 1000;
/// The most events read from the state machine at once, for one watch.
pub const MAX_EVENTS_PER_READ: usize = 1000;
/// About the most bytes of events in one message.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Messages queued for the client before the stream's task waits.
pub const OUTBOX: usize = 16;
/// How often a watch created with `progress_notify` that saw no event hears where it stands (etcd's default).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// The watch id etcd answers with when a response concerns no one watch.
const NO_WATCH: i64 = -1;

/// The client went away: the stream's task ends.
struct Gone;

type Outbox = mpsc::Sender<Result<WatchResponse, Status>>;

/// One watch on a stream.
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The next revision to look at: every earlier one was sent.
    next: u64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Events were sent since the last progress tick.
    active: bool,
    _permit: OwnedSemaphorePermit,
}

/// A stream's watches and where their messages go.
struct WatchStream {
    api: EtcdApi,
    watchers: BTreeMap<i64, Watcher>,
    /// The next id to try for a watch whose client lets the server choose.
    next_id: i64,
    tx: Outbox,
}

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        req: GrpcRequest<Streaming<WatchRequest>>,
    ) -> GrpcResult<Self::WatchStream> {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let stream = WatchStream {
            api: self.clone(),
            watchers: BTreeMap::new(),
            next_id: 0,
            tx,
        };
        tokio::spawn(stream.run(req.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let inner = &self.api.api.inner;
        let mut applied = inner.applied.clone();
        let mut shutdown = inner.shutdown.clone();
        let start = tokio::time::Instant::now() + PROGRESS_NOTIFY_INTERVAL;
        let mut progress = tokio::time::interval_at(start, PROGRESS_NOTIFY_INTERVAL);
        let tx = self.tx.clone();
        let mut reading = true;
        loop {
            applied.borrow_and_update();
            if self.catch_up().await.is_err() {
                return;
            }
            let step = tokio::select! {
                msg = inbound.message(), if reading => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    // The client sends no more requests; its watches go on.
                    Ok(None) => {
                        reading = false;
                        Ok(())
                    }
                    Err(_) => Err(Gone),
                },
                changed = applied.changed() => changed.map_err(|_| Gone),
                _ = progress.tick() => self.notify_progress().await,
                _ = tx.closed() => Err(Gone),
                _ = stopped(&mut shutdown) => {
                    let stopping = Status::unavailable("the node is shutting down; resume the watch elsewhere");
                    let _ = tx.send(Err(stopping)).await;
                    Err(Gone)
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.tx.send(Ok(resp)).await.map_err(|_| Gone)
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Gone> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                let created = self.create(c);
                self.send(created).await
            }
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_none() {
                    return Ok(()); // etcd answers nothing to an unknown id
                }
                let canceled = WatchResponse {
                    header: Some(self.api.current_header()),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..WatchResponse::default()
                };
                self.send(canceled).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.catch_up().await?;
                let progress = WatchResponse {
                    header: Some(self.api.header(self.sent_through())),
                    watch_id: NO_WATCH,
                    ..WatchResponse::default()
                };
                self.send(progress).await
            }
            None => Ok(()),
        }
    }

    /// Adds a watch and answers its creation (or why it was not created, as a created-and-canceled answer).
    fn create(&mut self, c: WatchCreateRequest) -> WatchResponse {
        let header = Some(self.api.current_header());
        let refused = |reason: String| WatchResponse {
            header,
            watch_id: NO_WATCH,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..WatchResponse::default()
        };
        let max_key_bytes = self.api.api.inner.limits.max_key_bytes;
        if c.key.len() > max_key_bytes || c.range_end.len() > max_key_bytes {
            return refused(format!(
                "the key or range end is over Reinado's limit of {max_key_bytes} bytes (REINADO_MAX_KEY_BYTES)"
            ));
        }
        if self.watchers.len() >= MAX_WATCHES_PER_STREAM {
            return refused(format!(
                "Reinado serves at most {MAX_WATCHES_PER_STREAM} watches on one stream; open another stream"
            ));
        }
        let id = match c.watch_id {
            0 => self.free_id(),
            id if self.watchers.contains_key(&id) => {
                return refused("mvcc: duplicate watch ID provided on the WatchStream".into());
            }
            id => id,
        };
        let Ok(permit) = self.api.api.inner.watches.clone().try_acquire_owned() else {
            return refused("this node serves too many watches; retry later".into());
        };
        let next = match u64::try_from(c.start_revision) {
            Ok(start) if start > 0 => start,
            _ => self.api.state().revision() + 1,
        };
        let filter = |f: FilterType| c.filters.contains(&(f as i32));
        let watcher = Watcher {
            next,
            no_put: filter(FilterType::Noput),
            no_delete: filter(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            fragment: c.fragment,
            progress_notify: c.progress_notify,
            active: false,
            key: c.key,
            range_end: c.range_end,
            _permit: permit,
        };
        self.watchers.insert(id, watcher);
        WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..WatchResponse::default()
        }
    }

    /// The lowest id at or above `next_id` no watch on this stream has (ids a client chose included).
    fn free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The revision every watch on this stream has been sent up to (the current one if there are none).
    fn sent_through(&self) -> u64 {
        let current = self.api.state().revision();
        self.watchers
            .values()
            .map(|w| w.next.saturating_sub(1))
            .min()
            .unwrap_or(current)
            .min(current)
    }

    /// Brings every watch up to the applied revision.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.pump(id).await?;
        }
        Ok(())
    }

    /// Sends one watch what was applied since its next revision.
    async fn pump(&mut self, id: i64) -> Result<(), Gone> {
        loop {
            let Some(w) = self.watchers.get_mut(&id) else {
                return Ok(());
            };
            let read = {
                let sm = self.api.state();
                if w.next > sm.revision() {
                    return Ok(());
                }
                sm.etcd_events(w.next, &w.key, &w.range_end, MAX_EVENTS_PER_READ)
            };
            let (events, after) = match read {
                Ok(found) => found,
                Err(RevisionError::Compacted { compact_revision }) => {
                    self.watchers.remove(&id);
                    return self.send(self.compacted(id, compact_revision)).await;
                }
                // Only read at or below the current revision: nothing is in the future yet.
                Err(RevisionError::Future { .. }) => return Ok(()),
            };
            let progressed = after > w.next;
            w.next = after;
            let messages = w.messages(events);
            w.active |= !messages.is_empty();
            for (mut msg, revision) in messages {
                msg.watch_id = id;
                msg.header = Some(self.api.header(revision));
                self.send(msg).await?;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// etcd's answer to a watch that asked for compacted history: canceled, with the compaction revision.
    fn compacted(&self, id: i64, compact_revision: u64) -> WatchResponse {
        WatchResponse {
            header: Some(self.api.current_header()),
            watch_id: id,
            canceled: true,
            compact_revision: i64::try_from(compact_revision).unwrap_or(i64::MAX),
            cancel_reason: RevisionError::Compacted { compact_revision }.to_string(),
            ..WatchResponse::default()
        }
    }

    /// Tells each idle watch that asked for progress notifications where it stands.
    async fn notify_progress(&mut self) -> Result<(), Gone> {
        self.catch_up().await?;
        let idle: Vec<(i64, u64)> = self
            .watchers
            .iter_mut()
            .filter_map(|(&id, w)| {
                let idle = w.progress_notify && !w.active;
                w.active = false;
                idle.then(|| (id, w.next.saturating_sub(1)))
            })
            .collect();
        for (id, through) in idle {
            let progress = WatchResponse {
                header: Some(self.api.header(through)),
                watch_id: id,
                ..WatchResponse::default()
            };
            self.send(progress).await?;
        }
        Ok(())
    }
}

/// Completes once the node is shutting down.
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The revision an event happened at.
fn revision_of(ev: &Event) -> i64 {
    ev.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl Watcher {
    /// The events this watch wants, in messages of about [`MAX_MESSAGE_BYTES`] at most, each with the revision
    /// its header says: the last event's, and for the last message every revision read (`next - 1`).
    fn messages(&self, events: Vec<Event>) -> Vec<(WatchResponse, u64)> {
        let mut out = Vec::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut bytes = 0;
        for mut ev in events {
            let skip = match EventType::try_from(ev.r#type) {
                Ok(EventType::Put) => self.no_put,
                Ok(EventType::Delete) => self.no_delete,
                Err(_) => false,
            };
            if skip {
                continue;
            }
            if !self.prev_kv {
                ev.prev_kv = None;
            }
            let size = ev.encoded_len();
            if let Some(last) = batch.last()
                && bytes + size > MAX_MESSAGE_BYTES
            {
                let same_revision = revision_of(last) == revision_of(&ev);
                if !same_revision || self.fragment {
                    let revision = revision_of(last).max(0) as u64;
                    let full = std::mem::take(&mut batch);
                    out.push((message(full, same_revision), revision));
                    bytes = 0;
                }
            }
            bytes += size;
            batch.push(ev);
        }
        if !batch.is_empty() {
            out.push((message(batch, false), self.next.saturating_sub(1)));
        }
        out
    }
}

fn message(events: Vec<Event>, fragment: bool) -> WatchResponse {
    WatchResponse {
        events,
        fragment,
        ..WatchResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinado_proto::etcd::mvccpb::KeyValue;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn watcher(fragment: bool, no_put: bool, prev_kv: bool) -> Watcher {
        Watcher {
            key: b"k".to_vec(),
            range_end: Vec::new(),
            next: 11,
            no_put,
            no_delete: false,
            prev_kv,
            fragment,
            progress_notify: false,
            active: false,
            _permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
        }
    }

    fn event(kind: EventType, revision: i64, value_bytes: usize) -> Event {
        let kv = KeyValue {
            key: b"k".to_vec(),
            mod_revision: revision,
            value: vec![0; value_bytes],
            ..KeyValue::default()
        };
        Event {
            r#type: kind as i32,
            kv: Some(kv.clone()),
            prev_kv: Some(kv),
        }
    }

    #[test]
    fn filters_and_prev_kv_are_applied() {
        let events = vec![event(EventType::Put, 5, 1), event(EventType::Delete, 6, 1)];
        let out = watcher(false, true, false).messages(events);
        assert_eq!(out.len(), 1);
        let (msg, revision) = &out[0];
        assert_eq!(revision, &10);
        assert_eq!(msg.events.len(), 1);
        assert_eq!(msg.events[0].r#type, EventType::Delete as i32);
        assert!(msg.events[0].prev_kv.is_none());
        assert!(!msg.fragment);
    }

    #[test]
    fn messages_split_between_revisions_and_within_one_only_when_fragmenting() {
        let big = MAX_MESSAGE_BYTES / 2 + 1;
        let split = vec![event(EventType::Put, 5, big), event(EventType::Put, 6, big)];
        let out = watcher(false, false, true).messages(split);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1, 5);
        assert!(out.iter().all(|(m, _)| !m.fragment && m.events.len() == 1));

        let one_revision = || vec![event(EventType::Put, 7, big), event(EventType::Put, 7, big)];
        let whole = watcher(false, false, true).messages(one_revision());
        assert_eq!(whole.len(), 1, "a revision stays whole without fragment");
        let fragmented = watcher(true, false, true).messages(one_revision());
        assert_eq!(fragmented.len(), 2);
        assert!(fragmented[0].0.fragment);
        assert!(!fragmented[1].0.fragment);
    }

    #[test]
    fn nothing_wanted_sends_nothing() {
        let out = watcher(false, true, false).messages(vec![event(EventType::Put, 5, 1)]);
        assert!(out.is_empty());
    }
}
