//! The recorder: one task that writes attempt results. Sends finish one by
//! one, but their records are written together — every result waiting in
//! the queue goes into one transaction — so the delivery rate is not bound
//! to one commit per webhook.
//!
//! A send's slot is free once its response is in; its record only keeps
//! the delivery's lease until it commits. So records need not hurry: a
//! batch waits up to [`GATHER`] for more, which at a low rate turns a
//! commit per webhook into one per window. A record that lets other work
//! go (the next delivery of an ordered lane, a rate-limited lane's next)
//! is urgent and commits with whatever is queued at once.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::{AttemptRecord, DeliveryUpdate, Store, StoreError};

const MAX_BATCH: usize = 512;

/// How long a batch of records waits for more before it commits.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

struct Job {
    attempt: AttemptRecord,
    update: DeliveryUpdate,
    /// Commit without gathering more.
    urgent: bool,
    reply: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
}

impl Recorder {
    /// Starts the recording task for leases held by `owner`.
    pub fn start(store: Store, owner: String, clock: std::sync::Arc<dyn Clock>) -> Self {
        let (jobs, queue) = mpsc::channel(4096);
        tokio::spawn(run(store, owner, clock, queue));
        Self { jobs }
    }

    /// Records an attempt; returns once it is committed. `urgent`: other
    /// work waits on this record (see the module's notes).
    pub async fn record(
        &self,
        attempt: AttemptRecord,
        update: DeliveryUpdate,
        urgent: bool,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Shared("the attempt recorder has stopped".to_owned());
        self.jobs
            .send(Job {
                attempt,
                update,
                urgent,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(StoreError::Shared)
    }
}

async fn run(
    store: Store,
    owner: String,
    clock: std::sync::Arc<dyn Clock>,
    mut queue: mpsc::Receiver<Job>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let deadline = tokio::time::Instant::now() + GATHER;
        while jobs.len() < MAX_BATCH && !jobs.iter().any(|j| j.urgent) {
            let room = MAX_BATCH - jobs.len();
            match tokio::time::timeout_at(deadline, queue.recv_many(&mut jobs, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let batch = std::mem::take(&mut jobs);
        let now: DateTime<Utc> = clock.now();
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.attempt, j.update), j.reply))
            .unzip();
        let written = store
            .record_attempts(&owner, &items, now)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &written {
            tracing::error!(error = %e, attempts = items.len(), "recording attempts failed; their leases will expire and they will be sent again");
        }
        for reply in replies {
            let _ = reply.send(written.clone());
        }
    }
}
