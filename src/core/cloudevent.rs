//! The webhook body: a CloudEvents 1.0 structured-mode JSON envelope
//! (`application/cloudevents+json`). It is built once per event when the
//! event is committed and stored, so every delivery and every retry sends
//! the same bytes; payload templates render over the same envelope.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::batch::{BatchRecord, BatchState};
use super::event::{
    BatchEvent, BatchOutcome, BatchRef, BuildKind, EnvironmentChange, EnvironmentEvent, Event,
    EventType, FailedAggregate, Payload, SchemaEvent,
};

pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The source of the events Herald raises itself.
pub const HERALD_SOURCE: &str = "herald";

/// The envelope's attributes.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub specversion: &'static str,
    pub id: &'a str,
    pub source: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub time: String,
    pub subject: String,
    pub datacontenttype: &'static str,
    pub data: Value,
}

impl<'a> Envelope<'a> {
    pub fn new(
        id: &'a str,
        source: &'a str,
        event_type: EventType,
        time: DateTime<Utc>,
        subject: String,
        data: Value,
    ) -> Self {
        Envelope {
            specversion: "1.0",
            id,
            source,
            event_type: event_type.as_str(),
            time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            subject,
            datacontenttype: "application/json",
            data,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and JSON values cannot fail.
        serde_json::to_vec(self).expect("envelope serializes")
    }
}

/// Renders the envelope for a caller's event. `event_type` may differ from
/// the event's own (Herald raises `aggregate.batch.recovered` from a
/// success); `batch` is the batch after the event, for batch events.
pub fn render(
    event: &Event,
    event_id: &str,
    event_type: EventType,
    batch: Option<&BatchRecord>,
) -> Vec<u8> {
    Envelope::new(
        event_id,
        &event.source,
        event_type,
        event.occurred_at,
        subject(event),
        data(event, batch),
    )
    .to_bytes()
}

pub fn batch_subject(r: &BatchRecord) -> String {
    format!(
        "environments/{}/cubes/{}/batches/{}",
        r.environment_id, r.cube_id, r.batch_id
    )
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
        Payload::Project(p) => format!(
            "organizations/{}/projects/{}",
            p.organization_id, p.project_id
        ),
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
        (Payload::Project(p), _) => json!({
            "organization_id": p.organization_id,
            "organization_name": p.organization_name,
            "project_id": p.project_id,
            "project_name": p.project_name,
            "user": p.user,
            "snapshot_id": p.snapshot_id,
            "snapshot_tag": p.snapshot_tag,
            "target_environment": p.target_environment,
            "project_xml_sha256": p.xml_sha256,
            "project_xml_size": p.xml_size,
            "project_xml_malformed": p.xml_malformed,
            "model_changes": p.model_changes,
        }),
    }
}

/// The scope an envelope's `data` describes (for matching stored events
/// against subscriptions again, as replay does).
pub fn scope_of(envelope: &Value) -> super::event::Scope {
    let data = &envelope["data"];
    let field = |name: &str| data[name].as_str().map(str::to_owned);
    super::event::Scope {
        environment_id: field("environment_id"),
        project_id: field("project_id"),
        cube_id: field("cube_id"),
        cube_name: field("cube_name"),
        batch_id: field("batch_id"),
    }
}

/// The `data` of every batch event: the batch as it stands after it.
pub fn batch_data(r: &BatchRecord) -> Value {
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

/// The `data` of `aggregate.refresh.overdue`.
pub fn overdue_data(
    schedule: &str,
    environment_id: &str,
    cube_id: &str,
    last_success_at: Option<DateTime<Utc>>,
    expected_by: DateTime<Utc>,
) -> Value {
    json!({
        "schedule": schedule,
        "environment_id": environment_id,
        "cube_id": cube_id,
        "last_success_at": last_success_at,
        "expected_by": expected_by,
    })
}

/// The `data` of `herald.delivery.dead`.
pub fn dead_delivery_data(
    subscription: &str,
    delivery_id: &str,
    event: &Value,
    attempts: u32,
    last_error: Option<&str>,
) -> Value {
    json!({
        "subscription": subscription,
        "delivery_id": delivery_id,
        "event_id": event["id"],
        "event_type": event["type"],
        "event_subject": event["subject"],
        "attempts": attempts,
        "last_error": last_error,
    })
}

/// The `data` of `herald.subscription.disabled`.
pub fn disabled_data(subscription: &str, reason: &str) -> Value {
    json!({ "subscription": subscription, "reason": reason })
}

/// One parsed envelope per event type, with every field present: what
/// templates are checked against when the configuration loads.
pub fn samples() -> Vec<(EventType, Value)> {
    EventType::ALL
        .into_iter()
        .map(|t| {
            let bytes = sample(t);
            // Envelopes are JSON by construction.
            (t, serde_json::from_slice(&bytes).expect("sample is JSON"))
        })
        .collect()
}

fn sample(event_type: EventType) -> Vec<u8> {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 6, 0, 0)
        .single()
        .unwrap_or_default();
    let batch = BatchRef {
        batch_id: "b-1".into(),
        environment_id: "prod".into(),
        project_id: Some("finance".into()),
        cube_id: "sales".into(),
        cube_name: "Sales".into(),
    };
    let outcome = match event_type {
        EventType::BatchFailed => BatchOutcome::Failed {
            error_message: "out of disk".into(),
            failed_aggregates: vec![FailedAggregate {
                aggregate_id: "agg-1".into(),
                aggregate_name: "by_region".into(),
                error: "write failed".into(),
            }],
        },
        EventType::BatchStarted | EventType::BatchStalled => BatchOutcome::Started,
        _ => BatchOutcome::Succeeded {
            aggregates_built: 3,
            rows_written: 1000,
        },
    };
    let record = BatchRecord {
        batch_id: batch.batch_id.clone(),
        environment_id: batch.environment_id.clone(),
        project_id: batch.project_id.clone(),
        cube_id: batch.cube_id.clone(),
        cube_name: batch.cube_name.clone(),
        state: BatchState::Succeeded,
        build_kind: BuildKind::Full,
        aggregate_count: 3,
        aggregates_built: 3,
        rows_written: 1000,
        error_message: None,
        failed_aggregates: vec![],
        started_at: Some(at),
        finished_at: Some(at),
        start_seen: true,
        updated_at: at,
    };
    let payload = match event_type {
        EventType::EnvironmentCreated
        | EventType::EnvironmentUpdated
        | EventType::EnvironmentDeleted => Payload::Environment(EnvironmentEvent {
            change: EnvironmentChange::Updated,
            environment_id: "prod".into(),
            name: Some("Production".into()),
            attributes: Default::default(),
        }),
        EventType::SchemaPublished | EventType::SchemaUnpublished => Payload::Schema(SchemaEvent {
            published: true,
            environment_id: "prod".into(),
            project_id: Some("finance".into()),
            catalogs: vec!["Finance".into()],
            cubes: vec!["Sales".into()],
            version: Some("1".into()),
        }),
        EventType::RefreshOverdue => {
            let data = overdue_data("daily", "prod", "sales", Some(at), at);
            let subject = "environments/prod/cubes/sales".to_owned();
            return Envelope::new("ev-1", HERALD_SOURCE, event_type, at, subject, data).to_bytes();
        }
        EventType::GateOpened | EventType::GateBlocked | EventType::GateMissed => {
            let (data, subject) = super::gate::sample_data(event_type, at);
            return Envelope::new("ev-1", HERALD_SOURCE, event_type, at, subject, data).to_bytes();
        }
        t if t.is_project() => Payload::Project(super::event::ProjectEvent {
            event_type: t,
            organization_id: "acme".into(),
            organization_name: Some("Acme".into()),
            project_id: "finance".into(),
            project_name: Some("Finance".into()),
            user: Some("ada@example.com".into()),
            snapshot_id: Some("s-1".into()),
            snapshot_tag: Some("v1".into()),
            target_environment: Some("prod".into()),
            xml_sha256: String::new(),
            xml_size: 0,
            model_changes: Some("added measure Sales.Margin".into()),
            xml_malformed: false,
            xml: Default::default(),
            document: None,
        }),
        EventType::DeliveryDead | EventType::SubscriptionDisabled | EventType::SubscriptionTest => {
            let data = if event_type == EventType::DeliveryDead {
                let event = json!({"id": "ev-1", "type": "aggregate.batch.failed", "subject": "environments/prod/cubes/sales/batches/b-1"});
                dead_delivery_data("etl", "msg_1", &event, 7, Some("HTTP 503"))
            } else {
                disabled_data("etl", "receiver answered 410 Gone")
            };
            let subject = "subscriptions/etl".to_owned();
            return Envelope::new("ev-1", HERALD_SOURCE, event_type, at, subject, data).to_bytes();
        }
        _ => Payload::Batch(BatchEvent {
            batch,
            build_kind: BuildKind::Full,
            aggregate_count: 3,
            outcome,
        }),
    };
    let event = Event {
        event_id: "ev-1".into(),
        occurred_at: at,
        source: "engine".into(),
        payload,
    };
    render(&event, "ev-1", event_type, Some(&record))
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

    #[test]
    fn there_is_a_sample_for_every_event_type() {
        let samples = samples();
        assert_eq!(samples.len(), EventType::ALL.len());
        for (t, v) in samples {
            assert_eq!(v["type"], t.as_str());
            assert!(v["data"].is_object());
        }
    }
}
