//! Ingest: turns one validated event into its durable effects — the event
//! row, the new batch state, and one outbox row per matching subscription —
//! in a single transaction, then wakes the dispatcher and the watchers.
//! Events Herald raises itself (stalled, overdue) take the same path.
//!
//! Invariants kept here (DESIGN.md): an OK means committed; a repeated
//! `event_id` returns the first answer and enqueues nothing; a rejected
//! event changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::core::batch::{self, BatchRecord, TransitionError};
use crate::core::cloudevent::{self, Envelope, HERALD_SOURCE};
use crate::core::event::{BatchEvent, Event, EventType, Payload, Scope};
use crate::core::schedule::Schedule;
use crate::core::subscription::Subscription;
use crate::deliver::Wakeups;
use crate::feed::ChangeFeed;
use crate::store::{NewEvent, Store, StoreError, Tx};

/// Prefix of the ids of events Herald raises itself; callers may not use it.
pub const RAISED_PREFIX: &str = "herald:";

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
    subscriptions: Arc<[Subscription]>,
    clock: Arc<dyn Clock>,
    wakeups: Wakeups,
    feed: ChangeFeed,
}

/// One event row to write and deliver: the caller's, or one Herald raises.
struct Outgoing {
    event_id: String,
    event_type: EventType,
    source: String,
    occurred_at: DateTime<Utc>,
    scope: Scope,
    payload: String,
    fingerprint: String,
    body: Vec<u8>,
    /// False for an event that changed nothing (a repeat completion, a late
    /// start): it is stored but delivered to nobody.
    deliver: bool,
    /// The event moved a batch to a new state.
    changes_batch: bool,
}

/// What committing a set of event rows produced.
#[derive(Default)]
struct Written {
    sequences: Vec<i64>,
    deliveries: u32,
    woken: Vec<String>,
}

impl Ingestor {
    pub fn new(
        store: Store,
        subscriptions: Arc<[Subscription]>,
        clock: Arc<dyn Clock>,
        wakeups: Wakeups,
        feed: ChangeFeed,
    ) -> Self {
        Self {
            store,
            subscriptions,
            clock,
            wakeups,
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
            return Ok(crate::store::decode_reply(&prior.reply)?);
        }
        let (batch, outgoing) = self.apply(&mut tx, &event, &fingerprint).await?;
        let receipt = self.commit(tx, &outgoing, batch).await?;
        Ok(Receipt {
            new_event: true,
            ..receipt
        })
    }

    /// Moves a running batch to STALLED and raises `aggregate.batch.stalled`
    /// once. Returns false when the batch is no longer running.
    pub async fn raise_stall(
        &self,
        batch_id: &str,
        allowance: Duration,
    ) -> Result<bool, IngestError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let Some(current) = tx.load_batch(batch_id).await? else {
            return Ok(false);
        };
        let Some(stalled) = batch::stall(&current, now) else {
            return Ok(false);
        };
        tx.save_batch(&stalled).await?;
        let mut data = cloudevent::batch_data(&stalled);
        data["allowed_duration_ms"] = serde_json::json!(allowance.as_millis() as u64);
        let subject = cloudevent::batch_subject(&stalled);
        let out = raised(
            format!("{RAISED_PREFIX}stalled:{batch_id}"),
            EventType::BatchStalled,
            now,
            stalled.scope(),
            subject,
            data,
        );
        self.commit(
            tx,
            &[Outgoing {
                changes_batch: true,
                ..out
            }],
            Some(stalled),
        )
        .await?;
        Ok(true)
    }

    /// Raises `aggregate.refresh.overdue` for a schedule and marks it
    /// overdue since now, in one transaction.
    pub async fn raise_overdue(
        &self,
        schedule: &Schedule,
        last_success_at: Option<DateTime<Utc>>,
        expected_by: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.set_overdue(&schedule.name, Some(now)).await?;
        let scope = Scope {
            environment_id: Some(schedule.environment_id.clone()),
            cube_id: Some(schedule.cube_id.clone()),
            ..Scope::default()
        };
        let data = cloudevent::overdue_data(
            &schedule.name,
            &schedule.environment_id,
            &schedule.cube_id,
            last_success_at,
            expected_by,
        );
        let subject = format!(
            "environments/{}/cubes/{}",
            schedule.environment_id, schedule.cube_id
        );
        let id = format!(
            "{RAISED_PREFIX}overdue:{}:{}",
            schedule.name,
            now.timestamp_millis()
        );
        let out = raised(id, EventType::RefreshOverdue, now, scope, subject, data);
        self.commit(tx, &[out], None).await?;
        Ok(())
    }

    /// Raises `herald.delivery.dead`: a delivery exhausted its retries.
    pub async fn raise_dead_delivery(
        &self,
        subscription: &str,
        delivery_id: &str,
        event: &serde_json::Value,
        attempts: u32,
        last_error: Option<&str>,
    ) -> Result<(), IngestError> {
        let data =
            cloudevent::dead_delivery_data(subscription, delivery_id, event, attempts, last_error);
        let id = format!("{RAISED_PREFIX}dead:{delivery_id}");
        self.raise_about_subscription(id, EventType::DeliveryDead, subscription, data)
            .await
    }

    /// Raises `herald.subscription.disabled`.
    pub async fn raise_disabled(
        &self,
        subscription: &str,
        reason: &str,
    ) -> Result<(), IngestError> {
        let now = self.clock.now();
        let data = cloudevent::disabled_data(subscription, reason);
        let id = format!(
            "{RAISED_PREFIX}disabled:{subscription}:{}",
            now.timestamp_millis()
        );
        self.raise_about_subscription(id, EventType::SubscriptionDisabled, subscription, data)
            .await
    }

    async fn raise_about_subscription(
        &self,
        id: String,
        event_type: EventType,
        subscription: &str,
        data: serde_json::Value,
    ) -> Result<(), IngestError> {
        let now = self.clock.now();
        let tx = self.store.begin().await?;
        let subject = format!("subscriptions/{subscription}");
        let out = raised(id, event_type, now, Scope::default(), subject, data);
        self.commit(tx, &[out], None).await?;
        Ok(())
    }

    /// Writes the event rows and their deliveries, stores the reply with
    /// each, commits, then wakes the dispatcher lanes and the watchers.
    async fn commit(
        &self,
        mut tx: Tx,
        outgoing: &[Outgoing],
        batch: Option<BatchRecord>,
    ) -> Result<Receipt, StoreError> {
        let mut written = Written::default();
        for out in outgoing {
            self.write(&mut tx, out, &mut written).await?;
        }
        let receipt = Receipt {
            new_event: true,
            sequence: written.sequences.first().copied().unwrap_or_default(),
            batch,
            deliveries: written.deliveries,
        };
        let reply = crate::store::encode_reply(&receipt);
        for seq in &written.sequences {
            tx.set_reply(*seq, &reply).await?;
        }
        tx.commit().await?;
        if let Some(last) = written.sequences.last() {
            self.feed.publish(*last);
        }
        for name in &written.woken {
            self.wakeups.wake(name);
        }
        Ok(receipt)
    }

    async fn write(
        &self,
        tx: &mut Tx,
        out: &Outgoing,
        written: &mut Written,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let seq = tx
            .insert_event(NewEvent {
                event_id: &out.event_id,
                event_type: out.event_type.as_str(),
                source: &out.source,
                occurred_at: out.occurred_at,
                received_at: now,
                scope: &out.scope,
                payload: out.payload.clone(),
                fingerprint: &out.fingerprint,
                body: &out.body,
                changes_batch: out.changes_batch,
            })
            .await?;
        written.sequences.push(seq);
        let targets = self
            .subscriptions
            .iter()
            .filter(|s| out.deliver && s.wants(out.event_type, &out.scope));
        for sub in targets {
            if tx.enqueue_delivery(seq, &sub.name, now).await? {
                written.deliveries += 1;
                written.woken.push(sub.name.clone());
            }
        }
        Ok(())
    }

    /// Applies the event to stored state and decides what goes out: nothing
    /// for a quiet repeat, the event itself, plus `recovered` for a cube's
    /// first success after a failure.
    async fn apply(
        &self,
        tx: &mut Tx,
        event: &Event,
        fingerprint: &str,
    ) -> Result<(Option<BatchRecord>, Vec<Outgoing>), IngestError> {
        let own = |batch: Option<&BatchRecord>| Outgoing {
            event_id: event.event_id.clone(),
            event_type: event.event_type(),
            source: event.source.clone(),
            occurred_at: event.occurred_at,
            scope: event.scope(),
            payload: crate::store::encode_reply(&event.payload),
            fingerprint: fingerprint.to_owned(),
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
        tx.save_batch(&record).await?;
        let primary = Outgoing {
            deliver: applied.changed,
            changes_batch: applied.changed,
            ..own(Some(&record))
        };
        if !applied.changed {
            return Ok((Some(record), vec![primary]));
        }
        let previous = tx
            .previous_cube_outcome(&record.environment_id, &record.cube_id, &record.batch_id)
            .await?;
        let mut outgoing = vec![primary];
        if batch::is_recovery(previous, &record) {
            let id = format!("{RAISED_PREFIX}recovered:{}", event.event_id);
            outgoing.push(Outgoing {
                fingerprint: "raised".to_owned(),
                body: cloudevent::render(event, &id, EventType::BatchRecovered, Some(&record)),
                event_type: EventType::BatchRecovered,
                event_id: id,
                ..own(Some(&record))
            });
        }
        Ok((Some(record), outgoing))
    }
}

/// An event Herald raises, delivered like any other.
fn raised(
    event_id: String,
    event_type: EventType,
    now: DateTime<Utc>,
    scope: Scope,
    subject: String,
    data: serde_json::Value,
) -> Outgoing {
    let body = Envelope::new(
        &event_id,
        HERALD_SOURCE,
        event_type,
        now,
        subject,
        data.clone(),
    )
    .to_bytes();
    Outgoing {
        event_id,
        event_type,
        source: HERALD_SOURCE.to_owned(),
        occurred_at: now,
        scope,
        payload: data.to_string(),
        fingerprint: "raised".to_owned(),
        body,
        deliver: true,
        changes_batch: false,
    }
}

fn fingerprint(event: &Event) -> String {
    let json = serde_json::to_vec(event).expect("events serialize");
    let digest = Sha256::digest(json);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
