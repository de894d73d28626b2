//! Dependency gates in the ingest transaction: a required cube's outcome
//! is applied to the gate's record in the same transaction as the outcome
//! itself, and the gate's events (`aggregate.gate.opened`, `.blocked`,
//! `.missed`) are raised there too — so an ack means the gate moved, and a
//! gate opens once however many replicas ingest (each holds the gate's
//! lock from its read to its commit, see [`Core::gate_keys`]).

use chrono::{DateTime, Utc};

use super::{raised, Core, Outgoing, Overlay, Plan, Work};
use crate::core::batch::BatchRecord;
use crate::core::event::{BatchOutcome, EventType, Payload, Scope};
use crate::core::gate::{self, Gate, GateChange, GateRecord};
use crate::ingest::RAISED_PREFIX;

impl Core {
    /// The gates the works may move: those requiring a completed cube, and
    /// those whose deadline is judged.
    pub(super) fn gates_touched(&self, works: &[Work]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for work in works {
            let touched: Vec<&Gate> = match work {
                Work::Event(event) => match &event.payload {
                    Payload::Batch(b) if b.outcome != BatchOutcome::Started => self
                        .gates
                        .iter()
                        .filter(|g| {
                            g.requires_cube(
                                &b.batch.environment_id,
                                &b.batch.cube_id,
                                &b.batch.cube_name,
                            )
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                Work::GateDeadline { gate, .. } => {
                    self.gates.iter().filter(|g| g.name == *gate).collect()
                }
                _ => Vec::new(),
            };
            names.extend(touched.into_iter().map(|g| g.name.clone()));
        }
        names.sort();
        names.dedup();
        names
    }

    /// The lock keys of the gates: held to the commit, so two replicas
    /// applying two required cubes' successes at once cannot both miss
    /// (or both see) the other's.
    pub(super) fn gate_keys(names: &[String]) -> impl Iterator<Item = String> + '_ {
        names.iter().map(|name| format!("gate:{name}"))
    }

    /// Applies a finished batch to every gate requiring its cube.
    pub(super) fn plan_gates(
        &self,
        job: usize,
        event_id: &str,
        record: &BatchRecord,
        now: DateTime<Utc>,
        overlay: &mut Overlay,
        plan: &mut Plan,
    ) {
        for gate in self.gates.iter() {
            if !gate.requires_cube(&record.environment_id, &record.cube_id, &record.cube_name) {
                continue;
            }
            let mut state = gate_record(overlay, gate, now);
            let change = gate.apply(&mut state, record, now);
            let out = match &change {
                GateChange::Quiet => None,
                GateChange::Opened(cubes) => Some((
                    EventType::GateOpened,
                    format!("{RAISED_PREFIX}gate-opened:{}:{event_id}", gate.name),
                    gate::opened_data(gate, cubes, now),
                )),
                GateChange::Blocked(cube) => Some((
                    EventType::GateBlocked,
                    format!("{RAISED_PREFIX}gate-blocked:{}:{event_id}", gate.name),
                    gate::blocked_data(gate, cube, &gate.waiting_for(&state, now)),
                )),
            };
            if let Some((event_type, id, data)) = out {
                let row = gate_event(job, id, event_type, now, gate, data);
                self.add_row(row, overlay, plan);
            }
            keep(overlay, plan, gate, state);
        }
    }

    /// Judges a passed deadline: missed unless the gate opened after the
    /// one before it. Returns whether it was missed.
    pub(super) fn plan_deadline(
        &self,
        job: usize,
        name: &str,
        (previous, deadline): (DateTime<Utc>, DateTime<Utc>),
        now: DateTime<Utc>,
        overlay: &mut Overlay,
        plan: &mut Plan,
    ) -> bool {
        let Some(gate) = self.gates.iter().find(|g| g.name == name) else {
            return false;
        };
        let mut state = gate_record(overlay, gate, now);
        if state
            .deadline_checked
            .is_some_and(|checked| checked >= deadline)
        {
            // Judged already (by a previous leader).
            return false;
        }
        let missed = state.opened_at.is_none_or(|at| at <= previous);
        if missed {
            let waiting = gate.waiting_for(&state, now);
            let data = gate::missed_data(gate, deadline, state.opened_at, &waiting);
            let id = format!(
                "{RAISED_PREFIX}gate-missed:{}:{}",
                gate.name,
                deadline.timestamp_millis()
            );
            let row = gate_event(job, id, EventType::GateMissed, now, gate, data);
            self.add_row(row, overlay, plan);
        }
        state.deadline_checked = Some(deadline);
        keep(overlay, plan, gate, state);
        missed
    }
}

/// The gate's record as this batch sees it (new when never stored).
fn gate_record(overlay: &Overlay, gate: &Gate, now: DateTime<Utc>) -> GateRecord {
    overlay
        .gates
        .get(&gate.name)
        .cloned()
        .unwrap_or_else(|| GateRecord::new(now))
}

/// Keeps the record for the jobs after this one and for the write.
fn keep(overlay: &mut Overlay, plan: &mut Plan, gate: &Gate, state: GateRecord) {
    overlay.gates.insert(gate.name.clone(), state.clone());
    plan.gates.insert(gate.name.clone(), state);
}

fn gate_event(
    job: usize,
    id: String,
    event_type: EventType,
    now: DateTime<Utc>,
    gate: &Gate,
    data: serde_json::Value,
) -> Outgoing {
    let scope = Scope {
        environment_id: Some(gate.environment_id.clone()),
        ..Scope::default()
    };
    raised(job, id, event_type, now, scope, gate::subject(gate), data)
}
