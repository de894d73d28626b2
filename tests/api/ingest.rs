//! Ingest: acks, batch state, idempotency, the webhook format.

use std::time::Duration;

use herald::api::pb;
use herald::store::{DeliveryFilter, DeliveryState};

use crate::helpers::{app_with_receiver, batch_ref, spawn_app, webhook, Receiver, SECRET};

#[tokio::test]
async fn a_started_then_succeeded_batch_sends_two_signed_cloudevents() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;

    let started = app.start_batch("ev-1", "b-1", "sales").await;
    assert!(started.new_event);
    assert_eq!(started.deliveries, 1);
    assert_eq!(started.batch.unwrap().state, pb::BatchState::Running as i32);
    app.advance(Duration::from_secs(90));
    let done = app.succeed_batch("ev-2", "b-1", "sales").await;
    assert_eq!(
        done.batch.as_ref().unwrap().state,
        pb::BatchState::Succeeded as i32
    );
    app.deliver().await;

    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        receiver.types(),
        ["aggregate.batch.started", "aggregate.batch.succeeded"]
    );
    for request in &got {
        assert_eq!(
            request.header("content-type"),
            "application/cloudevents+json"
        );
        assert!(request.header("webhook-id").starts_with("msg_"));
        assert!(request.header("webhook-timestamp").parse::<i64>().is_ok());
        assert!(request.signature_is_valid(SECRET), "signature must verify");
        assert!(!request.signature_is_valid("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    }
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let body = got[1].json();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], "ev-2");
    assert_eq!(body["source"], "engine-test");
    assert_eq!(body["time"], "2026-03-01T12:01:30.000Z");
    assert_eq!(body["subject"], "environments/prod/cubes/sales/batches/b-1");
    assert_eq!(body["data"]["state"], "SUCCEEDED");
    assert_eq!(body["data"]["rows_written"], 1200);
    assert_eq!(body["data"]["duration_ms"], 90_000);
    assert_eq!(body["data"]["start_seen"], true);
}

#[tokio::test]
async fn the_same_event_id_twice_returns_the_first_answer_and_sends_one_webhook() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;

    let first = app.start_batch("ev-1", "b-1", "sales").await;
    let request = pb::BatchStartedRequest {
        meta: app.meta("ev-1"),
        batch: Some(batch_ref("b-1", "prod", "sales")),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 3,
    };
    // The engine retries the same request later.
    app.advance(Duration::from_secs(5));
    let again = app
        .ingest
        .clone()
        .batch_started(request)
        .await
        .unwrap()
        .into_inner();
    app.deliver().await;

    assert!(first.new_event);
    assert!(!again.new_event);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(again.batch, first.batch);
    assert_eq!(again.deliveries, first.deliveries);
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(app.store.count_events().await.unwrap(), 1);
}

#[tokio::test]
async fn a_completion_without_a_seen_start_is_accepted_and_flagged() {
    let app = spawn_app("").await;
    let reply = app.succeed_batch("ev-1", "b-9", "sales").await;
    let batch = reply.batch.unwrap();
    assert_eq!(batch.state, pb::BatchState::Succeeded as i32);
    assert!(!batch.start_seen);
    assert!(batch.started_at.is_none());
}

#[tokio::test]
async fn a_repeated_completion_under_a_new_event_id_is_recorded_but_not_delivered() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    app.succeed_batch("ev-1", "b-1", "sales").await;
    let repeat = app.succeed_batch("ev-2", "b-1", "sales").await;
    app.deliver().await;
    assert!(repeat.new_event);
    assert_eq!(repeat.deliveries, 0);
    assert_eq!(receiver.types(), ["aggregate.batch.succeeded"]);
}

#[tokio::test]
async fn the_first_success_after_a_failure_also_sends_recovered() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.advance(Duration::from_secs(60));
    let ok = app.succeed_batch("ev-2", "b-2", "sales").await;
    app.advance(Duration::from_secs(60));
    app.succeed_batch("ev-3", "b-3", "sales").await;
    app.deliver().await;

    assert_eq!(ok.deliveries, 2);
    assert_eq!(
        receiver.types(),
        [
            "aggregate.batch.failed",
            "aggregate.batch.succeeded",
            "aggregate.batch.recovered",
            "aggregate.batch.succeeded"
        ]
    );
    let recovered = &receiver.received()[2].json();
    assert_eq!(recovered["data"]["batch_id"], "b-2");
    assert_eq!(recovered["id"], "herald:recovered:ev-2");
}

#[tokio::test]
async fn subscriptions_receive_only_the_events_and_scopes_they_filter_on() {
    let prod_failures = Receiver::start().await;
    let environments = Receiver::start().await;
    let hooks = [
        webhook(
            "prod-failures",
            &prod_failures.url(),
            "events = [\"aggregate.batch.failed\"]\nenvironments = [\"prod\"]\ncubes = [\"SAL*\"]",
        ),
        webhook(
            "environments",
            &environments.url(),
            "events = [\"environment.*\", \"schema.published\"]",
        ),
    ]
    .concat();
    let app = spawn_app(&hooks).await;

    app.fail_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "stock").await;
    let mut dev = app.failed("ev-3", "b-3", "sales");
    dev.batch = Some(batch_ref("b-3", "dev", "sales"));
    app.ingest.clone().batch_failed(dev).await.unwrap();
    app.start_batch("ev-4", "b-4", "sales").await;
    let env = app.environment_created("ev-5");
    app.ingest.clone().environment_created(env).await.unwrap();
    let schema = app.schema_published("ev-6");
    app.ingest.clone().schema_published(schema).await.unwrap();
    app.deliver().await;

    // Cube filters match the cube name ("SALES") as well as its id.
    assert_eq!(prod_failures.types(), ["aggregate.batch.failed"]);
    assert_eq!(
        prod_failures.received()[0].json()["data"]["batch_id"],
        "b-1"
    );
    assert_eq!(
        environments.types(),
        ["environment.created", "schema.published"]
    );
    let env = environments.received()[0].json();
    assert_eq!(env["data"]["attributes"]["region"], "eu-west");
    let schema = environments.received()[1].json();
    assert_eq!(schema["data"]["version"], "42");
    assert_eq!(schema["subject"], "environments/prod/projects/finance");
}

#[tokio::test]
async fn every_acked_event_has_its_delivery_rows_committed() {
    let app = spawn_app(
        &[
            webhook("a", "http://127.0.0.1:9/a", "events = [\"*\"]"),
            webhook(
                "b",
                "http://127.0.0.1:9/b",
                "events = [\"aggregate.batch.failed\"]",
            ),
        ]
        .concat(),
    )
    .await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-1", "sales").await;
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    let pairs: Vec<_> = rows
        .iter()
        .map(|r| (r.event_id.as_str(), r.subscription.as_str()))
        .collect();
    assert_eq!(pairs, [("ev-1", "a"), ("ev-2", "a"), ("ev-2", "b")]);
    assert!(rows
        .iter()
        .all(|r| r.state == DeliveryState::Pending && r.attempts == 0));
}

#[tokio::test]
async fn batches_can_be_read_back_and_paged() {
    let app = spawn_app("").await;
    for i in 0..5 {
        app.advance(Duration::from_secs(1));
        app.start_batch(&format!("ev-{i}"), &format!("b-{i}"), "sales")
            .await;
    }
    app.advance(Duration::from_secs(1));
    app.fail_batch("ev-f", "b-1", "sales").await;
    let mut query = app.query.clone();

    let one = query
        .get_batch(pb::GetBatchRequest {
            batch_id: "b-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.state, pb::BatchState::Failed as i32);
    assert_eq!(one.failed_aggregates[0].aggregate_id, "agg-7");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_batches(pb::ListBatchesRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.batches.into_iter().map(|b| b.batch_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Newest first, by when each batch began: b-1's failure does not move it.
    assert_eq!(seen, ["b-4", "b-3", "b-2", "b-1", "b-0"]);

    let failed = query
        .list_batches(pb::ListBatchesRequest {
            state: pb::BatchState::Failed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.batches.len(), 1);

    let missing = query
        .get_batch(pb::GetBatchRequest {
            batch_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("batch_id"));
}

#[tokio::test]
async fn the_standard_health_service_reports_serving() {
    let app = spawn_app("").await;
    let status = app.health().await.unwrap();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// Many calls at once land in the same group commits: repeats, conflicts
/// and new events mixed in one transaction must each get the answer they
/// would get alone.
#[tokio::test]
async fn concurrent_calls_in_one_group_commit_keep_every_invariant() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    let mut calls = Vec::new();
    for i in 0..40 {
        let mut ingest = app.ingest.clone();
        let (ok, failed) = (
            app.succeeded(&format!("s-{}", i % 10), "shared", "sales"),
            app.failed(&format!("f-{i}"), &format!("b-{i}"), "stock"),
        );
        calls.push(tokio::spawn(async move {
            let a = ingest.batch_succeeded(ok).await;
            let b = ingest.batch_failed(failed).await;
            (a, b)
        }));
    }
    let mut delivered_successes = 0;
    let mut answers: std::collections::HashMap<u64, Vec<u32>> = Default::default();
    for call in calls {
        let (a, b) = call.await.unwrap();
        let a = a
            .expect("a success of the shared batch is never refused")
            .into_inner();
        delivered_successes += a.deliveries;
        answers.entry(a.sequence).or_default().push(a.deliveries);
        assert!(b.is_ok());
    }
    // Ten distinct event ids succeed the shared batch: the first changes it,
    // the other nine are quiet repeats; the four calls of each id share one
    // answer (one sequence number).
    assert_eq!(answers.len(), 10);
    assert!(answers
        .values()
        .all(|calls| calls.len() == 4 && calls.windows(2).all(|w| w[0] == w[1])));
    assert_eq!(
        delivered_successes, 4,
        "only the id that changed the batch enqueued a delivery"
    );
    let late = app
        .ingest
        .clone()
        .batch_failed(app.failed("late", "shared", "sales"))
        .await;
    assert_eq!(late.unwrap_err().code(), tonic::Code::FailedPrecondition);
    assert_eq!(app.store.count_events().await.unwrap(), 10 + 40);
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1 + 40);
}

/// Asks reflection (of the given protocol version) for its services, and
/// for the file that defines one of them, as `grpcurl list` and
/// `grpcurl describe` do.
macro_rules! reflect {
    ($app:expr, $version:ident) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let request = |message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let requests = [
            request(MessageRequest::ListServices(String::new())),
            request(MessageRequest::FileContainingSymbol(
                "herald.v1.QueryService".into(),
            )),
        ];
        let mut replies = ServerReflectionClient::new($app.channel().await)
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let list = replies.message().await.unwrap().unwrap().message_response;
        let Some(MessageResponse::ListServicesResponse(list)) = list else {
            panic!("expected a service list, got {list:?}");
        };
        let file = replies.message().await.unwrap().unwrap().message_response;
        let Some(MessageResponse::FileDescriptorResponse(file)) = file else {
            panic!("expected a file descriptor, got {file:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        (names, file.file_descriptor_proto.len())
    }};
}

/// What lets `grpcurl` (and tools that speak only the older v1alpha
/// protocol) work without proto files: reflection lists Herald's services
/// and hands out their descriptors.
#[tokio::test]
async fn server_reflection_v1_and_v1alpha_list_every_herald_service() {
    let app = spawn_app("").await;
    for (names, files) in [reflect!(app, v1), reflect!(app, v1alpha)] {
        assert!(files >= 1, "no descriptor for herald.v1.QueryService");
        for service in [
            "herald.v1.IngestService",
            "herald.v1.QueryService",
            "herald.v1.AdminService",
            "herald.v1.SubscriptionService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == service),
                "{service} missing from {names:?}"
            );
        }
    }
}

/// An `event_id` is an idempotency key: a retry carries the same content
/// and gets the first answer; other content under it is refused (as Stripe
/// refuses a key reused with other parameters) and changes nothing.
#[tokio::test]
async fn an_event_id_reused_with_other_content_is_refused_naming_its_first_use() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    let started = pb::BatchStartedRequest {
        meta: app.meta("e1"),
        batch: Some(batch_ref("b1", "prod", "sales")),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 3,
    };
    let first = app
        .ingest
        .clone()
        .batch_started(started.clone())
        .await
        .unwrap()
        .into_inner();
    app.advance(Duration::from_secs(60));

    let reused = app
        .ingest
        .clone()
        .batch_failed(app.failed("e1", "b1", "sales"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        reused.message(),
        "event_id `e1` was first used for aggregate.batch.started of batch b1 with other content"
    );
    // The same start at another instant is other content too.
    let later = app
        .ingest
        .clone()
        .batch_started(pb::BatchStartedRequest {
            meta: app.meta("e1"),
            ..started.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(later.code(), tonic::Code::AlreadyExists);
    let environment = app
        .ingest
        .clone()
        .environment_created(pb::EnvironmentRequest {
            meta: app.meta("e1"),
            environment_id: "prod".into(),
            name: "Production".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(environment.code(), tonic::Code::AlreadyExists);

    // An identical retry, even from another engine instance, is a retry.
    let mut retry = started.clone();
    retry.meta.as_mut().unwrap().source = "engine-standby".into();
    let again = app
        .ingest
        .clone()
        .batch_started(retry)
        .await
        .unwrap()
        .into_inner();
    assert!(!again.new_event);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(again.batch, first.batch);

    let batch = app
        .query
        .clone()
        .get_batch(pb::GetBatchRequest {
            batch_id: "b1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.state, pb::BatchState::Running as i32);
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.deliver().await;
    assert_eq!(receiver.types(), ["aggregate.batch.started"]);
}

/// Two calls in one group commit: the reuse is refused there too (the
/// first job's content is what the id was first used for).
#[tokio::test]
async fn a_reused_event_id_within_one_group_commit_is_refused() {
    use herald::core::event::{BatchEvent, BatchOutcome, BatchRef, BuildKind, Event, Payload};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let store = herald::store::Store::open(&url).await.unwrap();
    let clock = herald::clock::ManualClock::new(
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 3, 1, 12, 0, 0).unwrap(),
    );
    let ingestor = herald::ingest::Ingestor::new(herald::ingest::IngestParts {
        store: store.clone(),
        registry: herald::registry::Registry::new(Vec::new()),
        managed: herald::registry::ManagedContext {
            egress: Default::default(),
            smtp_configured: false,
        },
        clock: std::sync::Arc::new(clock.clone()),
        wakeups: Default::default(),
        feed: Default::default(),
        metrics: Default::default(),
        gates: Vec::new(),
    });
    let event = |outcome| Event {
        event_id: "e1".into(),
        occurred_at: herald::clock::Clock::now(&clock),
        source: "engine-test".into(),
        payload: Payload::Batch(BatchEvent {
            batch: BatchRef {
                batch_id: "b1".into(),
                environment_id: "prod".into(),
                project_id: None,
                cube_id: "sales".into(),
                cube_name: "SALES".into(),
            },
            build_kind: BuildKind::Full,
            aggregate_count: 3,
            outcome,
        }),
    };
    let failed = BatchOutcome::Failed {
        error_message: "out of disk".into(),
        failed_aggregates: Vec::new(),
    };
    // On this single-threaded runtime both jobs are queued before the
    // committer runs, so they share one transaction.
    let (started, reused, retried) = tokio::join!(
        ingestor.ingest(event(BatchOutcome::Started)),
        ingestor.ingest(event(failed)),
        ingestor.ingest(event(BatchOutcome::Started)),
    );
    let started = started.unwrap();
    assert!(started.new_event);
    assert_eq!(
        reused.unwrap_err().to_string(),
        "event_id `e1` was first used for aggregate.batch.started of batch b1 with other content"
    );
    let retried = retried.unwrap();
    assert!(!retried.new_event);
    assert_eq!(retried.sequence, started.sequence);
    assert_eq!(store.count_events().await.unwrap(), 1);
    let batch = store.get_batch("b1").await.unwrap().unwrap();
    assert_eq!(batch.state, herald::core::batch::BatchState::Running);
}
