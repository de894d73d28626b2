//! The ingest transaction: everything one event changes is written here and
//! committed at once (DESIGN.md, invariant 1).

use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite};

use super::SqliteStore;
use super::{rows, to_json, to_millis, StoreError, WriteTx};
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::document::StoredDocument;
use crate::core::event::{EnvironmentChange, EnvironmentEvent, SchemaEvent};
use crate::store::decompress;
use crate::store::types::{NewDelivery, NewEvent, PriorEvent};

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    inner: WriteTx,
}

impl Tx {
    pub(super) fn new(inner: WriteTx) -> Self {
        Self { inner }
    }

    pub(super) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.inner
    }

    /// The single writer serializes every transaction already.
    pub async fn lock_keys(&mut self, _keys: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Commits; only an `Ok` means the writes are durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.inner.commit().await
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
        sqlx::query(
            "INSERT INTO environments (environment_id, name, attributes, deleted, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (environment_id) DO UPDATE SET
                name = COALESCE(excluded.name, environments.name),
                attributes = CASE WHEN ?4 THEN environments.attributes ELSE excluded.attributes END,
                deleted = excluded.deleted, updated_at = excluded.updated_at",
        )
        .bind(&env.environment_id)
        .bind(&env.name)
        .bind(to_json(&env.attributes))
        .bind(env.change == EnvironmentChange::Deleted)
        .bind(to_millis(at))
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    pub async fn append_schema_log(
        &mut self,
        seq: i64,
        schema: &SchemaEvent,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schema_log (event_seq, environment_id, project_id, published,
                                     catalogs, cubes, version, occurred_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(&schema.environment_id)
        .bind(&schema.project_id)
        .bind(schema.published)
        .bind(to_json(&schema.catalogs))
        .bind(to_json(&schema.cubes))
        .bind(&schema.version)
        .bind(to_millis(at))
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }
}

/// Rows per multi-row statement: well under SQLite's limit on bound
/// parameters (32,766) for the widest row.
pub(super) const CHUNK: usize = 256;

/// Set-wise reads and writes for a group commit: one statement per kind of
/// row for a whole batch of events, instead of several per event.
impl Tx {
    /// The stored events among `event_ids`, by id.
    pub async fn find_events(
        &mut self,
        event_ids: &[&str],
    ) -> Result<HashMap<String, PriorEvent>, StoreError> {
        let mut found = HashMap::new();
        for chunk in event_ids.chunks(CHUNK) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "SELECT seq, event_id, fingerprint, reply, event_type,
                        environment_id, project_id, cube_id, batch_id
                 FROM events WHERE event_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            for r in query.build().fetch_all(&mut *self.inner).await? {
                found.insert(r.get("event_id"), rows::prior(&r));
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
        for chunk in batch_ids.chunks(CHUNK) {
            let mut query: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT batch_id, record FROM batches WHERE batch_id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            for r in query.build().fetch_all(&mut *self.inner).await? {
                found.insert(r.get("batch_id"), rows::batch(&r)?);
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
        // One indexed lookup per cube, in one statement.
        for chunk in cubes.chunks(CHUNK) {
            let condition = "state IN ('SUCCEEDED', 'FAILED')";
            let mut query =
                super::monitor::latest_per_cube(chunk, "state, finished_at", condition, 1);
            for r in query.build().fetch_all(&mut *self.inner).await? {
                if let Some(state) = BatchState::parse(r.get("state")) {
                    let key = (r.get("environment_id"), r.get("cube_id"));
                    found.insert(
                        key,
                        (r.get::<Option<i64>, _>("finished_at").unwrap_or(0), state),
                    );
                }
            }
        }
        Ok(found)
    }

    pub async fn disabled_subscriptions(&mut self) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM subscriptions WHERE disabled_at IS NOT NULL")
            .fetch_all(&mut *self.inner)
            .await?;
        Ok(rows.iter().map(|r| r.get("name")).collect())
    }

    /// Upserts the batches (each id at most once).
    pub async fn save_batches(&mut self, records: &[&BatchRecord]) -> Result<(), StoreError> {
        for chunk in records.chunks(CHUNK) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO batches (batch_id, environment_id, project_id, cube_id, cube_name,
                                      state, started_at, finished_at, begun_at, updated_at, record) ",
            );
            query.push_values(chunk, |mut row, r| {
                row.push_bind(&r.batch_id)
                    .push_bind(&r.environment_id)
                    .push_bind(&r.project_id)
                    .push_bind(&r.cube_id)
                    .push_bind(&r.cube_name)
                    .push_bind(r.state.as_str())
                    .push_bind(r.started_at.map(to_millis))
                    .push_bind(r.finished_at.map(to_millis))
                    .push_bind(to_millis(r.begun_at()))
                    .push_bind(to_millis(r.updated_at))
                    .push_bind(to_json(*r));
            });
            query.push(
                " ON CONFLICT (batch_id) DO UPDATE SET
                    project_id = excluded.project_id, cube_name = excluded.cube_name,
                    state = excluded.state, started_at = excluded.started_at,
                    finished_at = excluded.finished_at, begun_at = excluded.begun_at,
                    updated_at = excluded.updated_at, record = excluded.record",
            );
            query.build().execute(&mut *self.inner).await?;
        }
        Ok(())
    }

    /// Inserts the event rows; returns each one's sequence number by id.
    pub async fn insert_events(
        &mut self,
        events: &[NewEvent<'_>],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut seqs = HashMap::with_capacity(events.len());
        for chunk in events.chunks(CHUNK) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (event_id, event_type, source, occurred_at, received_at,
                                     environment_id, project_id, cube_id, batch_id,
                                     fingerprint, payload, body, reply, changes_batch) ",
            );
            query.push_values(chunk, |mut row, e| {
                row.push_bind(e.event_id)
                    .push_bind(e.event_type)
                    .push_bind(e.source)
                    .push_bind(to_millis(e.occurred_at))
                    .push_bind(to_millis(e.received_at))
                    .push_bind(&e.scope.environment_id)
                    .push_bind(&e.scope.project_id)
                    .push_bind(&e.scope.cube_id)
                    .push_bind(&e.scope.batch_id)
                    .push_bind(e.fingerprint)
                    .push_bind(&e.payload)
                    .push_bind(e.body)
                    .push_bind(&e.reply)
                    .push_bind(e.changes_batch);
            });
            // RETURNING reports rows in no promised order: map by id.
            query.push(" RETURNING seq, event_id");
            for r in query.build().fetch_all(&mut *self.inner).await? {
                seqs.insert(r.get("event_id"), r.get("seq"));
            }
        }
        Ok(seqs)
    }

    /// Enqueues deliveries, pending or already leased.
    pub async fn insert_deliveries(
        &mut self,
        deliveries: &[NewDelivery<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for chunk in deliveries.chunks(CHUNK) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at, created_at,
                                         lease_owner, lease_until) ",
            );
            query.push_values(chunk, |mut row, d| {
                row.push_bind(&d.id)
                    .push_bind(d.event_seq)
                    .push_bind(d.subscription)
                    .push_bind("pending")
                    .push_bind(to_millis(now))
                    .push_bind(to_millis(now))
                    .push_bind(d.lease.map(|(owner, _)| owner))
                    .push_bind(d.lease.map(|(_, until)| to_millis(until)));
            });
            query.build().execute(&mut *self.inner).await?;
        }
        Ok(())
    }
}

impl Tx {
    /// Stores a project document in its compressed form.
    pub async fn insert_document(
        &mut self,
        event_id: &str,
        document: &StoredDocument,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR IGNORE INTO documents (event_id, size, compressed) VALUES (?, ?, ?)",
        )
        .bind(event_id)
        .bind(document.size() as i64)
        .bind(document.compressed())
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// The event id of a project's newest stored document.
    pub async fn latest_document_id(
        &mut self,
        project_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(LATEST_DOCUMENT_ID)
            .bind(project_id)
            .fetch_optional(&mut *self.inner)
            .await?;
        Ok(row.map(|r| r.get("event_id")))
    }

    /// A stored document, compressed, as this transaction sees it.
    pub async fn stored_document(
        &mut self,
        event_id: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let row = sqlx::query(DOCUMENT)
            .bind(event_id)
            .fetch_optional(&mut *self.inner)
            .await?;
        Ok(row.map(|r| rows::document(&r)))
    }
}

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
