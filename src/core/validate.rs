//! Parsing of caller-supplied values into domain types ("parse, don't
//! validate"): every constructor names the offending field on failure.

use chrono::{DateTime, Duration, TimeZone, Utc};

/// Longest identifier Herald accepts (event, batch, environment, ... ids).
pub const MAX_ID_LEN: usize = 256;
/// Longest display name (cube name, environment name, version, source).
pub const MAX_NAME_LEN: usize = 512;
/// Longest free-text field (error messages).
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Most entries in any list or map field.
pub const MAX_LIST_LEN: usize = 10_000;
/// How far in the future an `occurred_at` may lie (clock skew allowance).
pub const MAX_FUTURE_SKEW: Duration = Duration::hours(24);

/// A caller's mistake in one field. `field` is the path in the request,
/// e.g. `batch.cube_id` or `failed_aggregates[3].error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path, e.g. `cube_id` inside `batch` → `batch.cube_id`.
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            reason: self.reason,
        }
    }
}

/// A required identifier: non-empty, at most [`MAX_ID_LEN`] bytes, no
/// whitespace or control characters (ids end up in URLs and headers).
pub fn parse_id(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(too_long(field, value.len(), MAX_ID_LEN));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("must not contain whitespace or control characters (found {c:?})"),
        ));
    }
    Ok(value.to_owned())
}

/// An optional identifier: empty stays `None`, anything else must be an id.
pub fn parse_optional_id(field: &str, value: &str) -> Result<Option<String>, FieldError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

/// Free text bounded by `max` bytes, with no control characters other than
/// newlines and tabs.
pub fn parse_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    if value.len() > max {
        return Err(too_long(field, value.len(), max));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A required name: non-blank text of at most [`MAX_NAME_LEN`] bytes.
pub fn parse_name(field: &str, value: &str) -> Result<String, FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    parse_text(field, value, MAX_NAME_LEN)
}

pub fn check_list_len(field: &str, len: usize) -> Result<(), FieldError> {
    if len > MAX_LIST_LEN {
        return Err(FieldError::new(
            field,
            format!("has {len} entries; at most {MAX_LIST_LEN} are allowed"),
        ));
    }
    Ok(())
}

/// When an event happened: after 2000-01-01 and at most
/// [`MAX_FUTURE_SKEW`] ahead of `now`.
pub fn parse_occurred_at(
    field: &str,
    value: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, FieldError> {
    let earliest = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    if earliest.is_some_and(|earliest| value < earliest) {
        return Err(FieldError::new(
            field,
            format!("{} is before 2000-01-01", value.to_rfc3339()),
        ));
    }
    if value > now + MAX_FUTURE_SKEW {
        return Err(FieldError::new(
            field,
            format!(
                "{} is more than 24h ahead of Herald's clock ({})",
                value.to_rfc3339(),
                now.to_rfc3339()
            ),
        ));
    }
    Ok(value)
}

fn too_long(field: &str, len: usize, max: usize) -> FieldError {
    FieldError::new(
        field,
        format!("is {len} bytes long; at most {max} are allowed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_whitespace_values() {
        assert_eq!(parse_id("batch_id", "b-1").unwrap(), "b-1");
        assert!(parse_id("batch_id", "")
            .unwrap_err()
            .reason
            .contains("empty"));
        assert!(parse_id("batch_id", "a b").is_err());
        assert!(parse_id("batch_id", &"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert_eq!(parse_optional_id("project_id", "").unwrap(), None);
    }

    #[test]
    fn occurred_at_rejects_the_distant_past_and_future() {
        let now = Utc::now();
        assert!(parse_occurred_at("t", now, now).is_ok());
        let past = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
        assert!(parse_occurred_at("t", past, now).is_err());
        assert!(parse_occurred_at("t", now + Duration::days(2), now).is_err());
    }

    #[test]
    fn field_errors_nest_their_paths() {
        let e = FieldError::new("cube_id", "must not be empty").within("batch");
        assert_eq!(e.to_string(), "batch.cube_id: must not be empty");
    }
}
