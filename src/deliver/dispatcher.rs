//! The dispatcher: one lane per subscription, each claiming its own due
//! deliveries under a lease and sending at most `max_in_flight` at once.
//!
//! Lanes share nothing but the store and the HTTP client's pool, so a
//! receiver that never answers ties up only its own lane's slots: every
//! other subscription keeps flowing, and ingest never waits on any of them.
//! Email lanes group their deliveries into mails instead (see `email`).
//!
//! Order and pace are the claim's business, not the lane's: an ordered
//! subscription (`ordering`, and every Git archive) is only handed the
//! heads of its lanes, and a rate-limited one only as many deliveries as
//! its bucket has tokens for — in the store, so both hold across replicas.
//! A lane the bucket held back sleeps until the next token is due.
//!
//! Two ways to run it: [`Dispatcher::spawn`] starts the background lanes
//! (production), [`Dispatcher::run_until_idle`] drives every lane by hand
//! until nothing is due (tests with a manual clock).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::store_backoff::StoreBackoff;
use crate::clock::Clock;
use crate::config::DeliverySettings;
use crate::core::document::StoredDocument;
use crate::core::event::EventType;
use crate::core::retry::{AttemptResult, Verdict};
use crate::core::silence::silencing;
use crate::core::subscription::{DeliveryOrder, ProjectXml, Subscription, Target};
use crate::ingest::Ingestor;
use crate::registry::Registry;
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryUpdate, Store, StoreError,
};

use super::handoff::{Inbox, Slots};
use super::http::{Attempt, HttpSender};
use super::mail::Mailer;
use super::recorder::Recorder;
use super::request::prepare;
use super::wakeups::Wakeups;

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// What the dispatcher is built from.
pub struct DispatcherParts {
    pub store: Store,
    pub http: HttpSender,
    pub mailer: Option<Mailer>,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    pub wakeups: Wakeups,
    /// Raises Herald's own trouble reports (dead deliveries, disabled
    /// subscriptions) as events.
    pub ingestor: Ingestor,
    pub metrics: crate::metrics::Metrics,
    /// Who sends each email rule's mails and writes each Git archive.
    pub leadership: crate::fleet::Leadership,
    /// This replica's name, the prefix of its leases.
    pub replica: String,
}

pub(super) struct Inner {
    pub(super) store: Store,
    http: HttpSender,
    pub(super) mailer: Option<Mailer>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: DeliverySettings,
    /// Identifies this process's leases.
    pub(super) owner: String,
    lanes: RwLock<Vec<Arc<Lane>>>,
    /// The registry version the lanes were built from.
    lanes_version: AtomicU64,
    registry: Registry,
    wakeups: Wakeups,
    ingestor: Ingestor,
    recorder: Recorder,
    metrics: crate::metrics::Metrics,
    leadership: crate::fleet::Leadership,
}

pub(super) struct Lane {
    pub(super) sub: Subscription,
    wake: Arc<Notify>,
    disabled: AtomicBool,
    /// Deliveries this lane holds leases on right now.
    in_flight: Mutex<HashSet<String>>,
    /// Cancelled when the lane is replaced (its subscription changed).
    stop: CancellationToken,
    /// While its rate limit holds due work back: when the next token comes.
    throttled_until: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// Its `max_in_flight` sends, shared with ingest's hand-offs, and with
    /// the lane it replaced while that one's last sends finish.
    slots: Arc<Slots>,
    /// Pulled whenever a send gives its slot back (shared as `slots` is).
    freed: Arc<Notify>,
}

/// A send's slot, given back (and the lane told) when dropped.
struct Slot<'a>(&'a Lane);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.slots.give_back();
        self.0.freed.notify_one();
    }
}

impl Lane {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Only inserts and removes of ids happen under this lock; a panic
        // cannot leave the set inconsistent, so poisoning is ignored.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The outcome of one attempt at one delivery, ready to record.
pub(super) struct Outcome<'a> {
    pub(super) delivery_id: &'a str,
    /// The stored event, for trouble reports.
    pub(super) event: &'a [u8],
    /// 1-based number of this attempt.
    pub(super) number: u32,
    pub(super) attempt: &'a Attempt,
    pub(super) update: DeliveryUpdate,
}

impl Dispatcher {
    /// Builds the dispatcher with a lane per subscription in the registry.
    pub async fn new(parts: DispatcherParts, registry: Registry) -> Result<Self, StoreError> {
        let owner = format!("{}/{}", parts.replica, uuid::Uuid::now_v7().simple());
        let recorder = Recorder::start(parts.store.clone(), owner.clone(), parts.clock.clone());
        let inner = Inner {
            store: parts.store,
            http: parts.http,
            mailer: parts.mailer,
            clock: parts.clock,
            settings: parts.settings,
            owner,
            lanes: RwLock::new(Vec::new()),
            lanes_version: AtomicU64::new(u64::MAX),
            registry,
            wakeups: parts.wakeups,
            ingestor: parts.ingestor,
            recorder,
            metrics: parts.metrics,
            leadership: parts.leadership,
        };
        let dispatcher = Self {
            inner: Arc::new(inner),
        };
        dispatcher.inner.reconcile().await?;
        Ok(dispatcher)
    }

    /// Runs every lane until nothing is due at the clock's current time;
    /// returns how many deliveries were settled or attempted.
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        self.inner.reconcile().await?;
        let mut total = 0;
        loop {
            let mut round = 0;
            for lane in self.inner.lanes() {
                round += self.inner.clone().run_lane_once(lane).await?;
            }
            if round == 0 {
                return Ok(total);
            }
            total += round;
        }
    }

    /// Starts the lanes in the background, and restarts them whenever the
    /// registry changes. They stop claiming when `shutdown` is cancelled,
    /// give in-flight sends `grace` to finish, and hand back the leases of
    /// any they had to abandon.
    pub fn spawn(&self, shutdown: CancellationToken, grace: Duration) -> JoinSet<()> {
        let mut supervisor = JoinSet::new();
        let inner = self.inner.clone();
        supervisor.spawn(async move { inner.supervise(shutdown, grace).await });
        supervisor
    }
}

impl Inner {
    fn lanes(&self) -> Vec<Arc<Lane>> {
        // Only whole vectors are swapped in under this lock.
        self.lanes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Builds a lane per subscription when the registry changed since the
    /// last build. Old lanes are told to stop (their sends finish; leases
    /// keep their rows from being claimed twice).
    async fn reconcile(&self) -> Result<bool, StoreError> {
        let mut changes = self.registry.changes();
        let version = *changes.borrow_and_update();
        if self.lanes_version.load(Ordering::Acquire) == version {
            return Ok(false);
        }
        let subscriptions = self.registry.current();
        let fingerprints: Vec<_> = subscriptions
            .iter()
            .map(|s| (s.name.clone(), s.target_fingerprint()))
            .collect();
        let disabled = self.store.sync_subscriptions(&fingerprints).await?;
        // A subscription's sends in flight keep their slots when its lane
        // is rebuilt (any subscription's change rebuilds them all): the
        // new lane counts them until they finish, so the receiver never
        // gets more than `max_in_flight` at once. A changed limit starts
        // afresh.
        let previous: HashMap<String, (Arc<Slots>, Arc<Notify>)> = self
            .lanes()
            .iter()
            .map(|l| {
                let shared = (l.slots.clone(), l.freed.clone());
                (l.sub.name.clone(), shared)
            })
            .collect();
        let lanes: Vec<Arc<Lane>> = subscriptions
            .iter()
            .map(|sub| {
                let (slots, freed) = match previous.get(&sub.name) {
                    Some((slots, freed)) if slots.max() == sub.max_in_flight => {
                        (slots.clone(), freed.clone())
                    }
                    _ => (
                        Arc::new(Slots::new(sub.max_in_flight)),
                        Arc::new(Notify::new()),
                    ),
                };
                Arc::new(Lane {
                    sub: sub.clone(),
                    wake: self.wakeups.signal(&sub.name),
                    disabled: AtomicBool::new(disabled.contains(&sub.name)),
                    in_flight: Mutex::new(HashSet::new()),
                    stop: CancellationToken::new(),
                    throttled_until: Mutex::new(None),
                    slots,
                    freed,
                })
            })
            .collect();
        let old = std::mem::replace(
            &mut *self.lanes.write().unwrap_or_else(|p| p.into_inner()),
            lanes,
        );
        for lane in old {
            lane.stop.cancel();
        }
        self.lanes_version.store(version, Ordering::Release);
        Ok(true)
    }

    /// Runs the current lanes until shutdown, rebuilding them on changes.
    async fn supervise(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut tasks = JoinSet::new();
        let mut changes = self.registry.changes();
        loop {
            for lane in self.lanes() {
                let inner = self.clone();
                // Stops at shutdown (a child token) or when the lane is
                // replaced.
                let merged = shutdown.child_token();
                let (replaced, stopping) = (lane.stop.clone(), merged.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = replaced.cancelled() => stopping.cancel(),
                        _ = stopping.cancelled() => {}
                    }
                });
                match &lane.sub.target {
                    Target::Email(_) => {
                        tasks.spawn(async move { inner.run_email_lane(lane, merged).await })
                    }
                    _ => tasks.spawn(async move { inner.run_lane(lane, merged, grace).await }),
                };
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if let Err(e) = self.reconcile().await {
                        tracing::error!(error = %e, "rebuilding delivery lanes failed");
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One pass over a lane: everything due is attempted, and awaited.
    async fn run_lane_once(self: Arc<Self>, lane: Arc<Lane>) -> Result<usize, StoreError> {
        if let Target::Email(rule) = &lane.sub.target {
            return self.run_email_once(&lane, rule).await;
        }
        let claimed = self.claim(&lane, lane.sub.max_in_flight).await?;
        let count = claimed.len();
        let mut sends = JoinSet::new();
        for delivery in claimed {
            sends.spawn(self.clone().deliver(lane.clone(), delivery));
        }
        while let Some(done) = sends.join_next().await {
            log_failure(&lane, done);
        }
        Ok(count)
    }

    async fn run_email_lane(self: Arc<Self>, lane: Arc<Lane>, shutdown: CancellationToken) {
        let mut backoff = StoreBackoff::default();
        while !shutdown.is_cancelled() {
            let mut pause = self.settings.poll_interval;
            let leads = self.leadership.leads(&lane_work(&lane.sub)).await;
            if !leads {
                pause = pause.min(crate::fleet::RENEW_EVERY);
            } else if let Target::Email(rule) = &lane.sub.target {
                match self.run_email_once(&lane, rule).await {
                    Ok(_) => backoff.succeeded(&lane.sub.name),
                    Err(e) => pause = backoff.failed(&lane.sub.name, &e).max(pause),
                }
            }
            tokio::select! {
                _ = lane.wake.notified(), if backoff.pause().is_zero() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn run_lane(
        self: Arc<Self>,
        lane: Arc<Lane>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let mut sends = JoinSet::new();
        // Claims are writes: take free slots in batches (a quarter of the
        // lane at least) rather than one commit per finished send.
        let batch = (lane.sub.max_in_flight / 4).max(1);
        let mut backoff = StoreBackoff::default();
        let (inbox, mut handed) = self.open_inbox(&lane);
        // Whether the store may hold work for this lane that no commit
        // handed over: at start, when woken, when a claim filled its batch,
        // when a timer fell due, and on ordered lanes after every send.
        let mut look = true;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        while !shutdown.is_cancelled() {
            let free = lane.slots.free();
            let in_flight = lane.sub.max_in_flight - free;
            if look && (free >= batch || in_flight == 0) {
                match self.claim(&lane, free).await {
                    Ok(claimed) => {
                        backoff.succeeded(&lane.sub.name);
                        // A claim cut short by its limit leaves more due.
                        look = claimed.len() == free && free > 0;
                        for delivery in claimed {
                            sends.spawn(self.clone().deliver(lane.clone(), delivery));
                        }
                    }
                    Err(e) => {
                        backoff.failed(&lane.sub.name, &e);
                        look = true;
                    }
                }
                if look && lane.slots.free() >= batch && backoff.pause().is_zero() {
                    continue;
                }
                // While the store fails, only the backoff ends the wait: a
                // wake or a finished send would just fail the claim again.
                let pause = match backoff.pause().is_zero() {
                    false => backoff.pause(),
                    true => self.pause_for(&lane, lane.slots.free() < batch).await,
                };
                timer.as_mut().reset(tokio::time::Instant::now() + pause);
            }
            let failing = !backoff.pause().is_zero();
            // A lane that knows of due work waits for a free slot instead
            // of its timer (unless the store is failing: then the backoff).
            let timed = !look || failing;
            tokio::select! {
                Some(done) = sends.join_next(), if !sends.is_empty() => {
                    log_failure(&lane, done);
                    // A lane without an inbox (ordered, rate-limited, or on a
                    // shared store) claims all it sends: a record may let
                    // its next one go.
                    look |= inbox.is_none();
                }
                Some(delivery) = recv(&mut handed) => {
                    lane.in_flight().insert(delivery.id.clone());
                    sends.spawn(self.clone().deliver(lane.clone(), delivery));
                }
                _ = lane.freed.notified(), if look && !failing => {}
                _ = lane.wake.notified(), if !failing => look = true,
                _ = &mut timer, if timed => look = true,
                _ = shutdown.cancelled() => {}
            }
        }
        if let Some(inbox) = &inbox {
            self.close_inbox(&lane, inbox, handed).await;
        }
        self.drain(&lane, sends, grace).await;
    }

    /// Opens the lane's inbox for deliveries handed over by ingest's
    /// commits, when the lane sends in parallel with nothing to hold back:
    /// ordered lanes take only their heads, rate-limited ones only what
    /// their bucket allows, and both are the claim's to decide. On a shared
    /// store `max_in_flight` holds for the whole fleet, counted in the
    /// store by the claim, so there every delivery goes through a claim.
    fn open_inbox(
        &self,
        lane: &Lane,
    ) -> (
        Option<Arc<Inbox>>,
        Option<tokio::sync::mpsc::UnboundedReceiver<ClaimedDelivery>>,
    ) {
        if !sends_in_parallel(&lane.sub) || self.store.is_shared() {
            return (None, None);
        }
        let lease = lane.sub.timeout.saturating_add(self.settings.lease_margin);
        let (inbox, handed) = Inbox::open(self.owner.clone(), lease, lane.slots.clone());
        self.wakeups
            .handoff()
            .register(&lane.sub.name, inbox.clone());
        (Some(inbox), Some(handed))
    }

    /// Closes the inbox; deliveries handed over but not started are given
    /// back to the store for the next claim.
    async fn close_inbox(
        &self,
        lane: &Lane,
        inbox: &Arc<Inbox>,
        handed: Option<tokio::sync::mpsc::UnboundedReceiver<ClaimedDelivery>>,
    ) {
        self.wakeups.handoff().unregister(&lane.sub.name, inbox);
        let Some(mut handed) = handed else {
            return;
        };
        handed.close();
        let mut unstarted = Vec::new();
        while let Ok(delivery) = handed.try_recv() {
            lane.slots.give_back();
            unstarted.push(delivery.id);
        }
        if unstarted.is_empty() {
            return;
        }
        // The lane that replaced this one may share the slots.
        lane.freed.notify_one();
        if let Err(e) = self.store.release_leases(&self.owner, &unstarted).await {
            tracing::error!(error = %e, "releasing handed-over leases failed; they will expire instead");
        }
    }

    /// How long a lane may sleep: until its next delivery falls due, at most
    /// the poll interval. A full or disabled lane cannot claim what is due,
    /// so it waits the whole interval (a finished send wakes it earlier).
    async fn pause_for(&self, lane: &Lane, full: bool) -> Duration {
        let poll = self.settings.poll_interval;
        if full || lane.disabled.load(Ordering::Acquire) {
            return poll;
        }
        let throttled = *lane
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let next_due = match throttled {
            Some(token) => Ok(Some(token)),
            None => {
                self.store
                    .next_due_at(&lane.sub.name, lane.sub.ordering)
                    .await
            }
        };
        match next_due {
            Ok(Some(due)) => (due - self.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(poll),
            _ => poll,
        }
    }

    async fn drain(
        &self,
        lane: &Lane,
        mut sends: JoinSet<Result<(), StoreError>>,
        grace: Duration,
    ) {
        let finished = tokio::time::timeout(grace, async {
            while let Some(done) = sends.join_next().await {
                log_failure(lane, done);
            }
        })
        .await;
        if finished.is_err() {
            sends.abort_all();
            let abandoned: Vec<String> = lane.in_flight().drain().collect();
            tracing::warn!(subscription = %lane.sub.name, count = abandoned.len(), "abandoning in-flight deliveries at shutdown");
            if let Err(e) = self.store.release_leases(&self.owner, &abandoned).await {
                tracing::error!(error = %e, "releasing leases failed; they will expire instead");
            }
        }
    }

    pub(super) fn lease_until(&self, sub: &Subscription) -> chrono::DateTime<chrono::Utc> {
        let lease = sub.timeout.saturating_add(self.settings.lease_margin);
        crate::core::time::after(self.clock.now(), lease)
    }

    /// Claims up to `limit` due deliveries, each taking one of the lane's
    /// slots (taken before the claim, so hand-offs meanwhile cannot
    /// overfill the lane).
    async fn claim(&self, lane: &Lane, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let limit = lane.slots.take_up_to(limit);
        let claimed = self.claim_slots(lane, limit).await;
        let used = claimed.as_ref().map_or(0, Vec::len);
        lane.slots.give_back_many(limit - used);
        claimed
    }

    async fn claim_slots(
        &self,
        lane: &Lane,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        if limit == 0 || lane.disabled.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        // One writer per archive across replicas.
        let single = matches!(lane.sub.target, Target::GitArchive(_));
        if single && !self.leadership.leads(&lane_work(&lane.sub)).await {
            return Ok(Vec::new());
        }
        let request = ClaimRequest {
            subscription: &lane.sub.name,
            now: self.clock.now(),
            limit,
            max_in_flight: lane.sub.max_in_flight,
            owner: &self.owner,
            lease_until: self.lease_until(&lane.sub),
            order: lane.sub.ordering,
            rate_limit: lane.sub.rate_limit,
        };
        let claim = self.store.claim_due(&request).await?;
        *lane
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = claim.throttled_until;
        self.metrics.rate_limit_waited(&lane.sub.name, claim.waited);
        lane.in_flight()
            .extend(claim.deliveries.iter().map(|d| d.id.clone()));
        Ok(claim.deliveries)
    }

    /// Prepare → send → decide → record, for one claimed delivery; or
    /// record it suppressed when a silence holds it back.
    async fn deliver(
        self: Arc<Self>,
        lane: Arc<Lane>,
        delivery: ClaimedDelivery,
    ) -> Result<(), StoreError> {
        let slot = Slot(&lane);
        let now = self.clock.now();
        let silence = match lane.sub.respect_silences {
            true => self.silence_for(&delivery.body, now).await?,
            false => None,
        };
        let (attempt, update) = match silence {
            Some(silence_id) => (
                Attempt::silenced(now),
                DeliveryUpdate::Silenced { silence_id },
            ),
            None => {
                let attempt = self.attempt(&lane.sub, &delivery).await;
                let update = self.decide(&lane.sub, delivery.attempts + 1, &attempt);
                (attempt, update)
            }
        };
        // The response is in: the slot is free before the record commits.
        drop(slot);
        let number = delivery.attempts + 1;
        let outcome = Outcome {
            delivery_id: &delivery.id,
            event: &delivery.body,
            number,
            attempt: &attempt,
            update,
        };
        self.record(&lane, outcome).await?;
        lane.in_flight().remove(&delivery.id);
        Ok(())
    }

    /// The id of the silence that holds back an event (its stored
    /// envelope) at `now`, if one does. Read from the store at dispatch,
    /// so a silence made on any replica, after the event came, applies.
    pub(super) async fn silence_for(
        &self,
        body: &[u8],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, StoreError> {
        let silences = self.store.active_silences(now).await?;
        if silences.is_empty() {
            return Ok(None);
        }
        let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        Ok(silencing(&silences, &event, now).map(|s| s.id.clone()))
    }

    /// Prepare, then send. The signature's timestamp reads the wall clock:
    /// receivers compare it with their own clocks to refuse replays, so it
    /// must be the real time of sending even when tests drive Herald's.
    async fn attempt(&self, sub: &Subscription, delivery: &ClaimedDelivery) -> Attempt {
        let now = self.clock.now();
        let document = match self.document_for(sub, delivery).await {
            Ok(document) => document,
            Err(e) => {
                return Attempt::unsendable(now, format!("reading the project document: {e}"))
            }
        };
        if let Target::GitArchive(archive) = &sub.target {
            return self.archive(archive, delivery, document, now).await;
        }
        let stamp = chrono::Utc::now().timestamp();
        let prepared = match document {
            None => prepare(sub, delivery, stamp, now.timestamp(), None),
            // Signing a document's body reads all of it: off the runtime.
            Some(document) => {
                let (sub, delivery) = (sub.clone(), delivery.clone());
                tokio::task::spawn_blocking(move || {
                    prepare(&sub, &delivery, stamp, now.timestamp(), Some(&document))
                })
                .await
                .unwrap_or_else(|e| Err(format!("preparing the request stopped: {e}")))
            }
        };
        match prepared {
            Ok(request) => self.http.send(request, sub.timeout, now).await,
            Err(reason) => Attempt::unsendable(now, reason),
        }
    }

    /// Commits one event to a Git archive (blocking work, off the runtime).
    async fn archive(
        &self,
        archive: &crate::core::subscription::GitArchive,
        delivery: &ClaimedDelivery,
        document: Option<StoredDocument>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Attempt {
        let started = std::time::Instant::now();
        let (archive, body) = (archive.clone(), delivery.body.clone());
        let done = tokio::task::spawn_blocking(move || {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            super::git::archive(&archive, &event, document.as_ref())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the archiver stopped: {e}")));
        let (result, error) = match done {
            Ok(()) => (
                AttemptResult::Status {
                    code: 200,
                    retry_after: None,
                },
                None,
            ),
            Err(e) => (AttemptResult::NoResponse, Some(e)),
        };
        Attempt {
            started_at: now,
            duration: started.elapsed(),
            result,
            response_excerpt: None,
            error,
        }
    }

    /// A project event's XML, when this subscription sends it.
    async fn document_for(
        &self,
        sub: &Subscription,
        delivery: &ClaimedDelivery,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let wants = match &sub.target {
            Target::Webhook(w) => w.project_xml != ProjectXml::Omit,
            Target::GitArchive(_) => true,
            _ => false,
        };
        let is_project = EventType::parse(&delivery.event_type).is_some_and(EventType::is_project);
        if !(wants && is_project) {
            return Ok(None);
        }
        let event: Value = serde_json::from_slice(&delivery.body).unwrap_or(Value::Null);
        match event["id"].as_str() {
            Some(id) => self.store.stored_document(id).await,
            None => Ok(None),
        }
    }

    pub(super) fn decide(
        &self,
        sub: &Subscription,
        number: u32,
        attempt: &Attempt,
    ) -> DeliveryUpdate {
        let verdict = sub
            .retry
            .verdict(number, attempt.result, rand::random::<f64>());
        self.update_for(verdict, self.clock.now())
    }

    /// The row update a verdict asks for; a retry waits from `now`.
    pub(super) fn update_for(
        &self,
        verdict: Verdict,
        now: chrono::DateTime<chrono::Utc>,
    ) -> DeliveryUpdate {
        match verdict {
            Verdict::Delivered => DeliveryUpdate::Delivered,
            Verdict::Failed => DeliveryUpdate::Failed,
            Verdict::Dead => DeliveryUpdate::Dead,
            Verdict::Disable => DeliveryUpdate::DisableSubscription {
                reason: "receiver answered 410 Gone".to_owned(),
            },
            Verdict::RetryIn(wait) => DeliveryUpdate::RetryAt(crate::core::time::after(now, wait)),
        }
    }

    /// Records an attempt (or a suppression), and reports a delivery gone
    /// dead or a subscription disabled as Herald's own events.
    pub(super) async fn record(&self, lane: &Lane, outcome: Outcome<'_>) -> Result<(), StoreError> {
        let a = outcome.attempt;
        let record = AttemptRecord {
            delivery_id: outcome.delivery_id.to_owned(),
            attempt: outcome.number,
            started_at: a.started_at,
            duration_ms: a.duration.as_millis() as i64,
            status_code: a.status_code(),
            response_excerpt: a.response_excerpt.clone(),
            error: a.error.clone(),
        };
        // Only a parallel lane's records may wait to be gathered: an ordered
        // or rate-limited lane's next claim waits on this one, and email
        // and archive lanes record one item after another.
        let urgent = !sends_in_parallel(&lane.sub);
        self.recorder
            .record(record, outcome.update.clone(), urgent)
            .await?;
        let sent = !matches!(
            outcome.update,
            DeliveryUpdate::Suppressed | DeliveryUpdate::Silenced { .. }
        );
        let sent = sent.then_some(a.duration);
        let counted = match outcome.update {
            DeliveryUpdate::Silenced { .. } => "silenced",
            _ => outcome.update.verdict(),
        };
        self.metrics.attempt(counted, sent);
        self.metrics.subscription_outcome(&lane.sub.name, counted);
        log_attempt(
            &lane.sub.name,
            outcome.delivery_id,
            outcome.number,
            &outcome.update,
            a,
        );
        if let DeliveryUpdate::DisableSubscription { reason } = &outcome.update {
            lane.disabled.store(true, Ordering::Release);
            self.report_trouble(&lane.sub.name, outcome.event, Trouble::Disabled(reason))
                .await;
        }
        if outcome.update == DeliveryUpdate::Dead {
            let trouble = Trouble::Dead {
                delivery_id: outcome.delivery_id,
                attempts: outcome.number,
                last_error: a.error.as_deref(),
                released: released_by_death(lane.sub.ordering),
            };
            self.report_trouble(&lane.sub.name, outcome.event, trouble)
                .await;
        }
        Ok(())
    }

    async fn report_trouble(&self, subscription: &str, event: &[u8], trouble: Trouble<'_>) {
        let event: Value = serde_json::from_slice(event).unwrap_or(Value::Null);
        let about_trouble = event["type"]
            .as_str()
            .and_then(EventType::parse)
            .is_some_and(EventType::is_trouble);
        if about_trouble {
            // Reporting trouble with a trouble report could loop forever.
            return;
        }
        let raised = match trouble {
            Trouble::Dead {
                delivery_id,
                attempts,
                last_error,
                released,
            } => {
                self.ingestor
                    .raise_dead_delivery(
                        subscription,
                        delivery_id,
                        &event,
                        attempts,
                        last_error,
                        released,
                    )
                    .await
            }
            Trouble::Disabled(reason) => self.ingestor.raise_disabled(subscription, reason).await,
        };
        if let Err(e) = raised {
            tracing::error!(subscription, error = %e, "could not record a trouble report");
        }
    }
}

/// Something admins must hear about a subscription.
enum Trouble<'a> {
    Dead {
        delivery_id: &'a str,
        attempts: u32,
        last_error: Option<&'a str>,
        released: Option<&'static str>,
    },
    Disabled(&'a str),
}

impl Attempt {
    /// The record of a delivery a silence held back: nothing was sent.
    pub(super) fn silenced(now: chrono::DateTime<chrono::Utc>) -> Attempt {
        Attempt {
            error: None,
            ..Attempt::unsendable(now, String::new())
        }
    }

    pub fn status_code(&self) -> Option<u16> {
        match self.result {
            AttemptResult::Status { code, .. } => Some(code),
            AttemptResult::NoResponse | AttemptResult::Unsendable | AttemptResult::Blocked => None,
        }
    }
}

fn log_attempt(
    subscription: &str,
    delivery: &str,
    number: u32,
    update: &DeliveryUpdate,
    a: &Attempt,
) {
    let error = a.error.as_deref().unwrap_or("");
    match update {
        DeliveryUpdate::Delivered | DeliveryUpdate::Suppressed => {
            tracing::debug!(subscription, delivery, attempt = number, "delivered")
        }
        DeliveryUpdate::Silenced { silence_id } => {
            tracing::info!(subscription, delivery, silence = %silence_id, "suppressed by a silence")
        }
        DeliveryUpdate::RetryAt(at) => {
            tracing::info!(subscription, delivery, attempt = number, error, retry_at = %at, "delivery failed; will retry")
        }
        DeliveryUpdate::Failed => {
            tracing::warn!(
                subscription,
                delivery,
                attempt = number,
                error,
                "{}; not retried",
                why_failed(a.result)
            )
        }
        DeliveryUpdate::Dead => {
            tracing::error!(
                subscription,
                delivery,
                attempt = number,
                error,
                "delivery dead: retries exhausted"
            )
        }
        DeliveryUpdate::DisableSubscription { reason } => {
            tracing::error!(subscription, delivery, reason = %reason, "subscription disabled")
        }
    }
}

/// Why an attempt failed for good, in the words of the log.
fn why_failed(result: AttemptResult) -> &'static str {
    match result {
        AttemptResult::Blocked => "delivery blocked by the egress policy",
        AttemptResult::Unsendable => "delivery could not be sent",
        AttemptResult::Status { .. } | AttemptResult::NoResponse => "delivery refused by receiver",
    }
}

fn log_failure(lane: &Lane, done: Result<Result<(), StoreError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        // The lease stays; the row is retried once it expires.
        Ok(Err(e)) => {
            tracing::error!(subscription = %lane.sub.name, error = %e, "recording an attempt failed")
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => {
            tracing::error!(subscription = %lane.sub.name, error = %e, "delivery task panicked")
        }
    }
}

/// Whether a subscription's deliveries go out side by side with nothing
/// to hold back: an HTTP target, no ordering, no rate limit.
fn sends_in_parallel(sub: &Subscription) -> bool {
    matches!(
        sub.target,
        Target::Webhook(_) | Target::Healthcheck(_) | Target::OpenLineage(_)
    ) && sub.ordering == DeliveryOrder::None
        && sub.rate_limit.is_none()
}

/// The next handed-over delivery; never, for a lane without an inbox.
async fn recv(
    handed: &mut Option<tokio::sync::mpsc::UnboundedReceiver<ClaimedDelivery>>,
) -> Option<ClaimedDelivery> {
    match handed {
        Some(handed) => handed.recv().await,
        None => std::future::pending().await,
    }
}

/// What a dead delivery lets go on an ordered lane, as its report says.
fn released_by_death(order: DeliveryOrder) -> Option<&'static str> {
    match order {
        DeliveryOrder::None => None,
        DeliveryOrder::Cube => {
            Some("ordering = \"cube\": the next delivery of this cube, if any, is released")
        }
        DeliveryOrder::Batch => {
            Some("ordering = \"batch\": the next delivery of this batch, if any, is released")
        }
        DeliveryOrder::Subscription => {
            Some("in-order lane: the next delivery of this subscription, if any, is released")
        }
    }
}

/// The leadership name of a lane whose work must happen on one replica.
fn lane_work(sub: &Subscription) -> String {
    format!("lane:{}", sub.name)
}
