//! Ingest: turns one validated event into its durable effects — the event
//! row, the new batch state, and one outbox row per matching subscription —
//! in a single transaction, then wakes the dispatcher.
//!
//! Invariants kept here (DESIGN.md): an OK means committed; a repeated
//! `event_id` returns the first answer and enqueues nothing; a rejected
//! event changes nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::core::batch::{self, BatchRecord, TransitionError};
use crate::core::cloudevent;
use crate::core::event::{BatchEvent, Event, EventType, Payload, Scope};
use crate::core::subscription::WebhookSubscription;
use crate::deliver::Dispatcher;
use crate::feed::ChangeFeed;
use crate::store::{NewEvent, Store, StoreError, Tx};

/// Event ids Herald gives the events it raises itself; callers may not use
/// them.
pub const RAISED_PREFIX: &str = "herald:recovered:";

/// The answer to an ingest call; stored, and returned again to repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// False when the `event_id` was seen before.
    #[serde(skip, default)]
    pub new_event: bool,
    pub sequence: i64,
    pub batch: Option<BatchRecord>,
    pub deliveries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Ingestor {
    store: Store,
    subscriptions: Arc<[WebhookSubscription]>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    feed: ChangeFeed,
}

/// One event to deliver: the caller's, or one Herald raises from it.
struct Outgoing {
    event_id: String,
    event_type: EventType,
    body: Vec<u8>,
    /// False for an event that changed nothing (a repeat completion, a late
    /// start): it is stored but delivered to nobody.
    deliver: bool,
    /// The event moved a batch to a new state.
    changes_batch: bool,
}

impl Ingestor {
    pub fn new(
        store: Store,
        subscriptions: Arc<[WebhookSubscription]>,
        clock: Arc<dyn Clock>,
        dispatcher: Dispatcher,
        feed: ChangeFeed,
    ) -> Self {
        Self {
            store,
            subscriptions,
            clock,
            dispatcher,
            feed,
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub async fn ingest(&self, event: Event) -> Result<Receipt, IngestError> {
        let fingerprint = fingerprint(&event);
        let mut tx = self.store.begin().await?;
        if let Some(prior) = tx.find_event(&event.event_id).await? {
            if prior.fingerprint != fingerprint {
                // The engine's retry is the same event by definition of the
                // key; a differing body (say a regenerated timestamp) still
                // gets the first answer, but someone should know.
                tracing::warn!(event_id = %event.event_id, "event_id repeated with different content; returning the first answer");
            }
            let receipt: Receipt = crate::store::decode_reply(&prior.reply)?;
            return Ok(receipt);
        }
        let (batch, outgoing) = self.apply(&mut tx, &event).await?;
        let mut receipt = Receipt {
            new_event: true,
            sequence: 0,
            batch,
            deliveries: 0,
        };
        let mut woken = Vec::new();
        let mut sequences = Vec::new();
        let scope = event.scope();
        for (i, out) in outgoing.iter().enumerate() {
            let seq = self
                .insert_event(&mut tx, &event, out, &fingerprint, i == 0)
                .await?;
            if i == 0 {
                receipt.sequence = seq;
            }
            sequences.push(seq);
            let targets = self.matching(out.event_type, &scope);
            for sub in targets.filter(|_| out.deliver) {
                if tx
                    .enqueue_delivery(seq, &sub.name, self.clock.now())
                    .await?
                {
                    receipt.deliveries += 1;
                    woken.push(sub.name.clone());
                }
            }
        }
        let reply = crate::store::encode_reply(&receipt);
        for seq in &sequences {
            tx.set_reply(*seq, &reply).await?;
        }
        tx.commit().await?;
        if let Some(last) = sequences.last() {
            self.feed.publish(*last);
        }
        for name in woken {
            self.dispatcher.wake(&name);
        }
        Ok(receipt)
    }

    /// Applies the event to stored state and decides what goes out: nothing
    /// for a quiet repeat, the event itself, plus `recovered` for a cube's
    /// first success after a failure.
    async fn apply(
        &self,
        tx: &mut Tx,
        event: &Event,
    ) -> Result<(Option<BatchRecord>, Vec<Outgoing>), IngestError> {
        let own = |batch: Option<&BatchRecord>| Outgoing {
            event_id: event.event_id.clone(),
            event_type: event.event_type(),
            body: cloudevent::render(event, &event.event_id, event.event_type(), batch),
            deliver: true,
            changes_batch: false,
        };
        match &event.payload {
            Payload::Batch(b) => self.apply_batch(tx, event, b, own).await,
            Payload::Environment(e) => {
                tx.save_environment(e, event.occurred_at).await?;
                Ok((None, vec![own(None)]))
            }
            Payload::Schema(_) => Ok((None, vec![own(None)])),
        }
    }

    async fn apply_batch(
        &self,
        tx: &mut Tx,
        event: &Event,
        b: &BatchEvent,
        own: impl Fn(Option<&BatchRecord>) -> Outgoing,
    ) -> Result<(Option<BatchRecord>, Vec<Outgoing>), IngestError> {
        let current = tx.load_batch(&b.batch.batch_id).await?;
        let applied = batch::apply(current.as_ref(), b, event.occurred_at)?;
        let record = applied.record;
        let mut outgoing = vec![own(Some(&record))];
        outgoing[0].changes_batch = applied.changed;
        if !applied.changed {
            outgoing[0].deliver = false;
            tx.save_batch(&record).await?;
            return Ok((Some(record), outgoing));
        }
        let previous = tx
            .previous_cube_outcome(&record.environment_id, &record.cube_id, &record.batch_id)
            .await?;
        if batch::is_recovery(previous, &record) {
            let recovered_id = format!("{}{}", RAISED_PREFIX, event.event_id);
            outgoing.push(Outgoing {
                body: cloudevent::render(
                    event,
                    &recovered_id,
                    EventType::BatchRecovered,
                    Some(&record),
                ),
                event_id: recovered_id,
                event_type: EventType::BatchRecovered,
                deliver: true,
                changes_batch: false,
            });
        }
        tx.save_batch(&record).await?;
        Ok((Some(record), outgoing))
    }

    async fn insert_event(
        &self,
        tx: &mut Tx,
        event: &Event,
        out: &Outgoing,
        fingerprint: &str,
        primary: bool,
    ) -> Result<i64, StoreError> {
        let seq = tx
            .insert_event(NewEvent {
                event_id: &out.event_id,
                event_type: out.event_type.as_str(),
                event,
                received_at: self.clock.now(),
                // Raised events get their own fingerprint so that they can
                // never be mistaken for a caller's repeat.
                fingerprint: if primary { fingerprint } else { "raised" },
                body: &out.body,
                reply: String::new(),
                changes_batch: out.changes_batch,
            })
            .await?;
        if let (Payload::Schema(schema), true) = (&event.payload, primary) {
            tx.append_schema_log(seq, schema, event.occurred_at).await?;
        }
        Ok(seq)
    }

    fn matching<'a>(
        &'a self,
        event_type: EventType,
        scope: &'a Scope,
    ) -> impl Iterator<Item = &'a WebhookSubscription> + 'a {
        self.subscriptions
            .iter()
            .filter(move |s| s.wants(event_type, scope))
    }
}

fn fingerprint(event: &Event) -> String {
    let json = serde_json::to_vec(event).expect("events serialize");
    let digest = Sha256::digest(json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
