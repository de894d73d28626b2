//! One wake-up signal per subscription: ingest (and Herald's own raised
//! events) pull it after a commit so the subscription's lane looks at once
//! instead of at its next poll. A signal with nobody waiting is kept, so
//! none is lost between a lane's check and its wait.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Debug, Default)]
pub struct Wakeups {
    lanes: Arc<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let lanes = names
            .into_iter()
            .map(|name| (name.to_owned(), Arc::new(Notify::new())))
            .collect();
        Self {
            lanes: Arc::new(lanes),
        }
    }

    pub fn wake(&self, subscription: &str) {
        if let Some(notify) = self.lanes.get(subscription) {
            notify.notify_one();
        }
    }

    /// The signal a lane waits on.
    pub fn signal(&self, subscription: &str) -> Arc<Notify> {
        self.lanes.get(subscription).cloned().unwrap_or_default()
    }
}
