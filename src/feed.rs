//! The change feed: tells waiting readers (watch and await calls) that new
//! events were committed. It carries only the newest sequence number; the
//! store is the source of truth, so a reader that misses a wake-up still
//! finds every change on its next read.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ChangeFeed {
    tx: Arc<watch::Sender<i64>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
        }
    }
}

impl ChangeFeed {
    /// Announces that events up to `seq` are committed.
    pub fn publish(&self, seq: i64) {
        self.tx.send_if_modified(|latest| {
            let newer = seq > *latest;
            *latest = (*latest).max(seq);
            newer
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.tx.subscribe()
    }
}
