//! The console's queries on PostgreSQL (their text is in `store/console.rs`).

use sqlx::Postgres;

use super::PgStore;

crate::store::console::console_queries!(
    PgStore,
    Postgres,
    read: |s| &s.pool,
    write: |s| &s.pool
);
