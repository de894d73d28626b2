//! Read-side queries over batches.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{from_json, Store, StoreError};
use crate::core::batch::{BatchRecord, BatchState};

#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    pub environment_id: Option<String>,
    pub project_id: Option<String>,
    pub cube_id: Option<String>,
    pub state: Option<BatchState>,
}

/// A page of batches, most recently changed first, and the position after
/// its last row (`None` on the last page).
#[derive(Debug, Clone)]
pub struct BatchPage {
    pub batches: Vec<BatchRecord>,
    pub next: Option<(i64, String)>,
}

impl Store {
    pub async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM batches WHERE batch_id = ?")
            .bind(batch_id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| from_json(r.get("record"))).transpose()
    }

    /// Batches matching `filter`, ordered by (updated_at, batch_id)
    /// descending, starting strictly after `after`.
    pub async fn list_batches(
        &self,
        filter: &BatchFilter,
        page_size: usize,
        after: Option<(i64, String)>,
    ) -> Result<BatchPage, StoreError> {
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT record, updated_at, batch_id FROM batches WHERE 1 = 1");
        let columns = [
            ("environment_id", &filter.environment_id),
            ("project_id", &filter.project_id),
            ("cube_id", &filter.cube_id),
        ];
        for (column, value) in columns {
            if let Some(value) = value {
                query
                    .push(format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some((updated_at, batch_id)) = after {
            query
                .push(" AND (updated_at, batch_id) < (")
                .push_bind(updated_at)
                .push(", ")
                .push_bind(batch_id)
                .push(")");
        }
        query
            .push(" ORDER BY updated_at DESC, batch_id DESC LIMIT ")
            .push_bind(page_size as i64 + 1);
        let rows = query.build().fetch_all(&self.reader).await?;
        let more = rows.len() > page_size;
        let rows = &rows[..rows.len().min(page_size)];
        let next = match rows.last() {
            Some(last) if more => Some((last.get("updated_at"), last.get("batch_id"))),
            _ => None,
        };
        let batches = rows
            .iter()
            .map(|r| from_json(r.get("record")))
            .collect::<Result<_, _>>()?;
        Ok(BatchPage { batches, next })
    }

    /// How many events are stored (for tests and diagnostics).
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM events")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.get("n"))
    }
}
