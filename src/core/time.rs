//! Date arithmetic with durations users write (timeouts, retry waits,
//! allowances, intervals). `DateTime + TimeDelta` panics on overflow; these
//! never do. Configured durations are bounded far below any overflow, so the
//! saturation is a guard, not a behaviour anyone should meet.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The moment `d` after `t`, or `None` past the last date chrono represents.
pub fn checked_after(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

/// The moment `d` after `t`, saturating at the last date chrono represents.
pub fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    checked_after(t, d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The moment `d` before `t`, or `None` before the first date chrono
/// represents.
pub fn checked_before(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(TimeDelta::from_std(d).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn overflowing_durations_saturate_instead_of_panicking() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(
            after(now, Duration::from_secs(60)),
            Utc.with_ymd_and_hms(2026, 3, 1, 12, 1, 0).unwrap()
        );
        let absurd = Duration::from_secs(100_000_000 * 86_400);
        assert_eq!(checked_after(now, absurd), None);
        assert_eq!(after(now, absurd), DateTime::<Utc>::MAX_UTC);
        assert_eq!(after(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(checked_before(now, Duration::MAX), None);
        assert_eq!(checked_before(now, absurd), None);
    }
}
