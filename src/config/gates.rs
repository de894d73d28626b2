//! `[[gates]]`: dependency gates over several cubes (see `core::gate`).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use super::{duration_in, invalid, ConfigError};
use crate::core::filter::Pattern;
use crate::core::gate::{Deadline, Gate};
use crate::core::schedule::parse_cron;
use crate::core::validate::parse_id;

/// How old the required successes may be when a gate opens.
const WITHIN: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(366 * 86_400);
/// How late after its cron tick a gate may open.
const GRACE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(30 * 86_400);
/// Entries in one gate's `requires`.
const MAX_REQUIRES: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGate {
    name: String,
    environment: String,
    #[serde(default)]
    requires: Vec<String>,
    within: Option<String>,
    deadline: Option<RawDeadline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadline {
    cron: String,
    grace: Option<String>,
}

pub(super) fn parse_gates(raw: Vec<RawGate>) -> Result<Vec<Gate>, ConfigError> {
    let mut gates: Vec<Gate> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("gates[{i}]");
        let gate = parse_gate(&key, r)?;
        if gates.iter().any(|g| g.name == gate.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{}` is used by another gate", gate.name),
            ));
        }
        gates.push(gate);
    }
    Ok(gates)
}

fn parse_gate(key: &str, r: RawGate) -> Result<Gate, ConfigError> {
    let id = |field: &str, value: &str| {
        parse_id(field, value).map_err(|e| invalid(format!("{key}.{field}"), e.reason))
    };
    if r.requires.is_empty() {
        return Err(invalid(format!("{key}.requires"), "name at least one cube"));
    }
    if r.requires.len() > MAX_REQUIRES {
        return Err(invalid(
            format!("{key}.requires"),
            format!("at most {MAX_REQUIRES} entries"),
        ));
    }
    let mut requires = Vec::with_capacity(r.requires.len());
    for (j, cube) in r.requires.iter().enumerate() {
        if cube.trim().is_empty() || cube.len() > 256 {
            return Err(invalid(
                format!("{key}.requires[{j}]"),
                "must be a cube id or name (or a glob), 1 to 256 characters",
            ));
        }
        requires.push(Pattern::new(cube.clone()));
    }
    let deadline = match r.deadline {
        None => None,
        Some(d) => Some(Deadline {
            cron: Box::new(
                parse_cron(&d.cron)
                    .map_err(|reason| invalid(format!("{key}.deadline.cron"), reason))?,
            ),
            grace: duration_in(&format!("{key}.deadline.grace"), d.grace, "0s", GRACE)?,
        }),
    };
    Ok(Gate {
        name: id("name", &r.name)?,
        environment_id: id("environment", &r.environment)?,
        requires,
        within: duration_in(&format!("{key}.within"), r.within, "24h", WITHIN)?,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, Overrides, Settings};

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, &Overrides::default(), &|_| None)
    }

    fn key_of(text: &str) -> String {
        match load(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    const GATE: &str = "[[gates]]\nname = \"finance-daily\"\nenvironment = \"prod\"\n";

    #[test]
    fn a_gate_parses_with_its_defaults_and_deadline() {
        let s = load(&format!(
            "{GATE}requires = [\"sales\", \"st*\"]\ndeadline = {{ cron = \"0 7 * * *\", grace = \"30m\" }}"
        ))
        .unwrap();
        let g = &s.gates[0];
        assert_eq!(g.requires.len(), 2);
        assert_eq!(g.within.as_secs(), 86_400);
        assert_eq!(g.deadline.as_ref().unwrap().grace.as_secs(), 1800);
    }

    #[test]
    fn a_bad_gate_is_refused_naming_the_key() {
        assert_eq!(key_of(GATE), "gates[0].requires");
        assert_eq!(
            key_of(&format!("{GATE}requires = [\"\"]")),
            "gates[0].requires[0]"
        );
        assert_eq!(
            key_of(&format!("{GATE}requires = [\"a\"]\nwithin = \"0s\"")),
            "gates[0].within"
        );
        assert_eq!(
            key_of(&format!(
                "{GATE}requires = [\"a\"]\ndeadline = {{ cron = \"daily\" }}"
            )),
            "gates[0].deadline.cron"
        );
        assert_eq!(
            key_of(&format!(
                "{GATE}requires = [\"a\"]\n{GATE}requires = [\"b\"]"
            )),
            "gates[1].name"
        );
        assert_eq!(
            key_of("[[gates]]\nname = \"a b\"\nenvironment = \"prod\"\nrequires = [\"a\"]"),
            "gates[0].name"
        );
    }
}
