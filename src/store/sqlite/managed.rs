//! Subscriptions managed over the admin API, and enabling or disabling any
//! subscription by hand.

use chrono::{DateTime, Utc};

use super::{rows, to_json, to_millis, SqliteStore, StoreError};
use crate::store::types::ManagedSubscription;

impl SqliteStore {
    /// Always 0: see `Tx::registry_version`.
    pub async fn registry_version(&self) -> Result<i64, StoreError> {
        Ok(0)
    }

    pub async fn managed_subscriptions(&self) -> Result<Vec<ManagedSubscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, spec, secrets FROM managed_subscriptions ORDER BY created_at, name",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rows::managed).collect()
    }

    /// Inserts or replaces a managed subscription.
    pub async fn save_managed(
        &self,
        sub: &ManagedSubscription,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO managed_subscriptions (name, kind, spec, secrets, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET kind = ?2, spec = ?3, secrets = ?4, updated_at = ?5",
        )
        .bind(&sub.name)
        .bind(&sub.kind)
        .bind(sub.spec.to_string())
        .bind(to_json(&sub.secrets))
        .bind(to_millis(now))
        .execute(&*self.writer.pool().await)
        .await?;
        Ok(())
    }

    /// Deletes a managed subscription and fails its pending deliveries;
    /// returns how many were failed.
    pub async fn delete_managed(&self, name: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM managed_subscriptions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let failed = sqlx::query(
            "UPDATE deliveries SET state = 'failed', finished_at = ?, last_error = 'subscription deleted'
             WHERE subscription = ? AND state = 'pending'",
        )
        .bind(to_millis(now))
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM subscriptions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(failed)
    }

    /// Disables (with a reason) or enables a subscription.
    pub async fn set_disabled(
        &self,
        name: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscriptions SET disabled_at = ?, disabled_reason = ? WHERE name = ?")
            .bind(reason.map(|_| to_millis(now)))
            .bind(reason)
            .bind(name)
            .execute(&*self.writer.pool().await)
            .await?;
        Ok(())
    }
}
