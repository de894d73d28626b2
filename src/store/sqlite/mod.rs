//! The SQLite backend: one file, no server — Herald's embedded default.
//!
//! SQLite allows one writer at a time. Herald therefore writes through a
//! pool of exactly one connection (writes queue in-process instead of
//! failing with SQLITE_BUSY) and reads through a separate pool, which WAL
//! mode lets run beside the writer. One process owns the file: a second
//! `herald serve` on it would share nothing of its leases' meaning, so
//! several replicas need the PostgreSQL backend.

mod console;
mod deliveries;
mod direct;
mod email;
mod gates;
mod ingest;
mod managed;
mod monitor;
mod queries;
mod retention;
mod silences;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::SqlitePool;

pub use ingest::Tx;
pub use writer::WriteTx;

use super::{from_millis, rows, to_json, to_millis, StoreError};
use crate::config::StoreSettings;
use direct::Direct;
use writer::{Writer, WriterState};

#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// This process's name in attempts.
    replica: String,
    /// The committer's own connection (see `direct`).
    direct: Arc<Direct>,
    /// The exclusive lock on `<file>.lock` while the store is open.
    owner: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    /// The directory of an in-memory store's file, removed with the store.
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and applies
    /// pending migrations.
    pub async fn open(settings: &StoreSettings) -> Result<SqliteStore, StoreError> {
        let url = settings.url.as_str();
        // An in-memory store is a file in a private temporary directory,
        // so the committer's connection and sqlx's see the same database.
        let scratch = match url.contains(":memory:") {
            true => Some(Arc::new(tempfile::tempdir().map_err(|e| {
                StoreError::Connect {
                    url: url.to_owned(),
                    reason: format!("creating a temporary directory: {e}"),
                }
            })?)),
            false => None,
        };
        let options = match &scratch {
            Some(dir) => SqliteConnectOptions::new().filename(dir.path().join("herald.db")),
            None => SqliteConnectOptions::from_str(url)?,
        };
        let owner = claim_file(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acked event survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // A multi-row statement inside a transaction keeps a statement
            // journal to undo itself: in memory, not in a temporary file.
            .pragma("temp_store", "memory")
            // The checkpoint thread checkpoints (see `direct`).
            .pragma("wal_autocheckpoint", direct::BACKSTOP_PAGES.to_string())
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
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        convert_to_incremental_vacuum(&writer).await;
        let direct = Arc::new(Direct::new(
            options.get_filename().to_owned(),
            state.clone(),
        ));
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer: Writer::new(writer, state),
            reader,
            replica: settings.replica.clone(),
            direct,
            owner: Arc::new(std::sync::Mutex::new(owner)),
            _scratch: scratch,
        })
    }

    /// Starts the write transaction in which a group of events is
    /// ingested. It runs SQLite on the calling thread: the committer's.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx::new(self.direct.begin().await?))
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
        self.direct.close();
        self.writer.raw_pool().close().await;
        self.reader.close().await;
        // Another Herald may open the file now.
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Takes `<file>.lock` exclusively for this process, so a second Herald on
/// the same file is refused at start instead of sharing a file it cannot
/// share safely (its leases and wake-ups are in-process). The lock goes
/// with the process, however it ends.
fn claim_file(path: &std::path::Path) -> Result<Option<std::fs::File>, StoreError> {
    use std::io::Write;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let lock_path = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.lock", ext.to_string_lossy()),
        None => "lock".to_owned(),
    });
    let refused = |reason: String| StoreError::Connect {
        url: format!("sqlite://{}", path.display()),
        reason,
    };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| refused(format!("creating {}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| refused(format!("opening {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(refused(format!(
                "another Herald process ({}) is using this file; SQLite takes one Herald — run several replicas on PostgreSQL",
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(refused(format!("locking {}: {e}", lock_path.display())))
        }
    }
    let _ = file.set_len(0);
    let _ = write!(file, "pid {}", std::process::id());
    Ok(Some(file))
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

/// What the store's unit tests share: a store of their own, and SQLite's
/// account of how it runs a statement.
#[cfg(test)]
mod test_support {
    use super::SqliteStore;
    use crate::config::StoreSettings;

    /// A store in a fresh file (the directory goes with the guard).
    pub(super) async fn fresh_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db", dir.path().display());
        let store = SqliteStore::open(&StoreSettings::new(&url)).await.unwrap();
        (dir, store)
    }

    /// Column `column` of each row `EXPLAIN` (or `EXPLAIN QUERY PLAN`,
    /// `explain` being the prefix) gives for `sql`, its parameters unbound.
    pub(super) async fn explain(
        store: &SqliteStore,
        explain: &str,
        sql: &str,
        column: usize,
    ) -> Vec<String> {
        let sql = format!("{explain} {sql}");
        store
            .direct
            .write(move |conn| {
                let mut program = conn.prepare(&sql)?;
                let unbound = vec![rusqlite::types::Null; program.parameter_count()];
                let rows = program.query_map(rusqlite::params_from_iter(unbound), |r| {
                    r.get::<_, String>(column)
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap()
    }
}
