//! The operations HTTP port: `/metrics` (Prometheus text), `/healthz` (the
//! process is up), `/readyz` (the database answers and takes writes), and
//! the admin console on every other path (`crate::console`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::clock::Clock;
use crate::metrics::{Metrics, OutboxGauges};
use crate::store::Store;

#[derive(Clone)]
struct Ops {
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// Every sample carries `replica="…"`.
    replica: Arc<str>,
}

pub fn routes(
    store: Store,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    replica: &str,
    console: crate::console::Console,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ops {
            store,
            metrics,
            clock,
            replica: replica.into(),
        })
        .merge(crate::console::routes(console))
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    let gauges = match ops.store.outbox_gauges().await {
        Ok((pending, oldest)) => OutboxGauges {
            pending,
            oldest_pending_age: oldest.and_then(|at| (ops.clock.now() - at).to_std().ok()),
        },
        Err(e) => {
            tracing::warn!(error = %e, "reading outbox gauges failed");
            OutboxGauges::default()
        }
    };
    let mut text = ops.metrics.render(gauges);
    match ops.store.scrape_gauges().await {
        Ok(more) => text.push_str(&ops.metrics.render_scrape(&more, ops.clock.now())),
        Err(e) => tracing::warn!(error = %e, "reading per-subscription gauges failed"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::label_every_sample(&text, "replica", &ops.replica),
    )
}

/// How long readiness waits for the database to answer.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when the database answers and takes writes. While the last write
/// failed for lack of space (or a read-only file), each check probes with a
/// small write, so readiness returns by itself when space does.
async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    // A database that does not answer at all must not hold the probe.
    let answered = tokio::time::timeout(PING_TIMEOUT, ops.store.ping()).await;
    let pinged = answered.unwrap_or_else(|_| {
        Err(crate::store::StoreError::Unwritable(
            "the database did not answer in time".to_owned(),
        ))
    });
    if let Err(e) = pinged {
        return unavailable(format!("database unavailable: {e}"));
    }
    if ops.store.write_failure().is_some() {
        if let Err(e) = ops.store.probe_write().await {
            let reason = e.unwritable_reason().map(str::to_owned);
            return unavailable(format!(
                "the store cannot write: {}",
                reason.unwrap_or_else(|| e.to_string())
            ));
        }
    }
    (StatusCode::OK, "ready\n".to_owned())
}
