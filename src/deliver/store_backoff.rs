//! How a lane waits when the store fails under it (a full disk, say):
//! instead of retrying its claim at once in a loop, it waits longer after
//! each failure in a row, up to a ceiling, and logs the trouble once when it
//! starts and once when it ends rather than on every try.

use std::time::Duration;

use crate::store::StoreError;

/// The first wait after a failure.
const FIRST: Duration = Duration::from_millis(100);
/// The longest wait: a store that recovers is noticed within this.
const CEILING: Duration = Duration::from_secs(10);

/// One lane's run of store failures.
#[derive(Debug, Default)]
pub(super) struct StoreBackoff {
    failures: u32,
}

impl StoreBackoff {
    /// Counts a failure and returns how long to wait before the next try.
    pub(super) fn failed(&mut self, lane: &str, error: &StoreError) -> Duration {
        if self.failures == 0 {
            match error.unwritable_reason() {
                Some(reason) => {
                    tracing::warn!(
                        subscription = lane,
                        reason,
                        "the store cannot write; delivery waits"
                    )
                }
                None => {
                    tracing::error!(subscription = lane, error = %error, "the store failed; delivery waits")
                }
            }
        } else {
            tracing::debug!(subscription = lane, error = %error, failures = self.failures, "the store still fails");
        }
        self.failures = self.failures.saturating_add(1);
        self.pause()
    }

    /// Ends a run of failures, if there was one.
    pub(super) fn succeeded(&mut self, lane: &str) {
        if self.failures > 0 {
            tracing::info!(
                subscription = lane,
                failures = self.failures,
                "the store works again; delivery resumes"
            );
            self.failures = 0;
        }
    }

    /// The wait before the next try: none while the store works, then
    /// doubling from [`FIRST`] up to [`CEILING`].
    pub(super) fn pause(&self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => FIRST.saturating_mul(1 << (n - 1).min(16)).min(CEILING),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoreError {
        StoreError::Unwritable("the database or its disk is full".to_owned())
    }

    #[test]
    fn waits_double_after_each_failure_up_to_the_ceiling() {
        let mut backoff = StoreBackoff::default();
        assert_eq!(backoff.pause(), Duration::ZERO);
        let waits: Vec<_> = (0..12).map(|_| backoff.failed("lane", &full())).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert_eq!(waits[2], FIRST * 4);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), CEILING);
    }

    #[test]
    fn a_success_ends_the_wait() {
        let mut backoff = StoreBackoff::default();
        backoff.failed("lane", &full());
        backoff.failed("lane", &full());
        backoff.succeeded("lane");
        assert_eq!(backoff.pause(), Duration::ZERO);
        assert_eq!(backoff.failed("lane", &full()), FIRST);
    }
}
