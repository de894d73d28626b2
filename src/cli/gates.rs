//! `herald gates`: each dependency gate, open or waiting and for what; and
//! `herald wait --gate NAME`, which blocks until the gate opens.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::output::{
    cell, duration_text, enum_text, items, print_table, time_of, time_text, OutputArg,
};
use super::{connect, status_error, Authed, ServerArg};
use crate::api::pb::{self, query_service_client::QueryServiceClient};

#[derive(Debug, clap::Args)]
pub struct GatesArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Show this gate only (NOT_FOUND when not configured).
    name: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(args: GatesArgs) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    match &args.name {
        Some(name) => {
            let gate = get_gate(&mut client, name).await?;
            args.output
                .print(&gate_json(&gate), |g| print_gates(&json!([g])))
        }
        None => {
            let reply = client
                .list_gates(pb::ListGatesRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let list = Value::Array(reply.gates.iter().map(gate_json).collect());
            args.output.print(&list, print_gates)
        }
    }
}

async fn get_gate(client: &mut QueryServiceClient<Authed>, name: &str) -> anyhow::Result<pb::Gate> {
    client
        .get_gate(pb::GetGateRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .gate
        .ok_or_else(|| anyhow::anyhow!("Herald answered without the gate"))
}

fn cube_json(c: &pb::GateCube) -> Value {
    json!({
        "cube_id": c.cube_id, "cube_name": c.cube_name, "batch_id": c.batch_id,
        "succeeded": c.succeeded, "finished_at": time_text(&c.finished_at), "fresh": c.fresh,
        "error_message": c.error_message,
    })
}

fn gate_json(g: &pb::Gate) -> Value {
    let duration = |d: Option<prost_types::Duration>| {
        d.and_then(|d| Duration::try_from(d).ok())
            .map(duration_text)
    };
    let state = pb::GateState::try_from(g.state)
        .ok()
        .map(|s| s.as_str_name());
    json!({
        "name": g.name, "environment_id": g.environment_id, "requires": g.requires,
        "within": duration(g.within), "state": enum_text(state, "GATE_STATE_"),
        "waiting_for": g.waiting_for, "opened_at": time_text(&g.opened_at),
        "opened_count": g.opened_count, "cubes": g.cubes.iter().map(cube_json).collect::<Vec<_>>(),
        "blocked_by": g.blocked_by.as_ref().map(cube_json),
        "deadline_cron": g.deadline_cron, "deadline_grace": duration(g.deadline_grace),
        "next_deadline": time_text(&g.next_deadline),
    })
}

fn print_gates(list: &Value) {
    let rows: Vec<Vec<String>> = items(list)
        .map(|g| {
            let list = |v: &Value| {
                let names: Vec<String> = items(v).map(cell).collect();
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(", ")
                }
            };
            vec![
                cell(&g["name"]),
                cell(&g["environment_id"]),
                list(&g["requires"]),
                g["state"].as_str().unwrap_or("?").to_uppercase(),
                list(&g["waiting_for"]),
                cell(&g["opened_at"]),
                cell(&g["next_deadline"]),
            ]
        })
        .collect();
    print_table(
        &[
            "GATE",
            "ENVIRONMENT",
            "REQUIRES",
            "STATE",
            "WAITING FOR",
            "OPENED AT",
            "DEADLINE",
        ],
        &rows,
    );
}

/// How often `wait --gate` asks where the gate stands.
const POLL: Duration = Duration::from_millis(500);

/// What `herald wait --gate` needs.
pub struct GateWait<'a> {
    pub server: &'a ServerArg,
    pub gate: &'a str,
    pub after: DateTime<Utc>,
    pub timeout: Duration,
}

/// How a gate wait ended, as `herald wait` reports a cube's.
pub enum GateOutcome {
    Opened,
    Blocked,
    TimedOut,
}

/// Waits until the gate opens at or after `after` (or a required cube
/// fails first, or the timeout passes); returns the outcome, the document
/// for -o json|yaml and the line for people.
pub async fn wait(w: GateWait<'_>) -> anyhow::Result<(GateOutcome, Value, String)> {
    let mut client = QueryServiceClient::new(connect(w.server).await?);
    let give_up = tokio::time::Instant::now() + w.timeout;
    loop {
        let gate = get_gate(&mut client, w.gate).await?;
        let opened = time_of(&gate.opened_at).is_some_and(|at| at >= w.after);
        let blocked = gate
            .blocked_by
            .as_ref()
            .filter(|b| time_of(&b.finished_at).is_some_and(|at| at >= w.after));
        let (outcome, line) = if opened {
            let cubes: Vec<String> = gate
                .cubes
                .iter()
                .map(|c| format!("{} {}", c.cube_id, c.batch_id))
                .collect();
            (
                GateOutcome::Opened,
                format!(
                    "opened: gate {} ({}) on {}",
                    gate.name,
                    gate.environment_id,
                    cubes.join(", ")
                ),
            )
        } else if let Some(b) = blocked {
            let line = format!(
                "blocked: gate {} ({}): cube {} failed in batch {}: {}",
                gate.name, gate.environment_id, b.cube_id, b.batch_id, b.error_message
            );
            (GateOutcome::Blocked, line)
        } else if tokio::time::Instant::now() >= give_up {
            let line = format!(
                "timed out after {}: gate {} ({}) waits for {}",
                duration_text(w.timeout),
                gate.name,
                gate.environment_id,
                gate.waiting_for.join(", ")
            );
            (GateOutcome::TimedOut, line)
        } else {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(POLL.min(left)).await;
            continue;
        };
        let document = json!({
            "outcome": match outcome {
                GateOutcome::Opened => "opened",
                GateOutcome::Blocked => "blocked",
                GateOutcome::TimedOut => "timed_out",
            },
            "gate": gate_json(&gate),
        });
        return Ok((outcome, document, line));
    }
}
