//! `herald schedules`: each configured refresh schedule, its last
//! success, when the next is due, and whether it is overdue.

use serde_json::{json, Value};

use super::output::{cell, duration_text, items, print_table, time_text, OutputArg};
use super::{connect, status_error, ServerArg};
use crate::api::pb::{self, query_service_client::QueryServiceClient};

#[derive(Debug, clap::Args)]
pub struct SchedulesArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(args: SchedulesArgs) -> anyhow::Result<()> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let reply = client
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let list = Value::Array(reply.schedules.iter().map(schedule_json).collect());
    args.output.print(&list, print_schedules)
}

fn schedule_json(s: &pb::ScheduleStatus) -> Value {
    let grace = s
        .grace
        .and_then(|g| std::time::Duration::try_from(g).ok())
        .map(duration_text);
    json!({
        "name": s.name, "environment_id": s.environment_id, "cube_id": s.cube_id,
        "cadence": s.cadence, "grace": grace, "last_success_at": time_text(&s.last_success_at),
        "overdue_at": time_text(&s.overdue_at), "overdue": s.overdue,
    })
}

fn print_schedules(list: &Value) {
    let rows: Vec<Vec<String>> = items(list)
        .map(|s| {
            let last = match &s["last_success_at"] {
                Value::Null => "never succeeded".to_owned(),
                at => cell(at),
            };
            let status = if s["overdue"] == true {
                "OVERDUE"
            } else {
                "on time"
            };
            vec![
                cell(&s["name"]),
                cell(&s["environment_id"]),
                cell(&s["cube_id"]),
                cell(&s["cadence"]),
                last,
                cell(&s["overdue_at"]),
                status.to_owned(),
            ]
        })
        .collect();
    print_table(
        &[
            "SCHEDULE",
            "ENVIRONMENT",
            "CUBE",
            "CADENCE",
            "LAST SUCCESS",
            "OVERDUE AT",
            "STATUS",
        ],
        &rows,
    );
}
