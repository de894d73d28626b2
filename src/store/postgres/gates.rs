//! Gate state (`core::gate::GateRecord`), one JSON row per gate. The
//! ingest transaction reads and writes a gate only while it holds the
//! gate's advisory lock (`gate:<name>`, see `ingest::apply`), so replicas
//! applying outcomes of two required cubes at once see each other's and
//! the gate opens once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ingest::Tx;
use super::PgStore;
use crate::core::gate::GateRecord;
use crate::store::{rows, to_json, to_millis, StoreError};

impl PgStore {
    /// Every stored gate's record, by name.
    pub async fn gate_records(&self) -> Result<HashMap<String, GateRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, record FROM gates")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::gate).collect()
    }

    /// Starts tracking the configured gates not tracked yet, from `now`.
    pub async fn track_gates(
        &self,
        names: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gates (name, record, updated_at)
             SELECT name, $2, $3 FROM UNNEST($1::TEXT[]) AS name
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(names)
        .bind(to_json(&GateRecord::new(now)))
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Tx {
    /// The stored records among `names`, as this transaction sees them.
    pub async fn load_gates(
        &mut self,
        names: &[&str],
    ) -> Result<HashMap<String, GateRecord>, StoreError> {
        // Most groups move no gate: no round trip for them.
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query("SELECT name, record FROM gates WHERE name = ANY($1::TEXT[])")
            .bind(names)
            .fetch_all(self.conn())
            .await?;
        rows.iter().map(rows::gate).collect()
    }

    /// Upserts gate records.
    pub async fn save_gates(
        &mut self,
        gates: &[(&str, &GateRecord)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if gates.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = gates.iter().map(|(name, _)| *name).collect();
        let records: Vec<String> = gates.iter().map(|(_, r)| to_json(r)).collect();
        sqlx::query(
            "INSERT INTO gates (name, record, updated_at)
             SELECT name, record, $3 FROM UNNEST($1::TEXT[], $2::TEXT[]) AS g (name, record)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
        )
        .bind(&names)
        .bind(&records)
        .bind(to_millis(now))
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
