//! One `WatchBatches` stream: the snapshot, then committed changes in
//! order, handed to the transport through a small bounded buffer.
//!
//! What a stream may hold is bounded, whoever is at the other end: the
//! watcher reads the store a page at a time and only when the buffer has
//! room, so a client that stops reading costs one page, the buffer and the
//! transport's own window — never a backlog. A client that leaves the
//! buffer full for the configured `watch_send_timeout` is ended with
//! `RESOURCE_EXHAUSTED`; the store keeps every change, so it resumes from
//! the last cursor it received and misses nothing.
//!
//! The snapshot is read page by page too. Each page is read together with
//! the newest sequence number, and already shows the changes up to it; the
//! change stream then skips those (for the batches of that page only), so a
//! client never sees a batch go back to an older state.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

use super::convert::batch_to_proto;
use super::error::ApiError;
use super::pb;
use crate::feed::{StreamSlot, Waiter};
use crate::store::{BatchChange, BatchFilter, SnapshotPage, Store, StoreError};

/// Most batches a watch without a cursor starts with.
pub(super) const SNAPSHOT_LIMIT: usize = 1000;
/// Snapshot batches or changes read from the store at a time.
pub(super) const PAGE: usize = 32;
/// Messages buffered between the watcher and the transport.
const BUFFER: usize = 16;

pub(super) type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::BatchChange, Status>> + Send>>;

/// Where a watch begins.
pub(super) enum Start {
    /// After this cursor.
    After(i64),
    /// With the snapshot, whose first page is read, then after its cursor.
    Snapshot(SnapshotPage),
}

/// What a watch needs besides where it starts.
pub(super) struct WatchParts {
    pub store: Store,
    pub filter: BatchFilter,
    /// Registered before the start was read, so no change slips by.
    pub waiter: Waiter,
    pub send_timeout: Duration,
    pub slot: StreamSlot,
}

/// Starts the watcher task and returns the stream the transport reads.
pub(super) fn open(parts: WatchParts, start: Start) -> ChangeStream {
    let (tx, changes) = mpsc::channel(BUFFER);
    let (end, ended) = oneshot::channel();
    let watcher = Watcher {
        store: parts.store,
        filter: parts.filter,
        waiter: parts.waiter,
        send_timeout: parts.send_timeout,
        tx,
        reflected: HashMap::new(),
    };
    tokio::spawn(watcher.run(start, end));
    Box::pin(Outlet {
        changes,
        ended: Some(ended),
        done: false,
        _slot: parts.slot,
    })
}

/// Why a watcher stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The client left the buffer full for the whole send timeout.
    Behind,
    Failed(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e)
    }
}

struct Watcher {
    store: Store,
    filter: BatchFilter,
    waiter: Waiter,
    send_timeout: Duration,
    tx: mpsc::Sender<pb::BatchChange>,
    /// Batches whose snapshot already showed the changes up to this
    /// sequence number.
    reflected: HashMap<String, i64>,
}

impl Watcher {
    async fn run(mut self, start: Start, end: oneshot::Sender<Status>) {
        let stop = match self.stream(start).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        };
        let status = match stop {
            Stop::Gone => return,
            Stop::Behind => Status::resource_exhausted(format!(
                "this watch fell behind: the client took no message for {:?} while changes \
                 waited; watch again with `cursor` set to the last cursor received to resume \
                 without missing a change",
                self.send_timeout
            )),
            Stop::Failed(e) => ApiError::from(e).into(),
        };
        // The client may be gone by now; then nobody needs the reason.
        let _ = end.send(status);
    }

    /// Streams until something stops it.
    async fn stream(&mut self, start: Start) -> Result<Infallible, Stop> {
        let mut cursor = match start {
            Start::After(cursor) => cursor,
            Start::Snapshot(first) => self.send_snapshot(first).await?,
        };
        loop {
            cursor = self.send_changes(cursor).await?;
            tokio::select! {
                _ = self.waiter.changed() => {}
                _ = self.tx.closed() => return Err(Stop::Gone),
            }
        }
    }

    /// Sends the snapshot page by page, each message with the cursor of the
    /// first page: resuming from it misses nothing. Returns that cursor.
    async fn send_snapshot(&mut self, first: SnapshotPage) -> Result<i64, Stop> {
        let cursor = first.seq;
        let mut page = first;
        loop {
            for batch in std::mem::take(&mut page.batches) {
                if page.seq > cursor {
                    self.reflected.insert(batch.batch_id.clone(), page.seq);
                }
                self.send(pb::BatchChange {
                    cursor: cursor.to_string(),
                    event_type: String::new(),
                    batch: Some(batch_to_proto(&batch)),
                    snapshot: true,
                })
                .await?;
            }
            let Some(rest) = page.rest else {
                return Ok(cursor);
            };
            page = self
                .store
                .next_snapshot_page(&self.filter, rest, PAGE)
                .await?;
        }
    }

    /// Sends every committed change after `cursor`; returns the new cursor.
    async fn send_changes(&mut self, mut cursor: i64) -> Result<i64, Stop> {
        loop {
            let page = self.store.batch_changes(&self.filter, cursor, PAGE).await?;
            let full = page.len() == PAGE;
            for change in page {
                cursor = change.seq;
                if !self.already_shown(&change) {
                    self.send(change_to_proto(&change)).await?;
                }
            }
            if !self.reflected.is_empty() {
                self.reflected.retain(|_, seq| *seq > cursor);
            }
            if !full {
                return Ok(cursor);
            }
        }
    }

    fn already_shown(&self, change: &BatchChange) -> bool {
        self.reflected
            .get(&change.batch.batch_id)
            .is_some_and(|seq| change.seq <= *seq)
    }

    /// Hands one message to the transport, waiting at most the send
    /// timeout for room in the buffer.
    async fn send(&self, message: pb::BatchChange) -> Result<(), Stop> {
        let message = match self.tx.try_send(message) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(TrySendError::Full(message)) => message,
        };
        match tokio::time::timeout(self.send_timeout, self.tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Behind),
        }
    }
}

fn change_to_proto(change: &BatchChange) -> pb::BatchChange {
    pb::BatchChange {
        cursor: change.seq.to_string(),
        event_type: change.event_type.clone(),
        batch: Some(batch_to_proto(&change.batch)),
        snapshot: false,
    }
}

/// The transport's end of a watch: the buffered changes, unless the
/// watcher ended the stream — then its reason comes first, and what is
/// still buffered is dropped (the client resumes from its last cursor).
/// Holds the stream's slot until the transport lets go of it.
struct Outlet {
    changes: mpsc::Receiver<pb::BatchChange>,
    ended: Option<oneshot::Receiver<Status>>,
    done: bool,
    _slot: StreamSlot,
}

impl Stream for Outlet {
    type Item = Result<pb::BatchChange, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(ended) = this.ended.as_mut() {
            match Pin::new(ended).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    this.done = true;
                    this.changes.close();
                    return Poll::Ready(Some(Err(status)));
                }
                // The watcher stopped without a reason: the client left.
                Poll::Ready(Err(_)) => this.ended = None,
                Poll::Pending => {}
            }
        }
        this.changes.poll_recv(cx).map(|m| m.map(Ok))
    }
}
