//! The committer: the one task that writes ingested and raised events. It
//! takes every job waiting in its queue (up to a bound), applies them all
//! in one transaction, commits once, and only then answers each caller — so
//! a single fsync makes a whole burst durable.
//!
//! An OK is sent only for a COMMIT that returned success. When the store
//! cannot write (a full disk), every job of the group is refused with a
//! retryable error and the writer connection is replaced (see
//! `store::writer`), so the next group starts clean and Herald recovers by
//! itself once space returns.

use tokio::sync::{mpsc, oneshot};

use super::apply::Core;
use super::{Done, IngestError, Work};
use crate::store::StoreError;

/// Most jobs in one transaction: bounds the latency a burst adds.
const MAX_BATCH: usize = 512;

pub(super) struct Job {
    pub(super) work: Work,
    pub(super) reply: oneshot::Sender<Result<Done, IngestError>>,
}

pub(super) async fn run(core: Core, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        commit_batch(&core, std::mem::take(&mut jobs)).await;
    }
}

async fn commit_batch(core: &Core, jobs: Vec<Job>) {
    let (works, replies): (Vec<Work>, Vec<_>) = jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
    let outcome = async {
        let started = std::time::Instant::now();
        let mut tx = core.store.begin().await?;
        let applied = match core.apply_all(&mut tx, &works).await {
            Ok(applied) => applied,
            // Dropping `tx` rolls everything back.
            Err(e) => return Err(tx.note_failure(e)),
        };
        tx.commit().await?;
        tracing::trace!(
            jobs = works.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "group commit"
        );
        Ok::<_, StoreError>(applied)
    }
    .await;
    match outcome {
        Ok((answers, written)) => {
            core.announce(&written);
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A caller that went away no longer needs its answer.
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            match e.unwritable_reason() {
                Some(reason) => tracing::warn!(
                    reason,
                    jobs = works.len(),
                    "the store cannot write; every job of the group is refused as retryable"
                ),
                None => {
                    tracing::error!(error = %e, jobs = works.len(), "group commit failed; every job in it is refused")
                }
            }
            for reply in replies {
                let _ = reply.send(Err(IngestError::Store(e.to_shared())));
            }
        }
    }
}
