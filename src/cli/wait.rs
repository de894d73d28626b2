//! `herald wait`: block until a cube's refresh finishes, for schedulers and
//! scripts (an Airflow BashOperator, a cron job). The exit code says how it
//! ended; one line on stdout says the same in words.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::batches::batch_json;
use super::output::{duration_text, enum_text, Format, OutputArg};
use super::{connect, parse_time, status_error, Authed, ServerArg};
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
    #[arg(long = "cube-id", alias = "cube", required_unless_present = "gate")]
    cube: Option<String>,
    /// Wait for this dependency gate to open instead (exit 2: a required
    /// cube failed first).
    #[arg(long, conflicts_with_all = ["cube", "environment", "batch"])]
    gate: Option<String>,
    /// Its environment (any when omitted).
    #[arg(long = "environment-id", alias = "environment")]
    environment: Option<String>,
    /// Wait for this batch (of that cube).
    #[arg(long = "batch-id", alias = "batch", conflicts_with = "after")]
    batch: Option<String>,
    /// Wait for the first batch begun at or after this time (RFC 3339, or a
    /// duration ago like 6h). Default: now, i.e. the next refresh.
    #[arg(long, value_parser = parse_time)]
    after: Option<DateTime<Utc>>,
    /// Give up after this long (e.g. 30m, 2h; at most 24h).
    #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    output: OutputArg,
}

impl WaitArgs {
    /// The cube (required unless `--gate` is given, which skips the cube's
    /// paths).
    fn cube(&self) -> &str {
        self.cube.as_deref().unwrap_or_default()
    }
}

pub async fn run(args: WaitArgs) -> ExitCode {
    let waited = match &args.gate {
        Some(gate) => wait_gate(&args, gate).await,
        None => wait(&args).await,
    };
    match waited {
        Ok((code, document, line)) => match args.output.print(&document, |_| println!("{line}")) {
            Ok(()) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(UNREACHABLE_OR_USAGE)
            }
        },
        Err(e) => {
            eprintln!("error: {}", super::cause_chain(e.as_ref()));
            ExitCode::from(UNREACHABLE_OR_USAGE)
        }
    }
}

/// A gate's wait, with a cube's exit codes (see `gates::wait`).
async fn wait_gate(args: &WaitArgs, gate: &str) -> anyhow::Result<(u8, serde_json::Value, String)> {
    let w = super::gates::GateWait {
        server: &args.server,
        gate,
        after: args.after.unwrap_or_else(Utc::now),
        timeout: args.timeout,
    };
    let (outcome, document, line) = super::gates::wait(w).await?;
    let code = match outcome {
        super::gates::GateOutcome::Opened => SUCCEEDED,
        super::gates::GateOutcome::Blocked => FAILED,
        super::gates::GateOutcome::TimedOut => TIMED_OUT_OR_STALLED,
    };
    Ok((code, document, line))
}

/// How the wait ended: the exit code, the document for -o json|yaml and
/// the line for people.
async fn wait(args: &WaitArgs) -> anyhow::Result<(u8, serde_json::Value, String)> {
    let mut client = QueryServiceClient::new(connect(&args.server).await?);
    if let Some(batch_id) = &args.batch {
        check_batch_of_cube(&mut client, batch_id, args).await?;
    }
    let target = match &args.batch {
        Some(batch_id) => pb::await_batch_request::Target::BatchId(batch_id.clone()),
        None => pb::await_batch_request::Target::Cube(pb::CubeAfter {
            environment_id: args.environment.clone().unwrap_or_default(),
            cube_id: args.cube().to_owned(),
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
    let live = super::progress::wanted(args.output.format() == Format::Table)
        .then(|| tokio::spawn(super::progress::draw(client.clone(), watched(args))));
    let reply = client.await_batch(request).await;
    if let Some(live) = live {
        // Wait until the drawing task has really stopped: one still
        // running on another worker could draw again after the erase.
        live.abort();
        let _ = live.await;
        super::progress::clear();
    }
    let reply = reply.map_err(status_error)?.into_inner();
    let outcome = AwaitOutcome::try_from(reply.outcome).unwrap_or(AwaitOutcome::Unspecified);
    let code = match outcome {
        AwaitOutcome::Succeeded => SUCCEEDED,
        AwaitOutcome::Failed => FAILED,
        AwaitOutcome::Stalled | AwaitOutcome::TimedOut => TIMED_OUT_OR_STALLED,
        AwaitOutcome::Unspecified => anyhow::bail!("Herald answered an unknown outcome"),
    };
    let document = serde_json::json!({
        "outcome": enum_text(Some(outcome.as_str_name()), "AWAIT_OUTCOME_"),
        "batch": reply.batch.as_ref().map(batch_json),
    });
    let line = describe(outcome, reply.batch.as_ref(), args);
    Ok((code, document, line))
}

/// What the live line follows.
fn watched(args: &WaitArgs) -> super::progress::Watched {
    super::progress::Watched {
        batch_id: args.batch.clone(),
        cube_id: args.cube().to_owned(),
        environment_id: args.environment.clone(),
        after: args.after.unwrap_or_else(Utc::now),
    }
}

/// Refuses a `--batch-id` that Herald has seen for another cube (or
/// environment), so a typo does not wait an hour for the wrong batch. A
/// batch not seen yet is waited for.
async fn check_batch_of_cube(
    client: &mut QueryServiceClient<Authed>,
    batch_id: &str,
    args: &WaitArgs,
) -> anyhow::Result<()> {
    let batch = match client
        .get_batch(pb::GetBatchRequest {
            batch_id: batch_id.to_owned(),
        })
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
        Err(status) => return Err(status_error(status)),
    };
    if batch.cube_id != args.cube() {
        anyhow::bail!(
            "--batch-id {batch_id} is a batch of cube {}, not of --cube-id {}",
            batch.cube_id,
            args.cube()
        );
    }
    match &args.environment {
        Some(env) if *env != batch.environment_id => anyhow::bail!(
            "--batch-id {batch_id} is a batch of environment {}, not of --environment-id {env}",
            batch.environment_id
        ),
        _ => Ok(()),
    }
}

fn describe(outcome: AwaitOutcome, batch: Option<&pb::Batch>, args: &WaitArgs) -> String {
    let Some(b) = batch else {
        if let Some(batch_id) = &args.batch {
            return format!(
                "timed out: batch {batch_id} of cube {} was not seen within {}",
                args.cube(),
                duration_text(args.timeout)
            );
        }
        return format!(
            "timed out: no batch of cube {} began within {}",
            args.cube(),
            duration_text(args.timeout)
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
            duration_text(args.timeout)
        ),
    }
}
