//! Delivery outcomes: retries, Retry-After, 410, permanent failures,
//! dead letters, and isolation between subscriptions.

use std::time::Duration;

use herald::store::{DeliveryFilter, DeliveryState};

use crate::helpers::{
    app_with_receiver, dead_address, eventually, spawn_app, webhook, Receiver, Reply, Spawn,
};

async fn only_delivery(app: &crate::helpers::TestApp) -> herald::store::DeliveryRow {
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "expected exactly one delivery: {rows:?}");
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    app.start_batch("ev-1", "b-1", "sales").await;

    assert_eq!(app.deliver().await, 1);
    // Not due yet: the first retry waits 10 s ± 20 %.
    app.advance(Duration::from_secs(7));
    assert_eq!(app.deliver().await, 0);
    app.advance(Duration::from_secs(6));
    assert_eq!(app.deliver().await, 1);
    app.advance(Duration::from_secs(75));
    assert_eq!(app.deliver().await, 1);

    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "webhook-id is stable across retries"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the body is the same bytes every time"
    );
    let delivery = only_delivery(&app).await;
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.attempts, 3);
    let attempts = app.store.list_attempts(&delivery.id).await.unwrap();
    let statuses: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(204)]);
    let verdicts: Vec<_> = attempts.iter().map(|a| a.verdict.as_str()).collect();
    assert_eq!(verdicts, ["retry", "retry", "delivered"]);
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500"));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    receiver.script([Reply::StatusRetryAfter(429, "120")]);
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    app.advance(Duration::from_secs(60));
    assert_eq!(app.deliver().await, 0, "the receiver asked for 120 s");
    app.advance(Duration::from_secs(61));
    assert_eq!(app.deliver().await, 1);
    assert_eq!(only_delivery(&app).await.state, DeliveryState::Delivered);
}

#[tokio::test]
async fn a_410_disables_the_subscription() {
    let gone = Receiver::start().await;
    gone.always(Reply::Status(410));
    // One attempt at a time, so the second event is still queued when the
    // 410 arrives (attempts already in flight would complete regardless).
    let hook = webhook("old", &gone.url(), "events = [\"*\"]\nmax_in_flight = 1");
    let app = spawn_app(&hook).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "sales").await;
    app.deliver().await;

    assert_eq!(gone.received().len(), 1, "nothing is sent after the 410");
    let disabled = app.store.subscription_disabled("old").await.unwrap();
    assert!(disabled.unwrap().contains("410"));
    let after = app.start_batch("ev-3", "b-3", "sales").await;
    assert_eq!(
        after.deliveries, 0,
        "a disabled subscription gets no new deliveries"
    );
    app.advance(Duration::from_secs(3600));
    app.deliver().await;
    assert_eq!(gone.received().len(), 1);

    // The state survives a restart while the URL stays the same.
    let (dir, clock) = app.stop().await;
    let app = Spawn {
        webhooks: hook,
        dir: Some(dir),
        clock: Some(clock),
        ..Spawn::default()
    }
    .start()
    .await;
    assert_eq!(app.start_batch("ev-4", "b-4", "sales").await.deliveries, 0);
}

#[tokio::test]
async fn a_permanent_4xx_is_not_retried() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    receiver.always(Reply::Status(400));
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    app.advance(Duration::from_secs(24 * 3600));
    app.deliver().await;

    assert_eq!(receiver.received().len(), 1);
    let delivery = only_delivery(&app).await;
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.last_status, Some(400));
    assert!(app
        .store
        .subscription_disabled("etl")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn an_exhausted_schedule_leaves_the_delivery_dead() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    receiver.always(Reply::Status(503));
    app.start_batch("ev-1", "b-1", "sales").await;
    for _ in 0..10 {
        app.deliver().await;
        app.advance(Duration::from_secs(3600));
    }
    let types = receiver.types();
    let started = types
        .iter()
        .filter(|t| *t == "aggregate.batch.started")
        .count();
    // One first attempt plus the three retries of the schedule.
    assert_eq!(started, 4);
    let rows = app.deliveries_of("ev-1").await;
    assert_eq!(rows[0].state, DeliveryState::Dead);
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    assert_eq!(attempts.last().unwrap().verdict, "dead");

    // Herald reports the dead delivery as an event of its own (which this
    // subscription also takes); that report dying too is not reported again.
    let reports = types
        .iter()
        .filter(|t| *t == "herald.delivery.dead")
        .count();
    assert_eq!(reports, 4);
    let report = receiver
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|e| e["type"] == "herald.delivery.dead")
        .unwrap();
    assert_eq!(report["data"]["subscription"], "etl");
    assert_eq!(report["data"]["event_id"], "ev-1");
    assert_eq!(report["data"]["attempts"], 4);
    assert_eq!(report["data"]["last_error"], "HTTP 503");
    let all = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "no report about the report: {all:?}");
}

#[tokio::test]
async fn a_refused_connection_is_recorded_and_retried() {
    let dead = dead_address().await;
    let app = spawn_app(&webhook(
        "etl",
        &format!("http://{dead}/hook"),
        "events = [\"*\"]",
    ))
    .await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    let delivery = only_delivery(&app).await;
    assert_eq!(delivery.state, DeliveryState::Pending);
    let attempts = app.store.list_attempts(&delivery.id).await.unwrap();
    assert_eq!(attempts[0].status_code, None);
    assert!(
        attempts[0].error.as_deref().unwrap().contains("connection"),
        "{attempts:?}"
    );
}

/// The dead receiver holds its connections open for the whole test; the
/// assertions are about order, not time: every ack and every healthy
/// delivery completes while those requests are still hanging.
#[tokio::test]
async fn a_receiver_that_never_answers_delays_neither_acks_nor_other_subscriptions() {
    let hanging = Receiver::start().await;
    hanging.always(Reply::Hang);
    let healthy = Receiver::start().await;
    let hooks = [
        webhook(
            "hanging",
            &hanging.url(),
            "events = [\"*\"]\ntimeout = \"5m\"\nmax_in_flight = 2",
        ),
        webhook("healthy", &healthy.url(), "events = [\"*\"]"),
    ]
    .concat();
    let app = Spawn {
        webhooks: hooks,
        background: true,
        ..Spawn::default()
    }
    .start()
    .await;

    for i in 0..20 {
        let reply = app
            .start_batch(&format!("ev-{i}"), &format!("b-{i}"), "sales")
            .await;
        assert_eq!(reply.deliveries, 2);
    }
    let all_healthy = eventually(Duration::from_secs(20), || healthy.received().len() == 20).await;
    assert!(
        all_healthy,
        "healthy receiver got {}",
        healthy.received().len()
    );
    // The hanging receiver holds exactly its two slots, nothing more.
    assert!(eventually(Duration::from_secs(5), || hanging.received().len() == 2).await);
    let pending = app
        .store
        .list_deliveries(&DeliveryFilter {
            subscription: Some("hanging".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 20);
    assert!(pending
        .iter()
        .all(|d| d.state == DeliveryState::Pending && d.attempts == 0));
    app.stop().await;
}

/// A slow receiver gets at most `max_in_flight` requests at once from one
/// Herald, and the lane uses all of them.
#[tokio::test]
async fn a_slow_receiver_gets_max_in_flight_requests_at_once_and_no_more() {
    let receiver = Receiver::start().await;
    receiver.always(Reply::Slow(Duration::from_millis(150)));
    let app = Spawn {
        webhooks: webhook(
            "slow",
            &receiver.url(),
            "events = [\"*\"]\nmax_in_flight = 3",
        ),
        background: true,
        ..Spawn::default()
    }
    .start()
    .await;
    app.start_batches(0..12).await;
    assert!(eventually(Duration::from_secs(30), || receiver.received().len() == 12).await);
    assert_eq!(receiver.most_concurrent(), 3);
}

/// An `https` receiver gets TLS with the name it was called by and both
/// HTTP versions offered, and its certificate is checked: one no public
/// authority signed is refused, and the attempt says so.
#[tokio::test]
async fn an_https_receiver_is_called_over_verified_tls() {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hello_tx, hello_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let accepted =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                .await
                .unwrap();
        let hello = accepted.client_hello();
        let name = hello.server_name().map(str::to_owned);
        let alpn: Vec<String> = hello
            .alpn()
            .map(|offered| {
                offered
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let _ = hello_tx.send((name, alpn));
        // Herald refuses the certificate, so the handshake fails.
        accepted.into_stream(Arc::new(config)).await.is_ok()
    });

    let app = spawn_app(&webhook(
        "secure",
        &format!("https://localhost:{port}/hook"),
        r#"events = ["*"]"#,
    ))
    .await;
    app.start_batch("ev-1", "b-1", "sales").await;
    assert_eq!(app.deliver().await, 1);

    let (name, alpn) = hello_rx.await.unwrap();
    assert_eq!(name.as_deref(), Some("localhost"));
    assert_eq!(alpn, ["h2", "http/1.1"]);
    assert!(!server.await.unwrap(), "the handshake must not complete");
    let delivery = only_delivery(&app).await;
    assert_eq!(
        delivery.state,
        DeliveryState::Pending,
        "a TLS failure is retried"
    );
    let attempts = app.store.list_attempts(&delivery.id).await.unwrap();
    let error = attempts[0].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("connection failed") && error.contains("certificate"),
        "{error}"
    );
}

/// A receiver that sends its status and then stalls its body: the attempt
/// keeps the status and what of the body came, once the timeout is up.
#[tokio::test]
async fn a_response_whose_body_stalls_keeps_its_status_at_the_timeout() {
    let receiver = Receiver::start().await;
    let app = spawn_app(&webhook(
        "etl",
        &receiver.url(),
        "events = [\"*\"]\ntimeout = \"300ms\"",
    ))
    .await;
    receiver.script([Reply::StallBody(503, "overloaded, try later")]);
    app.start_batch("ev-1", "b-1", "sales").await;
    assert_eq!(app.deliver().await, 1);

    let delivery = only_delivery(&app).await;
    assert_eq!(delivery.state, DeliveryState::Pending);
    let attempts = app.store.list_attempts(&delivery.id).await.unwrap();
    assert_eq!(attempts[0].status_code, Some(503));
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        attempts[0].response_excerpt.as_deref(),
        Some("overloaded, try later")
    );
}
