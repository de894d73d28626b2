//! `herald wait`: block until a cube's refresh finishes, for schedulers and
//! scripts (an Airflow BashOperator, a cron job). The exit code says how it
//! ended; one line on stdout says the same in words.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::batches::batch_json;
use super::{connect, parse_time, ServerArg};
use crate::api::pb::{self, query_service_client::QueryServiceClient, AwaitOutcome};
use crate::api::timestamp_to_proto;

const SUCCEEDED: u8 = 0;
const UNREACHABLE_OR_USAGE: u8 = 1;
const FAILED: u8 = 2;
const TIMED_OUT_OR_STALLED: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The cube whose refresh to wait for.
    #[arg(long, alias = "cube-id")]
    cube: String,
    /// Its environment (any when omitted).
    #[arg(long, alias = "environment-id")]
    environment: Option<String>,
    /// Wait for this batch.
    #[arg(long, alias = "batch-id", conflicts_with = "after")]
    batch: Option<String>,
    /// Wait for the first batch begun at or after this time (RFC 3339, or a
    /// duration ago like 6h). Default: now, i.e. the next refresh.
    #[arg(long, value_parser = parse_time)]
    after: Option<DateTime<Utc>>,
    /// Give up after this long (e.g. 30m, 2h; at most 24h).
    #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration)]
    timeout: Duration,
    /// Print the final batch as JSON instead of one line.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: WaitArgs) -> ExitCode {
    match wait(&args).await {
        Ok((code, line)) => {
            println!("{line}");
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {}", super::cause_chain(e.as_ref()));
            ExitCode::from(UNREACHABLE_OR_USAGE)
        }
    }
}

async fn wait(args: &WaitArgs) -> anyhow::Result<(u8, String)> {
    let target = match &args.batch {
        Some(batch_id) => pb::await_batch_request::Target::BatchId(batch_id.clone()),
        None => pb::await_batch_request::Target::Cube(pb::CubeAfter {
            environment_id: args.environment.clone().unwrap_or_default(),
            cube_id: args.cube.clone(),
            after: Some(timestamp_to_proto(args.after.unwrap_or_else(Utc::now))),
        }),
    };
    let timeout = prost_types::Duration::try_from(args.timeout)
        .map_err(|_| anyhow::anyhow!("--timeout is too long"))?;
    let mut request = tonic::Request::new(pb::AwaitBatchRequest {
        target: Some(target),
        timeout: Some(timeout),
    });
    // The server answers TIMED_OUT at the timeout; the transport deadline
    // only guards against a server that stopped answering at all.
    request.set_timeout(args.timeout.saturating_add(Duration::from_secs(30)));
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    let reply = client
        .await_batch(request)
        .await
        .map_err(super::status_error)?
        .into_inner();
    let outcome = AwaitOutcome::try_from(reply.outcome).unwrap_or(AwaitOutcome::Unspecified);
    let code = match outcome {
        AwaitOutcome::Succeeded => SUCCEEDED,
        AwaitOutcome::Failed => FAILED,
        AwaitOutcome::Stalled | AwaitOutcome::TimedOut => TIMED_OUT_OR_STALLED,
        AwaitOutcome::Unspecified => anyhow::bail!("Herald answered an unknown outcome"),
    };
    let line = match (&reply.batch, args.json) {
        (Some(batch), true) => batch_json(batch).to_string(),
        (batch, _) => describe(outcome, batch.as_ref(), args),
    };
    Ok((code, line))
}

fn describe(outcome: AwaitOutcome, batch: Option<&pb::Batch>, args: &WaitArgs) -> String {
    let Some(b) = batch else {
        return format!(
            "timed out: no batch of cube {} began within {}",
            args.cube,
            humanize(args.timeout)
        );
    };
    let what = format!(
        "batch {} of cube {} ({})",
        b.batch_id, b.cube_name, b.environment_id
    );
    match outcome {
        AwaitOutcome::Succeeded => format!("succeeded: {what}, {} rows written", b.rows_written),
        AwaitOutcome::Failed => format!("failed: {what}: {}", b.error_message),
        AwaitOutcome::Stalled => format!("stalled: {what} has run past its allowed duration"),
        _ => format!(
            "timed out after {}: {what} is still running",
            humanize(args.timeout)
        ),
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}
