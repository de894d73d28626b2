//! All SQL lives here: the schema (applied at start), the ingest
//! transaction, the outbox claim and attempt records, and batch queries.
//! The rest of the code speaks in domain types and never sees a query.
//!
//! SQLite allows one writer at a time. Herald therefore writes through a
//! pool of exactly one connection (writes queue in-process instead of
//! failing with SQLITE_BUSY) and reads through a separate pool, which WAL
//! mode lets run beside the writer.

mod deliveries;
mod email;
mod ingest;
mod managed;
mod monitor;
mod queries;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use deliveries::{
    AttemptRecord, AttemptRow, ClaimedDelivery, DeliveryFilter, DeliveryRow, DeliveryState,
    DeliveryUpdate,
};
pub use email::PendingDelivery;
pub use ingest::{NewEvent, PriorEvent, Tx};
pub use managed::{ManagedSubscription, StoredSecret};
pub use monitor::ScheduleState;
pub use queries::{BatchChange, BatchFilter, BatchPage, SnapshotPage, SnapshotRest};

/// Herald's failure to talk to its database: never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A failure shared by every job of a group commit, reported to each.
    #[error("the write failed: {0}")]
    Shared(String),
}

#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the database at `url` and applies
    /// pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acked event survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let reader = if url.contains(":memory:") {
            // A second pool would open a second, empty in-memory database.
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Store { writer, reader })
    }

    /// Starts the write transaction in which one event is ingested.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx::new(self.writer.begin().await?))
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Domain types serialize to JSON without fail: no maps with non-string
    // keys, no custom serializers that error.
    serde_json::to_string(value).expect("domain types serialize")
}

/// Ingest replies are stored as JSON in the event row.
pub(crate) fn encode_reply<T: serde::Serialize>(reply: &T) -> String {
    to_json(reply)
}

pub(crate) fn decode_reply<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    from_json(text)
}
