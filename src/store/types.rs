//! The store's domain types: what both backends take and return. Nothing
//! here knows SQL.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::batch::{BatchRecord, BatchState};
use crate::core::event::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// A permanent failure (a 4xx the receiver meant).
    Failed,
    /// Retries exhausted.
    Dead,
    /// Held back by a silence: finished without sending.
    Suppressed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Dead => "dead",
            DeliveryState::Suppressed => "suppressed",
        }
    }

    /// What the `state` column holds for this state: a suppressed delivery
    /// is stored finished (`delivered`) with its silence's id (the column's
    /// CHECK predates silences).
    pub(crate) fn stored(self) -> &'static str {
        match self {
            DeliveryState::Suppressed => "delivered",
            other => other.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            Self::Pending,
            Self::Delivered,
            Self::Failed,
            Self::Dead,
            Self::Suppressed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A delivery this worker holds the lease on, with what it must send.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The stable `webhook-id`.
    pub id: String,
    pub subscription: String,
    pub event_type: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub body: Vec<u8>,
}

/// One attempt's facts, as recorded in the delivery log.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// 1-based.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// Where the delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryUpdate {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
    Dead,
    /// Failed, and the subscription is disabled (410 Gone).
    DisableSubscription {
        reason: String,
    },
    /// Nothing to send (an email alert already mailed, folded into another,
    /// or resolved before anyone heard of it): done without a message.
    Suppressed,
    /// Held back by the silence with this id: done without a message, and
    /// shown as `suppressed` in the delivery log.
    Silenced {
        silence_id: String,
    },
}

impl DeliveryUpdate {
    pub(crate) fn state(&self) -> DeliveryState {
        match self {
            DeliveryUpdate::Delivered | DeliveryUpdate::Suppressed => DeliveryState::Delivered,
            DeliveryUpdate::RetryAt(_) => DeliveryState::Pending,
            DeliveryUpdate::Failed | DeliveryUpdate::DisableSubscription { .. } => {
                DeliveryState::Failed
            }
            DeliveryUpdate::Dead => DeliveryState::Dead,
            DeliveryUpdate::Silenced { .. } => DeliveryState::Suppressed,
        }
    }

    /// The silence that held the delivery back, if one did.
    pub(crate) fn silence_id(&self) -> Option<&str> {
        match self {
            DeliveryUpdate::Silenced { silence_id } => Some(silence_id),
            _ => None,
        }
    }

    /// How the attempt ended, as recorded and counted.
    pub fn verdict(&self) -> &'static str {
        match self {
            DeliveryUpdate::Delivered => "delivered",
            DeliveryUpdate::RetryAt(_) => "retry",
            DeliveryUpdate::Failed => "failed",
            DeliveryUpdate::Dead => "dead",
            DeliveryUpdate::DisableSubscription { .. } => "disabled",
            DeliveryUpdate::Suppressed | DeliveryUpdate::Silenced { .. } => "suppressed",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub subscription: Option<String>,
    pub event_id: Option<String>,
    pub state: Option<DeliveryState>,
    /// Only deliveries of events of one of these types (an event-type
    /// pattern resolved by [`crate::core::filter::event_types_matching`]);
    /// an empty list matches nothing.
    pub event_types: Option<Vec<String>>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Newest first (by event sequence, then subscription, both descending):
    /// the delivery log as people read it. False lists oldest first.
    pub newest_first: bool,
    /// Only rows before this (event sequence, subscription) position: where
    /// the previous page of a newest-first listing ended.
    pub before: Option<(i64, String)>,
    pub limit: Option<usize>,
}

/// What `/metrics` reads from the store at scrape time: a few grouped
/// statements over indexes, never a scan of the delivery log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeGauges {
    /// Pending deliveries by subscription: (subscription, count, when the
    /// oldest was created).
    pub backlog: Vec<(String, i64, DateTime<Utc>)>,
    pub running_batches: i64,
    pub stalled_batches: i64,
    /// Each cube's latest success: (environment, cube, finished at).
    pub last_success: Vec<(String, String, DateTime<Utc>)>,
}

/// A row of the delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    /// The event's sequence number: with `subscription`, the row's position.
    pub event_seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub subscription: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The silence that held it back (state `Suppressed`).
    pub silence_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub verdict: String,
    /// The Herald replica that made the attempt (unknown for attempts
    /// recorded before replicas were named).
    pub replica: Option<String>,
}

/// A pending delivery of a rule, not yet claimed.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// Later than now while the delivery waits for a retry.
    pub next_attempt_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// A stored signing secret: the `whsec_…` text, and for a rotated-out one
/// when it stops signing (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub secret: String,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ManagedSubscription {
    pub name: String,
    pub kind: String,
    pub spec: serde_json::Value,
    pub secrets: Vec<StoredSecret>,
}

/// A schedule's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    pub name: String,
    /// When Herald began tracking the schedule: the reference point until
    /// the first success.
    pub baseline_at: DateTime<Utc>,
    pub overdue_since: Option<DateTime<Utc>>,
}

/// Which batches a query or a watch is about. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchFilter {
    pub environment_id: Option<String>,
    pub project_id: Option<String>,
    pub cube_id: Option<String>,
    pub batch_id: Option<String>,
    pub state: Option<BatchState>,
    /// Batches begun at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Batches begun before this time.
    pub until: Option<DateTime<Utc>>,
}

/// A page of batches, newest (latest begun) first, and the position after
/// its last row (`None` on the last page).
#[derive(Debug, Clone)]
pub struct BatchPage {
    pub batches: Vec<BatchRecord>,
    pub next: Option<(i64, String)>,
}

/// One committed change of a batch's state, in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchChange {
    /// The event's sequence number: a watcher's resume cursor.
    pub seq: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub batch: BatchRecord,
}

/// A batch's place in "newest" order: when it began, then its id.
pub(crate) type BatchKey = (i64, String);

/// What is left of a watch's snapshot: the batches after `after`, up to
/// and including `last` (the newest matching batch when the watch began).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRest {
    pub(crate) after: BatchKey,
    pub(crate) last: BatchKey,
}

/// A page of a watch's snapshot, oldest first, read together with the
/// newest event sequence number, so the page reflects exactly the changes
/// up to `seq`.
#[derive(Debug, Clone)]
pub struct SnapshotPage {
    pub seq: i64,
    pub batches: Vec<BatchRecord>,
    pub rest: Option<SnapshotRest>,
}

/// Rows of each kind one pruning step removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub attempts: u64,
    pub events: u64,
    pub documents: u64,
    pub batches: u64,
}

impl Pruned {
    pub fn add(&mut self, other: Pruned) {
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.events += other.events;
        self.documents += other.documents;
        self.batches += other.batches;
    }
}

/// What a previous ingest of the same `event_id` stored.
#[derive(Debug, Clone)]
pub struct PriorEvent {
    pub seq: i64,
    /// The digest of its content, to tell a retry from a reused id.
    pub fingerprint: String,
    /// What it was: its type and where it applied (to name a reuse).
    pub event_type: String,
    pub scope: Scope,
    /// The first answer, without its sequence number (that is `seq`).
    pub reply: String,
}

/// An event row to insert.
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub scope: &'a Scope,
    /// The domain event as JSON (the caller's), or the raised event's data.
    pub payload: String,
    pub fingerprint: &'a str,
    pub body: &'a [u8],
    /// The answer to the caller, stored for repeats (JSON).
    pub reply: String,
    /// The event moved its batch to a new state (watchers see it).
    pub changes_batch: bool,
}

/// A delivery row to insert with its event.
pub struct NewDelivery<'a> {
    /// The stable `webhook-id` (`msg_…`).
    pub id: String,
    pub event_seq: i64,
    pub subscription: &'a str,
    /// Claimed already by the commit that creates it: the lease holder and
    /// until when (see `deliver::handoff`). `None`: pending for any claim.
    pub lease: Option<(&'a str, DateTime<Utc>)>,
}

impl NewDelivery<'_> {
    /// A fresh delivery id: time-ordered, so ids sort as they were made.
    pub fn new_id() -> String {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// When an email rule reminds its recipients of a still-firing alert: the
/// delivery to mail again, since when the alert fires, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub alert_key: String,
    pub delivery_id: String,
    pub firing_since: DateTime<Utc>,
    pub remind_at: DateTime<Utc>,
}

/// A cube as the console's overview shows it: its newest batch (by when it
/// began) and when it last succeeded.
#[derive(Debug, Clone)]
pub struct CubeLatest {
    pub batch: BatchRecord,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// How one subscription's deliveries stand, for the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionHealth {
    pub subscription: String,
    /// Deliveries that finished since the window began, and how many of
    /// them were delivered.
    pub recent_finished: i64,
    pub recent_delivered: i64,
    /// Pending deliveries, and when the oldest of them was enqueued.
    pub pending: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    pub dead: i64,
    /// The error of the newest delivery that has one.
    pub last_error: Option<String>,
}

/// One event of a batch, in the order Herald received it.
#[derive(Debug, Clone)]
pub struct BatchEventRow {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// A stored project document and the event that brought it.
#[derive(Debug, Clone)]
pub struct ProjectVersion {
    pub project_id: String,
    pub event_id: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    /// The event's CloudEvents envelope (its `data` names the snapshot and
    /// summarises the model changes).
    pub envelope: serde_json::Value,
}

/// What a lane asks of one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub subscription: &'a str,
    pub now: DateTime<Utc>,
    /// Most rows to lease now (the lane's free slots).
    pub limit: usize,
    /// Most leases the whole fleet may hold for the subscription.
    pub max_in_flight: usize,
    pub owner: &'a str,
    pub lease_until: DateTime<Utc>,
    pub order: crate::core::subscription::DeliveryOrder,
    pub rate_limit: Option<crate::core::subscription::RateLimit>,
}

/// What one claim leased, and whether the rate limit held work back.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub deliveries: Vec<ClaimedDelivery>,
    /// Due work was left for want of a token: when the next one comes.
    pub throttled_until: Option<DateTime<Utc>>,
    /// A wait for the limit that ended with this claim.
    pub waited: std::time::Duration,
}
