//! Watch and await streams cannot exhaust Herald: a client that stops
//! reading is ended and resumes from its cursor, streams beyond the caps
//! are refused, and nothing is left behind when clients leave.

use std::collections::HashMap;
use std::time::Duration;

use herald::api::pb;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};

use crate::helpers::{eventually, Spawn, TestApp};

/// A test app with these `[server]` lines and this further configuration.
async fn app_with(server: &str, config: &str) -> TestApp {
    Spawn {
        server: server.into(),
        webhooks: config.into(),
        ..Spawn::default()
    }
    .start()
    .await
}

/// A channel whose streams take at most 1 KiB before the test reads them,
/// as a client that stopped reading would (a library's default window
/// would otherwise absorb megabytes first).
async fn narrow_channel(app: &TestApp) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap()
}

fn query(channel: &Channel) -> pb::query_service_client::QueryServiceClient<Channel> {
    pb::query_service_client::QueryServiceClient::new(channel.clone())
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn watch_cube(cube: &str, cursor: &str) -> pb::WatchBatchesRequest {
    pb::WatchBatchesRequest {
        cube_id: cube.into(),
        cursor: cursor.into(),
        ..Default::default()
    }
}

/// Every message until the stream ends, and how it ended.
async fn drain(stream: &mut Streaming<pb::BatchChange>) -> (Vec<pb::BatchChange>, tonic::Status) {
    let mut messages = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream moves");
        match next {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return (messages, tonic::Status::ok("ended")),
            Err(status) => return (messages, status),
        }
    }
}

/// The next `n` messages.
async fn take(stream: &mut Streaming<pb::BatchChange>, n: usize) -> Vec<pb::BatchChange> {
    let mut messages = Vec::new();
    while messages.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a message arrives")
            .expect("the stream is healthy")
            .expect("the stream is open");
        messages.push(next);
    }
    messages
}

fn batch_id(change: &pb::BatchChange) -> String {
    change.batch.as_ref().unwrap().batch_id.clone()
}

fn cursor(change: &pb::BatchChange) -> i64 {
    change.cursor.parse().unwrap()
}

async fn nothing_left_behind(app: &TestApp) {
    let feed = app.feed.clone();
    assert!(
        eventually(Duration::from_secs(10), || feed.waiters() == 0
            && feed.open_streams() == (0, 0))
        .await,
        "waiters {}, streams {:?}",
        feed.waiters(),
        feed.open_streams()
    );
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_ended_and_resumes_from_its_cursor_losing_nothing() {
    let app = app_with("watch_send_timeout = \"200ms\"", "").await;
    let channel = narrow_channel(&app).await;
    let mut stuck = query(&channel)
        .watch_batches(watch_cube("sales", ""))
        .await
        .unwrap()
        .into_inner();

    // Far more changes than the buffer, the transport's window and one
    // encoded chunk hold, while the client reads nothing.
    let total = 150;
    for n in 0..total {
        app.start_batch(&format!("ev-{n}"), &format!("b-{n}"), "sales")
            .await;
    }
    let feed = app.feed.clone();
    assert!(
        eventually(Duration::from_secs(10), || feed.waiters() == 0).await,
        "the watcher that fell behind stopped"
    );
    assert_eq!(
        feed.open_streams(),
        (1, 1),
        "its stream stays until the client lets go"
    );

    let (seen, status) = drain(&mut stuck).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("fell behind"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("cursor"), "{}", status.message());
    assert!(seen.len() < total, "ended before the end: {}", seen.len());
    let last = seen
        .last()
        .expect("some changes got through")
        .cursor
        .clone();

    let mut resumed = query(&channel)
        .watch_batches(watch_cube("sales", &last))
        .await
        .unwrap()
        .into_inner();
    let rest = take(&mut resumed, total - seen.len()).await;
    let ids: Vec<String> = seen.iter().chain(&rest).map(batch_id).collect();
    let expected: Vec<String> = (0..total).map(|n| format!("b-{n}")).collect();
    assert_eq!(ids, expected, "every change once, in order");
    assert!(seen.iter().chain(&rest).all(|c| !c.snapshot));
    drop((stuck, resumed));
    nothing_left_behind(&app).await;
}

const TOKENS: &str = r#"
[[tokens]]
name = "engine"
role = "engine"
token = "engine-token-0123456789"
[[tokens]]
name = "airflow"
role = "reader"
token = "reader-token-airflow-0123"
[[tokens]]
name = "dashboard"
role = "reader"
token = "reader-token-dashboard-01"
"#;
const ENGINE: &str = "engine-token-0123456789";
const AIRFLOW: &str = "reader-token-airflow-0123";
const DASHBOARD: &str = "reader-token-dashboard-01";

#[tokio::test]
async fn watch_and_await_streams_beyond_the_caps_are_refused_and_slots_come_back() {
    let app = app_with(
        "max_watch_streams = 3\nmax_watch_streams_per_token = 2",
        TOKENS,
    )
    .await;
    let client = query(&app.channel().await);
    let watch = |token: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .watch_batches(with_token(watch_cube("sales", ""), token))
                .await
        }
    };
    let first = watch(AIRFLOW).await.unwrap().into_inner();
    let second = watch(AIRFLOW).await.unwrap().into_inner();
    let refused = watch(AIRFLOW).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("token `airflow`")
            && refused.message().contains("max_watch_streams_per_token"),
        "{}",
        refused.message()
    );

    // A long await counts as a stream too.
    let mut awaiting = client.clone();
    let await_request = |token| {
        with_token(
            pb::AwaitBatchRequest {
                target: Some(pb::await_batch_request::Target::BatchId("b-1".into())),
                timeout: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            },
            token,
        )
    };
    let refused = awaiting
        .await_batch(await_request(AIRFLOW))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let waiting = tokio::spawn(async move { awaiting.await_batch(await_request(DASHBOARD)).await });
    let feed = app.feed.clone();
    assert!(eventually(Duration::from_secs(10), || feed.open_streams().0 == 3).await);
    let refused = watch(DASHBOARD).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("server.max_watch_streams)"),
        "{}",
        refused.message()
    );

    // The await answers, and a watch that ends gives its slot back.
    let success = with_token(app.succeeded("ev-1", "b-1", "sales"), ENGINE);
    app.ingest.clone().batch_succeeded(success).await.unwrap();
    let answered = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(answered.outcome, pb::AwaitOutcome::Succeeded as i32);
    drop(first);
    assert!(eventually(Duration::from_secs(10), || feed.open_streams() == (1, 1)).await);
    let third = watch(AIRFLOW).await.unwrap().into_inner();
    let also = watch(DASHBOARD).await.unwrap().into_inner();
    drop((second, third, also));
    nothing_left_behind(&app).await;
}

#[tokio::test]
async fn a_snapshot_read_in_pages_shows_each_batch_once_and_never_an_older_state() {
    let app = app_with("watch_send_timeout = \"30s\"", "").await;
    let total = 400;
    for n in 0..total {
        app.start_batch(&format!("ev-{n}"), &format!("b-{n}"), "sales")
            .await;
    }
    let channel = narrow_channel(&app).await;
    let mut stream = query(&channel)
        .watch_batches(watch_cube("sales", ""))
        .await
        .unwrap()
        .into_inner();
    let mut seen = take(&mut stream, 10).await;
    // One batch already shown, and one the snapshot may or may not have
    // reached yet: both finish while the snapshot is being read.
    app.succeed_batch("ev-s0", "b-0", "sales").await;
    app.succeed_batch("ev-s99", "b-99", "sales").await;
    app.start_batch("ev-new", "b-new", "sales").await;
    seen.extend(take(&mut stream, total - 10).await);
    assert!(seen
        .iter()
        .all(|c| c.snapshot && c.cursor == seen[0].cursor));
    let ids: Vec<String> = seen.iter().map(batch_id).collect();
    let mut expected: Vec<String> = (0..total).map(|n| format!("b-{n}")).collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "each batch once, oldest first (same start: by id)"
    );

    // Then the changes the snapshot did not show yet — b-0 and b-99 unless
    // their page was read after they finished, b-new — and nothing twice
    // or going back to an older state: the next is the sentinel.
    let state_of = |c: &pb::BatchChange| c.batch.as_ref().unwrap().state;
    let mut latest: HashMap<String, i32> =
        seen.iter().map(|c| (batch_id(c), state_of(c))).collect();
    let unseen = ["b-0", "b-99"]
        .iter()
        .filter(|id| latest[**id] == pb::BatchState::Running as i32)
        .count();
    app.start_batch("ev-sentinel", "b-sentinel", "sales").await;
    let changes = take(&mut stream, unseen + 2).await;
    for change in &changes {
        assert!(!change.snapshot && cursor(change) > cursor(&seen[0]));
        if let Some(before) = latest.insert(batch_id(change), state_of(change)) {
            assert_eq!(before, pb::BatchState::Running as i32, "{change:?}");
            assert_ne!(
                state_of(change),
                pb::BatchState::Running as i32,
                "{change:?}"
            );
        }
    }
    assert_eq!(batch_id(changes.last().unwrap()), "b-sentinel");
    assert_eq!(latest["b-0"], pb::BatchState::Succeeded as i32);
    assert_eq!(latest["b-99"], pb::BatchState::Succeeded as i32);
    assert_eq!(latest["b-new"], pb::BatchState::Running as i32);
    drop(stream);
    nothing_left_behind(&app).await;
}
