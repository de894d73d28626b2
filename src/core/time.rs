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

/// A duration in words, right at every scale: `850 ms`, `3 s`, `2 min 5 s`,
/// `10 min`, `1 h 5 min`, `2 d 3 h` (the two largest units, a zero second
/// unit left out). Never rounds a short duration down to nothing.
pub fn duration_words(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = d.as_secs();
    let units = [(86_400, "d"), (3600, "h"), (60, "min"), (1, "s")];
    let Some(i) = units.iter().position(|(size, _)| secs >= *size) else {
        return format!("{secs} s");
    };
    let (size, name) = units[i];
    let mut words = format!("{} {name}", secs / size);
    if let Some((next, next_name)) = units.get(i + 1) {
        let rest = secs % size / next;
        if rest > 0 {
            words.push_str(&format!(" {rest} {next_name}"));
        }
    }
    words
}

/// A moment to the second, as RFC 3339 UTC: `2026-03-01T12:00:05Z`.
pub fn to_the_second(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations_in_words_are_right_at_every_scale() {
        let words = |secs| duration_words(Duration::from_secs(secs));
        assert_eq!(duration_words(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration_words(Duration::ZERO), "0 ms");
        assert_eq!(words(3), "3 s");
        assert_eq!(words(59), "59 s");
        assert_eq!(words(60), "1 min");
        assert_eq!(words(125), "2 min 5 s");
        assert_eq!(words(600), "10 min");
        assert_eq!(words(3600 + 5 * 60 + 7), "1 h 5 min");
        assert_eq!(words(2 * 86_400 + 3 * 3600), "2 d 3 h");
        assert_eq!(words(86_400), "1 d");
    }

    #[test]
    fn moments_are_shown_to_the_second() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 5).unwrap()
            + chrono::TimeDelta::milliseconds(734);
        assert_eq!(to_the_second(t), "2026-03-01T12:00:05Z");
    }

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
