//! Reads on PostgreSQL (batches, changes, documents, what the monitor
//! needs), schedules, and pruning.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::ingest::{latest_per_cube, DOCUMENT, LATEST_DOCUMENT};
use super::PgStore;
use crate::core::batch::BatchRecord;
use crate::core::document::StoredDocument;
use crate::core::event::Scope;
use crate::store::types::{
    BatchChange, BatchFilter, BatchKey, BatchPage, Pruned, ScheduleState, SnapshotPage,
    SnapshotRest,
};
use crate::store::{portable, rows};
use crate::store::{to_millis, StoreError};

impl PgStore {
    pub async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM batches WHERE batch_id = $1")
            .bind(batch_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    pub async fn list_batches(
        &self,
        filter: &BatchFilter,
        page_size: usize,
        after: Option<(i64, String)>,
    ) -> Result<BatchPage, StoreError> {
        let mut query = portable::list_batches::<Postgres>(filter, page_size, after);
        let found = query.build().fetch_all(&self.pool).await?;
        portable::batch_page(&found, page_size)
    }

    pub async fn first_batch_after(
        &self,
        environment_id: Option<&str>,
        cube_id: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT record FROM batches
             WHERE cube_id = $1 AND ($2::TEXT IS NULL OR environment_id = $2) AND begun_at >= $3
             ORDER BY begun_at, batch_id LIMIT 1",
        )
        .bind(cube_id)
        .bind(environment_id)
        .bind(to_millis(after))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        last_seq_in(&mut conn).await
    }

    pub async fn first_snapshot_page(
        &self,
        filter: &BatchFilter,
        limit: usize,
        page: usize,
    ) -> Result<SnapshotPage, StoreError> {
        let mut tx = self.snapshot().await?;
        let seq = last_seq_in(&mut tx).await?;
        let Some(last) = key_at(&mut tx, filter, 0).await? else {
            return Ok(SnapshotPage {
                seq,
                batches: Vec::new(),
                rest: None,
            });
        };
        let first = key_at(&mut tx, filter, limit.saturating_sub(1)).await?;
        let (batches, rest) = snapshot_rows(&mut tx, filter, first, true, last, page).await?;
        tx.commit().await?;
        Ok(SnapshotPage { seq, batches, rest })
    }

    pub async fn next_snapshot_page(
        &self,
        filter: &BatchFilter,
        rest: SnapshotRest,
        page: usize,
    ) -> Result<SnapshotPage, StoreError> {
        let mut tx = self.snapshot().await?;
        let seq = last_seq_in(&mut tx).await?;
        let (batches, rest) =
            snapshot_rows(&mut tx, filter, Some(rest.after), false, rest.last, page).await?;
        tx.commit().await?;
        Ok(SnapshotPage { seq, batches, rest })
    }

    /// A read-only transaction that sees one snapshot throughout: the
    /// newest sequence number and the rows read with it agree.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn batch_changes(
        &self,
        filter: &BatchFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<BatchChange>, StoreError> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT seq, event_type, occurred_at, reply FROM events
             WHERE changes_batch AND seq > ",
        );
        query.push_bind(after_seq);
        portable::push_filter(&mut query, filter, "events");
        query.push(" ORDER BY seq LIMIT ").push_bind(limit as i64);
        let found = query.build().fetch_all(&self.pool).await?;
        found.iter().map(rows::change).collect()
    }

    /// The scopes of batch changes after `after_seq`, oldest first, with
    /// their sequence numbers: what another replica committed, for this
    /// one's watchers.
    pub async fn changed_scopes(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Scope)>, StoreError> {
        let found = sqlx::query(
            "SELECT seq, environment_id, project_id, cube_id, batch_id FROM events
             WHERE changes_batch AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(found
            .iter()
            .map(|r| (r.get("seq"), rows::prior_scope(r)))
            .collect())
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get("n"))
    }

    pub async fn running_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let found =
            sqlx::query("SELECT record FROM batches WHERE state = 'RUNNING' ORDER BY begun_at")
                .fetch_all(&self.pool)
                .await?;
        found.iter().map(rows::batch).collect()
    }

    pub async fn recent_durations(
        &self,
        cubes: &[(&str, &str)],
        limit: usize,
    ) -> Result<HashMap<(String, String), Vec<Duration>>, StoreError> {
        let mut found: HashMap<(String, String), Vec<Duration>> = HashMap::new();
        if cubes.is_empty() {
            return Ok(found);
        }
        let mut conn = self.pool.acquire().await?;
        let latest = latest_per_cube(
            &mut conn,
            cubes,
            &[crate::store::portable::TIMED_SUCCESS],
            limit,
        )
        .await?;
        for r in &latest {
            let started: i64 = r.get::<Option<i64>, _>("started_at").unwrap_or(0);
            let finished: i64 = r.get::<Option<i64>, _>("finished_at").unwrap_or(started);
            let key = (r.get("environment_id"), r.get("cube_id"));
            found
                .entry(key)
                .or_default()
                .push(Duration::from_millis((finished - started).max(0) as u64));
        }
        Ok(found)
    }

    pub async fn last_success_at(
        &self,
        environment_id: &str,
        cube_id: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(finished_at) AS at FROM batches
             WHERE environment_id = $1 AND cube_id = $2 AND state = 'SUCCEEDED'",
        )
        .bind(environment_id)
        .bind(cube_id)
        .fetch_one(&self.pool)
        .await?;
        row.get::<Option<i64>, _>("at")
            .map(crate::store::from_millis)
            .transpose()
    }

    pub async fn sync_schedules(
        &self,
        schedules: &[(String, String, String)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let names: Vec<&str> = schedules.iter().map(|s| s.0.as_str()).collect();
        let environments: Vec<&str> = schedules.iter().map(|s| s.1.as_str()).collect();
        let cubes: Vec<&str> = schedules.iter().map(|s| s.2.as_str()).collect();
        sqlx::query(
            "INSERT INTO schedules (name, environment_id, cube_id, baseline_at)
             SELECT name, env, cube, $4 FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[])
                AS s (name, env, cube)
             ON CONFLICT (name) DO UPDATE SET
                baseline_at = CASE WHEN schedules.environment_id = excluded.environment_id
                                    AND schedules.cube_id = excluded.cube_id
                                   THEN schedules.baseline_at ELSE excluded.baseline_at END,
                overdue_since = CASE WHEN schedules.environment_id = excluded.environment_id
                                      AND schedules.cube_id = excluded.cube_id
                                     THEN schedules.overdue_since END,
                environment_id = excluded.environment_id, cube_id = excluded.cube_id",
        )
        .bind(&names)
        .bind(&environments)
        .bind(&cubes)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn schedule_state(&self, name: &str) -> Result<Option<ScheduleState>, StoreError> {
        let row =
            sqlx::query("SELECT name, baseline_at, overdue_since FROM schedules WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(rows::schedule).transpose()
    }

    pub async fn clear_overdue(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedules SET overdue_since = NULL WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn latest_document(
        &self,
        project_id: &str,
    ) -> Result<Option<(String, StoredDocument)>, StoreError> {
        let row = sqlx::query(LATEST_DOCUMENT)
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get("event_id"), rows::document(&r))))
    }

    pub async fn stored_document(
        &self,
        event_id: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let row = sqlx::query(DOCUMENT)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(rows::document))
    }

    pub async fn document(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        crate::store::decompress(self.stored_document(event_id).await?)
    }

    pub async fn prune_deliveries(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE state <> 'pending' AND finished_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(to_millis(cutoff))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = delete_any(&mut tx, "attempts", "delivery_id", &ids).await?;
        let deliveries = delete_any(&mut tx, "deliveries", "id", &ids).await?;
        tx.commit().await?;
        Ok(Pruned {
            deliveries,
            attempts,
            ..Pruned::default()
        })
    }

    pub async fn prune_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let events = sqlx::query(
            "DELETE FROM events WHERE seq IN (
                SELECT e.seq FROM events e
                WHERE e.received_at < $1
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
                  AND NOT EXISTS (SELECT 1 FROM schema_log s WHERE s.event_seq = e.seq)
                  AND NOT EXISTS (SELECT 1 FROM documents x WHERE x.event_id = e.event_id)
                ORDER BY e.received_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(to_millis(cutoff))
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Pruned {
            events,
            ..Pruned::default()
        })
    }

    pub async fn prune_documents(&self, keep: u32, limit: u32) -> Result<Pruned, StoreError> {
        let documents = sqlx::query(
            "DELETE FROM documents WHERE event_id IN (
                SELECT event_id FROM (
                    SELECT d.event_id, e.seq,
                           ROW_NUMBER() OVER (PARTITION BY e.project_id ORDER BY e.seq DESC) AS newer
                    FROM documents d JOIN events e ON e.event_id = d.event_id
                ) ranked
                WHERE newer > $1
                  AND NOT EXISTS (SELECT 1 FROM deliveries x
                                  WHERE x.event_seq = ranked.seq AND x.state = 'pending')
                LIMIT $2)",
        )
        .bind(keep as i64)
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Pruned {
            documents,
            ..Pruned::default()
        })
    }

    pub async fn prune_batches(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let batches = sqlx::query(
            "DELETE FROM batches WHERE batch_id IN (
                SELECT batch_id FROM batches WHERE updated_at < $1
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(to_millis(cutoff))
        .bind(limit as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Pruned {
            batches,
            ..Pruned::default()
        })
    }

    /// PostgreSQL's autovacuum reclaims space by itself.
    pub async fn release_free_pages(&self, _pages: u32) -> Result<(), StoreError> {
        Ok(())
    }
}

async fn delete_any(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
    keys: &[String],
) -> Result<u64, StoreError> {
    if keys.is_empty() {
        return Ok(0);
    }
    Ok(
        sqlx::query(&format!("DELETE FROM {table} WHERE {column} = ANY($1)"))
            .bind(keys)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

async fn last_seq_in(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0)::BIGINT AS seq FROM events")
        .fetch_one(conn)
        .await?;
    Ok(row.get("seq"))
}

async fn key_at(
    conn: &mut PgConnection,
    filter: &BatchFilter,
    offset: usize,
) -> Result<Option<BatchKey>, StoreError> {
    let mut query = portable::key_at::<Postgres>(filter, offset);
    let row = query.build().fetch_optional(conn).await?;
    Ok(row.as_ref().map(portable::key))
}

async fn snapshot_rows(
    conn: &mut PgConnection,
    filter: &BatchFilter,
    from: Option<BatchKey>,
    inclusive: bool,
    last: BatchKey,
    page: usize,
) -> Result<(Vec<BatchRecord>, Option<SnapshotRest>), StoreError> {
    let mut query = portable::snapshot_rows::<Postgres>(filter, from, inclusive, &last, page);
    let found = query.build().fetch_all(conn).await?;
    portable::snapshot_page(&found, page, last)
}
