//! Stalls and overdue refreshes, driven by the manual clock.

use std::time::Duration;

use herald::api::pb;
use herald::monitor::Findings;

use crate::helpers::{Receiver, Spawn, TestApp};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

async fn app_with(config: &str, receiver: &Receiver) -> TestApp {
    let hook = crate::helpers::webhook("all", &receiver.url(), r#"events = ["aggregate.*"]"#);
    Spawn {
        webhooks: format!("{config}\n{hook}"),
        ..Spawn::default()
    }
    .start()
    .await
}

fn found(stalled: usize, overdue: usize, cleared: usize) -> Findings {
    Findings {
        stalled,
        overdue,
        cleared,
        reminded: 0,
    }
}

#[tokio::test]
async fn a_batch_past_its_configured_allowance_stalls_exactly_once() {
    let receiver = Receiver::start().await;
    let config = "[stalls]\nmax_duration = \"2h\"\nlearn = false\n\
                  [[stalls.rules]]\nenvironments = [\"prod\"]\ncubes = [\"SAL*\"]\nmax_duration = \"30m\"";
    let app = app_with(config, &receiver).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "stock").await;

    app.advance(29 * MINUTE);
    assert_eq!(app.check().await, found(0, 0, 0));
    app.advance(2 * MINUTE);
    assert_eq!(
        app.check().await,
        found(1, 0, 0),
        "sales has a 30 minute rule"
    );
    app.advance(90 * MINUTE);
    assert_eq!(
        app.check().await,
        found(1, 0, 0),
        "stock falls back to the 2 hour default"
    );
    app.advance(10 * HOUR);
    assert_eq!(app.check().await, found(0, 0, 0), "a batch stalls once");
    app.deliver().await;

    let stalled: Vec<_> = receiver
        .received()
        .into_iter()
        .map(|r| r.json())
        .filter(|e| e["type"] == "aggregate.batch.stalled")
        .collect();
    assert_eq!(stalled.len(), 2);
    assert_eq!(stalled[0]["data"]["batch_id"], "b-1");
    assert_eq!(stalled[0]["data"]["state"], "STALLED");
    assert_eq!(stalled[0]["data"]["allowed_duration_ms"], 1_800_000);
    assert_eq!(stalled[0]["source"], "herald");
    let batch = app
        .query
        .clone()
        .get_batch(pb::GetBatchRequest {
            batch_id: "b-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.state, pb::BatchState::Stalled as i32);

    // A completion that arrives later is still recorded and delivered.
    let done = app.succeed_batch("ev-3", "b-1", "sales").await;
    assert_eq!(done.batch.unwrap().state, pb::BatchState::Succeeded as i32);
    assert_eq!(done.deliveries, 1);
}

#[tokio::test]
async fn the_allowance_is_learned_from_the_cube_history() {
    let receiver = Receiver::start().await;
    let config = "[stalls]\nmax_duration = \"off\"\nlearn_factor = 2.0\nlearn_min_samples = 3\nlearn_floor = \"1m\"";
    let app = app_with(config, &receiver).await;
    for (i, minutes) in [10u32, 12, 11].into_iter().enumerate() {
        app.start_batch(&format!("s-{i}"), &format!("h-{i}"), "sales")
            .await;
        app.advance(minutes * MINUTE);
        app.succeed_batch(&format!("d-{i}"), &format!("h-{i}"), "sales")
            .await;
    }
    // History 10, 11, 12 minutes: p95 is 12, twice that 24 minutes.
    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "stock").await;
    app.advance(23 * MINUTE);
    assert_eq!(app.check().await, found(0, 0, 0));
    app.advance(2 * MINUTE);
    assert_eq!(app.check().await, found(1, 0, 0));
    app.advance(100 * HOUR);
    assert_eq!(
        app.check().await,
        found(0, 0, 0),
        "no history and no default: stock never stalls"
    );
}

#[tokio::test]
async fn a_missed_refresh_is_overdue_once_and_clears_with_the_next_success() {
    let receiver = Receiver::start().await;
    let config = "[[schedules]]\nname = \"sales-hourly\"\nenvironment = \"prod\"\ncube = \"sales\"\nevery = \"1h\"\ngrace = \"10m\"";
    let app = app_with(config, &receiver).await;

    app.advance(65 * MINUTE);
    assert_eq!(app.check().await, found(0, 0, 0), "within the grace period");
    app.advance(6 * MINUTE);
    assert_eq!(app.check().await, found(0, 1, 0));
    app.advance(HOUR);
    assert_eq!(app.check().await, found(0, 0, 0), "overdue is raised once");

    app.succeed_batch("ev-1", "b-1", "sales").await;
    assert_eq!(app.check().await, found(0, 0, 1));
    app.advance(HOUR);
    assert_eq!(
        app.check().await,
        found(0, 0, 0),
        "the next hour is not over yet"
    );
    app.advance(11 * MINUTE);
    assert_eq!(
        app.check().await,
        found(0, 1, 0),
        "the next period is overdue again"
    );
    app.deliver().await;

    let overdue: Vec<_> = receiver
        .received()
        .into_iter()
        .map(|r| r.json())
        .filter(|e| e["type"] == "aggregate.refresh.overdue")
        .collect();
    assert_eq!(overdue.len(), 2);
    assert_eq!(overdue[0]["data"]["schedule"], "sales-hourly");
    assert_eq!(
        overdue[0]["data"]["last_success_at"],
        serde_json::Value::Null
    );
    assert_eq!(overdue[0]["subject"], "environments/prod/cubes/sales");
    assert_eq!(
        overdue[1]["data"]["last_success_at"],
        "2026-03-01T14:11:00Z"
    );
}

#[tokio::test]
async fn herald_wait_exits_3_when_the_batch_stalls() {
    let receiver = Receiver::start().await;
    let app = app_with("[stalls]\nmax_duration = \"10m\"\nlearn = false", &receiver).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(11 * MINUTE);
    app.check().await;
    let mut wait = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    wait.args([
        "wait",
        "--server",
        &format!("http://{}", app.addr),
        "--cube",
        "sales",
        "--batch",
        "b-1",
    ]);
    // The server runs on this test's runtime: block another thread.
    let out = tokio::task::spawn_blocking(move || wait.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stalled: batch b-1"));
}

/// Runs one batch of `cube` in `environment` for `minutes`, then ends it
/// (a success unless `fails`).
async fn run_batch(app: &TestApp, (environment, cube): (&str, &str), minutes: u32, fails: bool) {
    let id = format!(
        "{environment}-{cube}-{}",
        app.store.count_events().await.unwrap()
    );
    let batch = Some(crate::helpers::batch_ref(&id, environment, cube));
    let mut ingest = app.ingest.clone();
    ingest
        .batch_started(pb::BatchStartedRequest {
            meta: app.meta(&format!("{id}-start")),
            batch: batch.clone(),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 3,
        })
        .await
        .unwrap();
    app.advance(minutes * MINUTE);
    let end = format!("{id}-end");
    if fails {
        let failed = pb::BatchFailedRequest {
            batch,
            ..app.failed(&end, &id, cube)
        };
        ingest.batch_failed(failed).await.unwrap();
    } else {
        let succeeded = pb::BatchSucceededRequest {
            batch,
            ..app.succeeded(&end, &id, cube)
        };
        ingest.batch_succeeded(succeeded).await.unwrap();
    }
}

/// The monitor reads the history of every cube with a running batch in
/// one statement (per 256 cubes), not one query per running batch: each
/// cube gets its own latest successes, newest first.
#[tokio::test]
async fn the_history_of_many_cubes_is_read_at_once_each_cube_its_own() {
    let app = Spawn::default().start().await;
    let sales = ("prod", "sales");
    for minutes in [10, 11, 12, 13] {
        run_batch(&app, sales, minutes, false).await;
    }
    run_batch(&app, sales, 50, true).await;
    // A completion whose start Herald never saw has no duration.
    app.succeed_batch("unseen", "unseen", "sales").await;
    run_batch(&app, ("prod", "stock"), 7, false).await;
    run_batch(&app, ("test", "sales"), 30, false).await;
    let far = ("prod", "cube-299");
    run_batch(&app, far, 3, false).await;

    let names: Vec<String> = (0..300).map(|i| format!("cube-{i}")).collect();
    let mut cubes: Vec<(&str, &str)> = names.iter().map(|c| ("prod", c.as_str())).collect();
    cubes.extend([
        sales,
        ("prod", "stock"),
        ("test", "sales"),
        ("test", "stock"),
    ]);
    let histories = app.store.recent_durations(&cubes, 3).await.unwrap();

    let minutes = |cube: (&str, &str)| -> Option<Vec<u64>> {
        let key = (cube.0.to_owned(), cube.1.to_owned());
        histories
            .get(&key)
            .map(|h| h.iter().map(|d| d.as_secs() / 60).collect())
    };
    assert_eq!(minutes(sales), Some(vec![13, 12, 11]), "the latest 3");
    assert_eq!(minutes(("prod", "stock")), Some(vec![7]));
    assert_eq!(minutes(("test", "sales")), Some(vec![30]));
    assert_eq!(minutes(far), Some(vec![3]), "past the first 256 cubes");
    assert_eq!(histories.len(), 4, "cubes without successes are absent");
}

/// `herald schedules` says what the monitor would: last success, when the
/// refresh becomes overdue, and whether it is.
#[tokio::test]
async fn herald_schedules_shows_each_schedule_and_whether_it_is_overdue() {
    let receiver = Receiver::start().await;
    let config = "[[schedules]]\nname = \"sales-hourly\"\nenvironment = \"prod\"\ncube = \"sales\"\nevery = \"1h\"\ngrace = \"10m\"\n\n\
                  [[schedules]]\nname = \"stock-daily\"\nenvironment = \"prod\"\ncube = \"stock\"\ncron = \"0 6 * * *\"\ngrace = \"1h\"";
    let app = app_with(config, &receiver).await;
    app.succeed_batch("ev-1", "b-1", "sales").await;
    app.advance(71 * MINUTE);
    app.check().await;

    let server = app.addr.to_string();
    let out = crate::helpers::herald_cli(["schedules", "--server", &server, "-o", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "sales-hourly");
    assert_eq!(list[0]["cadence"], "every 1h");
    assert_eq!(list[0]["grace"], "10m");
    assert_eq!(list[0]["overdue"], true);
    let last = list[0]["last_success_at"].as_str().unwrap();
    let overdue_at =
        chrono::DateTime::parse_from_rfc3339(list[0]["overdue_at"].as_str().unwrap()).unwrap();
    let last_at = chrono::DateTime::parse_from_rfc3339(last).unwrap();
    assert_eq!(overdue_at - last_at, chrono::Duration::minutes(70));
    assert_eq!(list[1]["name"], "stock-daily");
    assert_eq!(list[1]["cadence"], "0 6 * * *");
    assert_eq!(list[1]["last_success_at"], serde_json::Value::Null);
    assert_eq!(list[1]["overdue"], false);
}
