//! The overview: one row per cube (its state, progress, last success, the
//! next expected refresh and the stall allowance in force) and the
//! receivers in trouble. The console's front page and `herald status`
//! (through `/overview.json`) both show exactly this.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ConsoleParts;
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::schedule::Schedule;
use crate::store::{StoreError, SubscriptionHealth};

/// What a cube's row says of it, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CubeState {
    Failed,
    Stalled,
    Overdue,
    Running,
    Succeeded,
    /// Scheduled, but no batch seen yet and not overdue.
    Waiting,
}

impl CubeState {
    pub fn as_str(self) -> &'static str {
        match self {
            CubeState::Failed => "failed",
            CubeState::Stalled => "stalled",
            CubeState::Overdue => "overdue",
            CubeState::Running => "running",
            CubeState::Succeeded => "succeeded",
            CubeState::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<CubeState> {
        [
            CubeState::Failed,
            CubeState::Stalled,
            CubeState::Overdue,
            CubeState::Running,
            CubeState::Succeeded,
            CubeState::Waiting,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeRow {
    pub environment_id: String,
    pub cube_id: String,
    pub cube_name: String,
    pub state: CubeState,
    pub batch_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Seconds the newest batch has run (to now while it runs).
    pub elapsed_seconds: Option<i64>,
    pub aggregates_built: u32,
    pub aggregate_count: u32,
    pub last_success_at: Option<DateTime<Utc>>,
    pub next_expected_at: Option<DateTime<Utc>>,
    pub stall_allowance_seconds: Option<u64>,
    /// `configured` (a `[[stalls.rules]]` entry), `learned` or `default`.
    pub allowance_source: Option<String>,
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiverRow {
    pub subscription: String,
    pub disabled_reason: Option<String>,
    pub dead: i64,
    pub pending: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    pub recent_finished: i64,
    pub recent_delivered: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub failed: usize,
    pub stalled: usize,
    pub overdue: usize,
    pub running: usize,
    pub receivers_in_trouble: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub counts: Counts,
    pub cubes: Vec<CubeRow>,
    /// Only the receivers in trouble.
    pub receivers: Vec<ReceiverRow>,
}

/// The window "recent deliveries" counts.
pub const RECENT: Duration = Duration::from_secs(3600);
/// A backlog older than this puts a receiver in trouble.
const BACKLOG_AGE: Duration = Duration::from_secs(600);

/// Reads the overview as it stands at the console's clock.
pub(super) async fn read(parts: &ConsoleParts) -> Result<Overview, StoreError> {
    let now = parts.clock.now();
    let latest = parts.store.latest_batches().await?;
    let mut cubes = BTreeMap::new();
    for cube in latest {
        let key = (
            cube.batch.environment_id.clone(),
            cube.batch.cube_id.clone(),
        );
        cubes.insert(key, row_of(&cube.batch, cube.last_success_at, now));
    }
    add_schedules(parts, &mut cubes, now).await?;
    add_allowances(parts, &mut cubes).await?;
    let cubes: Vec<CubeRow> = cubes.into_values().collect();
    let receivers = receivers_in_trouble(parts, now).await?;
    let count = |state| cubes.iter().filter(|c| c.state == state).count();
    Ok(Overview {
        generated_at: now,
        counts: Counts {
            failed: count(CubeState::Failed),
            stalled: count(CubeState::Stalled),
            overdue: count(CubeState::Overdue),
            running: count(CubeState::Running),
            receivers_in_trouble: receivers.len(),
        },
        cubes,
        receivers,
    })
}

fn row_of(
    batch: &BatchRecord,
    last_success_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> CubeRow {
    let state = match batch.state {
        BatchState::Running => CubeState::Running,
        BatchState::Succeeded => CubeState::Succeeded,
        BatchState::Failed => CubeState::Failed,
        BatchState::Stalled => CubeState::Stalled,
    };
    let elapsed = batch
        .started_at
        .map(|start| (batch.finished_at.unwrap_or(now) - start).num_seconds());
    CubeRow {
        environment_id: batch.environment_id.clone(),
        cube_id: batch.cube_id.clone(),
        cube_name: batch.cube_name.clone(),
        state,
        batch_id: Some(batch.batch_id.clone()),
        started_at: batch.started_at,
        finished_at: batch.finished_at,
        elapsed_seconds: elapsed,
        aggregates_built: batch.aggregates_built,
        aggregate_count: batch.aggregate_count,
        last_success_at,
        next_expected_at: None,
        stall_allowance_seconds: None,
        allowance_source: None,
        error_message: batch.error_message.clone(),
    }
}

/// Each schedule sets its cube's next expected refresh, and marks a cube
/// whose newest batch is neither failed nor running overdue.
async fn add_schedules(
    parts: &ConsoleParts,
    cubes: &mut BTreeMap<(String, String), CubeRow>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for schedule in parts.schedules.get().iter() {
        let key = (schedule.environment_id.clone(), schedule.cube_id.clone());
        let row = cubes.entry(key).or_insert_with(|| waiting_row(schedule));
        let state = parts.store.schedule_state(&schedule.name).await?;
        let tracked_since = state.as_ref().map_or(now, |s| s.baseline_at);
        let overdue_at = schedule.overdue_after(row.last_success_at, tracked_since);
        row.next_expected_at = overdue_at.map(|at| at - schedule.grace);
        let overdue = state.is_some_and(|s| s.overdue_since.is_some())
            || overdue_at.is_some_and(|at| now >= at);
        if overdue && matches!(row.state, CubeState::Succeeded | CubeState::Waiting) {
            row.state = CubeState::Overdue;
        }
    }
    Ok(())
}

fn waiting_row(schedule: &Schedule) -> CubeRow {
    CubeRow {
        environment_id: schedule.environment_id.clone(),
        cube_id: schedule.cube_id.clone(),
        cube_name: schedule.cube_id.clone(),
        state: CubeState::Waiting,
        batch_id: None,
        started_at: None,
        finished_at: None,
        elapsed_seconds: None,
        aggregates_built: 0,
        aggregate_count: 0,
        last_success_at: None,
        next_expected_at: None,
        stall_allowance_seconds: None,
        allowance_source: None,
        error_message: None,
    }
}

/// The stall allowance each cube's batches get: configured, or learned
/// from its recent successful durations (as the monitor reckons it).
async fn add_allowances(
    parts: &ConsoleParts,
    cubes: &mut BTreeMap<(String, String), CubeRow>,
) -> Result<(), StoreError> {
    let policy = parts.stalls.get();
    let mut history: HashMap<(String, String), Vec<Duration>> = HashMap::new();
    if let Some(learning) = &policy.learning {
        let keys: Vec<(&str, &str)> = cubes
            .keys()
            .map(|(e, c)| (e.as_str(), c.as_str()))
            .collect();
        for chunk in keys.chunks(100) {
            history.extend(parts.store.recent_durations(chunk, learning.window).await?);
        }
    }
    for ((environment, cube), row) in cubes.iter_mut() {
        let durations = history
            .get(&(environment.clone(), cube.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let allowance = policy.allowance(environment, cube, &row.cube_name, durations);
        let learned = policy
            .learning
            .as_ref()
            .and_then(|l| l.allowance(durations));
        row.stall_allowance_seconds = allowance.map(|d| d.as_secs());
        row.allowance_source = allowance.map(|a| {
            match (Some(a) == learned, Some(a) == policy.default) {
                (true, _) => "learned",
                (false, true) => "default",
                (false, false) => "configured",
            }
            .to_owned()
        });
    }
    Ok(())
}

/// Receivers with dead deliveries, a failing recent hour, an old backlog,
/// or disabled.
async fn receivers_in_trouble(
    parts: &ConsoleParts,
    now: DateTime<Utc>,
) -> Result<Vec<ReceiverRow>, StoreError> {
    let since = now - chrono::Duration::from_std(RECENT).unwrap_or_default();
    let health: HashMap<String, SubscriptionHealth> = parts
        .store
        .subscription_health(since)
        .await?
        .into_iter()
        .map(|h| (h.subscription.clone(), h))
        .collect();
    let mut rows = Vec::new();
    for sub in parts.registry.current().iter() {
        let disabled = parts.store.subscription_disabled(&sub.name).await?;
        let h = health.get(&sub.name).cloned().unwrap_or_default();
        let row = receiver_row(&sub.name, disabled, h);
        if in_trouble(&row, now) {
            rows.push(row);
        }
    }
    Ok(rows)
}

pub(super) fn receiver_row(
    name: &str,
    disabled_reason: Option<String>,
    h: SubscriptionHealth,
) -> ReceiverRow {
    ReceiverRow {
        subscription: name.to_owned(),
        disabled_reason,
        dead: h.dead,
        pending: h.pending,
        oldest_pending: h.oldest_pending,
        recent_finished: h.recent_finished,
        recent_delivered: h.recent_delivered,
        last_error: h.last_error,
    }
}

pub(super) fn in_trouble(row: &ReceiverRow, now: DateTime<Utc>) -> bool {
    let backlog_old = row
        .oldest_pending
        .is_some_and(|at| (now - at).to_std().unwrap_or_default() > BACKLOG_AGE);
    row.disabled_reason.is_some()
        || row.dead > 0
        || row.recent_delivered < row.recent_finished
        || backlog_old
}
