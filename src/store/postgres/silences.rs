//! Silences, and the reminders of email rules (PostgreSQL). Every replica
//! reads silences from the shared table when it dispatches, so a silence
//! made on one replica holds on all of them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::ingest::notify;
use super::{PgStore, DELIVERIES_CHANNEL};
use crate::core::silence::Silence;
use crate::store::rows::{self, SILENCE_COLUMNS};
use crate::store::types::Reminder;
use crate::store::{to_millis, StoreError};

impl PgStore {
    pub async fn create_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        let [environment, project, cube, event_type] = rows::matcher_columns(&silence.matchers);
        sqlx::query(
            "INSERT INTO silences (id, environment, project, cube, event_type, starts_at, ends_at,
                                   created_by, comment, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(self.pool())
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
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE $1 OR ends_at > $2
             ORDER BY starts_at, id"
        ))
        .bind(expired)
        .bind(to_millis(now))
        .fetch_all(self.pool())
        .await?;
        found.iter().map(rows::silence).collect()
    }

    /// Silences in their window at `now`, oldest first.
    pub async fn active_silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE starts_at <= $1 AND ends_at > $1
             ORDER BY created_at, id"
        ))
        .bind(to_millis(now))
        .fetch_all(self.pool())
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
            "UPDATE silences SET ends_at = LEAST(ends_at, $1) WHERE id = $2
             RETURNING {SILENCE_COLUMNS}"
        ))
        .bind(to_millis(now))
        .bind(id)
        .fetch_optional(self.pool())
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
        let keys: Vec<&str> = reminders.iter().map(|r| r.alert_key.as_str()).collect();
        let ids: Vec<&str> = reminders.iter().map(|r| r.delivery_id.as_str()).collect();
        let since: Vec<i64> = reminders
            .iter()
            .map(|r| to_millis(r.firing_since))
            .collect();
        let at: Vec<i64> = reminders.iter().map(|r| to_millis(r.remind_at)).collect();
        sqlx::query(
            "INSERT INTO email_reminders (rule, alert_key, delivery_id, firing_since, remind_at)
             SELECT $1, * FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
             ON CONFLICT (rule, alert_key) DO UPDATE SET
                delivery_id = excluded.delivery_id, remind_at = excluded.remind_at",
        )
        .bind(rule)
        .bind(&keys)
        .bind(&ids)
        .bind(&since)
        .bind(&at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the reminders of alerts that resolved.
    pub async fn clear_reminders(&self, rule: &str, keys: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM email_reminders WHERE rule = $1 AND alert_key = ANY($2)")
            .bind(rule)
            .bind(keys)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// An email rule's reminders by alert: the delivery that reminds, and
    /// since when the alert fires.
    pub async fn email_reminders(
        &self,
        rule: &str,
    ) -> Result<HashMap<String, (String, DateTime<Utc>)>, StoreError> {
        let found = sqlx::query(
            "SELECT alert_key, delivery_id, firing_since FROM email_reminders WHERE rule = $1",
        )
        .bind(rule)
        .fetch_all(self.pool())
        .await?;
        found.iter().map(rows::reminder).collect()
    }

    /// Makes the delivery of every reminder due at `now` due again, in one
    /// transaction with marking the reminder sent off; returns the rules
    /// to wake (every replica hears of them too).
    pub async fn fire_reminders(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let due = sqlx::query(
            "UPDATE email_reminders SET remind_at = NULL WHERE remind_at <= $1
             RETURNING rule, delivery_id",
        )
        .bind(to_millis(now))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = due.iter().map(|r| r.get("delivery_id")).collect();
        let mut rules: Vec<String> = due.iter().map(|r| r.get("rule")).collect();
        rules.sort_unstable();
        rules.dedup();
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, finished_at = NULL
                 WHERE id = ANY($2) AND state <> 'pending'",
            )
            .bind(to_millis(now))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            notify(&mut tx, DELIVERIES_CHANNEL, &rules.join(",")).await?;
        }
        tx.commit().await?;
        Ok(rules)
    }
}
