//! The change feed: who waits for committed batch changes (watch and await
//! calls), and waking exactly those a commit concerns. It also counts the
//! streams each caller holds open, so that waiting cannot exhaust Herald.
//!
//! Waiters are indexed by the most selective scope their filter names
//! (batch, then cube, project, environment); a commit wakes the waiters
//! under each scope it changed, plus those that filter on nothing. A waiter
//! re-reads the store when woken — the store is the source of truth, so a
//! wake-up for a scope the waiter's full filter then excludes costs one
//! read, and one that arrives while the waiter is busy is kept (a permit),
//! never lost.
//!
//! Nothing here outlives its caller: a [`Waiter`] and a [`StreamSlot`]
//! remove themselves when dropped, leaving no entry behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::core::event::Scope;

/// What a waiter wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    Batch(String),
    Cube(String),
    Project(String),
    Environment(String),
    /// Every batch change.
    Everything,
}

impl Interest {
    /// The most selective scope among those given.
    pub fn narrowest(
        environment_id: Option<&str>,
        project_id: Option<&str>,
        cube_id: Option<&str>,
        batch_id: Option<&str>,
    ) -> Interest {
        let owned = |s: &str| s.to_owned();
        batch_id
            .map(|b| Interest::Batch(owned(b)))
            .or_else(|| cube_id.map(|c| Interest::Cube(owned(c))))
            .or_else(|| project_id.map(|p| Interest::Project(owned(p))))
            .or_else(|| environment_id.map(|e| Interest::Environment(owned(e))))
            .unwrap_or(Interest::Everything)
    }

    /// Every interest a change in `scope` concerns.
    fn concerned_by(scope: &Scope) -> impl Iterator<Item = Interest> + '_ {
        let keyed = [
            scope.batch_id.clone().map(Interest::Batch),
            scope.cube_id.clone().map(Interest::Cube),
            scope.project_id.clone().map(Interest::Project),
            scope.environment_id.clone().map(Interest::Environment),
        ];
        keyed
            .into_iter()
            .flatten()
            .chain(std::iter::once(Interest::Everything))
    }
}

/// How many streams (watch and await calls) may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub total: usize,
    pub per_caller: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            total: 1000,
            per_caller: 1000,
        }
    }
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error(
        "{0} watch and await streams are open, the most Herald allows \
         (server.max_watch_streams); retry later"
    )]
    Total(usize),
    #[error(
        "{caller} has {open} watch and await streams open, the most one token may \
         (server.max_watch_streams_per_token); close one or retry later"
    )]
    PerCaller { caller: String, open: usize },
}

#[derive(Debug, Default)]
struct Index {
    next_id: u64,
    waiters: HashMap<Interest, HashMap<u64, Arc<Notify>>>,
    /// Open streams per caller (token name; "" without authentication).
    streams: HashMap<String, usize>,
    open_streams: usize,
}

#[derive(Clone, Debug, Default)]
pub struct ChangeFeed {
    index: Arc<Mutex<Index>>,
    limits: StreamLimits,
}

impl ChangeFeed {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            index: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index holds counts and wakers only; a panic elsewhere while
        // it was held cannot leave it half-updated in a harmful way.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces committed changes to batches in these scopes.
    pub fn publish(&self, changed: &[Scope]) {
        let index = self.lock();
        if index.waiters.is_empty() {
            return;
        }
        for scope in changed {
            for interest in Interest::concerned_by(scope) {
                for notify in index
                    .waiters
                    .get(&interest)
                    .into_iter()
                    .flat_map(|w| w.values())
                {
                    notify.notify_one();
                }
            }
        }
    }

    /// Wakes every waiter (changes may have been missed: each re-reads).
    pub fn publish_all(&self) {
        let index = self.lock();
        for notify in index.waiters.values().flat_map(|w| w.values()) {
            notify.notify_one();
        }
    }

    /// Registers a waiter; changes committed from now on that concern
    /// `interest` wake it.
    pub fn subscribe(&self, interest: Interest) -> Waiter {
        let notify = Arc::new(Notify::new());
        let mut index = self.lock();
        index.next_id += 1;
        let id = index.next_id;
        index
            .waiters
            .entry(interest.clone())
            .or_default()
            .insert(id, notify.clone());
        Waiter {
            feed: self.clone(),
            interest,
            id,
            notify,
        }
    }

    /// Takes one of the caller's stream slots, or says which limit is hit.
    pub fn open_stream(&self, caller: &str) -> Result<StreamSlot, StreamRefused> {
        let mut index = self.lock();
        if index.open_streams >= self.limits.total {
            return Err(StreamRefused::Total(index.open_streams));
        }
        let open = index.streams.get(caller).copied().unwrap_or_default();
        if open >= self.limits.per_caller {
            return Err(StreamRefused::PerCaller {
                caller: match caller {
                    "" => "this caller".to_owned(),
                    name => format!("token `{name}`"),
                },
                open,
            });
        }
        index.streams.insert(caller.to_owned(), open + 1);
        index.open_streams += 1;
        Ok(StreamSlot {
            feed: self.clone(),
            caller: caller.to_owned(),
        })
    }

    /// How many waiters are registered (for tests and diagnostics).
    pub fn waiters(&self) -> usize {
        self.lock().waiters.values().map(HashMap::len).sum()
    }

    /// How many streams are open, and for how many callers.
    pub fn open_streams(&self) -> (usize, usize) {
        let index = self.lock();
        (index.open_streams, index.streams.len())
    }
}

/// A registered waiter; dropping it unregisters it.
#[derive(Debug)]
pub struct Waiter {
    feed: ChangeFeed,
    interest: Interest,
    id: u64,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Completes once a change this waiter cares about was committed since
    /// it last completed (or since it subscribed).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut index = self.feed.lock();
        if let Some(waiters) = index.waiters.get_mut(&self.interest) {
            waiters.remove(&self.id);
            if waiters.is_empty() {
                index.waiters.remove(&self.interest);
            }
        }
    }
}

/// One open stream of a caller; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    feed: ChangeFeed,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut index = self.feed.lock();
        index.open_streams = index.open_streams.saturating_sub(1);
        if let Some(open) = index.streams.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                index.streams.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(environment: &str, cube: &str, batch: &str) -> Scope {
        Scope {
            environment_id: Some(environment.into()),
            cube_id: Some(cube.into()),
            batch_id: Some(batch.into()),
            ..Scope::default()
        }
    }

    /// Whether the waiter holds a wake-up, without waiting for one.
    fn woken(waiter: &Waiter) -> bool {
        let notified = waiter.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable()
    }

    #[test]
    fn a_commit_wakes_only_the_waiters_it_concerns() {
        let feed = ChangeFeed::default();
        let sales = feed.subscribe(Interest::Cube("sales".into()));
        let stock = feed.subscribe(Interest::Cube("stock".into()));
        let b1 = feed.subscribe(Interest::Batch("b-1".into()));
        let prod = feed.subscribe(Interest::Environment("prod".into()));
        let all = feed.subscribe(Interest::Everything);
        feed.publish(&[scope("prod", "sales", "b-2")]);
        assert!(woken(&sales) && woken(&prod) && woken(&all));
        assert!(!woken(&stock) && !woken(&b1));
    }

    #[test]
    fn a_wake_up_while_busy_is_kept_not_lost() {
        let feed = ChangeFeed::default();
        let waiter = feed.subscribe(Interest::Cube("sales".into()));
        feed.publish(&[scope("prod", "sales", "b-1")]);
        feed.publish(&[scope("prod", "sales", "b-2")]);
        assert!(woken(&waiter));
    }

    #[test]
    fn dropped_waiters_and_slots_leave_nothing_behind() {
        let feed = ChangeFeed::new(StreamLimits {
            total: 3,
            per_caller: 2,
        });
        let waiters: Vec<_> = (0..3)
            .map(|i| feed.subscribe(Interest::Cube(format!("c{i}"))))
            .collect();
        let a = feed.open_stream("reader-a").unwrap();
        let b = feed.open_stream("reader-a").unwrap();
        assert!(matches!(
            feed.open_stream("reader-a"),
            Err(StreamRefused::PerCaller { open: 2, .. })
        ));
        let c = feed.open_stream("reader-b").unwrap();
        assert_eq!(
            feed.open_stream("reader-c").unwrap_err(),
            StreamRefused::Total(3)
        );
        drop((waiters, a, b, c));
        assert_eq!(feed.waiters(), 0);
        assert_eq!(feed.open_streams(), (0, 0));
        assert!(feed.lock().waiters.is_empty());
    }

    #[test]
    fn the_narrowest_scope_of_a_filter_indexes_it() {
        assert_eq!(
            Interest::narrowest(Some("prod"), None, Some("sales"), None),
            Interest::Cube("sales".into())
        );
        assert_eq!(
            Interest::narrowest(None, None, None, None),
            Interest::Everything
        );
    }
}
