//! Where a scenario's data lives. Every run of every scenario gets a
//! [`Place`] of its own: a temporary directory and, when the bench runs on
//! PostgreSQL (`--store postgres://…`), a fresh database created on that
//! URL's server and dropped when the place is — so no run sees another's
//! rows, and a run that fails leaves nothing behind.

use std::path::Path;

use anyhow::{bail, Context};
use sqlx::Connection;
use tempfile::TempDir;

use crate::store::masked_url;

/// The store the scenarios run on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `herald.db` in each place's temporary directory.
    Sqlite,
    /// A database per place on the server of `url` (which must let its
    /// user create and drop databases).
    Postgres { url: String },
}

impl Backend {
    /// From `--store`: none means SQLite; a `postgres://` URL is checked
    /// for a reachable server before any scenario starts.
    pub async fn from_arg(store: Option<&str>) -> anyhow::Result<Backend> {
        let Some(url) = store else {
            return Ok(Backend::Sqlite);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "--store takes a postgres:// URL, not {}; without --store every scenario runs on a temporary SQLite file",
                masked_url(url)
            );
        }
        let admin = sqlx::PgConnection::connect(url)
            .await
            .with_context(|| format!("--store: cannot reach PostgreSQL at {}", masked_url(url)))?;
        admin.close().await?;
        Ok(Backend::Postgres {
            url: url.to_owned(),
        })
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL: for targets that
    /// differ between the two.
    pub fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres { .. } => postgres,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite => "a temporary SQLite file per run".to_owned(),
            Backend::Postgres { url } => format!(
                "a fresh PostgreSQL database per run on the server of {}",
                masked_url(url)
            ),
        }
    }
}

/// A temporary directory, and on PostgreSQL a database of its own.
pub struct Place {
    dir: TempDir,
    database: Option<Database>,
}

struct Database {
    /// The `--store` URL, through which the database is created and dropped.
    admin: String,
    name: String,
}

impl Place {
    pub async fn new(backend: &Backend) -> anyhow::Result<Place> {
        let dir = tempfile::tempdir()?;
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres { url } => Some(Database::create(url).await?),
        };
        Ok(Place { dir, database })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `[store] url` Herald is given.
    pub fn store_url(&self) -> String {
        match &self.database {
            Some(db) => with_database(&db.admin, &db.name),
            None => format!("sqlite://{}/herald.db", self.dir.path().display()),
        }
    }
}

impl Database {
    async fn create(admin: &str) -> anyhow::Result<Database> {
        let name = format!("herald_bench_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the bench database {name}"))?;
        conn.close().await?;
        Ok(Database {
            admin: admin.to_owned(),
            name,
        })
    }
}

impl Drop for Place {
    /// Drops the database, forcing out connections a failed run may have
    /// left open. Drop runs inside the bench's runtime, so the statement
    /// runs on a thread and runtime of its own.
    fn drop(&mut self) {
        let Some(Database { admin, name }) = self.database.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, anyhow::Error>(())
            })
        });
        if let Ok(Err(e)) = dropped.join() {
            eprintln!("bench: dropping a bench database failed: {e:#}");
        }
    }
}

/// `url` pointing at database `name` instead of its own, its user, host
/// and parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgresql://u:p@db/main?sslmode=disable", "b1"),
            "postgresql://u:p@db/b1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://db", "b1"), "postgres://db/b1");
    }
}
