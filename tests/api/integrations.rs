//! Healthcheck pings and payload templates, with the README's examples.

use crate::helpers::{batch_ref, Receiver, Spawn, TestApp, AIRFLOW_AUTH, AIRFLOW_BEARER};

/// Loads an example from `examples/`, pointing its URL at `receiver`.
async fn app_with_example(file: &str, real_base: &str, receiver: &Receiver) -> TestApp {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(path).unwrap();
    let config = example.replace(real_base, &format!("http://{}", receiver.addr));
    Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await
}

#[tokio::test]
async fn every_example_is_quoted_in_the_readme() {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for file in [
        "airflow.toml",
        "airflow3-assets.toml",
        "slack.toml",
        "healthchecks.toml",
    ] {
        let example =
            std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        assert!(
            readme.contains(example.trim()),
            "README must quote examples/{file} verbatim"
        );
    }
}

#[tokio::test]
async fn a_healthcheck_gets_start_then_success_with_one_run_id_and_fail_on_failure() {
    let receiver = Receiver::start().await;
    let app = app_with_example("healthchecks.toml", "https://hc-ping.com", &receiver).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.fail_batch("ev-3", "b-2", "sales").await;
    let mut dev = app.failed("ev-4", "b-3", "sales");
    dev.batch = Some(batch_ref("b-3", "dev", "sales"));
    app.ingest.clone().batch_failed(dev).await.unwrap();
    app.deliver().await;

    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    let rid = herald::core::subscription::run_id("b-1");
    let rid2 = herald::core::subscription::run_id("b-2");
    assert_eq!(
        paths,
        [
            format!("/your-project-ping-key/sales/start?rid={rid}"),
            format!("/your-project-ping-key/sales?rid={rid}"),
            format!("/your-project-ping-key/sales/fail?rid={rid2}"),
        ],
        "the dev environment is filtered out"
    );
    let body = String::from_utf8(receiver.received()[2].body.to_vec()).unwrap();
    assert_eq!(
        body,
        "aggregate.batch.failed: batch b-2 of cube SALES (prod): out of disk"
    );
}

#[tokio::test]
async fn the_airflow_example_renders_the_exact_body_airflow_receives() {
    let receiver = Receiver::start().await;
    let app = app_with_example("airflow.toml", "http://airflow.internal:8080", &receiver).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.deliver().await;

    let got = receiver.received();
    assert_eq!(got.len(), 1, "only the success triggers the DAG");
    assert_eq!(got[0].path, "/api/v1/dags/sales_downstream/dagRuns");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].header("authorization"), AIRFLOW_AUTH);
    let expected = r#"
{
  "dag_run_id": "herald-b-1",
  "conf": {
    "environment": "prod",
    "cube": "sales",
    "batch_id": "b-1",
    "finished_at": "2026-03-01T12:00:00Z",
    "rows_written": 1200
  }
}
"#;
    assert_eq!(
        String::from_utf8(got[0].body.to_vec()).unwrap(),
        expected.trim_start_matches('\n')
    );
    assert!(
        got[0].signature_is_valid(crate::helpers::SECRET)
            || got[0].header("webhook-signature").is_empty()
    );
}

#[tokio::test]
async fn the_airflow3_example_posts_the_exact_asset_events_airflow_receives() {
    let receiver = Receiver::start().await;
    let app = app_with_example(
        "airflow3-assets.toml",
        "http://airflow.internal:8080",
        &receiver,
    )
    .await;
    app.succeed_batch("ev-1", "b-stock", "stock").await;
    app.succeed_batch("ev-2", "b-fx", "fx").await;
    app.succeed_batch("ev-3", "b-sales", "sales").await;
    app.deliver().await;

    let got = receiver.received();
    assert_eq!(got.len(), 2, "the sales refresh and the gate's opening");
    for request in &got {
        assert_eq!(request.path, "/api/v2/assets/events");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("authorization"), AIRFLOW_BEARER);
    }
    let mut bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    let cube = r#"
{
  "asset_id": 7,
  "extra": {
    "herald_event_id": "ev-3",
    "environment": "prod",
    "cube": "sales",
    "batch_id": "b-sales",
    "finished_at": "2026-03-01T12:00:00Z"
  }
}
"#;
    let gate = r#"
{
  "asset_id": 12,
  "extra": {
    "herald_event_id": "herald:gate-opened:finance-daily:ev-3",
    "gate": "finance-daily",
    "opened_at": "2026-03-01T12:00:00Z",
    "batches": ["b-stock","b-fx","b-sales"]
  }
}
"#;
    assert_eq!(
        bodies,
        // Sorted: asset 12 before asset 7.
        [gate.trim_start_matches('\n'), cube.trim_start_matches('\n')]
    );
}

#[tokio::test]
async fn the_slack_example_renders_the_exact_body_slack_receives() {
    let receiver = Receiver::start().await;
    let app = app_with_example("slack.toml", "https://hooks.slack.com", &receiver).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.fail_batch("ev-2", "b-1", "sales").await;
    app.succeed_batch("ev-3", "b-2", "sales").await;
    app.deliver().await;

    let bodies: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "{\"text\": \":red_circle: Refresh of *SALES* (prod) failed: out of disk\", \"username\": \"Herald\"}\n",
            "{\"text\": \":large_green_circle: *SALES* (prod) recovered\", \"username\": \"Herald\"}\n",
        ]
    );
    let request = &receiver.received()[0];
    assert_eq!(request.path, "/services/T000/B000/XXXXXXXX");
    assert!(
        request.header("webhook-signature").is_empty(),
        "no secret, no signature"
    );
    assert!(request.header("webhook-id").starts_with("msg_"));
}

#[tokio::test]
async fn a_template_that_names_a_missing_field_stops_the_config_load() {
    let config = "[[webhooks]]\nname = \"slack\"\nurl = \"http://x.example/\"\nevents = [\"aggregate.batch.failed\"]\n\
                  body_template = '''\n{\"text\": {{ data.cube_nmae | tojson }}}\n'''";
    let err =
        herald::config::Settings::from_toml(config, &Default::default(), &|_| None).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("webhooks[0].body_template"), "{message}");
    assert!(
        message.contains("`data.cube_nmae` is not a field of the event"),
        "{message}"
    );
    let syntax = config.replace("}}}", "}");
    let err =
        herald::config::Settings::from_toml(&syntax, &Default::default(), &|_| None).unwrap_err();
    assert!(err.to_string().contains("syntax error"), "{err}");
}
