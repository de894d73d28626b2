//! Ordered delivery (`ordering = "cube" | "batch"`) and rate limits
//! (`rate_limit = "N/s"`), against a receiver that fails the first attempt
//! of every `started` and notes when each request arrived.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use herald::api::pb::{self, subscription_service_client::SubscriptionServiceClient};
use herald::clock::Clock;
use tonic::Code;

use crate::helpers::{eventually, herald_cli, spawn_app, webhook, Spawn, TestApp};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    /// `started` or `succeeded`, from the event type.
    kind: String,
    batch: String,
    pub(crate) at: Instant,
    answered: u16,
}

/// Fails the first attempt of every `started` (503); with `dead_batch`,
/// every attempt of that batch's `started`.
#[derive(Clone, Default)]
pub(crate) struct FlakyReceiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    seen: Arc<Mutex<HashSet<String>>>,
    dead_batch: Arc<Mutex<Option<String>>>,
}

impl FlakyReceiver {
    pub(crate) async fn start() -> (FlakyReceiver, String) {
        let receiver = FlakyReceiver::default();
        let state = receiver.clone();
        let app = Router::new().fallback(any(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { StatusCode::from_u16(state.answer(&headers, &body)).unwrap() }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn answer(&self, headers: &HeaderMap, body: &[u8]) -> u16 {
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        let kind = event["type"].as_str().unwrap_or("");
        let kind = kind.rsplit('.').next().unwrap_or("").to_owned();
        let batch = event["data"]["batch_id"].as_str().unwrap_or("").to_owned();
        let id = headers["webhook-id"].to_str().unwrap().to_owned();
        let first = self.seen.lock().unwrap().insert(id);
        let doomed = self.dead_batch.lock().unwrap().as_deref() == Some(batch.as_str());
        let answered = match kind == "started" && (first || doomed) {
            true => 503,
            false => 204,
        };
        self.arrivals.lock().unwrap().push(Arrival {
            kind,
            batch,
            at: Instant::now(),
            answered,
        });
        answered
    }

    /// `kind:batch` of each request answered 2xx, in arrival order.
    pub(crate) fn delivered(&self) -> Vec<String> {
        let arrivals = self.arrivals.lock().unwrap();
        arrivals
            .iter()
            .filter(|a| a.answered == 204)
            .map(|a| format!("{}:{}", a.kind, a.batch))
            .collect()
    }

    /// Whether each batch's `succeeded` came after its `started` was
    /// answered 2xx (a batch missing either counts as out of order).
    pub(crate) fn in_order(&self, batches: &[String]) -> bool {
        let delivered = self.delivered();
        let at = |what: String| delivered.iter().position(|d| *d == what);
        batches.iter().all(
            |b| match (at(format!("started:{b}")), at(format!("succeeded:{b}"))) {
                (Some(started), Some(succeeded)) => started < succeeded,
                _ => false,
            },
        )
    }

    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// Subscription `etl` for the batch events, retried after 10 s (and
/// once more after a minute), with `extra` lines.
async fn app_with(ordering: &str, url: &str, extra: &str) -> TestApp {
    app_retrying(ordering, url, "[\"10s\", \"1m\"]", extra).await
}

async fn app_retrying(ordering: &str, url: &str, retries: &str, extra: &str) -> TestApp {
    spawn_app(&format!(
        "[[webhooks]]\nname = \"etl\"\nurl = \"{url}\"\nsecret_env = \"ETL_SECRET\"\n\
         events = [\"aggregate.batch.*\"]\nretry_schedule = {retries}\n\
         ordering = \"{ordering}\"\n{extra}"
    ))
    .await
}

#[tokio::test]
async fn with_cube_ordering_a_succeeded_waits_for_its_retried_started_and_other_cubes_do_not() {
    let (receiver, url) = FlakyReceiver::start().await;
    let app = app_with("cube", &url, "").await;
    app.start_batch("e1", "b1", "sales").await;
    // A completion whose start Herald never saw: another cube, no retry.
    app.succeed_batch("e2", "b2", "stock").await;
    app.succeed_batch("e3", "b1", "sales").await;
    app.deliver().await;
    // The failed `started` waits for its retry; its `succeeded` waits for
    // it, while the other cube's delivery went out.
    assert_eq!(receiver.delivered(), ["succeeded:b2"]);
    // Past the first retry with its jitter, short of the second.
    app.advance(Duration::from_secs(20));
    app.deliver().await;
    assert_eq!(
        receiver.delivered(),
        ["succeeded:b2", "started:b1", "succeeded:b1"]
    );
    assert!(receiver.in_order(&["b1".to_owned()]));
}

#[tokio::test]
async fn without_ordering_a_succeeded_overtakes_its_retried_started() {
    let (receiver, url) = FlakyReceiver::start().await;
    let app = app_with("none", &url, "").await;
    app.start_batch("e1", "b1", "sales").await;
    app.succeed_batch("e2", "b1", "sales").await;
    app.deliver().await;
    assert_eq!(receiver.delivered(), ["succeeded:b1"]);
}

#[tokio::test]
async fn a_dead_delivery_releases_the_next_one_and_its_report_says_so() {
    let (receiver, url) = FlakyReceiver::start().await;
    *receiver.dead_batch.lock().unwrap() = Some("b1".to_owned());
    let app = app_retrying("cube", &url, "[\"10s\"]", "").await;
    app.start_batch("e1", "b1", "sales").await;
    app.succeed_batch("e2", "b1", "sales").await;
    app.deliver().await;
    assert!(receiver.delivered().is_empty());
    // Past the first retry with its jitter, short of the second.
    app.advance(Duration::from_secs(20));
    app.deliver().await;
    // The `started` died after its second attempt; the `succeeded` went.
    assert_eq!(receiver.delivered(), ["succeeded:b1"]);
    let started = app.deliveries_of("e1").await;
    assert_eq!(started[0].state, herald::store::DeliveryState::Dead);
    let now = app.clock.now();
    let events = app
        .store
        .events_received(
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    let report = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e["type"] == "herald.delivery.dead")
        .expect("a dead-delivery report");
    let released = report["data"]["released"].as_str().unwrap_or_default();
    assert!(released.contains("next delivery of this cube"), "{report}");
}

#[tokio::test]
async fn with_batch_ordering_only_the_same_batch_waits() {
    let (receiver, url) = FlakyReceiver::start().await;
    let app = app_with("batch", &url, "").await;
    app.start_batch("e1", "b1", "sales").await;
    // Same cube, another batch (completed, start unseen): not held back.
    app.succeed_batch("e2", "b0", "sales").await;
    app.succeed_batch("e3", "b1", "sales").await;
    app.deliver().await;
    assert_eq!(receiver.delivered(), ["succeeded:b0"]);
    // Past the first retry with its jitter, short of the second.
    app.advance(Duration::from_secs(20));
    app.deliver().await;
    assert_eq!(
        receiver.delivered(),
        ["succeeded:b0", "started:b1", "succeeded:b1"]
    );
}

#[tokio::test]
async fn a_rate_limit_holds_attempts_back_until_tokens_come_and_loses_none() {
    let (receiver, url) = FlakyReceiver::start().await;
    let app = app_with("none", &url, "rate_limit = \"5/s\"\nmax_in_flight = 64").await;
    for i in 0..12 {
        app.succeed_batch(&format!("e{i}"), &format!("b{i}"), "sales")
            .await;
    }
    app.deliver().await;
    // The burst: five, then nothing until the clock moves.
    assert_eq!(receiver.delivered().len(), 5);
    app.advance(Duration::from_millis(400));
    app.deliver().await;
    assert_eq!(receiver.delivered().len(), 7);
    app.advance(Duration::from_secs(1));
    app.deliver().await;
    assert_eq!(receiver.delivered().len(), 12);
    let mut batches: Vec<String> = receiver.delivered();
    batches.sort();
    batches.dedup();
    assert_eq!(batches.len(), 12, "each delivered once");
    // The wait is kept (from the first throttled claim to the last
    // claim that got tokens) and shown with the subscription.
    let mut client = SubscriptionServiceClient::new(app.channel().await);
    let info = client
        .get_subscription(pb::SubscriptionName { name: "etl".into() })
        .await
        .unwrap()
        .into_inner();
    let spec = info.spec.unwrap();
    assert_eq!(spec.rate_limit, "5/s");
    assert_eq!(info.rate_limit_waited, "1400ms");
    let server = format!("http://{}", app.addr);
    let out = herald_cli(["subs", "get", "etl", "--json", "--server", &server]).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["rate_limit"], "5/s");
    assert_eq!(shown["rate_limit_waited"], "1400ms");
    assert_eq!(shown["ordering"], "none");
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_rate_limit_wait_seconds_total{")
                && l.contains("subscription=\"etl\"")
                && l.ends_with("} 1.4")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rate_limit_spaces_real_arrivals_with_the_background_dispatcher() {
    let (receiver, url) = FlakyReceiver::start().await;
    let app = Spawn {
        webhooks: webhook(
            "etl",
            &url,
            "events = [\"aggregate.batch.succeeded\"]\nrate_limit = \"10/s\"\nmax_in_flight = 64",
        ),
        background: true,
        ..Spawn::default()
    }
    .start()
    .await;
    // The injected clock follows real time, so the bucket refills.
    let clock = app.clock.clone();
    let ticking = tokio::spawn(async move {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            clock.advance(chrono::Duration::from_std(last.elapsed()).unwrap());
            last = Instant::now();
        }
    });
    let began = Instant::now();
    for i in 0..25 {
        app.succeed_batch(&format!("e{i}"), &format!("b{i}"), "sales")
            .await;
    }
    let all = eventually(Duration::from_secs(20), || receiver.delivered().len() >= 25).await;
    ticking.abort();
    assert!(all, "got {} of 25", receiver.delivered().len());
    // A burst of 10, then 10 a second: the last of 25 cannot come before
    // 1.5 s (a little slack for rounding to the millisecond).
    let arrivals = receiver.arrivals();
    let last = arrivals.iter().map(|a| a.at).max().unwrap();
    assert!(
        last - began >= Duration::from_millis(1400),
        "{:?}",
        last - began
    );
    let within_first_second = arrivals
        .iter()
        .filter(|a| a.at - began < Duration::from_millis(900))
        .count();
    assert!(
        within_first_second <= 19,
        "{within_first_second} in the first 0.9 s"
    );
    assert_eq!(receiver.delivered().len(), 25, "none twice, none lost");
}

#[tokio::test]
async fn bad_ordering_and_rate_limits_are_refused_naming_the_spec_field() {
    let app = spawn_app("").await;
    let mut client = SubscriptionServiceClient::new(app.channel().await);
    let base = || pb::SubscriptionSpec {
        name: "limited".into(),
        kind: pb::SubscriptionKind::Webhook as i32,
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["*".into()],
        ..Default::default()
    };
    let refusals = [
        (
            pb::SubscriptionSpec {
                rate_limit: "0/s".into(),
                ..base()
            },
            "spec.rate_limit",
        ),
        (
            pb::SubscriptionSpec {
                rate_limit: "fast".into(),
                ..base()
            },
            "spec.rate_limit",
        ),
        (
            pb::SubscriptionSpec {
                ordering: "x".into(),
                ..base()
            },
            "spec.ordering",
        ),
    ];
    for (spec, field) in refusals {
        let status = client
            .create_subscription(pb::CreateSubscriptionRequest { spec: Some(spec) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let created = client
        .create_subscription(pb::CreateSubscriptionRequest {
            spec: Some(pb::SubscriptionSpec {
                ordering: "cube".into(),
                rate_limit: "600/m".into(),
                ..base()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let spec = created.subscription.unwrap().spec.unwrap();
    assert_eq!(
        (spec.ordering.as_str(), spec.rate_limit.as_str()),
        ("cube", "600/m")
    );
}
