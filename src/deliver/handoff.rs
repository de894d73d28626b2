//! The hand-off: deliveries claimed by the very commit that creates them.
//!
//! A lane that sends in parallel (`ordering = "none"`, no rate limit, a
//! webhook target, a store of its own: on a shared store `max_in_flight`
//! is the fleet's, counted by the claim) opens an inbox here with its free
//! slots. The committer
//! reserves a slot for each delivery it is about to insert, writes the row
//! already leased to that lane (in the same transaction as the event), and
//! once the commit returns passes the delivery straight to the lane — no
//! claim transaction, no read of the row back. A delivery for a full, closed
//! or ordered lane is inserted unleased as before, and the lane's claim
//! finds it.
//!
//! Slots are one count per lane, shared by claims and hand-offs: a slot is
//! taken before a send and given back when its response arrives, so the
//! lane never has more than `max_in_flight` requests out. A reservation
//! whose commit failed gives its slot back when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::ClaimedDelivery;

/// The slots of one lane: how many of its `max_in_flight` are taken.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    taken: AtomicUsize,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            taken: AtomicUsize::new(0),
        }
    }

    /// How many there are.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Slots not taken now.
    pub fn free(&self) -> usize {
        self.max.saturating_sub(self.taken.load(Ordering::Acquire))
    }

    /// Takes one slot if one is free.
    pub fn try_take(&self) -> bool {
        self.take_up_to(1) == 1
    }

    /// Takes up to `count` free slots at once; returns how many it took.
    pub fn take_up_to(&self, count: usize) -> usize {
        let mut took = 0;
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                took = count.min(self.max.saturating_sub(taken));
                Some(taken + took)
            });
        took
    }

    /// Gives back `count` slots taken and not used.
    pub fn give_back_many(&self, count: usize) {
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                Some(taken.saturating_sub(count))
            });
    }

    pub fn give_back(&self) {
        self.give_back_many(1);
    }
}

/// What a lane accepts hand-offs on.
#[derive(Debug)]
pub struct Inbox {
    /// The lease holder written on handed-off rows (the dispatcher's).
    pub owner: String,
    /// How long a handed-off row's lease lasts from its commit.
    pub lease: Duration,
    pub slots: Arc<Slots>,
    deliveries: mpsc::UnboundedSender<ClaimedDelivery>,
}

impl Inbox {
    /// An inbox and the receiving end its lane reads.
    pub fn open(
        owner: String,
        lease: Duration,
        slots: Arc<Slots>,
    ) -> (Arc<Inbox>, mpsc::UnboundedReceiver<ClaimedDelivery>) {
        let (deliveries, receiver) = mpsc::unbounded_channel();
        let inbox = Inbox {
            owner,
            lease,
            slots,
            deliveries,
        };
        (Arc::new(inbox), receiver)
    }
}

/// The open inboxes, by subscription.
#[derive(Clone, Debug, Default)]
pub struct Handoff {
    inboxes: Arc<RwLock<HashMap<String, Arc<Inbox>>>>,
}

impl Handoff {
    /// Opens `subscription`'s inbox (replacing an older lane's).
    pub fn register(&self, subscription: &str, inbox: Arc<Inbox>) {
        self.inboxes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subscription.to_owned(), inbox);
    }

    /// Closes `subscription`'s inbox if it is still `inbox`.
    pub fn unregister(&self, subscription: &str, inbox: &Arc<Inbox>) {
        let mut inboxes = self.inboxes.write().unwrap_or_else(|p| p.into_inner());
        if inboxes
            .get(subscription)
            .is_some_and(|open| Arc::ptr_eq(open, inbox))
        {
            inboxes.remove(subscription);
        }
    }

    /// A slot of `subscription`'s lane for one delivery, if its lane takes
    /// hand-offs and has one free.
    pub fn reserve(&self, subscription: &str) -> Option<Reservation> {
        let inbox = self
            .inboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(subscription)
            .cloned()?;
        // Built only once the slot is taken: a dropped one gives it back.
        inbox.slots.try_take().then(|| Reservation {
            inbox,
            delivered: false,
        })
    }
}

/// One reserved slot. Handing it over passes the slot to the lane; dropping
/// it unused gives the slot back.
#[derive(Debug)]
pub struct Reservation {
    inbox: Arc<Inbox>,
    delivered: bool,
}

impl Reservation {
    pub fn owner(&self) -> &str {
        &self.inbox.owner
    }

    pub fn lease(&self) -> Duration {
        self.inbox.lease
    }

    /// Passes the committed, leased delivery to its lane. A lane that
    /// closed meanwhile never sees it: its lease runs out and a claim
    /// takes the row then.
    pub fn hand_over(mut self, delivery: ClaimedDelivery) {
        if self.inbox.deliveries.send(delivery).is_ok() {
            self.delivered = true;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.delivered {
            self.inbox.slots.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str) -> ClaimedDelivery {
        ClaimedDelivery {
            id: id.to_owned(),
            subscription: "s".to_owned(),
            event_type: "batch.succeeded".to_owned(),
            attempts: 0,
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn reservations_stop_at_the_lanes_free_slots_and_come_back_when_dropped() {
        let handoff = Handoff::default();
        assert!(handoff.reserve("s").is_none(), "no inbox, no hand-off");
        let slots = Arc::new(Slots::new(2));
        let (inbox, mut lane) = Inbox::open("me".into(), Duration::from_secs(5), slots.clone());
        handoff.register("s", inbox.clone());
        let first = handoff.reserve("s").expect("a free slot");
        let second = handoff.reserve("s").expect("a second free slot");
        assert!(handoff.reserve("s").is_none(), "both slots are taken");
        drop(second);
        assert_eq!(slots.free(), 1, "an unused reservation gives its slot back");
        first.hand_over(delivery("msg_1"));
        assert_eq!(slots.free(), 1, "a handed-over slot stays taken");
        assert_eq!(lane.try_recv().expect("handed over").id, "msg_1");
        handoff.unregister("s", &inbox);
        assert!(
            handoff.reserve("s").is_none(),
            "a closed inbox takes nothing"
        );
    }

    #[test]
    fn a_closed_lane_gives_the_slot_back() {
        let handoff = Handoff::default();
        let slots = Arc::new(Slots::new(1));
        let (inbox, lane) = Inbox::open("me".into(), Duration::from_secs(5), slots.clone());
        handoff.register("s", inbox);
        let reserved = handoff.reserve("s").expect("a free slot");
        drop(lane);
        reserved.hand_over(delivery("msg_1"));
        assert_eq!(slots.free(), 1);
    }
}
