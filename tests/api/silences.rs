//! Silences and reminders: a real SMTP server, real HTTP receivers, the
//! admin API over gRPC, time driven by the manual clock.

use std::time::Duration;

use herald::api::pb::{self, admin_service_client::AdminServiceClient};
use herald::api::timestamp_to_proto;
use herald::clock::Clock;
use herald::store::DeliveryState;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::email::{app, rule};
use crate::helpers::{webhook, Receiver, TestApp};
use crate::smtp::SmtpServer;

const GROUP_WAIT: Duration = Duration::from_secs(31);
const HOUR: Duration = Duration::from_secs(3600);

async fn admin(app: &TestApp) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(app.channel().await)
}

/// `herald silence add --cube <cube> --environment prod --for <length>`.
fn silence_of(cube: &str, length: &str) -> pb::CreateSilenceRequest {
    pb::CreateSilenceRequest {
        cube: cube.to_owned(),
        environment: "prod".to_owned(),
        duration: length.to_owned(),
        comment: "reindex".to_owned(),
        ..Default::default()
    }
}

async fn silence(app: &TestApp, cube: &str, length: &str) -> pb::Silence {
    admin(app)
        .await
        .create_silence(silence_of(cube, length))
        .await
        .expect("silence created")
        .into_inner()
        .silence
        .unwrap()
}

async fn delivery_of(app: &TestApp, event_id: &str) -> herald::store::DeliveryRow {
    let rows = app.deliveries_of(event_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

/// The delivery log's rows in one state, over the admin API.
async fn in_state(app: &TestApp, state: pb::DeliveryState) -> Vec<pb::Delivery> {
    let request = pb::ListDeliveriesRequest {
        state: state as i32,
        ..Default::default()
    };
    let reply = admin(app).await.list_deliveries(request).await.unwrap();
    reply.into_inner().deliveries
}

#[tokio::test]
async fn a_silenced_cube_is_not_mailed_and_its_delivery_is_recorded_suppressed_by_the_silence() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("")).await;
    let made = silence(&app, "sales", "2h").await;
    assert!(made.silence_id.starts_with("sil_"), "{made:?}");
    assert_eq!(made.state, "active");
    assert_eq!(made.created_by, "anonymous", "no tokens: nobody to name");

    app.fail_batch("ev-sales", "b-1", "sales").await;
    app.fail_batch("ev-stock", "b-2", "stock").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "only the unsilenced cube is mailed");
    assert!(
        mails[0].subject().contains("STOCK"),
        "{}",
        mails[0].subject()
    );
    let held = delivery_of(&app, "ev-sales").await;
    assert_eq!(held.state, DeliveryState::Suppressed);
    assert_eq!(held.silence_id.as_deref(), Some(made.silence_id.as_str()));
    assert_eq!(
        delivery_of(&app, "ev-stock").await.state,
        DeliveryState::Delivered
    );

    // The admin API shows it, and filters by the new state.
    let listed = in_state(&app, pb::DeliveryState::Suppressed).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].event_id, "ev-sales");
    assert_eq!(listed[0].silence_id, made.silence_id);
    let delivered = in_state(&app, pb::DeliveryState::Delivered).await;
    let ids: Vec<&str> = delivered.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["ev-stock"]);
}

#[tokio::test]
async fn a_silence_made_after_the_event_still_holds_it_and_its_expiry_lets_the_next_mail_go() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    let made = silence(&app, "sal*", "2h").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    assert!(
        smtp.mails().is_empty(),
        "checked at dispatch, not at enqueue"
    );
    assert_eq!(
        delivery_of(&app, "ev-1").await.state,
        DeliveryState::Suppressed
    );

    let expired = admin(&app)
        .await
        .expire_silence(pb::ExpireSilenceRequest {
            silence_id: made.silence_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .silence
        .unwrap();
    assert_eq!(expired.state, "expired");
    let listed = admin(&app)
        .await
        .list_silences(pb::ListSilencesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.silences.is_empty(),
        "an expired silence is not listed"
    );
    let all = admin(&app)
        .await
        .list_silences(pb::ListSilencesRequest {
            include_expired: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.silences.len(), 1);

    // The cube still fails: its next failure is mailed as usual.
    app.advance(Duration::from_secs(60));
    app.fail_batch("ev-2", "b-2", "sales").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].subject().starts_with("FAILED: refresh of SALES"));
    assert_eq!(
        delivery_of(&app, "ev-2").await.state,
        DeliveryState::Delivered
    );
}

#[tokio::test]
async fn a_webhook_that_respects_silences_is_suppressed_and_one_that_does_not_is_delivered() {
    let (polite, plain) = (Receiver::start().await, Receiver::start().await);
    let config = webhook(
        "polite",
        &polite.url(),
        "events = [\"aggregate.batch.*\"]\nrespect_silences = true",
    ) + &webhook("plain", &plain.url(), "events = [\"aggregate.batch.*\"]");
    let app = app(config).await;
    let made = silence(&app, "sales", "1h").await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "stock").await;
    app.deliver().await;

    assert_eq!(polite.types(), ["aggregate.batch.failed"], "stock only");
    assert_eq!(polite.received()[0].json()["id"], "ev-2");
    assert_eq!(plain.received().len(), 2);
    let rows = app.deliveries_of("ev-1").await;
    let polite_row = rows.iter().find(|r| r.subscription == "polite").unwrap();
    assert_eq!(polite_row.state, DeliveryState::Suppressed);
    assert_eq!(
        polite_row.silence_id.as_deref(),
        Some(made.silence_id.as_str())
    );
    let plain_row = rows.iter().find(|r| r.subscription == "plain").unwrap();
    assert_eq!(plain_row.state, DeliveryState::Delivered);
    let metrics = reqwest::get(format!("http://{}/metrics", app.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let silenced = metrics
        .lines()
        .find(|l| l.starts_with("herald_deliveries_total{") && l.contains("outcome=\"silenced\""))
        .unwrap_or_else(|| panic!("no silenced outcome in\n{metrics}"));
    assert!(silenced.ends_with(" 1"), "{silenced}");

    // After the silence, the same subscription delivers again.
    app.advance(HOUR);
    app.fail_batch("ev-3", "b-3", "sales").await;
    app.deliver().await;
    assert_eq!(polite.received().len(), 2);
}

const TOKENS: &str = r#"
[[tokens]]
name = "airflow"
role = "reader"
token = "reader-token-0123456789"
[[tokens]]
name = "ops"
role = "admin"
token = "admin-token-0123456789ab"
"#;

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn an_admin_creates_and_expires_silences_and_a_reader_only_lists_them() {
    let app = app(TOKENS.to_owned()).await;
    let (reader, ops) = ("reader-token-0123456789", "admin-token-0123456789ab");
    let mut client = admin(&app).await;
    let denied = client
        .create_silence(with_token(silence_of("sales", "1h"), reader))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let made = client
        .create_silence(with_token(silence_of("sales", "1h"), ops))
        .await
        .unwrap()
        .into_inner()
        .silence
        .unwrap();
    assert_eq!(made.created_by, "ops", "the token's name");
    let listed = client
        .list_silences(with_token(pb::ListSilencesRequest::default(), reader))
        .await
        .expect("a reader lists silences")
        .into_inner();
    assert_eq!(listed.silences.len(), 1);
    assert_eq!(listed.silences[0].comment, "reindex");

    let expire = pb::ExpireSilenceRequest {
        silence_id: made.silence_id.clone(),
    };
    let denied = client
        .expire_silence(with_token(expire.clone(), reader))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .list_deliveries(with_token(pb::ListDeliveriesRequest::default(), reader))
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "only silences open to readers"
    );
    client
        .expire_silence(with_token(expire, ops))
        .await
        .expect("the admin expires it");
}

#[tokio::test]
async fn bad_silences_are_refused_naming_the_field() {
    let app = app(String::new()).await;
    let now = app.clock.now();
    let at = |secs: i64| Some(timestamp_to_proto(now + chrono::Duration::seconds(secs)));
    let cases = [
        (
            pb::CreateSilenceRequest {
                starts_at: at(3600),
                ends_at: at(60),
                duration: String::new(),
                ..silence_of("sales", "")
            },
            "ends_at",
        ),
        (
            pb::CreateSilenceRequest {
                cube: String::new(),
                environment: String::new(),
                ..silence_of("", "1h")
            },
            "matchers",
        ),
        (
            pb::CreateSilenceRequest {
                event_type: "aggregate.bach.*".to_owned(),
                ..silence_of("sales", "1h")
            },
            "event_type",
        ),
        (silence_of("sales", "soon"), "duration"),
        (silence_of("sales", ""), "ends_at"),
        (
            pb::CreateSilenceRequest {
                comment: " ".to_owned(),
                ..silence_of("sales", "1h")
            },
            "comment",
        ),
        (
            pb::CreateSilenceRequest {
                ends_at: at(60),
                ..silence_of("sales", "1h")
            },
            "duration",
        ),
    ];
    let mut client = admin(&app).await;
    for (request, field) in cases {
        let refused = client.create_silence(request.clone()).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{request:?}: {refused:?}"
        );
        assert!(
            refused.message().starts_with(&format!("{field}: ")),
            "{request:?}: {}",
            refused.message()
        );
    }
    let missing = client
        .expire_silence(pb::ExpireSilenceRequest {
            silence_id: "sil_nope".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(app.count_rows("silences").await, 0, "nothing stored");
}

/// A rule reminding every 6h, and the first mail about sales failing.
async fn sales_failure_mailed() -> (SmtpServer, TestApp) {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("repeat_interval = \"6h\"")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1);
    (smtp, app)
}

#[tokio::test]
async fn a_failure_that_stays_failed_is_mailed_again_every_repeat_interval_until_it_recovers() {
    let (smtp, app) = sales_failure_mailed().await;

    app.advance(HOUR);
    assert_eq!(app.check().await.reminded, 0, "not before repeat_interval");
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1);

    app.advance(5 * HOUR);
    assert_eq!(app.check().await.reminded, 1);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[1].subject(),
        "[still failing for 6h] FAILED: refresh of SALES (prod) — 1 of 3 aggregates failed"
    );

    app.advance(6 * HOUR);
    assert_eq!(app.check().await.reminded, 1);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3);
    assert!(
        mails[2].subject().starts_with("[still failing for 12h]"),
        "{}",
        mails[2].subject()
    );

    // Fixed: one recovery notice, and no more reminders.
    app.succeed_batch("ev-ok", "b-2", "sales").await;
    app.advance(GROUP_WAIT + Duration::from_secs(300));
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 4);
    assert!(
        mails[3].subject().starts_with("RECOVERED"),
        "{}",
        mails[3].subject()
    );
    app.advance(12 * HOUR);
    assert_eq!(app.check().await.reminded, 0);
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 4);
}

#[tokio::test]
async fn a_reminder_waits_while_its_alert_is_silenced_and_goes_out_when_the_silence_ends() {
    let (smtp, app) = sales_failure_mailed().await;
    silence(&app, "sales", "8h").await;

    app.advance(6 * HOUR);
    assert_eq!(app.check().await.reminded, 1);
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1, "silenced: no reminder");
    assert_eq!(
        delivery_of(&app, "ev-1").await.state,
        DeliveryState::Suppressed
    );

    app.advance(2 * HOUR);
    assert_eq!(app.check().await.reminded, 1, "due when the silence ends");
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].subject().starts_with("[still failing for 8h]"),
        "{}",
        mails[1].subject()
    );
}

async fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let server = app.addr.to_string();
    crate::helpers::herald_cli(args.iter().copied().chain(["--server", server.as_str()])).await
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn the_cli_adds_lists_and_expires_silences_and_shows_suppressed_deliveries() {
    let receiver = Receiver::start().await;
    let app = app(webhook(
        "etl",
        &receiver.url(),
        "events = [\"aggregate.batch.*\"]\nrespect_silences = true",
    ))
    .await;
    let add = [
        "silence",
        "add",
        "--cube",
        "sales",
        "--environment",
        "prod",
        "--for",
        "2h",
        "--comment",
        "reindex",
        "-o",
        "json",
    ];
    let made = json_of(&cli(&app, &add).await);
    let id = made["silence_id"].as_str().unwrap().to_owned();
    assert_eq!(made["cube"], "sales");
    assert_eq!(made["state"], "active");

    let table = cli(&app, &["silence", "list"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("SILENCE"), "{text}");
    assert!(text.contains(&id) && text.contains("reindex"), "{text}");
    let yaml = cli(&app, &["silence", "list", "-o", "yaml"]).await;
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(
        yaml.contains("silence_id: ") && yaml.contains(&id),
        "{yaml}"
    );

    app.fail_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    assert!(receiver.received().is_empty());
    let held = json_of(
        &cli(
            &app,
            &["deliveries", "list", "--state", "suppressed", "--json"],
        )
        .await,
    );
    assert_eq!(held[0]["event_id"], "ev-1");
    assert_eq!(held[0]["state"], "suppressed");
    assert_eq!(held[0]["silence_id"], id.as_str());

    let expired = cli(&app, &["silence", "expire", &id]).await;
    assert!(expired.status.success());
    assert_eq!(
        String::from_utf8_lossy(&expired.stdout).trim(),
        format!("ok: {id} expired")
    );
    let left = json_of(&cli(&app, &["silence", "list", "--json"]).await);
    assert_eq!(left, serde_json::json!([]));

    let refused = cli(
        &app,
        &[
            "silence",
            "add",
            "--cube",
            "sales",
            "--for",
            "2h",
            "--comment",
            " ",
        ],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("comment"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn a_reminder_tells_of_the_newest_failure_of_its_cube() {
    let (smtp, app) = sales_failure_mailed().await;
    app.advance(HOUR);
    app.fail_batch("ev-2", "b-2", "sales").await;
    app.advance(GROUP_WAIT + Duration::from_secs(300));
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1, "within repeat_interval: no mail");

    app.advance(5 * HOUR);
    assert_eq!(app.check().await.reminded, 1);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1].subject().starts_with("[still failing for 6h"),
        "{}",
        mails[1].subject()
    );
    assert!(
        mails[1].text().contains("Batch         b-2"),
        "{}",
        mails[1].text()
    );
}

#[tokio::test]
async fn a_subscription_created_over_the_api_can_respect_silences() {
    let receiver = Receiver::start().await;
    let app = app(String::new()).await;
    let create = [
        "subs",
        "create",
        "--name",
        "api-hook",
        "--url",
        &receiver.url(),
        "--event",
        "aggregate.batch.failed",
        "--respect-silences",
        "true",
        "-o",
        "json",
    ];
    let made = json_of(&cli(&app, &create).await);
    assert_eq!(made["respect_silences"], true, "{made}");
    silence(&app, "sales", "1h").await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "stock").await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(receiver.received()[0].json()["id"], "ev-2");
    assert_eq!(
        delivery_of(&app, "ev-1").await.state,
        DeliveryState::Suppressed
    );

    let off = [
        "subs",
        "update",
        "--name",
        "api-hook",
        "--respect-silences",
        "false",
    ];
    assert!(cli(&app, &off).await.status.success());
    app.fail_batch("ev-3", "b-3", "sales").await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 2, "no longer held back");
}
