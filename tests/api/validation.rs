//! Bad input gets a precise status naming the field, and changes nothing.

use std::time::Duration;

use herald::api::pb;
use tonic::Code;

use crate::helpers::{app_with_receiver, spawn_app, TestApp};

fn assert_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "message `{}` should name `{field}`",
        status.message()
    );
}

fn occurred_at(r: &mut pb::BatchSucceededRequest) -> &mut prost_types::Timestamp {
    r.meta.as_mut().unwrap().occurred_at.as_mut().unwrap()
}

/// A change that makes a valid request invalid.
type Mutation = Box<dyn Fn(&mut pb::BatchSucceededRequest)>;

async fn state_of(app: &TestApp, batch_id: &str) -> pb::Batch {
    app.query
        .clone()
        .get_batch(pb::GetBatchRequest {
            batch_id: batch_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn each_invalid_field_is_refused_by_name_and_nothing_is_stored() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    app.start_batch("ev-ok", "b-1", "sales").await;
    let before = state_of(&app, "b-1").await;
    let mut ingest = app.ingest.clone();

    let cases: Vec<(&str, Mutation)> = vec![
        ("meta", Box::new(|r| r.meta = None)),
        (
            "meta.event_id",
            Box::new(|r| r.meta.as_mut().unwrap().event_id.clear()),
        ),
        (
            "meta.event_id",
            Box::new(|r| r.meta.as_mut().unwrap().event_id = "herald:recovered:x".into()),
        ),
        (
            "meta.source",
            Box::new(|r| r.meta.as_mut().unwrap().source.clear()),
        ),
        (
            "meta.occurred_at",
            Box::new(|r| r.meta.as_mut().unwrap().occurred_at = None),
        ),
        (
            "meta.occurred_at",
            Box::new(|r| occurred_at(r).seconds = 32_503_680_000),
        ),
        ("meta.occurred_at", Box::new(|r| occurred_at(r).seconds = 0)),
        ("meta.occurred_at", Box::new(|r| occurred_at(r).nanos = -1)),
        ("batch", Box::new(|r| r.batch = None)),
        (
            "batch.batch_id",
            Box::new(|r| r.batch.as_mut().unwrap().batch_id.clear()),
        ),
        (
            "batch.batch_id",
            Box::new(|r| r.batch.as_mut().unwrap().batch_id = "x".repeat(300)),
        ),
        (
            "batch.environment_id",
            Box::new(|r| r.batch.as_mut().unwrap().environment_id.clear()),
        ),
        (
            "batch.cube_id",
            Box::new(|r| r.batch.as_mut().unwrap().cube_id = "two words".into()),
        ),
        (
            "batch.cube_name",
            Box::new(|r| r.batch.as_mut().unwrap().cube_name = "n".repeat(10_000)),
        ),
        ("build_kind", Box::new(|r| r.build_kind = 0)),
        ("build_kind", Box::new(|r| r.build_kind = 42)),
        ("aggregates_built", Box::new(|r| r.aggregates_built = 99)),
    ];
    for (field, mutate) in cases {
        let mut request = app.succeeded("ev-bad", "b-1", "sales");
        mutate(&mut request);
        assert_status(
            ingest.batch_succeeded(request).await,
            Code::InvalidArgument,
            field,
        );
    }

    let mut failed = app.failed("ev-bad", "b-1", "sales");
    failed.error_message.clear();
    assert_status(
        ingest.batch_failed(failed).await,
        Code::InvalidArgument,
        "error_message",
    );
    let mut failed = app.failed("ev-bad", "b-1", "sales");
    failed.failed_aggregates[0].aggregate_id.clear();
    assert_status(
        ingest.batch_failed(failed).await,
        Code::InvalidArgument,
        "failed_aggregates[0].aggregate_id",
    );
    let env = pb::EnvironmentRequest {
        meta: app.meta("ev-bad"),
        environment_id: "prod".into(),
        ..Default::default()
    };
    assert_status(
        ingest.environment_created(env).await,
        Code::InvalidArgument,
        "name",
    );
    let schema = pb::SchemaRequest {
        meta: app.meta("ev-bad"),
        cubes: vec!["".into()],
        environment_id: "prod".into(),
        ..Default::default()
    };
    assert_status(
        ingest.schema_published(schema).await,
        Code::InvalidArgument,
        "cubes[0]",
    );

    assert_eq!(app.store.count_events().await.unwrap(), 1);
    assert_eq!(state_of(&app, "b-1").await, before);
    app.deliver().await;
    assert_eq!(receiver.types(), ["aggregate.batch.started"]);
}

#[tokio::test]
async fn a_conflicting_terminal_event_is_a_failed_precondition_and_changes_nothing() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    app.succeed_batch("ev-1", "b-1", "sales").await;
    let before = state_of(&app, "b-1").await;
    app.advance(Duration::from_secs(5));

    let result = app
        .ingest
        .clone()
        .batch_failed(app.failed("ev-2", "b-1", "sales"))
        .await;
    assert_status(result, Code::FailedPrecondition, "already ended SUCCEEDED");
    let moved = app
        .ingest
        .clone()
        .batch_succeeded(app.succeeded("ev-3", "b-1", "stock"))
        .await;
    assert_status(moved, Code::FailedPrecondition, "belongs to cube sales");

    assert_eq!(state_of(&app, "b-1").await, before);
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    // The refused event_id was not consumed: it can be used for a valid event.
    app.start_batch("ev-2", "b-2", "sales").await;
}

#[tokio::test]
async fn bad_query_arguments_name_their_field() {
    let app = spawn_app("").await;
    let mut query = app.query.clone();
    let bad_token = query
        .list_batches(pb::ListBatchesRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert!(bad_token.message().contains("page_token"));
    let bad_state = query
        .list_batches(pb::ListBatchesRequest {
            state: 17,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad_state.message().contains("state"));
    let empty = query
        .get_batch(pb::GetBatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("batch_id"));
}

#[tokio::test]
async fn oversized_requests_are_refused_before_they_are_read() {
    let app = crate::helpers::Spawn {
        server: "max_request_bytes = 4194304".into(),
        ..Default::default()
    }
    .start()
    .await;
    let mut big = app.failed("ev-big", "b-1", "sales");
    big.error_message = "x".repeat(5 * 1024 * 1024);
    let status = app.ingest.clone().batch_failed(big).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    let mut long = app.failed("ev-long", "b-1", "sales");
    long.error_message = "x".repeat(100 * 1024);
    let status = app.ingest.clone().batch_failed(long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("error_message: is 102400 bytes long"),
        "{}",
        status.message()
    );
    assert_eq!(app.store.count_events().await.unwrap(), 0);
}

/// A protobuf `Timestamp` has `nanos` in 0–999,999,999; anything else would
/// be stored as a leap second (`…:60.500Z`) or mean nothing. Every
/// timestamp Herald reads refuses it by the field's name.
#[tokio::test]
async fn a_timestamp_with_nanos_out_of_range_is_refused_by_name() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    let mut ingest = app.ingest.clone();
    for nanos in [1_000_000_000, 1_500_000_000, -1, i32::MIN] {
        // At second :59, where chrono would take a leap second.
        let mut request = app.succeeded("ev-nanos", "b-1", "sales");
        occurred_at(&mut request).seconds -= 1;
        occurred_at(&mut request).nanos = nanos;
        assert_status(
            ingest.batch_succeeded(request).await,
            Code::InvalidArgument,
            "meta.occurred_at.nanos",
        );
    }
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    let mut request = app.succeeded("ev-nanos", "b-1", "sales");
    occurred_at(&mut request).nanos = 999_999_999;
    occurred_at(&mut request).seconds -= 1;
    assert!(ingest.batch_succeeded(request).await.is_ok());

    let bad = || {
        Some(prost_types::Timestamp {
            seconds: 1_772_366_400,
            nanos: 1_500_000_000,
        })
    };
    let mut query = app.query.clone();
    let listed = query.list_batches(pb::ListBatchesRequest {
        until: bad(),
        ..Default::default()
    });
    assert_status(listed.await, Code::InvalidArgument, "until.nanos");
    let awaited = query.await_batch(pb::AwaitBatchRequest {
        target: Some(pb::await_batch_request::Target::Cube(pb::CubeAfter {
            cube_id: "sales".into(),
            after: bad(),
            ..Default::default()
        })),
        timeout: None,
    });
    assert_status(awaited.await, Code::InvalidArgument, "cube.after.nanos");
    let mut admin = pb::admin_service_client::AdminServiceClient::new(app.channel().await);
    let deliveries = admin.list_deliveries(pb::ListDeliveriesRequest {
        since: bad(),
        ..Default::default()
    });
    assert_status(deliveries.await, Code::InvalidArgument, "since.nanos");

    app.deliver().await;
    let sent = receiver.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json()["time"], "2026-03-01T11:59:59.999Z");
}
