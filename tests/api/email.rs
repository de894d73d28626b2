//! Email alerts through a real SMTP server over TCP, with grouping and
//! repeat timing driven by the manual clock.

use std::time::Duration;

use herald::store::{DeliveryFilter, DeliveryState};

use crate::helpers::{
    batch_ref, dead_address, eventually, webhook, Receiver, Reply, Spawn, TestApp, SECRET,
};
use crate::smtp::{smtp_config, Mode, SmtpServer, Stage};

const GROUP_WAIT: Duration = Duration::from_secs(31);
const GROUP_INTERVAL: Duration = Duration::from_secs(301);

pub(crate) async fn app(config: String) -> TestApp {
    Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await
}

pub(crate) fn rule(extra: &str) -> String {
    format!(
        "[[email]]\nname = \"dataops\"\nto = [\"dataops@example.com\", \"oncall@example.com\"]\n\
         link_template = \"https://olap.example/{{{{ data.environment_id }}}}/cubes/{{{{ data.cube_id }}}}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn a_failed_batch_is_mailed_once_with_what_where_and_how_bad() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("")).await;
    app.start_batch("ev-0", "b-1", "sales").await;
    app.advance(Duration::from_secs(600));
    app.fail_batch("ev-1", "b-1", "sales").await;

    app.deliver().await;
    assert!(smtp.mails().is_empty(), "group_wait collects a burst first");
    app.advance(GROUP_WAIT);
    app.deliver().await;

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "<herald@example.com>");
    assert_eq!(mail.to, ["dataops@example.com", "oncall@example.com"]);
    assert_eq!(
        mail.subject(),
        "FAILED: refresh of SALES (prod) — 1 of 3 aggregates failed"
    );
    let text = mail.text();
    for expected in [
        "Batch         b-1",
        "Cube          SALES",
        "Environment   prod",
        "Project       finance",
        "Started       2026-03-01T12:00:00Z",
        "Finished      2026-03-01T12:10:00Z",
        "Duration      10 min",
        "Error         out of disk",
        "- agg-7: write failed",
        "Link          https://olap.example/prod/cubes/sales",
    ] {
        assert!(
            text.contains(expected),
            "text part lacks `{expected}`:\n{text}"
        );
    }
    assert!(
        mail.html()
            .contains("<th align=\"left\">Batch</th><td>b-1</td>"),
        "{}",
        mail.html()
    );
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.state == DeliveryState::Delivered));
}

#[tokio::test]
async fn a_burst_of_failures_is_one_mail_and_a_repeat_waits_for_the_repeat_interval() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("group_by = [\"environment\"]")).await;
    for i in 0..5 {
        app.fail_batch(&format!("ev-{i}"), &format!("b-{i}"), &format!("cube{i}"))
            .await;
        app.advance(Duration::from_secs(5));
    }
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .subject()
            .starts_with("5 FAILED: CUBE0 (prod), CUBE1 (prod)"),
        "{}",
        mails[0].subject()
    );
    let text = mails[0].text();
    assert_eq!(text.matches("FAILED: refresh of").count(), 5, "{text}");

    // The same cube failing again an hour later: still the same alert.
    app.advance(Duration::from_secs(3600));
    app.fail_batch("ev-again", "b-again", "cube0").await;
    app.advance(GROUP_INTERVAL);
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1, "within repeat_interval: no mail");

    // Past the 4 hour repeat interval it is mailed again.
    app.advance(Duration::from_secs(4 * 3600));
    app.fail_batch("ev-later", "b-later", "cube0").await;
    app.advance(GROUP_INTERVAL);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[1].subject(),
        "FAILED: refresh of CUBE0 (prod) — 1 of 3 aggregates failed"
    );
}

#[tokio::test]
async fn a_success_after_a_mailed_failure_sends_a_recovery_mail() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    app.succeed_batch("ev-2", "b-2", "sales").await;
    app.succeed_batch("ev-3", "b-3", "stock").await;
    app.advance(GROUP_INTERVAL);
    app.deliver().await;

    let subjects: Vec<String> = smtp.mails().iter().map(|m| m.subject()).collect();
    assert_eq!(
        subjects,
        [
            "FAILED: refresh of SALES (prod) — 1 of 3 aggregates failed",
            "RECOVERED: refresh of SALES (prod) succeeded"
        ],
        "stock never failed: its success is no news"
    );
}

#[tokio::test]
async fn recovery_mails_can_be_turned_off() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("send_resolved = false")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let reply = app.succeed_batch("ev-2", "b-2", "sales").await;
    assert_eq!(
        reply.deliveries, 0,
        "the rule does not even take the success"
    );
    assert_eq!(smtp.mails().len(), 1);
}

#[tokio::test]
async fn mail_waits_for_an_smtp_server_that_is_down_and_arrives_when_it_is_back() {
    let addr = dead_address().await;
    let app = app(smtp_config(
        addr,
        &rule("retry_schedule = [\"10s\", \"10s\"]"),
    ))
    .await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(
        rows[0].state,
        DeliveryState::Pending,
        "a refused connection is retried"
    );

    let smtp = SmtpServer::start_on(addr).await;
    app.advance(Duration::from_secs(15));
    app.deliver().await;
    assert_eq!(smtp.mails().len(), 1);
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(rows[0].state, DeliveryState::Delivered);
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0].error.is_some() && attempts[1].error.is_none(),
        "{attempts:?}"
    );
}

#[tokio::test]
async fn a_permanent_smtp_refusal_is_dead_after_one_attempt_and_recorded() {
    let smtp = SmtpServer::start().await;
    smtp.set_mode(Mode::RejectPermanently);
    let app = app(smtp.config("") + &rule("")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    for _ in 0..4 {
        app.advance(GROUP_INTERVAL);
        app.deliver().await;
    }
    let rows = app.deliveries_of("ev-1").await;
    assert_eq!(rows[0].state, DeliveryState::Dead);
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(550));
    assert_eq!(attempts[0].verdict, "dead");
    // The dead mail is reported (to this same rule), and that report's own
    // death is not reported again.
    let all = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    let types: Vec<&str> = all.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["aggregate.batch.failed", "herald.delivery.dead"]);
    assert!(all.iter().all(|r| r.state == DeliveryState::Dead));
}

#[tokio::test]
async fn a_disabled_subscription_reaches_the_default_admins_rule() {
    let smtp = SmtpServer::start().await;
    let gone = Receiver::start().await;
    gone.always(Reply::Status(410));
    let config = smtp.config("admins = [\"admins@example.com\"]")
        + &webhook("etl", &gone.url(), "events = [\"aggregate.batch.started\"]");
    let app = app(config).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    let mut dev = app.failed("ev-2", "b-2", "sales");
    dev.batch = Some(batch_ref("b-2", "dev", "sales"));
    app.ingest.clone().batch_failed(dev).await.unwrap();
    app.deliver().await;
    app.advance(GROUP_WAIT);
    app.deliver().await;

    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().map(|m| m.subject()).collect();
    assert_eq!(mails.len(), 2, "{subjects:?}");
    assert!(
        subjects.contains(&"SUBSCRIPTION DISABLED: etl — receiver answered 410 Gone".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"FAILED: refresh of SALES (dev) — 1 of 3 aggregates failed".to_owned()),
        "{subjects:?}"
    );
    assert!(mails.iter().all(|m| m.to == ["admins@example.com"]));
    let secret_part = SECRET.trim_start_matches("whsec_");
    assert!(
        mails
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.data).contains(secret_part)),
        "no secret in any mail"
    );
}

/// Starts Herald, waits for the connection it checks the SMTP server with
/// at start (it takes a greeting, then serves the first mail from the
/// pool), fails a batch of `sales` and of `stock` (two groups, two mails),
/// lets `group_wait` pass and delivers once.
async fn two_groups_mailed_once(smtp: &SmtpServer, schedule: &str) -> TestApp {
    let app = app(smtp.config("") + &rule(&format!("retry_schedule = {schedule}"))).await;
    let checked = eventually(Duration::from_secs(10), || smtp.sessions() >= 1).await;
    assert!(checked, "Herald checks the SMTP server at start");
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-2", "stock").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    app
}

#[tokio::test]
async fn a_temporary_smtp_refusal_at_any_stage_is_retried_and_every_alert_arrives_once() {
    let refusals = [
        (Stage::Greeting, "421 4.3.2 shutting down"),
        (Stage::MailFrom, "451 4.3.0 try later"),
        (Stage::RcptTo, "450 4.2.1 mailbox busy"),
        (Stage::Data, "452 4.3.1 out of storage"),
        (Stage::EndOfData, "451 4.3.0 try later"),
    ];
    for (stage, refusal) in refusals {
        let smtp = SmtpServer::start().await;
        // The first attempt of each group's mail, and the greeting of the
        // start-up check.
        let times = if stage == Stage::Greeting { 3 } else { 2 };
        smtp.script(stage, &vec![refusal; times]);
        let app = two_groups_mailed_once(&smtp, "[\"10s\", \"10s\"]").await;
        assert!(smtp.mails().is_empty(), "{stage:?}: refused");
        let code: u16 = refusal[..3].parse().unwrap();
        for event in ["ev-1", "ev-2"] {
            let rows = app.deliveries_of(event).await;
            assert_eq!(rows[0].state, DeliveryState::Pending, "{stage:?}: {rows:?}");
            let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
            assert_eq!(attempts[0].status_code, Some(code), "{stage:?}");
            assert_eq!(attempts[0].verdict, "retry", "{stage:?}");
        }

        // The retry goes out; later rounds send nothing more.
        for _ in 0..3 {
            app.advance(Duration::from_secs(15));
            app.deliver().await;
        }
        let mut subjects: Vec<String> = smtp.mails().iter().map(|m| m.subject()).collect();
        subjects.sort();
        assert_eq!(
            subjects,
            [
                "FAILED: refresh of SALES (prod) — 1 of 3 aggregates failed",
                "FAILED: refresh of STOCK (prod) — 1 of 3 aggregates failed",
            ],
            "{stage:?}"
        );
        for event in ["ev-1", "ev-2"] {
            let rows = app.deliveries_of(event).await;
            assert_eq!(rows[0].state, DeliveryState::Delivered, "{stage:?}");
            let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
            assert_eq!(attempts.len(), 2, "{stage:?}: {attempts:?}");
        }
    }
}

#[tokio::test]
async fn a_temporary_smtp_refusal_until_the_schedule_runs_out_is_dead_and_reported() {
    let smtp = SmtpServer::start().await;
    // Both groups' first attempt and retry.
    smtp.script(Stage::MailFrom, &["451 4.3.0 try later"; 4]);
    let app = two_groups_mailed_once(&smtp, "[\"10s\"]").await;
    app.advance(Duration::from_secs(15));
    app.deliver().await;

    let rows = app.deliveries_of("ev-1").await;
    assert_eq!(rows[0].state, DeliveryState::Dead);
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    let verdicts: Vec<&str> = attempts.iter().map(|a| a.verdict.as_str()).collect();
    assert_eq!(verdicts, ["retry", "dead"]);
    // Both dead mails are reported to the admins' rule (this same one),
    // and the server, accepting again, gets the report.
    let all = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    let reports = all
        .iter()
        .filter(|r| r.event_type == "herald.delivery.dead")
        .count();
    assert_eq!(reports, 2, "{all:?}");
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let subjects: Vec<String> = smtp.mails().iter().map(|m| m.subject()).collect();
    assert!(
        !subjects.is_empty() && subjects.iter().all(|s| s.starts_with("DELIVERY DEAD")),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn after_an_smtp_outage_a_group_goes_out_as_one_mail_with_every_alert() {
    let addr = dead_address().await;
    let grouped = "group_by = [\"environment\"]\nretry_schedule = [\"5m\", \"5m\", \"5m\"]";
    let app = app(smtp_config(addr, &rule(grouped))).await;
    for i in 0..5 {
        app.fail_batch(&format!("ev-{i}"), &format!("b-{i}"), &format!("cube{i}"))
            .await;
    }
    app.advance(GROUP_WAIT);
    app.deliver().await;
    // One more alert of the group while the server is still down: it
    // joins the group's retry instead of going out on its own.
    app.advance(Duration::from_secs(60));
    app.fail_batch("ev-late", "b-late", "cube5").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;

    let smtp = SmtpServer::start_on(addr).await;
    // Through the whole retry window (5 minutes ± 20 % jitter) and a
    // group_interval beyond, in small steps.
    for _ in 0..(12 * 60 / 5) {
        app.advance(Duration::from_secs(5));
        app.deliver().await;
    }
    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().map(|m| m.subject()).collect();
    assert_eq!(mails.len(), 1, "{subjects:?}");
    let text = mails[0].text();
    assert_eq!(text.matches("FAILED: refresh of").count(), 6, "{text}");
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter().all(|r| r.state == DeliveryState::Delivered),
        "{rows:?}"
    );
}

/// Every mail has a Message-ID and a Date; a group's later mails answer
/// its first (In-Reply-To and References), so mail clients thread them.
#[tokio::test]
async fn a_groups_mails_carry_ids_and_dates_and_later_ones_answer_the_first() {
    let smtp = SmtpServer::start().await;
    let app = app(smtp.config("") + &rule("")).await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-x", "b-x", "stock").await;
    app.advance(GROUP_WAIT);
    app.deliver().await;
    app.succeed_batch("ev-2", "b-2", "sales").await;
    app.advance(GROUP_INTERVAL);
    app.deliver().await;

    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        3,
        "sales failed, stock failed, sales recovered"
    );
    let parsed: Vec<_> = mails.iter().map(|m| m.parsed()).collect();
    for mail in &parsed {
        assert!(mail.date().is_some(), "a Date header");
        let id = mail.message_id().unwrap_or_default();
        assert!(
            id.ends_with("@example.com"),
            "a Message-ID in the sender's domain: {id}"
        );
    }
    let ids: std::collections::HashSet<_> = parsed.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), 3, "every Message-ID is new");
    let subject = |m: &mail_parser::Message| m.subject().unwrap_or_default().to_owned();
    let first = parsed
        .iter()
        .find(|m| subject(m).starts_with("FAILED: refresh of SALES"))
        .expect("the sales failure");
    let recovered = parsed
        .iter()
        .find(|m| subject(m).starts_with("RECOVERED"))
        .expect("the sales recovery");
    let answered = first.message_id().unwrap_or_default();
    assert_eq!(recovered.in_reply_to().as_text(), Some(answered));
    assert_eq!(recovered.references().as_text(), Some(answered));
    for opener in parsed
        .iter()
        .filter(|m| !subject(m).starts_with("RECOVERED"))
    {
        assert!(
            opener.in_reply_to().is_empty(),
            "a group's first mail answers nothing"
        );
    }
}

/// A stall is mailed with how far past its allowance the batch ran, in
/// words, and its times to the second.
#[tokio::test]
async fn a_stall_mail_says_how_long_past_its_allowance_in_words() {
    let smtp = SmtpServer::start().await;
    let stalls = "[stalls]\nmax_duration = \"5m\"\nlearn = false\n";
    let app = app(smtp.config("") + &rule("") + stalls).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(Duration::from_secs(6 * 60 + 3));
    assert_eq!(app.check().await.stalled, 1);
    app.advance(GROUP_WAIT);
    app.deliver().await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].subject(),
        "STALLED: refresh of SALES (prod) ran 1 min 3 s longer than its 5 min allowance"
    );
    assert!(
        mails[0]
            .text()
            .contains("Started       2026-03-01T12:00:00Z"),
        "{}",
        mails[0].text()
    );
}
