//! The PostgreSQL backend: one database shared by any number of Herald
//! replicas.
//!
//! What makes sharing safe, statement by statement:
//! - **Ingest** runs in ordinary transactions on any replica. Before it
//!   reads, a group takes transaction-scoped advisory locks on every event
//!   id, batch id and cube it touches (sorted, so two groups never wait on
//!   each other in a cycle): a racing duplicate of an event waits for the
//!   first and then sees its answer, and two completions of one batch are
//!   applied one after the other — one wins, the other is refused as the
//!   state machine says. Unique keys (`event_id`, `batch_id`) back this up:
//!   a conflict that slips through fails the group, which the committer
//!   retries once.
//! - **Deliveries** are claimed with `FOR UPDATE SKIP LOCKED` under a lease
//!   (`lease_owner`, `lease_until`); a replica that dies leaves leases that
//!   expire and are claimed again. Claims of one subscription are
//!   serialized by an advisory lock so `max_in_flight` counts the leases
//!   held by the whole fleet, not by one replica.
//! - **Leadership** for work that must happen once (the monitor, an email
//!   rule's sender, a Git archive's writer, pruning) is a row in `leases`,
//!   renewed by its holder and taken over when it expires.
//! - **Notifications**: a commit that enqueues deliveries or changes a
//!   batch sends `NOTIFY` (delivered only if it commits), so every replica
//!   wakes its lanes and its watchers within milliseconds; polling remains
//!   only as a fallback.

mod console;
mod deliveries;
mod gates;
mod ingest;
mod queries;
mod silences;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgSslMode};
use sqlx::Row;

pub use ingest::Tx;

use super::StoreError;
use crate::config::StoreSettings;

/// Channel: subscriptions with new deliveries (comma separated, or `*`).
pub const DELIVERIES_CHANNEL: &str = "herald_deliveries";
/// Channel: the newest event sequence number that changed a batch.
pub const CHANGES_CHANNEL: &str = "herald_changes";
/// Channel: a managed subscription was created, changed or removed.
pub const SUBSCRIPTIONS_CHANNEL: &str = "herald_subscriptions";

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The URL with its password masked, for messages.
    url: String,
    /// This process's name in attempts and leases.
    replica: String,
    /// Why the last write failed, while the database cannot take writes.
    failure: Mutex<Option<String>>,
}

/// `url` with any password replaced by `***`, fit for logs and errors.
pub fn masked_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl PgStore {
    /// Connects, retrying with backoff while the server cannot be reached
    /// (each failure logged with the URL, password masked), then applies
    /// pending migrations. Several replicas may start at once: migrations
    /// run under PostgreSQL's advisory lock.
    pub async fn connect(settings: &StoreSettings) -> Result<PgStore, StoreError> {
        let masked = masked_url(&settings.url);
        let options = connect_options(settings)?;
        let mut pause = Duration::from_millis(250);
        let pool = loop {
            let attempt = PgPoolOptions::new()
                .max_connections(settings.max_connections.max(2))
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.clone())
                .await;
            match attempt {
                Ok(pool) => break pool,
                Err(e) if is_unreachable(&e) && !settings.connect_once => {
                    tracing::error!(url = %masked, error = %e, retry_in = ?pause, "cannot reach PostgreSQL; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    return Err(StoreError::Connect {
                        url: masked,
                        reason: e.to_string(),
                    })
                }
            }
        };
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            pool,
            shared: Arc::new(Shared {
                url: masked,
                replica: settings.replica.clone(),
                failure: Mutex::new(None),
            }),
        })
    }

    /// The URL this store connects to, password masked.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The pool, for the store's own tools (`migrate`).
    pub(in crate::store) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// Starts the write transaction in which a group of events is ingested.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self.pool.begin().await {
            Ok(tx) => Ok(Tx::new(tx, self.clone())),
            Err(e) => Err(self.failed(e.into())),
        }
    }

    /// Notes why a write failed (for readiness) and passes the error on.
    pub(super) fn failed(&self, error: StoreError) -> StoreError {
        if let Some(reason) = error.unwritable_reason() {
            *self
                .shared
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        }
        error
    }

    pub(super) fn succeeded(&self) {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    pub fn write_failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A size limit is SQLite's test device; PostgreSQL's disk is the
    /// server's business.
    pub async fn limit_size(&self, _max_bytes: Option<u64>) -> Result<(), StoreError> {
        Err(StoreError::Corrupt(
            "a size limit applies to SQLite stores only".to_owned(),
        ))
    }

    /// A small write transaction, so readiness sees writes succeed again.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let result = sqlx::query("SELECT pg_notify('herald_probe', '')")
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => {
                self.succeeded();
                Ok(())
            }
            Err(e) => Err(self.failed(e.into())),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A listener on Herald's notification channels, on its own
    /// connection (LISTEN needs a session: see the README on poolers).
    pub async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([DELIVERIES_CHANNEL, CHANGES_CHANNEL, SUBSCRIPTIONS_CHANNEL])
            .await?;
        Ok(listener)
    }

    /// Sends a notification outside any transaction.
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        ingest::notify(&mut *self.pool.acquire().await?, channel, payload).await
    }

    /// Takes or renews the lease `name` for `holder` for `ttl`, judged by
    /// the database's clock (replicas' clocks may differ). True while
    /// `holder` holds it.
    pub async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, until)
             VALUES ($1, $2, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
             WHERE leases.holder = excluded.holder
                OR leases.until < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.as_millis() as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some_and(|r| r.get::<String, _>("holder") == holder))
    }

    /// Gives the lease up (at shutdown), so another replica takes over at
    /// once instead of after it expires.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn connect_options(settings: &StoreSettings) -> Result<PgConnectOptions, StoreError> {
    let invalid = |reason: String| StoreError::Connect {
        url: masked_url(&settings.url),
        reason,
    };
    let mut options =
        PgConnectOptions::from_str(&settings.url).map_err(|e| invalid(e.to_string()))?;
    if let Some(mode) = &settings.sslmode {
        options = options.ssl_mode(PgSslMode::from_str(mode).map_err(|e| invalid(e.to_string()))?);
    }
    let timeout = settings.statement_timeout.as_millis().to_string();
    Ok(options
        .application_name(&format!("herald {}", settings.replica))
        .options([("statement_timeout", timeout.as_str())]))
}

/// A failure to reach the server, worth retrying, as opposed to a refusal
/// (bad password, no such database) that retrying will not cure.
fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        // 57P03: the server is starting up or shutting down.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c == "57P03"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            masked_url("postgres://herald:s3cret@db:5432/herald?sslmode=require"),
            "postgres://herald:***@db:5432/herald?sslmode=require"
        );
        assert_eq!(
            masked_url("postgres://herald@db/herald"),
            "postgres://herald@db/herald"
        );
        assert_eq!(
            masked_url("postgres://u:p@ss@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(masked_url("sqlite://herald.db"), "sqlite://herald.db");
    }
}
