//! `[retention]`: how long Herald keeps what it has done. Delivered and
//! failed deliveries (with their attempts), events, project documents and
//! batch rows are pruned in the background once older than these limits;
//! `"off"` keeps a kind forever.

use std::time::Duration;

use serde::Deserialize;

use super::{count_in, duration_in, invalid, limits, parse_within, ConfigError};

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
        interval: duration_in(
            "retention.interval",
            raw.interval,
            "10m",
            limits::RETENTION_INTERVAL,
        )?,
    })
}

/// An age, `"off"` (keep forever), or the default.
fn age(
    key: &str,
    value: Option<String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(default),
        Some("off") => Ok(None),
        Some(text) => parse_within(key, text, limits::RETENTION_AGE).map(Some),
    }
}

/// A count, `"off"` (keep all), or the default.
fn documents(value: Option<RawCount>) -> Result<Option<u32>, ConfigError> {
    const KEY: &str = "retention.documents_per_project";
    let default = RetentionSettings::default().documents_per_project;
    match value {
        None => Ok(default),
        Some(RawCount::Text(text)) if text.trim() == "off" => Ok(None),
        Some(RawCount::Count(n)) => {
            let n = usize::try_from(n).map_err(|_| invalid(KEY, format!("{n} is not a count")))?;
            let kept = count_in(KEY, Some(n), 0, limits::DOCUMENTS_KEPT)?;
            // The range ends far below u32::MAX.
            Ok(Some(kept as u32))
        }
        Some(RawCount::Text(text)) => {
            Err(invalid(KEY, format!("`{text}` is not a count or \"off\"")))
        }
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
