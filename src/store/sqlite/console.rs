//! The console's queries on SQLite (their text is in `store/console.rs`):
//! reads on the reader pool, writes through the single writer.

use sqlx::Sqlite;

use super::SqliteStore;

crate::store::console::console_queries!(
    SqliteStore,
    Sqlite,
    read: |s| &s.reader,
    write: |s| &*s.writer.pool().await
);
