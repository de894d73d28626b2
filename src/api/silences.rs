//! The silence RPCs of `AdminService`: converting requests into
//! [`Silence`]s (naming the field on failure) and silences back.

use chrono::{DateTime, Utc};

use super::convert::{timestamp, timestamp_to_proto};
use super::pb;
use crate::core::silence::{check_window, parse_note, Matchers, Silence};
use crate::core::time::after;
use crate::core::validate::FieldError;

/// The silence a create request asks for, made at `now` by `caller` (the
/// token's name, when tokens are checked).
pub fn parse_create(
    r: pb::CreateSilenceRequest,
    now: DateTime<Utc>,
    caller: Option<&str>,
) -> Result<Silence, FieldError> {
    let matchers = Matchers::parse(&r.environment, &r.project, &r.cube, &r.event_type)?;
    let starts_at = match r.starts_at {
        Some(t) => timestamp("starts_at", t)?,
        None => now,
    };
    let ends_at = match (r.ends_at, r.duration.as_str()) {
        (Some(_), d) if !d.is_empty() => {
            return Err(FieldError::new(
                "duration",
                "give ends_at or duration, not both",
            ))
        }
        (Some(t), _) => timestamp("ends_at", t)?,
        (None, "") => {
            return Err(FieldError::new(
                "ends_at",
                "is required (or give duration, e.g. \"2h\")",
            ))
        }
        (None, d) => {
            let length = crate::config::parse_duration(d)
                .map_err(|reason| FieldError::new("duration", reason))?;
            after(starts_at, length)
        }
    };
    check_window(starts_at, ends_at, now)?;
    let created_by = match parse_note("created_by", &r.created_by, false)? {
        by if by.is_empty() => caller.unwrap_or("anonymous").to_owned(),
        by => by,
    };
    Ok(Silence {
        id: format!("sil_{}", uuid::Uuid::now_v7().simple()),
        matchers,
        starts_at,
        ends_at,
        created_by,
        comment: parse_note("comment", &r.comment, true)?,
        created_at: now,
    })
}

pub fn silence_to_proto(s: &Silence, now: DateTime<Utc>) -> pb::Silence {
    let text = |p: &Option<crate::core::filter::Pattern>| {
        p.as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default()
    };
    pb::Silence {
        silence_id: s.id.clone(),
        environment: text(&s.matchers.environment),
        project: text(&s.matchers.project),
        cube: text(&s.matchers.cube),
        event_type: text(&s.matchers.event_type),
        starts_at: Some(timestamp_to_proto(s.starts_at)),
        ends_at: Some(timestamp_to_proto(s.ends_at)),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        created_at: Some(timestamp_to_proto(s.created_at)),
        state: s.state(now).as_str().to_owned(),
    }
}
