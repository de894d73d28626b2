//! The operations port: Prometheus metrics that move with traffic, and the
//! liveness and readiness probes.

use std::collections::HashMap;

use crate::helpers::{app_with_receiver, TestApp};

/// Fetches `/metrics` and parses it as the Prometheus text format: every
/// line is a comment or `name{labels} value` with a number for value.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = reqwest::get(format!("http://{}/metrics", app.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line}"
        );
        if name_end < series.len() {
            assert!(
                series.ends_with('}') && series.contains("=\""),
                "bad labels in {line}"
            );
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        // Every sample names its replica; the rest of the test reads the
        // series without it.
        let replica = format!("replica=\"{}\"", herald::config::default_replica_name());
        assert!(series.contains(&replica), "no {replica} in {line}");
        let series = series
            .replace(&format!("{replica},"), "")
            .replace(&format!("{{{replica}}}"), "");
        samples.insert(series, value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let (app, _receiver) = app_with_receiver(r#"["*"]"#).await;
    let started = "herald_events_ingested_total{type=\"aggregate.batch.started\"}";
    let delivered = "herald_deliveries_total{outcome=\"delivered\"}";
    let before = scrape(&app).await;
    assert_eq!(before[started], 0.0);
    assert_eq!(before["herald_outbox_pending"], 0.0);

    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "sales").await;
    let queued = scrape(&app).await;
    assert_eq!(queued[started], 2.0);
    assert_eq!(queued["herald_outbox_pending"], 2.0);
    // The committer's groups: one event each (sent one after the other),
    // each counted once by size and once by duration.
    let moved = |name: &str| queued[name] - before[name];
    assert_eq!(moved("herald_ingest_group_jobs_sum"), 2.0);
    assert_eq!(moved("herald_ingest_group_jobs_count"), 2.0);
    assert_eq!(moved("herald_ingest_group_jobs_bucket{le=\"1\"}"), 2.0);
    assert_eq!(moved("herald_ingest_commit_duration_seconds_count"), 2.0);
    assert!(moved("herald_ingest_commit_duration_seconds_sum") > 0.0);

    app.advance(std::time::Duration::from_secs(30));
    assert!(scrape(&app).await["herald_outbox_oldest_pending_age_seconds"] >= 30.0);
    app.deliver().await;
    let after = scrape(&app).await;
    assert_eq!(after[delivered], 2.0);
    assert_eq!(after["herald_outbox_pending"], 0.0);
    assert_eq!(after["herald_attempt_duration_seconds_count"], 2.0);
    assert_eq!(
        after["herald_attempt_duration_seconds_bucket{le=\"+Inf\"}"],
        2.0
    );
}

#[tokio::test]
async fn liveness_and_readiness_answer() {
    let (app, _receiver) = app_with_receiver(r#"["*"]"#).await;
    for path in ["healthz", "readyz"] {
        let response = reqwest::get(format!("http://{}/{path}", app.http))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/{path}");
    }
}

/// What admins ask of `/metrics`: outcomes and backlog by subscription,
/// running and stalled batches, and how long since each cube succeeded.
#[tokio::test]
async fn metrics_show_each_subscription_batches_and_cubes() {
    use std::time::Duration;
    let receiver = crate::helpers::Receiver::start().await;
    let down = format!("http://{}/hook", crate::helpers::dead_address().await);
    let config = [
        crate::helpers::webhook("etl", &receiver.url(), r#"events = ["*"]"#),
        crate::helpers::webhook("down", &down, r#"events = ["*"]"#),
        "[stalls]\nmax_duration = \"5m\"\n".to_owned(),
    ]
    .concat();
    let app = crate::helpers::spawn_app(&config).await;
    let before = scrape(&app).await;
    assert_eq!(before["herald_batches_running"], 0.0);
    assert!(!before
        .keys()
        .any(|k| k.starts_with("herald_subscription_backlog")));

    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "stock").await;
    app.advance(Duration::from_secs(30));
    let queued = scrape(&app).await;
    assert_eq!(
        queued["herald_subscription_backlog{subscription=\"etl\"}"],
        2.0
    );
    assert_eq!(
        queued["herald_subscription_backlog{subscription=\"down\"}"],
        2.0
    );
    assert_eq!(
        queued["herald_subscription_oldest_pending_age_seconds{subscription=\"etl\"}"],
        30.0
    );
    assert_eq!(queued["herald_batches_running"], 2.0);

    app.deliver().await;
    app.succeed_batch("ev-3", "b-1", "sales").await;
    app.advance(Duration::from_secs(600));
    assert_eq!(app.check().await.stalled, 1, "stock outlived its 5 m");
    let later = scrape(&app).await;
    let outcome = |sub: &str, outcome: &str| {
        later
            .get(&format!(
                "herald_subscription_deliveries_total{{subscription=\"{sub}\",outcome=\"{outcome}\"}}"
            ))
            .copied()
    };
    assert_eq!(outcome("etl", "delivered"), Some(2.0));
    assert_eq!(outcome("down", "retry"), Some(2.0));
    assert_eq!(outcome("etl", "retry"), None);
    assert_eq!(
        later["herald_subscription_backlog{subscription=\"down\"}"], 4.0,
        "two retries, the success and the stall"
    );
    assert_eq!(
        later["herald_subscription_backlog{subscription=\"etl\"}"], 2.0,
        "the success and the stall, not sent yet"
    );
    assert_eq!(later["herald_batches_running"], 0.0);
    assert_eq!(later["herald_batches_stalled"], 1.0);
    assert_eq!(
        later["herald_cube_seconds_since_last_success{environment=\"prod\",cube=\"sales\"}"],
        600.0
    );
    assert!(
        !later.keys().any(|k| k.contains("cube=\"stock\"")),
        "stock never succeeded"
    );
}
