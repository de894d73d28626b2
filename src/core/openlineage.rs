//! OpenLineage: every batch is a run of a job that writes one dataset, the
//! cube. A `[[openlineage]]` subscription turns each batch event into a
//! `RunEvent` — `START` on started, `COMPLETE` on succeeded, `FAIL` on
//! failed (with the `errorMessage` run facet) — and posts it to a lineage
//! server (Marquez, DataHub, OpenMetadata, ...) through the outbox, with the
//! same retries as a webhook.
//!
//! The run id is a UUID derived from the batch id (v5), so the START and
//! the COMPLETE or FAIL of one batch name the same run, however often they
//! are redelivered.

use serde_json::{json, Value};

use super::event::EventType;
use super::subscription::run_id;
use super::template::Template;

/// The version of the OpenLineage spec the events follow.
pub const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// The version of the error message facet.
const ERROR_FACET_URL: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
/// Who produced the events: Herald, at this version (a URI, as the spec
/// asks; Herald has no canonical URL of its own to name).
pub const PRODUCER: &str = concat!("urn:herald:", env!("CARGO_PKG_VERSION"));

/// The events an OpenLineage subscription takes (the only ones it can map).
pub const EVENTS: [EventType; 3] = [
    EventType::BatchStarted,
    EventType::BatchSucceeded,
    EventType::BatchFailed,
];

/// Where and how run events are sent.
#[derive(Clone)]
pub struct OpenLineage {
    /// The lineage endpoint, e.g. Marquez's `http://marquez:5000/api/v1/lineage`.
    pub url: String,
    /// The namespace of the jobs and of the cube datasets.
    pub namespace: String,
    /// The job name, rendered over the event (default
    /// `{{ data.environment_id }}.{{ data.cube_id }}`).
    pub job_name: Template,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
}

/// The API key is a secret: it never prints.
impl std::fmt::Debug for OpenLineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenLineage")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("job_name", &self.job_name)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenLineage {
    /// The `RunEvent` for a batch event's CloudEvents envelope. An `Err`
    /// says why this event has no run state (retrying would not help).
    pub fn run_event(&self, envelope: &Value) -> Result<Value, String> {
        let event_type = envelope["type"].as_str().and_then(EventType::parse);
        let state = match event_type {
            Some(EventType::BatchStarted) => "START",
            Some(EventType::BatchSucceeded) => "COMPLETE",
            Some(EventType::BatchFailed) => "FAIL",
            _ => return Err(format!("{} has no OpenLineage run state", envelope["type"])),
        };
        let data = &envelope["data"];
        let text = |key: &str| {
            data[key]
                .as_str()
                .ok_or_else(|| format!("the event has no data.{key}"))
        };
        let job = self
            .job_name
            .render(envelope)
            .map_err(|e| format!("job_name template: {}", e.message))?;
        let mut run = json!({ "runId": run_id(text("batch_id")?) });
        if state == "FAIL" {
            let message = data["error_message"].as_str().unwrap_or("the batch failed");
            run["facets"] = json!({
                "errorMessage": {
                    "_producer": PRODUCER,
                    "_schemaURL": ERROR_FACET_URL,
                    "message": message,
                    "programmingLanguage": "unknown",
                }
            });
        }
        let time = envelope["time"].as_str().ok_or("the event has no time")?;
        Ok(json!({
            "eventType": state,
            "eventTime": time,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
            "run": run,
            "job": { "namespace": self.namespace, "name": job },
            "inputs": [],
            "outputs": [{
                "namespace": self.namespace,
                "name": format!("{}.{}", text("environment_id")?, text("cube_id")?),
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cloudevent::samples;

    fn lineage() -> OpenLineage {
        OpenLineage {
            url: "http://marquez.example/api/v1/lineage".into(),
            namespace: "herald".into(),
            job_name: Template::parse("{{ data.environment_id }}.{{ data.cube_id }}").unwrap(),
            api_key: Some("k".into()),
        }
    }

    fn sample(t: EventType) -> Value {
        samples().into_iter().find(|(s, _)| *s == t).unwrap().1
    }

    #[test]
    fn the_three_batch_events_map_to_one_run_and_others_are_refused() {
        let ol = lineage();
        let start = ol.run_event(&sample(EventType::BatchStarted)).unwrap();
        let done = ol.run_event(&sample(EventType::BatchSucceeded)).unwrap();
        let fail = ol.run_event(&sample(EventType::BatchFailed)).unwrap();
        assert_eq!(start["eventType"], "START");
        assert_eq!(done["eventType"], "COMPLETE");
        assert_eq!(fail["eventType"], "FAIL");
        assert_eq!(start["run"]["runId"], done["run"]["runId"]);
        assert_eq!(start["job"]["name"], "prod.sales");
        assert!(fail["run"]["facets"]["errorMessage"]["message"].is_string());
        assert!(done["run"].get("facets").is_none());
        assert!(format!("{ol:?}").contains("<redacted>"));
        assert!(ol.run_event(&sample(EventType::BatchStalled)).is_err());
    }
}
