//! The operations HTTP port: `/metrics` (Prometheus text), `/healthz` (the
//! process is up) and `/readyz` (the database answers).

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
}

pub fn routes(store: Store, metrics: Metrics, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ops {
            store,
            metrics,
            clock,
        })
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
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(gauges),
    )
}

async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    match ops.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}\n"),
        ),
    }
}
