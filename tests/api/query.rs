//! Watching batch changes and waiting for a refresh, over gRPC and with
//! `herald wait`.

use std::process::Command;
use std::time::Duration;

use herald::api::pb::{self, AwaitOutcome};
use tonic::Streaming;

use crate::helpers::{spawn_app, TestApp};

async fn watch(app: &TestApp, cube: &str, cursor: &str) -> Streaming<pb::BatchChange> {
    app.query
        .clone()
        .watch_batches(pb::WatchBatchesRequest {
            cube_id: cube.into(),
            cursor: cursor.into(),
            ..Default::default()
        })
        .await
        .expect("watch starts")
        .into_inner()
}

/// The next message, waiting at most 10 s (a bounded wait, not a sleep).
async fn next(stream: &mut Streaming<pb::BatchChange>) -> pb::BatchChange {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a change arrives")
        .expect("stream is healthy")
        .expect("stream is open")
}

fn summary(change: &pb::BatchChange) -> (String, String, i32) {
    let batch = change.batch.as_ref().unwrap();
    (
        change.event_type.clone(),
        batch.batch_id.clone(),
        batch.state,
    )
}

#[tokio::test]
async fn a_watcher_subscribed_before_the_start_sees_started_then_succeeded() {
    let app = spawn_app("").await;
    app.start_batch("ev-0", "b-0", "other").await;
    let mut stream = watch(&app, "sales", "").await;

    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;

    let started = next(&mut stream).await;
    let succeeded = next(&mut stream).await;
    assert_eq!(
        summary(&started),
        (
            "aggregate.batch.started".into(),
            "b-1".into(),
            pb::BatchState::Running as i32
        )
    );
    assert_eq!(
        summary(&succeeded),
        (
            "aggregate.batch.succeeded".into(),
            "b-1".into(),
            pb::BatchState::Succeeded as i32
        )
    );
    assert!(!started.snapshot);
    let (a, b): (i64, i64) = (
        started.cursor.parse().unwrap(),
        succeeded.cursor.parse().unwrap(),
    );
    assert!(a < b);
}

#[tokio::test]
async fn a_watch_starts_with_the_current_state_of_matching_batches() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "sales").await;
    let mut stream = watch(&app, "sales", "").await;
    let first = next(&mut stream).await;
    let second = next(&mut stream).await;
    assert!(first.snapshot && second.snapshot);
    let states: Vec<_> = [&first, &second].iter().map(|c| summary(c).2).collect();
    assert_eq!(
        states,
        [
            pb::BatchState::Running as i32,
            pb::BatchState::Failed as i32
        ]
    );
    app.succeed_batch("ev-3", "b-1", "sales").await;
    assert_eq!(
        summary(&next(&mut stream).await).0,
        "aggregate.batch.succeeded"
    );
}

#[tokio::test]
async fn a_watcher_that_reconnects_with_its_cursor_misses_nothing() {
    let app = spawn_app("").await;
    let mut stream = watch(&app, "sales", "").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let seen = next(&mut stream).await;
    drop(stream);

    // While disconnected: two changes, plus a quiet repeat that is no change.
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.succeed_batch("ev-2b", "b-1", "sales").await;
    app.start_batch("ev-3", "b-2", "sales").await;

    let mut resumed = watch(&app, "sales", &seen.cursor).await;
    let one = next(&mut resumed).await;
    let two = next(&mut resumed).await;
    assert_eq!(summary(&one).0, "aggregate.batch.succeeded");
    assert_eq!(
        summary(&two),
        (
            "aggregate.batch.started".into(),
            "b-2".into(),
            pb::BatchState::Running as i32
        )
    );
    assert!(!one.snapshot);
}

#[tokio::test]
async fn await_returns_the_outcome_of_the_next_batch_of_a_cube() {
    let app = spawn_app("").await;
    let mut query = app.query.clone();
    let after = app.meta("x").unwrap().occurred_at;
    let waiting = tokio::spawn(async move {
        query
            .await_batch(pb::AwaitBatchRequest {
                target: Some(pb::await_batch_request::Target::Cube(pb::CubeAfter {
                    environment_id: "prod".into(),
                    cube_id: "sales".into(),
                    after,
                })),
                timeout: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner()
    });
    app.start_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-1", "sales").await;
    let reply = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.outcome, AwaitOutcome::Failed as i32);
    assert_eq!(reply.batch.unwrap().batch_id, "b-1");
}

#[tokio::test]
async fn await_times_out_with_the_batch_as_it_stands() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let reply = app
        .query
        .clone()
        .await_batch(pb::AwaitBatchRequest {
            target: Some(pb::await_batch_request::Target::BatchId("b-1".into())),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outcome, AwaitOutcome::TimedOut as i32);
    assert_eq!(reply.batch.unwrap().state, pb::BatchState::Running as i32);

    let missing_target = app
        .query
        .clone()
        .await_batch(pb::AwaitBatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(missing_target.code(), tonic::Code::InvalidArgument);
    assert!(missing_target.message().contains("target"));
}

#[tokio::test]
async fn the_latest_batch_of_a_cube_and_a_time_range_can_be_read() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(Duration::from_secs(3600));
    let middle = app.meta("x").unwrap().occurred_at;
    app.start_batch("ev-2", "b-2", "sales").await;
    app.advance(Duration::from_secs(3600));
    let end = app.meta("x").unwrap().occurred_at;
    app.start_batch("ev-3", "b-3", "sales").await;
    let mut query = app.query.clone();

    let latest = query
        .get_latest_batch(pb::GetLatestBatchRequest {
            cube_id: "sales".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.batch_id, "b-3");
    let ranged = query
        .list_batches(pb::ListBatchesRequest {
            since: middle,
            until: end,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = ranged.batches.iter().map(|b| b.batch_id.as_str()).collect();
    assert_eq!(ids, ["b-2"]);
    let none = query
        .get_latest_batch(pb::GetLatestBatchRequest {
            cube_id: "nothing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::NotFound);
}

/// Runs `herald wait` against the app; returns (exit code, stdout).
async fn herald_wait(app: &TestApp, args: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .arg("wait")
        .args(["--server", &format!("http://{}", app.addr)])
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

#[tokio::test]
async fn herald_wait_exits_0_when_the_refresh_succeeds() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let waiting = herald_wait(
        &app,
        &[
            "--cube",
            "sales",
            "--environment",
            "prod",
            "--after",
            "2026-03-01T00:00:00Z",
            "--timeout",
            "30s",
        ],
    );
    let (code, line) = tokio::join!(waiting, async {
        app.succeed_batch("ev-2", "b-1", "sales").await;
    })
    .0;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("succeeded: batch b-1 of cube SALES (prod)"),
        "{line}"
    );
}

#[tokio::test]
async fn herald_wait_exits_2_when_the_refresh_failed() {
    let app = spawn_app("").await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    let (code, line) = herald_wait(&app, &["--cube", "sales", "--batch", "b-1"]).await;
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("failed: batch b-1") && line.ends_with("out of disk"),
        "{line}"
    );
}

#[tokio::test]
async fn herald_wait_exits_3_when_it_times_out() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let (code, line) = herald_wait(
        &app,
        &["--cube", "sales", "--batch", "b-1", "--timeout", "300ms"],
    )
    .await;
    assert_eq!(code, 3, "{line}");
    assert!(
        line.starts_with("timed out after 300ms: batch b-1"),
        "{line}"
    );
    let (code, line) = herald_wait(
        &app,
        &[
            "--cube",
            "stock",
            "--after",
            "2026-03-01T00:00:00Z",
            "--timeout",
            "300ms",
        ],
    )
    .await;
    assert_eq!(code, 3);
    assert!(line.contains("no batch of cube stock"), "{line}");
}

#[tokio::test]
async fn herald_wait_exits_1_when_unreachable_or_misused() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["wait", "--cube", "sales", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Herald"));
    let usage = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["wait", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(1));
}

#[tokio::test]
async fn herald_wait_prints_the_outcome_as_json_even_when_no_batch_came() {
    let app = spawn_app("").await;
    let args = ["--cube-id", "stock", "--timeout", "300ms", "-o", "json"];
    let (code, out) = herald_wait(&app, &args).await;
    assert_eq!(code, 3, "{out}");
    let document: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        document,
        serde_json::json!({"outcome": "timed_out", "batch": null})
    );

    app.fail_batch("ev-1", "b-1", "sales").await;
    let (code, out) =
        herald_wait(&app, &["--cube-id", "sales", "--batch-id", "b-1", "--json"]).await;
    assert_eq!(code, 2, "{out}");
    let document: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(document["outcome"], "failed");
    assert_eq!(document["batch"]["state"], "failed");
}

#[tokio::test]
async fn herald_wait_refuses_a_batch_of_another_cube_and_reports_a_missing_one() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let server = app.addr.to_string();
    let args = [
        "wait",
        "--server",
        &server,
        "--cube-id",
        "stock",
        "--batch-id",
        "b-1",
    ];
    let out = crate::helpers::herald_cli(args).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: --batch-id b-1 is a batch of cube sales, not of --cube-id stock"
    );

    let (code, line) = herald_wait(
        &app,
        &[
            "--cube-id",
            "sales",
            "--batch-id",
            "b-404",
            "--timeout",
            "300ms",
        ],
    )
    .await;
    assert_eq!(code, 3);
    assert_eq!(
        line,
        "timed out: batch b-404 of cube sales was not seen within 300ms"
    );
}

#[tokio::test]
async fn herald_batches_latest_shows_the_newest_batch_of_a_cube() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(Duration::from_secs(60));
    app.start_batch("ev-2", "b-2", "sales").await;
    let server = app.addr.to_string();
    let out = crate::helpers::herald_cli([
        "batches",
        "latest",
        "--cube",
        "sales",
        "--environment",
        "prod",
        "--server",
        &server,
        "-o",
        "json",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(batch["batch_id"], "b-2");
    assert_eq!(batch["state"], "running");
}

/// On a terminal `herald wait` draws a live line (elapsed, state,
/// aggregates built); piped, or with `-o json`, the output is unchanged.
#[tokio::test]
async fn herald_wait_draws_a_live_line_only_on_a_terminal() {
    let app = spawn_app("").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let wait = format!(
        "{} wait --server http://{} --cube-id sales --batch-id b-1 --timeout 1s",
        env!("CARGO_BIN_EXE_herald"),
        app.addr
    );
    // util-linux `script` runs the command on a pseudo-terminal.
    let on_terminal = |command: String| {
        tokio::task::spawn_blocking(move || {
            Command::new("script")
                .args(["-qec", &command, "/dev/null"])
                .output()
                .expect("script runs")
        })
    };
    let shown = on_terminal(wait.clone()).await.unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(shown.status.code(), Some(3), "{text}");
    assert!(
        text.contains("waiting 0ms: batch b-1 running, 0 of 3 aggregates built"),
        "{text:?}"
    );
    assert!(
        text.contains("\r\x1b[2Ktimed out after 1s: batch b-1"),
        "the live line is erased before the outcome: {text:?}"
    );

    let json = on_terminal(format!("{wait} -o json")).await.unwrap();
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(!text.contains("waiting"), "{text:?}");
    assert!(text.contains("\"outcome\": \"timed_out\""), "{text:?}");

    let piped = tokio::task::spawn_blocking(move || {
        let mut parts = wait.split(' ');
        Command::new(parts.next().unwrap())
            .args(parts)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("timed out after 1s: batch b-1"));
}
