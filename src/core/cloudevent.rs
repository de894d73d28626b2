//! The webhook body: a CloudEvents 1.0 structured-mode JSON envelope
//! (`application/cloudevents+json`). It is built once per event at ingest
//! and stored, so every delivery and every retry sends the same bytes.

use serde::Serialize;
use serde_json::{json, Value};

use super::batch::BatchRecord;
use super::event::{Event, EventType, Payload};

pub const CONTENT_TYPE: &str = "application/cloudevents+json";

#[derive(Debug, Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    time: String,
    subject: String,
    datacontenttype: &'static str,
    data: Value,
}

/// Renders the envelope for `event`. `event_type` may differ from the
/// event's own (Herald raises `aggregate.batch.recovered` from a success);
/// `batch` is the batch after the event, for batch events.
pub fn render(
    event: &Event,
    event_id: &str,
    event_type: EventType,
    batch: Option<&BatchRecord>,
) -> Vec<u8> {
    let envelope = Envelope {
        specversion: "1.0",
        id: event_id,
        source: &event.source,
        event_type: event_type.as_str(),
        time: event
            .occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        subject: subject(event),
        datacontenttype: "application/json",
        data: data(event, batch),
    };
    // Serializing plain strings and JSON values cannot fail.
    serde_json::to_vec(&envelope).expect("envelope serializes")
}

fn subject(event: &Event) -> String {
    match &event.payload {
        Payload::Batch(b) => format!(
            "environments/{}/cubes/{}/batches/{}",
            b.batch.environment_id, b.batch.cube_id, b.batch.batch_id
        ),
        Payload::Environment(e) => format!("environments/{}", e.environment_id),
        Payload::Schema(s) => match &s.project_id {
            Some(p) => format!("environments/{}/projects/{p}", s.environment_id),
            None => format!("environments/{}", s.environment_id),
        },
    }
}

fn data(event: &Event, batch: Option<&BatchRecord>) -> Value {
    match (&event.payload, batch) {
        (Payload::Batch(_), Some(record)) => batch_data(record),
        (Payload::Batch(b), None) => json!({ "batch_id": b.batch.batch_id }),
        (Payload::Environment(e), _) => json!({
            "environment_id": e.environment_id,
            "name": e.name,
            "attributes": e.attributes,
        }),
        (Payload::Schema(s), _) => json!({
            "environment_id": s.environment_id,
            "project_id": s.project_id,
            "catalogs": s.catalogs,
            "cubes": s.cubes,
            "version": s.version,
        }),
    }
}

fn batch_data(r: &BatchRecord) -> Value {
    let duration_ms = match (r.started_at, r.finished_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
        _ => None,
    };
    json!({
        "batch_id": r.batch_id,
        "environment_id": r.environment_id,
        "project_id": r.project_id,
        "cube_id": r.cube_id,
        "cube_name": r.cube_name,
        "state": r.state,
        "build_kind": r.build_kind,
        "aggregate_count": r.aggregate_count,
        "aggregates_built": r.aggregates_built,
        "rows_written": r.rows_written,
        "error_message": r.error_message,
        "failed_aggregates": r.failed_aggregates,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "duration_ms": duration_ms,
        "start_seen": r.start_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{EnvironmentChange, EnvironmentEvent};
    use chrono::TimeZone;

    #[test]
    fn the_envelope_carries_the_required_cloudevents_attributes() {
        let event = Event {
            event_id: "ev-1".into(),
            occurred_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            source: "engine-a".into(),
            payload: Payload::Environment(EnvironmentEvent {
                change: EnvironmentChange::Created,
                environment_id: "prod".into(),
                name: Some("Production".into()),
                attributes: [("region".to_string(), "eu".to_string())].into(),
            }),
        };
        let body = render(&event, "ev-1", EventType::EnvironmentCreated, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "ev-1");
        assert_eq!(v["source"], "engine-a");
        assert_eq!(v["type"], "environment.created");
        assert_eq!(v["time"], "2026-01-02T03:04:05.000Z");
        assert_eq!(v["subject"], "environments/prod");
        assert_eq!(v["data"]["attributes"]["region"], "eu");
    }
}
