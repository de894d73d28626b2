//! The console's pages (GET): thin handlers that check access, read the
//! store and render a template.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{viewer, Viewer};
use super::draw::{self, age_text};
use super::overview::{self, CubeState, Overview};
use super::{Console, ConsoleError};
use crate::core::batch::BatchState;
use crate::core::event::EventType;
use crate::core::filter::event_types_matching;
use crate::core::subscription::{Subscription, Target};
use crate::store::{BatchFilter, DeliveryFilter, DeliveryRow, DeliveryState};

/// Batches a cube page shows.
const CUBE_BATCHES: usize = 30;
/// Rows a page of the delivery log shows.
const DELIVERY_PAGE: usize = 50;

/// The context every page shares (who is looking, which page), with the
/// page's own values merged in.
pub(super) fn page(viewer: &Viewer, title: &str, active: &str, own: Value) -> minijinja::Value {
    let mut context = json!({
        "title": title,
        "active": active,
        "admin": viewer.admin,
        "csrf": viewer.csrf,
        "token": viewer.token,
        "signed_in": viewer.token.is_some(),
    });
    if let (Some(base), Value::Object(own)) = (context.as_object_mut(), own) {
        base.extend(own);
    }
    minijinja::Value::from_serialize(&context)
}

fn since_text(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<String> {
    at.map(|at| age_text((now - at).num_seconds()))
}

fn time_text(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct OverviewFilter {
    #[serde(default)]
    environment: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
}

pub(super) async fn overview(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<OverviewFilter>,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let overview = overview::read(console.parts()).await?;
    let environments: Vec<&str> = overview
        .cubes
        .iter()
        .map(|c| c.environment_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let wanted_state = CubeState::parse(&filter.state);
    let needle = filter.q.to_lowercase();
    let cubes: Vec<Value> = overview
        .cubes
        .iter()
        .filter(|c| filter.environment.is_empty() || c.environment_id == filter.environment)
        .filter(|c| wanted_state.is_none_or(|s| c.state == s))
        .filter(|c| {
            needle.is_empty()
                || c.cube_id.to_lowercase().contains(&needle)
                || c.cube_name.to_lowercase().contains(&needle)
        })
        .map(|c| cube_view(c, overview.generated_at))
        .collect();
    let receivers = receiver_views(&overview);
    let context = json!({
        "counts": overview.counts,
        "cubes": cubes,
        "receivers": receivers,
        "environments": environments,
        "filter": {"environment": filter.environment, "state": filter.state, "q": filter.q},
        "states": ["failed", "stalled", "overdue", "running", "succeeded", "waiting"],
        "live": true,
    });
    console.render(
        "overview.html",
        page(&viewer, "Overview", "overview", context),
    )
}

fn cube_view(c: &overview::CubeRow, now: DateTime<Utc>) -> Value {
    json!({
        "environment_id": c.environment_id,
        "cube_id": c.cube_id,
        "cube_name": c.cube_name,
        "state": c.state.as_str(),
        "batch_id": c.batch_id,
        "elapsed": c.elapsed_seconds.map(age_text),
        "progress": c.aggregate_count > 0,
        "aggregates_built": c.aggregates_built,
        "aggregate_count": c.aggregate_count,
        "last_success": time_text(c.last_success_at),
        "last_success_age": since_text(c.last_success_at, now),
        "next_expected": time_text(c.next_expected_at),
        "allowance": c.stall_allowance_seconds.map(|s| age_text(s as i64)),
        "allowance_source": c.allowance_source,
        "error_message": c.error_message,
    })
}

fn receiver_views(overview: &Overview) -> Vec<Value> {
    overview
        .receivers
        .iter()
        .map(|r| {
            json!({
                "subscription": r.subscription,
                "disabled_reason": r.disabled_reason,
                "dead": r.dead,
                "pending": r.pending,
                "oldest_pending_age": since_text(r.oldest_pending, overview.generated_at),
                "recent": format!("{}/{}", r.recent_delivered, r.recent_finished),
                "last_error": r.last_error,
            })
        })
        .collect()
}

/// The overview as JSON, for `herald status` and scripts.
pub(super) async fn overview_json(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    viewer(&console, &headers).await?;
    let overview = overview::read(console.parts()).await?;
    let body =
        serde_json::to_string(&overview).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(super) async fn cube(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((environment, cube)): Path<(String, String)>,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let parts = console.parts();
    let filter = BatchFilter {
        environment_id: Some(environment.clone()),
        cube_id: Some(cube.clone()),
        ..BatchFilter::default()
    };
    let batches = parts
        .store
        .list_batches(&filter, CUBE_BATCHES, None)
        .await?
        .batches;
    let Some(newest) = batches.first() else {
        return Err(ConsoleError::NotFound(format!(
            "no batches of cube `{cube}` in environment `{environment}`"
        )));
    };
    let now = parts.clock.now();
    let overview = overview::read(parts).await?;
    let row = overview
        .cubes
        .iter()
        .find(|c| c.environment_id == environment && c.cube_id == cube);
    let allowance = row.and_then(|r| r.stall_allowance_seconds);
    let rows = batch_rows(&console, &batches, now).await?;
    let last_failure = batches.iter().find(|b| b.state == BatchState::Failed);
    let context = json!({
        "environment_id": environment,
        "cube_id": cube,
        "cube_name": newest.cube_name,
        "row": row.map(|r| cube_view(r, now)),
        "timeline": draw::timeline(&batches, allowance, now),
        "trend": draw::trend(&batches),
        "batches": rows,
        "last_failure": last_failure.map(|b| json!({
            "batch_id": b.batch_id,
            "error_message": b.error_message,
            "failed_aggregates": b.failed_aggregates,
        })),
        "live": true,
    });
    let title = format!("{} · {}", newest.cube_name, environment);
    console.render("cube.html", page(&viewer, &title, "overview", context))
}

/// The cube page's batch table: each batch with the deliveries it caused.
async fn batch_rows(
    console: &Console,
    batches: &[crate::core::batch::BatchRecord],
    now: DateTime<Utc>,
) -> Result<Vec<Value>, ConsoleError> {
    let ids: Vec<String> = batches.iter().map(|b| b.batch_id.clone()).collect();
    let mut caused: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (batch_id, delivery) in console.parts().store.batch_deliveries(&ids).await? {
        caused
            .entry(batch_id)
            .or_default()
            .push(delivery_view(&delivery));
    }
    Ok(batches
        .iter()
        .map(|b| {
            let duration = b
                .started_at
                .map(|s| age_text((b.finished_at.unwrap_or(now) - s).num_seconds()));
            json!({
                "batch_id": b.batch_id,
                "state": b.state.as_str().to_lowercase(),
                "started_at": time_text(b.started_at),
                "finished_at": time_text(b.finished_at),
                "duration": duration,
                "deliveries": caused.remove(&b.batch_id).unwrap_or_default(),
            })
        })
        .collect())
}

fn delivery_view(d: &DeliveryRow) -> Value {
    json!({
        "id": d.id,
        "subscription": d.subscription,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": time_text(Some(d.created_at)),
        "next_attempt_at": time_text(Some(d.next_attempt_at)),
    })
}

async fn attempts_view(console: &Console, id: &str) -> Result<Vec<Value>, ConsoleError> {
    let attempts = console.parts().store.list_attempts(id).await?;
    Ok(attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "started_at": time_text(Some(a.started_at)),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "response_excerpt": a.response_excerpt,
                "error": a.error,
                "verdict": a.verdict,
                "replica": a.replica,
            })
        })
        .collect())
}

pub(super) async fn batch(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let parts = console.parts();
    let batch = parts
        .store
        .get_batch(&batch_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no batch `{batch_id}`")))?;
    let events: Vec<Value> = parts
        .store
        .batch_events(&batch_id)
        .await?
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "event_id": e.event_id,
                "event_type": e.event_type,
                "occurred_at": time_text(Some(e.occurred_at)),
                "received_at": time_text(Some(e.received_at)),
            })
        })
        .collect();
    let mut deliveries = Vec::new();
    for (_, delivery) in parts
        .store
        .batch_deliveries(std::slice::from_ref(&batch_id))
        .await?
    {
        let mut view = delivery_view(&delivery);
        view["attempt_rows"] = Value::from(attempts_view(&console, &delivery.id).await?);
        deliveries.push(view);
    }
    let context = json!({
        "batch": batch,
        "state": batch.state.as_str().to_lowercase(),
        "events": events,
        "deliveries": deliveries,
        "live": true,
    });
    let title = format!("Batch {batch_id}");
    console.render("batch.html", page(&viewer, &title, "overview", context))
}

pub(super) async fn delivery(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let delivery = console
        .parts()
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no delivery `{id}`")))?;
    let context = json!({
        "delivery": delivery_view(&delivery),
        "attempts": attempts_view(&console, &id).await?,
    });
    console.render(
        "delivery.html",
        page(&viewer, "Delivery", "deliveries", context),
    )
}

pub(super) async fn subscriptions(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let parts = console.parts();
    let now = parts.clock.now();
    let since = now - chrono::Duration::from_std(overview::RECENT).unwrap_or_default();
    let health = parts.store.subscription_health(since).await?;
    // Only subscriptions managed over the API can be changed here; the
    // configuration file's are read-only, as over the API.
    let managed: Vec<String> = parts
        .store
        .managed_subscriptions()
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut rows = Vec::new();
    for sub in parts.registry.current().iter() {
        let disabled = parts.store.subscription_disabled(&sub.name).await?;
        let h = health
            .iter()
            .find(|h| h.subscription == sub.name)
            .cloned()
            .unwrap_or_default();
        let row = overview::receiver_row(&sub.name, disabled, h);
        let rate = (row.recent_finished > 0).then(|| {
            format!(
                "{:.0}%",
                100.0 * row.recent_delivered as f64 / row.recent_finished as f64
            )
        });
        rows.push(json!({
            "name": sub.name,
            "kind": kind_of(sub),
            "target": target_of(sub),
            "webhook": matches!(sub.target, Target::Webhook(_)),
            "managed": managed.contains(&sub.name),
            "disabled_reason": row.disabled_reason,
            "recent": row.recent_finished,
            "rate": rate,
            "pending": row.pending,
            "dead": row.dead,
            "oldest_pending_age": since_text(row.oldest_pending, now),
            "last_error": row.last_error,
            "trouble": overview::in_trouble(&row, now),
        }));
    }
    let context = json!({ "subscriptions": rows, "live": true });
    console.render(
        "subscriptions.html",
        page(&viewer, "Subscriptions", "subscriptions", context),
    )
}

fn kind_of(sub: &Subscription) -> &'static str {
    match sub.target {
        Target::Webhook(_) => "webhook",
        Target::Healthcheck(_) => "healthcheck",
        Target::Email(_) => "email",
        Target::GitArchive(_) => "git",
        Target::OpenLineage(_) => "openlineage",
    }
}

/// Where a subscription sends, without secrets: a URL's scheme and host
/// only (a healthcheck's path is its key).
fn target_of(sub: &Subscription) -> String {
    let Some(url) = sub.target_url() else {
        return String::new();
    };
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/…")
        }
        None => String::new(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeliveryQuery {
    #[serde(default)]
    subscription: String,
    #[serde(default)]
    state: String,
    /// Exact or a glob, as `herald deliveries list --event-type`.
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Where the page begins (newest first): `seq:subscription` of the
    /// previous page's last row.
    #[serde(default)]
    before: String,
}

pub(super) fn parse_time(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").map(|t| t.and_utc())
        })
        .map(Some)
        .map_err(|_| {
            ConsoleError::BadRequest(format!(
                "{field}: `{text}` is not a time (write 2026-03-01T12:00 or RFC 3339, UTC)"
            ))
        })
}

pub(super) async fn deliveries(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<DeliveryQuery>,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let state = match q.state.as_str() {
        "" => None,
        s => Some(DeliveryState::parse(s).ok_or_else(|| {
            ConsoleError::BadRequest(format!("state: `{s}` is not a delivery state"))
        })?),
    };
    let before = q
        .before
        .split_once(':')
        .and_then(|(seq, sub)| Some((seq.parse::<i64>().ok()?, sub.to_owned())));
    let filter = DeliveryFilter {
        subscription: (!q.subscription.is_empty()).then(|| q.subscription.clone()),
        event_id: None,
        state,
        event_types: event_types_matching(&q.event_type)
            .map_err(|e| ConsoleError::BadRequest(format!("event_type: {e}")))?,
        since: parse_time("since", &q.since)?,
        until: parse_time("until", &q.until)?,
        newest_first: true,
        before,
        limit: Some(DELIVERY_PAGE + 1),
    };
    let mut rows = console.parts().store.list_deliveries(&filter).await?;
    let next = (rows.len() > DELIVERY_PAGE).then(|| {
        rows.truncate(DELIVERY_PAGE);
        rows.last()
            .map(|r| format!("{}:{}", r.event_seq, r.subscription))
            .unwrap_or_default()
    });
    let names: Vec<String> = console
        .parts()
        .registry
        .current()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let context = json!({
        "deliveries": rows.iter().map(delivery_view).collect::<Vec<_>>(),
        "filter": {"subscription": q.subscription, "state": q.state, "event_type": q.event_type, "since": q.since, "until": q.until},
        "next": next,
        "names": names,
        "states": ["pending", "delivered", "failed", "dead", "suppressed"],
        "event_types": EventType::ALL.map(EventType::as_str),
    });
    console.render(
        "deliveries.html",
        page(&viewer, "Deliveries", "deliveries", context),
    )
}

pub(super) async fn projects(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Html<String>, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    let versions = console.parts().store.project_versions().await?;
    let mut projects: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for v in versions {
        let data = &v.envelope["data"];
        projects
            .entry(v.project_id.clone())
            .or_default()
            .push(json!({
                "event_id": v.event_id,
                "event_type": v.event_type,
                "received_at": time_text(Some(v.received_at)),
                "project_name": data["project_name"],
                "snapshot_tag": data["snapshot_tag"],
                "user": data["user"],
                "model_changes": data["model_changes"],
            }));
    }
    let projects: Vec<Value> = projects
        .into_iter()
        .map(|(id, versions)| json!({"project_id": id, "versions": versions}))
        .collect();
    let context = json!({ "projects": projects });
    console.render(
        "projects.html",
        page(&viewer, "Projects", "projects", context),
    )
}

/// A stored project document, as the XML it arrived as.
pub(super) async fn document(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
) -> Result<Response, ConsoleError> {
    viewer(&console, &headers).await?;
    let xml = console
        .parts()
        .store
        .document(&event_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no document for event `{event_id}`")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/xml".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.xml\"", sanitize(&event_id)),
            ),
        ],
        xml,
    )
        .into_response())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
