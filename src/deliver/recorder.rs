//! The recorder: one task that writes attempt results. Sends finish one by
//! one, but their records are written together — every result waiting in
//! the queue goes into one transaction — so the delivery rate is not bound
//! to one commit per webhook. A send's slot is freed only once its record
//! is committed, which keeps the lease and in-flight bookkeeping exact.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::{AttemptRecord, DeliveryUpdate, Store, StoreError};

const MAX_BATCH: usize = 512;

struct Job {
    attempt: AttemptRecord,
    update: DeliveryUpdate,
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

    pub async fn record(
        &self,
        attempt: AttemptRecord,
        update: DeliveryUpdate,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Shared("the attempt recorder has stopped".to_owned());
        self.jobs
            .send(Job {
                attempt,
                update,
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
