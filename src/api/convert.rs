//! Proto ⇄ domain conversion. Every request is parsed into a domain
//! [`Event`] here, at the edge; a failure names the field by its path in the
//! request (`batch.cube_id`, `failed_aggregates[2].error`, ...).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::pb;
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::event::{
    BatchEvent, BatchOutcome, BatchRef, BuildKind, EnvironmentChange, EnvironmentEvent, Event,
    FailedAggregate, Payload, SchemaEvent,
};
use crate::core::validate::{
    check_list_len, parse_id, parse_name, parse_occurred_at, parse_optional_id, parse_text,
    FieldError, MAX_NAME_LEN, MAX_TEXT_LEN,
};

use crate::ingest::RAISED_PREFIX as RESERVED_ID_PREFIX;

type Result<T> = std::result::Result<T, FieldError>;

/// Parses the common fields into an [`Event`] around `payload`.
fn event(meta: Option<pb::EventMeta>, now: DateTime<Utc>, payload: Payload) -> Result<Event> {
    let meta = meta.ok_or_else(|| FieldError::new("meta", "is required"))?;
    let event_id = parse_id("meta.event_id", &meta.event_id)?;
    if event_id.starts_with(RESERVED_ID_PREFIX) {
        return Err(FieldError::new(
            "meta.event_id",
            format!("the prefix `{RESERVED_ID_PREFIX}` is reserved for Herald's own events"),
        ));
    }
    let occurred_at = meta
        .occurred_at
        .ok_or_else(|| FieldError::new("meta.occurred_at", "is required"))?;
    Ok(Event {
        event_id,
        occurred_at: parse_occurred_at(
            "meta.occurred_at",
            timestamp("meta.occurred_at", occurred_at)?,
            now,
        )?,
        source: parse_id("meta.source", &meta.source)?,
        payload,
    })
}

/// A protobuf `Timestamp` as an instant. `nanos` must be 0–999,999,999, as
/// the type defines it: chrono would read a larger value as a leap second
/// (`…:60.5Z`), and a negative one has no meaning.
pub fn timestamp(field: &str, t: prost_types::Timestamp) -> Result<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| {
            FieldError::new(
                format!("{field}.nanos"),
                format!("{} is outside 0 to 999,999,999", t.nanos),
            )
        })?;
    Utc.timestamp_opt(t.seconds, nanos)
        .single()
        .ok_or_else(|| FieldError::new(format!("{field}.seconds"), "is out of range"))
}

pub fn timestamp_to_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn batch_ref(batch: Option<pb::BatchRef>) -> Result<BatchRef> {
    let b = batch.ok_or_else(|| FieldError::new("batch", "is required"))?;
    let batch_id = parse_id("batch.batch_id", &b.batch_id)?;
    let environment_id = parse_id("batch.environment_id", &b.environment_id)?;
    let project_id = parse_optional_id("batch.project_id", &b.project_id)?;
    let cube_id = parse_id("batch.cube_id", &b.cube_id)?;
    Ok(BatchRef {
        batch_id,
        environment_id,
        project_id,
        cube_name: if b.cube_name.is_empty() {
            cube_id.clone()
        } else {
            parse_name("batch.cube_name", &b.cube_name)?
        },
        cube_id,
    })
}

fn build_kind(value: i32) -> Result<BuildKind> {
    match pb::BuildKind::try_from(value) {
        Ok(pb::BuildKind::Full) => Ok(BuildKind::Full),
        Ok(pb::BuildKind::Incremental) => Ok(BuildKind::Incremental),
        Ok(pb::BuildKind::Unspecified) => Err(FieldError::new(
            "build_kind",
            "is required: BUILD_KIND_FULL or BUILD_KIND_INCREMENTAL",
        )),
        Err(_) => Err(FieldError::new(
            "build_kind",
            format!("unknown value {value}"),
        )),
    }
}

fn batch_event(
    meta: Option<pb::EventMeta>,
    now: DateTime<Utc>,
    parts: (Option<pb::BatchRef>, i32, u32),
    outcome: BatchOutcome,
) -> Result<Event> {
    let (batch, kind, aggregate_count) = parts;
    let payload = Payload::Batch(BatchEvent {
        batch: batch_ref(batch)?,
        build_kind: build_kind(kind)?,
        aggregate_count,
        outcome,
    });
    event(meta, now, payload)
}

pub fn batch_started(r: pb::BatchStartedRequest, now: DateTime<Utc>) -> Result<Event> {
    let parts = (r.batch, r.build_kind, r.aggregate_count);
    batch_event(r.meta, now, parts, BatchOutcome::Started)
}

pub fn batch_succeeded(r: pb::BatchSucceededRequest, now: DateTime<Utc>) -> Result<Event> {
    if r.aggregate_count > 0 && r.aggregates_built > r.aggregate_count {
        return Err(FieldError::new(
            "aggregates_built",
            format!(
                "{} exceeds aggregate_count {}",
                r.aggregates_built, r.aggregate_count
            ),
        ));
    }
    let outcome = BatchOutcome::Succeeded {
        aggregates_built: r.aggregates_built,
        rows_written: r.rows_written,
    };
    batch_event(
        r.meta,
        now,
        (r.batch, r.build_kind, r.aggregate_count),
        outcome,
    )
}

pub fn batch_failed(r: pb::BatchFailedRequest, now: DateTime<Utc>) -> Result<Event> {
    if r.error_message.trim().is_empty() {
        return Err(FieldError::new(
            "error_message",
            "must say why the batch failed",
        ));
    }
    check_list_len("failed_aggregates", r.failed_aggregates.len())?;
    let failed_aggregates = r
        .failed_aggregates
        .into_iter()
        .enumerate()
        .map(|(i, a)| failed_aggregate(a).map_err(|e| e.within(&format!("failed_aggregates[{i}]"))))
        .collect::<Result<_>>()?;
    let outcome = BatchOutcome::Failed {
        error_message: parse_text("error_message", &r.error_message, MAX_TEXT_LEN)?,
        failed_aggregates,
    };
    batch_event(
        r.meta,
        now,
        (r.batch, r.build_kind, r.aggregate_count),
        outcome,
    )
}

fn failed_aggregate(a: pb::FailedAggregate) -> Result<FailedAggregate> {
    Ok(FailedAggregate {
        aggregate_id: parse_id("aggregate_id", &a.aggregate_id)?,
        aggregate_name: parse_text("aggregate_name", &a.aggregate_name, MAX_NAME_LEN)?,
        error: parse_text("error", &a.error, MAX_TEXT_LEN)?,
    })
}

pub fn environment(
    r: pb::EnvironmentRequest,
    change: EnvironmentChange,
    now: DateTime<Utc>,
) -> Result<Event> {
    let name = match (change, r.name.is_empty()) {
        (EnvironmentChange::Created, _) => Some(parse_name("name", &r.name)?),
        (_, true) => None,
        (_, false) => Some(parse_name("name", &r.name)?),
    };
    let payload = Payload::Environment(EnvironmentEvent {
        change,
        environment_id: parse_id("environment_id", &r.environment_id)?,
        name,
        attributes: attributes(r.attributes)?,
    });
    event(r.meta, now, payload)
}

fn attributes(map: std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    check_list_len("attributes", map.len())?;
    map.into_iter()
        .map(|(k, v)| {
            let key = parse_id("attributes", &k)?;
            let value = parse_text(&format!("attributes.{key}"), &v, MAX_TEXT_LEN)?;
            Ok((key, value))
        })
        .collect()
}

pub fn environment_deleted(r: pb::EnvironmentDeletedRequest, now: DateTime<Utc>) -> Result<Event> {
    let payload = Payload::Environment(EnvironmentEvent {
        change: EnvironmentChange::Deleted,
        environment_id: parse_id("environment_id", &r.environment_id)?,
        name: None,
        attributes: BTreeMap::new(),
    });
    event(r.meta, now, payload)
}

pub fn schema(r: pb::SchemaRequest, published: bool, now: DateTime<Utc>) -> Result<Event> {
    let payload = Payload::Schema(SchemaEvent {
        published,
        environment_id: parse_id("environment_id", &r.environment_id)?,
        project_id: parse_optional_id("project_id", &r.project_id)?,
        catalogs: names("catalogs", r.catalogs)?,
        cubes: names("cubes", r.cubes)?,
        version: match r.version.as_str() {
            "" => None,
            v => Some(parse_name("version", v)?),
        },
    });
    event(r.meta, now, payload)
}

fn names(field: &str, list: Vec<String>) -> Result<Vec<String>> {
    check_list_len(field, list.len())?;
    list.iter()
        .enumerate()
        .map(|(i, n)| parse_name(&format!("{field}[{i}]"), n))
        .collect()
}

pub fn project_event(r: pb::ProjectEventRequest, now: DateTime<Utc>) -> Result<Event> {
    use crate::core::event::{EventType, ProjectEvent};
    let event_type = match pb::ProjectEventKind::try_from(r.kind) {
        Ok(pb::ProjectEventKind::SnapshotCreated) => EventType::ProjectSnapshotCreated,
        Ok(pb::ProjectEventKind::SnapshotRestored) => EventType::ProjectSnapshotRestored,
        Ok(pb::ProjectEventKind::Published) => EventType::ProjectPublished,
        Ok(pb::ProjectEventKind::Promoted) => EventType::ProjectPromoted,
        Ok(pb::ProjectEventKind::Imported) => EventType::ProjectImported,
        Ok(pb::ProjectEventKind::Deleted) => EventType::ProjectDeleted,
        Ok(pb::ProjectEventKind::DeletedUnpublished) => EventType::ProjectDeletedUnpublished,
        Ok(pb::ProjectEventKind::Unspecified) => {
            return Err(FieldError::new("kind", "is required"))
        }
        Err(_) => return Err(FieldError::new("kind", format!("unknown value {}", r.kind))),
    };
    let optional_name = |field: &str, v: &str| -> Result<Option<String>> {
        if v.is_empty() {
            Ok(None)
        } else {
            parse_name(field, v).map(Some)
        }
    };
    let target_environment = parse_optional_id("target_environment", &r.target_environment)?;
    if event_type == EventType::ProjectPromoted && target_environment.is_none() {
        return Err(FieldError::new(
            "target_environment",
            "is required for a promotion",
        ));
    }
    let payload = Payload::Project(ProjectEvent {
        event_type,
        organization_id: parse_id("organization_id", &r.organization_id)?,
        organization_name: optional_name("organization_name", &r.organization_name)?,
        project_id: parse_id("project_id", &r.project_id)?,
        project_name: optional_name("project_name", &r.project_name)?,
        user: optional_name("user", &r.user)?,
        snapshot_id: parse_optional_id("snapshot_id", &r.snapshot_id)?,
        snapshot_tag: optional_name("snapshot_tag", &r.snapshot_tag)?,
        target_environment,
        // Digest, compression and model are the ingestor's, off this thread.
        xml_sha256: String::new(),
        xml_size: r.project_xml.len() as u64,
        model_changes: None,
        xml_malformed: false,
        xml: r.project_xml,
        document: None,
    });
    event(r.meta, now, payload)
}

pub fn batch_state_to_proto(state: BatchState) -> pb::BatchState {
    match state {
        BatchState::Running => pb::BatchState::Running,
        BatchState::Succeeded => pb::BatchState::Succeeded,
        BatchState::Failed => pb::BatchState::Failed,
        BatchState::Stalled => pb::BatchState::Stalled,
    }
}

/// `None` for UNSPECIFIED (no filter); an error for unknown values.
pub fn batch_state_from_proto(field: &str, value: i32) -> Result<Option<BatchState>> {
    match pb::BatchState::try_from(value) {
        Ok(pb::BatchState::Unspecified) => Ok(None),
        Ok(pb::BatchState::Running) => Ok(Some(BatchState::Running)),
        Ok(pb::BatchState::Succeeded) => Ok(Some(BatchState::Succeeded)),
        Ok(pb::BatchState::Failed) => Ok(Some(BatchState::Failed)),
        Ok(pb::BatchState::Stalled) => Ok(Some(BatchState::Stalled)),
        Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
    }
}

pub fn batch_to_proto(r: &BatchRecord) -> pb::Batch {
    pb::Batch {
        batch_id: r.batch_id.clone(),
        environment_id: r.environment_id.clone(),
        project_id: r.project_id.clone().unwrap_or_default(),
        cube_id: r.cube_id.clone(),
        cube_name: r.cube_name.clone(),
        state: batch_state_to_proto(r.state) as i32,
        build_kind: match r.build_kind {
            BuildKind::Full => pb::BuildKind::Full,
            BuildKind::Incremental => pb::BuildKind::Incremental,
        } as i32,
        aggregate_count: r.aggregate_count,
        aggregates_built: r.aggregates_built,
        rows_written: r.rows_written,
        error_message: r.error_message.clone().unwrap_or_default(),
        failed_aggregates: r
            .failed_aggregates
            .iter()
            .map(|a| pb::FailedAggregate {
                aggregate_id: a.aggregate_id.clone(),
                aggregate_name: a.aggregate_name.clone(),
                error: a.error.clone(),
            })
            .collect(),
        started_at: r.started_at.map(timestamp_to_proto),
        finished_at: r.finished_at.map(timestamp_to_proto),
        start_seen: r.start_seen,
        updated_at: Some(timestamp_to_proto(r.updated_at)),
    }
}
