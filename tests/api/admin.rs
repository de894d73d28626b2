//! The admin API: the delivery log, redelivery, replay and dead retries.

use std::time::Duration;

use herald::api::pb::{self, admin_service_client::AdminServiceClient};
use herald::api::timestamp_to_proto;
use herald::clock::Clock;
use tonic::transport::Channel;

use crate::helpers::{app_with_receiver, Reply, TestApp};

async fn admin(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(app.channel().await)
}

fn ids(receiver: &crate::helpers::Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn replay_of_a_time_range_sends_exactly_the_events_in_it_again() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    let hour = Duration::from_secs(3600);
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(hour);
    let from = app.clock.now();
    app.start_batch("ev-2", "b-2", "sales").await;
    app.start_batch("ev-3", "b-3", "sales").await;
    app.advance(hour);
    let to = app.clock.now();
    app.start_batch("ev-4", "b-4", "sales").await;
    app.deliver().await;
    assert_eq!(ids(&receiver), ["ev-1", "ev-2", "ev-3", "ev-4"]);

    let reply = admin(&app)
        .await
        .replay(pb::ReplayRequest {
            subscription: "etl".into(),
            since: Some(timestamp_to_proto(from)),
            until: Some(timestamp_to_proto(to)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.enqueued, 2);
    app.deliver().await;
    assert_eq!(ids(&receiver)[4..], ["ev-2", "ev-3"]);

    let unknown = admin(&app)
        .await
        .replay(pb::ReplayRequest {
            subscription: "nope".into(),
            since: Some(timestamp_to_proto(from)),
            until: None,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let no_since = admin(&app)
        .await
        .replay(pb::ReplayRequest {
            subscription: "etl".into(),
            since: None,
            until: None,
        })
        .await
        .unwrap_err();
    assert!(no_since.message().contains("since"));
}

#[tokio::test]
async fn a_dead_delivery_redelivered_once_the_receiver_is_back_is_delivered() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    receiver.always(Reply::Status(503));
    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "sales").await;
    for _ in 0..5 {
        app.deliver().await;
        app.advance(Duration::from_secs(3600));
    }
    let mut client = admin(&app).await;
    let dead = client
        .list_deliveries(pb::ListDeliveriesRequest {
            state: pb::DeliveryState::Dead as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(dead.len(), 2);
    let dead: Vec<_> = dead.into_iter().rev().collect(); // ev-1 first
    assert_eq!(dead[0].event_id, "ev-1");
    let detail = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: dead[0].delivery_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.attempts.len(), 4);
    assert!(detail.attempts.iter().all(|a| a.status_code == 503));
    assert_eq!(detail.attempts.last().unwrap().verdict, "dead");

    receiver.always(Reply::Status(204));
    let again = client
        .redeliver(pb::RedeliverRequest {
            delivery_id: dead[0].delivery_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, pb::DeliveryState::Pending as i32);
    app.deliver().await;
    let after = app.deliveries_of("ev-1").await;
    assert_eq!(after[0].state, herald::store::DeliveryState::Delivered);

    let retried = client
        .retry_dead(pb::RetryDeadRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.retried, 1, "only ev-2 was still dead");
    app.deliver().await;
    assert_eq!(
        app.deliveries_of("ev-2").await[0].state,
        herald::store::DeliveryState::Delivered
    );
}

#[tokio::test]
async fn the_delivery_log_pages_and_names_bad_arguments() {
    let (app, _receiver) = app_with_receiver(r#"["*"]"#).await;
    app.start_batches(0..5).await;
    let mut client = admin(&app).await;
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_deliveries(pb::ListDeliveriesRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.deliveries.into_iter().map(|d| d.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        ["ev-4", "ev-3", "ev-2", "ev-1", "ev-0"],
        "newest first"
    );
    let bad = client
        .list_deliveries(pb::ListDeliveriesRequest {
            state: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("state:"));
    let missing = client
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: "msg_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// Two subscriptions take every event: pages of three split an event's two
/// deliveries, and the order (newest event first, then subscription name,
/// descending) loses and repeats nothing across the split; filters hold.
#[tokio::test]
async fn the_delivery_log_is_newest_first_across_pages_and_subscriptions() {
    let receiver = crate::helpers::Receiver::start().await;
    let url = receiver.url();
    let config = [
        crate::helpers::webhook("alpha", &url, r#"events = ["*"]"#),
        crate::helpers::webhook("beta", &url, r#"events = ["*"]"#),
    ]
    .concat();
    let app = crate::helpers::spawn_app(&config).await;
    app.start_batches(1..=3).await;
    let mut client = admin(&app).await;
    let list = |subscription: &str, token: String| pb::ListDeliveriesRequest {
        subscription: subscription.into(),
        page_size: 3,
        page_token: token,
        ..Default::default()
    };
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .list_deliveries(list("", token))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(
            page.deliveries
                .into_iter()
                .map(|d| format!("{}/{}", d.event_id, d.subscription)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        [
            "ev-3/beta",
            "ev-3/alpha",
            "ev-2/beta",
            "ev-2/alpha",
            "ev-1/beta",
            "ev-1/alpha"
        ]
    );
    assert_eq!(pages, 2, "six rows in pages of three: no empty third page");

    let first = client
        .list_deliveries(list("alpha", String::new()))
        .await
        .unwrap()
        .into_inner();
    let alpha: Vec<_> = first
        .deliveries
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(alpha, ["ev-3", "ev-2", "ev-1"]);
    assert!(first.next_page_token.is_empty(), "exactly one full page");
}

#[tokio::test]
async fn the_cli_lists_dead_deliveries() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    receiver.always(Reply::Status(400));
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "deliveries",
                "list",
                "--state",
                "failed",
                "--json",
                "--server",
                &server,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["event_id"], "ev-1");
    assert_eq!(list[0]["last_status"], 400);
}

/// Runs the CLI against the app.
async fn herald_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let server = app.addr.to_string();
    crate::helpers::herald_cli(args.iter().copied().chain(["--server", server.as_str()])).await
}

fn listed(out: &std::process::Output) -> Vec<String> {
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    list.iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_cli_pages_through_deliveries_and_says_when_more_exist() {
    let (app, _receiver) = app_with_receiver(r#"["aggregate.batch.started"]"#).await;
    app.start_batches(1..=3).await;
    let first = herald_cli(&app, &["deliveries", "list", "--limit", "2", "-o", "json"]).await;
    assert_eq!(listed(&first), ["ev-3", "ev-2"], "newest first");
    let notice = String::from_utf8_lossy(&first.stderr).trim_end().to_owned();
    let token = notice
        .strip_prefix("more results: add --page-token ")
        .and_then(|rest| rest.strip_suffix(" for the next page, or --all"))
        .unwrap_or_else(|| panic!("{notice}"));

    let next = [
        "deliveries",
        "list",
        "--limit",
        "2",
        "--page-token",
        token,
        "--json",
    ];
    let second = herald_cli(&app, &next).await;
    assert_eq!(listed(&second), ["ev-1"]);
    assert!(second.stderr.is_empty(), "the last page says nothing more");

    let all = herald_cli(
        &app,
        &["deliveries", "list", "--limit", "1", "--all", "--json"],
    )
    .await;
    assert_eq!(listed(&all), ["ev-3", "ev-2", "ev-1"]);
    assert!(all.stderr.is_empty());

    let table = herald_cli(&app, &["deliveries", "list", "--limit", "1"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text.lines().next().unwrap_or_default();
    assert!(header.contains("NEXT ATTEMPT"), "{text}");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(
        rows[0].contains("pending") && rows[0].contains('Z'),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&table.stderr).starts_with("more results: "));
}

/// "Start listen again": pending deliveries go now, not at their next
/// scheduled attempt.
#[tokio::test]
async fn the_cli_sends_pending_deliveries_now() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.started"]"#).await;
    receiver.script([Reply::Status(503)]);
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    assert_eq!(app.deliver().await, 0, "the retry waits for its schedule");

    let out = herald_cli(
        &app,
        &["deliveries", "retry", "--pending", "--subscription", "etl"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "ok: 1 pending deliveries are due now",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.deliver().await;
    assert_eq!(receiver.received().len(), 2);
    let rows = app.deliveries_of("ev-1").await;
    assert_eq!(rows[0].last_status, Some(204));

    let usage = herald_cli(&app, &["deliveries", "retry"]).await;
    assert_eq!(
        usage.status.code(),
        Some(1),
        "--pending or --dead is required"
    );
}

/// (event type, event id) of each delivery the log lists for `event_type`.
async fn log_of_type(
    app: &TestApp,
    event_type: &str,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let request = pb::ListDeliveriesRequest {
        event_type: event_type.into(),
        ..Default::default()
    };
    let reply = admin(app).await.list_deliveries(request).await?;
    Ok(reply
        .into_inner()
        .deliveries
        .into_iter()
        .map(|d| (d.event_type, d.event_id))
        .collect())
}

#[tokio::test]
async fn the_delivery_log_filters_by_an_exact_event_type_or_a_glob() {
    let (app, _receiver) = app_with_receiver(r#"["*"]"#).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "stock").await;
    app.start_batch("ev-3", "b-3", "hr").await;
    app.succeed_batch("ev-4", "b-3", "hr").await;
    let pair = |t: &str, id: &str| (t.to_owned(), id.to_owned());
    assert_eq!(
        log_of_type(&app, "aggregate.batch.started").await.unwrap(),
        [
            pair("aggregate.batch.started", "ev-3"),
            pair("aggregate.batch.started", "ev-1")
        ]
    );
    let glob = log_of_type(&app, "aggregate.batch.*").await.unwrap();
    let glob_ids: Vec<&str> = glob.iter().map(|(_, id)| id.as_str()).collect();
    for id in ["ev-1", "ev-2", "ev-3", "ev-4"] {
        assert!(glob_ids.contains(&id), "{id} in {glob:?}");
    }
    assert!(glob.iter().all(|(t, _)| t.starts_with("aggregate.batch.")));
    assert_eq!(
        log_of_type(&app, "*.failed").await.unwrap(),
        [pair("aggregate.batch.failed", "ev-2")]
    );
    assert!(log_of_type(&app, "schema.published")
        .await
        .unwrap()
        .is_empty());
    assert!(log_of_type(&app, "").await.unwrap().len() >= glob.len());

    let unknown = log_of_type(&app, "aggregate.batch.exploded")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("event_type"), "{unknown:?}");
}
