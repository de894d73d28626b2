//! What a replica shares with the others when several Herald processes run
//! on one PostgreSQL database (see `store::postgres`):
//!
//! - [`Leadership`]: work that must happen once — the stall and overdue
//!   monitor, each email rule's sender, each Git archive's writer, pruning
//!   — runs on the replica holding that work's lease. Leases are renewed
//!   in the background every [`RENEW_EVERY`] and last [`LEASE_TTL`]; a
//!   replica that dies loses them after that, one stopped by SIGTERM gives
//!   them back at once.
//! - [`listen`]: the notifications other replicas' commits send. A new
//!   delivery wakes its subscription's lane here, a batch change wakes this
//!   replica's watchers (they re-read the store), a subscription changed
//!   over the API reloads the registry. If the notification connection
//!   drops, everything is woken once when it is back, and a slow poll
//!   catches any change meanwhile: notifications make things fast, never
//!   correct.
//!
//! On SQLite there is one process: it leads everything and hears its own
//! commits in-process, so none of this runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::deliver::Wakeups;
use crate::feed::ChangeFeed;
use crate::registry::{ManagedContext, Registry};
use crate::store::{PgStore, Store};

/// How long a lease lasts without renewal: the longest a dead replica's
/// work waits before another takes it over.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often held (and wanted) leases are renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often, without notifications, batch changes are looked for anyway.
const CHANGE_POLL: Duration = Duration::from_secs(1);

/// Who leads which piece of work. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    store: PgStore,
    holder: String,
    /// Each wanted lease, and until when this replica surely holds it.
    leases: Mutex<HashMap<String, Option<Instant>>>,
}

impl Leadership {
    /// For a store only this process uses: it leads everything.
    pub fn sole() -> Self {
        Self { shared: None }
    }

    /// Leadership shared through `store`, when several replicas may run.
    pub fn for_store(store: &Store, replica: &str) -> Self {
        match store.postgres() {
            Some(pg) => Self {
                shared: Some(Arc::new(Shared {
                    store: pg.clone(),
                    holder: format!("{replica}/{}", uuid::Uuid::now_v7().simple()),
                    leases: Mutex::new(HashMap::new()),
                })),
            },
            None => Self::sole(),
        }
    }

    /// Whether this replica leads `work` now. The first call for a name
    /// asks the database; later calls answer from the background renewal.
    pub async fn leads(&self, work: &str) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let known = shared.lock().get(work).copied();
        match known {
            Some(until) => until.is_some_and(|until| until > Instant::now()),
            None => {
                shared.lock().insert(work.to_owned(), None);
                shared.renew(work).await
            }
        }
    }

    /// Renews the wanted leases until `shutdown`, then gives them back.
    pub fn spawn(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        let shared = self.shared.clone()?;
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = shutdown.cancelled() => break,
                }
                let wanted: Vec<String> = shared.lock().keys().cloned().collect();
                for work in wanted {
                    shared.renew(&work).await;
                }
            }
            let held: Vec<String> = shared.lock().drain().map(|(name, _)| name).collect();
            for work in held {
                if let Err(e) = shared.store.release_lease(&work, &shared.holder).await {
                    tracing::warn!(work, error = %e, "giving a lease back failed; it expires instead");
                }
            }
        }))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Instant>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes or renews one lease; returns whether this replica holds it.
    async fn renew(&self, work: &str) -> bool {
        let asked = Instant::now();
        let held = match self.store.hold_lease(work, &self.holder, LEASE_TTL).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(work, error = %e, "renewing a lease failed");
                // Keep what is still surely held; it runs out by itself.
                return self
                    .lock()
                    .get(work)
                    .copied()
                    .flatten()
                    .is_some_and(|until| until > Instant::now());
            }
        };
        let before = self.lock().get(work).copied().flatten().is_some();
        if held != before {
            tracing::info!(work, leader = held, "leadership changed");
        }
        // Counted from before the request: the database's clock started
        // the lease no earlier than that.
        let until = held.then(|| asked + LEASE_TTL - RENEW_EVERY / 2);
        if let Some(entry) = self.lock().get_mut(work) {
            *entry = until;
        }
        held
    }
}

/// What the notification listener updates on this replica.
pub struct Listening {
    pub store: Store,
    pub wakeups: Wakeups,
    pub feed: ChangeFeed,
    pub registry: Registry,
    pub context: ManagedContext,
}

/// Listens for other replicas' commits until `shutdown` (PostgreSQL only).
pub fn listen(parts: Listening, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let pg = parts.store.postgres()?.clone();
    Some(tokio::spawn(async move {
        let mut seen = parts.store.last_seq().await.unwrap_or(0);
        let mut listener = None;
        loop {
            if listener.is_none() {
                match pg.listen().await {
                    Ok(l) => {
                        listener = Some(l);
                        // Whatever was missed while not listening.
                        parts.wake_everything().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for other replicas; polling")
                    }
                }
            }
            let received = async {
                match listener.as_mut() {
                    Some(l) => l.try_recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHANGE_POLL) => {
                    seen = parts.publish_changes(&pg, seen).await;
                    continue;
                }
                received = received => match received {
                    Ok(Some(note)) => match note.channel() {
                        crate::store::DELIVERIES_CHANNEL => parts.wake_lanes(note.payload()),
                        crate::store::CHANGES_CHANNEL => seen = parts.publish_changes(&pg, seen).await,
                        crate::store::SUBSCRIPTIONS_CHANNEL => parts.reload_subscriptions(true).await,
                        _ => {}
                    },
                    // The connection was lost and is being re-established.
                    Ok(None) => parts.wake_everything().await,
                    Err(e) => {
                        tracing::warn!(error = %e, "the notification connection failed; reconnecting");
                        listener = None;
                        tokio::select! {
                            _ = tokio::time::sleep(RENEW_EVERY) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                },
            }
        }
    }))
}

impl Listening {
    fn wake_lanes(&self, payload: &str) {
        if payload == "*" {
            self.wakeups.wake_all();
            return;
        }
        for name in payload.split(',') {
            self.wakeups.wake(name);
        }
    }

    /// Tells this replica's watchers about batch changes after `seen`;
    /// returns the newest sequence number published.
    async fn publish_changes(&self, pg: &PgStore, mut seen: i64) -> i64 {
        loop {
            match pg.changed_scopes(seen, 500).await {
                Ok(changes) if changes.is_empty() => return seen,
                Ok(changes) => {
                    let more = changes.len() == 500;
                    seen = changes.last().map_or(seen, |(seq, _)| *seq);
                    let scopes: Vec<_> = changes.into_iter().map(|(_, scope)| scope).collect();
                    self.feed.publish(&scopes);
                    if !more {
                        return seen;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading other replicas' changes failed");
                    return seen;
                }
            }
        }
    }

    /// Reloads the registry. After a notification (`changed`) it is always
    /// replaced, so lanes also re-read which subscriptions are disabled;
    /// otherwise only when the set differs, since replacing restarts every
    /// lane.
    async fn reload_subscriptions(&self, changed: bool) {
        let reloaded = self
            .registry
            .reload(&self.store, &self.context, changed)
            .await;
        if let Err(e) = reloaded {
            tracing::warn!(error = %e, "reloading subscriptions failed");
        }
    }

    async fn wake_everything(&self) {
        self.reload_subscriptions(false).await;
        self.wakeups.wake_all();
        self.feed.publish_all();
    }
}
