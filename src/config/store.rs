//! `[store]`: where Herald keeps its state. `sqlite://PATH` (the default:
//! one file, nothing to install) or `postgres://USER@HOST:PORT/DB` (one
//! database shared by several Herald replicas).

use std::time::Duration;

use serde::Deserialize;

use super::{count_in, duration_in, invalid, ConfigError};

pub const DEFAULT_STORE_URL: &str = "sqlite://herald.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sqlite://PATH` (relative to the working directory),
    /// `sqlite::memory:` (a file in a private temporary directory), or
    /// `postgres://…`.
    pub url: String,
    /// Connections in the pool (SQLite: readers beside the one writer).
    pub max_connections: u32,
    /// PostgreSQL: longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// Longest a caller waits for a free connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL: `disable`, `prefer`, `require`, `verify-ca` or
    /// `verify-full` (otherwise the URL's `sslmode`, else `prefer`).
    pub sslmode: Option<String>,
    /// This process's name among replicas (`[server] replica_name`): on its
    /// attempts, leases and metrics.
    pub replica: String,
    /// Fail at once when the database cannot be reached, instead of
    /// retrying with backoff (tools such as `herald migrate`).
    pub connect_once: bool,
}

impl StoreSettings {
    /// Defaults for the store at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            max_connections: if is_postgres(url) { 16 } else { 4 },
            statement_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
            sslmode: None,
            replica: default_replica_name(),
            connect_once: false,
        }
    }

    pub fn is_postgres(&self) -> bool {
        is_postgres(&self.url)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The machine's host name, or `herald` when it has none.
pub fn default_replica_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "herald".to_owned())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    max_connections: Option<usize>,
    statement_timeout: Option<String>,
    acquire_timeout: Option<String>,
    sslmode: Option<String>,
}

const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

pub(super) fn parse_store(
    raw: RawStore,
    url: String,
    replica: String,
) -> Result<StoreSettings, ConfigError> {
    let url = parse_store_url(&url)?;
    let defaults = StoreSettings::new(&url);
    if let Some(mode) = &raw.sslmode {
        if !SSL_MODES.contains(&mode.as_str()) {
            return Err(invalid(
                "store.sslmode",
                format!("`{mode}` is not one of {}", SSL_MODES.join(", ")),
            ));
        }
    }
    let connections = count_in(
        "store.max_connections",
        raw.max_connections,
        defaults.max_connections as usize,
        2..=1000,
    )?;
    Ok(StoreSettings {
        max_connections: connections as u32,
        statement_timeout: duration_in(
            "store.statement_timeout",
            raw.statement_timeout,
            "30s",
            Duration::from_millis(100)..=Duration::from_secs(3600),
        )?,
        acquire_timeout: duration_in(
            "store.acquire_timeout",
            raw.acquire_timeout,
            "5s",
            Duration::from_millis(100)..=Duration::from_secs(600),
        )?,
        sslmode: raw.sslmode,
        replica,
        connect_once: false,
        url,
    })
}

fn parse_store_url(url: &str) -> Result<String, ConfigError> {
    if url.starts_with("sqlite:") || is_postgres(url) {
        Ok(url.to_owned())
    } else {
        Err(invalid(
            "store.url",
            format!(
                "`{}` is not supported; use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
                crate::store::masked_url(url)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, url: &str) -> Result<StoreSettings, ConfigError> {
        parse_store(toml::from_str(text).unwrap(), url.to_owned(), "r1".into())
    }

    #[test]
    fn postgres_settings_are_read_and_checked() {
        let s = parse(
            "max_connections = 8\nstatement_timeout = \"5s\"\nsslmode = \"require\"",
            "postgres://herald@db:5432/herald",
        )
        .unwrap();
        assert!(s.is_postgres());
        assert_eq!(s.max_connections, 8);
        assert_eq!(s.statement_timeout, Duration::from_secs(5));
        assert_eq!(s.sslmode.as_deref(), Some("require"));
        assert_eq!(s.replica, "r1");
        let e = parse("sslmode = \"sometimes\"", "postgres://db/x").unwrap_err();
        assert!(e.to_string().contains("store.sslmode"), "{e}");
        let e = parse("max_connections = 1", "postgres://db/x").unwrap_err();
        assert!(e.to_string().contains("store.max_connections"), "{e}");
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_showing_a_password() {
        let e = parse("", "mysql://root:hunter2@db/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.url") && !e.contains("hunter2"), "{e}");
    }
}
