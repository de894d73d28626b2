//! `herald deliveries …`: the delivery log, redelivery, replay, retries.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::output::{cell, enum_text, items, print_fields, print_table, time_text, OutputArg};
use super::{connect, parse_time, status_error, Authed, ServerArg};
use crate::api::pb::{self, admin_service_client::AdminServiceClient};
use crate::api::timestamp_to_proto;

/// The most a page may hold (the server's limit).
const MAX_PAGE: u32 = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries newest first (the latest event first), a page at a
    /// time (--limit, --page-token, --all), with each one's next attempt.
    List(ListArgs),
    /// Show one delivery and every attempt.
    Get(IdArgs),
    /// Make a delivery due now (one more attempt).
    Redeliver(IdArgs),
    /// Send a subscription every event received in a time range again.
    Replay(ReplayArgs),
    /// Make pending deliveries (--pending) or dead ones (--dead) due now,
    /// instead of waiting for their retry schedule.
    #[command(alias = "retry-dead")]
    Retry(RetryArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only this subscription's deliveries.
    #[arg(long)]
    subscription: Option<String>,
    /// Only this event's deliveries.
    #[arg(long)]
    event_id: Option<String>,
    /// Only deliveries in this state: pending, delivered, failed, dead or
    /// suppressed (held back by a silence).
    #[arg(long)]
    state: Option<String>,
    /// Only deliveries of events of this type: exact
    /// (aggregate.batch.failed) or a glob (aggregate.batch.*), as in
    /// subscription event filters.
    #[arg(long)]
    event_type: Option<String>,
    /// Created at or after (RFC 3339, or a duration ago like 6h).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// At most this many deliveries (up to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue after a previous page (printed when more results exist).
    #[arg(long, conflicts_with = "all")]
    page_token: Option<String>,
    /// Every matching delivery, page after page (--limit is the page size).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The delivery's id (its webhook-id).
    delivery_id: String,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The subscription to send the events to again.
    #[arg(long)]
    subscription: String,
    /// Events received at or after (RFC 3339, or a duration ago like 48h).
    #[arg(long, value_parser = parse_time)]
    since: DateTime<Utc>,
    /// Events received before (default: now).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
#[group(id = "which", required = true, multiple = false)]
pub struct RetryArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Pending deliveries: attempt them now rather than at their next
    /// scheduled attempt.
    #[arg(long, group = "which")]
    pending: bool,
    /// Dead deliveries: one more round of attempts.
    #[arg(long, group = "which")]
    dead: bool,
    /// Only this subscription's (all subscriptions when omitted).
    #[arg(long)]
    subscription: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(command: DeliveriesCommand) -> anyhow::Result<()> {
    match command {
        DeliveriesCommand::List(a) => list(a).await,
        DeliveriesCommand::Get(a) => get(a).await,
        DeliveriesCommand::Redeliver(a) => {
            let mut client = AdminServiceClient::new(connect(&a.server).await?);
            let d = client
                .redeliver(pb::RedeliverRequest {
                    delivery_id: a.delivery_id,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            a.output.print(&delivery_json(&d), |_| {
                println!(
                    "ok: {} is due now ({} attempts so far)",
                    d.delivery_id, d.attempts
                )
            })
        }
        DeliveriesCommand::Replay(a) => {
            let mut client = AdminServiceClient::new(connect(&a.server).await?);
            let r = client
                .replay(pb::ReplayRequest {
                    subscription: a.subscription.clone(),
                    since: Some(timestamp_to_proto(a.since)),
                    until: a.until.map(timestamp_to_proto),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let document = json!({"subscription": a.subscription, "enqueued": r.enqueued});
            a.output.print(&document, |_| {
                println!(
                    "ok: {} deliveries to {} are due now",
                    r.enqueued, a.subscription
                )
            })
        }
        DeliveriesCommand::Retry(a) => retry(a).await,
    }
}

fn parse_state(state: Option<&str>) -> anyhow::Result<pb::DeliveryState> {
    match state {
        None => Ok(pb::DeliveryState::Unspecified),
        Some(s) => {
            pb::DeliveryState::from_str_name(&format!("DELIVERY_STATE_{}", s.to_ascii_uppercase()))
                .filter(|s| *s != pb::DeliveryState::Unspecified)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--state `{s}`: use pending, delivered, failed, dead or suppressed"
                    )
                })
        }
    }
}

/// One page of the delivery log.
async fn page(
    client: &mut AdminServiceClient<Authed>,
    mut request: pb::ListDeliveriesRequest,
    token: String,
) -> anyhow::Result<pb::ListDeliveriesResponse> {
    request.page_token = token;
    Ok(client
        .list_deliveries(request)
        .await
        .map_err(status_error)?
        .into_inner())
}

/// Every page from `token` on (or the one page, when `all` is false); the
/// deliveries and the token of the page after the last one read.
async fn pages(
    client: &mut AdminServiceClient<Authed>,
    request: pb::ListDeliveriesRequest,
    mut token: String,
    all: bool,
) -> anyhow::Result<(Vec<pb::Delivery>, String)> {
    let mut deliveries = Vec::new();
    loop {
        let reply = page(client, request.clone(), token).await?;
        deliveries.extend(reply.deliveries);
        token = reply.next_page_token;
        if !all || token.is_empty() {
            return Ok((deliveries, token));
        }
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    if a.limit == 0 || a.limit > MAX_PAGE {
        anyhow::bail!("--limit {}: use 1 to {MAX_PAGE}", a.limit);
    }
    let request = pb::ListDeliveriesRequest {
        subscription: a.subscription.unwrap_or_default(),
        event_id: a.event_id.unwrap_or_default(),
        state: parse_state(a.state.as_deref())? as i32,
        since: a.since.map(timestamp_to_proto),
        until: None,
        page_size: a.limit,
        page_token: String::new(),
        event_type: a.event_type.unwrap_or_default(),
    };
    let mut client = AdminServiceClient::new(connect(&a.server).await?);
    let (deliveries, next) = pages(
        &mut client,
        request,
        a.page_token.unwrap_or_default(),
        a.all,
    )
    .await?;
    let list = Value::Array(deliveries.iter().map(delivery_json).collect());
    a.output.print(&list, print_deliveries)?;
    if !next.is_empty() {
        // On stderr, so a script reading stdout gets only the page.
        eprintln!("more results: add --page-token {next} for the next page, or --all");
    }
    Ok(())
}

fn print_deliveries(list: &Value) {
    let keys = [
        "delivery_id",
        "subscription",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
    ];
    let rows: Vec<Vec<String>> = items(list)
        .map(|d| keys.iter().map(|k| cell(&d[*k])).collect())
        .collect();
    print_table(
        &[
            "DELIVERY",
            "SUBSCRIPTION",
            "EVENT TYPE",
            "STATE",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "STATUS",
            "LAST ERROR",
        ],
        &rows,
    );
}

async fn retry(a: RetryArgs) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(connect(&a.server).await?);
    let subscription = a.subscription.clone().unwrap_or_default();
    let (which, count) = if a.dead {
        let r = client
            .retry_dead(pb::RetryDeadRequest { subscription })
            .await
            .map_err(status_error)?
            .into_inner();
        ("dead", r.retried)
    } else {
        ("pending", retry_pending(&mut client, subscription).await?)
    };
    let document = json!({"state": which, "subscription": a.subscription, "due_now": count});
    a.output.print(&document, |_| {
        println!("ok: {count} {which} deliveries are due now")
    })
}

/// Makes every pending delivery (of one subscription, or all) due now, one
/// Redeliver call each: the pending ones are read first, so deliveries
/// that become pending meanwhile keep their schedule.
async fn retry_pending(
    client: &mut AdminServiceClient<Authed>,
    subscription: String,
) -> anyhow::Result<u32> {
    let request = pb::ListDeliveriesRequest {
        subscription,
        state: pb::DeliveryState::Pending as i32,
        page_size: MAX_PAGE,
        ..Default::default()
    };
    let (pending, _) = pages(client, request, String::new(), true).await?;
    for d in &pending {
        client
            .redeliver(pb::RedeliverRequest {
                delivery_id: d.delivery_id.clone(),
            })
            .await
            .map_err(status_error)?;
    }
    Ok(pending.len() as u32)
}

async fn get(a: IdArgs) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(connect(&a.server).await?);
    let detail = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: a.delivery_id,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let attempts: Vec<Value> = detail
        .attempts
        .iter()
        .map(|t| {
            json!({"attempt": t.attempt, "started_at": time_text(&t.started_at), "duration_ms": t.duration_ms,
                   "status_code": t.status_code, "verdict": t.verdict, "error": t.error, "response_excerpt": t.response_excerpt,
                   "replica": t.replica})
        })
        .collect();
    let mut out = detail
        .delivery
        .as_ref()
        .map(delivery_json)
        .unwrap_or_default();
    out["attempts"] = Value::Array(attempts);
    a.output.print(&out, |out| {
        let mut fields = out.clone();
        if let Some(map) = fields.as_object_mut() {
            map.remove("attempts");
        }
        print_fields(&fields);
        println!();
        let keys = [
            "attempt",
            "started_at",
            "duration_ms",
            "status_code",
            "verdict",
            "error",
        ];
        let rows: Vec<Vec<String>> = items(&out["attempts"])
            .map(|t| keys.iter().map(|k| cell(&t[*k])).collect())
            .collect();
        print_table(
            &["ATTEMPT", "STARTED", "MS", "STATUS", "VERDICT", "ERROR"],
            &rows,
        );
    })
}

fn delivery_json(d: &pb::Delivery) -> Value {
    let state = enum_text(
        pb::DeliveryState::try_from(d.state)
            .ok()
            .map(|s| s.as_str_name()),
        "DELIVERY_STATE_",
    );
    json!({
        "delivery_id": d.delivery_id, "subscription": d.subscription, "event_id": d.event_id,
        "event_type": d.event_type, "state": state, "attempts": d.attempts,
        "next_attempt_at": time_text(&d.next_attempt_at), "last_status": d.last_status,
        "last_error": d.last_error, "created_at": time_text(&d.created_at),
        "silence_id": d.silence_id,
    })
}
