//! The ingest transaction: everything one event changes is written here and
//! committed at once (DESIGN.md, invariant 1).

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};

use super::{from_json, to_json, to_millis, StoreError};
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::event::{EnvironmentChange, EnvironmentEvent, SchemaEvent, Scope};

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx {
    inner: Transaction<'static, Sqlite>,
}

/// What a previous ingest of the same `event_id` stored.
#[derive(Debug, Clone)]
pub struct PriorEvent {
    pub fingerprint: String,
    pub reply: String,
}

/// An event row to insert.
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub scope: &'a Scope,
    /// The domain event as JSON (the caller's), or the raised event's data.
    pub payload: String,
    pub fingerprint: &'a str,
    pub body: &'a [u8],
    /// The event moved its batch to a new state (watchers see it).
    pub changes_batch: bool,
}

impl Tx {
    pub(super) fn new(inner: Transaction<'static, Sqlite>) -> Self {
        Self { inner }
    }

    pub(super) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.inner
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.inner.commit().await?)
    }

    pub async fn find_event(&mut self, event_id: &str) -> Result<Option<PriorEvent>, StoreError> {
        let row = sqlx::query("SELECT fingerprint, reply FROM events WHERE event_id = ?")
            .bind(event_id)
            .fetch_optional(&mut *self.inner)
            .await?;
        Ok(row.map(|r| PriorEvent {
            fingerprint: r.get("fingerprint"),
            reply: r.get("reply"),
        }))
    }

    pub async fn load_batch(&mut self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM batches WHERE batch_id = ?")
            .bind(batch_id)
            .fetch_optional(&mut *self.inner)
            .await?;
        row.map(|r| from_json(r.get("record"))).transpose()
    }

    /// The outcome of the cube's most recently finished batch other than
    /// `except_batch`: what a success "recovers" from.
    pub async fn previous_cube_outcome(
        &mut self,
        environment_id: &str,
        cube_id: &str,
        except_batch: &str,
    ) -> Result<Option<BatchState>, StoreError> {
        let row = sqlx::query(
            "SELECT state FROM batches
             WHERE environment_id = ? AND cube_id = ? AND batch_id <> ?
               AND state IN ('SUCCEEDED', 'FAILED')
             ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(environment_id)
        .bind(cube_id)
        .bind(except_batch)
        .fetch_optional(&mut *self.inner)
        .await?;
        Ok(row.and_then(|r| BatchState::parse(r.get("state"))))
    }

    pub async fn save_batch(&mut self, record: &BatchRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO batches (batch_id, environment_id, project_id, cube_id, cube_name,
                                  state, started_at, finished_at, begun_at, updated_at, record)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (batch_id) DO UPDATE SET
                project_id = excluded.project_id, cube_name = excluded.cube_name,
                state = excluded.state, started_at = excluded.started_at,
                finished_at = excluded.finished_at, begun_at = excluded.begun_at,
                updated_at = excluded.updated_at, record = excluded.record",
        )
        .bind(&record.batch_id)
        .bind(&record.environment_id)
        .bind(&record.project_id)
        .bind(&record.cube_id)
        .bind(&record.cube_name)
        .bind(record.state.as_str())
        .bind(record.started_at.map(to_millis))
        .bind(record.finished_at.map(to_millis))
        .bind(to_millis(record.begun_at()))
        .bind(to_millis(record.updated_at))
        .bind(to_json(record))
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// Inserts the event row; its reply is written by [`Tx::set_reply`].
    pub async fn insert_event(&mut self, new: NewEvent<'_>) -> Result<i64, StoreError> {
        let scope = new.scope;
        let seq = sqlx::query(
            "INSERT INTO events (event_id, event_type, source, occurred_at, received_at,
                                 environment_id, project_id, cube_id, batch_id,
                                 fingerprint, payload, body, reply, changes_batch)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING seq",
        )
        .bind(new.event_id)
        .bind(new.event_type)
        .bind(new.source)
        .bind(to_millis(new.occurred_at))
        .bind(to_millis(new.received_at))
        .bind(&scope.environment_id)
        .bind(&scope.project_id)
        .bind(&scope.cube_id)
        .bind(&scope.batch_id)
        .bind(new.fingerprint)
        .bind(&new.payload)
        .bind(new.body)
        .bind("")
        .bind(new.changes_batch)
        .fetch_one(&mut *self.inner)
        .await?
        .get("seq");
        Ok(seq)
    }

    /// The first answer is only known once the event row exists (it holds
    /// the sequence number), so it is written in a second step.
    pub async fn set_reply(&mut self, seq: i64, reply: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE events SET reply = ? WHERE seq = ?")
            .bind(reply)
            .bind(seq)
            .execute(&mut *self.inner)
            .await?;
        Ok(())
    }

    /// Enqueues one delivery of event `seq` to `subscription`, unless the
    /// subscription is disabled. Returns whether a row was written.
    pub async fn enqueue_delivery(
        &mut self,
        seq: i64,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let done = sqlx::query(
            "INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at, created_at)
             SELECT ?1, ?2, ?3, 'pending', ?4, ?4
             WHERE NOT EXISTS (SELECT 1 FROM subscriptions
                               WHERE name = ?3 AND disabled_at IS NOT NULL)",
        )
        .bind(&id)
        .bind(seq)
        .bind(subscription)
        .bind(to_millis(now))
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
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
