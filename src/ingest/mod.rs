//! Ingest: turns one validated event into its durable effects — the event
//! row, the new batch state, and one outbox row per matching subscription —
//! then wakes the dispatcher and the watchers. Events Herald raises itself
//! (stalled, overdue, trouble reports) take the same path.
//!
//! All writes go through one committer task that applies concurrent jobs
//! in a single transaction (group commit, each job in its own savepoint),
//! so one fsync covers many acks. A caller's answer is sent only after that
//! transaction committed.
//!
//! Invariants kept here (DESIGN.md): an OK means committed; a repeated
//! `event_id` with the same content returns the first answer and enqueues
//! nothing, with other content it is refused (an idempotency key names one
//! request); a rejected event changes nothing.

mod apply;
mod committer;
mod document;
mod idempotency;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::core::batch::{BatchRecord, TransitionError};
use crate::core::event::Event;
use crate::core::schedule::Schedule;
use crate::deliver::Wakeups;
use crate::feed::ChangeFeed;
use crate::store::{Store, StoreError};

use apply::Core;
use committer::Job;

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
    Reused(#[from] ReusedEventId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An `event_id` sent again with other content: the caller reused a key
/// (or lost track of one), and keeping either content silently would be
/// wrong, so the second is refused and the first stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event_id `{event_id}` was first used for {first_use} with other content")]
pub struct ReusedEventId {
    pub event_id: String,
    /// What the id was first used for, e.g. `aggregate.batch.started of batch b1`.
    pub first_use: String,
}

/// One unit of work for the committer.
enum Work {
    /// Boxed: an event is several times larger than any other work.
    Event(Box<Incoming>),
    Stall {
        batch_id: String,
        allowance: Duration,
    },
    Overdue {
        schedule: Schedule,
        last_success_at: Option<DateTime<Utc>>,
        expected_by: DateTime<Utc>,
    },
    DeadDelivery {
        subscription: String,
        delivery_id: String,
        event: serde_json::Value,
        attempts: u32,
        last_error: Option<String>,
        /// On an ordered lane, what the death let go (the next delivery).
        released: Option<String>,
    },
    Disabled {
        subscription: String,
        reason: String,
    },
    /// A test event for one subscription only.
    Test { subscription: String },
    /// A gate's deadline passed: (the one before it, this one).
    GateDeadline {
        gate: String,
        passed: (DateTime<Utc>, DateTime<Utc>),
    },
}

/// An event as the committer takes it, with what can be worked out before
/// its turn: on the caller's runtime worker, in parallel, rather than on
/// the committer's one thread, which every group waits for.
struct Incoming {
    event: Event,
    /// Its content digest (see [`idempotency::fingerprint`]).
    fingerprint: String,
    /// Its payload as stored (JSON), unless the committer annotates it
    /// (see `apply::annotate`).
    payload_json: String,
}

impl Incoming {
    fn new(event: Event) -> Self {
        let fingerprint = idempotency::fingerprint(&event);
        let payload_json = crate::store::to_json(&event.payload);
        Self {
            event,
            fingerprint,
            payload_json,
        }
    }
}

impl std::ops::Deref for Incoming {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// What a job produced.
enum Done {
    Receipt(Box<Receipt>),
    /// For a stall: whether the batch was still running and now stalled.
    Changed(bool),
    /// A test event's id.
    Tested(String),
}

#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
    clock: Arc<dyn Clock>,
    /// Read (never written) to prepare documents before they are queued.
    store: Store,
}

/// How many jobs the committer queues before callers wait.
const QUEUE: usize = 8192;

/// What the committer works with.
pub struct IngestParts {
    pub store: Store,
    pub registry: crate::registry::Registry,
    /// What rebuilding the registry needs (a shared store's subscriptions
    /// can change on another replica).
    pub managed: crate::registry::ManagedContext,
    pub clock: Arc<dyn Clock>,
    pub wakeups: Wakeups,
    pub feed: ChangeFeed,
    pub metrics: crate::metrics::Metrics,
    /// The dependency gates outcomes are applied to.
    pub gates: Vec<crate::core::gate::Gate>,
}

impl Ingestor {
    /// Starts the committer (a task, or on SQLite a thread).
    pub fn new(parts: IngestParts) -> Self {
        let IngestParts {
            store,
            registry,
            managed,
            clock,
            wakeups,
            feed,
            metrics,
            gates,
        } = parts;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let core = Core {
            metrics,
            store: store.clone(),
            registry,
            managed,
            clock: clock.clone(),
            wakeups,
            feed,
            gates: gates.into(),
        };
        if store.is_shared() {
            tokio::spawn(committer::run(core, queue));
        } else {
            // SQLite's group commit runs SQLite on the committer's thread
            // (`store::sqlite::direct`): a thread of its own, so it never
            // holds up a runtime worker. It ends when the queue closes.
            std::thread::Builder::new()
                .name("herald-committer".to_owned())
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a current-thread runtime starts")
                        .block_on(committer::run(core, queue))
                })
                .expect("the committer thread starts");
        }
        Self { jobs, clock, store }
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    async fn submit(&self, work: Work) -> Result<Done, IngestError> {
        let (reply, answer) = oneshot::channel();
        let closed =
            || IngestError::Store(StoreError::Shared("the committer has stopped".to_owned()));
        self.jobs
            .send(Job { work, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Ingests one event. A project document is prepared first, outside
    /// the committer (see [`document`]).
    pub async fn ingest(&self, mut event: Event) -> Result<Receipt, IngestError> {
        document::prepare(&self.store, &mut event).await?;
        let work = Work::Event(Box::new(Incoming::new(event)));
        match self.submit(work).await? {
            Done::Receipt(receipt) => Ok(*receipt),
            _ => unreachable!("an event job answers with a receipt"),
        }
    }

    /// Moves a running batch to STALLED and raises `aggregate.batch.stalled`
    /// once. Returns false when the batch is no longer running.
    pub async fn raise_stall(
        &self,
        batch_id: &str,
        allowance: Duration,
    ) -> Result<bool, IngestError> {
        let work = Work::Stall {
            batch_id: batch_id.to_owned(),
            allowance,
        };
        Ok(matches!(self.submit(work).await?, Done::Changed(true)))
    }

    /// Raises `aggregate.refresh.overdue` and marks the schedule overdue.
    pub async fn raise_overdue(
        &self,
        schedule: &Schedule,
        last_success_at: Option<DateTime<Utc>>,
        expected_by: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let work = Work::Overdue {
            schedule: schedule.clone(),
            last_success_at,
            expected_by,
        };
        self.submit(work).await.map(|_| ())
    }

    /// Raises `herald.delivery.dead`: a delivery exhausted its retries.
    pub async fn raise_dead_delivery(
        &self,
        subscription: &str,
        delivery_id: &str,
        event: &serde_json::Value,
        attempts: u32,
        last_error: Option<&str>,
        released: Option<&str>,
    ) -> Result<(), IngestError> {
        let work = Work::DeadDelivery {
            subscription: subscription.to_owned(),
            delivery_id: delivery_id.to_owned(),
            event: event.clone(),
            attempts,
            last_error: last_error.map(str::to_owned),
            released: released.map(str::to_owned),
        };
        self.submit(work).await.map(|_| ())
    }

    /// Sends `herald.subscription.test` to one subscription (whatever its
    /// filter); returns the event id.
    pub async fn raise_test(&self, subscription: &str) -> Result<String, IngestError> {
        let work = Work::Test {
            subscription: subscription.to_owned(),
        };
        match self.submit(work).await? {
            Done::Tested(id) => Ok(id),
            _ => Ok(String::new()),
        }
    }

    /// Judges a gate's passed deadline (the one before it, this one):
    /// raises `aggregate.gate.missed` unless the gate opened between them.
    /// Returns whether it was missed.
    pub async fn judge_gate_deadline(
        &self,
        gate: &str,
        passed: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<bool, IngestError> {
        let work = Work::GateDeadline {
            gate: gate.to_owned(),
            passed,
        };
        Ok(matches!(self.submit(work).await?, Done::Changed(true)))
    }

    /// Raises `herald.subscription.disabled`.
    pub async fn raise_disabled(
        &self,
        subscription: &str,
        reason: &str,
    ) -> Result<(), IngestError> {
        let work = Work::Disabled {
            subscription: subscription.to_owned(),
            reason: reason.to_owned(),
        };
        self.submit(work).await.map(|_| ())
    }
}
