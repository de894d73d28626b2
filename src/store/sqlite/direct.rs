//! The ingest connection: Herald's own SQLite connection (rusqlite) for the
//! group commit, used from the committer's thread with no hop per
//! statement; delivery claims and attempt records run on it too, one
//! blocking-pool task per transaction ([`Direct::write`]), so its page
//! cache stays warm.
//!
//! Through sqlx each statement is a round trip to sqlx's worker thread
//! (and rows come back one message each); a group commit of a dozen
//! statements paid two dozen thread hand-offs, each waiting for a core
//! while the gRPC workers held both. Here the committer calls SQLite
//! directly, and each statement is prepared once and kept
//! (`prepare_cached`), so a group is BEGIN, a few indexed lookups and
//! inserts per event, and COMMIT, all on one thread.
//!
//! The committer therefore runs on a thread of its own (see
//! `ingest::Ingestor::new`): these calls block it, never a runtime worker.
//!
//! Checkpoints (copying the WAL back into the database file, with an
//! fsync of the file) run on a thread of their own, on a connection of
//! their own, after commits, so no group waits for one; the writers'
//! automatic checkpoint stays only as a backstop for a WAL that grows past
//! [`BACKSTOP_PAGES`] anyway.
//!
//! Ingest groups commit with `synchronous = FULL`: an OK only once the WAL
//! is synced. Claims and attempt records commit with `NORMAL`: written to
//! the WAL, made durable by the next group's sync or checkpoint, and no
//! thread waits for the disk on their account (see [`SyncMode`]).
//!
//! This connection and the sqlx writer pool take turns through one
//! in-process lock (`WriterState::turn`), so SQLite never sees two writers
//! at once and nobody waits in SQLite's busy handler. The promises of
//! `writer` hold here too: `BEGIN IMMEDIATE` / `COMMIT` statements, and a
//! connection whose transaction failed or was dropped is closed (which
//! rolls back) and opened afresh for the next group.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::OwnedMutexGuard;

use super::writer::WriterState;
use super::StoreError;

/// WAL pages past which a writer checkpoints by itself: the checkpoint
/// thread normally keeps the WAL far smaller.
pub(super) const BACKSTOP_PAGES: u32 = 8192;

/// The least time between two background checkpoints.
const CHECKPOINT_PACE: Duration = Duration::from_millis(200);

/// Where the ingest connection opens, and the one it keeps between groups.
#[derive(Debug)]
pub(super) struct Direct {
    path: PathBuf,
    state: Arc<WriterState>,
    /// The connection between transactions (`None`: open one on demand).
    idle: Mutex<Option<Opened>>,
    /// Tells the checkpoint thread a commit added to the WAL; dropping it
    /// stops the thread.
    committed: Mutex<Option<SyncSender<()>>>,
}

#[derive(Debug)]
struct Opened {
    conn: Connection,
    /// The `synchronous` setting this connection has applied.
    sync: SyncMode,
    /// The page limit this connection has applied (0: none).
    max_pages: u64,
}

impl Direct {
    /// Opens nothing yet; starts the checkpoint thread.
    pub(super) fn new(path: PathBuf, state: Arc<WriterState>) -> Self {
        let (committed, wakes) = mpsc::sync_channel(1);
        let file = path.clone();
        let started = std::thread::Builder::new()
            .name("herald-checkpoint".to_owned())
            .spawn(move || checkpoint_after_commits(&file, wakes));
        if let Err(e) = &started {
            tracing::warn!(error = %e, "no checkpoint thread; writers checkpoint by themselves");
        }
        Self {
            path,
            state,
            idle: Mutex::new(None),
            committed: Mutex::new(started.is_ok().then_some(committed)),
        }
    }

    /// Closes the idle connection and stops the checkpoint thread (after a
    /// last checkpoint).
    pub(super) fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Wakes the checkpoint thread, unless it has a wake-up pending already.
    pub(super) fn wake_checkpoint(&self) {
        if let Some(committed) = &*self.committed.lock().unwrap_or_else(|p| p.into_inner()) {
            match committed.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!(
                        "the checkpoint thread has stopped; writers checkpoint by themselves"
                    )
                }
            }
        }
    }

    fn open(&self) -> Result<Opened, StoreError> {
        let conn = open(&self.path)?;
        // A larger page cache than SQLite's 2 MiB: claims and records
        // revisit the same index pages between commits.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;",
        )?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Opened {
            conn,
            sync: SyncMode::Full,
            max_pages: 0,
        })
    }

    /// Starts a write transaction, once it is this connection's turn. It
    /// blocks the calling thread on SQLite (see the module's notes).
    pub(super) async fn begin(self: &Arc<Self>) -> Result<DirectTx, StoreError> {
        let turn = self.state.turn().await;
        self.begin_in_turn(turn, SyncMode::Full)
    }

    /// Runs `work` in a write transaction on a blocking-pool thread, so a
    /// runtime worker can call it: one hand-off for the whole transaction,
    /// not one per statement. Commits when `work` succeeds, without waiting
    /// for the disk ([`SyncMode::Normal`]): for claims and attempt records.
    pub(super) async fn write<T, F>(self: &Arc<Self>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let turn = self.state.turn().await;
        let direct = self.clone();
        tokio::task::spawn_blocking(move || {
            let tx = direct.begin_in_turn(turn, SyncMode::Normal)?;
            match work(tx.conn()) {
                Ok(done) => tx.commit().map(|()| done),
                Err(e) => Err(tx.note_failure(e)),
            }
        })
        .await
        .map_err(|e| StoreError::Shared(format!("a write stopped: {e}")))?
    }

    fn begin_in_turn(
        self: &Arc<Self>,
        turn: OwnedMutexGuard<()>,
        sync: SyncMode,
    ) -> Result<DirectTx, StoreError> {
        let first = self.try_begin(sync);
        let opened = match first {
            Err(e) if e.unwritable_reason().is_none() => {
                tracing::warn!(error = %e, "the ingest connection refused BEGIN; replacing it");
                self.try_begin(sync)
            }
            other => other,
        }
        .map_err(|e| self.state.failed(e))?;
        Ok(DirectTx {
            opened: Some(opened),
            direct: self.clone(),
            _turn: turn,
        })
    }

    fn try_begin(&self, sync: SyncMode) -> Result<Opened, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut opened = match idle {
            Some(opened) => opened,
            None => self.open()?,
        };
        let wanted = self.state.max_pages();
        if opened.max_pages != wanted {
            opened
                .conn
                .execute_batch(&WriterState::limit_statement_for(wanted))?;
            opened.max_pages = wanted;
        }
        if opened.sync != sync {
            opened.conn.prepare_cached(sync.statement())?.execute([])?;
            opened.sync = sync;
        }
        // SQLite refuses BEGIN inside a transaction: the connection is
        // verified clean. On failure it is dropped, which closes it.
        opened.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(opened)
    }
}

/// How a transaction's COMMIT reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    /// COMMIT returns once the WAL is synced: what an ack promises.
    Full,
    /// COMMIT returns once the WAL is written; the next `Full` commit's
    /// sync, or the next checkpoint's (which syncs the WAL before copying
    /// it), makes it durable. For writes nobody is answered on: a claim or
    /// an attempt record lost to a power cut means the webhook is sent
    /// again, with the same id, which at-least-once delivery allows. A
    /// process crash loses nothing: the frames are in the file.
    Normal,
}

impl SyncMode {
    fn statement(self) -> &'static str {
        match self {
            SyncMode::Full => "PRAGMA synchronous = FULL",
            SyncMode::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

/// A write transaction on the ingest connection. Dropping it without
/// [`DirectTx::commit`] closes the connection, which rolls back.
pub(super) struct DirectTx {
    /// Present until committed or given up.
    opened: Option<Opened>,
    direct: Arc<Direct>,
    _turn: OwnedMutexGuard<()>,
}

impl DirectTx {
    pub(super) fn conn(&self) -> &Connection {
        // `opened` is only taken by `commit`, which consumes the transaction.
        &self
            .opened
            .as_ref()
            .expect("an open transaction has its connection")
            .conn
    }

    /// Commits. Only an `Ok` means the writes are durable (for a
    /// [`SyncMode::Normal`] transaction: written, synced by a later commit); on
    /// any error the connection is closed, so nothing of this transaction
    /// can be committed later by accident.
    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        let Some(opened) = self.opened.take() else {
            return Err(StoreError::Shared(
                "transaction already finished".to_owned(),
            ));
        };
        // Prepared once, as every statement here: parsing BEGIN and COMMIT
        // again for each group was a few per cent of a one-event group.
        let committed = opened
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]));
        match committed {
            Ok(_) => {
                self.direct.state.succeeded();
                *self.direct.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(opened);
                self.direct.wake_checkpoint();
                Ok(())
            }
            // `opened` is dropped here: closing rolls back what is open.
            Err(e) => Err(self.direct.state.failed(e.into())),
        }
    }

    /// Notes a failure inside the transaction (for readiness); the
    /// transaction is then dropped, which closes the connection.
    pub(super) fn note_failure(&self, error: StoreError) -> StoreError {
        self.direct.state.failed(error)
    }
}

/// A read-write connection to the database file with Herald's durable
/// settings (as `SqliteStore::open` gives the sqlx connections).
fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES};"
    ))?;
    Ok(conn)
}

/// The checkpoint thread: after commits, at most every [`CHECKPOINT_PACE`],
/// copies what the WAL holds into the database file. PASSIVE: it never
/// waits for a writer or a reader, and a writer never waits for it; what a
/// reader still needs stays in the WAL for the next round.
fn checkpoint_after_commits(path: &Path, wakes: mpsc::Receiver<()>) {
    let mut conn = None;
    loop {
        let stopping = match wakes.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => false,
            Err(RecvTimeoutError::Timeout) => continue,
            // A last round for a connection that has checkpointed before.
            Err(RecvTimeoutError::Disconnected) if conn.is_some() => true,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let began = Instant::now();
        if conn.is_none() {
            conn = open(path)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot open the checkpoint connection"),
                )
                .ok();
        }
        if let Some(c) = &conn {
            if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "a background checkpoint failed; it is tried again after the next commit");
                conn = None;
            }
        }
        if stopping {
            return;
        }
        // Commits meanwhile leave one wake-up pending: the next round.
        std::thread::sleep(CHECKPOINT_PACE.saturating_sub(began.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreSettings;

    fn synchronous(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    /// Ingest groups (what an ack waits for) sync at COMMIT; claims and
    /// records, between them on the same connection, do not.
    #[tokio::test]
    async fn ingest_groups_commit_synced_and_claims_and_records_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db", dir.path().display());
        let store = super::super::SqliteStore::open(&StoreSettings::new(&url))
            .await
            .unwrap();
        let direct = store.direct.clone();
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        for _ in 0..2 {
            let tx = direct.begin().await.unwrap();
            assert_eq!(synchronous(tx.conn()).unwrap(), FULL);
            tx.commit().unwrap();
            let in_write = direct.write(synchronous).await.unwrap();
            assert_eq!(in_write, NORMAL);
        }
        store.close().await;
    }
}
