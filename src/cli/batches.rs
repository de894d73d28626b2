//! `herald batches list|get`: read batch state, as a table or JSON.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use super::emit::state_name;
use super::{connect, parse_time, status_error, ServerArg};
use crate::api::pb::{self, query_service_client::QueryServiceClient};
use crate::api::timestamp_to_proto;

#[derive(Debug, clap::Subcommand)]
pub enum BatchesCommand {
    /// List batches, most recently changed first.
    List(ListArgs),
    /// Show one batch.
    Get(GetArgs),
    /// Print the current state of matching batches, then every change.
    Watch(WatchArgs),
}

/// The scope filters `list` and `watch` share.
#[derive(Debug, clap::Args)]
pub struct Scope {
    #[arg(long, alias = "environment")]
    environment_id: Option<String>,
    #[arg(long, alias = "project")]
    project_id: Option<String>,
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
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    scope: Scope,
    #[arg(long, alias = "batch")]
    batch_id: Option<String>,
    /// Resume after this cursor (printed with every change) instead of
    /// starting with the current state.
    #[arg(long)]
    cursor: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    batch_id: String,
    #[command(flatten)]
    server: ServerArg,
    #[arg(long)]
    json: bool,
}

pub async fn run(command: BatchesCommand) -> anyhow::Result<()> {
    match command {
        BatchesCommand::List(args) => list(args).await,
        BatchesCommand::Get(args) => get(args).await,
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
    if args.json {
        let list: Vec<Value> = response.batches.iter().map(batch_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_table(&response.batches);
    }
    Ok(())
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&batch_json(&batch))?);
    } else {
        print_details(&batch);
    }
    Ok(())
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
    while let Some(change) = stream.message().await.map_err(status_error)? {
        let batch = change.batch.as_ref().map(batch_json).unwrap_or(Value::Null);
        if args.json {
            let line = json!({"cursor": change.cursor, "event_type": change.event_type, "snapshot": change.snapshot, "batch": batch});
            println!("{line}");
        } else {
            let what = if change.snapshot {
                "current"
            } else {
                change.event_type.as_str()
            };
            println!(
                "{:>8} {:<28} {:<24} {:<20} {}",
                change.cursor,
                what,
                batch["batch_id"].as_str().unwrap_or(""),
                batch["cube_name"].as_str().unwrap_or(""),
                batch["state"].as_str().unwrap_or("")
            );
        }
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    Ok(())
}

fn print_table(batches: &[pb::Batch]) {
    println!(
        "{:<24} {:<12} {:<20} {:<10} {:<20} {:>10}",
        "BATCH", "ENVIRONMENT", "CUBE", "STATE", "FINISHED", "DURATION"
    );
    for b in batches {
        println!(
            "{:<24} {:<12} {:<20} {:<10} {:<20} {:>10}",
            b.batch_id,
            b.environment_id,
            b.cube_name,
            state_name(b.state),
            time(&b.finished_at)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            duration(b)
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}

fn print_details(b: &pb::Batch) {
    let json = batch_json(b);
    if let Value::Object(fields) = json {
        for (key, value) in fields {
            let text = match value {
                Value::String(s) => s,
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            println!("{key:<18} {text}");
        }
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
}

fn duration(b: &pb::Batch) -> Option<f64> {
    let (start, end) = (time(&b.started_at)?, time(&b.finished_at)?);
    Some((end - start).num_milliseconds() as f64 / 1000.0)
}

pub(crate) fn batch_json(b: &pb::Batch) -> Value {
    let rfc3339 = |t: &Option<prost_types::Timestamp>| time(t).map(|t| t.to_rfc3339());
    json!({
        "batch_id": b.batch_id,
        "environment_id": b.environment_id,
        "project_id": b.project_id,
        "cube_id": b.cube_id,
        "cube_name": b.cube_name,
        "state": state_name(b.state),
        "build_kind": pb::BuildKind::try_from(b.build_kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "aggregate_count": b.aggregate_count,
        "aggregates_built": b.aggregates_built,
        "rows_written": b.rows_written,
        "error_message": (!b.error_message.is_empty()).then_some(&b.error_message),
        "failed_aggregates": b.failed_aggregates.iter().map(|a| json!({"aggregate_id": a.aggregate_id, "error": a.error})).collect::<Vec<_>>(),
        "started_at": rfc3339(&b.started_at),
        "finished_at": rfc3339(&b.finished_at),
        "duration_s": duration(b),
        "start_seen": b.start_seen,
    })
}
