//! `herald silence …`: mute alerts for a maintenance window (admin token
//! to add and expire; a reader token lists).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::output::{cell, items, print_table, time_text, OutputArg};
use super::{connect, parse_time, status_error, ServerArg};
use crate::api::pb::{self, admin_service_client::AdminServiceClient};
use crate::api::timestamp_to_proto;

#[derive(Debug, clap::Subcommand)]
pub enum SilenceCommand {
    /// Silence the events that match every given matcher (exact or a glob
    /// like `sal*`), e.g. `herald silence add --cube sales --environment
    /// prod --for 2h --comment "reindex"`.
    Add(AddArgs),
    /// The silences not over yet (--all: every one).
    List(ListArgs),
    /// End a silence now.
    Expire(ExpireArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Environment id.
    #[arg(long)]
    environment: Option<String>,
    /// Project id.
    #[arg(long)]
    project: Option<String>,
    /// Cube id or name.
    #[arg(long)]
    cube: Option<String>,
    /// Event type, e.g. aggregate.batch.failed or aggregate.batch.*.
    #[arg(long)]
    event_type: Option<String>,
    /// How long, from its start: 30m, 2h, 1d.
    #[arg(long = "for", conflicts_with = "until")]
    duration: Option<String>,
    /// When it begins (RFC 3339; default now).
    #[arg(long, value_parser = parse_time)]
    starts: Option<DateTime<Utc>>,
    /// When it ends (RFC 3339), instead of --for.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Why (required).
    #[arg(long)]
    comment: String,
    /// Who made it (default: the token's name).
    #[arg(long)]
    created_by: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Also the silences whose window is over.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct ExpireArgs {
    /// The silence's id (`sil_…`).
    silence_id: String,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(command: SilenceCommand) -> anyhow::Result<()> {
    match command {
        SilenceCommand::Add(a) => add(a).await,
        SilenceCommand::List(a) => {
            let mut client = AdminServiceClient::new(connect(&a.server).await?);
            let silences = client
                .list_silences(pb::ListSilencesRequest {
                    include_expired: a.all,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .silences;
            let list = Value::Array(silences.iter().map(silence_json).collect());
            a.output.print(&list, print_silences)
        }
        SilenceCommand::Expire(a) => {
            let mut client = AdminServiceClient::new(connect(&a.server).await?);
            let s = client
                .expire_silence(pb::ExpireSilenceRequest {
                    silence_id: a.silence_id,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .silence
                .unwrap_or_default();
            a.output.print(&silence_json(&s), |_| {
                println!("ok: {} expired", s.silence_id)
            })
        }
    }
}

async fn add(a: AddArgs) -> anyhow::Result<()> {
    if a.duration.is_none() && a.until.is_none() {
        anyhow::bail!("say how long: --for 2h, or --until <time>");
    }
    let mut client = AdminServiceClient::new(connect(&a.server).await?);
    let s = client
        .create_silence(pb::CreateSilenceRequest {
            environment: a.environment.unwrap_or_default(),
            project: a.project.unwrap_or_default(),
            cube: a.cube.unwrap_or_default(),
            event_type: a.event_type.unwrap_or_default(),
            starts_at: a.starts.map(timestamp_to_proto),
            ends_at: a.until.map(timestamp_to_proto),
            duration: a.duration.unwrap_or_default(),
            comment: a.comment,
            created_by: a.created_by.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .silence
        .unwrap_or_default();
    a.output.print(&silence_json(&s), |_| {
        println!(
            "ok: {} silences {} until {}",
            s.silence_id,
            matchers_text(&s),
            time_text(&s.ends_at).unwrap_or_default()
        )
    })
}

/// `environment=prod cube=sales`.
fn matchers_text(s: &pb::Silence) -> String {
    [
        ("environment", &s.environment),
        ("project", &s.project),
        ("cube", &s.cube),
        ("event_type", &s.event_type),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={v}"))
    .collect::<Vec<_>>()
    .join(" ")
}

fn silence_json(s: &pb::Silence) -> Value {
    json!({
        "silence_id": s.silence_id, "state": s.state, "environment": s.environment,
        "project": s.project, "cube": s.cube, "event_type": s.event_type,
        "starts_at": time_text(&s.starts_at), "ends_at": time_text(&s.ends_at),
        "created_by": s.created_by, "comment": s.comment, "created_at": time_text(&s.created_at),
    })
}

fn print_silences(list: &Value) {
    let keys = [
        "silence_id",
        "state",
        "environment",
        "project",
        "cube",
        "event_type",
        "ends_at",
        "created_by",
        "comment",
    ];
    let rows: Vec<Vec<String>> = items(list)
        .map(|s| keys.iter().map(|k| cell(&s[*k])).collect())
        .collect();
    print_table(
        &[
            "SILENCE",
            "STATE",
            "ENVIRONMENT",
            "PROJECT",
            "CUBE",
            "EVENT TYPE",
            "ENDS",
            "BY",
            "COMMENT",
        ],
        &rows,
    );
}
