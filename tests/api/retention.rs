//! Retention: data is aged with the manual clock, pruned by hand, and what
//! remains in the database file is counted exactly.

use std::time::Duration;

use herald::api::pb;

use crate::helpers::{dead_address, spawn_app, webhook, Receiver, TestApp};

const DAY: Duration = Duration::from_secs(86_400);

async fn count(app: &TestApp, table: &str) -> i64 {
    app.count_rows(table).await
}

/// Rows of (deliveries, attempts, events, documents, batches).
async fn counts(app: &TestApp) -> [i64; 5] {
    let mut out = [0; 5];
    for (i, table) in ["deliveries", "attempts", "events", "documents", "batches"]
        .iter()
        .enumerate()
    {
        out[i] = count(app, table).await;
    }
    out
}

async fn publish(app: &TestApp, event_id: &str) {
    let xml = format!("<project name=\"Finance\" v=\"{event_id}\"/>");
    let request = app.published(event_id, xml.into_bytes());
    app.ingest.clone().project_event(request).await.unwrap();
}

async fn app_with_retention(receiver: &Receiver) -> TestApp {
    let dead = format!("http://{}/hook", dead_address().await);
    let config = format!(
        "{}{}[retention]\ndeliveries = \"30d\"\nevents = \"90d\"\n\
         documents_per_project = 2\nbatches = \"400d\"\n",
        webhook("etl", &receiver.url(), "events = [\"aggregate.batch.*\"]"),
        webhook("slow", &dead, "events = [\"aggregate.batch.failed\"]"),
    );
    spawn_app(&config).await
}

#[tokio::test]
async fn retention_removes_exactly_what_is_older_than_its_limits() {
    let receiver = Receiver::start().await;
    let app = app_with_retention(&receiver).await;
    app.start_batch("e-s1", "b-1", "sales").await;
    app.succeed_batch("e-ok1", "b-1", "sales").await;
    // Its delivery to `slow` stays pending: the receiver is down.
    app.fail_batch("e-f2", "b-2", "stock").await;
    for id in ["p-1", "p-2", "p-3"] {
        publish(&app, id).await;
    }
    app.deliver().await;
    assert_eq!(counts(&app).await, [4, 4, 6, 3, 2]);

    // Today: only documents beyond the newest two of the project go.
    let pruned = app.prune().await;
    assert_eq!(pruned.documents, 1);
    assert_eq!(counts(&app).await, [4, 4, 6, 2, 2]);
    assert!(app.store.document("p-1").await.unwrap().is_none());
    assert!(app.store.document("p-3").await.unwrap().is_some());

    // A month on: finished deliveries and their attempts go; the pending
    // one (and its attempt) stays.
    app.advance(31 * DAY);
    let pruned = app.prune().await;
    assert_eq!((pruned.deliveries, pruned.attempts), (3, 3));
    assert_eq!(counts(&app).await, [1, 1, 6, 2, 2]);
    assert_eq!(app.deliveries_of("e-f2").await.len(), 1);

    // A quarter on: events nothing refers to go; the one with a pending
    // delivery and those of the kept documents stay.
    app.advance(60 * DAY);
    assert_eq!(app.prune().await.events, 3);
    assert_eq!(counts(&app).await, [1, 1, 3, 2, 2]);
    assert!(app.store.document("p-3").await.unwrap().is_some());

    // Past 400 days the batch rows go too.
    app.advance(310 * DAY);
    assert_eq!(app.prune().await.batches, 2);
    assert_eq!(counts(&app).await, [1, 1, 3, 2, 0]);

    // Nothing left to prune: a second pass removes nothing.
    assert_eq!(app.prune().await, herald::store::Pruned::default());
}

#[tokio::test]
async fn pruning_many_rows_takes_several_small_steps_and_is_counted_in_metrics() {
    let receiver = Receiver::start().await;
    let app = app_with_retention(&receiver).await;
    let calls = (0..1200).map(|i| {
        let app_ingest = app.ingest.clone();
        let request = pb::BatchStartedRequest {
            meta: app.meta(&format!("e-{i}")),
            batch: Some(crate::helpers::batch_ref(
                &format!("b-{i}"),
                "prod",
                "sales",
            )),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 1,
        };
        tokio::spawn(async move { app_ingest.clone().batch_started(request).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    app.deliver().await;
    assert_eq!(count(&app, "deliveries").await, 1200);

    app.advance(31 * DAY);
    let pruned = app.prune().await;
    assert_eq!((pruned.deliveries, pruned.attempts), (1200, 1200));
    assert_eq!(count(&app, "deliveries").await, 0);
    let metrics = reqwest::get(format!("http://{}/metrics", app.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("herald_pruned_rows_total{")
                && l.ends_with(",kind=\"deliveries\"} 1200")),
        "{metrics}"
    );
}
