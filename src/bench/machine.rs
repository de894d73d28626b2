//! The machine's own reference, measured at the start of every bench run:
//! what one durable sync costs on the disk the scenarios write to, how
//! many HTTP requests loopback carries with nothing of Herald in the way,
//! and how many ingest calls the gRPC stack alone acks to the ingest
//! scenario's clients. Herald's figures read as a fraction of these, so a
//! slower disk or CPU can be told from a regression.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use tonic::{Request, Response, Status};

use super::harness::ingest;
use super::scenarios::per_second;
use super::{Figure, Sizes};
use crate::api::pb;
use crate::api::pb::ingest_service_server::{IngestService, IngestServiceServer};

/// Bytes written before each sync: one page, as a small commit writes.
const PAGE: usize = 4096;
/// Concurrent HTTP clients: enough to keep both ends of loopback busy.
const HTTP_CLIENTS: usize = 32;

/// The reference figures: sync latency (p50, p99), loopback requests/s and
/// bare gRPC calls/s with the ingest scenario's clients (`sizes`); `quick`
/// measures briefly (it checks the harness, as `--quick` does).
pub async fn reference(sizes: Sizes, quick: bool) -> anyhow::Result<Vec<Figure>> {
    let (syncs, http_for) = match quick {
        true => (50, Duration::from_millis(300)),
        false => (500, Duration::from_secs(2)),
    };
    let mut sync_times = tokio::task::spawn_blocking(move || sync_latencies(syncs)).await??;
    sync_times.sort_by(f64::total_cmp);
    let at = |q: f64| sync_times[((sync_times.len() - 1) as f64 * q).round() as usize];
    let rate = loopback_requests_per_second(http_for).await?;
    let clients = sizes.ingest_clients;
    // Three times the scenario's events: the bare server acks them about
    // three times as fast, so both measure for a similar time.
    let calls = bare_grpc_calls_per_second(clients, 3 * sizes.ingest_events).await?;
    let figure = |metric: &str, unit, value| Figure {
        scenario: "machine",
        metric: metric.to_owned(),
        unit,
        target: "reference",
        values: vec![value],
    };
    Ok(vec![
        figure("write 4 KiB + fdatasync p50", "ms", at(0.5)),
        figure("write 4 KiB + fdatasync p99", "ms", at(0.99)),
        figure("loopback HTTP/1.1 POSTs, 32 clients", "req/s", rate),
        figure(
            &format!("gRPC calls, nothing stored, {clients} clients"),
            "calls/s",
            calls,
        ),
    ])
}

/// Milliseconds of each of `count` page writes followed by a data sync,
/// in a temporary file where the scenarios keep their SQLite files.
fn sync_latencies(count: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("sync-probe"))?;
    let page = [0x5a_u8; PAGE];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// Requests per second a minimal HTTP server on loopback answers to
/// `HTTP_CLIENTS` keep-alive clients posting small bodies for `period`.
async fn loopback_requests_per_second(period: Duration) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = Router::new().route("/", post(|| async { "ok" }));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::builder().http1_only().build()?;
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..HTTP_CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            let (done, answered) = (done.clone(), answered.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let sent = client.post(&url).body(r#"{"ping":1}"#).send().await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(period).await;
    done.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    Ok(answered.load(Ordering::Relaxed) as f64 / elapsed)
}

/// The machine reference each throughput figure is bound by: (its
/// scenario, how its rate's metric begins, how the reference's metric
/// begins, the share's metric).
const BOUNDS: [(&str, &str, &str, &str); 3] = [
    (
        "ingest",
        "events acked",
        "gRPC calls",
        "of bare gRPC calls/s",
    ),
    (
        "delivery",
        "webhooks delivered",
        "loopback HTTP",
        "of loopback HTTP requests/s",
    ),
    (
        "fanout",
        "webhooks delivered",
        "loopback HTTP",
        "of loopback HTTP requests/s",
    ),
];

/// Puts below each throughput figure of `figures` its share of the
/// machine reference it is bound by, one value per run, so the rate reads
/// as a fraction of what this machine carries with nothing of Herald in
/// the way. Scenarios that did not run get no share.
pub fn add_shares(figures: &mut Vec<Figure>) {
    for (scenario, rate, reference, metric) in BOUNDS {
        let found = |scenario: &str, metric: &str| {
            figures
                .iter()
                .position(|f| f.scenario == scenario && f.metric.starts_with(metric))
        };
        let (Some(at), Some(by)) = (found(scenario, rate), found("machine", reference)) else {
            continue;
        };
        let Some(&reference) = figures[by].values.first() else {
            continue;
        };
        let share = Figure {
            scenario: figures[at].scenario,
            metric: metric.to_owned(),
            unit: "%",
            target: "",
            values: figures[at]
                .values
                .iter()
                .map(|v| 100.0 * v / reference)
                .collect(),
        };
        figures.insert(at + 1, share);
    }
}

/// Ingest calls per second that a gRPC server storing nothing acks to
/// `clients` clients sending as the ingest scenario's do (the same harness,
/// `calls` calls): what the gRPC stack and loopback carry by themselves,
/// the ceiling of Herald's own ingest figure on this machine.
async fn bare_grpc_calls_per_second(clients: usize, calls: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServiceServer::new(Acker))
            .serve_with_incoming(crate::api::incoming(listener)),
    );
    let elapsed = ingest(addr, clients, calls, "reference").await;
    server.abort();
    Ok(per_second(calls, elapsed?))
}

/// Acks every ingest call at once with an empty reply, storing nothing.
struct Acker;

/// Implements every RPC of `IngestService` for [`Acker`]: one empty ack.
macro_rules! ack_every_call {
    ($($rpc:ident($request:ident)),* $(,)?) => {
        #[tonic::async_trait]
        impl IngestService for Acker {
            $(
                async fn $rpc(
                    &self,
                    _: Request<pb::$request>,
                ) -> Result<Response<pb::IngestReply>, Status> {
                    Ok(Response::new(pb::IngestReply::default()))
                }
            )*
        }
    };
}

ack_every_call!(
    batch_started(BatchStartedRequest),
    batch_succeeded(BatchSucceededRequest),
    batch_failed(BatchFailedRequest),
    environment_created(EnvironmentRequest),
    environment_updated(EnvironmentRequest),
    environment_deleted(EnvironmentDeletedRequest),
    schema_published(SchemaRequest),
    schema_unpublished(SchemaRequest),
    project_event(ProjectEventRequest),
);
