//! `[[openlineage]]`: batch runs sent to a lineage server as OpenLineage
//! run events (see `core::openlineage`).

use serde::Deserialize;

use super::{
    invalid, parse_common, parse_template, parse_url_template, ConfigError, RawSubscription,
};
use crate::core::openlineage::{OpenLineage, EVENTS};
use crate::core::subscription::{Subscription, Target};
use crate::core::validate::parse_id;

/// The job of a batch: the cube, per environment.
const DEFAULT_JOB_NAME: &str = "{{ data.environment_id }}.{{ data.cube_id }}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpenLineage {
    name: String,
    url: String,
    namespace: String,
    api_key_env: Option<String>,
    job_name: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    cubes: Vec<String>,
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    max_in_flight: Option<usize>,
}

pub(super) fn parse_openlineage(
    key: &str,
    raw: RawOpenLineage,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Subscription), ConfigError> {
    let url = parse_url_template(&format!("{key}.url"), &raw.url)?;
    if !url.is_static() {
        return Err(invalid(format!("{key}.url"), "takes no placeholders"));
    }
    let namespace = parse_id("namespace", &raw.namespace)
        .map_err(|e| invalid(format!("{key}.namespace"), e.reason))?;
    let api_key = match raw.api_key_env {
        None => None,
        Some(var) => Some(env(&var).ok_or_else(|| {
            invalid(
                format!("{key}.api_key_env"),
                format!("environment variable `{var}` is not set"),
            )
        })?),
    };
    let target = Target::OpenLineage(OpenLineage {
        url: raw.url,
        namespace,
        job_name: parse_template(
            &format!("{key}.job_name"),
            raw.job_name.as_deref().unwrap_or(DEFAULT_JOB_NAME),
        )?,
        api_key,
    });
    let common = RawSubscription {
        name: raw.name,
        events: EVENTS.iter().map(|t| t.as_str().to_owned()).collect(),
        environments: raw.environments,
        projects: raw.projects,
        cubes: raw.cubes,
        timeout: raw.timeout,
        retry_schedule: raw.retry_schedule,
        max_in_flight: raw.max_in_flight,
        ..RawSubscription::default()
    };
    parse_common(key, common, target)
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, Overrides, Settings};

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, &Overrides::default(), &|name| {
            (name == "MARQUEZ_KEY").then(|| "k-1".to_owned())
        })
    }

    fn key_of(text: &str) -> String {
        match load(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    const ENTRY: &str = "[[openlineage]]\nname = \"marquez\"\nurl = \"http://marquez.example:5000/api/v1/lineage\"\nnamespace = \"herald\"\n";

    #[test]
    fn an_openlineage_entry_takes_the_batch_events_and_refuses_bad_keys() {
        let s = load(&format!("{ENTRY}api_key_env = \"MARQUEZ_KEY\"")).unwrap();
        let sub = &s.subscriptions[0];
        assert!(sub
            .filter
            .could_match(crate::core::event::EventType::BatchFailed));
        assert!(!sub
            .filter
            .could_match(crate::core::event::EventType::BatchStalled));
        assert_eq!(
            key_of(&format!("{ENTRY}api_key_env = \"NOPE\"")),
            "openlineage[0].api_key_env"
        );
        assert_eq!(
            key_of(&format!("{ENTRY}job_name = \"{{{{ data.\"")),
            "openlineage[0].job_name"
        );
        // The events are fixed: the key is unknown.
        assert!(load(&format!("{ENTRY}events = [\"*\"]")).is_err());
        assert_eq!(
            key_of("[[openlineage]]\nname = \"m\"\nurl = \"ftp://x\"\nnamespace = \"n\""),
            "openlineage[0].url"
        );
    }
}
