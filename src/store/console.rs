//! The console's queries (overview, subscription health, a batch's events
//! and deliveries, project versions, sign-in sessions), written once over
//! either database's `QueryBuilder` and read once through [`Columns`]; each
//! backend runs them on its own connections (`sqlite/console.rs`,
//! `postgres/console.rs`).
//!
//! Sessions keep only the SHA-256 digest of their token, so a copy of the
//! database signs nobody in, and every replica sees every session.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::rows::{self, Columns};
use super::types::{BatchEventRow, CubeLatest, ProjectVersion, SubscriptionHealth};
use super::{from_millis, to_millis, StoreError};

/// The newest batch of every (environment, cube), with the cube's last
/// success: one row per cube, by environment and cube.
pub(super) const LATEST_BATCHES: &str = "SELECT b.record,
        (SELECT MAX(s.finished_at) FROM batches s
          WHERE s.environment_id = b.environment_id AND s.cube_id = b.cube_id
            AND s.state = 'SUCCEEDED') AS last_success_at
   FROM batches b
  WHERE b.batch_id = (SELECT l.batch_id FROM batches l
                       WHERE l.environment_id = b.environment_id AND l.cube_id = b.cube_id
                       ORDER BY l.begun_at DESC, l.batch_id DESC LIMIT 1)
  ORDER BY b.environment_id, b.cube_id";

pub(super) fn cube_latest(r: &impl Columns) -> Result<CubeLatest, StoreError> {
    Ok(CubeLatest {
        batch: rows::batch(r)?,
        last_success_at: r.opt_int("last_success_at").map(from_millis).transpose()?,
    })
}

/// Per subscription: what finished since `since`, the backlog, the dead
/// and the newest error.
pub(super) fn subscription_health<'a, DB>(since: DateTime<Utc>) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let since = to_millis(since);
    let mut query = QueryBuilder::new("SELECT d.subscription, COUNT(CASE WHEN d.finished_at >= ");
    query
        .push_bind(since)
        .push(" THEN 1 END) AS recent_finished, COUNT(CASE WHEN d.finished_at >= ")
        .push_bind(since)
        .push(
            " AND d.state = 'delivered' THEN 1 END) AS recent_delivered,
            COUNT(CASE WHEN d.state = 'pending' THEN 1 END) AS pending,
            MIN(CASE WHEN d.state = 'pending' THEN d.created_at END) AS oldest_pending,
            COUNT(CASE WHEN d.state = 'dead' THEN 1 END) AS dead,
            (SELECT x.last_error FROM deliveries x
              WHERE x.subscription = d.subscription AND x.last_error IS NOT NULL
              ORDER BY x.next_attempt_at DESC LIMIT 1) AS last_error
       FROM deliveries d GROUP BY d.subscription ORDER BY d.subscription",
        );
    query
}

pub(super) fn health(r: &impl Columns) -> Result<SubscriptionHealth, StoreError> {
    Ok(SubscriptionHealth {
        subscription: r.text("subscription"),
        recent_finished: r.int("recent_finished"),
        recent_delivered: r.int("recent_delivered"),
        pending: r.int("pending"),
        oldest_pending: r.opt_int("oldest_pending").map(from_millis).transpose()?,
        dead: r.int("dead"),
        last_error: r.opt_text("last_error"),
    })
}

/// A batch's events, in the order Herald received them.
pub(super) fn batch_events<'a, DB>(batch_id: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "SELECT seq, event_id, event_type, occurred_at, received_at FROM events WHERE batch_id = ",
    );
    query.push_bind(batch_id.to_owned()).push(" ORDER BY seq");
    query
}

pub(super) fn batch_event(r: &impl Columns) -> Result<BatchEventRow, StoreError> {
    Ok(BatchEventRow {
        seq: r.int("seq"),
        event_id: r.text("event_id"),
        event_type: r.text("event_type"),
        occurred_at: from_millis(r.int("occurred_at"))?,
        received_at: from_millis(r.int("received_at"))?,
    })
}

/// The deliveries the events of these batches caused, in event order.
pub(super) fn batch_deliveries<'a, DB>(batch_ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(format!(
        "SELECT {}, e.batch_id FROM deliveries d JOIN events e ON e.seq = d.event_seq
          WHERE e.batch_id IN (",
        rows::DELIVERY_COLUMNS
    ));
    let mut ids = query.separated(", ");
    for id in batch_ids {
        ids.push_bind(id.clone());
    }
    query.push(") ORDER BY d.event_seq, d.subscription");
    query
}

/// Every stored project document's event, newest first per project (at
/// most 500: retention keeps a few per project).
pub(super) const PROJECT_VERSIONS_SQL: &str =
    "SELECT e.project_id, e.event_id, e.event_type, e.received_at, e.body
       FROM documents doc JOIN events e ON e.event_id = doc.event_id
      ORDER BY e.project_id, e.seq DESC LIMIT 500";

pub(super) fn project_version(r: &impl Columns) -> Result<ProjectVersion, StoreError> {
    Ok(ProjectVersion {
        project_id: r.opt_text("project_id").unwrap_or_default(),
        event_id: r.text("event_id"),
        event_type: r.text("event_type"),
        received_at: from_millis(r.int("received_at"))?,
        envelope: serde_json::from_slice(&r.bytes("body")).unwrap_or_default(),
    })
}

/// Records a session by its digest, dropping expired ones on the way.
pub(super) fn insert_session<'a, DB>(
    digest: &str,
    token_name: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(
        "INSERT INTO console_sessions (digest, token_name, created_at, expires_at) VALUES (",
    );
    let mut values = query.separated(", ");
    values.push_bind(digest.to_owned());
    values.push_bind(token_name.to_owned());
    values.push_bind(to_millis(now));
    values.push_bind(to_millis(expires_at));
    query.push(")");
    query
}

pub(super) fn delete_expired_sessions<'a, DB>(now: DateTime<Utc>) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("DELETE FROM console_sessions WHERE expires_at <= ");
    query.push_bind(to_millis(now));
    query
}

/// The token name of a live session.
pub(super) fn find_session<'a, DB>(digest: &str, now: DateTime<Utc>) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT token_name FROM console_sessions WHERE digest = ");
    query
        .push_bind(digest.to_owned())
        .push(" AND expires_at > ")
        .push_bind(to_millis(now));
    query
}

pub(super) fn delete_session<'a, DB>(digest: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("DELETE FROM console_sessions WHERE digest = ");
    query.push_bind(digest.to_owned());
    query
}

/// The console's store methods for one backend: `$db` its database,
/// `$read` and `$write` the pools to read and write through. Both backends
/// run the same builders above; only the pools differ.
macro_rules! console_queries {
    ($store:ty, $db:ty, read: |$r:ident| $read:expr, write: |$w:ident| $write:expr) => {
        impl $store {
            pub async fn latest_batches(
                &self,
            ) -> Result<Vec<$crate::store::CubeLatest>, $crate::store::StoreError> {
                let $r = self;
                let found = sqlx::query($crate::store::console::LATEST_BATCHES)
                    .fetch_all($read)
                    .await?;
                found
                    .iter()
                    .map($crate::store::console::cube_latest)
                    .collect()
            }

            pub async fn subscription_health(
                &self,
                since: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::store::SubscriptionHealth>, $crate::store::StoreError> {
                let $r = self;
                let mut query = $crate::store::console::subscription_health::<$db>(since);
                let found = query.build().fetch_all($read).await?;
                found.iter().map($crate::store::console::health).collect()
            }

            pub async fn batch_events(
                &self,
                batch_id: &str,
            ) -> Result<Vec<$crate::store::BatchEventRow>, $crate::store::StoreError> {
                let $r = self;
                let mut query = $crate::store::console::batch_events::<$db>(batch_id);
                let found = query.build().fetch_all($read).await?;
                found
                    .iter()
                    .map($crate::store::console::batch_event)
                    .collect()
            }

            pub async fn batch_deliveries(
                &self,
                batch_ids: &[String],
            ) -> Result<Vec<(String, $crate::store::DeliveryRow)>, $crate::store::StoreError> {
                if batch_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let $r = self;
                let mut query = $crate::store::console::batch_deliveries::<$db>(batch_ids);
                let found = query.build().fetch_all($read).await?;
                found
                    .iter()
                    .map(|r| {
                        use sqlx::Row;
                        Ok((r.get("batch_id"), $crate::store::rows::delivery(r)?))
                    })
                    .collect()
            }

            pub async fn project_versions(
                &self,
            ) -> Result<Vec<$crate::store::ProjectVersion>, $crate::store::StoreError> {
                let $r = self;
                let found = sqlx::query($crate::store::console::PROJECT_VERSIONS_SQL)
                    .fetch_all($read)
                    .await?;
                found
                    .iter()
                    .map($crate::store::console::project_version)
                    .collect()
            }

            pub async fn create_session(
                &self,
                digest: &str,
                token_name: &str,
                now: chrono::DateTime<chrono::Utc>,
                expires_at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::store::StoreError> {
                let $w = self;
                $crate::store::console::delete_expired_sessions::<$db>(now)
                    .build()
                    .execute($write)
                    .await?;
                $crate::store::console::insert_session::<$db>(digest, token_name, now, expires_at)
                    .build()
                    .execute($write)
                    .await?;
                Ok(())
            }

            pub async fn session_token(
                &self,
                digest: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                use sqlx::Row;
                let $r = self;
                let mut query = $crate::store::console::find_session::<$db>(digest, now);
                let found = query.build().fetch_optional($read).await?;
                Ok(found.map(|r| r.get("token_name")))
            }

            pub async fn delete_session(
                &self,
                digest: &str,
            ) -> Result<(), $crate::store::StoreError> {
                let $w = self;
                $crate::store::console::delete_session::<$db>(digest)
                    .build()
                    .execute($write)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(super) use console_queries;
