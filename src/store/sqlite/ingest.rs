//! The ingest transaction: everything one group of events changes is
//! written here and committed at once (DESIGN.md, invariant 1), on the
//! ingest connection (`direct`): each statement is prepared once and run
//! per row, in the committer's thread.

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use sqlx::Row;

use super::direct::DirectTx;
use super::SqliteStore;
use super::{rows, to_json, to_millis, StoreError};
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::document::StoredDocument;
use crate::core::event::{EnvironmentChange, EnvironmentEvent, SchemaEvent};
use crate::core::gate::GateRecord;
use crate::store::decompress;
use crate::store::rows::Columns;
use crate::store::types::{NewDelivery, NewEvent, PriorEvent};

/// A cube's latest finished batch (`?1` environment, `?2` cube): the newer
/// of its latest success and its latest failure, each the last entry of a
/// partial index (`batches_succeeded`, `batches_failed`).
pub(super) const LATEST_OUTCOME: &str = "SELECT state, finished_at FROM (
        SELECT state, finished_at FROM batches
         WHERE environment_id = ?1 AND cube_id = ?2 AND state = 'SUCCEEDED'
         ORDER BY finished_at DESC LIMIT 1)
    UNION ALL
    SELECT state, finished_at FROM (
        SELECT state, finished_at FROM batches
         WHERE environment_id = ?1 AND cube_id = ?2 AND state = 'FAILED'
         ORDER BY finished_at DESC LIMIT 1)
    ORDER BY finished_at DESC LIMIT 1";

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
///
/// Its methods are `async` to match PostgreSQL's, but run SQLite on the
/// calling thread: the committer's own.
pub struct Tx {
    inner: DirectTx,
}

impl Tx {
    pub(super) fn new(inner: DirectTx) -> Self {
        Self { inner }
    }

    fn conn(&self) -> &rusqlite::Connection {
        self.inner.conn()
    }

    /// The single writer serializes every transaction already.
    pub async fn lock_keys(&mut self, _keys: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Commits; only an `Ok` means the writes are durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.inner.commit()
    }

    /// Records why the transaction failed before its commit (so readiness
    /// knows a full store); dropping the transaction then rolls it back.
    pub fn note_failure(&self, error: StoreError) -> StoreError {
        self.inner.note_failure(error)
    }

    pub async fn save_environment(
        &mut self,
        env: &EnvironmentEvent,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO environments (environment_id, name, attributes, deleted, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (environment_id) DO UPDATE SET
                    name = COALESCE(excluded.name, environments.name),
                    attributes = CASE WHEN ?4 THEN environments.attributes ELSE excluded.attributes END,
                    deleted = excluded.deleted, updated_at = excluded.updated_at",
            )?
            .execute(params![
                env.environment_id,
                env.name,
                to_json(&env.attributes),
                env.change == EnvironmentChange::Deleted,
                to_millis(at),
            ])?;
        Ok(())
    }

    pub async fn append_schema_log(
        &mut self,
        seq: i64,
        schema: &SchemaEvent,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO schema_log (event_seq, environment_id, project_id, published,
                                         catalogs, cubes, version, occurred_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                seq,
                schema.environment_id,
                schema.project_id,
                schema.published,
                to_json(&schema.catalogs),
                to_json(&schema.cubes),
                schema.version,
                to_millis(at),
            ])?;
        Ok(())
    }

    /// The stored events among `event_ids`, by id.
    pub async fn find_events(
        &mut self,
        event_ids: &[&str],
    ) -> Result<HashMap<String, PriorEvent>, StoreError> {
        let mut found = HashMap::new();
        let mut statement = self.conn().prepare_cached(
            "SELECT seq, event_id, fingerprint, reply, event_type,
                    environment_id, project_id, cube_id, batch_id
             FROM events WHERE event_id = ?1",
        )?;
        for id in event_ids {
            if let Some(prior) = statement
                .query_row([id], |r| Ok(rows::prior(r)))
                .optional()?
            {
                found.insert((*id).to_owned(), prior);
            }
        }
        Ok(found)
    }

    /// The stored batches among `batch_ids`, by id.
    pub async fn load_batches(
        &mut self,
        batch_ids: &[&str],
    ) -> Result<HashMap<String, BatchRecord>, StoreError> {
        let mut found = HashMap::new();
        let mut statement = self
            .conn()
            .prepare_cached("SELECT record FROM batches WHERE batch_id = ?1")?;
        for id in batch_ids {
            if let Some(record) = statement
                .query_row([id], |r| Ok(rows::batch(r)))
                .optional()?
            {
                found.insert((*id).to_owned(), record?);
            }
        }
        Ok(found)
    }

    /// For each (environment, cube): when its latest finished batch
    /// finished, and how.
    pub async fn cube_outcomes(
        &mut self,
        cubes: &[(&str, &str)],
    ) -> Result<HashMap<(String, String), (i64, BatchState)>, StoreError> {
        let mut found = HashMap::new();
        let mut statement = self.conn().prepare_cached(LATEST_OUTCOME)?;
        for (environment_id, cube_id) in cubes {
            let latest = statement
                .query_row([environment_id, cube_id], |r| {
                    Ok((r.text("state"), r.opt_int("finished_at")))
                })
                .optional()?;
            if let Some((state, finished_at)) = latest {
                if let Some(state) = BatchState::parse(&state) {
                    let key = ((*environment_id).to_owned(), (*cube_id).to_owned());
                    found.insert(key, (finished_at.unwrap_or(0), state));
                }
            }
        }
        Ok(found)
    }

    /// Always 0: one process owns a SQLite store, and its registry changes
    /// before a subscription call returns.
    pub async fn registry_version(&mut self) -> Result<i64, StoreError> {
        Ok(0)
    }

    pub async fn disabled_subscriptions(&mut self) -> Result<HashSet<String>, StoreError> {
        let mut statement = self
            .conn()
            .prepare_cached("SELECT name FROM subscriptions WHERE disabled_at IS NOT NULL")?;
        let names = statement.query_map([], |r| Ok(r.text("name")))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Upserts the batches (each id at most once).
    pub async fn save_batches(&mut self, records: &[&BatchRecord]) -> Result<(), StoreError> {
        let mut statement = self.conn().prepare_cached(
            "INSERT INTO batches (batch_id, environment_id, project_id, cube_id, cube_name,
                                  state, started_at, finished_at, begun_at, updated_at, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (batch_id) DO UPDATE SET
                project_id = excluded.project_id, cube_name = excluded.cube_name,
                state = excluded.state, started_at = excluded.started_at,
                finished_at = excluded.finished_at, begun_at = excluded.begun_at,
                updated_at = excluded.updated_at, record = excluded.record",
        )?;
        for r in records {
            statement.execute(params![
                r.batch_id,
                r.environment_id,
                r.project_id,
                r.cube_id,
                r.cube_name,
                r.state.as_str(),
                r.started_at.map(to_millis),
                r.finished_at.map(to_millis),
                to_millis(r.begun_at()),
                to_millis(r.updated_at),
                to_json(*r),
            ])?;
        }
        Ok(())
    }

    /// Inserts the event rows; returns each one's sequence number by id.
    pub async fn insert_events(
        &mut self,
        events: &[NewEvent<'_>],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut seqs = HashMap::with_capacity(events.len());
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "INSERT INTO events (event_id, event_type, source, occurred_at, received_at,
                                 environment_id, project_id, cube_id, batch_id,
                                 fingerprint, payload, body, reply, changes_batch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for e in events {
            statement.execute(params![
                e.event_id,
                e.event_type,
                e.source,
                to_millis(e.occurred_at),
                to_millis(e.received_at),
                e.scope.environment_id,
                e.scope.project_id,
                e.scope.cube_id,
                e.scope.batch_id,
                e.fingerprint,
                e.payload,
                e.body,
                e.reply,
                e.changes_batch,
            ])?;
            // `seq` is the table's rowid.
            seqs.insert(e.event_id.to_owned(), conn.last_insert_rowid());
        }
        Ok(seqs)
    }

    /// Enqueues deliveries, pending or already leased.
    pub async fn insert_deliveries(
        &mut self,
        deliveries: &[NewDelivery<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut statement = self.conn().prepare_cached(ENQUEUE)?;
        for d in deliveries {
            statement.execute(params![
                d.id,
                d.event_seq,
                d.subscription,
                to_millis(now),
                d.lease.map(|(owner, _)| owner),
                d.lease.map(|(_, until)| to_millis(until)),
            ])?;
        }
        Ok(())
    }

    /// Stores a project document in its compressed form.
    pub async fn insert_document(
        &mut self,
        event_id: &str,
        document: &StoredDocument,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO documents (event_id, size, compressed) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                event_id,
                document.size() as i64,
                document.compressed()
            ])?;
        Ok(())
    }

    /// The event id of a project's newest stored document.
    pub async fn latest_document_id(
        &mut self,
        project_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(LATEST_DOCUMENT_ID)?
            .query_row([project_id], |r| Ok(r.text("event_id")))
            .optional()?)
    }

    /// A stored document, compressed, as this transaction sees it.
    pub async fn stored_document(
        &mut self,
        event_id: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(DOCUMENT)?
            .query_row([event_id], |r| Ok(rows::document(r)))
            .optional()?)
    }

    pub async fn set_overdue(
        &mut self,
        name: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE schedules SET overdue_since = ?1 WHERE name = ?2")?
            .execute(params![since.map(to_millis), name])?;
        Ok(())
    }

    /// The stored records among `names`, as this transaction sees them.
    pub async fn load_gates(
        &mut self,
        names: &[&str],
    ) -> Result<HashMap<String, GateRecord>, StoreError> {
        let mut found = HashMap::new();
        let mut statement = self
            .conn()
            .prepare_cached("SELECT name, record FROM gates WHERE name = ?1")?;
        for name in names {
            if let Some(gate) = statement
                .query_row([name], |r| Ok(rows::gate(r)))
                .optional()?
            {
                let (name, record) = gate?;
                found.insert(name, record);
            }
        }
        Ok(found)
    }

    /// Upserts gate records.
    pub async fn save_gates(
        &mut self,
        gates: &[(&str, &GateRecord)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut statement = self.conn().prepare_cached(
            "INSERT INTO gates (name, record, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET record = ?2, updated_at = ?3",
        )?;
        for (name, record) in gates {
            statement.execute(params![name, to_json(record), to_millis(now)])?;
        }
        Ok(())
    }
}

/// A new delivery, pending (and leased when its send is handed over).
pub(super) const ENQUEUE: &str =
    "INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at,
                             created_at, lease_owner, lease_until)
     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6)";

/// A project's newest document: the one of its latest event that has one.
const LATEST_DOCUMENT: &str = "SELECT d.event_id, d.size, d.compressed FROM documents d
     WHERE d.event_id = (SELECT x.event_id FROM documents x JOIN events e ON e.event_id = x.event_id
                         WHERE e.project_id = ? ORDER BY e.seq DESC LIMIT 1)";

const LATEST_DOCUMENT_ID: &str =
    "SELECT d.event_id FROM documents d JOIN events e ON e.event_id = d.event_id
     WHERE e.project_id = ? ORDER BY e.seq DESC LIMIT 1";

const DOCUMENT: &str = "SELECT size, compressed FROM documents WHERE event_id = ?";

impl SqliteStore {
    /// A project's newest stored document (its event id, and the document
    /// compressed), read outside the writer.
    pub async fn latest_document(
        &self,
        project_id: &str,
    ) -> Result<Option<(String, StoredDocument)>, StoreError> {
        let row = sqlx::query(LATEST_DOCUMENT)
            .bind(project_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| (r.get("event_id"), rows::document(&r))))
    }

    /// A project document in its stored (compressed) form.
    pub async fn stored_document(
        &self,
        event_id: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let row = sqlx::query(DOCUMENT)
            .bind(event_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| rows::document(&r)))
    }

    /// A project document, decompressed whole.
    pub async fn document(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        decompress(self.stored_document(event_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{explain, fresh_store};
    use super::LATEST_OUTCOME;

    /// A cube's latest outcome is the last entry of two partial indexes: no
    /// scan of the cube's batches, and no index over every batch.
    #[tokio::test]
    async fn the_latest_outcome_reads_the_success_and_failure_indexes() {
        let (_dir, store) = fresh_store().await;
        let plan = explain(&store, "EXPLAIN QUERY PLAN", LATEST_OUTCOME, 3).await;
        for index in ["batches_succeeded", "batches_failed"] {
            assert!(
                plan.iter()
                    .any(|step| step.contains(&format!("INDEX {index} "))),
                "{plan:?}"
            );
        }
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN batches")),
            "{plan:?}"
        );
    }
}
