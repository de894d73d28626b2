//! What the monitor reads and writes: running batches, the recent
//! successful durations of their cubes, and the state of refresh schedules.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{from_millis, rows, to_millis, SqliteStore, StoreError};
use crate::core::batch::BatchRecord;
use crate::store::types::ScheduleState;

/// Cubes per statement of [`latest_per_cube`]: under SQLite's limit on
/// compound selects and on bound parameters.
const CHUNK: usize = 256;

impl SqliteStore {
    /// Every batch in RUNNING state.
    pub async fn running_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT record FROM batches WHERE state = 'RUNNING' ORDER BY begun_at")
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(rows::batch).collect()
    }

    /// For each (environment, cube): the durations of its latest `limit`
    /// successful batches whose start Herald saw, newest first (a cube
    /// without any is absent). One statement for up to [`CHUNK`] cubes, each
    /// cube an indexed lookup: the monitor asks once per check, not once
    /// per running batch.
    pub async fn recent_durations(
        &self,
        cubes: &[(&str, &str)],
        limit: usize,
    ) -> Result<HashMap<(String, String), Vec<Duration>>, StoreError> {
        let mut found: HashMap<(String, String), Vec<Duration>> = HashMap::new();
        for chunk in cubes.chunks(CHUNK) {
            let mut query = latest_per_cube(
                chunk,
                "finished_at, finished_at - started_at AS ms",
                crate::store::portable::TIMED_SUCCESS,
                limit,
            );
            // Newest first within each cube, whatever order the parts return.
            query.push(" ORDER BY environment_id, cube_id, finished_at DESC");
            for r in query.build().fetch_all(&self.reader).await? {
                let ms = Duration::from_millis(r.get::<i64, _>("ms") as u64);
                let key = (r.get("environment_id"), r.get("cube_id"));
                found.entry(key).or_default().push(ms);
            }
        }
        Ok(found)
    }

    /// When the cube last finished a successful batch.
    pub async fn last_success_at(
        &self,
        environment_id: &str,
        cube_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(finished_at) AS at FROM batches
             WHERE environment_id = ? AND cube_id = ? AND state = 'SUCCEEDED'",
        )
        .bind(environment_id)
        .bind(cube_id)
        .fetch_one(&self.reader)
        .await?;
        row.get::<Option<i64>, _>("at").map(from_millis).transpose()
    }

    /// Records the configured schedules; tracking of a new one (or one that
    /// now names another cube) begins at `now`.
    pub async fn sync_schedules(
        &self,
        schedules: &[(String, String, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (name, environment_id, cube_id) in schedules {
            sqlx::query(
                "INSERT INTO schedules (name, environment_id, cube_id, baseline_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                    baseline_at = CASE WHEN environment_id = ?2 AND cube_id = ?3 THEN baseline_at ELSE ?4 END,
                    overdue_since = CASE WHEN environment_id = ?2 AND cube_id = ?3 THEN overdue_since END,
                    environment_id = ?2, cube_id = ?3",
            )
            .bind(name)
            .bind(environment_id)
            .bind(cube_id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn schedule_state(&self, name: &str) -> Result<Option<ScheduleState>, StoreError> {
        let row =
            sqlx::query("SELECT name, baseline_at, overdue_since FROM schedules WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?;
        row.as_ref().map(rows::schedule).transpose()
    }

    /// Clears a schedule's overdue mark (its refresh succeeded).
    pub async fn clear_overdue(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedules SET overdue_since = NULL WHERE name = ?")
            .bind(name)
            .execute(&*self.writer.pool().await)
            .await?;
        Ok(())
    }
}

/// One statement that reads, for each cube, its latest `limit` batches
/// (by `finished_at`) meeting `condition`: `environment_id`, `cube_id` and
/// `columns`. Each part is an indexed lookup (a `condition` naming a state
/// reads that state's partial index, `batches_succeeded` or
/// `batches_failed`), joined by `UNION ALL`; at most [`CHUNK`] cubes, under
/// SQLite's limit on compound selects.
pub(super) fn latest_per_cube<'a>(
    cubes: &[(&'a str, &'a str)],
    columns: &str,
    condition: &str,
    limit: usize,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::new("");
    for (i, (environment_id, cube_id)) in cubes.iter().enumerate() {
        if i > 0 {
            query.push(" UNION ALL ");
        }
        query
            .push(format_args!("SELECT * FROM (SELECT environment_id, cube_id, {columns} FROM batches WHERE environment_id = "))
            .push_bind(*environment_id)
            .push(" AND cube_id = ")
            .push_bind(*cube_id)
            .push(format_args!(" AND {condition} ORDER BY finished_at DESC LIMIT "))
            .push_bind(limit as i64)
            .push(")");
    }
    query
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{explain, fresh_store};
    use super::latest_per_cube;

    /// The durations of a cube's latest successes come from the index of
    /// successes, newest first.
    #[tokio::test]
    async fn recent_durations_read_the_success_index() {
        let (_dir, store) = fresh_store().await;
        let query = latest_per_cube(
            &[("prod", "sales"), ("prod", "stock")],
            "finished_at",
            crate::store::portable::TIMED_SUCCESS,
            5,
        );
        let plan = explain(&store, "EXPLAIN QUERY PLAN", query.sql(), 3).await;
        let reads: Vec<&String> = plan.iter().filter(|s| s.contains("batches")).collect();
        assert_eq!(reads.len(), 2, "{plan:?}");
        assert!(
            reads
                .iter()
                .all(|step| step.starts_with("SEARCH batches USING INDEX batches_succeeded ")),
            "{plan:?}"
        );
    }
}
