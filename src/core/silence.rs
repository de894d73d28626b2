//! Silences: an admin's "do not tell anyone about these events until
//! then" (planned maintenance), as in Alertmanager.
//!
//! A silence has matchers — environment, project, cube, event type, each
//! exact or a glob like a subscription filter, at least one — and a window
//! `[starts_at, ends_at)`. While it is in its window, email rules and the
//! subscriptions marked `respect_silences` settle a matching delivery as
//! *suppressed* with the silence's id instead of sending it. Whether a
//! delivery is silenced is decided when it is dispatched, not when it is
//! enqueued, so a silence made after the event arrived still applies and
//! one that ended no longer does.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::cloudevent::scope_of;
use super::event::EventType;
use super::filter::Pattern;
use super::validate::{parse_text, FieldError, MAX_ID_LEN, MAX_NAME_LEN};

/// What a silence matches; an absent matcher matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matchers {
    pub environment: Option<Pattern>,
    pub project: Option<Pattern>,
    /// Matched against the cube id and the cube name.
    pub cube: Option<Pattern>,
    pub event_type: Option<Pattern>,
}

impl Matchers {
    /// Parses the four matchers (empty text: absent); at least one must be
    /// given, and an event type pattern must match some known event.
    pub fn parse(
        environment: &str,
        project: &str,
        cube: &str,
        event_type: &str,
    ) -> Result<Matchers, FieldError> {
        let matchers = Matchers {
            environment: parse_matcher("environment", environment)?,
            project: parse_matcher("project", project)?,
            cube: parse_matcher("cube", cube)?,
            event_type: parse_matcher("event_type", event_type)?,
        };
        if let Some(p) = &matchers.event_type {
            if !EventType::ALL.iter().any(|t| p.matches(t.as_str())) {
                return Err(FieldError::new(
                    "event_type",
                    format!("`{}` matches no known event name", p.as_str()),
                ));
            }
        }
        if matchers == Matchers::default() {
            return Err(FieldError::new(
                "matchers",
                "give at least one of environment, project, cube or event_type \
                 (a silence of everything would hide every alert)",
            ));
        }
        Ok(matchers)
    }

    /// Whether an event (its CloudEvents envelope) is one these match. A
    /// matcher on a dimension the event has no value for does not match.
    pub fn matches(&self, envelope: &Value) -> bool {
        let scope = scope_of(envelope);
        let event_type = envelope["type"].as_str();
        let one = |p: &Option<Pattern>, values: &[Option<&str>]| match p {
            None => true,
            Some(p) => values.iter().flatten().any(|v| p.matches(v)),
        };
        one(&self.environment, &[scope.environment_id.as_deref()])
            && one(&self.project, &[scope.project_id.as_deref()])
            && one(
                &self.cube,
                &[scope.cube_id.as_deref(), scope.cube_name.as_deref()],
            )
            && one(&self.event_type, &[event_type])
    }
}

/// A matcher: empty is absent; otherwise bounded, without control
/// characters, and not all blanks.
fn parse_matcher(field: &str, text: &str) -> Result<Option<Pattern>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.trim().is_empty() {
        return Err(FieldError::new(field, "must not be blank"));
    }
    if text.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("is {} bytes; at most {MAX_ID_LEN}", text.len()),
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("must not contain control characters (found {c:?})"),
        ));
    }
    Ok(Some(Pattern::new(text)))
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    /// `sil_…`, made by Herald.
    pub id: String,
    pub matchers: Matchers,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

/// Where a silence stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    /// Its window has not begun.
    Pending,
    Active,
    /// Its window is over (or it was expired by hand).
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    pub fn state(&self, now: DateTime<Utc>) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether this silence holds back `envelope` at `now`.
    pub fn silences(&self, envelope: &Value, now: DateTime<Utc>) -> bool {
        self.state(now) == SilenceState::Active && self.matchers.matches(envelope)
    }
}

/// The silence (the first in the given order) that holds back an event at
/// `now`, if any.
pub fn silencing<'a>(
    silences: &'a [Silence],
    envelope: &Value,
    now: DateTime<Utc>,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.silences(envelope, now))
}

/// Checks a new silence's window and texts: the end must come after the
/// start and after `now` (a silence over before it is made silences
/// nothing); the comment says why.
pub fn check_window(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), FieldError> {
    if ends_at <= starts_at {
        return Err(FieldError::new(
            "ends_at",
            format!("{ends_at} is not after starts_at {starts_at}"),
        ));
    }
    if ends_at <= now {
        return Err(FieldError::new(
            "ends_at",
            format!("{ends_at} has already passed"),
        ));
    }
    Ok(())
}

/// The comment and author of a silence: bounded free text; the comment is
/// required (a silence nobody can explain is hard to lift).
pub fn parse_note(field: &str, text: &str, required: bool) -> Result<String, FieldError> {
    let text = parse_text(field, text, MAX_NAME_LEN)?;
    if required && text.trim().is_empty() {
        return Err(FieldError::new(field, "is required: say why"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn failed(env: &str, cube: &str) -> Value {
        json!({"type": "aggregate.batch.failed", "data": {
            "environment_id": env, "cube_id": cube, "cube_name": "Sales Cube"}})
    }

    fn silence(matchers: Matchers) -> Silence {
        Silence {
            id: "sil_1".into(),
            matchers,
            starts_at: at(0),
            ends_at: at(3600),
            created_by: "ops".into(),
            comment: "reindex".into(),
            created_at: at(0),
        }
    }

    #[test]
    fn a_silence_matches_by_every_given_matcher_within_its_window() {
        let s = silence(Matchers::parse("prod", "", "sal*", "").unwrap());
        assert!(s.silences(&failed("prod", "sales"), at(10)));
        assert!(!s.silences(&failed("test", "sales"), at(10)));
        assert!(!s.silences(&failed("prod", "stock"), at(10)));
        assert!(!s.silences(&failed("prod", "sales"), at(-1)), "not begun");
        assert!(!s.silences(&failed("prod", "sales"), at(3600)), "over");
        let by_name = silence(Matchers::parse("", "", "Sales Cube", "").unwrap());
        assert!(by_name.silences(&failed("prod", "x"), at(10)));
        let by_project = silence(Matchers::parse("", "p1", "", "").unwrap());
        assert!(
            !by_project.silences(&failed("prod", "sales"), at(10)),
            "an event without a project is not matched by a project matcher"
        );
    }

    #[test]
    fn bad_matchers_name_their_field() {
        assert_eq!(
            Matchers::parse("", "", "", "").unwrap_err().field,
            "matchers"
        );
        assert_eq!(
            Matchers::parse("", "", "", "aggregate.nope.*")
                .unwrap_err()
                .field,
            "event_type"
        );
        assert_eq!(
            Matchers::parse(" ", "", "", "").unwrap_err().field,
            "environment"
        );
        assert_eq!(
            Matchers::parse("", "", "a\u{0}", "").unwrap_err().field,
            "cube"
        );
        assert!(Matchers::parse("", "", "", "aggregate.batch.*").is_ok());
    }

    #[test]
    fn a_window_must_end_after_it_starts_and_after_now() {
        assert_eq!(
            check_window(at(10), at(5), at(0)).unwrap_err().field,
            "ends_at"
        );
        assert_eq!(
            check_window(at(-20), at(-10), at(0)).unwrap_err().field,
            "ends_at"
        );
        assert!(check_window(at(0), at(10), at(0)).is_ok());
        assert_eq!(
            parse_note("comment", " ", true).unwrap_err().field,
            "comment"
        );
    }

    #[test]
    fn the_first_matching_silence_is_named() {
        let a = silence(Matchers::parse("test", "", "", "").unwrap());
        let b = Silence {
            id: "sil_2".into(),
            ..silence(Matchers::parse("prod", "", "", "").unwrap())
        };
        let list = [a, b];
        assert_eq!(
            silencing(&list, &failed("prod", "sales"), at(1)).map(|s| s.id.as_str()),
            Some("sil_2")
        );
        assert!(silencing(&list, &failed("dev", "sales"), at(1)).is_none());
    }
}
