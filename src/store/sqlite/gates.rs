//! Gate state (`core::gate::GateRecord`), one JSON row per gate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::{rows, to_json, to_millis, SqliteStore, StoreError};
use crate::core::gate::GateRecord;

impl SqliteStore {
    /// Every stored gate's record, by name.
    pub async fn gate_records(&self) -> Result<HashMap<String, GateRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, record FROM gates")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(rows::gate).collect()
    }

    /// Starts tracking the configured gates not tracked yet, from `now`.
    pub async fn track_gates(
        &self,
        names: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let record = to_json(&GateRecord::new(now));
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO gates (name, record, updated_at) ");
        query.push_values(names, |mut row, name| {
            row.push_bind(name)
                .push_bind(&record)
                .push_bind(to_millis(now));
        });
        query.push(" ON CONFLICT (name) DO NOTHING");
        query.build().execute(&*self.writer.pool().await).await?;
        Ok(())
    }
}
