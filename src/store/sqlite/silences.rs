//! Silences, and the reminders of email rules (SQLite).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{rows, to_millis, SqliteStore, StoreError};
use crate::core::silence::Silence;
use crate::store::rows::SILENCE_COLUMNS;
use crate::store::types::Reminder;

impl SqliteStore {
    pub async fn create_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        let [environment, project, cube, event_type] = rows::matcher_columns(&silence.matchers);
        sqlx::query(
            "INSERT INTO silences (id, environment, project, cube, event_type, starts_at, ends_at,
                                   created_by, comment, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&silence.id)
        .bind(environment)
        .bind(project)
        .bind(cube)
        .bind(event_type)
        .bind(to_millis(silence.starts_at))
        .bind(to_millis(silence.ends_at))
        .bind(&silence.created_by)
        .bind(&silence.comment)
        .bind(to_millis(silence.created_at))
        .execute(&*self.writer.pool().await)
        .await?;
        Ok(())
    }

    /// Silences not over at `now` (all, with `expired`), by start.
    pub async fn list_silences(
        &self,
        expired: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Silence>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE ?1 OR ends_at > ?2
             ORDER BY starts_at, id"
        ))
        .bind(expired)
        .bind(to_millis(now))
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::silence).collect()
    }

    /// Silences in their window at `now`, oldest first.
    pub async fn active_silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE starts_at <= ?1 AND ends_at > ?1
             ORDER BY created_at, id"
        ))
        .bind(to_millis(now))
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::silence).collect()
    }

    /// Ends a silence at `now` (one already over keeps its end); returns
    /// it as it now stands, or `None` when there is no such silence.
    pub async fn expire_silence(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Silence>, StoreError> {
        let found = sqlx::query(&format!(
            "UPDATE silences SET ends_at = MIN(ends_at, ?1) WHERE id = ?2
             RETURNING {SILENCE_COLUMNS}"
        ))
        .bind(to_millis(now))
        .bind(id)
        .fetch_optional(&*self.writer.pool().await)
        .await?;
        found.as_ref().map(rows::silence).transpose()
    }

    /// Schedules reminders of an email rule's firing alerts; an alert
    /// already reminded of keeps since when it fires.
    pub async fn set_reminders(
        &self,
        rule: &str,
        reminders: &[Reminder],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for r in reminders {
            sqlx::query(
                "INSERT INTO email_reminders (rule, alert_key, delivery_id, firing_since, remind_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (rule, alert_key) DO UPDATE SET
                    delivery_id = ?3, remind_at = ?5",
            )
            .bind(rule)
            .bind(&r.alert_key)
            .bind(&r.delivery_id)
            .bind(to_millis(r.firing_since))
            .bind(to_millis(r.remind_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the reminders of alerts that resolved.
    pub async fn clear_reminders(&self, rule: &str, keys: &[String]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for key in keys {
            sqlx::query("DELETE FROM email_reminders WHERE rule = ? AND alert_key = ?")
                .bind(rule)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An email rule's reminders by alert: the delivery that reminds, and
    /// since when the alert fires.
    pub async fn email_reminders(
        &self,
        rule: &str,
    ) -> Result<HashMap<String, (String, DateTime<Utc>)>, StoreError> {
        let found = sqlx::query(
            "SELECT alert_key, delivery_id, firing_since FROM email_reminders WHERE rule = ?",
        )
        .bind(rule)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::reminder).collect()
    }

    /// Makes the delivery of every reminder due at `now` due again, in one
    /// transaction with marking the reminder sent off; returns the rules
    /// to wake.
    pub async fn fire_reminders(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let due = sqlx::query(
            "UPDATE email_reminders SET remind_at = NULL WHERE remind_at <= ?
             RETURNING rule, delivery_id",
        )
        .bind(to_millis(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut rules = Vec::new();
        for row in &due {
            let id: String = row.get("delivery_id");
            sqlx::query(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1, finished_at = NULL
                 WHERE id = ?2 AND state <> 'pending'",
            )
            .bind(to_millis(now))
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            rules.push(row.get("rule"));
        }
        tx.commit().await?;
        rules.sort_unstable();
        rules.dedup();
        Ok(rules)
    }
}
