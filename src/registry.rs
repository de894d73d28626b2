//! The live set of subscriptions: those the configuration file declares and
//! those created over the admin API. Readers take a snapshot (an `Arc` of
//! the whole set, cheap to clone); a change replaces the snapshot and bumps
//! a version that the dispatcher watches to start, stop or restart lanes.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::core::subscription::Subscription;

#[derive(Clone, Debug)]
pub struct Registry {
    current: Arc<RwLock<Arc<[Subscription]>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Registry {
    pub fn new(subscriptions: Vec<Subscription>) -> Self {
        Self {
            current: Arc::new(RwLock::new(subscriptions.into())),
            version: Arc::new(watch::channel(0).0),
        }
    }

    pub fn current(&self) -> Arc<[Subscription]> {
        // The guarded value is replaced whole, never left half-written, so
        // a poisoned lock still holds a consistent snapshot.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, subscriptions: Vec<Subscription>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = subscriptions.into();
        self.version.send_modify(|v| *v += 1);
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
