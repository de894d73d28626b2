//! `herald deliveries …`: the delivery log, redelivery, replay, dead ones.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use super::{connect, parse_time, status_error, ServerArg};
use crate::api::pb::{self, admin_service_client::AdminServiceClient};
use crate::api::timestamp_to_proto;

#[derive(Debug, clap::Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, oldest first.
    List(ListArgs),
    /// Show one delivery and every attempt.
    Get(IdArgs),
    /// Make a delivery due now (one more attempt).
    Redeliver(IdArgs),
    /// Send a subscription every event received in a time range again.
    Replay(ReplayArgs),
    /// Make every dead delivery due now.
    RetryDead(RetryDeadArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    #[arg(long)]
    subscription: Option<String>,
    #[arg(long)]
    event_id: Option<String>,
    /// pending, delivered, failed or dead.
    #[arg(long)]
    state: Option<String>,
    /// Created at or after (RFC 3339, or a duration ago like 6h).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    delivery_id: String,
    #[command(flatten)]
    server: ServerArg,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    server: ServerArg,
    #[arg(long)]
    subscription: String,
    /// Events received at or after (RFC 3339, or a duration ago like 48h).
    #[arg(long, value_parser = parse_time)]
    since: DateTime<Utc>,
    /// Events received before (default: now).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
}

#[derive(Debug, clap::Args)]
pub struct RetryDeadArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only this subscription's.
    #[arg(long)]
    subscription: Option<String>,
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
            println!(
                "ok: {} is due now ({} attempts so far)",
                d.delivery_id, d.attempts
            );
            Ok(())
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
            println!(
                "ok: {} deliveries to {} are due now",
                r.enqueued, a.subscription
            );
            Ok(())
        }
        DeliveriesCommand::RetryDead(a) => {
            let mut client = AdminServiceClient::new(connect(&a.server).await?);
            let r = client
                .retry_dead(pb::RetryDeadRequest {
                    subscription: a.subscription.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("ok: {} dead deliveries are due again", r.retried);
            Ok(())
        }
    }
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let state = match a.state.as_deref() {
        None => pb::DeliveryState::Unspecified,
        Some(s) => {
            pb::DeliveryState::from_str_name(&format!("DELIVERY_STATE_{}", s.to_ascii_uppercase()))
                .ok_or_else(|| {
                    anyhow::anyhow!("--state `{s}`: use pending, delivered, failed or dead")
                })?
        }
    };
    let mut client = AdminServiceClient::new(connect(&a.server).await?);
    let page = client
        .list_deliveries(pb::ListDeliveriesRequest {
            subscription: a.subscription.unwrap_or_default(),
            event_id: a.event_id.unwrap_or_default(),
            state: state as i32,
            since: a.since.map(timestamp_to_proto),
            until: None,
            page_size: a.limit,
            page_token: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if a.json {
        let list: Vec<Value> = page.deliveries.iter().map(delivery_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<16} {:<28} {:<10} {:>8} {:>6}  LAST ERROR",
        "DELIVERY", "SUBSCRIPTION", "EVENT TYPE", "STATE", "ATTEMPTS", "STATUS"
    );
    for d in &page.deliveries {
        let j = delivery_json(d);
        println!(
            "{:<36} {:<16} {:<28} {:<10} {:>8} {:>6}  {}",
            d.delivery_id,
            d.subscription,
            d.event_type,
            j["state"].as_str().unwrap_or(""),
            d.attempts,
            d.last_status,
            d.last_error
        );
    }
    Ok(())
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
            json!({"attempt": t.attempt, "started_at": time(&t.started_at), "duration_ms": t.duration_ms,
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
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&out)?.replace(['{', '}', '"', ','], "")
        );
    }
    Ok(())
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref()
        .and_then(|t| Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single())
        .map(|t| t.to_rfc3339())
}

fn delivery_json(d: &pb::Delivery) -> Value {
    let state = pb::DeliveryState::try_from(d.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DELIVERY_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    json!({
        "delivery_id": d.delivery_id, "subscription": d.subscription, "event_id": d.event_id,
        "event_type": d.event_type, "state": state, "attempts": d.attempts,
        "next_attempt_at": time(&d.next_attempt_at), "last_status": d.last_status,
        "last_error": d.last_error, "created_at": time(&d.created_at),
    })
}
