//! Dependency gates (`[[gates]]`): opened once when every required cube
//! has succeeded, blocked by a failure, missed at a deadline on the
//! injected clock; read over the query API and waited for with the CLI.

use std::time::Duration;

use herald::api::pb;
use serde_json::Value;
use tonic::Code;

use crate::helpers::{herald_cli, on_postgres, webhook, Receiver, Spawn, TestApp};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

const GATE: &str = "[[gates]]\nname = \"finance-daily\"\nenvironment = \"prod\"\n\
                    requires = [\"sales\", \"stock\", \"F*\"]\nwithin = \"24h\"\n\
                    deadline = { cron = \"0 7 * * *\", grace = \"30m\" }\n";

async fn app_with_gate(receiver: &Receiver) -> TestApp {
    let hook = webhook("gates", &receiver.url(), "events = [\"aggregate.gate.*\"]");
    Spawn {
        webhooks: format!("{GATE}\n{hook}"),
        ..Spawn::default()
    }
    .start()
    .await
}

/// The gate events delivered so far, in order.
async fn gate_events(app: &TestApp, receiver: &Receiver) -> Vec<Value> {
    app.deliver().await;
    receiver.received().iter().map(|r| r.json()).collect()
}

async fn get_gate(app: &TestApp) -> pb::Gate {
    app.query
        .clone()
        .get_gate(pb::GetGateRequest {
            name: "finance-daily".into(),
        })
        .await
        .expect("the gate is configured")
        .into_inner()
        .gate
        .expect("the reply carries the gate")
}

fn opened_batches(event: &Value) -> Vec<(String, String)> {
    event["data"]["cubes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cube_id"].as_str().unwrap().to_owned(),
                c["batch_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_gate_opens_once_when_its_last_cube_succeeds_whatever_the_order() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    app.succeed_batch("ev-1", "b-fx", "fx").await;
    app.advance(MINUTE);
    app.succeed_batch("ev-2", "b-stock", "stock").await;
    let gate = get_gate(&app).await;
    assert_eq!(gate.state, pb::GateState::Waiting as i32);
    assert_eq!(gate.waiting_for, vec!["sales"]);
    assert!(gate.opened_at.is_none());

    app.advance(MINUTE);
    app.succeed_batch("ev-3", "b-sales", "sales").await;
    // A late report of an older stock batch changes nothing.
    let mut late = app.succeeded("ev-4", "b-stock-old", "stock");
    late.meta.as_mut().unwrap().occurred_at = Some(herald::api::timestamp_to_proto(
        chrono::DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
            .unwrap()
            .into(),
    ));
    app.ingest.clone().batch_succeeded(late).await.unwrap();
    let events = gate_events(&app, &receiver).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["aggregate.gate.opened"]);
    let opened = &events[0];
    assert_eq!(opened["source"], "herald");
    assert_eq!(opened["subject"], "environments/prod/gates/finance-daily");
    assert_eq!(opened["data"]["gate"], "finance-daily");
    let mut batches = opened_batches(opened);
    batches.sort();
    assert_eq!(
        batches,
        vec![
            ("fx".into(), "b-fx".into()),
            ("sales".into(), "b-sales".into()),
            ("stock".into(), "b-stock".into()),
        ]
    );
    assert!(opened["data"]["cubes"][0]["finished_at"].is_string());

    let gate = get_gate(&app).await;
    assert_eq!(gate.state, pb::GateState::Open as i32);
    assert_eq!(gate.opened_count, 1);
    assert!(gate.waiting_for.is_empty());
}

#[tokio::test]
async fn a_cube_refreshed_twice_counts_once_and_the_gate_opens_again_only_after_all_again() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    app.succeed_batch("ev-1", "b-s1", "sales").await;
    app.advance(MINUTE);
    app.succeed_batch("ev-2", "b-s2", "sales").await;
    app.succeed_batch("ev-3", "b-st1", "stock").await;
    assert!(gate_events(&app, &receiver).await.is_empty());
    app.succeed_batch("ev-4", "b-fx1", "fx").await;
    app.advance(MINUTE);
    app.succeed_batch("ev-5", "b-s3", "sales").await;
    app.succeed_batch("ev-6", "b-st2", "stock").await;
    let gate = get_gate(&app).await;
    assert_eq!(gate.state, pb::GateState::Waiting as i32);
    assert_eq!(gate.waiting_for, vec!["fx"]);
    app.succeed_batch("ev-7", "b-fx2", "fx").await;

    let events = gate_events(&app, &receiver).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(opened_batches(&events[0]).contains(&("sales".into(), "b-s2".into())));
    assert!(opened_batches(&events[1]).contains(&("sales".into(), "b-s3".into())));
    assert!(opened_batches(&events[1]).contains(&("fx".into(), "b-fx2".into())));
    assert_eq!(get_gate(&app).await.opened_count, 2);
}

#[tokio::test]
async fn a_failure_blocks_the_gate_and_the_retry_opens_it() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    app.succeed_batch("ev-1", "b-sales", "sales").await;
    app.succeed_batch("ev-2", "b-fx", "fx").await;
    app.fail_batch("ev-3", "b-stock-1", "stock").await;
    let gate = get_gate(&app).await;
    let blocked = gate.blocked_by.expect("blocked by stock");
    assert_eq!(
        (blocked.cube_id.as_str(), blocked.error_message.as_str()),
        ("stock", "out of disk")
    );
    app.advance(10 * MINUTE);
    app.succeed_batch("ev-4", "b-stock-2", "stock").await;

    let events = gate_events(&app, &receiver).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec!["aggregate.gate.blocked", "aggregate.gate.opened"]
    );
    assert_eq!(events[0]["data"]["cube_id"], "stock");
    assert_eq!(events[0]["data"]["batch_id"], "b-stock-1");
    assert_eq!(
        events[0]["data"]["waiting_for"],
        serde_json::json!(["stock"])
    );
    assert!(opened_batches(&events[1]).contains(&("stock".into(), "b-stock-2".into())));
    assert!(get_gate(&app).await.blocked_by.is_none());
}

#[tokio::test]
async fn a_success_older_than_within_must_refresh_again() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    app.succeed_batch("ev-1", "b-sales-1", "sales").await;
    app.succeed_batch("ev-2", "b-fx-1", "fx").await;
    app.advance(25 * HOUR);
    app.succeed_batch("ev-3", "b-stock-1", "stock").await;
    let mut waiting = get_gate(&app).await.waiting_for;
    waiting.sort();
    assert_eq!(waiting, vec!["fx", "sales"]);
    app.succeed_batch("ev-4", "b-sales-2", "sales").await;
    app.succeed_batch("ev-5", "b-fx-2", "fx").await;
    let events = gate_events(&app, &receiver).await;
    assert_eq!(events.len(), 1);
    assert!(opened_batches(&events[0]).contains(&("fx".into(), "b-fx-2".into())));
}

#[tokio::test]
async fn a_deadline_passed_without_an_opening_raises_one_miss_on_the_injected_clock() {
    let receiver = Receiver::start().await;
    // The clock starts at 2026-03-01 12:00; the first deadline is 03-02 07:30.
    let app = app_with_gate(&receiver).await;
    assert_eq!(
        get_gate(&app).await.next_deadline,
        Some(herald::api::timestamp_to_proto(
            chrono::DateTime::parse_from_rfc3339("2026-03-02T07:30:00Z")
                .unwrap()
                .into()
        ))
    );
    app.succeed_batch("ev-1", "b-sales", "sales").await;
    app.advance(19 * HOUR + 29 * MINUTE);
    assert_eq!(
        app.monitor.check_gates().await.unwrap(),
        0,
        "07:29: not yet"
    );
    app.advance(MINUTE);
    assert_eq!(app.monitor.check_gates().await.unwrap(), 1, "07:30: missed");
    assert_eq!(app.monitor.check_gates().await.unwrap(), 0, "judged once");
    app.check().await;

    // Open today, after the miss: the next deadline is met.
    app.advance(MINUTE);
    app.succeed_batch("ev-2", "b-stock", "stock").await;
    app.succeed_batch("ev-3", "b-fx", "fx").await;
    app.advance(24 * HOUR);
    assert_eq!(app.monitor.check_gates().await.unwrap(), 0);
    // Not open again by the day after: missed again.
    app.advance(24 * HOUR);
    assert_eq!(app.monitor.check_gates().await.unwrap(), 1);

    let events = gate_events(&app, &receiver).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec![
            "aggregate.gate.missed",
            "aggregate.gate.opened",
            "aggregate.gate.missed"
        ]
    );
    assert_eq!(events[0]["data"]["deadline"], "2026-03-02T07:30:00Z");
    let mut waiting: Vec<&str> = events[0]["data"]["waiting_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    waiting.sort();
    assert_eq!(waiting, vec!["F*", "stock"]);
    assert_eq!(events[2]["data"]["deadline"], "2026-03-04T07:30:00Z");
}

#[tokio::test]
async fn gate_state_survives_a_restart() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    app.succeed_batch("ev-1", "b-sales", "sales").await;
    app.succeed_batch("ev-2", "b-stock", "stock").await;
    let (dir, clock) = app.stop().await;
    let hook = webhook("gates", &receiver.url(), "events = [\"aggregate.gate.*\"]");
    let app = Spawn {
        webhooks: format!("{GATE}\n{hook}"),
        dir: Some(dir),
        clock: Some(clock),
        ..Spawn::default()
    }
    .start()
    .await;
    app.succeed_batch("ev-3", "b-fx", "fx").await;
    let events = gate_events(&app, &receiver).await;
    assert_eq!(events.len(), 1);
    assert_eq!(opened_batches(&events[0]).len(), 3);
}

#[tokio::test]
async fn gates_are_listed_and_a_bad_or_unknown_name_is_refused() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    let list = app
        .query
        .clone()
        .list_gates(pb::ListGatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.gates.len(), 1);
    assert_eq!(list.gates[0].requires, vec!["sales", "stock", "F*"]);
    assert_eq!(list.gates[0].deadline_cron, "0 7 * * *");
    let mut waiting = list.gates[0].waiting_for.clone();
    waiting.sort();
    assert_eq!(waiting, vec!["F*", "sales", "stock"]);

    let ask = |name: &str| {
        let mut query = app.query.clone();
        let name = name.to_owned();
        async move { query.get_gate(pb::GetGateRequest { name }).await }
    };
    let empty = ask("").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().starts_with("name:"), "{}", empty.message());
    let unknown = ask("nightly").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("nightly"));
}

#[tokio::test]
async fn herald_gates_and_wait_gate_report_with_a_cubes_exit_codes() {
    let receiver = Receiver::start().await;
    let app = app_with_gate(&receiver).await;
    let server = format!("http://{}", app.addr);
    // The manual clock's day, whatever the real time is.
    let wait = |after: &'static str, timeout: &'static str| {
        let server = server.clone();
        async move {
            herald_cli([
                "wait",
                "--gate",
                "finance-daily",
                "--server",
                &server,
                "--after",
                after,
                "--timeout",
                timeout,
            ])
            .await
        }
    };
    let out = wait("2026-03-01T00:00:00Z", "1s").await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("timed out after 1s: gate finance-daily"),
        "{line}"
    );

    app.fail_batch("ev-1", "b-stock-1", "stock").await;
    let out = wait("2026-03-01T00:00:00Z", "1m").await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cube stock failed in batch b-stock-1"));

    // A wait for what follows the failure returns when the gate opens.
    app.advance(MINUTE);
    app.succeed_batch("ev-2", "b-sales", "sales").await;
    app.succeed_batch("ev-3", "b-fx", "fx").await;
    let waiting = tokio::spawn(wait("2026-03-01T12:00:30Z", "1m"));
    app.succeed_batch("ev-4", "b-stock-2", "stock").await;
    let out = waiting.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("opened: gate finance-daily (prod)"),
        "{line}"
    );
    assert!(line.contains("stock b-stock-2"), "{line}");

    let out = herald_cli(["gates", "--server", &server, "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["state"], "open");
    assert_eq!(list[0]["opened_count"], 1);
    let out = herald_cli(["gates", "--server", &server]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("GATE") && table.contains("OPEN"), "{table}");
    let out = herald_cli(["gates", "nightly", "--server", &server]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nightly"));
    let out = herald_cli(["wait", "--gate", "g", "--cube-id", "sales"]).await;
    assert_eq!(out.status.code(), Some(1), "bad usage");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{out:?}"
    );
}

/// Two processes ingesting the successes of two required cubes at once on
/// one PostgreSQL database: each round opens the gate exactly once.
#[tokio::test]
async fn replicas_applying_two_cubes_at_once_open_the_gate_once_per_round() {
    if !on_postgres() {
        return;
    }
    let config =
        "[[gates]]\nname = \"pair\"\nenvironment = \"prod\"\nrequires = [\"sales\", \"stock\"]\n";
    let first = Spawn {
        webhooks: config.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    let second = Spawn {
        webhooks: config.to_owned(),
        dir: Some(first.dir.clone()),
        clock: Some(first.clock.clone()),
        ..Spawn::default()
    }
    .start()
    .await;
    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        let (a, sa) = (format!("a-{round}"), format!("sa-{round}"));
        let (b, sb) = (format!("b-{round}"), format!("sb-{round}"));
        tokio::join!(
            first.succeed_batch(&a, &sa, "sales"),
            second.succeed_batch(&b, &sb, "stock")
        );
        first.advance(MINUTE);
    }
    let opened = first
        .dir
        .count_rows("events WHERE event_type = 'aggregate.gate.opened'")
        .await;
    assert_eq!(opened, ROUNDS as i64);
}

/// Email rules take a missed gate by default, like a failure, and its
/// opening resolves it.
#[tokio::test]
async fn a_missed_gate_is_mailed_by_a_default_rule_and_its_opening_resolves_it() {
    let smtp = crate::smtp::SmtpServer::start().await;
    let rule = "[[email]]\nname = \"dataops\"\nto = [\"dataops@example.com\"]\n";
    let app = Spawn {
        webhooks: format!("{GATE}\n{}{rule}", smtp.config("")),
        ..Spawn::default()
    }
    .start()
    .await;
    app.advance(19 * HOUR + 30 * MINUTE);
    assert_eq!(app.monitor.check_gates().await.unwrap(), 1);
    app.advance(MINUTE);
    app.deliver().await;
    app.succeed_batch("ev-1", "b-sales", "sales").await;
    app.succeed_batch("ev-2", "b-stock", "stock").await;
    app.succeed_batch("ev-3", "b-fx", "fx").await;
    app.advance(10 * MINUTE);
    app.deliver().await;

    let subjects: Vec<String> = smtp.mails().iter().map(|m| m.subject()).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(
        subjects[0].starts_with(
            "GATE MISSED: gate finance-daily (prod) did not open by 2026-03-02T07:30:00Z"
        ),
        "{subjects:?}"
    );
    assert_eq!(subjects[1], "GATE OPEN: gate finance-daily (prod) opened");
}

/// A healthcheck on a gate: a success ping when it opens, /fail when a
/// required cube fails.
#[tokio::test]
async fn a_healthcheck_pings_a_gates_opening_and_failures() {
    let receiver = Receiver::start().await;
    let check = format!(
        "[[healthchecks]]\nname = \"hc\"\nurl = \"http://{}/ping/{{{{ data.gate }}}}\"\nevents = [\"aggregate.gate.*\"]\n",
        receiver.addr
    );
    let app = Spawn {
        webhooks: format!("{GATE}\n{check}"),
        ..Spawn::default()
    }
    .start()
    .await;
    app.fail_batch("ev-1", "b-stock-1", "stock").await;
    app.succeed_batch("ev-2", "b-stock-2", "stock").await;
    app.succeed_batch("ev-3", "b-sales", "sales").await;
    app.succeed_batch("ev-4", "b-fx", "fx").await;
    app.deliver().await;
    let received = receiver.received();
    let paths: Vec<&str> = received
        .iter()
        .map(|r| r.path.split('?').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["/ping/finance-daily/fail", "/ping/finance-daily"]
    );
    let body = String::from_utf8(received[1].body.to_vec()).unwrap();
    assert_eq!(body, "aggregate.gate.opened: gate finance-daily (prod)");
}
