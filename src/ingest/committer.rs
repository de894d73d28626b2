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

/// Attempts at a group that conflicts with another replica's (a unique key
/// taken meanwhile, a deadlock): the retry reads what the other committed.
const CONFLICT_ATTEMPTS: usize = 3;

async fn commit_batch(core: &Core, jobs: Vec<Job>) {
    let (works, replies): (Vec<Work>, Vec<_>) = jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
    let mut outcome = commit_once(core, &works).await;
    for _ in 1..CONFLICT_ATTEMPTS {
        match &outcome {
            Err(e) if e.is_conflict() => {
                tracing::debug!(error = %e, "group conflicted with another replica's; retrying");
                outcome = commit_once(core, &works).await;
            }
            _ => break,
        }
    }
    answer(core, &works, replies, outcome);
}

type Applied = (Vec<Result<Done, IngestError>>, super::apply::Written);

async fn commit_once(core: &Core, works: &[Work]) -> Result<Applied, StoreError> {
    async {
        let started = std::time::Instant::now();
        let mut tx = core.store.begin().await?;
        let applied = match core.apply_all(&mut tx, works).await {
            Ok(applied) => applied,
            // Dropping `tx` rolls everything back.
            Err(e) => return Err(tx.note_failure(e)),
        };
        tx.commit().await?;
        let took = started.elapsed();
        core.metrics.group_committed(works.len(), took);
        tracing::trace!(
            jobs = works.len(),
            elapsed_us = took.as_micros() as u64,
            "group commit"
        );
        Ok::<_, StoreError>(applied)
    }
    .await
}

fn answer(
    core: &Core,
    works: &[Work],
    replies: Vec<oneshot::Sender<Result<Done, IngestError>>>,
    outcome: Result<Applied, StoreError>,
) {
    match outcome {
        Ok((answers, written)) => {
            core.announce(written);
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
