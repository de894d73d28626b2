//! `herald batches list|get|latest|watch`: read batch state.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::output::{
    cell, duration_text, enum_text, items, print_fields, print_table, time_of, time_text, OutputArg,
};
use super::{connect, parse_time, status_error, ServerArg};
use crate::api::pb::{self, query_service_client::QueryServiceClient};
use crate::api::timestamp_to_proto;

#[derive(Debug, clap::Subcommand)]
pub enum BatchesCommand {
    /// List batches, newest first (by when each began).
    List(ListArgs),
    /// Show one batch.
    Get(GetArgs),
    /// Show the newest batch of a cube.
    Latest(LatestArgs),
    /// Print the current state of matching batches, then every change
    /// (with -o json one object per line, with -o yaml one document each).
    Watch(WatchArgs),
}

/// The scope filters `list` and `watch` share.
#[derive(Debug, clap::Args)]
pub struct Scope {
    /// Only this environment's batches.
    #[arg(long, alias = "environment")]
    environment_id: Option<String>,
    /// Only this project's batches.
    #[arg(long, alias = "project")]
    project_id: Option<String>,
    /// Only this cube's batches.
    #[arg(long, alias = "cube")]
    cube_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    scope: Scope,
    /// running, succeeded, failed or stalled.
    #[arg(long)]
    state: Option<String>,
    /// Batches begun at or after this time (RFC 3339, or a duration ago like 6h).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Batches begun before this time.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// At most this many batches (up to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    scope: Scope,
    /// Only this batch.
    #[arg(long, alias = "batch")]
    batch_id: Option<String>,
    /// Resume after this cursor (printed with every change) instead of
    /// starting with the current state.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The batch's id.
    batch_id: String,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct LatestArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The cube.
    #[arg(long, alias = "cube-id")]
    cube: String,
    /// Its environment (any when omitted).
    #[arg(long, alias = "environment-id")]
    environment: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(command: BatchesCommand) -> anyhow::Result<()> {
    match command {
        BatchesCommand::List(args) => list(args).await,
        BatchesCommand::Get(args) => get(args).await,
        BatchesCommand::Latest(args) => latest(args).await,
        BatchesCommand::Watch(args) => watch(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let state = match args.state.as_deref() {
        None => pb::BatchState::Unspecified,
        Some(s) => {
            pb::BatchState::from_str_name(&format!("BATCH_STATE_{}", s.to_ascii_uppercase()))
                .ok_or_else(|| {
                    anyhow::anyhow!("--state `{s}`: use running, succeeded, failed or stalled")
                })?
        }
    };
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let response = client
        .list_batches(pb::ListBatchesRequest {
            environment_id: args.scope.environment_id.unwrap_or_default(),
            project_id: args.scope.project_id.unwrap_or_default(),
            cube_id: args.scope.cube_id.unwrap_or_default(),
            state: state as i32,
            page_size: args.limit,
            page_token: String::new(),
            since: args.since.map(timestamp_to_proto),
            until: args.until.map(timestamp_to_proto),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let list = Value::Array(response.batches.iter().map(batch_json).collect());
    args.output.print(&list, print_batches)
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let batch = client
        .get_batch(pb::GetBatchRequest {
            batch_id: args.batch_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    args.output.print(&batch_json(&batch), print_fields)
}

async fn latest(args: LatestArgs) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let batch = client
        .get_latest_batch(pb::GetLatestBatchRequest {
            environment_id: args.environment.unwrap_or_default(),
            cube_id: args.cube,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    args.output.print(&batch_json(&batch), print_fields)
}

async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let mut stream = client
        .watch_batches(pb::WatchBatchesRequest {
            environment_id: args.scope.environment_id.unwrap_or_default(),
            project_id: args.scope.project_id.unwrap_or_default(),
            cube_id: args.scope.cube_id.unwrap_or_default(),
            batch_id: args.batch_id.unwrap_or_default(),
            cursor: args.cursor.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.output.format() == super::output::Format::Table {
        println!(
            "{:>8}  {:<28}  {:<24}  {:<20}  STATE",
            "CURSOR", "CHANGE", "BATCH", "CUBE"
        );
    }
    while let Some(change) = stream.message().await.map_err(status_error)? {
        let batch = change.batch.as_ref().map(batch_json).unwrap_or(Value::Null);
        let item = json!({"cursor": change.cursor, "event_type": change.event_type, "snapshot": change.snapshot, "batch": batch});
        args.output.print_item(&item, |item| {
            let what = if change.snapshot {
                "current"
            } else {
                change.event_type.as_str()
            };
            let batch = &item["batch"];
            println!(
                "{:>8}  {:<28}  {:<24}  {:<20}  {}",
                change.cursor,
                what,
                cell(&batch["batch_id"]),
                cell(&batch["cube_name"]),
                cell(&batch["state"])
            );
        });
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    Ok(())
}

fn print_batches(list: &Value) {
    let rows: Vec<Vec<String>> = items(list)
        .map(|b| {
            [
                "batch_id",
                "environment_id",
                "cube_name",
                "state",
                "started_at",
                "finished_at",
                "duration",
            ]
            .iter()
            .map(|key| cell(&b[*key]))
            .collect()
        })
        .collect();
    print_table(
        &[
            "BATCH",
            "ENVIRONMENT",
            "CUBE",
            "STATE",
            "STARTED",
            "FINISHED",
            "DURATION",
        ],
        &rows,
    );
}

fn duration(b: &pb::Batch) -> Option<std::time::Duration> {
    let (start, end) = (time_of(&b.started_at)?, time_of(&b.finished_at)?);
    (end - start).to_std().ok()
}

/// A batch's state as output shows it: `running`, `failed`, …
pub(crate) fn state_text(state: i32) -> String {
    enum_text(
        pb::BatchState::try_from(state)
            .ok()
            .map(|s| s.as_str_name()),
        "BATCH_STATE_",
    )
}

pub(crate) fn batch_json(b: &pb::Batch) -> Value {
    json!({
        "batch_id": b.batch_id,
        "environment_id": b.environment_id,
        "project_id": b.project_id,
        "cube_id": b.cube_id,
        "cube_name": b.cube_name,
        "state": state_text(b.state),
        "build_kind": enum_text(pb::BuildKind::try_from(b.build_kind).ok().map(|k| k.as_str_name()), "BUILD_KIND_"),
        "aggregate_count": b.aggregate_count,
        "aggregates_built": b.aggregates_built,
        "rows_written": b.rows_written,
        "error_message": (!b.error_message.is_empty()).then_some(&b.error_message),
        "failed_aggregates": b.failed_aggregates.iter().map(|a| json!({"aggregate_id": a.aggregate_id, "error": a.error})).collect::<Vec<_>>(),
        "started_at": time_text(&b.started_at),
        "finished_at": time_text(&b.finished_at),
        "duration": duration(b).map(duration_text),
        "duration_ms": duration(b).map(|d| d.as_millis() as u64),
        "start_seen": b.start_seen,
        "updated_at": time_text(&b.updated_at),
    })
}
