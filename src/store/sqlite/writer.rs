//! The single writer connection and the transactions on it.
//!
//! An OK from Herald means a COMMIT returned success, so this module owns
//! every write transaction and keeps one promise: a transaction that did
//! not commit leaves nothing behind on the connection. sqlx's own
//! `Transaction` counts nesting depth on the connection; after a COMMIT that
//! fails (`SQLITE_FULL` on a full disk, say) SQLite may or may not have
//! rolled back by itself, the count no longer matches, and the next "BEGIN"
//! becomes a SAVEPOINT inside a transaction that never commits. Acks sent
//! for such "commits" were lost (the issue this module fixes). So here:
//!
//! - transactions are plain `BEGIN IMMEDIATE` / `COMMIT` statements, and
//!   `BEGIN` itself verifies the connection is outside a transaction
//!   (SQLite refuses to nest it);
//! - after any failure inside a transaction, or a transaction dropped
//!   without commit, the connection is closed (SQLite rolls back whatever
//!   was open) and the pool opens a fresh one for the next writer.
//!
//! It also remembers why writes last failed, for `/readyz`, and applies an
//! optional size limit (`PRAGMA max_page_count`) to every connection it
//! opens, which tests use to fill the database on demand.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::OwnedMutexGuard;

use super::StoreError;

/// The writer pool (one connection) and what every write shares.
#[derive(Clone, Debug)]
pub(super) struct Writer {
    pool: SqlitePool,
    state: Arc<WriterState>,
}

#[derive(Debug, Default)]
pub(super) struct WriterState {
    /// Why the last write transaction failed, while the store cannot write.
    failure: Mutex<Option<String>>,
    /// Most pages the database may have (0: no limit).
    max_pages: AtomicU64,
    /// Held by whoever writes: the sqlx writer or the ingest connection
    /// (`direct`), so SQLite never sees two writers at once.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl WriterState {
    /// The `PRAGMA` a new connection runs so the limit holds on it too.
    pub(super) fn limit_statement(&self) -> Option<String> {
        match self.max_pages() {
            0 => None,
            pages => Some(Self::limit_statement_for(pages)),
        }
    }

    /// The page limit in force (0: none).
    pub(super) fn max_pages(&self) -> u64 {
        self.max_pages.load(Ordering::Acquire)
    }

    /// The `PRAGMA` that sets `pages` as the limit (0: SQLite's own ceiling).
    pub(super) fn limit_statement_for(pages: u64) -> String {
        match pages {
            0 => "PRAGMA max_page_count = 4294967294".to_owned(),
            pages => format!("PRAGMA max_page_count = {pages}"),
        }
    }

    /// Waits for this writer's turn; the turn lasts as long as the guard.
    pub(super) async fn turn(&self) -> OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    /// Notes why a write failed (for readiness) and passes the error on.
    pub(super) fn failed(&self, error: StoreError) -> StoreError {
        if let Some(reason) = error.unwritable_reason() {
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        }
        error
    }

    pub(super) fn succeeded(&self) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

impl Writer {
    pub(super) fn new(pool: SqlitePool, state: Arc<WriterState>) -> Self {
        Self { pool, state }
    }

    /// For single statements, which SQLite commits or rolls back by
    /// itself: the pool, once it is this writer's turn.
    pub(super) async fn pool(&self) -> Turn<'_> {
        Turn {
            pool: &self.pool,
            _turn: self.state.turn().await,
        }
    }

    /// The pool without waiting for a turn: only to close it.
    pub(super) fn raw_pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction on a connection verified to be outside
    /// any transaction. A connection that refuses `BEGIN` is replaced, once.
    pub(super) async fn begin(&self) -> Result<WriteTx, StoreError> {
        match self.try_begin().await {
            Err(first) if !first.is_pool_failure() => {
                tracing::warn!(error = %first, "the writer connection refused BEGIN; replacing it");
                self.try_begin().await
            }
            other => other,
        }
    }

    async fn try_begin(&self) -> Result<WriteTx, StoreError> {
        let turn = self.state.turn().await;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.failed(e.into()))?;
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            Ok(_) => Ok(WriteTx {
                conn: Some(conn),
                writer: self.clone(),
                _turn: turn,
            }),
            Err(e) => {
                let _ = conn.close().await;
                Err(self.failed(e.into()))
            }
        }
    }

    fn failed(&self, error: StoreError) -> StoreError {
        self.state.failed(error)
    }

    /// Why writes are failing now, if they are.
    pub(super) fn failure(&self) -> Option<String> {
        self.state
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Limits the database to `pages` pages (`None`: no limit) on the
    /// current connection and every one opened later.
    pub(super) async fn limit_pages(&self, pages: Option<u64>) -> Result<(), StoreError> {
        self.state
            .max_pages
            .store(pages.unwrap_or(0), Ordering::Release);
        // SQLite's own ceiling when unlimited.
        let statement = WriterState::limit_statement_for(self.state.max_pages());
        sqlx::query(&statement).execute(&*self.pool().await).await?;
        Ok(())
    }
}

/// The writer pool during this writer's turn.
pub(super) struct Turn<'a> {
    pool: &'a SqlitePool,
    _turn: OwnedMutexGuard<()>,
}

impl Deref for Turn<'_> {
    type Target = SqlitePool;

    fn deref(&self) -> &SqlitePool {
        self.pool
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] closes the
/// connection, which rolls the transaction back.
pub struct WriteTx {
    /// Present until committed or given up.
    conn: Option<PoolConnection<Sqlite>>,
    writer: Writer,
    /// Released after the connection is back in the pool (or closed).
    _turn: OwnedMutexGuard<()>,
}

impl WriteTx {
    /// Commits. Only an `Ok` from here means the writes are durable; on
    /// any error the connection is closed, so nothing of this transaction
    /// can be committed later by accident.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Shared(
                "transaction already finished".to_owned(),
            ));
        };
        match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => {
                self.writer.state.succeeded();
                Ok(())
            }
            Err(e) => {
                let _ = conn.close().await;
                Err(self.writer.failed(e.into()))
            }
        }
    }

    /// Notes a failure inside the transaction (for readiness); the
    /// transaction is then dropped, which discards the connection.
    pub fn note_failure(&self, error: StoreError) -> StoreError {
        self.writer.failed(error)
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        // `conn` is only taken by `commit`, which consumes the transaction.
        self.conn
            .as_ref()
            .expect("an open transaction has its connection")
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        // As in `deref`: only `commit` takes it, consuming `self`.
        self.conn
            .as_mut()
            .expect("an open transaction has its connection")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            // Never hand a connection with an open transaction back to the
            // pool: closing it rolls the transaction back.
            conn.close_on_drop();
        }
    }
}
