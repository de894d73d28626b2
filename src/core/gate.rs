//! Dependency gates (`[[gates]]`): a downstream job needs *several* cubes
//! refreshed. A gate opens once when every cube it requires has succeeded
//! (each success no older than `within`), and opens again only after every
//! one of them has succeeded again. A failure of a required cube blocks it
//! (reported, never silent); an optional cron deadline reports a gate that
//! did not open in time.
//!
//! A `requires` entry is a cube id or name, or a glob over both. A glob
//! stands for every cube it has matched in the gate's environment since
//! Herald began tracking the gate, and for at least one: a gate on
//! `sales_*` waits for `sales_eu` *and* `sales_us` once it has seen both.
//!
//! Pure: the record is read and written by the ingest transaction, which
//! holds the gate's lock while it applies an outcome (see `ingest::apply`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::batch::{BatchRecord, BatchState};
use super::event::EventType;
use super::filter::Pattern;
use super::time::{checked_after, checked_before};

/// A configured gate.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Unique; names the gate in events, state and the API.
    pub name: String,
    pub environment_id: String,
    /// Cube ids or names, each exact or a glob.
    pub requires: Vec<Pattern>,
    /// Every required success must be at most this old when the gate opens.
    pub within: Duration,
    pub deadline: Option<Deadline>,
}

/// The gate must have opened by each cron tick (UTC) plus `grace`.
#[derive(Debug, Clone)]
pub struct Deadline {
    pub cron: Box<croner::Cron>,
    pub grace: Duration,
}

/// What Herald remembers of a gate between outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// When Herald began tracking the gate: deadlines count from here.
    pub tracked_since: DateTime<Utc>,
    /// Open since its last opening, until a required cube reports again.
    pub open: bool,
    pub opened_at: Option<DateTime<Utc>>,
    pub opened_count: u64,
    /// The latest outcome of every cube the gate has required.
    pub cubes: Vec<GateCube>,
    /// The latest failure of a required cube since the gate last opened.
    pub blocked: Option<GateCube>,
    /// The last deadline the monitor has judged.
    pub deadline_checked: Option<DateTime<Utc>>,
}

impl GateRecord {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            tracked_since: now,
            open: false,
            opened_at: None,
            opened_count: 0,
            cubes: Vec::new(),
            blocked: None,
            deadline_checked: None,
        }
    }
}

/// A required cube's latest outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCube {
    pub cube_id: String,
    pub cube_name: String,
    pub batch_id: String,
    pub succeeded: bool,
    pub finished_at: DateTime<Utc>,
    /// A success the gate has not opened on yet.
    pub fresh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// What one outcome did to a gate.
#[derive(Debug, Clone, PartialEq)]
pub enum GateChange {
    /// Nothing to report (a success that leaves the gate waiting, or an
    /// outcome older than one already counted).
    Quiet,
    /// The gate opened on these successes.
    Opened(Vec<GateCube>),
    /// A required cube failed.
    Blocked(GateCube),
}

impl Gate {
    /// Whether a batch of this cube counts for the gate.
    pub fn requires_cube(&self, environment_id: &str, cube_id: &str, cube_name: &str) -> bool {
        environment_id == self.environment_id
            && self
                .requires
                .iter()
                .any(|p| p.matches(cube_id) || p.matches(cube_name))
    }

    /// Applies a finished batch of a required cube at `now`.
    pub fn apply(
        &self,
        record: &mut GateRecord,
        batch: &BatchRecord,
        now: DateTime<Utc>,
    ) -> GateChange {
        let Some(finished_at) = batch.finished_at else {
            return GateChange::Quiet;
        };
        let succeeded = match batch.state {
            BatchState::Succeeded => true,
            BatchState::Failed => false,
            _ => return GateChange::Quiet,
        };
        let outcome = GateCube {
            cube_id: batch.cube_id.clone(),
            cube_name: batch.cube_name.clone(),
            batch_id: batch.batch_id.clone(),
            succeeded,
            finished_at,
            fresh: succeeded,
            error_message: batch.error_message.clone(),
        };
        match record.cubes.iter_mut().find(|c| c.cube_id == batch.cube_id) {
            // A late report of an older batch changes nothing.
            Some(known) if known.finished_at > finished_at => return GateChange::Quiet,
            Some(known) => *known = outcome.clone(),
            None => record.cubes.push(outcome.clone()),
        }
        record.open = false;
        if !succeeded {
            record.blocked = Some(outcome.clone());
            return GateChange::Blocked(outcome);
        }
        if !self.waiting_for(record, now).is_empty() {
            return GateChange::Quiet;
        }
        let opened: Vec<GateCube> = self.required(record).cloned().collect();
        for cube in record.cubes.iter_mut() {
            cube.fresh = false;
        }
        record.open = true;
        record.opened_at = Some(now);
        record.opened_count += 1;
        record.blocked = None;
        GateChange::Opened(opened)
    }

    /// The known cubes the gate currently requires.
    fn required<'a>(&'a self, record: &'a GateRecord) -> impl Iterator<Item = &'a GateCube> {
        record
            .cubes
            .iter()
            .filter(|c| self.requires_cube(&self.environment_id, &c.cube_id, &c.cube_name))
    }

    /// What the gate still waits for at `now`: each requirement no cube
    /// has matched yet (as written), and each required cube without a
    /// fresh success within `within` (its id). Empty: it may open.
    pub fn waiting_for(&self, record: &GateRecord, now: DateTime<Utc>) -> Vec<String> {
        let oldest = checked_before(now, self.within);
        let mut waiting: Vec<String> = self
            .requires
            .iter()
            .filter(|p| {
                !record
                    .cubes
                    .iter()
                    .any(|c| p.matches(&c.cube_id) || p.matches(&c.cube_name))
            })
            .map(|p| p.as_str().to_owned())
            .collect();
        waiting.extend(
            self.required(record)
                .filter(|c| !(c.fresh && oldest.is_none_or(|o| c.finished_at >= o)))
                .map(|c| c.cube_id.clone()),
        );
        waiting
    }

    /// The first deadline (tick plus grace) not judged yet.
    pub fn next_deadline(&self, record: &GateRecord) -> Option<DateTime<Utc>> {
        let deadline = self.deadline.as_ref()?;
        let from = record.deadline_checked.unwrap_or(record.tracked_since);
        let tick = deadline
            .cron
            .find_next_occurrence(&checked_before(from, deadline.grace)?, false)
            .ok()?;
        checked_after(tick, deadline.grace)
    }

    /// The newest deadline that has passed by `now` and was not judged yet,
    /// with the one before it: the gate missed it unless it opened after
    /// that previous deadline. Deadlines count from when tracking began;
    /// after an outage only the newest passed one is judged.
    pub fn passed_deadline(
        &self,
        record: &GateRecord,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.deadline.as_ref()?;
        let mut judged = record.clone();
        let mut passed = None;
        // Bounded: a minutely cron after a long outage is skipped through
        // a day at a time at most, in the next checks.
        for _ in 0..1440 {
            let previous = judged.deadline_checked.unwrap_or(judged.tracked_since);
            let due = self.next_deadline(&judged)?;
            if due > now {
                break;
            }
            passed = Some((previous, due));
            judged.deadline_checked = Some(due);
        }
        passed
    }
}

/// The `data` of `aggregate.gate.opened`.
pub fn opened_data(gate: &Gate, cubes: &[GateCube], at: DateTime<Utc>) -> Value {
    json!({
        "gate": gate.name,
        "environment_id": gate.environment_id,
        "opened_at": at,
        "cubes": cubes.iter().map(|c| json!({
            "cube_id": c.cube_id,
            "cube_name": c.cube_name,
            "batch_id": c.batch_id,
            "finished_at": c.finished_at,
        })).collect::<Vec<_>>(),
    })
}

/// The `data` of `aggregate.gate.blocked`: the gate and the failed cube.
pub fn blocked_data(gate: &Gate, cube: &GateCube, waiting_for: &[String]) -> Value {
    json!({
        "gate": gate.name,
        "environment_id": gate.environment_id,
        "cube_id": cube.cube_id,
        "cube_name": cube.cube_name,
        "batch_id": cube.batch_id,
        "failed_at": cube.finished_at,
        "error_message": cube.error_message,
        "waiting_for": waiting_for,
    })
}

/// The `data` of `aggregate.gate.missed`.
pub fn missed_data(
    gate: &Gate,
    deadline: DateTime<Utc>,
    last_opened_at: Option<DateTime<Utc>>,
    waiting_for: &[String],
) -> Value {
    json!({
        "gate": gate.name,
        "environment_id": gate.environment_id,
        "deadline": deadline,
        "last_opened_at": last_opened_at,
        "waiting_for": waiting_for,
    })
}

/// The CloudEvents subject of a gate's events.
pub fn subject(gate: &Gate) -> String {
    format!("environments/{}/gates/{}", gate.environment_id, gate.name)
}

/// A sample of a gate event's `data` and subject, for checking templates.
pub fn sample_data(event_type: EventType, at: DateTime<Utc>) -> (Value, String) {
    let gate = Gate {
        name: "finance-daily".into(),
        environment_id: "prod".into(),
        requires: vec![Pattern::new("sales"), Pattern::new("stock")],
        within: Duration::from_secs(86_400),
        deadline: None,
    };
    let cube = |cube_id: &str, succeeded: bool| GateCube {
        cube_id: cube_id.into(),
        cube_name: cube_id.to_uppercase(),
        batch_id: format!("b-{cube_id}"),
        succeeded,
        finished_at: at,
        fresh: succeeded,
        error_message: (!succeeded).then(|| "out of disk".into()),
    };
    let data = match event_type {
        EventType::GateBlocked => blocked_data(&gate, &cube("stock", false), &["stock".into()]),
        EventType::GateMissed => missed_data(&gate, at, None, &["stock".into()]),
        _ => opened_data(&gate, &[cube("sales", true), cube("stock", true)], at),
    };
    (data, subject(&gate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::BuildKind;
    use crate::core::schedule::parse_cron;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
    }

    fn gate(requires: &[&str]) -> Gate {
        Gate {
            name: "finance-daily".into(),
            environment_id: "prod".into(),
            requires: requires.iter().map(|r| Pattern::new(*r)).collect(),
            within: Duration::from_secs(24 * 3600),
            deadline: Some(Deadline {
                cron: Box::new(parse_cron("0 7 * * *").unwrap()),
                grace: Duration::from_secs(1800),
            }),
        }
    }

    fn batch(id: &str, cube: &str, state: BatchState, finished: DateTime<Utc>) -> BatchRecord {
        BatchRecord {
            batch_id: id.into(),
            environment_id: "prod".into(),
            project_id: None,
            cube_id: cube.into(),
            cube_name: cube.to_uppercase(),
            state,
            build_kind: BuildKind::Full,
            aggregate_count: 1,
            aggregates_built: 1,
            rows_written: 1,
            error_message: (state == BatchState::Failed).then(|| "out of disk".into()),
            failed_aggregates: vec![],
            started_at: Some(finished),
            finished_at: Some(finished),
            start_seen: true,
            updated_at: finished,
        }
    }

    #[test]
    fn a_gate_opens_once_on_the_last_success_in_any_order_and_again_after_all_again() {
        let g = gate(&["sales", "stock"]);
        let mut r = GateRecord::new(at(0, 0));
        let ok = BatchState::Succeeded;
        assert_eq!(
            g.apply(&mut r, &batch("s1", "stock", ok, at(1, 0)), at(1, 0)),
            GateChange::Quiet
        );
        assert_eq!(g.waiting_for(&r, at(1, 0)), vec!["sales"]);
        let GateChange::Opened(cubes) =
            g.apply(&mut r, &batch("a1", "sales", ok, at(2, 0)), at(2, 0))
        else {
            panic!("opens on the last success")
        };
        assert_eq!(cubes.len(), 2);
        assert!(r.open);
        assert_eq!(
            g.apply(&mut r, &batch("a2", "sales", ok, at(3, 0)), at(3, 0)),
            GateChange::Quiet
        );
        assert!(!r.open);
        assert_eq!(g.waiting_for(&r, at(3, 0)), vec!["stock"]);
        assert!(matches!(
            g.apply(&mut r, &batch("s2", "stock", ok, at(4, 0)), at(4, 0)),
            GateChange::Opened(_)
        ));
        assert_eq!(r.opened_count, 2);
    }

    #[test]
    fn a_failure_blocks_and_an_older_late_report_changes_nothing() {
        let g = gate(&["sales", "st*"]);
        let mut r = GateRecord::new(at(0, 0));
        g.apply(
            &mut r,
            &batch("a1", "sales", BatchState::Succeeded, at(1, 0)),
            at(1, 0),
        );
        let change = g.apply(
            &mut r,
            &batch("s1", "stock", BatchState::Failed, at(2, 0)),
            at(2, 0),
        );
        assert!(matches!(change, GateChange::Blocked(c) if c.cube_id == "stock"));
        let late = batch("s0", "stock", BatchState::Succeeded, at(1, 30));
        assert_eq!(g.apply(&mut r, &late, at(2, 5)), GateChange::Quiet);
        assert!(matches!(
            g.apply(
                &mut r,
                &batch("s2", "stock", BatchState::Succeeded, at(3, 0)),
                at(3, 0)
            ),
            GateChange::Opened(_)
        ));
    }

    #[test]
    fn a_success_older_than_within_does_not_count() {
        let g = gate(&["sales", "stock"]);
        let mut r = GateRecord::new(at(0, 0));
        let ok = BatchState::Succeeded;
        g.apply(&mut r, &batch("a1", "sales", ok, at(1, 0)), at(1, 0));
        let next_day = at(1, 0) + chrono::Duration::hours(25);
        assert_eq!(
            g.apply(&mut r, &batch("s1", "stock", ok, next_day), next_day),
            GateChange::Quiet
        );
        assert_eq!(g.waiting_for(&r, next_day), vec!["sales"]);
    }

    #[test]
    fn deadlines_pass_after_their_grace_and_are_judged_once() {
        let g = gate(&["sales"]);
        let mut r = GateRecord::new(at(0, 0));
        assert_eq!(g.passed_deadline(&r, at(7, 29)), None);
        assert_eq!(
            g.passed_deadline(&r, at(7, 30)),
            Some((at(0, 0), at(7, 30)))
        );
        r.deadline_checked = Some(at(7, 30));
        assert_eq!(g.passed_deadline(&r, at(23, 0)), None);
    }
}
