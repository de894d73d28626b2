//! One wake-up signal per subscription: ingest (and Herald's own raised
//! events) pull it after a commit so the subscription's lane looks at once
//! instead of at its next poll. A signal with nobody waiting is kept, so
//! none is lost between a lane's check and its wait. Signals are made on
//! first use, so subscriptions created at run time have theirs too.
//!
//! Deliveries a commit hands straight to their lane (see `handoff`) need no
//! wake-up: the same value carries the open inboxes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use super::handoff::Handoff;

#[derive(Clone, Debug, Default)]
pub struct Wakeups {
    lanes: Arc<RwLock<HashMap<String, Arc<Notify>>>>,
    handoff: Handoff,
}

impl Wakeups {
    /// The lanes that take deliveries straight from ingest's commits.
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    pub fn wake(&self, subscription: &str) {
        self.signal(subscription).notify_one();
    }

    /// Wakes every lane (after a change that may concern any of them).
    pub fn wake_all(&self) {
        for notify in self
            .lanes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            notify.notify_one();
        }
    }

    /// The signal a lane waits on.
    pub fn signal(&self, subscription: &str) -> Arc<Notify> {
        // Entries are only ever added: a poisoned lock still holds a usable map.
        if let Some(notify) = self
            .lanes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription)
        {
            return notify.clone();
        }
        self.lanes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(subscription.to_owned())
            .or_default()
            .clone()
    }
}
