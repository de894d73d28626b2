//! Pruning: deletes what retention no longer keeps, a few hundred rows per
//! transaction so the single writer is never held for more than a few
//! milliseconds and ingest slips in between steps. Each function removes
//! at most `limit` rows of its kind and says how many it removed; the
//! caller repeats until a step removes fewer than `limit`.
//!
//! What is never removed: a pending delivery; an event that any delivery,
//! the schema log or a kept document still refers to; a document whose
//! event has a pending delivery (the Git archive may still need it).

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::{to_millis, SqliteStore, StoreError, WriteTx};
use crate::store::types::Pruned;

/// `DELETE FROM {table} WHERE {column} IN (...)`; returns rows removed.
async fn delete_in<T>(
    tx: &mut WriteTx,
    table: &str,
    column: &str,
    keys: &[T],
) -> Result<u64, StoreError>
where
    for<'q> T: sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Clone + Send + 'q,
{
    if keys.is_empty() {
        return Ok(0);
    }
    let mut query: QueryBuilder<Sqlite> =
        QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
    let mut list = query.separated(", ");
    for key in keys {
        list.push_bind(key.clone());
    }
    query.push(")");
    Ok(query.build().execute(&mut **tx).await?.rows_affected())
}

impl SqliteStore {
    /// Finished deliveries (delivered, failed, dead) that finished before
    /// `cutoff`, with their attempts.
    pub async fn prune_deliveries(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.writer.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE state <> 'pending' AND finished_at < ? LIMIT ?",
        )
        .bind(to_millis(cutoff))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = delete_in(&mut tx, "attempts", "delivery_id", &ids).await?;
        let deliveries = delete_in(&mut tx, "deliveries", "id", &ids).await?;
        tx.commit().await?;
        Ok(Pruned {
            deliveries,
            attempts,
            ..Pruned::default()
        })
    }

    /// Events received before `cutoff` that no delivery, no schema log
    /// entry and no kept document refers to. (A project's newest documents
    /// are kept whatever their age — the next publish is compared with the
    /// latest — so their events stay too; see [`Store::prune_documents`].)
    pub async fn prune_events(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.writer.begin().await?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT e.seq FROM events e
             WHERE e.received_at < ?
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
               AND NOT EXISTS (SELECT 1 FROM schema_log s WHERE s.event_seq = e.seq)
               AND NOT EXISTS (SELECT 1 FROM documents x WHERE x.event_id = e.event_id)
             ORDER BY e.received_at LIMIT ?",
        )
        .bind(to_millis(cutoff))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let events = delete_in(&mut tx, "events", "seq", &seqs).await?;
        tx.commit().await?;
        Ok(Pruned {
            events,
            ..Pruned::default()
        })
    }

    /// Project documents beyond the newest `keep` of their project.
    pub async fn prune_documents(&self, keep: u32, limit: u32) -> Result<Pruned, StoreError> {
        let mut tx = self.writer.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT event_id FROM (
                SELECT d.event_id, e.seq,
                       ROW_NUMBER() OVER (PARTITION BY e.project_id ORDER BY e.seq DESC) AS newer
                FROM documents d JOIN events e ON e.event_id = d.event_id
             ) ranked
             WHERE newer > ?
               AND NOT EXISTS (SELECT 1 FROM deliveries x
                               WHERE x.event_seq = ranked.seq AND x.state = 'pending')
             LIMIT ?",
        )
        .bind(keep)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let documents = delete_in(&mut tx, "documents", "event_id", &ids).await?;
        tx.commit().await?;
        Ok(Pruned {
            documents,
            ..Pruned::default()
        })
    }

    /// Batches that last changed before `cutoff`.
    pub async fn prune_batches(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Pruned, StoreError> {
        let mut tx = self.writer.begin().await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT batch_id FROM batches WHERE updated_at < ? LIMIT ?")
                .bind(to_millis(cutoff))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
        let batches = delete_in(&mut tx, "batches", "batch_id", &ids).await?;
        tx.commit().await?;
        Ok(Pruned {
            batches,
            ..Pruned::default()
        })
    }

    /// Gives up to `pages` free pages back to the file system (the database
    /// uses incremental auto-vacuum; freed pages are reused either way).
    pub async fn release_free_pages(&self, pages: u32) -> Result<(), StoreError> {
        sqlx::query(&format!("PRAGMA incremental_vacuum({pages})"))
            .execute(&*self.writer.pool().await)
            .await?;
        Ok(())
    }
}
