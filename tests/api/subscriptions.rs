//! Subscriptions managed over the admin API: CRUD, secrets shown once,
//! rotation, test events; configured ones are read-only.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use herald::api::pb::{self, subscription_service_client::SubscriptionServiceClient};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{
    app_with_receiver, eventually, webhook, Received, Receiver, Reply, Spawn, TestApp,
};

async fn client(app: &TestApp) -> SubscriptionServiceClient<Channel> {
    SubscriptionServiceClient::new(app.channel().await)
}

fn spec(name: &str, url: &str, events: &[&str]) -> pb::SubscriptionSpec {
    pb::SubscriptionSpec {
        name: name.into(),
        kind: pb::SubscriptionKind::Webhook as i32,
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        retry_schedule: vec!["10s".into()],
        ..Default::default()
    }
}

async fn create(
    app: &TestApp,
    spec: pb::SubscriptionSpec,
) -> Result<pb::CreateSubscriptionResponse, tonic::Status> {
    let request = pb::CreateSubscriptionRequest { spec: Some(spec) };
    client(app)
        .await
        .create_subscription(request)
        .await
        .map(|r| r.into_inner())
}

fn name(n: &str) -> pb::SubscriptionName {
    pb::SubscriptionName { name: n.into() }
}

/// Which of `secrets` produced one of the request's signatures.
fn signed_by(request: &Received, secrets: &[&str]) -> Vec<bool> {
    secrets
        .iter()
        .map(|secret| {
            let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(
                format!(
                    "{}.{}.",
                    request.header("webhook-id"),
                    request.header("webhook-timestamp")
                )
                .as_bytes(),
            );
            mac.update(&request.body);
            let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
            request
                .header("webhook-signature")
                .split(' ')
                .any(|s| s == expected)
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_goes_through_create_get_list_update_disable_enable_delete() {
    let (app, _configured) = app_with_receiver(r#"["*"]"#).await;
    let receiver = Receiver::start().await;
    let created = create(
        &app,
        spec("api-hook", &receiver.url(), &["aggregate.batch.started"]),
    )
    .await
    .unwrap();
    assert!(created.secret.starts_with("whsec_"));
    let info = created.subscription.unwrap();
    assert_eq!(
        (info.managed_by.as_str(), info.enabled, info.signing_secrets),
        ("api", true, 1)
    );

    let mut c = client(&app).await;
    let got = c
        .get_subscription(name("api-hook"))
        .await
        .unwrap()
        .into_inner();
    let spec_back = got.spec.clone().unwrap();
    assert_eq!(spec_back.url, receiver.url());
    assert_eq!(spec_back.events, ["aggregate.batch.started"]);
    assert!(spec_back.secret.is_empty());
    let listed = c
        .list_subscriptions(pb::ListSubscriptionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(String, String)> = listed
        .subscriptions
        .iter()
        .map(|s| (s.spec.as_ref().unwrap().name.clone(), s.managed_by.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("etl".to_owned(), "config".to_owned()),
            ("api-hook".to_owned(), "api".to_owned())
        ]
    );
    let secret_part = created.secret.trim_start_matches("whsec_");
    assert!(
        !format!("{got:?}{listed:?}").contains(secret_part),
        "the secret is never shown again"
    );

    // It delivers, signed with the secret shown at creation.
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(
        signed_by(&receiver.received()[0], &[&created.secret]),
        [true]
    );

    let mut changed = spec("api-hook", &receiver.url(), &["aggregate.batch.*"]);
    changed.timeout = "3s".into();
    let updated = c
        .update_subscription(pb::UpdateSubscriptionRequest {
            spec: Some(changed),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.spec.unwrap().timeout, "3s");

    let disabled = c
        .disable_subscription(name("api-hook"))
        .await
        .unwrap()
        .into_inner();
    assert!(!disabled.enabled);
    assert_eq!(
        app.start_batch("ev-2", "b-2", "sales").await.deliveries,
        1,
        "only the configured one"
    );
    assert!(
        c.enable_subscription(name("api-hook"))
            .await
            .unwrap()
            .into_inner()
            .enabled
    );
    assert_eq!(app.start_batch("ev-3", "b-3", "sales").await.deliveries, 2);

    let deleted = c
        .delete_subscription(name("api-hook"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.pending_failed, 1, "ev-3 was still pending for it");
    assert_eq!(
        c.get_subscription(name("api-hook"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_grace_period_and_one_after() {
    let (app, _configured) = app_with_receiver(r#"["environment.*"]"#).await;
    let receiver = Receiver::start().await;
    let old = create(
        &app,
        spec("rotating", &receiver.url(), &["aggregate.batch.*"]),
    )
    .await
    .unwrap()
    .secret;
    let mut c = client(&app).await;
    let new = c
        .rotate_secret(pb::RotateSecretRequest {
            name: "rotating".into(),
            grace: "1h".into(),
            secret: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_ne!(old, new);
    assert_eq!(
        c.get_subscription(name("rotating"))
            .await
            .unwrap()
            .into_inner()
            .signing_secrets,
        2
    );
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    assert_eq!(
        signed_by(&receiver.received()[0], &[&old, &new]),
        [true, true]
    );

    app.advance(Duration::from_secs(2 * 3600));
    app.start_batch("ev-2", "b-2", "sales").await;
    app.deliver().await;
    assert_eq!(
        signed_by(&receiver.received()[1], &[&old, &new]),
        [false, true]
    );
    assert_eq!(
        receiver.received()[1]
            .header("webhook-signature")
            .matches("v1,")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_test_event_goes_to_that_subscription_only() {
    let (app, configured) = app_with_receiver(r#"["*"]"#).await;
    let receiver = Receiver::start().await;
    create(
        &app,
        spec("tested", &receiver.url(), &["aggregate.batch.failed"]),
    )
    .await
    .unwrap();
    let sent = client(&app)
        .await
        .send_test_event(name("tested"))
        .await
        .unwrap()
        .into_inner();
    assert!(sent.event_id.starts_with("herald:test:tested:"));
    app.deliver().await;
    assert_eq!(receiver.types(), ["herald.subscription.test"]);
    assert!(configured.received().is_empty());
}

#[tokio::test]
async fn bad_specs_and_read_only_subscriptions_are_refused_precisely() {
    let (app, _configured) = app_with_receiver(r#"["*"]"#).await;
    let receiver = Receiver::start().await;
    let typo = create(&app, spec("x", &receiver.url(), &["aggregate.batch.faild"]))
        .await
        .unwrap_err();
    assert_eq!(typo.code(), Code::InvalidArgument);
    assert!(
        typo.message().starts_with("spec.events:"),
        "{}",
        typo.message()
    );
    let metadata = create(&app, spec("x", "http://169.254.169.254/", &["*"]))
        .await
        .unwrap_err();
    assert_eq!(metadata.code(), Code::InvalidArgument);
    assert!(
        metadata
            .message()
            .starts_with("spec.url: blocked by the egress policy")
            && metadata.message().contains("cloud metadata"),
        "{}",
        metadata.message()
    );
    let taken = create(&app, spec("etl", &receiver.url(), &["*"]))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    let mut c = client(&app).await;
    let read_only = c.delete_subscription(name("etl")).await.unwrap_err();
    assert_eq!(read_only.code(), Code::FailedPrecondition);
    assert!(read_only.message().contains("configuration file"));
    let unknown_kind = create(
        &app,
        pb::SubscriptionSpec {
            name: "y".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(unknown_kind.message().starts_with("spec.kind"));
}

#[tokio::test]
async fn values_that_cannot_make_sense_are_refused_naming_the_spec_field() {
    let (app, _configured) = app_with_receiver(r#"["*"]"#).await;
    let receiver = Receiver::start().await;
    let base = || spec("absurd", &receiver.url(), &["*"]);
    let refusals = [
        (
            pb::SubscriptionSpec {
                timeout: "100000000d".into(),
                ..base()
            },
            "spec.timeout: `100000000d` is out of range: use 1ms to 5m",
        ),
        (
            pb::SubscriptionSpec {
                retry_schedule: vec!["1s".into(), "8d".into()],
                ..base()
            },
            "spec.retry_schedule[1]: `8d` is out of range: use 0s to 7d",
        ),
        (
            pb::SubscriptionSpec {
                retry_schedule: vec!["1s".into(); 51],
                ..base()
            },
            "spec.retry_schedule: lists 51 waits; at most 50 are allowed",
        ),
        (
            pb::SubscriptionSpec {
                max_in_flight: 4_000_000_000,
                ..base()
            },
            "spec.max_in_flight: 4000000000 is out of range: use 1 to 1024",
        ),
    ];
    for (spec, message) in refusals {
        let refused = create(&app, spec).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}",
            refused.message()
        );
        assert_eq!(refused.message(), message);
    }
    let mut c = client(&app).await;
    let created = create(
        &app,
        pb::SubscriptionSpec {
            timeout: "5m".into(),
            retry_schedule: vec!["7d".into(); 50],
            max_in_flight: 1024,
            ..base()
        },
    )
    .await
    .expect("the largest values allowed are accepted");
    let spec = created.subscription.unwrap().spec.unwrap();
    assert_eq!(
        (spec.timeout.as_str(), spec.retry_schedule[0].as_str()),
        ("5m", "7d")
    );
    let subsecond = pb::SubscriptionSpec {
        name: "quick".into(),
        timeout: "250ms".into(),
        ..base()
    };
    let read_back = create(&app, subsecond).await.unwrap().subscription.unwrap();
    assert_eq!(
        read_back.spec.unwrap().timeout,
        "250ms",
        "shown as accepted"
    );
    let rotate = |grace: &str| pb::RotateSecretRequest {
        name: "absurd".into(),
        grace: grace.into(),
        ..Default::default()
    };
    let refused = c.rotate_secret(rotate("100000000000d")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("grace: "),
        "{}",
        refused.message()
    );
    c.rotate_secret(rotate("30d")).await.unwrap();
}

#[tokio::test]
async fn managed_subscriptions_survive_a_restart() {
    let (app, receiver) = app_with_receiver(r#"["*"]"#).await;
    let secret = create(&app, spec("kept", &receiver.url(), &["aggregate.batch.*"]))
        .await
        .unwrap()
        .secret;
    let (dir, clock) = app.stop().await;
    let app = crate::helpers::Spawn {
        webhooks: crate::helpers::webhook("etl", &receiver.url(), "events = [\"*\"]"),
        dir: Some(dir),
        clock: Some(clock),
        ..Default::default()
    }
    .start()
    .await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    let from_kept: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| signed_by(r, &[&secret]) == [true])
        .collect();
    assert_eq!(from_kept.len(), 1);
}

#[tokio::test]
async fn the_cli_creates_lists_and_tests_subscriptions() {
    let (app, _configured) = app_with_receiver(r#"["*"]"#).await;
    let receiver = Receiver::start().await;
    let server = format!("http://{}", app.addr);
    let herald = move |args: Vec<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .args(["--server", &server])
                .output()
                .unwrap()
        })
    };
    let create = [
        "subs",
        "create",
        "--name",
        "cli-hook",
        "--url",
        &receiver.url(),
        "--event",
        "aggregate.batch.*",
    ];
    let out = herald(create.iter().map(|s| s.to_string()).collect())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .expect("the secret is printed once")
        .to_owned();

    let out = herald(
        ["subs", "list", "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await
    .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[1]["name"], "cli-hook");
    assert_eq!(list[1]["managed_by"], "api");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&secret));

    let out = herald(
        ["subs", "test", "cli-hook"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await
    .unwrap();
    assert!(out.status.success());
    app.deliver().await;
    assert_eq!(signed_by(&receiver.received()[0], &[&secret]), [true]);
}

/// An update with a field mask changes what it names and keeps the rest,
/// header values included (the API never shows them, so a client could
/// not send them back).
#[tokio::test]
async fn an_update_with_a_field_mask_changes_only_the_named_fields() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    let mut original = spec("masked", "http://127.0.0.1:9/old", &["aggregate.batch.*"]);
    original.timeout = "7s".into();
    original.headers = [("x-team".to_owned(), "etl".to_owned())].into();
    create(&app, original).await.unwrap();

    let patch = pb::SubscriptionSpec {
        name: "masked".into(),
        url: receiver.url(),
        ..Default::default()
    };
    let request = |paths: &[&str]| pb::UpdateSubscriptionRequest {
        spec: Some(patch.clone()),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let updated = client(&app)
        .await
        .update_subscription(request(&["url"]))
        .await
        .unwrap()
        .into_inner()
        .spec
        .unwrap();
    assert_eq!(updated.url, receiver.url());
    assert_eq!(updated.timeout, "7s");
    assert_eq!(updated.events, ["aggregate.batch.*"]);
    assert_eq!(updated.retry_schedule, ["10s"]);

    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    let sent: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.header("x-team") == "etl")
        .collect();
    assert_eq!(
        sent.len(),
        1,
        "the masked subscription's delivery keeps its header"
    );

    let refused = client(&app)
        .await
        .update_subscription(request(&["url", "secret"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("update_mask.paths[1]: `secret`"),
        "{}",
        refused.message()
    );
}

/// Making a subscription rebuilds every delivery lane; a lane whose sends
/// hang keeps counting them afterwards, so its receiver still gets no
/// more than `max_in_flight` requests at once.
#[tokio::test]
async fn a_new_subscription_does_not_let_another_lane_exceed_its_max_in_flight() {
    let hanging = Receiver::start().await;
    hanging.always(Reply::Hang);
    let app = Spawn {
        webhooks: webhook(
            "hanging",
            &hanging.url(),
            "events = [\"*\"]\ntimeout = \"5m\"\nmax_in_flight = 2",
        ),
        background: true,
        ..Spawn::default()
    }
    .start()
    .await;
    app.start_batches(0..5).await;
    assert!(eventually(Duration::from_secs(10), || hanging.received().len() == 2).await);

    let added = Receiver::start().await;
    create(&app, spec("added", &added.url(), &["*"]))
        .await
        .unwrap();
    // Once the new subscription's lane has delivered, the rebuilt lanes
    // have run: the hanging lane's two sends still hold both its slots.
    let reply = app.start_batch("ev-after", "b-after", "sales").await;
    assert_eq!(reply.deliveries, 2);
    assert!(eventually(Duration::from_secs(10), || added.received().len() == 1).await);
    assert_eq!(hanging.received().len(), 2);
    assert_eq!(hanging.most_concurrent(), 2);
    app.stop().await;
}
