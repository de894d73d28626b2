//! The console's queries on SQLite (their text is in `store/console.rs`).

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite};

use super::{rows, SqliteStore, StoreError};
use crate::store::console;
use crate::store::types::{
    BatchEventRow, CubeLatest, DeliveryRow, ProjectVersion, SubscriptionHealth,
};

impl SqliteStore {
    pub async fn latest_batches(&self) -> Result<Vec<CubeLatest>, StoreError> {
        let found = sqlx::query(console::LATEST_BATCHES)
            .fetch_all(&self.reader)
            .await?;
        found.iter().map(console::cube_latest).collect()
    }

    pub async fn subscription_health(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionHealth>, StoreError> {
        let mut query = console::subscription_health::<Sqlite>(since);
        let found = query.build().fetch_all(&self.reader).await?;
        found.iter().map(console::health).collect()
    }

    pub async fn batch_events(&self, batch_id: &str) -> Result<Vec<BatchEventRow>, StoreError> {
        let mut query = console::batch_events::<Sqlite>(batch_id);
        let found = query.build().fetch_all(&self.reader).await?;
        found.iter().map(console::batch_event).collect()
    }

    pub async fn batch_deliveries(
        &self,
        batch_ids: &[String],
    ) -> Result<Vec<(String, DeliveryRow)>, StoreError> {
        if batch_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = console::batch_deliveries::<Sqlite>(batch_ids);
        let found = query.build().fetch_all(&self.reader).await?;
        found
            .iter()
            .map(|r| Ok((r.get("batch_id"), rows::delivery(r)?)))
            .collect()
    }

    pub async fn project_versions(&self) -> Result<Vec<ProjectVersion>, StoreError> {
        let found = sqlx::query(console::PROJECT_VERSIONS_SQL)
            .fetch_all(&self.reader)
            .await?;
        found.iter().map(console::project_version).collect()
    }

    pub async fn create_session(
        &self,
        digest: &str,
        token_name: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        console::delete_expired_sessions::<Sqlite>(now)
            .build()
            .execute(&mut *tx)
            .await?;
        console::insert_session::<Sqlite>(digest, token_name, now, expires_at)
            .build()
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn session_token(
        &self,
        digest: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let mut query = console::find_session::<Sqlite>(digest, now);
        let found = query.build().fetch_optional(&self.reader).await?;
        Ok(found.map(|r| r.get("token_name")))
    }

    pub async fn delete_session(&self, digest: &str) -> Result<(), StoreError> {
        console::delete_session::<Sqlite>(digest)
            .build()
            .execute(self.writer.pool())
            .await?;
        Ok(())
    }
}
