//! Preparing an attempt: turns a claimed delivery into the HTTP request its
//! subscription's target calls for — a signed webhook or a healthcheck
//! ping. No I/O happens here.

use serde_json::Value;

use super::body::{DocumentBody, RequestBody};
use crate::core::cloudevent::CONTENT_TYPE as CLOUDEVENTS_JSON;
use crate::core::document::StoredDocument;
use crate::core::subscription::{
    run_id, Healthcheck, Ping, ProjectXml, Subscription, Target, Webhook,
};
use crate::store::ClaimedDelivery;

pub(super) const USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// An HTTP request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: RequestBody,
}

/// Builds the request for one attempt. `timestamp` (unix seconds) goes
/// into the webhook signature. An `Err` says why this event cannot be sent
/// to this target; retrying would not help.
/// `now` (unix seconds, Herald's clock) decides which rotated-out secrets
/// still sign; `document` is a project event's XML, when it has one: a body
/// that carries it is read from its stored form as it is signed and sent,
/// never copied whole (so this runs a pass over the document; call it off
/// the async runtime when there is one).
pub fn prepare(
    sub: &Subscription,
    delivery: &ClaimedDelivery,
    timestamp: i64,
    now: i64,
    document: Option<&StoredDocument>,
) -> Result<PreparedRequest, String> {
    match &sub.target {
        Target::Webhook(webhook) => {
            let mut request = prepare_webhook(webhook, delivery, timestamp, now, document)?;
            if let (ProjectXml::Raw, Some(_)) = (webhook.project_xml, document) {
                request.url = with_project_query(&request.url, delivery)?;
            }
            Ok(request)
        }
        Target::Healthcheck(check) => prepare_ping(check, delivery),
        Target::OpenLineage(lineage) => super::openlineage::prepare(lineage, delivery),
        Target::Email(_) => Err("email goes through the mailer, not HTTP".to_owned()),
        Target::GitArchive(_) => {
            Err("a Git archive is written by the archiver, not HTTP".to_owned())
        }
    }
}

/// The envelope, parsed, for templates.
pub(super) fn context(delivery: &ClaimedDelivery) -> Result<Value, String> {
    serde_json::from_slice(&delivery.body).map_err(|e| format!("stored event is not JSON: {e}"))
}

fn prepare_webhook(
    webhook: &Webhook,
    delivery: &ClaimedDelivery,
    timestamp: i64,
    now: i64,
    document: Option<&StoredDocument>,
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
    let (mut body, default_type) = match (&webhook.body, webhook.project_xml, document) {
        (Some(template), _, _) => {
            let body = template
                .render(&context)
                .map_err(|e| format!("body template: {}", e.message))?;
            (RequestBody::Full(body.into_bytes()), "application/json")
        }
        (None, ProjectXml::Raw, Some(document)) => (
            RequestBody::Document(DocumentBody::raw(document.clone())),
            "application/xml",
        ),
        (None, ProjectXml::Inline, Some(document)) => (
            RequestBody::Document(inline_xml(&delivery.body, document)?),
            CLOUDEVENTS_JSON,
        ),
        (None, _, _) => (RequestBody::Full(delivery.body.clone()), CLOUDEVENTS_JSON),
    };
    let content_type = webhook.content_type.as_deref().unwrap_or(default_type);
    let mut headers = webhook.headers.clone();
    if let (ProjectXml::Raw, Some(_)) = (webhook.project_xml, document) {
        headers.extend(project_headers(delivery)?);
    }
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
    let mut signers: Vec<_> = webhook
        .secret
        .iter()
        .chain(old)
        .map(|secret| secret.signer(&delivery.id, timestamp))
        .collect();
    body.seal(|piece| signers.iter_mut().for_each(|s| s.update(piece)))
        .map_err(|e| format!("reading the project document: {e}"))?;
    let signatures: Vec<String> = signers.into_iter().map(|s| s.finish()).collect();
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

/// The envelope with the document as `data.project_xml`: the envelope is
/// written around a marker, and the document streamed where the marker was
/// — the same bytes `serde_json` would write for the whole value.
fn inline_xml(envelope: &[u8], document: &StoredDocument) -> Result<DocumentBody, String> {
    let mut event = context_of(envelope)?;
    // Random, so nothing in the envelope can spell it.
    let marker = format!("herald-document-{:032x}", rand::random::<u128>());
    event["data"]["project_xml"] = Value::String(marker.clone());
    let json = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let quoted = format!("\"{marker}\"");
    let at = json
        .windows(quoted.len())
        .position(|w| w == quoted.as_bytes())
        .ok_or("the envelope lost its document marker")?;
    let prefix = json[..at + 1].to_vec();
    let suffix = json[at + quoted.len() - 1..].to_vec();
    Ok(DocumentBody::json_string(prefix, document.clone(), suffix))
}

fn context_of(envelope: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(envelope).map_err(|e| format!("stored event is not JSON: {e}"))
}

/// The project event's metadata, for the raw form: (header suffix, value).
fn project_fields(delivery: &ClaimedDelivery) -> Result<Vec<(&'static str, String)>, String> {
    let event = context_of(&delivery.body)?;
    let data = &event["data"];
    let mut fields = vec![("event", delivery.event_type.clone())];
    fields.extend(event["id"].as_str().map(|id| ("event-id", id.to_owned())));
    for (name, key) in [
        ("organization", "organization_id"),
        ("project", "project_id"),
        ("project-name", "project_name"),
        ("user", "user"),
        ("snapshot", "snapshot_id"),
        ("snapshot-tag", "snapshot_tag"),
        ("environment", "target_environment"),
    ] {
        if let Some(value) = data[key].as_str() {
            fields.push((name, value.to_owned()));
        }
    }
    Ok(fields)
}

fn project_headers(delivery: &ClaimedDelivery) -> Result<Vec<(String, String)>, String> {
    Ok(project_fields(delivery)?
        .into_iter()
        // Header values must be visible ASCII; anything else is left to the query.
        .filter(|(_, v)| v.chars().all(|c| c.is_ascii_graphic() || c == ' '))
        .map(|(name, value)| (format!("herald-{name}"), value))
        .collect())
}

fn with_project_query(url: &str, delivery: &ClaimedDelivery) -> Result<String, String> {
    let mut url = url::Url::parse(url).map_err(|e| format!("url: {e}"))?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in project_fields(delivery)? {
            query.append_pair(name, &value);
        }
    }
    Ok(url.into())
}

fn prepare_ping(
    check: &Healthcheck,
    delivery: &ClaimedDelivery,
) -> Result<PreparedRequest, String> {
    let ping = Ping::for_event(&delivery.event_type)
        .ok_or_else(|| format!("{} has no healthcheck endpoint", delivery.event_type))?;
    let context = context(delivery)?;
    // A gate's opening or miss names no batch: its event is the run.
    let batch_id = context["data"]["batch_id"]
        .as_str()
        .or(context["id"].as_str())
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
        body: RequestBody::Full(summary(&context).into_bytes()),
    })
}

/// One line a monitor shows in its log: what happened to which batch (or
/// gate).
fn summary(event: &Value) -> String {
    let data = &event["data"];
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    if let Some(gate) = data["gate"].as_str() {
        return format!(
            "{}: gate {gate} ({})",
            text(&event["type"]),
            text(&data["environment_id"])
        );
    }
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
