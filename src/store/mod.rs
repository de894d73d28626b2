//! All SQL lives here, behind one interface: the schema, the ingest
//! transaction, the outbox claims and attempt records, batch queries. The
//! rest of the code speaks in domain types (`types`) and never sees a query
//! or knows which database it talks to.
//!
//! Two backends, each with its own SQL and its own migrations folder:
//! `sqlite` (one file, the embedded default) and `postgres` (one database
//! shared by any number of Herald replicas). [`Store`] is an enum over the
//! two rather than a trait object: the set of backends is closed and known
//! at compile time, calls are dispatched statically with no boxed futures
//! on the ingest path, and a backend can add what only it needs (leases,
//! notifications) without widening a trait every other backend must
//! implement. The `delegate!` lists below are the whole seam: a method
//! missing from a backend is a compile error, not a runtime surprise.

mod console;
pub mod migrate;
mod portable;
mod postgres;
mod rows;
mod sqlite;
mod types;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::config::StoreSettings;
use crate::core::batch::{BatchRecord, BatchState};
use crate::core::document::StoredDocument;
use crate::core::email::AlertState;
use crate::core::event::{EnvironmentEvent, SchemaEvent};
use crate::core::gate::GateRecord;
use crate::core::silence::Silence;
use crate::core::subscription::DeliveryOrder;

pub use postgres::{
    masked_url, PgStore, CHANGES_CHANNEL, DELIVERIES_CHANNEL, SUBSCRIPTIONS_CHANNEL,
};
pub use sqlite::{SqliteStore, WriteTx};
pub use types::{
    AttemptRecord, AttemptRow, BatchChange, BatchFilter, BatchPage, ClaimedDelivery,
    DeliveryFilter, DeliveryRow, DeliveryState, DeliveryUpdate, ManagedSubscription, NewDelivery,
    NewEvent, PendingDelivery, PriorEvent, Pruned, Reminder, ScheduleState, ScrapeGauges,
    SnapshotPage, SnapshotRest, StoredSecret,
};
pub use types::{BatchEventRow, CubeLatest, ProjectVersion, SubscriptionHealth};
pub use types::{Claim, ClaimRequest};

/// Herald's failure to talk to its database: never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the ingest connection, which calls SQLite directly.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    /// The database named by the settings cannot be used (the URL is
    /// shown with its password masked).
    #[error("cannot use the database at {url}: {reason}")]
    Connect { url: String, reason: String },
}

impl StoreError {
    /// Why the database cannot take writes now, when that is the failure:
    /// a condition of the machine that passes, not a fault in Herald.
    pub fn unwritable_reason(&self) -> Option<&str> {
        let db = match self {
            StoreError::Unwritable(reason) => return Some(reason),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                return sqlite_unwritable(e.extended_code)
            }
            StoreError::Database(sqlx::Error::Database(db)) => db,
            StoreError::Database(sqlx::Error::Io(_)) => return Some("an I/O error"),
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                return Some("the database did not answer in time")
            }
            StoreError::Database(sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)) => {
                return Some("the database connection failed")
            }
            _ => return None,
        };
        if db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            return postgres_unwritable(db.code()?.as_ref());
        }
        sqlite_unwritable(db.code()?.parse::<i32>().ok()?)
    }

    /// A conflict with a concurrent transaction on another replica (a
    /// unique key taken meanwhile, a deadlock, a serialization failure):
    /// the same work retried sees the other's result.
    pub fn is_conflict(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        matches!(db.code().as_deref(), Some("23505" | "40001" | "40P01"))
            && db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
    }

    /// The same failure for every job of a group commit: the kind is kept
    /// (an unwritable store stays retryable), the cause as text.
    pub fn to_shared(&self) -> StoreError {
        match self.unwritable_reason() {
            Some(reason) => StoreError::Unwritable(reason.to_owned()),
            None => StoreError::Shared(self.to_string()),
        }
    }

    pub(crate) fn is_pool_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::PoolClosed | sqlx::Error::PoolTimedOut)
        )
    }
}

/// Herald's database, whichever backend holds it.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx(TxBackend);

enum TxBackend {
    Sqlite(sqlite::Tx),
    Postgres(postgres::Tx),
}

/// Forwards each listed method to the backend in use.
macro_rules! delegate {
    (Store: $( $(#[$doc:meta])* async fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $( $(#[$doc])* pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match &self.backend {
                    Backend::Sqlite(s) => s.$name($($arg),*).await,
                    Backend::Postgres(p) => p.$name($($arg),*).await,
                }
            } )*
        }
    };
    (Tx: $( $(#[$doc:meta])* async fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Tx {
            $( $(#[$doc])* pub async fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                match &mut self.0 {
                    TxBackend::Sqlite(t) => t.$name($($arg),*).await,
                    TxBackend::Postgres(t) => t.$name($($arg),*).await,
                }
            } )*
        }
    };
}

impl Store {
    /// Opens the store `url` names with default settings (tests, tools).
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::connect(&StoreSettings::new(url)).await
    }

    /// Opens (creating if missing) the store the settings name and applies
    /// pending migrations.
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        let backend = if settings.is_postgres() {
            Backend::Postgres(PgStore::connect(settings).await?)
        } else {
            Backend::Sqlite(SqliteStore::open(settings).await?)
        };
        Ok(Store { backend })
    }

    /// Whether several Herald processes may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The PostgreSQL backend, when that is the one in use: for what only
    /// a shared store does (notifications, leadership leases).
    pub fn postgres(&self) -> Option<&PgStore> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    /// Starts the write transaction in which a group of events is ingested.
    /// On SQLite its statements run on the calling thread (the committer's
    /// own; see `store::sqlite::direct`), so call it from nowhere else.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx(match &self.backend {
            Backend::Sqlite(s) => TxBackend::Sqlite(s.begin().await?),
            Backend::Postgres(p) => TxBackend::Postgres(p.begin().await?),
        }))
    }

    /// Why writes are failing, while they are: the last write transaction
    /// failed for a condition of the machine (full, read-only, unreachable)
    /// and none has committed since.
    pub fn write_failure(&self) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(s) => s.write_failure(),
            Backend::Postgres(p) => p.write_failure(),
        }
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}

impl Tx {
    /// Commits; only an `Ok` means the writes are durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            TxBackend::Sqlite(t) => t.commit().await,
            TxBackend::Postgres(t) => t.commit().await,
        }
    }

    /// Records why the transaction failed before its commit (so readiness
    /// knows a full store); dropping the transaction then rolls it back.
    pub fn note_failure(&self, error: StoreError) -> StoreError {
        match &self.0 {
            TxBackend::Sqlite(t) => t.note_failure(error),
            TxBackend::Postgres(t) => t.note_failure(error),
        }
    }
}

delegate! { Store:
    /// Limits the database to about `max_bytes` (`None`: no limit); a full
    /// database refuses writes as a full disk does (SQLite; tests use it).
    async fn limit_size(&self, max_bytes: Option<u64>) -> Result<(), StoreError>;
    /// Tries a write transaction of 64 KiB, so readiness can see the store
    /// take writes again without waiting for traffic.
    async fn probe_write(&self) -> Result<(), StoreError>;
    /// Records the subscriptions the configuration declares. A disabled
    /// subscription whose target changed is enabled again. Returns the
    /// names that remain disabled.
    async fn sync_subscriptions(&self, subscriptions: &[(String, String)]) -> Result<Vec<String>, StoreError>;
    /// Why the subscription is disabled, if it is.
    async fn subscription_disabled(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Leases up to `request.limit` due deliveries of one subscription:
    /// only the heads of an ordered lane, only as many as its rate limit
    /// allows now (the bucket is spent in the same transaction).
    async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError>;
    /// How long the subscription's work has waited for its rate limit.
    async fn rate_limit_waited(&self, subscription: &str, now: DateTime<Utc>) -> Result<Duration, StoreError>;
    /// Records attempts and moves their deliveries on, releasing the
    /// leases, all in one transaction. An update only applies while `owner`
    /// still holds the lease; the attempt is recorded either way.
    async fn record_attempts(&self, owner: &str, attempts: &[(AttemptRecord, DeliveryUpdate)], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// How many deliveries are pending, and when the oldest was enqueued.
    async fn outbox_gauges(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError>;
    /// Backlog by subscription, running and stalled batches, each cube's
    /// last success (for `/metrics`).
    async fn scrape_gauges(&self) -> Result<ScrapeGauges, StoreError>;
    /// Whether the database answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Gives back leases this owner still holds (at shutdown), so the rows
    /// are due at once for whoever runs next.
    async fn release_leases(&self, owner: &str, ids: &[String]) -> Result<(), StoreError>;
    /// When the subscription's earliest pending delivery falls due (or its
    /// lease expires), if it has any; in an ordered lane, heads only.
    async fn next_due_at(&self, subscription: &str, order: DeliveryOrder) -> Result<Option<DateTime<Utc>>, StoreError>;
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError>;
    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError>;
    /// Makes deliveries due now, whatever their state. A lease still held
    /// (an attempt in flight) is left alone; the row is picked up after it.
    async fn make_due(&self, ids: &[String], now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Every event Herald received in `[since, until)`, oldest first, as
    /// (sequence, parsed envelope) — what replay filters by subscription.
    async fn events_received(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Vec<(i64, serde_json::Value)>, StoreError>;
    /// Makes (event, subscription) deliveries due now: existing rows are
    /// reset, missing ones created. Returns how many.
    async fn replay(&self, subscription: &str, seqs: &[i64], now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// The ids of dead deliveries, of one subscription or all.
    async fn dead_deliveries(&self, subscription: Option<&str>) -> Result<Vec<String>, StoreError>;
    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError>;
    /// The subscription's pending deliveries that are not leased, oldest
    /// first, when at least one of them is due (else none): a group is
    /// mailed only with all its deliveries, so the caller needs those that
    /// wait for a retry too.
    async fn pending_deliveries(&self, subscription: &str, now: DateTime<Utc>) -> Result<Vec<PendingDelivery>, StoreError>;
    /// Leases the given deliveries (those still free) to `owner`; returns
    /// the ids it got.
    async fn claim_ids(&self, ids: &[String], owner: &str, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
    async fn email_group_sent(&self, rule: &str, group: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    async fn email_alert_states(&self, rule: &str) -> Result<HashMap<String, AlertState>, StoreError>;
    /// Records that a group was mailed at `now`, telling its recipients
    /// about these alerts (key, firing).
    async fn record_mailed(&self, rule: &str, group: &str, alerts: &[(String, bool)], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Stores a new silence.
    async fn create_silence(&self, silence: &Silence) -> Result<(), StoreError>;
    /// Silences not over at `now` (every one, with `expired`), by start.
    async fn list_silences(&self, expired: bool, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError>;
    /// Silences in their window at `now`: what dispatch checks.
    async fn active_silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError>;
    /// Ends a silence at `now`; `None` when there is no such silence.
    async fn expire_silence(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Silence>, StoreError>;
    /// Schedules reminders of an email rule's firing alerts.
    async fn set_reminders(&self, rule: &str, reminders: &[Reminder]) -> Result<(), StoreError>;
    /// Forgets the reminders of alerts that resolved.
    async fn clear_reminders(&self, rule: &str, keys: &[String]) -> Result<(), StoreError>;
    /// An email rule's reminders by alert key: (delivery id, firing since).
    async fn email_reminders(&self, rule: &str) -> Result<HashMap<String, (String, DateTime<Utc>)>, StoreError>;
    /// Makes every reminder due at `now` due as a delivery again; returns
    /// the rules to wake.
    async fn fire_reminders(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
    /// The Message-ID of a group's first mail, which its later mails answer.
    async fn email_group_thread(&self, rule: &str, group: &str) -> Result<Option<String>, StoreError>;
    /// Makes `message_id` the group's first mail, unless it has one (call
    /// after `record_mailed`, which creates the group).
    async fn start_email_thread(&self, rule: &str, group: &str, message_id: &str) -> Result<(), StoreError>;
    /// A project's newest stored document (its event id, and the document
    /// compressed), read outside the writer.
    async fn latest_document(&self, project_id: &str) -> Result<Option<(String, StoredDocument)>, StoreError>;
    /// A project document in its stored (compressed) form.
    async fn stored_document(&self, event_id: &str) -> Result<Option<StoredDocument>, StoreError>;
    /// A project document, decompressed whole.
    async fn document(&self, event_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn managed_subscriptions(&self) -> Result<Vec<ManagedSubscription>, StoreError>;
    /// The version of the managed subscriptions, bumped with each change
    /// (PostgreSQL; always 0 on SQLite).
    async fn registry_version(&self) -> Result<i64, StoreError>;
    /// Inserts or replaces a managed subscription.
    async fn save_managed(&self, sub: &ManagedSubscription, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Deletes a managed subscription and fails its pending deliveries;
    /// returns how many were failed.
    async fn delete_managed(&self, name: &str, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Disables (with a reason) or enables a subscription.
    async fn set_disabled(&self, name: &str, reason: Option<&str>, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Every batch in RUNNING state.
    async fn running_batches(&self) -> Result<Vec<BatchRecord>, StoreError>;
    /// For each (environment, cube): the durations of its latest `limit`
    /// successful batches whose start Herald saw, newest first (a cube
    /// without any is absent). One statement for up to [`CHUNK`] cubes, each
    /// cube an indexed lookup: the monitor asks once per check, not once
    /// per running batch.
    async fn recent_durations(&self, cubes: &[(&str, &str)], limit: usize) -> Result<HashMap<(String, String), Vec<Duration>>, StoreError>;
    /// When the cube last finished a successful batch.
    async fn last_success_at(&self, environment_id: &str, cube_id: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records the configured schedules; tracking of a new one (or one that
    /// now names another cube) begins at `now`.
    async fn sync_schedules(&self, schedules: &[(String, String, String)], now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn schedule_state(&self, name: &str) -> Result<Option<ScheduleState>, StoreError>;
    /// Clears a schedule's overdue mark (its refresh succeeded).
    async fn clear_overdue(&self, name: &str) -> Result<(), StoreError>;
    async fn get_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// Batches matching `filter`, newest first (by when they began, then
    /// id), starting strictly after `after`.
    async fn list_batches(&self, filter: &BatchFilter, page_size: usize, after: Option<(i64, String)>) -> Result<BatchPage, StoreError>;
    /// The earliest batch of a cube begun at or after `after` (in any
    /// environment when `environment_id` is `None`).
    async fn first_batch_after(&self, environment_id: Option<&str>, cube_id: &str, after: DateTime<Utc>) -> Result<Option<BatchRecord>, StoreError>;
    /// The sequence number of the newest event (0 when there is none).
    async fn last_seq(&self) -> Result<i64, StoreError>;
    /// The first page of a watch's snapshot: of the newest `limit` batches
    /// matching `filter`, the `page` oldest, and where the rest begins.
    async fn first_snapshot_page(&self, filter: &BatchFilter, limit: usize, page: usize) -> Result<SnapshotPage, StoreError>;
    /// The next page of a watch's snapshot, as the batches stand now.
    async fn next_snapshot_page(&self, filter: &BatchFilter, rest: SnapshotRest, page: usize) -> Result<SnapshotPage, StoreError>;
    /// Batch changes after `after_seq` matching `filter`, oldest first.
    async fn batch_changes(&self, filter: &BatchFilter, after_seq: i64, limit: usize) -> Result<Vec<BatchChange>, StoreError>;
    /// How many events are stored (for tests and diagnostics).
    async fn count_events(&self) -> Result<i64, StoreError>;
    /// Finished deliveries (delivered, failed, dead) that finished before
    /// `cutoff`, with their attempts.
    async fn prune_deliveries(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<Pruned, StoreError>;
    /// Events received before `cutoff` that no delivery, no schema log
    /// entry and no kept document refers to. (A project's newest documents
    /// are kept whatever their age — the next publish is compared with the
    /// latest — so their events stay too; see [`Store::prune_documents`].)
    async fn prune_events(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<Pruned, StoreError>;
    /// Project documents beyond the newest `keep` of their project.
    async fn prune_documents(&self, keep: u32, limit: u32) -> Result<Pruned, StoreError>;
    /// Batches that last changed before `cutoff`.
    async fn prune_batches(&self, cutoff: DateTime<Utc>, limit: u32) -> Result<Pruned, StoreError>;
    /// Gives up to `pages` free pages back to the file system (the database
    /// uses incremental auto-vacuum; freed pages are reused either way).
    async fn release_free_pages(&self, pages: u32) -> Result<(), StoreError>;
    /// Every stored gate's record, by name.
    async fn gate_records(&self) -> Result<HashMap<String, GateRecord>, StoreError>;
    /// Starts tracking the configured gates not tracked yet, from `now`.
    async fn track_gates(&self, names: &[String], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// The newest batch of every cube, with the cube's last success (the
    /// console's overview and `herald status`).
    async fn latest_batches(&self) -> Result<Vec<CubeLatest>, StoreError>;
    /// Per subscription with deliveries: what finished since `since`, the
    /// backlog, the dead and the newest error.
    async fn subscription_health(&self, since: DateTime<Utc>) -> Result<Vec<SubscriptionHealth>, StoreError>;
    /// A batch's events, in the order Herald received them.
    async fn batch_events(&self, batch_id: &str) -> Result<Vec<BatchEventRow>, StoreError>;
    /// The deliveries the events of these batches caused, each with its
    /// batch id, in event order.
    async fn batch_deliveries(&self, batch_ids: &[String]) -> Result<Vec<(String, DeliveryRow)>, StoreError>;
    /// Stored project documents' events, newest first per project.
    async fn project_versions(&self) -> Result<Vec<ProjectVersion>, StoreError>;
    /// Records a console session by the digest of its token (and drops
    /// expired ones).
    async fn create_session(&self, digest: &str, token_name: &str, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Result<(), StoreError>;
    /// The token name a live session signed in with.
    async fn session_token(&self, digest: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError>;
    async fn delete_session(&self, digest: &str) -> Result<(), StoreError>;
}

delegate! { Tx:
    /// Serializes this transaction with any other, on any replica, that
    /// touches one of `keys` (event ids, batch ids, cubes), until it ends.
    /// A no-op on SQLite, whose single writer serializes everything.
    async fn lock_keys(&mut self, keys: &[String]) -> Result<(), StoreError>;
    async fn save_environment(&mut self, env: &EnvironmentEvent, at: DateTime<Utc>) -> Result<(), StoreError>;
    async fn append_schema_log(&mut self, seq: i64, schema: &SchemaEvent, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// The stored events among `event_ids`, by id.
    async fn find_events(&mut self, event_ids: &[&str]) -> Result<HashMap<String, PriorEvent>, StoreError>;
    /// The stored batches among `batch_ids`, by id.
    async fn load_batches(&mut self, batch_ids: &[&str]) -> Result<HashMap<String, BatchRecord>, StoreError>;
    /// For each (environment, cube): when its latest finished batch
    /// finished, and how.
    async fn cube_outcomes(&mut self, cubes: &[(&str, &str)]) -> Result<HashMap<(String, String), (i64, BatchState)>, StoreError>;
    /// As `Store::registry_version`, as this transaction sees it.
    async fn registry_version(&mut self) -> Result<i64, StoreError>;
    async fn disabled_subscriptions(&mut self) -> Result<HashSet<String>, StoreError>;
    /// Upserts the batches (each id at most once).
    async fn save_batches(&mut self, records: &[&BatchRecord]) -> Result<(), StoreError>;
    /// Inserts the event rows; returns each one's sequence number by id.
    async fn insert_events(&mut self, events: &[NewEvent<'_>]) -> Result<HashMap<String, i64>, StoreError>;
    /// Enqueues deliveries of (event seq, subscription).
    async fn insert_deliveries(&mut self, deliveries: &[NewDelivery<'_>], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Stores a project document in its compressed form.
    async fn insert_document(&mut self, event_id: &str, document: &StoredDocument) -> Result<(), StoreError>;
    /// The event id of a project's newest stored document.
    async fn latest_document_id(&mut self, project_id: &str) -> Result<Option<String>, StoreError>;
    /// A stored document, compressed, as this transaction sees it.
    async fn stored_document(&mut self, event_id: &str) -> Result<Option<StoredDocument>, StoreError>;
    async fn set_overdue(&mut self, name: &str, since: Option<DateTime<Utc>>) -> Result<(), StoreError>;
    /// The stored gate records among `names`, as this transaction sees them.
    async fn load_gates(&mut self, names: &[&str]) -> Result<HashMap<String, GateRecord>, StoreError>;
    /// Upserts gate records.
    async fn save_gates(&mut self, gates: &[(&str, &GateRecord)], now: DateTime<Utc>) -> Result<(), StoreError>;
}

/// SQLite's result codes for a database that cannot take writes now.
fn sqlite_unwritable(extended_code: i32) -> Option<&'static str> {
    // SQLite reports extended codes; the primary code is the low byte.
    Some(match extended_code & 0xff {
        5 | 6 => "the database is locked by another process",
        8 => "the database is read-only",
        10 => "the disk reported an I/O error",
        13 => "the database or its disk is full",
        14 => "the database file cannot be opened",
        _ => return None,
    })
}

/// PostgreSQL's SQLSTATE classes for a server that cannot take writes now.
fn postgres_unwritable(code: &str) -> Option<&'static str> {
    Some(match code {
        "53100" => "the database server's disk is full",
        c if c.starts_with("53") => "the database server is out of resources",
        "25006" => "the database is read-only (a standby?)",
        c if c.starts_with("57P") => "the database server is shutting down or restarting",
        c if c.starts_with("08") => "the database connection failed",
        _ => return None,
    })
}

/// A stored document, decompressed whole.
pub(crate) fn decompress(document: Option<StoredDocument>) -> Result<Option<Vec<u8>>, StoreError> {
    document
        .map(|document| {
            document
                .to_vec()
                .map_err(|e| StoreError::Corrupt(format!("decompressing a document: {e}")))
        })
        .transpose()
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
