//! Read-side queries over batches and their changes.

use chrono::{DateTime, Utc};

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{rows, to_millis, SqliteStore, StoreError};
use crate::core::batch::BatchRecord;
use crate::store::portable;
use crate::store::types::{
    BatchChange, BatchFilter, BatchKey, BatchPage, SnapshotPage, SnapshotRest,
};

impl SqliteStore {
    pub async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM batches WHERE batch_id = ?")
            .bind(batch_id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    /// Batches matching `filter`, newest first (by when they began, then
    /// id), starting strictly after `after`.
    pub async fn list_batches(
        &self,
        filter: &BatchFilter,
        page_size: usize,
        after: Option<(i64, String)>,
    ) -> Result<BatchPage, StoreError> {
        let mut query = portable::list_batches::<Sqlite>(filter, page_size, after);
        let found = query.build().fetch_all(&self.reader).await?;
        portable::batch_page(&found, page_size)
    }

    /// The earliest batch of a cube begun at or after `after` (in any
    /// environment when `environment_id` is `None`).
    pub async fn first_batch_after(
        &self,
        environment_id: Option<&str>,
        cube_id: &str,
        after: DateTime<Utc>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT record FROM batches
             WHERE cube_id = ?1 AND (?2 IS NULL OR environment_id = ?2) AND begun_at >= ?3
             ORDER BY begun_at, batch_id LIMIT 1",
        )
        .bind(cube_id)
        .bind(environment_id)
        .bind(to_millis(after))
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(rows::batch).transpose()
    }

    /// The sequence number of the newest event (0 when there is none).
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let mut conn = self.reader.acquire().await?;
        last_seq_in(&mut conn).await
    }

    /// The first page of a watch's snapshot: of the newest `limit` batches
    /// matching `filter`, the `page` oldest, and where the rest begins.
    pub async fn first_snapshot_page(
        &self,
        filter: &BatchFilter,
        limit: usize,
        page: usize,
    ) -> Result<SnapshotPage, StoreError> {
        let mut tx = self.reader.begin().await?;
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
        Ok(SnapshotPage { seq, batches, rest })
    }

    /// The next page of a watch's snapshot, as the batches stand now.
    pub async fn next_snapshot_page(
        &self,
        filter: &BatchFilter,
        rest: SnapshotRest,
        page: usize,
    ) -> Result<SnapshotPage, StoreError> {
        let mut tx = self.reader.begin().await?;
        let seq = last_seq_in(&mut tx).await?;
        let (batches, rest) =
            snapshot_rows(&mut tx, filter, Some(rest.after), false, rest.last, page).await?;
        Ok(SnapshotPage { seq, batches, rest })
    }

    /// Batch changes after `after_seq` matching `filter`, oldest first.
    pub async fn batch_changes(
        &self,
        filter: &BatchFilter,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<BatchChange>, StoreError> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT seq, event_type, occurred_at, reply FROM events
             WHERE changes_batch = 1 AND seq > ",
        );
        query.push_bind(after_seq);
        portable::push_filter(&mut query, filter, "events");
        query.push(" ORDER BY seq LIMIT ").push_bind(limit as i64);
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(rows::change).collect()
    }

    /// How many events are stored (for tests and diagnostics).
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get("n"))
    }
}

async fn last_seq_in(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
        .fetch_one(conn)
        .await?;
    Ok(row.get("seq"))
}

/// The key of the `offset`-th newest batch matching `filter`.
async fn key_at(
    conn: &mut SqliteConnection,
    filter: &BatchFilter,
    offset: usize,
) -> Result<Option<BatchKey>, StoreError> {
    let mut query = portable::key_at::<Sqlite>(filter, offset);
    let row = query.build().fetch_optional(conn).await?;
    Ok(row.as_ref().map(portable::key))
}

/// Up to `page` batches matching `filter` from `from` (the oldest when
/// `None`) to `last`, oldest first, and what remains after them.
async fn snapshot_rows(
    conn: &mut SqliteConnection,
    filter: &BatchFilter,
    from: Option<BatchKey>,
    inclusive: bool,
    last: BatchKey,
    page: usize,
) -> Result<(Vec<BatchRecord>, Option<SnapshotRest>), StoreError> {
    let mut query = portable::snapshot_rows::<Sqlite>(filter, from, inclusive, &last, page);
    let found = query.build().fetch_all(conn).await?;
    portable::snapshot_page(&found, page, last)
}
