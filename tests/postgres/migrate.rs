//! `herald migrate`: the real binary copies a SQLite install that a real
//! Herald filled into a fresh PostgreSQL database, and Herald carries on
//! there with what was pending.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use herald::api::pb::{self, subscription_service_client::SubscriptionServiceClient};
use herald::store::DeliveryState;

use crate::helpers::{dead_address, webhook, Receiver, Spawn, TestApp, TestDir};
use crate::smtp::SmtpServer;

/// Every table that holds state, as `herald migrate` copies them.
const TABLES: [&str; 12] = [
    "events",
    "batches",
    "environments",
    "schema_log",
    "subscriptions",
    "deliveries",
    "attempts",
    "schedules",
    "email_groups",
    "email_alerts",
    "managed_subscriptions",
    "documents",
];

/// Runs the real `herald migrate` with these arguments.
async fn migrate(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("migrate")
        .args(args)
        .output()
        .await
        .expect("herald runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A webhook for every event, a mail rule for failures (through `smtp`)
/// and a schedule: what a populated install has configured.
fn config(receiver: &Receiver, smtp: &SmtpServer) -> String {
    webhook("etl", &receiver.url(), "events = [\"*\"]")
        + &smtp.config("")
        + "[[email]]\nname = \"dataops\"\nto = [\"dataops@example.com\"]\n\
           events = [\"aggregate.batch.failed\"]\ngroup_wait = \"30s\"\n\
           [[schedules]]\nname = \"sales-hourly\"\nenvironment = \"prod\"\ncube = \"sales\"\n\
           every = \"1h\"\ngrace = \"10m\"\n"
}

/// Creates `api-hook` over the admin API, for schema publishes, at `url`;
/// returns its signing secret.
async fn create_managed(app: &TestApp, url: &str) -> String {
    let spec = pb::SubscriptionSpec {
        name: "api-hook".into(),
        kind: pb::SubscriptionKind::Webhook as i32,
        url: url.into(),
        events: vec!["schema.published".into()],
        retry_schedule: vec!["1h".into()],
        ..Default::default()
    };
    SubscriptionServiceClient::new(app.channel().await)
        .create_subscription(pb::CreateSubscriptionRequest { spec: Some(spec) })
        .await
        .expect("subscription created")
        .into_inner()
        .secret
}

/// A succeeded and a failed batch, an environment, a project document and
/// a schema publish.
async fn ingest_a_day(app: &TestApp) {
    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.start_batch("ev-3", "b-2", "stock").await;
    app.fail_batch("ev-4", "b-2", "stock").await;
    let env = app.environment_created("ev-5");
    app.ingest.clone().environment_created(env).await.unwrap();
    let xml = b"<project name=\"finance\"><cube id=\"sales\"/></project>".to_vec();
    let published = app.published("ev-6", xml);
    app.ingest.clone().project_event(published).await.unwrap();
    let schema = app.schema_published("ev-7");
    app.ingest.clone().schema_published(schema).await.unwrap();
}

/// Leaves `id` leased to a process that is gone, as a SIGKILL mid-send
/// would (the test stops Herald cleanly, which gives leases back).
async fn lease_to_a_dead_process(dir: &TestDir, id: &str) {
    let url = dir.store_url();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let leased = sqlx::query(
        "UPDATE deliveries SET lease_owner = 'old-host/1', lease_until = 253402300799000
         WHERE id = ?",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(leased.rows_affected(), 1);
    pool.close().await;
}

#[tokio::test]
async fn a_populated_sqlite_install_moves_whole_and_its_pending_delivery_goes_out_after() {
    let etl = Receiver::start().await;
    let smtp = SmtpServer::start().await;
    let down = dead_address().await;
    let app = Spawn {
        webhooks: config(&etl, &smtp),
        dir: Some(TestDir::sqlite()),
        ..Spawn::default()
    }
    .start()
    .await;
    let secret = create_managed(&app, &format!("http://{down}/hook")).await;
    ingest_a_day(&app).await;
    app.deliver().await;
    app.advance(Duration::from_secs(31));
    app.deliver().await;
    assert_eq!(etl.received().len(), 7, "every event reached `etl`");
    assert_eq!(smtp.mails().len(), 1, "the failure was mailed");
    let pending = app.deliveries_of("ev-7").await;
    let pending = pending
        .iter()
        .find(|d| d.subscription == "api-hook")
        .expect("api-hook has a delivery of the publish");
    assert_eq!(
        (pending.state, pending.attempts),
        (DeliveryState::Pending, 1)
    );
    let (webhook_id, due) = (pending.id.clone(), pending.next_attempt_at);
    let last_seq = app.store.last_seq().await.unwrap();
    let (sqlite, clock) = app.stop().await;
    lease_to_a_dead_process(&sqlite, &webhook_id).await;

    let postgres = TestDir::create().await;
    let output = migrate(&["--from", &sqlite.store_url(), "--to", &postgres.store_url()]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(stdout.contains("every count matches"), "{stdout}");
    for table in TABLES {
        let (from, to) = (
            sqlite.count_rows(table).await,
            postgres.count_rows(table).await,
        );
        assert!(from > 0, "the install has rows in {table}");
        assert_eq!(from, to, "{table}");
        assert!(
            stdout.contains(&format!("{table:<24}{from:>12}{to:>12}")),
            "{stdout}"
        );
    }

    let receiver = Receiver::start_on(down).await;
    let app = Spawn {
        webhooks: config(&etl, &smtp),
        dir: Some(Arc::clone(&postgres)),
        clock: Some(clock),
        ..Spawn::default()
    }
    .start()
    .await;
    let until_due = due - herald::clock::Clock::now(&app.clock);
    app.advance(until_due.to_std().unwrap() + Duration::from_secs(1));
    app.deliver().await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "the pending delivery went out, once");
    assert_eq!(received[0].header("webhook-id"), webhook_id);
    assert!(received[0].signature_is_valid(&secret), "the secret moved");
    assert_eq!(received[0].json()["type"], "schema.published");
    assert_eq!(etl.received().len(), 7, "nothing delivered is sent again");
    assert_eq!(smtp.mails().len(), 1, "nothing mailed is mailed again");
    let row = app.store.get_delivery(&webhook_id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (DeliveryState::Delivered, 2));

    let reply = app.start_batch("ev-8", "b-3", "sales").await;
    assert_eq!(
        reply.sequence,
        last_seq as u64 + 1,
        "new events continue the sequence"
    );
    assert_eq!(reply.deliveries, 1);
    assert_eq!(
        postgres.count_rows("deliveries").await,
        sqlite.count_rows("deliveries").await + 1,
        "the new event's delivery joins the copied ones"
    );
}

#[tokio::test]
async fn a_target_with_herald_data_is_refused_unless_forced() {
    let etl = Receiver::start().await;
    let source = Spawn {
        webhooks: webhook("etl", &etl.url(), "events = [\"*\"]"),
        dir: Some(TestDir::sqlite()),
        ..Spawn::default()
    }
    .start()
    .await;
    source.start_batch("ev-1", "b-1", "sales").await;
    let (sqlite, _) = source.stop().await;
    let target = Spawn {
        webhooks: webhook("other", &etl.url(), "events = [\"*\"]"),
        ..Spawn::default()
    }
    .start()
    .await;
    target.start_batch("ev-a", "b-a", "stock").await;
    target.start_batch("ev-b", "b-b", "stock").await;
    let (postgres, _) = target.stop().await;
    let (from, to) = (sqlite.store_url(), postgres.store_url());

    let refused = migrate(&["--from", &from, "--to", &to]).await;
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("already holds Herald data"), "{message}");
    assert!(message.contains("events 2 rows"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert_eq!(postgres.count_rows("events").await, 2, "nothing changed");

    let forced = migrate(&["--from", &from, "--to", &to, "--force"]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));
    for table in ["events", "batches", "subscriptions", "deliveries"] {
        assert_eq!(
            postgres.count_rows(table).await,
            sqlite.count_rows(table).await,
            "{table}"
        );
    }
    assert_eq!(postgres.count_rows("events").await, 1);
}

#[tokio::test]
async fn a_missing_source_is_named_and_not_created() {
    let postgres = TestDir::create().await;
    let missing = postgres.path().join("herald.db");
    let output = migrate(&[
        "--from",
        &format!("sqlite://{}", missing.display()),
        "--to",
        &postgres.store_url(),
    ])
    .await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{} does not exist", missing.display())),
        "{message}"
    );
    assert!(!missing.exists(), "no empty store was created");
    assert_eq!(
        postgres
            .count_rows("pg_tables WHERE schemaname = 'public'")
            .await,
        0,
        "the target was not touched"
    );
}

#[tokio::test]
async fn a_target_that_cannot_be_used_is_named_with_its_password_masked() {
    let source = Spawn {
        dir: Some(TestDir::sqlite()),
        ..Spawn::default()
    }
    .start()
    .await;
    let (sqlite, _) = source.stop().await;
    let postgres = TestDir::create().await;
    let url = format!("{}_absent", postgres.store_url()).replacen('@', ":s3cret@", 1);
    let output = migrate(&["--from", &sqlite.store_url(), "--to", &url]).await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(":***@"), "{message}");
    assert!(message.contains("_absent"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}
