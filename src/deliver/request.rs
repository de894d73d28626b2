//! Preparing an attempt: turns a claimed delivery into the HTTP request its
//! subscription's target calls for — a signed webhook or a healthcheck
//! ping. No I/O happens here.

use serde_json::Value;

use crate::core::cloudevent::CONTENT_TYPE as CLOUDEVENTS_JSON;
use crate::core::subscription::{run_id, Healthcheck, Ping, Subscription, Target, Webhook};
use crate::store::ClaimedDelivery;

const USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// An HTTP request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the request for one attempt. `timestamp` (unix seconds) goes
/// into the webhook signature. An `Err` says why this event cannot be sent
/// to this target; retrying would not help.
/// `now` (unix seconds, Herald's clock) decides which rotated-out secrets
/// still sign.
pub fn prepare(
    sub: &Subscription,
    delivery: &ClaimedDelivery,
    timestamp: i64,
    now: i64,
) -> Result<PreparedRequest, String> {
    match &sub.target {
        Target::Webhook(webhook) => prepare_webhook(webhook, delivery, timestamp, now),
        Target::Healthcheck(check) => prepare_ping(check, delivery),
        Target::Email(_) => Err("email goes through the mailer, not HTTP".to_owned()),
    }
}

/// The envelope, parsed, for templates.
fn context(delivery: &ClaimedDelivery) -> Result<Value, String> {
    serde_json::from_slice(&delivery.body).map_err(|e| format!("stored event is not JSON: {e}"))
}

fn prepare_webhook(
    webhook: &Webhook,
    delivery: &ClaimedDelivery,
    timestamp: i64,
    now: i64,
) -> Result<PreparedRequest, String> {
    let templated = !webhook.url.is_static() || webhook.body.is_some();
    let context = if templated {
        context(delivery)?
    } else {
        Value::Null
    };
    let url = webhook
        .url
        .render(&context)
        .map_err(|e| format!("url template: {}", e.message))?;
    let (body, default_type) = match &webhook.body {
        Some(template) => {
            let body = template
                .render(&context)
                .map_err(|e| format!("body template: {}", e.message))?;
            (body.into_bytes(), "application/json")
        }
        None => (delivery.body.clone(), CLOUDEVENTS_JSON),
    };
    let content_type = webhook.content_type.as_deref().unwrap_or(default_type);
    let mut headers = webhook.headers.clone();
    headers.extend([
        ("content-type".to_owned(), content_type.to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ("webhook-id".to_owned(), delivery.id.clone()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
    ]);
    // During a rotation the old secrets sign too, space-separated: a
    // receiver with either secret verifies.
    let old = webhook
        .previous_secrets
        .iter()
        .filter(|(_, expires)| now < *expires)
        .map(|(secret, _)| secret);
    let signatures: Vec<String> = webhook
        .secret
        .iter()
        .chain(old)
        .map(|secret| secret.sign(&delivery.id, timestamp, &body))
        .collect();
    if !signatures.is_empty() {
        headers.push(("webhook-signature".to_owned(), signatures.join(" ")));
    }
    Ok(PreparedRequest {
        method: webhook.method.clone(),
        url,
        headers,
        body,
    })
}

fn prepare_ping(
    check: &Healthcheck,
    delivery: &ClaimedDelivery,
) -> Result<PreparedRequest, String> {
    let ping = Ping::for_event(&delivery.event_type)
        .ok_or_else(|| format!("{} has no healthcheck endpoint", delivery.event_type))?;
    let context = context(delivery)?;
    let batch_id = context["data"]["batch_id"]
        .as_str()
        .ok_or("the event names no batch")?;
    let base = check
        .url
        .render(&context)
        .map_err(|e| format!("url template: {}", e.message))?;
    Ok(PreparedRequest {
        method: "POST".to_owned(),
        url: ping.url(&base, &run_id(batch_id)),
        headers: vec![
            (
                "content-type".to_owned(),
                "text/plain; charset=utf-8".to_owned(),
            ),
            ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ],
        body: summary(&context).into_bytes(),
    })
}

/// One line a monitor shows in its log: what happened to which batch.
fn summary(event: &Value) -> String {
    let data = &event["data"];
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let mut line = format!(
        "{}: batch {} of cube {} ({})",
        text(&event["type"]),
        text(&data["batch_id"]),
        text(&data["cube_name"]),
        text(&data["environment_id"])
    );
    if let Some(error) = data["error_message"].as_str() {
        line.push_str(": ");
        line.push_str(error);
    }
    line
}
