//! The outbox on PostgreSQL: claims shared by every replica, attempts,
//! the delivery log, email state and managed subscriptions.
//!
//! A claim is one short transaction, committed before any request starts.
//! Rows are picked with `FOR UPDATE SKIP LOCKED`, so replicas claiming at
//! once take different rows instead of queueing on the same ones; a
//! subscription's claims take an advisory lock first, so the number of
//! leases the fleet holds for it — its deliveries in flight anywhere —
//! never exceeds its `max_in_flight`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row};

use super::ingest::notify;
use super::{PgStore, SUBSCRIPTIONS_CHANNEL};
use crate::core::email::AlertState;
use crate::core::subscription::DeliveryOrder;
use crate::store::portable::{self, close_claim, ordered_lane, select_bucket, upsert_bucket};
use crate::store::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use crate::store::types::{
    AttemptRecord, AttemptRow, Claim, ClaimRequest, ClaimedDelivery, DeliveryFilter, DeliveryRow,
    DeliveryUpdate, ManagedSubscription, NewDelivery, PendingDelivery, ScrapeGauges,
};
use crate::store::{from_millis, to_json, to_millis, StoreError};

/// What a claim returns of each row, joined with its event.
const CLAIMED: &str = "SELECT c.id, c.subscription, c.attempts, e.event_type, e.body
     FROM claimed c JOIN events e ON e.seq = c.event_seq";

impl PgStore {
    pub async fn sync_subscriptions(
        &self,
        subscriptions: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let names: Vec<&str> = subscriptions.iter().map(|(n, _)| n.as_str()).collect();
        let prints: Vec<&str> = subscriptions.iter().map(|(_, f)| f.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (name, fingerprint)
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])
             ON CONFLICT (name) DO UPDATE SET
                disabled_at = CASE WHEN subscriptions.fingerprint = excluded.fingerprint
                                   THEN subscriptions.disabled_at END,
                disabled_reason = CASE WHEN subscriptions.fingerprint = excluded.fingerprint
                                       THEN subscriptions.disabled_reason END,
                fingerprint = excluded.fingerprint",
        )
        .bind(&names)
        .bind(&prints)
        .execute(&mut *tx)
        .await?;
        let disabled = sqlx::query("SELECT name FROM subscriptions WHERE disabled_at IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        tx.commit().await?;
        Ok(disabled)
    }

    pub async fn subscription_disabled(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT disabled_reason FROM subscriptions WHERE name = $1 AND disabled_at IS NOT NULL",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            r.get::<Option<String>, _>("disabled_reason")
                .unwrap_or_default()
        }))
    }

    /// Leases up to `limit` due deliveries of one subscription to `owner`,
    /// fewer when the fleet already holds `max_in_flight - limit` leases
    /// for it, only the heads of an ordered lane, and only as many as the
    /// rate limit's bucket has tokens for. The subscription's advisory
    /// lock serializes its claims across replicas, so the in-flight count,
    /// the heads and the bucket are read and changed by one claim at a
    /// time: limits and order hold fleet-wide.
    pub async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('claim:' || $1, 0))")
            .bind(request.subscription)
            .execute(&mut *tx)
            .await?;
        let Some(rate) = request.rate_limit else {
            let deliveries = lease_due(&mut tx, request, request.limit).await?;
            tx.commit().await?;
            return Ok(Claim {
                deliveries,
                ..Claim::default()
            });
        };
        let now = to_millis(request.now);
        let bucket = select_bucket(request.subscription)
            .build()
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| rows::bucket(&row));
        let taken = rate.take(bucket, now, request.limit);
        let deliveries = lease_due(&mut tx, request, taken.granted).await?;
        let due_left = taken.ran_short(deliveries.len()) && any_due(&mut tx, request).await?;
        let (bucket, mut claim) = close_claim(taken, deliveries.len(), due_left, now)?;
        upsert_bucket(request.subscription, &bucket)
            .build()
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        claim.deliveries = deliveries;
        Ok(claim)
    }

    pub async fn rate_limit_waited(
        &self,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<std::time::Duration, StoreError> {
        let bucket = select_bucket(subscription)
            .build()
            .fetch_optional(&self.pool)
            .await?;
        Ok(bucket.map_or_else(Default::default, |row| {
            rows::bucket(&row).waited(to_millis(now))
        }))
    }

    /// Records attempts and moves their deliveries on, releasing the
    /// leases, in one transaction; an update applies only while `owner`
    /// still holds the lease, the attempt is recorded either way.
    pub async fn record_attempts(
        &self,
        owner: &str,
        attempts: &[(AttemptRecord, DeliveryUpdate)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = attempts
            .iter()
            .map(|(a, _)| a.delivery_id.as_str())
            .collect();
        let numbers: Vec<i64> = attempts.iter().map(|(a, _)| a.attempt as i64).collect();
        let started: Vec<i64> = attempts
            .iter()
            .map(|(a, _)| to_millis(a.started_at))
            .collect();
        let durations: Vec<i64> = attempts.iter().map(|(a, _)| a.duration_ms).collect();
        let statuses: Vec<Option<i64>> = attempts
            .iter()
            .map(|(a, _)| a.status_code.map(i64::from))
            .collect();
        let excerpts: Vec<Option<&str>> = attempts
            .iter()
            .map(|(a, _)| a.response_excerpt.as_deref())
            .collect();
        let errors: Vec<Option<&str>> = attempts.iter().map(|(a, _)| a.error.as_deref()).collect();
        let verdicts: Vec<&str> = attempts.iter().map(|(_, u)| u.verdict()).collect();
        let states: Vec<&str> = attempts.iter().map(|(_, u)| u.state().stored()).collect();
        let silences: Vec<Option<&str>> = attempts.iter().map(|(_, u)| u.silence_id()).collect();
        let next_at: Vec<Option<i64>> = attempts
            .iter()
            .map(|(_, u)| match u {
                DeliveryUpdate::RetryAt(at) => Some(to_millis(*at)),
                _ => None,
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                                   response_excerpt, error, verdict, replica)
             SELECT *, $9 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                                      $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[])",
        )
        .bind(&ids)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(&statuses)
        .bind(&excerpts)
        .bind(&errors)
        .bind(&verdicts)
        .bind(self.replica())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE deliveries d SET state = u.state, attempts = u.attempt,
                lease_owner = NULL, lease_until = NULL,
                next_attempt_at = COALESCE(u.next_at, d.next_attempt_at),
                finished_at = CASE WHEN u.next_at IS NULL THEN $7 END,
                last_status = u.status, last_error = u.error, silence_id = u.silence_id
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[],
                         $6::TEXT[], $9::TEXT[])
                  AS u (id, state, attempt, next_at, status, error, silence_id)
             WHERE d.id = u.id AND d.lease_owner = $8",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&numbers)
        .bind(&next_at)
        .bind(&statuses)
        .bind(&errors)
        .bind(to_millis(now))
        .bind(owner)
        .bind(&silences)
        .execute(&mut *tx)
        .await?;
        for (attempt, update) in attempts {
            if let DeliveryUpdate::DisableSubscription { reason } = update {
                sqlx::query(
                    "UPDATE subscriptions SET disabled_at = $1, disabled_reason = $2
                     WHERE name = (SELECT subscription FROM deliveries WHERE id = $3)",
                )
                .bind(to_millis(now))
                .bind(reason)
                .bind(&attempt.delivery_id)
                .execute(&mut *tx)
                .await?;
                notify(&mut tx, SUBSCRIPTIONS_CHANNEL, "disabled").await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn outbox_gauges(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        let oldest = row
            .get::<Option<i64>, _>("oldest")
            .map(from_millis)
            .transpose()?;
        Ok((row.get("n"), oldest))
    }

    pub async fn scrape_gauges(&self) -> Result<ScrapeGauges, StoreError> {
        let [backlog, states, last_success] = portable::SCRAPE_STATEMENTS;
        let fetch = |statement| sqlx::query(statement).fetch_all(&self.pool);
        portable::scrape_gauges([
            fetch(backlog).await?,
            fetch(states).await?,
            fetch(last_success).await?,
        ])
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn release_leases(&self, owner: &str, ids: &[String]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
             WHERE id = ANY($1) AND lease_owner = $2",
        )
        .bind(ids)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn next_due_at(
        &self,
        subscription: &str,
        order: DeliveryOrder,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (join, held) = ordered_lane(order);
        let row = sqlx::query(&format!(
            "SELECT MIN(GREATEST(d.next_attempt_at, COALESCE(d.lease_until, 0))) AS due
             FROM deliveries d{join} WHERE d.subscription = $1 AND d.state = 'pending'{held}"
        ))
        .bind(subscription)
        .fetch_one(&self.pool)
        .await?;
        row.get::<Option<i64>, _>("due")
            .map(from_millis)
            .transpose()
    }

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE TRUE"
        ));
        if let Some(subscription) = &filter.subscription {
            query.push(" AND d.subscription = ").push_bind(subscription);
        }
        if let Some(event_id) = &filter.event_id {
            query.push(" AND e.event_id = ").push_bind(event_id);
        }
        if let Some(state) = filter.state {
            query.push(" AND ").push(rows::state_condition(state));
        }
        portable::push_event_types(&mut query, filter.event_types.as_deref());
        if let Some(since) = filter.since {
            query
                .push(" AND d.created_at >= ")
                .push_bind(to_millis(since));
        }
        if let Some(until) = filter.until {
            query
                .push(" AND d.created_at < ")
                .push_bind(to_millis(until));
        }
        if let Some((seq, subscription)) = &filter.before {
            query
                .push(" AND (d.event_seq, d.subscription) < (")
                .push_bind(*seq)
                .push(", ")
                .push_bind(subscription)
                .push(")");
        }
        query.push(if filter.newest_first {
            " ORDER BY d.event_seq DESC, d.subscription DESC"
        } else {
            " ORDER BY d.event_seq, d.subscription"
        });
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(limit as i64);
        }
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::delivery).collect()
    }

    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::delivery).transpose()
    }

    /// Makes deliveries due now, whatever their state; a lease still held
    /// (an attempt in flight) is left alone.
    pub async fn make_due(&self, ids: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let changed = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, finished_at = NULL
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake_all().await?;
        Ok(changed)
    }

    pub async fn events_received(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM events WHERE received_at >= $1 AND received_at < $2 ORDER BY seq",
        )
        .bind(to_millis(since))
        .bind(to_millis(until))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let body: Vec<u8> = r.get("body");
                (
                    r.get("seq"),
                    serde_json::from_slice(&body).unwrap_or_default(),
                )
            })
            .collect())
    }

    pub async fn replay(
        &self,
        subscription: &str,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let ids: Vec<String> = seqs.iter().map(|_| NewDelivery::new_id()).collect();
        let count = sqlx::query(
            "INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at, created_at)
             SELECT id, seq, $3, 'pending', $4, $4 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS r (id, seq)
             ON CONFLICT (event_seq, subscription) DO UPDATE SET
                state = 'pending', next_attempt_at = $4, finished_at = NULL",
        )
        .bind(&ids)
        .bind(seqs)
        .bind(subscription)
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.notify(super::DELIVERIES_CHANNEL, subscription).await?;
        Ok(count)
    }

    pub async fn dead_deliveries(
        &self,
        subscription: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM deliveries WHERE state = 'dead'
               AND ($1::TEXT IS NULL OR subscription = $1)",
        )
        .bind(subscription)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY attempt, id"
        ))
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::attempt).collect()
    }

    pub async fn pending_deliveries(
        &self,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.attempts, d.created_at, d.next_attempt_at, e.body
             FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.subscription = $1 AND d.state = 'pending'
               AND (d.lease_until IS NULL OR d.lease_until <= $2)
               AND EXISTS (SELECT 1 FROM deliveries due
                           WHERE due.subscription = $1 AND due.state = 'pending'
                             AND due.next_attempt_at <= $2
                             AND (due.lease_until IS NULL OR due.lease_until <= $2))
             ORDER BY d.event_seq",
        )
        .bind(subscription)
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::pending).collect()
    }

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
        let rows = sqlx::query(
            "UPDATE deliveries SET lease_owner = $1, lease_until = $2
             WHERE id IN (SELECT id FROM deliveries
                          WHERE id = ANY($4) AND state = 'pending'
                            AND (lease_until IS NULL OR lease_until <= $3)
                          FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(owner)
        .bind(to_millis(lease_until))
        .bind(to_millis(now))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub async fn email_group_sent(
        &self,
        rule: &str,
        group: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row =
            sqlx::query("SELECT last_sent_at FROM email_groups WHERE rule = $1 AND group_key = $2")
                .bind(rule)
                .bind(group)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| from_millis(r.get("last_sent_at"))).transpose()
    }

    pub async fn email_group_thread(
        &self,
        rule: &str,
        group: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut query = portable::email_group_thread::<Postgres>(rule, group);
        let row = query.build().fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.get("thread_id")))
    }

    pub async fn start_email_thread(
        &self,
        rule: &str,
        group: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let mut query = portable::start_email_thread::<Postgres>(rule, group, message_id);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    pub async fn email_alert_states(
        &self,
        rule: &str,
    ) -> Result<HashMap<String, AlertState>, StoreError> {
        let rows = sqlx::query(
            "SELECT alert_key, firing, last_notified_at FROM email_alerts WHERE rule = $1",
        )
        .bind(rule)
        .fetch_all(&self.pool)
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

    pub async fn record_mailed(
        &self,
        rule: &str,
        group: &str,
        alerts: &[(String, bool)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys: Vec<&str> = alerts.iter().map(|(k, _)| k.as_str()).collect();
        let firing: Vec<bool> = alerts.iter().map(|(_, f)| *f).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO email_groups (rule, group_key, last_sent_at) VALUES ($1, $2, $3)
             ON CONFLICT (rule, group_key) DO UPDATE SET last_sent_at = $3",
        )
        .bind(rule)
        .bind(group)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO email_alerts (rule, alert_key, firing, last_notified_at)
             SELECT $1, key, firing, $4 FROM UNNEST($2::TEXT[], $3::BOOLEAN[]) AS a (key, firing)
             ON CONFLICT (rule, alert_key) DO UPDATE SET
                firing = excluded.firing, last_notified_at = excluded.last_notified_at",
        )
        .bind(rule)
        .bind(&keys)
        .bind(&firing)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The version of the managed subscriptions (see migration 0007).
    pub async fn registry_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(REGISTRY_VERSION)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn managed_subscriptions(&self) -> Result<Vec<ManagedSubscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, spec, secrets FROM managed_subscriptions ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::managed).collect()
    }

    pub async fn save_managed(
        &self,
        sub: &ManagedSubscription,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO managed_subscriptions (name, kind, spec, secrets, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (name) DO UPDATE SET kind = $2, spec = $3, secrets = $4, updated_at = $5",
        )
        .bind(&sub.name)
        .bind(&sub.kind)
        .bind(sub.spec.to_string())
        .bind(to_json(&sub.secrets))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        bump_registry_version(&mut tx).await?;
        notify(&mut tx, SUBSCRIPTIONS_CHANNEL, &sub.name).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_managed(&self, name: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM managed_subscriptions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let failed = sqlx::query(
            "UPDATE deliveries SET state = 'failed', finished_at = $1,
                last_error = 'subscription deleted'
             WHERE subscription = $2 AND state = 'pending'",
        )
        .bind(to_millis(now))
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM subscriptions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        bump_registry_version(&mut tx).await?;
        notify(&mut tx, SUBSCRIPTIONS_CHANNEL, name).await?;
        tx.commit().await?;
        Ok(failed)
    }

    pub async fn set_disabled(
        &self,
        name: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE subscriptions SET disabled_at = $1, disabled_reason = $2 WHERE name = $3",
        )
        .bind(reason.map(|_| to_millis(now)))
        .bind(reason)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, SUBSCRIPTIONS_CHANNEL, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Wakes every lane on every replica (after a change that may concern
    /// any subscription).
    async fn wake_all(&self) -> Result<(), StoreError> {
        self.notify(super::DELIVERIES_CHANNEL, "*").await
    }
}

pub(super) const REGISTRY_VERSION: &str = "SELECT version FROM registry_version WHERE id = 1";

/// Marks a change to the managed subscriptions, in its transaction.
async fn bump_registry_version(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE registry_version SET version = version + 1 WHERE id = 1")
        .execute(tx)
        .await?;
    Ok(())
}

/// The due, free rows a claim may take: heads only, in an ordered lane.
fn due_rows(order: DeliveryOrder) -> String {
    let (join, held) = ordered_lane(order);
    format!(
        "SELECT d.id FROM deliveries d{join}
         WHERE d.subscription = $1 AND d.state = 'pending' AND d.next_attempt_at <= $2
           AND (d.lease_until IS NULL OR d.lease_until <= $2){held}"
    )
}

/// Leases up to `limit` due rows, fewer when the fleet's leases would
/// pass `max_in_flight`. The caller holds the subscription's lock.
async fn lease_due(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    request: &ClaimRequest<'_>,
    limit: usize,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let due = due_rows(request.order);
    let rows = sqlx::query(&format!(
        "WITH held AS (
            SELECT COUNT(*) AS n FROM deliveries
            WHERE subscription = $1 AND state = 'pending' AND lease_until > $2),
         due AS ({due}
            ORDER BY d.next_attempt_at, d.id
            LIMIT GREATEST(0, LEAST($5, $6 - (SELECT n FROM held)))
            FOR UPDATE OF d SKIP LOCKED),
         claimed AS (
            UPDATE deliveries d SET lease_owner = $3, lease_until = $4 FROM due
            WHERE d.id = due.id
            RETURNING d.id, d.subscription, d.attempts, d.event_seq, d.next_attempt_at)
         {CLAIMED} ORDER BY c.next_attempt_at, c.id"
    ))
    .bind(request.subscription)
    .bind(to_millis(request.now))
    .bind(request.owner)
    .bind(to_millis(request.lease_until))
    .bind(limit as i64)
    .bind(request.max_in_flight as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.iter().map(rows::claimed).collect())
}

/// Whether due work is left after a claim (the claimed rows now hold
/// leases, so they do not count).
async fn any_due(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    request: &ClaimRequest<'_>,
) -> Result<bool, StoreError> {
    let due = due_rows(request.order);
    let found = sqlx::query(&format!("SELECT EXISTS ({due}) AS found"))
        .bind(request.subscription)
        .bind(to_millis(request.now))
        .fetch_one(&mut **tx)
        .await?;
    Ok(found.get("found"))
}
