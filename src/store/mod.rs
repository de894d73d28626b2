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
mod retention;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
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
pub use retention::Pruned;
pub use writer::WriteTx;

use writer::{Writer, WriterState};

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
    /// The store cannot take writes now (a full disk, a read-only file):
    /// nothing was written, and the caller should retry later.
    #[error("the store is full or read-only; retry later ({0})")]
    Unwritable(String),
}

impl StoreError {
    /// Why the database cannot take writes now, when that is the failure:
    /// a condition of the machine that passes, not a fault in Herald.
    pub fn unwritable_reason(&self) -> Option<&str> {
        let code = match self {
            StoreError::Unwritable(reason) => return Some(reason),
            StoreError::Database(sqlx::Error::Database(e)) => e.code(),
            StoreError::Database(sqlx::Error::Io(_)) => return Some("an I/O error"),
            _ => return None,
        };
        // SQLite reports extended codes; the primary code is the low byte.
        let primary = code?.parse::<i32>().ok()? & 0xff;
        Some(match primary {
            5 | 6 => "the database is locked by another process",
            8 => "the database is read-only",
            10 => "the disk reported an I/O error",
            13 => "the database or its disk is full",
            14 => "the database file cannot be opened",
            _ => return None,
        })
    }

    /// The same failure for every job of a group commit: the kind is kept
    /// (an unwritable store stays retryable), the cause as text.
    pub fn to_shared(&self) -> StoreError {
        match self.unwritable_reason() {
            Some(reason) => StoreError::Unwritable(reason.to_owned()),
            None => StoreError::Shared(self.to_string()),
        }
    }

    fn is_pool_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut)
        )
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    writer: Writer,
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
        let state = Arc::new(WriterState::default());
        let limits = state.clone();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                let limit = limits.limit_statement();
                Box::pin(async move {
                    if let Some(limit) = limit {
                        sqlx::query(&limit).execute(conn).await?;
                    }
                    Ok(())
                })
            })
            // Space freed by pruning goes back to the file system; a new
            // database is created so, an older one converted below.
            .connect_with(options.clone().auto_vacuum(SqliteAutoVacuum::Incremental))
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        convert_to_incremental_vacuum(&writer).await;
        let reader = if url.contains(":memory:") {
            // A second pool would open a second, empty in-memory database.
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Store {
            writer: Writer::new(writer, state),
            reader,
        })
    }

    /// Starts the write transaction in which one event is ingested.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx::new(self.writer.begin().await?))
    }

    /// Limits the database file to about `max_bytes` (`None`: no limit),
    /// from now on and on every connection opened later; a full database
    /// refuses writes as a full disk does. A limit below the current size
    /// holds the database at its current size.
    pub async fn limit_size(&self, max_bytes: Option<u64>) -> Result<(), StoreError> {
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.reader)
            .await?;
        let pages = max_bytes.map(|b| (b / page_size.max(512) as u64).max(1));
        self.writer.limit_pages(pages).await
    }

    /// Why writes are failing, while they are: the last write transaction
    /// failed for a condition of the machine (full, read-only) and none has
    /// committed since.
    pub fn write_failure(&self) -> Option<String> {
        self.writer.failure()
    }

    /// Tries a write transaction of 64 KiB (a row written and deleted), so
    /// readiness can see the store take writes again without waiting for
    /// traffic. A store with less room than that is as good as full.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let written = async {
            sqlx::query("INSERT INTO write_probe (filler) VALUES (zeroblob(65536))")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM write_probe")
                .execute(&mut *tx)
                .await
        }
        .await;
        match written {
            Ok(_) => tx.commit().await,
            Err(e) => Err(tx.note_failure(e.into())),
        }
    }

    pub async fn close(&self) {
        self.writer.pool().close().await;
        self.reader.close().await;
    }
}

/// A database created before Herald pruned anything has no auto-vacuum;
/// switching it on takes one VACUUM. It is an optimisation (freed pages are
/// reused either way), so a failure (no room for the copy) is only logged.
async fn convert_to_incremental_vacuum(writer: &SqlitePool) {
    let mode: Result<i64, _> = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(writer)
        .await;
    if !matches!(mode, Ok(0)) {
        return;
    }
    tracing::info!("converting the database to incremental auto-vacuum (once)");
    let converted = async {
        sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
            .execute(writer)
            .await?;
        sqlx::query("VACUUM").execute(writer).await
    }
    .await;
    if let Err(e) = converted {
        tracing::warn!(error = %e, "cannot convert to incremental auto-vacuum; freed space is still reused");
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
