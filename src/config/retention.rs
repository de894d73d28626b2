//! `[retention]`: how long Herald keeps what it has done. Delivered and
//! failed deliveries (with their attempts), events, project documents and
//! batch rows are pruned in the background once older than these limits;
//! `"off"` keeps a kind forever.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_duration, ConfigError};

/// Shortest retention accepted: pruning younger data would race the work
/// that still needs it (retries, replays, the delivery log).
const MIN_AGE: Duration = Duration::from_secs(3600);
/// Longest retention accepted (100 years): beyond it, date arithmetic
/// would leave the calendar.
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// Finished deliveries and their attempts, by when they finished.
    pub deliveries: Option<Duration>,
    /// Events, by when Herald received them (never one a delivery or the
    /// schema log still refers to).
    pub events: Option<Duration>,
    /// Batch rows, by when they last changed.
    pub batches: Option<Duration>,
    /// Newest project documents kept per project.
    pub documents_per_project: Option<u32>,
    /// How often pruning runs.
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            deliveries: Some(Duration::from_secs(30 * 86_400)),
            events: Some(Duration::from_secs(90 * 86_400)),
            batches: Some(Duration::from_secs(400 * 86_400)),
            documents_per_project: Some(20),
            interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    deliveries: Option<String>,
    events: Option<String>,
    batches: Option<String>,
    documents_per_project: Option<RawCount>,
    interval: Option<String>,
}

/// A count, or `"off"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCount {
    Count(i64),
    Text(String),
}

pub(super) fn parse_retention(raw: RawRetention) -> Result<RetentionSettings, ConfigError> {
    let defaults = RetentionSettings::default();
    Ok(RetentionSettings {
        deliveries: age("retention.deliveries", raw.deliveries, defaults.deliveries)?,
        events: age("retention.events", raw.events, defaults.events)?,
        batches: age("retention.batches", raw.batches, defaults.batches)?,
        documents_per_project: documents(raw.documents_per_project)?,
        interval: match raw.interval {
            None => defaults.interval,
            Some(text) => within(
                "retention.interval",
                &text,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            )?,
        },
    })
}

fn age(
    key: &str,
    value: Option<String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(default),
        Some("off") => Ok(None),
        Some(text) => within(key, text, MIN_AGE, MAX_AGE).map(Some),
    }
}

fn within(key: &str, text: &str, min: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let value = parse_duration(text).map_err(|reason| invalid(key, reason))?;
    if value < min || value > max {
        let reason = format!(
            "`{text}` is out of range: between {} and {}, or \"off\"",
            humanize(min),
            humanize(max)
        );
        return Err(invalid(key, reason));
    }
    Ok(value)
}

fn humanize(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

fn documents(value: Option<RawCount>) -> Result<Option<u32>, ConfigError> {
    const KEY: &str = "retention.documents_per_project";
    match value {
        None => Ok(RetentionSettings::default().documents_per_project),
        Some(RawCount::Text(text)) if text.trim() == "off" => Ok(None),
        Some(RawCount::Count(n)) if (1..=100_000).contains(&n) => Ok(Some(n as u32)),
        Some(RawCount::Count(n)) => Err(invalid(
            KEY,
            format!("{n} is out of range: between 1 and 100000, or \"off\""),
        )),
        Some(RawCount::Text(text)) => Err(invalid(
            KEY,
            format!("`{text}` is not a count: a number between 1 and 100000, or \"off\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RetentionSettings, ConfigError> {
        parse_retention(toml::from_str(toml_text).expect("valid TOML"))
    }

    #[test]
    fn defaults_keep_a_month_of_deliveries_and_a_quarter_of_events() {
        let settings = parse("").unwrap();
        assert_eq!(settings, RetentionSettings::default());
        assert_eq!(settings.deliveries, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(settings.documents_per_project, Some(20));
    }

    #[test]
    fn off_keeps_a_kind_forever() {
        let settings = parse("events = \"off\"\ndocuments_per_project = \"off\"").unwrap();
        assert_eq!(settings.events, None);
        assert_eq!(settings.documents_per_project, None);
    }

    #[test]
    fn values_out_of_range_name_their_key() {
        for (text, key) in [
            ("deliveries = \"5m\"", "retention.deliveries"),
            ("events = \"100000000d\"", "retention.events"),
            ("batches = \"soon\"", "retention.batches"),
            (
                "documents_per_project = 0",
                "retention.documents_per_project",
            ),
            (
                "documents_per_project = \"many\"",
                "retention.documents_per_project",
            ),
            ("interval = \"3d\"", "retention.interval"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
