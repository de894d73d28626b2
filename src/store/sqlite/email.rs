//! What email rules read and write: pending deliveries to group, when each
//! group was last mailed, and what each alert's recipients were last told.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{from_millis, rows, to_millis, SqliteStore, StoreError};
use crate::core::email::AlertState;
use crate::store::portable;
use crate::store::types::PendingDelivery;

impl SqliteStore {
    /// The subscription's pending deliveries that are not leased, oldest
    /// first, when at least one of them is due (else none): a group is
    /// mailed only with all its deliveries, so the caller needs those that
    /// wait for a retry too.
    pub async fn pending_deliveries(
        &self,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.attempts, d.created_at, d.next_attempt_at, e.body
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.subscription = ?1 AND d.state = 'pending'
               AND (d.lease_until IS NULL OR d.lease_until <= ?2)
               AND EXISTS (SELECT 1 FROM deliveries due
                           WHERE due.subscription = ?1 AND due.state = 'pending'
                             AND due.next_attempt_at <= ?2
                             AND (due.lease_until IS NULL OR due.lease_until <= ?2))
             ORDER BY d.event_seq",
        )
        .bind(subscription)
        .bind(to_millis(now))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rows::pending).collect()
    }

    /// Leases the given deliveries (those still free) to `owner`; returns
    /// the ids it got.
    pub async fn claim_ids(
        &self,
        ids: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE deliveries SET lease_owner = ");
        query
            .push_bind(owner)
            .push(", lease_until = ")
            .push_bind(to_millis(lease_until))
            .push(" WHERE state = 'pending' AND (lease_until IS NULL OR lease_until <= ")
            .push_bind(to_millis(now))
            .push(") AND id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id.clone());
        }
        query.push(") RETURNING id");
        let rows = query.build().fetch_all(&*self.writer.pool().await).await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub async fn email_group_sent(
        &self,
        rule: &str,
        group: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row =
            sqlx::query("SELECT last_sent_at FROM email_groups WHERE rule = ? AND group_key = ?")
                .bind(rule)
                .bind(group)
                .fetch_optional(&self.reader)
                .await?;
        row.map(|r| from_millis(r.get("last_sent_at"))).transpose()
    }

    pub async fn email_group_thread(
        &self,
        rule: &str,
        group: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut query = portable::email_group_thread::<Sqlite>(rule, group);
        let row = query.build().fetch_optional(&self.reader).await?;
        Ok(row.and_then(|r| r.get("thread_id")))
    }

    pub async fn start_email_thread(
        &self,
        rule: &str,
        group: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut query = portable::start_email_thread::<Sqlite>(rule, group, message_id);
        query.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn email_alert_states(
        &self,
        rule: &str,
    ) -> Result<HashMap<String, AlertState>, StoreError> {
        let rows = sqlx::query(
            "SELECT alert_key, firing, last_notified_at FROM email_alerts WHERE rule = ?",
        )
        .bind(rule)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let state = AlertState {
                    firing: r.get("firing"),
                    last_notified_at: from_millis(r.get("last_notified_at"))?,
                };
                Ok((r.get("alert_key"), state))
            })
            .collect()
    }

    /// Records that a group was mailed at `now`, telling its recipients
    /// about these alerts (key, firing).
    pub async fn record_mailed(
        &self,
        rule: &str,
        group: &str,
        alerts: &[(String, bool)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO email_groups (rule, group_key, last_sent_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (rule, group_key) DO UPDATE SET last_sent_at = ?3",
        )
        .bind(rule)
        .bind(group)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        for (key, firing) in alerts {
            sqlx::query(
                "INSERT INTO email_alerts (rule, alert_key, firing, last_notified_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (rule, alert_key) DO UPDATE SET firing = ?3, last_notified_at = ?4",
            )
            .bind(rule)
            .bind(key)
            .bind(firing)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
