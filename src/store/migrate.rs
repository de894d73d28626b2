//! Moving an install from SQLite to PostgreSQL (`herald migrate`).
//!
//! One list, [`TABLES`], says what is copied: every table that holds
//! state, in an order where a row comes after the rows it refers to, each
//! column with its kind. It drives the copy, the emptiness check, the
//! identity sequences moved past the copied maxima, and the counts that
//! verify the result — so a table is never copied but not counted, or
//! counted but not copied.
//!
//! What the copy keeps, and why it is safe:
//! - **The source is only read**, opened read-only (never created), in one
//!   read transaction: a consistent snapshot even if a Herald still writes
//!   to it. Nothing is changed, so the SQLite install stays usable.
//! - **The target is written in one transaction**: a failure part way
//!   leaves it as it was (migrated, and otherwise empty).
//! - **Primary keys are kept** — event `seq`, attempt and schema log ids,
//!   delivery ids (the stable `webhook-id`) — so deliveries still point at
//!   their events and receivers still drop duplicates by id; afterwards
//!   each identity sequence moves past the largest copied value.
//! - **Delivery leases are not copied**: a lease names a process of the
//!   old install and means nothing to the new fleet, so every pending
//!   delivery is free to be claimed at once.

use std::collections::HashSet;

use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row, SqliteConnection};

use super::postgres::PgStore;
use super::StoreError;
use crate::config::StoreSettings;

/// How a column's values are read from SQLite and written to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    /// INTEGER 0/1 on SQLite, BOOLEAN on PostgreSQL.
    Flag,
    Bytes,
}

use Kind::{Bytes, Flag, Int, Text};

/// One table that holds state, as both schemas define it.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// The identity column whose sequence must continue past the copy.
    identity: Option<&'static str>,
    /// Rows per page: fewer where a row may weigh megabytes.
    page: i64,
}

/// Every table that holds state, parents before the rows that refer to
/// them. SQLite's `write_probe` (scratch) and PostgreSQL's `leases` (the
/// fleet's own) are not state to move.
const TABLES: &[Table] = &[
    Table {
        name: "events",
        columns: &[
            ("seq", Int),
            ("event_id", Text),
            ("event_type", Text),
            ("source", Text),
            ("occurred_at", Int),
            ("received_at", Int),
            ("environment_id", Text),
            ("project_id", Text),
            ("cube_id", Text),
            ("batch_id", Text),
            ("fingerprint", Text),
            ("payload", Text),
            ("body", Bytes),
            ("reply", Text),
            ("changes_batch", Flag),
        ],
        identity: Some("seq"),
        page: 1000,
    },
    Table {
        name: "batches",
        columns: &[
            ("batch_id", Text),
            ("environment_id", Text),
            ("project_id", Text),
            ("cube_id", Text),
            ("cube_name", Text),
            ("state", Text),
            ("started_at", Int),
            ("finished_at", Int),
            ("begun_at", Int),
            ("updated_at", Int),
            ("record", Text),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "environments",
        columns: &[
            ("environment_id", Text),
            ("name", Text),
            ("attributes", Text),
            ("deleted", Flag),
            ("updated_at", Int),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "schema_log",
        columns: &[
            ("id", Int),
            ("event_seq", Int),
            ("environment_id", Text),
            ("project_id", Text),
            ("published", Flag),
            ("catalogs", Text),
            ("cubes", Text),
            ("version", Text),
            ("occurred_at", Int),
        ],
        identity: Some("id"),
        page: 1000,
    },
    Table {
        name: "subscriptions",
        columns: &[
            ("name", Text),
            ("fingerprint", Text),
            ("disabled_at", Int),
            ("disabled_reason", Text),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "rate_buckets",
        columns: &[
            ("subscription", Text),
            ("milli_tokens", Int),
            ("refilled_at", Int),
            ("waiting_since", Int),
            ("waited_ms", Int),
        ],
        identity: None,
        page: 1000,
    },
    // `lease_owner` and `lease_until` are left out on purpose (module doc).
    Table {
        name: "deliveries",
        columns: &[
            ("id", Text),
            ("event_seq", Int),
            ("subscription", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Int),
            ("created_at", Int),
            ("finished_at", Int),
            ("last_status", Int),
            ("last_error", Text),
            ("silence_id", Text),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "attempts",
        columns: &[
            ("id", Int),
            ("delivery_id", Text),
            ("attempt", Int),
            ("started_at", Int),
            ("duration_ms", Int),
            ("status_code", Int),
            ("response_excerpt", Text),
            ("error", Text),
            ("verdict", Text),
            ("replica", Text),
        ],
        identity: Some("id"),
        page: 1000,
    },
    Table {
        name: "schedules",
        columns: &[
            ("name", Text),
            ("environment_id", Text),
            ("cube_id", Text),
            ("baseline_at", Int),
            ("overdue_since", Int),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "gates",
        columns: &[("name", Text), ("record", Text), ("updated_at", Int)],
        identity: None,
        page: 1000,
    },
    Table {
        name: "email_groups",
        columns: &[
            ("rule", Text),
            ("group_key", Text),
            ("last_sent_at", Int),
            ("thread_id", Text),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "email_alerts",
        columns: &[
            ("rule", Text),
            ("alert_key", Text),
            ("firing", Flag),
            ("last_notified_at", Int),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "silences",
        columns: &[
            ("id", Text),
            ("environment", Text),
            ("project", Text),
            ("cube", Text),
            ("event_type", Text),
            ("starts_at", Int),
            ("ends_at", Int),
            ("created_by", Text),
            ("comment", Text),
            ("created_at", Int),
        ],
        identity: None,
        page: 1000,
    },
    Table {
        name: "email_reminders",
        columns: &[
            ("rule", Text),
            ("alert_key", Text),
            ("delivery_id", Text),
            ("firing_since", Int),
            ("remind_at", Int),
        ],
        identity: None,
        page: 1000,
    },
    // With their signing secrets: a receiver keeps verifying after the move.
    Table {
        name: "managed_subscriptions",
        columns: &[
            ("name", Text),
            ("kind", Text),
            ("spec", Text),
            ("secrets", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        identity: None,
        page: 1000,
    },
    // Project documents are megabytes each, even compressed.
    Table {
        name: "documents",
        columns: &[("event_id", Text), ("size", Int), ("compressed", Bytes)],
        identity: None,
        page: 16,
    },
    // Console sessions move too: nobody is signed out by the move.
    Table {
        name: "console_sessions",
        columns: &[
            ("digest", Text),
            ("token_name", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        identity: None,
        page: 1000,
    },
];

/// Why a copy was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the SQLite store {0} does not exist (nothing was created)")]
    MissingSource(String),
    #[error("{path} is not a Herald store, or not one this version can read: {reason}")]
    UnknownSource { path: String, reason: String },
    #[error(
        "{path} was last used by an older Herald (migrations {missing:?} not applied): \
         start this version's `herald serve` on it once to upgrade it, stop it, then migrate"
    )]
    OldSource { path: String, missing: Vec<i64> },
    #[error(
        "the target database {url} already holds Herald data ({tables}); \
         copy into an empty database, or pass --force to delete that data first"
    )]
    TargetNotEmpty { url: String, tables: String },
    #[error("copying `{table}`: {source}")]
    Copy {
        table: &'static str,
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Rows of one table on each side, counted after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: i64,
    pub target: i64,
}

/// What a copy did: the counts that verify it, table by table.
#[derive(Debug, Clone)]
pub struct MigrateReport {
    pub counts: Vec<TableCount>,
}

impl MigrateReport {
    /// The tables whose counts differ (rows written to the source during
    /// the copy, most likely: a Herald still running on it).
    pub fn mismatches(&self) -> Vec<&TableCount> {
        self.counts
            .iter()
            .filter(|c| c.source != c.target)
            .collect()
    }
}

/// Copies the SQLite store at `from` into the PostgreSQL database at `to`
/// (migrated first), then counts every table on both sides. A target that
/// already holds state is refused unless `force`, which deletes that state
/// in the copy's own transaction (so a failed copy deletes nothing).
pub async fn copy_sqlite_to_postgres(
    from: &str,
    to: &str,
    force: bool,
) -> Result<MigrateReport, MigrateError> {
    let mut source = open_source(from).await?;
    let settings = StoreSettings {
        connect_once: true,
        ..StoreSettings::new(to)
    };
    let target = PgStore::connect(&settings).await?;
    let copied = copy_all(&mut source, &target, force).await;
    let report = match copied {
        Ok(()) => count_all(&mut source, target.pool()).await,
        Err(e) => Err(e),
    };
    source.close().await.ok();
    target.close().await;
    report
}

/// Opens the SQLite store read-only, refusing a missing file (opening
/// would create an empty one) and one whose schema is not this version's.
async fn open_source(url: &str) -> Result<SqliteConnection, MigrateError> {
    let options: SqliteConnectOptions = url.parse()?;
    let path = options.get_filename().display().to_string();
    if !options.get_filename().is_file() {
        return Err(MigrateError::MissingSource(path));
    }
    let mut conn =
        SqliteConnection::connect_with(&options.read_only(true).create_if_missing(false)).await?;
    let applied: HashSet<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| MigrateError::UnknownSource {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .into_iter()
            .collect();
    let missing: Vec<i64> = sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if !missing.is_empty() {
        return Err(MigrateError::OldSource { path, missing });
    }
    Ok(conn)
}

/// Copies every table in one target transaction, reading the source in
/// one read transaction (a consistent snapshot).
async fn copy_all(
    source: &mut SqliteConnection,
    target: &PgStore,
    force: bool,
) -> Result<(), MigrateError> {
    let mut snapshot = source.begin().await?;
    let mut tx = target.pool().begin().await?;
    let occupied = occupied_tables(&mut tx).await?;
    if !occupied.is_empty() && !force {
        return Err(MigrateError::TargetNotEmpty {
            url: target.url().to_owned(),
            tables: occupied.join(", "),
        });
    }
    if !occupied.is_empty() {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        sqlx::query(&format!("TRUNCATE {} RESTART IDENTITY", names.join(", ")))
            .execute(&mut *tx)
            .await?;
    }
    for table in TABLES {
        copy_table(&mut snapshot, &mut tx, table)
            .await
            .map_err(|source| MigrateError::Copy {
                table: table.name,
                source,
            })?;
    }
    tx.commit().await?;
    snapshot.rollback().await?;
    Ok(())
}

/// The tables of [`TABLES`] that hold rows on the target, with how many.
async fn occupied_tables(
    tx: &mut sqlx::Transaction<'_, Postgres>,
) -> Result<Vec<String>, MigrateError> {
    let mut occupied = Vec::new();
    for table in TABLES {
        let n: i64 = sqlx::query_scalar(&table.count_sql())
            .fetch_one(&mut **tx)
            .await?;
        if n > 0 {
            occupied.push(format!("{} {n} rows", table.name));
        }
    }
    Ok(occupied)
}

/// Copies one table page by page (keyset on SQLite's `rowid`), then moves
/// its identity sequence past the largest copied value.
async fn copy_table(
    source: &mut SqliteConnection,
    target: &mut sqlx::Transaction<'_, Postgres>,
    table: &Table,
) -> Result<(), StoreError> {
    let select = format!(
        "SELECT rowid AS herald_rowid, {} FROM {} WHERE rowid > ? ORDER BY rowid LIMIT ?",
        table.column_list(),
        table.name
    );
    let mut after = i64::MIN;
    loop {
        let rows: Vec<SqliteRow> = sqlx::query(&select)
            .bind(after)
            .bind(table.page)
            .fetch_all(&mut *source)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("herald_rowid")?;
        let values = rows
            .iter()
            .map(|row| table.read(row))
            .collect::<Result<Vec<_>, _>>()?;
        let mut insert = table.insert(values);
        insert.build().execute(&mut **target).await?;
    }
    if let Some(column) = table.identity {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{0}', '{column}'),
                           COALESCE((SELECT MAX({column}) FROM {0}), 0) + 1, false)",
            table.name
        );
        sqlx::query(&sql).execute(&mut **target).await?;
    }
    Ok(())
}

/// Counts every table on both sides. The source is counted afresh, not in
/// the copy's snapshot: rows written meanwhile show as a difference.
async fn count_all(
    source: &mut SqliteConnection,
    target: &PgPool,
) -> Result<MigrateReport, MigrateError> {
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let sql = table.count_sql();
        counts.push(TableCount {
            table: table.name,
            source: sqlx::query_scalar(&sql).fetch_one(&mut *source).await?,
            target: sqlx::query_scalar(&sql).fetch_one(target).await?,
        });
    }
    Ok(MigrateReport { counts })
}

/// One column's value, read from SQLite as its kind says.
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Flag(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

impl Table {
    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }

    fn count_sql(&self) -> String {
        format!("SELECT COUNT(*) FROM {}", self.name)
    }

    /// A source row's values, in column order. A value of another type
    /// than the schema says is reported, not a panic.
    fn read(&self, row: &SqliteRow) -> Result<Vec<Value>, StoreError> {
        let corrupt = |column: &str, e: sqlx::Error| {
            StoreError::Corrupt(format!("{}.{column}: {e}", self.name))
        };
        self.columns
            .iter()
            .map(|&(column, kind)| {
                Ok(match kind {
                    Text => Value::Text(row.try_get(column).map_err(|e| corrupt(column, e))?),
                    Int => Value::Int(row.try_get(column).map_err(|e| corrupt(column, e))?),
                    Flag => Value::Flag(
                        row.try_get::<Option<i64>, _>(column)
                            .map_err(|e| corrupt(column, e))?
                            .map(|v| v != 0),
                    ),
                    Bytes => Value::Bytes(row.try_get(column).map_err(|e| corrupt(column, e))?),
                })
            })
            .collect()
    }

    /// One multi-row INSERT of a page (a page's parameters stay far below
    /// PostgreSQL's 65,535).
    fn insert(&self, rows: Vec<Vec<Value>>) -> QueryBuilder<'static, Postgres> {
        let mut insert = QueryBuilder::new(format!(
            "INSERT INTO {} ({}) ",
            self.name,
            self.column_list()
        ));
        insert.push_values(rows, |mut columns, row| {
            for value in row {
                match value {
                    Value::Text(v) => columns.push_bind(v),
                    Value::Int(v) => columns.push_bind(v),
                    Value::Flag(v) => columns.push_bind(v),
                    Value::Bytes(v) => columns.push_bind(v),
                };
            }
        });
        insert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of every SQLite table that holds state is copied, but
    /// the delivery leases; a column added by a later migration and
    /// forgotten here fails this test.
    #[tokio::test]
    async fn the_table_list_covers_the_sqlite_schema() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name NOT IN ('_sqlx_migrations', 'write_probe')
             ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut listed: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        listed.sort_unstable();
        assert_eq!(tables, listed);
        for table in TABLES {
            let columns: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT name FROM pragma_table_info('{}')",
                table.name
            ))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let copied: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
            let skipped: Vec<&str> = columns
                .iter()
                .map(String::as_str)
                .filter(|c| !copied.contains(c))
                .collect();
            let expected_skips: &[&str] = match table.name {
                "deliveries" => &["lease_owner", "lease_until"],
                _ => &[],
            };
            assert_eq!(
                skipped, expected_skips,
                "columns of {} not copied",
                table.name
            );
            assert_eq!(
                columns.len(),
                copied.len() + skipped.len(),
                "{}",
                table.name
            );
        }
    }
}
