//! Events: what happened, when, from whom, and in which scope.
//!
//! An [`Event`] is built only from validated parts (see `api::convert`), so
//! everything downstream may trust its fields.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The event names webhooks and filters use (DESIGN.md, "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "aggregate.batch.started")]
    BatchStarted,
    #[serde(rename = "aggregate.batch.succeeded")]
    BatchSucceeded,
    #[serde(rename = "aggregate.batch.failed")]
    BatchFailed,
    #[serde(rename = "aggregate.batch.stalled")]
    BatchStalled,
    #[serde(rename = "aggregate.batch.recovered")]
    BatchRecovered,
    #[serde(rename = "aggregate.refresh.overdue")]
    RefreshOverdue,
    #[serde(rename = "aggregate.gate.opened")]
    GateOpened,
    #[serde(rename = "aggregate.gate.blocked")]
    GateBlocked,
    #[serde(rename = "aggregate.gate.missed")]
    GateMissed,
    #[serde(rename = "environment.created")]
    EnvironmentCreated,
    #[serde(rename = "environment.updated")]
    EnvironmentUpdated,
    #[serde(rename = "environment.deleted")]
    EnvironmentDeleted,
    #[serde(rename = "schema.published")]
    SchemaPublished,
    #[serde(rename = "schema.unpublished")]
    SchemaUnpublished,
    #[serde(rename = "herald.delivery.dead")]
    DeliveryDead,
    #[serde(rename = "herald.subscription.disabled")]
    SubscriptionDisabled,
    #[serde(rename = "herald.subscription.test")]
    SubscriptionTest,
    #[serde(rename = "project.snapshot_created")]
    ProjectSnapshotCreated,
    #[serde(rename = "project.snapshot_restored")]
    ProjectSnapshotRestored,
    #[serde(rename = "project.published")]
    ProjectPublished,
    #[serde(rename = "project.promoted")]
    ProjectPromoted,
    #[serde(rename = "project.imported")]
    ProjectImported,
    #[serde(rename = "project.deleted")]
    ProjectDeleted,
    #[serde(rename = "project.deleted_unpublished")]
    ProjectDeletedUnpublished,
}

impl EventType {
    pub const ALL: [EventType; 24] = [
        EventType::BatchStarted,
        EventType::BatchSucceeded,
        EventType::BatchFailed,
        EventType::BatchStalled,
        EventType::BatchRecovered,
        EventType::RefreshOverdue,
        EventType::GateOpened,
        EventType::GateBlocked,
        EventType::GateMissed,
        EventType::EnvironmentCreated,
        EventType::EnvironmentUpdated,
        EventType::EnvironmentDeleted,
        EventType::SchemaPublished,
        EventType::SchemaUnpublished,
        EventType::DeliveryDead,
        EventType::SubscriptionDisabled,
        EventType::SubscriptionTest,
        EventType::ProjectSnapshotCreated,
        EventType::ProjectSnapshotRestored,
        EventType::ProjectPublished,
        EventType::ProjectPromoted,
        EventType::ProjectImported,
        EventType::ProjectDeleted,
        EventType::ProjectDeletedUnpublished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BatchStarted => "aggregate.batch.started",
            EventType::BatchSucceeded => "aggregate.batch.succeeded",
            EventType::BatchFailed => "aggregate.batch.failed",
            EventType::BatchStalled => "aggregate.batch.stalled",
            EventType::BatchRecovered => "aggregate.batch.recovered",
            EventType::RefreshOverdue => "aggregate.refresh.overdue",
            EventType::GateOpened => "aggregate.gate.opened",
            EventType::GateBlocked => "aggregate.gate.blocked",
            EventType::GateMissed => "aggregate.gate.missed",
            EventType::EnvironmentCreated => "environment.created",
            EventType::EnvironmentUpdated => "environment.updated",
            EventType::EnvironmentDeleted => "environment.deleted",
            EventType::SchemaPublished => "schema.published",
            EventType::SchemaUnpublished => "schema.unpublished",
            EventType::DeliveryDead => "herald.delivery.dead",
            EventType::SubscriptionDisabled => "herald.subscription.disabled",
            EventType::SubscriptionTest => "herald.subscription.test",
            EventType::ProjectSnapshotCreated => "project.snapshot_created",
            EventType::ProjectSnapshotRestored => "project.snapshot_restored",
            EventType::ProjectPublished => "project.published",
            EventType::ProjectPromoted => "project.promoted",
            EventType::ProjectImported => "project.imported",
            EventType::ProjectDeleted => "project.deleted",
            EventType::ProjectDeletedUnpublished => "project.deleted_unpublished",
        }
    }

    /// Herald's reports about its own deliveries. Troubles delivering these
    /// are logged but never reported again as events, so a dead receiver of
    /// trouble reports cannot feed on itself.
    pub fn is_trouble(self) -> bool {
        matches!(
            self,
            EventType::DeliveryDead | EventType::SubscriptionDisabled
        )
    }

    /// Events from the design tool, which carry the project's XML.
    pub fn is_project(self) -> bool {
        self.as_str().starts_with("project.")
    }

    pub fn parse(name: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event as received from a caller (or raised by Herald itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The caller's idempotency key.
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    /// Engine or design-tool instance that sent it.
    pub source: String,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Batch(BatchEvent),
    Environment(EnvironmentEvent),
    Schema(SchemaEvent),
    Project(ProjectEvent),
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match &self.payload {
            Payload::Batch(b) => match b.outcome {
                BatchOutcome::Started => EventType::BatchStarted,
                BatchOutcome::Succeeded { .. } => EventType::BatchSucceeded,
                BatchOutcome::Failed { .. } => EventType::BatchFailed,
            },
            Payload::Environment(e) => match e.change {
                EnvironmentChange::Created => EventType::EnvironmentCreated,
                EnvironmentChange::Updated => EventType::EnvironmentUpdated,
                EnvironmentChange::Deleted => EventType::EnvironmentDeleted,
            },
            Payload::Schema(s) if s.published => EventType::SchemaPublished,
            Payload::Schema(_) => EventType::SchemaUnpublished,
            Payload::Project(p) => p.event_type,
        }
    }

    /// Where the event applies; subscriptions filter on it.
    pub fn scope(&self) -> Scope {
        match &self.payload {
            Payload::Batch(b) => b.batch.scope(),
            Payload::Environment(e) => Scope {
                environment_id: Some(e.environment_id.clone()),
                ..Scope::default()
            },
            Payload::Schema(s) => Scope {
                environment_id: Some(s.environment_id.clone()),
                project_id: s.project_id.clone(),
                ..Scope::default()
            },
            Payload::Project(p) => Scope {
                environment_id: p.target_environment.clone(),
                project_id: Some(p.project_id.clone()),
                ..Scope::default()
            },
        }
    }
}

/// Environment, project, cube and batch, as far as they apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub environment_id: Option<String>,
    pub project_id: Option<String>,
    pub cube_id: Option<String>,
    pub cube_name: Option<String>,
    pub batch_id: Option<String>,
}

/// Identifies a batch and the cube it builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    pub batch_id: String,
    pub environment_id: String,
    pub project_id: Option<String>,
    pub cube_id: String,
    pub cube_name: String,
}

impl BatchRef {
    pub fn scope(&self) -> Scope {
        Scope {
            environment_id: Some(self.environment_id.clone()),
            project_id: self.project_id.clone(),
            cube_id: Some(self.cube_id.clone()),
            cube_name: Some(self.cube_name.clone()),
            batch_id: Some(self.batch_id.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    Full,
    Incremental,
}

impl BuildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildKind::Full => "full",
            BuildKind::Incremental => "incremental",
        }
    }

    pub fn parse(s: &str) -> Option<BuildKind> {
        match s {
            "full" => Some(BuildKind::Full),
            "incremental" => Some(BuildKind::Incremental),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEvent {
    pub batch: BatchRef,
    pub build_kind: BuildKind,
    pub aggregate_count: u32,
    pub outcome: BatchOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BatchOutcome {
    Started,
    Succeeded {
        aggregates_built: u32,
        rows_written: u64,
    },
    Failed {
        error_message: String,
        failed_aggregates: Vec<FailedAggregate>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAggregate {
    pub aggregate_id: String,
    pub aggregate_name: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentChange {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentEvent {
    pub change: EnvironmentChange,
    pub environment_id: String,
    /// Absent on deletion.
    pub name: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaEvent {
    /// True for `schema.published`, false for `schema.unpublished`.
    pub published: bool,
    pub environment_id: String,
    pub project_id: Option<String>,
    pub catalogs: Vec<String>,
    pub cubes: Vec<String>,
    pub version: Option<String>,
}

/// A design-tool event about a project. The XML document is kept out of the
/// serialized payload (it is stored once, compressed, beside the event);
/// its digest and size are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectEvent {
    pub event_type: EventType,
    pub organization_id: String,
    pub organization_name: Option<String>,
    pub project_id: String,
    pub project_name: Option<String>,
    pub user: Option<String>,
    pub snapshot_id: Option<String>,
    pub snapshot_tag: Option<String>,
    pub target_environment: Option<String>,
    /// SHA-256 of the XML, hex; empty when none was sent.
    pub xml_sha256: String,
    pub xml_size: u64,
    /// What changed in the model since the project's previous document
    /// (set when the event is applied).
    #[serde(default)]
    pub model_changes: Option<String>,
    /// The document is not well-formed XML (stored and archived as is).
    #[serde(default)]
    pub xml_malformed: bool,
    /// The document as received; emptied once it is prepared.
    #[serde(skip)]
    pub xml: bytes::Bytes,
    /// The document compressed and its model read, before the job is
    /// queued (see [`super::document::PreparedDocument`]).
    #[serde(skip)]
    pub document: Option<std::sync::Arc<super::document::PreparedDocument>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_name_round_trips() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(EventType::parse("aggregate.batch.exploded"), None);
    }
}
