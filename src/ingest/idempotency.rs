//! Idempotency of ingest: an `event_id` names one event. A repeat with
//! the same content is a retry and gets the first answer; other content
//! under the same id is refused, as a reused idempotency key is — keeping
//! either silently would lose what the caller meant.
//!
//! Content is compared by a digest, so the check is the same against a
//! stored event and against an earlier job of the same group commit.

use sha2::{Digest, Sha256};

use crate::core::event::{Event, Scope};
use crate::core::hex::hex;
use crate::ingest::ReusedEventId;

/// An event id's first use within the batch.
pub(super) struct FirstUse {
    pub(super) job: usize,
    pub(super) fingerprint: String,
    /// What it was used for (to name a reuse).
    pub(super) described: String,
}

/// A digest of what the caller says happened: the instant, as seconds and
/// nanoseconds (two spellings of one instant are one content), and the
/// payload (a document by its SHA-256). Not the `source`: it names the
/// engine instance that sent the event, and a retry may come from another.
pub(super) fn fingerprint(event: &Event) -> String {
    let at = &event.occurred_at;
    let content = (at.timestamp(), at.timestamp_subsec_nanos(), &event.payload);
    // Plain data with string keys: serializing it to JSON cannot fail.
    let json = serde_json::to_vec(&content).expect("events serialize");
    hex(&Sha256::digest(json))
}

/// A repeat of an `event_id` must carry the content of its first use: that
/// is a retry, and gets the first answer. Other content under the same id
/// is refused, as a reused idempotency key is.
pub(super) fn same_content(
    event: &Event,
    fingerprint: &str,
    first: &str,
    first_use: impl FnOnce() -> String,
) -> Result<(), ReusedEventId> {
    if fingerprint == first {
        return Ok(());
    }
    Err(ReusedEventId {
        event_id: event.event_id.clone(),
        first_use: first_use(),
    })
}

/// What an event was, for a message: `aggregate.batch.started of batch b1`.
pub(super) fn describe_use(event_type: &str, scope: &Scope) -> String {
    let (kind, id) = match scope {
        Scope {
            batch_id: Some(id), ..
        } => ("batch", id),
        Scope {
            project_id: Some(id),
            ..
        } if event_type.starts_with("project.") => ("project", id),
        Scope {
            environment_id: Some(id),
            ..
        } => ("environment", id),
        _ => return event_type.to_owned(),
    };
    format!("{event_type} of {kind} {id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{EnvironmentChange, EnvironmentEvent, Payload};

    fn created(at: &str, source: &str, name: &str) -> Event {
        Event {
            event_id: "e1".to_owned(),
            occurred_at: at.parse().expect("a valid time"),
            source: source.to_owned(),
            payload: Payload::Environment(EnvironmentEvent {
                change: EnvironmentChange::Created,
                environment_id: "prod".to_owned(),
                name: Some(name.to_owned()),
                attributes: Default::default(),
            }),
        }
    }

    #[test]
    fn the_fingerprint_is_the_content_not_its_spelling_or_sender() {
        let first = fingerprint(&created("2026-03-01T12:00:00Z", "a", "Prod"));
        let same_instant = created("2026-03-01T13:00:00.000+01:00", "b", "Prod");
        assert_eq!(fingerprint(&same_instant), first);
        let later = created("2026-03-01T12:00:00.000000001Z", "a", "Prod");
        assert_ne!(fingerprint(&later), first);
        let renamed = created("2026-03-01T12:00:00Z", "a", "Production");
        assert_ne!(fingerprint(&renamed), first);
    }

    #[test]
    fn a_first_use_is_named_by_what_it_concerned() {
        let scope = |environment: &str, project: Option<&str>, batch: Option<&str>| Scope {
            environment_id: Some(environment.to_owned()),
            project_id: project.map(str::to_owned),
            batch_id: batch.map(str::to_owned),
            ..Scope::default()
        };
        let cases = [
            (
                "aggregate.batch.started",
                scope("prod", Some("fin"), Some("b1")),
                "aggregate.batch.started of batch b1",
            ),
            (
                "project.published",
                scope("prod", Some("fin"), None),
                "project.published of project fin",
            ),
            (
                "schema.published",
                scope("prod", Some("fin"), None),
                "schema.published of environment prod",
            ),
        ];
        for (event_type, scope, expected) in cases {
            assert_eq!(describe_use(event_type, &scope), expected);
        }
        assert_eq!(
            describe_use("project.deleted", &Scope::default()),
            "project.deleted"
        );
    }
}
