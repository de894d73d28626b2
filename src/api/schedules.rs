//! Where each configured refresh schedule stands, for `ListSchedules`:
//! the same reckoning the monitor uses to raise `refresh.overdue`.

use chrono::{DateTime, Utc};

use super::convert::timestamp_to_proto;
use super::pb;
use crate::core::schedule::{Cadence, Schedule};
use crate::store::{Store, StoreError};

/// Each schedule's status at `now`, in configuration order.
pub async fn schedule_statuses(
    store: &Store,
    schedules: &[Schedule],
    now: DateTime<Utc>,
) -> Result<Vec<pb::ScheduleStatus>, StoreError> {
    let mut statuses = Vec::with_capacity(schedules.len());
    for schedule in schedules {
        let last_success = store
            .last_success_at(&schedule.environment_id, &schedule.cube_id)
            .await?;
        let state = store.schedule_state(&schedule.name).await?;
        // A schedule the monitor has not recorded yet counts from now.
        let tracked_since = state.as_ref().map_or(now, |s| s.baseline_at);
        let overdue_at = schedule.overdue_after(last_success, tracked_since);
        let marked = state.is_some_and(|s| s.overdue_since.is_some());
        statuses.push(pb::ScheduleStatus {
            name: schedule.name.clone(),
            environment_id: schedule.environment_id.clone(),
            cube_id: schedule.cube_id.clone(),
            cadence: cadence_text(&schedule.cadence),
            grace: prost_types::Duration::try_from(schedule.grace).ok(),
            last_success_at: last_success.map(timestamp_to_proto),
            overdue_at: overdue_at.map(timestamp_to_proto),
            overdue: marked || overdue_at.is_some_and(|at| now >= at),
        });
    }
    Ok(statuses)
}

/// The cadence as configured: `every 6h`, or the cron expression.
fn cadence_text(cadence: &Cadence) -> String {
    match cadence {
        Cadence::Every(period) => format!("every {}", crate::config::format_duration(*period)),
        Cadence::Cron(cron) => cron.as_str().to_owned(),
    }
}
