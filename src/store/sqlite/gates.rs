//! Gate state (`core::gate::GateRecord`), one JSON row per gate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

use super::ingest::Tx;
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
        query.build().execute(self.writer.pool()).await?;
        Ok(())
    }
}

impl Tx {
    /// The stored records among `names`, as this transaction sees them.
    pub async fn load_gates(
        &mut self,
        names: &[&str],
    ) -> Result<HashMap<String, GateRecord>, StoreError> {
        let mut found = HashMap::new();
        for name in names {
            let row = sqlx::query("SELECT name, record FROM gates WHERE name = ?")
                .bind(name)
                .fetch_optional(self.conn())
                .await?;
            if let Some(row) = row {
                let (name, record) = rows::gate(&row)?;
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
        for (name, record) in gates {
            sqlx::query(
                "INSERT INTO gates (name, record, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET record = ?2, updated_at = ?3",
            )
            .bind(name)
            .bind(to_json(record))
            .bind(to_millis(now))
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }
}
