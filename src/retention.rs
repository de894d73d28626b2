//! Retention: keeps the database from growing without bound. On every
//! interval it prunes, oldest first, what `[retention]` no longer keeps —
//! finished deliveries with their attempts, then events nothing refers to
//! any more, project documents beyond the newest per project, and old batch
//! rows — in small steps (see `store::retention`), then gives freed pages
//! back to the file system.
//!
//! Like the monitor it runs in the background in production and is driven
//! by hand in tests ([`Pruner::run_once`]) on an injected clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::RetentionSettings;
use crate::metrics::Metrics;
use crate::store::{Pruned, Store, StoreError};

/// Rows per pruning transaction: small enough that one step holds the
/// writer for a few milliseconds.
const STEP: u32 = 500;
/// How many times as long as a step the pruner rests after it.
const REST: u32 = 4;
/// Free pages released per pass (4 KiB each).
const RELEASE_PAGES: u32 = 16_384;

#[derive(Clone)]
pub struct Pruner {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: RetentionSettings,
    metrics: Metrics,
}

impl Pruner {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: RetentionSettings,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            clock,
            settings,
            metrics,
        }
    }

    /// Prunes everything due at the clock's time; returns what was removed.
    pub async fn run_once(&self) -> Result<Pruned, StoreError> {
        let now = self.clock.now();
        let mut total = Pruned::default();
        let store = &self.store;
        if let Some(cutoff) = cutoff(now, self.settings.deliveries) {
            total.add(repeat(|| store.prune_deliveries(cutoff, STEP)).await?);
        }
        if let Some(cutoff) = cutoff(now, self.settings.events) {
            total.add(repeat(|| store.prune_events(cutoff, STEP)).await?);
        }
        if let Some(keep) = self.settings.documents_per_project {
            total.add(repeat(|| store.prune_documents(keep, STEP)).await?);
        }
        if let Some(cutoff) = cutoff(now, self.settings.batches) {
            total.add(repeat(|| store.prune_batches(cutoff, STEP)).await?);
        }
        if total != Pruned::default() {
            store.release_free_pages(RELEASE_PAGES).await?;
            tracing::info!(?total, "pruned what retention no longer keeps");
        }
        self.metrics.pruned(&total);
        Ok(total)
    }

    /// Prunes every `interval` until `shutdown`.
    /// With several replicas only the leader of `retention` prunes.
    pub fn spawn(
        self,
        shutdown: CancellationToken,
        leadership: crate::fleet::Leadership,
    ) -> JoinHandle<()> {
        let interval = self.settings.interval;
        tokio::spawn(async move {
            loop {
                if !leadership.leads("retention").await {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(crate::fleet::RENEW_EVERY) => continue,
                    }
                }
                // Stopping mid-step is safe: an unfinished step rolls back.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    pruned = self.run_once() => if let Err(e) = pruned {
                        tracing::warn!(error = %e, "pruning failed; trying again next interval");
                    },
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        })
    }
}

/// `now - age`, or `None` when the kind is kept forever (or the date would
/// leave the calendar).
fn cutoff(now: DateTime<Utc>, age: Option<Duration>) -> Option<DateTime<Utc>> {
    crate::core::time::checked_before(now, age?)
}

/// Runs one kind's step until a step removes less than a full step. After
/// each step it rests [`REST`] times as long as the step took, so pruning a
/// large backlog takes at most a fifth of the writer's time (and of a CPU):
/// ingest keeps the rest. Even so it removes thousands of rows a second.
async fn repeat<F, Fut>(mut step: F) -> Result<Pruned, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Pruned, StoreError>>,
{
    let mut total = Pruned::default();
    loop {
        let started = std::time::Instant::now();
        let pruned = step().await?;
        total.add(pruned);
        let rows = pruned.deliveries + pruned.events + pruned.documents + pruned.batches;
        if rows < u64::from(STEP) {
            return Ok(total);
        }
        tokio::time::sleep(started.elapsed() * REST).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_cutoff_that_would_leave_the_calendar_prunes_nothing() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let forever = Duration::from_secs(u64::MAX / 4);
        assert_eq!(cutoff(now, Some(forever)), None);
        assert_eq!(cutoff(now, None), None);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            cutoff(now, Some(day)),
            Some(now - chrono::Duration::days(1))
        );
    }
}
