//! What to do after a delivery attempt: the outcome of one HTTP exchange
//! decides between done, retry later, give up, or disable the subscription.
//!
//! - 2xx: delivered.
//! - 410 Gone: the receiver asked to be forgotten; the subscription is
//!   disabled.
//! - 408, 429, 5xx, timeouts, connection errors: retried on the schedule,
//!   with jitter; 429 and 503 wait at least what `Retry-After` asks.
//! - any other status: a permanent failure, not retried.
//! - schedule exhausted: dead.

use std::time::Duration;

/// What one attempt produced, stripped to what the policy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered with this status.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, DNS failure or timeout.
    NoResponse,
    /// The request could not be built for this event (e.g. a template
    /// failed on unusual data): retrying cannot help.
    Unsendable,
    /// The egress policy blocks the receiver's address: nothing was sent,
    /// and retrying cannot help.
    Blocked,
}

/// The delivery's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    RetryIn(Duration),
    /// Permanent failure (a 4xx other than 408/410/429).
    Failed,
    /// Retryable, but the schedule is used up.
    Dead,
    /// 410 Gone: stop sending to this subscription.
    Disable,
}

/// Longest wait a receiver's `Retry-After` can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Longest wait a retry schedule may list: a delivery retried a week later
/// is already stale, and anything far longer overflows date arithmetic.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most entries a retry schedule may list.
pub const MAX_RETRIES: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Waits before the 2nd, 3rd, ... attempts: at most `schedule.len() + 1`
    /// attempts are made.
    pub schedule: Vec<Duration>,
    /// Each wait is scaled by a factor drawn from `1 ± jitter` so that many
    /// failed deliveries do not retry in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let mins = |m: u64| Duration::from_secs(m * 60);
        Self {
            schedule: vec![
                Duration::from_secs(5),
                mins(5),
                mins(30),
                mins(120),
                mins(300),
                mins(600),
            ],
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Decides the next step after attempt number `attempt` (1-based).
    /// `unit` is a uniform random number in `[0, 1)` for the jitter.
    pub fn verdict(&self, attempt: u32, result: AttemptResult, unit: f64) -> Verdict {
        let retry_after = match result {
            AttemptResult::Status {
                code: 200..=299, ..
            } => return Verdict::Delivered,
            AttemptResult::Status { code: 410, .. } => return Verdict::Disable,
            AttemptResult::Status { code, retry_after } if is_retryable(code) => retry_after,
            AttemptResult::Status { .. } => return Verdict::Failed,
            AttemptResult::NoResponse => None,
            AttemptResult::Unsendable | AttemptResult::Blocked => return Verdict::Failed,
        };
        let Some(base) = self.schedule.get(attempt.saturating_sub(1) as usize) else {
            return Verdict::Dead;
        };
        // A schedule is bounded by MAX_RETRY_WAIT, so this never saturates
        // in practice; it cannot panic either way.
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let jittered = Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0))
            .unwrap_or(Duration::MAX);
        let wait = match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        };
        Verdict::RetryIn(wait)
    }

    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }
}

fn is_retryable(code: u16) -> bool {
    matches!(code, 408 | 429 | 500..=599)
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date, relative
/// to `now` (unix seconds). Anything unparseable is ignored.
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = when.timestamp().saturating_sub(now_unix);
    Some(Duration::from_secs(secs.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> AttemptResult {
        AttemptResult::Status {
            code,
            retry_after: None,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(10), Duration::from_secs(100)],
            jitter: 0.2,
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let p = policy();
        assert_eq!(p.verdict(1, status(204), 0.5), Verdict::Delivered);
        assert_eq!(p.verdict(1, status(410), 0.5), Verdict::Disable);
        assert_eq!(p.verdict(1, status(400), 0.5), Verdict::Failed);
        assert_eq!(p.verdict(1, status(404), 0.5), Verdict::Failed);
        assert_eq!(
            p.verdict(1, AttemptResult::Unsendable, 0.5),
            Verdict::Failed
        );
        assert_eq!(p.verdict(1, AttemptResult::Blocked, 0.5), Verdict::Failed);
        for code in [408, 429, 500, 502, 503] {
            assert_eq!(
                p.verdict(1, status(code), 0.5),
                Verdict::RetryIn(Duration::from_secs(10))
            );
        }
        assert_eq!(
            p.verdict(2, AttemptResult::NoResponse, 0.5),
            Verdict::RetryIn(Duration::from_secs(100))
        );
    }

    #[test]
    fn the_schedule_runs_out_into_dead() {
        assert_eq!(policy().verdict(3, status(500), 0.5), Verdict::Dead);
        assert_eq!(policy().max_attempts(), 3);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = policy();
        assert_eq!(
            p.verdict(1, status(500), 0.0),
            Verdict::RetryIn(Duration::from_secs(8))
        );
        let Verdict::RetryIn(high) = p.verdict(1, status(500), 0.999_999) else {
            panic!("expected a retry");
        };
        assert!(high <= Duration::from_secs(12) && high > Duration::from_secs(11));
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_the_wait() {
        let p = policy();
        let asked = |secs| AttemptResult::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.verdict(1, asked(60), 0.5),
            Verdict::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(
            p.verdict(1, asked(1), 0.5),
            Verdict::RetryIn(Duration::from_secs(10))
        );
        assert_eq!(
            p.verdict(1, asked(10_000_000), 0.5),
            Verdict::RetryIn(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn jitter_on_a_huge_wait_saturates_instead_of_panicking() {
        let p = RetryPolicy {
            schedule: vec![Duration::MAX],
            jitter: 0.2,
        };
        assert_eq!(
            p.verdict(1, status(500), 0.999),
            Verdict::RetryIn(Duration::MAX)
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .timestamp();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
