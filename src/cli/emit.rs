//! `herald emit <event>`: send one ingest event from the shell.

use std::collections::HashMap;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};

use super::batches::state_text;
use super::output::OutputArg;
use super::{connect, status_error, ServerArg};
use crate::api::pb::{self, ingest_service_client::IngestServiceClient};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EventKind {
    BatchStarted,
    BatchSucceeded,
    BatchFailed,
    EnvironmentCreated,
    EnvironmentUpdated,
    EnvironmentDeleted,
    SchemaPublished,
    SchemaUnpublished,
    /// project.snapshot_created (from the design tool).
    SnapshotCreated,
    /// project.snapshot_restored.
    SnapshotRestored,
    /// project.published.
    ProjectPublished,
    /// project.promoted (needs --target-environment).
    ProjectPromoted,
    /// project.imported.
    ProjectImported,
    /// project.deleted.
    ProjectDeleted,
    /// project.deleted_unpublished.
    ProjectDeletedUnpublished,
}

impl EventKind {
    /// The project event kind, for the design tool's events.
    fn project(self) -> Option<pb::ProjectEventKind> {
        use pb::ProjectEventKind as P;
        Some(match self {
            EventKind::SnapshotCreated => P::SnapshotCreated,
            EventKind::SnapshotRestored => P::SnapshotRestored,
            EventKind::ProjectPublished => P::Published,
            EventKind::ProjectPromoted => P::Promoted,
            EventKind::ProjectImported => P::Imported,
            EventKind::ProjectDeleted => P::Deleted,
            EventKind::ProjectDeletedUnpublished => P::DeletedUnpublished,
            _ => return None,
        })
    }
}

/// The flags of the design tool's project events.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// The project's organization (project events).
    #[arg(long)]
    organization_id: Option<String>,
    /// The organization's display name (project events).
    #[arg(long)]
    organization_name: Option<String>,
    /// The project's display name (project events).
    #[arg(long)]
    project_name: Option<String>,
    /// Who did it: a name, an email, or `Name <email>` (project events).
    #[arg(long)]
    user: Option<String>,
    /// The snapshot taken or restored (project events).
    #[arg(long)]
    snapshot_id: Option<String>,
    /// The snapshot's tag (project events).
    #[arg(long)]
    snapshot_tag: Option<String>,
    /// The environment promoted to (project-promoted).
    #[arg(long)]
    target_environment: Option<String>,
    /// A file holding the project's XML document (project events).
    #[arg(long)]
    project_xml: Option<std::path::PathBuf>,
}

/// Flags are named after the request fields; the server checks which are
/// required and names any that are missing.
#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// Which event to send.
    #[arg(value_enum)]
    kind: EventKind,
    #[command(flatten)]
    server: ServerArg,
    /// Idempotency key; a new one is generated when omitted.
    #[arg(long)]
    event_id: Option<String>,
    /// When it happened (RFC 3339); now when omitted.
    #[arg(long)]
    occurred_at: Option<DateTime<Utc>>,
    /// Which engine instance sends it (meta.source).
    #[arg(long, default_value = "herald-cli")]
    source: String,
    /// The batch's id (batch events).
    #[arg(long, alias = "batch")]
    batch_id: Option<String>,
    /// The environment's id.
    #[arg(long, alias = "environment")]
    environment_id: Option<String>,
    /// The project's id.
    #[arg(long, alias = "project")]
    project_id: Option<String>,
    /// The cube's id (batch events).
    #[arg(long)]
    cube_id: Option<String>,
    /// The cube's display name (batch events; the cube id when omitted).
    #[arg(long)]
    cube_name: Option<String>,
    /// full or incremental.
    #[arg(long, default_value = "full")]
    build_kind: String,
    /// How many aggregates the batch builds (0: unknown).
    #[arg(long, default_value_t = 0)]
    aggregate_count: u32,
    /// How many it built (batch-succeeded).
    #[arg(long, default_value_t = 0)]
    aggregates_built: u32,
    /// Rows written (batch-succeeded).
    #[arg(long, default_value_t = 0)]
    rows_written: u64,
    /// Why the batch failed (required by batch-failed).
    #[arg(long)]
    error_message: Option<String>,
    /// A failed aggregate as `ID=ERROR`; repeat for several.
    #[arg(long = "failed-aggregate")]
    failed_aggregates: Vec<String>,
    /// Environment name.
    #[arg(long)]
    name: Option<String>,
    /// Environment attribute as `KEY=VALUE`; repeat for several.
    #[arg(long = "attribute")]
    attributes: Vec<String>,
    /// Schema catalog name; repeat for several.
    #[arg(long = "catalog")]
    catalogs: Vec<String>,
    /// Schema cube name; repeat for several.
    #[arg(long = "cube")]
    cubes: Vec<String>,
    /// Schema version.
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(args: EmitArgs) -> anyhow::Result<()> {
    let mut client = IngestServiceClient::new(connect(&args.server).await?);
    let reply = send(&mut client, &args)
        .await
        .map_err(|status| refused(status, &args))?;
    args.output
        .print(&reply_json(&reply), |_| println!("{}", describe(&reply)))
}

async fn send(
    client: &mut IngestServiceClient<super::Authed>,
    a: &EmitArgs,
) -> Result<pb::IngestReply, tonic::Status> {
    let bad = |e: anyhow::Error| tonic::Status::invalid_argument(format!("{e:#}"));
    let meta = Some(meta(a));
    let reply = match a.kind {
        EventKind::BatchStarted => {
            client
                .batch_started(pb::BatchStartedRequest {
                    meta,
                    batch: Some(batch_ref(a)),
                    build_kind: build_kind(&a.build_kind).map_err(bad)?,
                    aggregate_count: a.aggregate_count,
                })
                .await?
        }
        EventKind::BatchSucceeded => {
            client
                .batch_succeeded(pb::BatchSucceededRequest {
                    meta,
                    batch: Some(batch_ref(a)),
                    build_kind: build_kind(&a.build_kind).map_err(bad)?,
                    aggregate_count: a.aggregate_count,
                    aggregates_built: a.aggregates_built,
                    rows_written: a.rows_written,
                })
                .await?
        }
        EventKind::BatchFailed => {
            client
                .batch_failed(pb::BatchFailedRequest {
                    meta,
                    batch: Some(batch_ref(a)),
                    build_kind: build_kind(&a.build_kind).map_err(bad)?,
                    aggregate_count: a.aggregate_count,
                    error_message: a.error_message.clone().unwrap_or_default(),
                    failed_aggregates: failed_aggregates(&a.failed_aggregates).map_err(bad)?,
                })
                .await?
        }
        EventKind::EnvironmentCreated => {
            client
                .environment_created(environment(a).map_err(bad)?)
                .await?
        }
        EventKind::EnvironmentUpdated => {
            client
                .environment_updated(environment(a).map_err(bad)?)
                .await?
        }
        EventKind::EnvironmentDeleted => {
            client
                .environment_deleted(pb::EnvironmentDeletedRequest {
                    meta,
                    environment_id: a.environment_id.clone().unwrap_or_default(),
                })
                .await?
        }
        EventKind::SchemaPublished => client.schema_published(schema(a)).await?,
        EventKind::SchemaUnpublished => client.schema_unpublished(schema(a)).await?,
        other => {
            // Every other kind is one of the design tool's project events.
            let kind = other.project().ok_or_else(|| {
                tonic::Status::invalid_argument(format!("{other:?} cannot be sent"))
            })?;
            client
                .project_event(project_event(a, kind).map_err(bad)?)
                .await?
        }
    };
    Ok(reply.into_inner())
}

/// The server's refusal as one line. A reused `--event-id` without
/// `--occurred-at` is most likely a retry whose time defaulted to a new
/// "now": say so.
fn refused(status: tonic::Status, a: &EmitArgs) -> anyhow::Error {
    let retried = status.code() == tonic::Code::AlreadyExists && a.occurred_at.is_none();
    let error = status_error(status);
    if retried {
        anyhow!("{error} (a retry must send the same event, time included: pass the first call's --occurred-at)")
    } else {
        error
    }
}

fn meta(a: &EmitArgs) -> pb::EventMeta {
    let occurred_at = a.occurred_at.unwrap_or_else(Utc::now);
    pb::EventMeta {
        event_id: a
            .event_id
            .clone()
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7())),
        occurred_at: Some(crate::api::timestamp_to_proto(occurred_at)),
        source: a.source.clone(),
    }
}

fn batch_ref(a: &EmitArgs) -> pb::BatchRef {
    pb::BatchRef {
        batch_id: a.batch_id.clone().unwrap_or_default(),
        environment_id: a.environment_id.clone().unwrap_or_default(),
        project_id: a.project_id.clone().unwrap_or_default(),
        cube_id: a.cube_id.clone().unwrap_or_default(),
        cube_name: a.cube_name.clone().unwrap_or_default(),
    }
}

fn build_kind(text: &str) -> anyhow::Result<i32> {
    match text {
        "full" => Ok(pb::BuildKind::Full as i32),
        "incremental" => Ok(pb::BuildKind::Incremental as i32),
        other => Err(anyhow!("--build-kind `{other}`: use full or incremental")),
    }
}

fn failed_aggregates(list: &[String]) -> anyhow::Result<Vec<pb::FailedAggregate>> {
    list.iter()
        .map(|item| {
            let (id, error) = item
                .split_once('=')
                .with_context(|| format!("--failed-aggregate `{item}`: expected ID=ERROR"))?;
            Ok(pb::FailedAggregate {
                aggregate_id: id.to_owned(),
                aggregate_name: String::new(),
                error: error.to_owned(),
            })
        })
        .collect()
}

fn environment(a: &EmitArgs) -> anyhow::Result<pb::EnvironmentRequest> {
    let attributes = a
        .attributes
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--attribute `{item}`: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    Ok(pb::EnvironmentRequest {
        meta: Some(meta(a)),
        environment_id: a.environment_id.clone().unwrap_or_default(),
        name: a.name.clone().unwrap_or_default(),
        attributes,
    })
}

fn schema(a: &EmitArgs) -> pb::SchemaRequest {
    pb::SchemaRequest {
        meta: Some(meta(a)),
        environment_id: a.environment_id.clone().unwrap_or_default(),
        project_id: a.project_id.clone().unwrap_or_default(),
        catalogs: a.catalogs.clone(),
        cubes: a.cubes.clone(),
        version: a.version.clone().unwrap_or_default(),
    }
}

fn project_event(
    a: &EmitArgs,
    kind: pb::ProjectEventKind,
) -> anyhow::Result<pb::ProjectEventRequest> {
    let p = &a.project;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let project_xml = match &p.project_xml {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("--project-xml {}", path.display()))?
            .into(),
        None => Default::default(),
    };
    Ok(pb::ProjectEventRequest {
        meta: Some(meta(a)),
        kind: kind as i32,
        organization_id: text(&p.organization_id),
        organization_name: text(&p.organization_name),
        project_id: text(&a.project_id),
        project_name: text(&p.project_name),
        user: text(&p.user),
        snapshot_id: text(&p.snapshot_id),
        snapshot_tag: text(&p.snapshot_tag),
        target_environment: text(&p.target_environment),
        project_xml,
    })
}

fn describe(r: &pb::IngestReply) -> String {
    let novelty = if r.new_event {
        "new event"
    } else {
        "repeat, first answer"
    };
    let batch = r
        .batch
        .as_ref()
        .map(|b| format!(", batch {} {}", b.batch_id, state_text(b.state)))
        .unwrap_or_default();
    format!(
        "ok: {novelty}, sequence {}{batch}, {} deliveries enqueued",
        r.sequence, r.deliveries
    )
}

fn reply_json(r: &pb::IngestReply) -> serde_json::Value {
    serde_json::json!({
        "new_event": r.new_event,
        "sequence": r.sequence,
        "deliveries": r.deliveries,
        "batch": r.batch.as_ref().map(super::batches::batch_json),
    })
}
