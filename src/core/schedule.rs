//! Refresh schedules: a cube is declared to refresh every period or on a
//! cron schedule; when no successful batch arrives by the expected time
//! plus a grace period, the refresh is overdue.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::time::checked_after;

#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique; names the schedule in events and state.
    pub name: String,
    pub environment_id: String,
    pub cube_id: String,
    pub cadence: Cadence,
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub enum Cadence {
    /// A success is expected this long after the previous one.
    Every(Duration),
    /// A success is expected after each tick (UTC) following the previous one.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// When the refresh becomes overdue if no success arrives after `last`
    /// (the previous success, or when Herald began tracking the cube).
    pub fn overdue_at(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let expected = match &self.cadence {
            Cadence::Every(period) => checked_after(last, *period)?,
            Cadence::Cron(cron) => cron.find_next_occurrence(&last, false).ok()?,
        };
        checked_after(expected, self.grace)
    }

    /// When the refresh becomes overdue, counted from the later of the
    /// last success and when Herald began tracking the schedule.
    pub fn overdue_after(
        &self,
        last_success: Option<DateTime<Utc>>,
        tracked_since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.overdue_at(last_success.map_or(tracked_since, |at| at.max(tracked_since)))
    }
}

/// Parses a five-field cron expression (minute hour day month weekday).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr;
    croner::Cron::from_str(text).map_err(|e| format!("`{text}` is not a cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cadence: Cadence) -> Schedule {
        Schedule {
            name: "daily".into(),
            environment_id: "prod".into(),
            cube_id: "sales".into(),
            cadence,
            grace: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_period_is_counted_from_the_last_success() {
        let s = schedule(Cadence::Every(Duration::from_secs(24 * 3600)));
        let last = Utc.with_ymd_and_hms(2026, 3, 1, 6, 30, 0).unwrap();
        assert_eq!(
            s.overdue_at(last),
            Some(Utc.with_ymd_and_hms(2026, 3, 2, 7, 30, 0).unwrap())
        );
    }

    #[test]
    fn a_period_beyond_the_calendar_is_never_overdue_and_never_panics() {
        let last = Utc.with_ymd_and_hms(2026, 3, 1, 6, 30, 0).unwrap();
        let absurd = Duration::from_secs(100_000_000 * 86_400);
        assert_eq!(schedule(Cadence::Every(absurd)).overdue_at(last), None);
        let mut late = schedule(Cadence::Every(Duration::from_secs(60)));
        late.grace = absurd;
        assert_eq!(late.overdue_at(last), None);
    }

    #[test]
    fn a_cron_schedule_expects_a_success_after_the_next_tick() {
        let s = schedule(Cadence::Cron(Box::new(parse_cron("0 6 * * *").unwrap())));
        let last = Utc.with_ymd_and_hms(2026, 3, 1, 6, 30, 0).unwrap();
        assert_eq!(
            s.overdue_at(last),
            Some(Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap())
        );
        assert!(parse_cron("every day").is_err());
    }
}
