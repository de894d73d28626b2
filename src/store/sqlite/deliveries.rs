//! The outbox side: claiming due deliveries under a lease, recording
//! attempts, the delivery log, and subscription runtime state.
//!
//! A claim is a short write (set `lease_owner`/`lease_until`), committed
//! before any HTTP request starts; the attempt's result is a second short
//! write. No transaction is ever held across a send. A worker that dies
//! mid-send leaves a lease that simply expires, and the row is claimed
//! again: delivery is at least once.

use chrono::{DateTime, Utc};

use rusqlite::{params, OptionalExtension};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::rows::{self, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use super::{from_millis, to_millis, SqliteStore, StoreError};
use crate::core::subscription::DeliveryOrder;
use crate::store::portable::{self, close_claim, ordered_lane, select_bucket, upsert_bucket};
use crate::store::rows::Columns;
use crate::store::types::{
    AttemptRecord, AttemptRow, Claim, ClaimRequest, ClaimedDelivery, DeliveryFilter, DeliveryRow,
    DeliveryUpdate, NewDelivery, ScrapeGauges,
};

impl SqliteStore {
    /// Records the subscriptions the configuration declares. A disabled
    /// subscription whose target changed is enabled again. Returns the
    /// names that remain disabled.
    pub async fn sync_subscriptions(
        &self,
        subscriptions: &[(String, String)],
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await?;
        for (name, fingerprint) in subscriptions {
            sqlx::query(
                "INSERT INTO subscriptions (name, fingerprint) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET
                    disabled_at = CASE WHEN fingerprint = ?2 THEN disabled_at END,
                    disabled_reason = CASE WHEN fingerprint = ?2 THEN disabled_reason END,
                    fingerprint = ?2",
            )
            .bind(name)
            .bind(fingerprint)
            .execute(&mut *tx)
            .await?;
        }
        let disabled = sqlx::query("SELECT name FROM subscriptions WHERE disabled_at IS NOT NULL")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        tx.commit().await?;
        Ok(disabled)
    }

    /// Why the subscription is disabled, if it is.
    pub async fn subscription_disabled(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT disabled_reason FROM subscriptions WHERE name = ? AND disabled_at IS NOT NULL",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|r| {
            r.get::<Option<String>, _>("disabled_reason")
                .unwrap_or_default()
        }))
    }

    /// Leases up to `limit` due deliveries of one subscription to `owner`
    /// until `lease_until`: in an ordered lane only its head, and under a
    /// rate limit only as many as its bucket has tokens for. One
    /// transaction on the ingest connection, which reads the claimed rows
    /// back too, from its own warm cache.
    pub async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let subscription = request.subscription.to_owned();
        let owner = request.owner.to_owned();
        let request = ClaimRequest {
            subscription: "",
            owner: "",
            ..request.clone()
        };
        self.direct
            .write(move |conn| {
                claim(
                    conn,
                    &ClaimRequest {
                        subscription: &subscription,
                        owner: &owner,
                        ..request
                    },
                )
            })
            .await
    }

    /// How long work of the subscription has waited for its rate limit
    /// in all, the wait going on now included.
    pub async fn rate_limit_waited(
        &self,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Result<std::time::Duration, StoreError> {
        let bucket = select_bucket(subscription)
            .build()
            .fetch_optional(&self.reader)
            .await?;
        Ok(bucket.map_or_else(Default::default, |row| {
            rows::bucket(&row).waited(to_millis(now))
        }))
    }

    /// Records attempts and moves their deliveries on, releasing the
    /// leases, all in one transaction on the ingest connection (one
    /// hand-off, statements prepared once). An update only applies while
    /// `owner` still holds the lease; the attempt is recorded either way.
    pub async fn record_attempts(
        &self,
        owner: &str,
        attempts: &[(AttemptRecord, DeliveryUpdate)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let replica = self.replica.clone();
        let attempts = attempts.to_vec();
        self.direct
            .write(move |conn| record(conn, &owner, &replica, &attempts, now))
            .await
    }

    /// How many deliveries are pending, and when the oldest was enqueued.
    pub async fn outbox_gauges(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE state = 'pending'")
            .fetch_one(&self.reader)
            .await?;
        let oldest = row
            .get::<Option<i64>, _>("oldest")
            .map(from_millis)
            .transpose()?;
        Ok((row.get("n"), oldest))
    }

    pub async fn scrape_gauges(&self) -> Result<ScrapeGauges, StoreError> {
        let [backlog, states, last_success] = portable::SCRAPE_STATEMENTS;
        let fetch = |statement| sqlx::query(statement).fetch_all(&self.reader);
        portable::scrape_gauges([
            fetch(backlog).await?,
            fetch(states).await?,
            fetch(last_success).await?,
        ])
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Gives back leases this owner still holds (at shutdown), so the rows
    /// are due at once for whoever runs next.
    pub async fn release_leases(&self, owner: &str, ids: &[String]) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
                 WHERE id = ? AND lease_owner = ?",
            )
            .bind(id)
            .bind(owner)
            .execute(&*self.writer.pool().await)
            .await?;
        }
        Ok(())
    }

    /// When the subscription's earliest pending delivery falls due (or its
    /// lease expires), if it has any.
    pub async fn next_due_at(
        &self,
        subscription: &str,
        order: DeliveryOrder,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (join, held) = ordered_lane(order);
        let row = sqlx::query(&format!(
            "SELECT MIN(MAX(d.next_attempt_at, COALESCE(d.lease_until, 0))) AS due
             FROM deliveries d{join} WHERE d.subscription = ? AND d.state = 'pending'{held}"
        ))
        .bind(subscription)
        .fetch_one(&self.reader)
        .await?;
        row.get::<Option<i64>, _>("due")
            .map(from_millis)
            .transpose()
    }

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE 1 = 1"),
        );
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
                .push_bind(subscription.clone())
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
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(rows::delivery).collect()
    }

    pub async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        rows.as_ref().map(rows::delivery).transpose()
    }

    /// Makes deliveries due now, whatever their state. A lease still held
    /// (an attempt in flight) is left alone; the row is picked up after it.
    pub async fn make_due(&self, ids: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut changed = 0;
        let mut tx = self.writer.begin().await?;
        for id in ids {
            changed += sqlx::query(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1, finished_at = NULL,
                    lease_owner = CASE WHEN lease_until > ?1 THEN lease_owner END,
                    lease_until = CASE WHEN lease_until > ?1 THEN lease_until END
                 WHERE id = ?2",
            )
            .bind(to_millis(now))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Every event Herald received in `[since, until)`, oldest first, as
    /// (sequence, parsed envelope) — what replay filters by subscription.
    pub async fn events_received(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<(i64, serde_json::Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, body FROM events WHERE received_at >= ? AND received_at < ? ORDER BY seq",
        )
        .bind(to_millis(since))
        .bind(to_millis(until))
        .fetch_all(&self.reader)
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

    /// Makes (event, subscription) deliveries due now: existing rows are
    /// reset, missing ones created. Returns how many.
    pub async fn replay(
        &self,
        subscription: &str,
        seqs: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        let mut tx = self.writer.begin().await?;
        for seq in seqs {
            count += sqlx::query(
                "INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4)
                 ON CONFLICT (event_seq, subscription) DO UPDATE SET
                    state = 'pending', next_attempt_at = ?4, finished_at = NULL",
            )
            .bind(NewDelivery::new_id())
            .bind(seq)
            .bind(subscription)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(count)
    }

    /// The ids of dead deliveries, of one subscription or all.
    pub async fn dead_deliveries(
        &self,
        subscription: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM deliveries WHERE state = 'dead' AND (?1 IS NULL OR subscription = ?1)",
        )
        .bind(subscription)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ? ORDER BY attempt, id"
        ))
        .bind(delivery_id)
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::attempt).collect()
    }
}

/// A claim (see [`SqliteStore::claim_due`]) in the caller's transaction.
fn claim(conn: &rusqlite::Connection, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
    let Some(rate) = request.rate_limit else {
        let rows = due_rows(conn, request, request.limit)?;
        return Ok(Claim {
            deliveries: lease(conn, request, &rows)?,
            ..Claim::default()
        });
    };
    // The bucket is read, spent and written in the claim's transaction.
    let now = to_millis(request.now);
    let bucket = conn
        .prepare_cached(select_bucket::<Sqlite>(request.subscription).sql())?
        .query_row([request.subscription], |row| Ok(rows::bucket(row)))
        .optional()?;
    let taken = rate.take(bucket, now, request.limit);
    let rows = due_rows(conn, request, taken.granted)?;
    let deliveries = lease(conn, request, &rows)?;
    // Asked once the granted rows are leased, so it sees only the others.
    let due_left = taken.ran_short(rows.len()) && !due_rows(conn, request, 1)?.is_empty();
    let (bucket, mut claim) = close_claim(taken, rows.len(), due_left, now)?;
    conn.prepare_cached(upsert_bucket::<Sqlite>(request.subscription, &bucket).sql())?
        .execute(params![
            request.subscription,
            bucket.milli_tokens,
            bucket.refilled_at,
            bucket.waiting_since,
            bucket.waited_ms,
        ])?;
    claim.deliveries = deliveries;
    Ok(claim)
}

/// Up to `limit` due, free rows of the request (heads only, in an ordered
/// lane), oldest first: each row's rowid, which the lease seeks by.
fn due_rows(
    conn: &rusqlite::Connection,
    request: &ClaimRequest<'_>,
    limit: usize,
) -> Result<Vec<i64>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<i64> = conn
        .prepare_cached(&due_sql(request.order))?
        .query_map(
            params![request.subscription, to_millis(request.now), limit as i64],
            |row| row.get(0),
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The due, free rows of a subscription (?1) at ?2, oldest first, at most
/// ?3: heads only in an ordered lane. The rowid is in every index entry,
/// so the claim index answers alone.
fn due_sql(order: DeliveryOrder) -> String {
    let (join, held) = ordered_lane(order);
    format!(
        "SELECT d.rowid FROM deliveries d{join}
         WHERE d.subscription = ?1 AND d.state = 'pending' AND d.next_attempt_at <= ?2
           AND (d.lease_until IS NULL OR d.lease_until <= ?2){held}
         ORDER BY d.next_attempt_at, d.id LIMIT ?3"
    )
}

/// Leases the rows to the request's owner and reads what each sends, in
/// claim order. Both statements seek the row by its rowid: no lookup by
/// the text id, and no RETURNING, whose rows SQLite gathers in a temporary
/// table built and dropped for every statement.
fn lease(
    conn: &rusqlite::Connection,
    request: &ClaimRequest<'_>,
    rows: &[i64],
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let mut leased = conn.prepare_cached(LEASE)?;
    let mut read = conn.prepare_cached(
        "SELECT d.id, d.subscription, d.attempts, e.event_type, e.body
         FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.rowid = ?1",
    )?;
    let until = to_millis(request.lease_until);
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        leased.execute(params![row, request.owner, until])?;
        found.push(read.query_row([row], |r| {
            Ok(ClaimedDelivery {
                id: r.text("id"),
                subscription: r.text("subscription"),
                event_type: r.text("event_type"),
                attempts: r.int("attempts") as u32,
                body: r.bytes("body"),
            })
        })?);
    }
    Ok(found)
}

const LEASE: &str = "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE rowid = ?1";

const INSERT_ATTEMPT: &str =
    "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                           response_excerpt, error, verdict, replica)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// A recorded attempt's delivery to its next state, while `owner` (?9)
/// still holds its lease.
const MOVE_ON: &str =
    "UPDATE deliveries SET state = ?2, attempts = ?3, lease_owner = NULL, lease_until = NULL,
        next_attempt_at = COALESCE(?4, next_attempt_at), finished_at = ?5,
        last_status = ?6, last_error = ?7, silence_id = ?8
     WHERE id = ?1 AND lease_owner = ?9";

/// Inserts the attempts and moves their deliveries to their next states;
/// for a 410, disables the subscription. A row moves only while `owner`
/// still holds its lease.
fn record(
    conn: &rusqlite::Connection,
    owner: &str,
    replica: &str,
    attempts: &[(AttemptRecord, DeliveryUpdate)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(INSERT_ATTEMPT)?;
    let mut move_on = conn.prepare_cached(MOVE_ON)?;
    let mut disable = conn.prepare_cached(
        "UPDATE subscriptions SET disabled_at = ?1, disabled_reason = ?2
         WHERE name = (SELECT subscription FROM deliveries WHERE id = ?3)",
    )?;
    for (a, update) in attempts {
        let status = a.status_code.map(i64::from);
        insert.execute(params![
            a.delivery_id,
            a.attempt as i64,
            to_millis(a.started_at),
            a.duration_ms,
            status,
            a.response_excerpt,
            a.error,
            update.verdict(),
            replica,
        ])?;
        let next_at = match update {
            DeliveryUpdate::RetryAt(at) => Some(to_millis(*at)),
            _ => None,
        };
        move_on.execute(params![
            a.delivery_id,
            update.state().stored(),
            a.attempt as i64,
            next_at,
            next_at.is_none().then(|| to_millis(now)),
            status,
            a.error,
            update.silence_id(),
            owner,
        ])?;
        if let DeliveryUpdate::DisableSubscription { reason } = update {
            disable.execute(params![to_millis(now), reason, a.delivery_id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{explain, fresh_store};
    use super::*;

    /// How SQLite plans the claim's query for a lane of `order`.
    async fn claim_plan(store: &SqliteStore, order: DeliveryOrder) -> Vec<String> {
        explain(store, "EXPLAIN QUERY PLAN", &due_sql(order), 3).await
    }

    /// A claim reads the pending rows' index alone: no table lookup for
    /// the leased rows it passes, and no finished row in it.
    #[tokio::test]
    async fn a_claim_reads_the_pending_index_alone() {
        let (_dir, store) = fresh_store().await;
        let index: String = store
            .direct
            .write(|conn| {
                Ok(conn.query_row(
                    "SELECT sql FROM sqlite_master WHERE name = 'deliveries_due'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert!(index.ends_with("WHERE state = 'pending'"), "{index}");
        let plan = claim_plan(&store, DeliveryOrder::None).await;
        assert!(
            plan.iter()
                .any(|step| step.contains("USING COVERING INDEX deliveries_due")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        store.close().await;
    }

    /// The statements every webhook runs build no temporary B-tree: the
    /// state column's CHECK once listed its states with IN, which SQLite
    /// evaluated by filling a temporary table per enqueued or recorded
    /// delivery (migration 0014).
    #[tokio::test]
    async fn the_statements_of_a_webhook_build_no_temporary_table() {
        let (_dir, store) = fresh_store().await;
        for sql in [
            super::super::ingest::ENQUEUE,
            LEASE,
            INSERT_ATTEMPT,
            MOVE_ON,
        ] {
            let opcodes = explain(&store, "EXPLAIN", sql, 1).await;
            assert!(opcodes.iter().any(|op| op == "Halt"), "{opcodes:?}");
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {opcodes:?}"
            );
        }
        store.close().await;
    }

    /// Migration 0014 copies the deliveries table: every row comes back
    /// with its rowid, its attempts still point at it, and foreign keys
    /// and the state CHECK hold on the new table.
    #[tokio::test]
    async fn the_check_rewrite_keeps_every_delivery_and_its_attempts() {
        use sqlx::sqlite::SqliteConnectOptions;
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("herald.db"))
            .create_if_missing(true)
            .foreign_keys(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = before
            .migrations
            .iter()
            .filter(|m| m.version < 14)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        before.run(&mut conn).await.unwrap();
        conn.execute(
            "INSERT INTO events (event_id, event_type, source, occurred_at, received_at,
                                 fingerprint, payload, body, reply)
             VALUES ('e1', 't', 's', 1, 1, 'f', '{}', x'7b7d', '{}');
             INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at,
                                     created_at, lease_owner, lease_until)
             VALUES ('d1', 1, 'a', 'pending', 5, 1, 'me', 9),
                    ('d2', 1, 'b', 'delivered', 1, 1, NULL, NULL);
             DELETE FROM deliveries WHERE id = 'd1';
             INSERT INTO deliveries (id, event_seq, subscription, state, next_attempt_at,
                                     created_at, lease_owner, lease_until)
             VALUES ('d3', 1, 'a', 'pending', 5, 1, 'me', 9);
             INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, verdict)
             VALUES ('d2', 1, 1, 3, 'delivered'), ('d3', 1, 1, 3, 'retry');",
        )
        .await
        .unwrap();
        let rows = "SELECT rowid || ' ' || id || ' ' || state || ' ' || COALESCE(lease_owner, '-')
                    FROM deliveries ORDER BY rowid";
        let old: Vec<String> = sqlx::query_scalar(rows).fetch_all(&mut conn).await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .unwrap();
        let new: Vec<String> = sqlx::query_scalar(rows).fetch_all(&mut conn).await.unwrap();
        assert_eq!(new, old);
        assert_eq!(new, ["2 d2 delivered -", "3 d3 pending me"]);
        let dangling: Vec<(String,)> = sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(dangling.is_empty());
        let orphan = conn
            .execute(
                "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, verdict)
                 VALUES ('nowhere', 1, 1, 1, 'delivered')",
            )
            .await;
        assert!(format!("{:?}", orphan.unwrap_err()).contains("FOREIGN KEY"));
        let still_referenced = conn.execute("DELETE FROM deliveries WHERE id = 'd2'").await;
        assert!(format!("{:?}", still_referenced.unwrap_err()).contains("FOREIGN KEY"));
        let bad_state = conn
            .execute("UPDATE deliveries SET state = 'lost' WHERE id = 'd3'")
            .await;
        assert!(format!("{:?}", bad_state.unwrap_err()).contains("CHECK"));
        let sql: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'deliveries'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(!sql.contains(" IN ("), "{sql}");
        let set_aside: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'deliveries_copy'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(set_aside, 0);
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'
             ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "deliveries_due",
                "deliveries_finished",
                "deliveries_head",
                "sqlite_autoindex_deliveries_1",
                "sqlite_autoindex_deliveries_2"
            ]
        );
    }

    /// The earlier-pending check of an ordered lane seeks `deliveries_head`
    /// instead of walking the subscription's pending rows.
    #[tokio::test]
    async fn an_ordered_lane_checks_for_earlier_rows_through_the_head_index() {
        let (_dir, store) = fresh_store().await;
        for order in [
            DeliveryOrder::Subscription,
            DeliveryOrder::Cube,
            DeliveryOrder::Batch,
        ] {
            let plan = claim_plan(&store, order).await;
            assert!(
                plan.iter().any(|step| step.contains("deliveries_head")),
                "{order:?}: {plan:?}"
            );
        }
        store.close().await;
    }
}
