//! The batch state machine (DESIGN.md, "Batch state machine").
//!
//! ```text
//! (none) ──started──▶ RUNNING ──succeeded──▶ SUCCEEDED
//!    │                   │  └─────failed────▶ FAILED
//!    └──succeeded/failed (start never seen)──▶ SUCCEEDED | FAILED
//! ```
//!
//! The engine's truth wins: a completion whose start Herald never saw is
//! accepted and flagged `start_seen = false`; a start that arrives after its
//! completion only fills in `started_at`. The same terminal outcome again is
//! an idempotent repeat; a different one is a conflict.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{BatchEvent, BatchOutcome, BuildKind, FailedAggregate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchState {
    Running,
    Succeeded,
    Failed,
    Stalled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Running => "RUNNING",
            BatchState::Succeeded => "SUCCEEDED",
            BatchState::Failed => "FAILED",
            BatchState::Stalled => "STALLED",
        }
    }

    pub fn parse(s: &str) -> Option<BatchState> {
        [
            BatchState::Running,
            BatchState::Succeeded,
            BatchState::Failed,
            BatchState::Stalled,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, BatchState::Succeeded | BatchState::Failed)
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch as Herald knows it after applying every event seen so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub environment_id: String,
    pub project_id: Option<String>,
    pub cube_id: String,
    pub cube_name: String,
    pub state: BatchState,
    pub build_kind: BuildKind,
    pub aggregate_count: u32,
    pub aggregates_built: u32,
    pub rows_written: u64,
    pub error_message: Option<String>,
    pub failed_aggregates: Vec<FailedAggregate>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// False when Herald never saw this batch start.
    pub start_seen: bool,
    pub updated_at: DateTime<Utc>,
}

impl BatchRecord {
    pub fn scope(&self) -> super::event::Scope {
        super::event::Scope {
            environment_id: Some(self.environment_id.clone()),
            project_id: self.project_id.clone(),
            cube_id: Some(self.cube_id.clone()),
            cube_name: Some(self.cube_name.clone()),
            batch_id: Some(self.batch_id.clone()),
        }
    }

    /// When the batch began as far as Herald knows: its start, or its
    /// completion when the start was never seen.
    pub fn begun_at(&self) -> DateTime<Utc> {
        self.started_at
            .or(self.finished_at)
            .unwrap_or(self.updated_at)
    }
}

/// The result of applying one event to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub record: BatchRecord,
    /// True when the event changed the batch's state, so it must be
    /// delivered; false for a repeat or a late start after completion.
    pub changed: bool,
}

/// Why an event cannot apply to the batch as stored. These are the
/// caller's mistakes (`FAILED_PRECONDITION`), never Herald's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("batch {batch_id} already ended {current}; a {attempted} event cannot follow it")]
    AlreadyFinished {
        batch_id: String,
        current: BatchState,
        attempted: &'static str,
    },
    #[error(
        "batch {batch_id} belongs to cube {stored_cube} in environment {stored_environment}, \
         not cube {cube} in environment {environment}"
    )]
    ScopeMismatch {
        batch_id: String,
        stored_environment: String,
        stored_cube: String,
        environment: String,
        cube: String,
    },
}

/// Applies a batch event to the current record (`None`: never seen).
pub fn apply(
    current: Option<&BatchRecord>,
    event: &BatchEvent,
    occurred_at: DateTime<Utc>,
) -> Result<Applied, TransitionError> {
    let Some(current) = current else {
        return Ok(Applied {
            record: first_record(event, occurred_at),
            changed: true,
        });
    };
    check_scope(current, event)?;
    let mut record = current.clone();
    record.updated_at = occurred_at;
    let changed = match (&event.outcome, current.state) {
        // A second start of a running batch, or a start arriving after the
        // completion (the engine retried it): nothing new to tell anyone.
        (BatchOutcome::Started, _) => {
            record.started_at.get_or_insert(occurred_at);
            record.start_seen = true;
            false
        }
        (outcome, BatchState::Running | BatchState::Stalled) => {
            complete(&mut record, event, outcome, occurred_at);
            true
        }
        (BatchOutcome::Succeeded { .. }, BatchState::Succeeded)
        | (BatchOutcome::Failed { .. }, BatchState::Failed) => false,
        (outcome, state) => {
            return Err(TransitionError::AlreadyFinished {
                batch_id: current.batch_id.clone(),
                current: state,
                attempted: outcome_name(outcome),
            })
        }
    };
    if !changed {
        record.updated_at = current.updated_at;
    }
    Ok(Applied { record, changed })
}

/// Marks a running batch stalled at `now`; `None` when it is not running
/// (it finished, or already stalled: a batch stalls once).
pub fn stall(current: &BatchRecord, now: DateTime<Utc>) -> Option<BatchRecord> {
    (current.state == BatchState::Running).then(|| BatchRecord {
        state: BatchState::Stalled,
        updated_at: now,
        ..current.clone()
    })
}

/// True when this completed batch is the first success of its cube after a
/// failure, given the outcome of that cube's previous finished batch.
pub fn is_recovery(previous: Option<BatchState>, record: &BatchRecord) -> bool {
    record.state == BatchState::Succeeded && previous == Some(BatchState::Failed)
}

fn first_record(event: &BatchEvent, occurred_at: DateTime<Utc>) -> BatchRecord {
    let b = &event.batch;
    let mut record = BatchRecord {
        batch_id: b.batch_id.clone(),
        environment_id: b.environment_id.clone(),
        project_id: b.project_id.clone(),
        cube_id: b.cube_id.clone(),
        cube_name: b.cube_name.clone(),
        state: BatchState::Running,
        build_kind: event.build_kind,
        aggregate_count: event.aggregate_count,
        aggregates_built: 0,
        rows_written: 0,
        error_message: None,
        failed_aggregates: Vec::new(),
        started_at: None,
        finished_at: None,
        start_seen: false,
        updated_at: occurred_at,
    };
    match &event.outcome {
        BatchOutcome::Started => {
            record.started_at = Some(occurred_at);
            record.start_seen = true;
        }
        outcome => complete(&mut record, event, outcome, occurred_at),
    }
    record
}

fn complete(
    record: &mut BatchRecord,
    event: &BatchEvent,
    outcome: &BatchOutcome,
    occurred_at: DateTime<Utc>,
) {
    record.finished_at = Some(occurred_at);
    record.build_kind = event.build_kind;
    // Zero means "not reported" (proto3 cannot tell): keep what the start said.
    if event.aggregate_count > 0 {
        record.aggregate_count = event.aggregate_count;
    }
    match outcome {
        BatchOutcome::Started => {}
        BatchOutcome::Succeeded {
            aggregates_built,
            rows_written,
        } => {
            record.state = BatchState::Succeeded;
            record.aggregates_built = *aggregates_built;
            record.rows_written = *rows_written;
        }
        BatchOutcome::Failed {
            error_message,
            failed_aggregates,
        } => {
            record.state = BatchState::Failed;
            record.error_message = Some(error_message.clone());
            record.failed_aggregates = failed_aggregates.clone();
        }
    }
}

fn check_scope(current: &BatchRecord, event: &BatchEvent) -> Result<(), TransitionError> {
    let b = &event.batch;
    if current.environment_id == b.environment_id && current.cube_id == b.cube_id {
        return Ok(());
    }
    Err(TransitionError::ScopeMismatch {
        batch_id: b.batch_id.clone(),
        stored_environment: current.environment_id.clone(),
        stored_cube: current.cube_id.clone(),
        environment: b.environment_id.clone(),
        cube: b.cube_id.clone(),
    })
}

fn outcome_name(outcome: &BatchOutcome) -> &'static str {
    match outcome {
        BatchOutcome::Started => "started",
        BatchOutcome::Succeeded { .. } => "succeeded",
        BatchOutcome::Failed { .. } => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::BatchRef;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn event(outcome: BatchOutcome) -> BatchEvent {
        BatchEvent {
            batch: BatchRef {
                batch_id: "b1".into(),
                environment_id: "prod".into(),
                project_id: Some("p".into()),
                cube_id: "sales".into(),
                cube_name: "Sales".into(),
            },
            build_kind: BuildKind::Full,
            aggregate_count: 3,
            outcome,
        }
    }

    fn succeeded() -> BatchOutcome {
        BatchOutcome::Succeeded {
            aggregates_built: 3,
            rows_written: 10,
        }
    }

    fn failed() -> BatchOutcome {
        BatchOutcome::Failed {
            error_message: "disk full".into(),
            failed_aggregates: vec![],
        }
    }

    #[test]
    fn a_started_batch_runs_then_succeeds() {
        let started = apply(None, &event(BatchOutcome::Started), at(0)).unwrap();
        assert_eq!(started.record.state, BatchState::Running);
        assert!(started.changed && started.record.start_seen);
        let done = apply(Some(&started.record), &event(succeeded()), at(60)).unwrap();
        assert_eq!(done.record.state, BatchState::Succeeded);
        assert_eq!(done.record.started_at, Some(at(0)));
        assert_eq!(done.record.finished_at, Some(at(60)));
        assert_eq!(done.record.rows_written, 10);
    }

    #[test]
    fn a_completion_without_a_seen_start_is_accepted_and_flagged() {
        let done = apply(None, &event(failed()), at(5)).unwrap();
        assert_eq!(done.record.state, BatchState::Failed);
        assert!(done.changed);
        assert!(!done.record.start_seen);
        assert_eq!(done.record.started_at, None);
    }

    #[test]
    fn the_same_terminal_event_again_is_a_quiet_repeat() {
        let done = apply(None, &event(succeeded()), at(5)).unwrap();
        let again = apply(Some(&done.record), &event(succeeded()), at(9)).unwrap();
        assert!(!again.changed);
        assert_eq!(again.record, done.record);
    }

    #[test]
    fn a_different_terminal_event_is_a_conflict() {
        let done = apply(None, &event(succeeded()), at(5)).unwrap();
        let err = apply(Some(&done.record), &event(failed()), at(9)).unwrap_err();
        assert!(err.to_string().contains("already ended SUCCEEDED"), "{err}");
    }

    #[test]
    fn a_late_start_fills_in_the_start_time_only() {
        let done = apply(None, &event(succeeded()), at(5)).unwrap();
        let late = apply(Some(&done.record), &event(BatchOutcome::Started), at(1)).unwrap();
        assert!(!late.changed);
        assert_eq!(late.record.state, BatchState::Succeeded);
        assert_eq!(late.record.started_at, Some(at(1)));
    }

    #[test]
    fn a_batch_id_cannot_move_to_another_cube() {
        let started = apply(None, &event(BatchOutcome::Started), at(0)).unwrap();
        let mut other = event(succeeded());
        other.batch.cube_id = "stock".into();
        let err = apply(Some(&started.record), &other, at(1)).unwrap_err();
        assert!(matches!(err, TransitionError::ScopeMismatch { .. }));
    }

    #[test]
    fn a_running_batch_stalls_once_and_may_still_complete() {
        let running = apply(None, &event(BatchOutcome::Started), at(0))
            .unwrap()
            .record;
        let stalled = stall(&running, at(100)).unwrap();
        assert_eq!(stalled.state, BatchState::Stalled);
        assert_eq!(stall(&stalled, at(200)), None);
        let done = apply(Some(&stalled), &event(succeeded()), at(300)).unwrap();
        assert!(done.changed);
        assert_eq!(done.record.state, BatchState::Succeeded);
        let finished = done.record;
        assert_eq!(stall(&finished, at(400)), None);
    }

    #[test]
    fn recovery_is_the_first_success_after_a_failure() {
        let ok = apply(None, &event(succeeded()), at(0)).unwrap().record;
        assert!(is_recovery(Some(BatchState::Failed), &ok));
        assert!(!is_recovery(Some(BatchState::Succeeded), &ok));
        assert!(!is_recovery(None, &ok));
    }

    fn any_outcome() -> impl Strategy<Value = BatchOutcome> {
        prop_oneof![
            Just(BatchOutcome::Started),
            Just(succeeded()),
            Just(failed())
        ]
    }

    proptest! {
        /// Whatever the order of events, a batch only moves along the
        /// machine: once terminal it never changes state, and every
        /// accepted change is out of RUNNING or out of nothing.
        #[test]
        fn states_only_move_along_the_machine(outcomes in prop::collection::vec(any_outcome(), 1..12)) {
            let mut current: Option<BatchRecord> = None;
            for (i, outcome) in outcomes.into_iter().enumerate() {
                let before = current.as_ref().map(|r| r.state);
                match apply(current.as_ref(), &event(outcome), at(i as i64)) {
                    Ok(applied) => {
                        if let Some(before) = before {
                            if before.is_terminal() {
                                prop_assert_eq!(applied.record.state, before);
                            }
                            if applied.changed {
                                prop_assert_eq!(before, BatchState::Running);
                            }
                        }
                        current = Some(applied.record);
                    }
                    Err(_) => prop_assert!(before.is_some_and(BatchState::is_terminal)),
                }
            }
        }
    }
}
