//! OpenLineage run events, received by a real HTTP server and checked
//! against what the spec (OpenLineage.json 2-0-2 and the error message
//! facet) marks required, with the types it gives them. The checks are
//! written here from the spec's text, not generated from its schema.

use serde_json::Value;

use crate::helpers::{Receiver, Spawn, TestApp, SECRET};

async fn app_with_lineage(receiver: &Receiver, extra: &str) -> TestApp {
    let config = format!(
        "[[openlineage]]\nname = \"marquez\"\nurl = \"http://{}/api/v1/lineage\"\nnamespace = \"herald-prod\"\n\
         api_key_env = \"MARQUEZ_API_KEY\"\n{extra}\n",
        receiver.addr
    );
    Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await
}

/// A string that is an absolute URI (a scheme, then anything).
fn is_uri(v: &Value) -> bool {
    v.as_str()
        .and_then(|s| reqwest::Url::parse(s).ok())
        .is_some()
}

fn is_string(v: &Value) -> bool {
    v.is_string()
}

/// `namespace` and `name`, both strings: what a job and a dataset need.
fn names_something(v: &Value) -> bool {
    v.is_object() && is_string(&v["namespace"]) && is_string(&v["name"])
}

/// Every field the spec requires of a RunEvent, with its type; panics
/// naming the first one missing or mistyped.
fn check_run_event(e: &Value) {
    // BaseEvent: eventTime (date-time), producer (uri), schemaURL (uri).
    let time = e["eventTime"].as_str().expect("eventTime is a string");
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok(),
        "eventTime is a date-time: {time}"
    );
    assert!(
        is_uri(&e["producer"]),
        "producer is a URI: {}",
        e["producer"]
    );
    assert!(
        is_uri(&e["schemaURL"]),
        "schemaURL is a URI: {}",
        e["schemaURL"]
    );
    // RunEvent: run and job; eventType one of the enum when present.
    let states = ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"];
    assert!(
        states.contains(&e["eventType"].as_str().unwrap_or("")),
        "{}",
        e["eventType"]
    );
    let run_id = e["run"]["runId"].as_str().expect("run.runId is a string");
    assert!(uuid::Uuid::parse_str(run_id).is_ok(), "run.runId is a UUID");
    if let Some(facets) = e["run"].get("facets") {
        for (name, facet) in facets.as_object().expect("run.facets is an object") {
            assert!(is_uri(&facet["_producer"]), "{name}._producer is a URI");
            assert!(is_uri(&facet["_schemaURL"]), "{name}._schemaURL is a URI");
        }
    }
    assert!(names_something(&e["job"]), "job has namespace and name");
    for list in ["inputs", "outputs"] {
        if let Some(items) = e.get(list) {
            for dataset in items.as_array().expect("a list of datasets") {
                assert!(names_something(dataset), "{list}[] has namespace and name");
            }
        }
    }
}

#[tokio::test]
async fn every_batch_event_reaches_the_lineage_server_as_a_valid_run_event() {
    let receiver = Receiver::start().await;
    let app = app_with_lineage(&receiver, "").await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.start_batch("ev-3", "b-2", "stock").await;
    app.fail_batch("ev-4", "b-2", "stock").await;
    let env = app.environment_created("ev-5");
    app.ingest.clone().environment_created(env).await.unwrap();
    app.deliver().await;

    let received = receiver.received();
    assert_eq!(received.len(), 4, "environment events are no runs");
    for r in &received {
        assert_eq!(r.path, "/api/v1/lineage");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("authorization"), format!("Bearer {SECRET}"));
        assert_eq!(r.header("webhook-signature"), "", "not signed");
        check_run_event(&r.json());
    }
    let events: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["START", "COMPLETE", "START", "FAIL"]);
    assert_eq!(events[0]["run"]["runId"], events[1]["run"]["runId"]);
    assert_ne!(events[0]["run"]["runId"], events[2]["run"]["runId"]);
    assert_eq!(
        events[0]["run"]["runId"],
        herald::core::subscription::run_id("b-1"),
        "derived from the batch id"
    );
    assert_eq!(
        events[1]["job"],
        serde_json::json!({"namespace": "herald-prod", "name": "prod.sales"})
    );
    assert_eq!(
        events[1]["outputs"][0],
        serde_json::json!({"namespace": "herald-prod", "name": "prod.sales"})
    );
    let error = &events[3]["run"]["facets"]["errorMessage"];
    assert_eq!(error["message"], "out of disk");
    assert!(
        is_string(&error["programmingLanguage"]),
        "the facet requires it"
    );
    assert!(events[1]["run"].get("facets").is_none());
}

#[tokio::test]
async fn a_refused_run_event_is_retried_like_a_webhook_and_the_job_name_is_a_template() {
    let receiver = Receiver::start().await;
    receiver.script([crate::helpers::Reply::Status(503)]);
    let app = app_with_lineage(
        &receiver,
        "job_name = \"aggregates/{{ data.cube_name }}\"\nretry_schedule = [\"10s\"]",
    )
    .await;
    app.succeed_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    assert_eq!(receiver.received().len(), 1);
    // The 10s wait with its jitter (±20%).
    app.advance(std::time::Duration::from_secs(13));
    app.deliver().await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "retried after its schedule");
    assert_eq!(received[0].body, received[1].body, "the same event again");
    assert_eq!(received[1].json()["job"]["name"], "aggregates/SALES");
}
