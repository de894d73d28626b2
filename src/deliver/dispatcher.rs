//! The dispatcher: one lane per subscription, each claiming its own due
//! deliveries under a lease and sending at most `max_in_flight` at once.
//!
//! Lanes share nothing but the store and the HTTP client's pool, so a
//! receiver that never answers ties up only its own lane's slots: every
//! other subscription keeps flowing, and ingest never waits on any of them.
//!
//! Two ways to run it: [`Dispatcher::spawn`] starts the background lanes
//! (production), [`Dispatcher::run_until_idle`] drives every lane by hand
//! until nothing is due (tests with a manual clock).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::DeliverySettings;
use crate::core::retry::{AttemptResult, Verdict};
use crate::core::subscription::Subscription;
use crate::store::{AttemptRecord, ClaimedDelivery, DeliveryUpdate, Store, StoreError};

use super::http::{Attempt, HttpSender};
use super::request::prepare;

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: HttpSender,
    clock: Arc<dyn Clock>,
    settings: DeliverySettings,
    /// Identifies this process's leases.
    owner: String,
    lanes: HashMap<String, Arc<Lane>>,
}

struct Lane {
    sub: Subscription,
    wake: Notify,
    disabled: AtomicBool,
    /// Deliveries this lane holds leases on right now.
    in_flight: Mutex<HashSet<String>>,
}

impl Lane {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Only inserts and removes of ids happen under this lock; a panic
        // cannot leave the set inconsistent, so poisoning is ignored.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Dispatcher {
    /// Builds the dispatcher and marks the lanes of subscriptions the store
    /// has disabled.
    pub async fn new(
        store: Store,
        client: HttpSender,
        clock: Arc<dyn Clock>,
        settings: DeliverySettings,
        subscriptions: &[Subscription],
    ) -> Result<Self, StoreError> {
        let fingerprints: Vec<_> = subscriptions
            .iter()
            .map(|s| (s.name.clone(), s.target_fingerprint()))
            .collect();
        let disabled = store.sync_subscriptions(&fingerprints).await?;
        let lanes = subscriptions
            .iter()
            .map(|sub| {
                let lane = Lane {
                    sub: sub.clone(),
                    wake: Notify::new(),
                    disabled: AtomicBool::new(disabled.contains(&sub.name)),
                    in_flight: Mutex::new(HashSet::new()),
                };
                (sub.name.clone(), Arc::new(lane))
            })
            .collect();
        let inner = Inner {
            store,
            client,
            clock,
            settings,
            owner: format!("herald-{}", uuid::Uuid::now_v7().simple()),
            lanes,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Tells a lane that it has new work. A wake-up with nobody waiting is
    /// kept, so none is lost between a lane's check and its wait.
    pub fn wake(&self, subscription: &str) {
        if let Some(lane) = self.inner.lanes.get(subscription) {
            lane.wake.notify_one();
        }
    }

    /// Runs every lane until no delivery is due at the clock's current time;
    /// returns how many attempts were made.
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let mut round = 0;
            for lane in self.inner.lanes.values() {
                round += self.inner.clone().run_lane_once(lane.clone()).await?;
            }
            if round == 0 {
                return Ok(total);
            }
            total += round;
        }
    }

    /// Starts one background task per lane. They stop claiming when
    /// `shutdown` is cancelled, give in-flight sends `grace` to finish, and
    /// hand back the leases of any they had to abandon.
    pub fn spawn(&self, shutdown: CancellationToken, grace: Duration) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for lane in self.inner.lanes.values() {
            let inner = self.inner.clone();
            let lane = lane.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { inner.run_lane(lane, shutdown, grace).await });
        }
        tasks
    }
}

impl Inner {
    /// Claims what is due for one lane, sends it all, waits for the results.
    async fn run_lane_once(self: Arc<Self>, lane: Arc<Lane>) -> Result<usize, StoreError> {
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

    async fn run_lane(
        self: Arc<Self>,
        lane: Arc<Lane>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let mut sends = JoinSet::new();
        while !shutdown.is_cancelled() {
            let free = lane.sub.max_in_flight.saturating_sub(sends.len());
            let claimed = match self.claim(&lane, free).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(subscription = %lane.sub.name, error = %e, "claiming deliveries failed");
                    Vec::new()
                }
            };
            let claimed_any = !claimed.is_empty();
            for delivery in claimed {
                sends.spawn(self.clone().deliver(lane.clone(), delivery));
            }
            if claimed_any && sends.len() < lane.sub.max_in_flight {
                continue;
            }
            let full = sends.len() >= lane.sub.max_in_flight;
            let pause = self.pause_for(&lane, full).await;
            tokio::select! {
                Some(done) = sends.join_next(), if !sends.is_empty() => log_failure(&lane, done),
                _ = lane.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        self.drain(&lane, sends, grace).await;
    }

    /// How long a lane may sleep: until its next delivery falls due, at most
    /// the poll interval. A full or disabled lane cannot claim what is due,
    /// so it waits the whole interval (a finished send wakes it earlier).
    async fn pause_for(&self, lane: &Lane, full: bool) -> Duration {
        let poll = self.settings.poll_interval;
        if full || lane.disabled.load(Ordering::Acquire) {
            return poll;
        }
        match self.store.next_due_at(&lane.sub.name).await {
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

    async fn claim(&self, lane: &Lane, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        if limit == 0 || lane.disabled.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let lease = lane.sub.timeout + self.settings.lease_margin;
        let lease_until =
            now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
        let claimed = self
            .store
            .claim_due(&lane.sub.name, now, limit, &self.owner, lease_until)
            .await?;
        lane.in_flight()
            .extend(claimed.iter().map(|d| d.id.clone()));
        Ok(claimed)
    }

    /// Send → decide → record, for one claimed delivery.
    async fn deliver(
        self: Arc<Self>,
        lane: Arc<Lane>,
        delivery: ClaimedDelivery,
    ) -> Result<(), StoreError> {
        let attempt = self.attempt(&lane.sub, &delivery).await;
        let number = delivery.attempts + 1;
        let update = self.decide(&lane.sub, number, &attempt);
        let record = AttemptRecord {
            delivery_id: delivery.id.clone(),
            attempt: number,
            started_at: attempt.started_at,
            duration_ms: attempt.duration.as_millis() as i64,
            status_code: match attempt.result {
                AttemptResult::Status { code, .. } => Some(code),
                AttemptResult::NoResponse | AttemptResult::Unsendable => None,
            },
            response_excerpt: attempt.response_excerpt.clone(),
            error: attempt.error.clone(),
        };
        self.store
            .record_attempt(&self.owner, &record, &update, self.clock.now())
            .await?;
        lane.in_flight().remove(&delivery.id);
        log_attempt(&lane.sub.name, &delivery, number, &update, &attempt);
        if matches!(update, DeliveryUpdate::DisableSubscription { .. }) {
            lane.disabled.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Prepare, then send. The signature's timestamp reads the wall clock:
    /// receivers compare it with their own clocks to refuse replays, so it
    /// must be the real time of sending even when tests drive Herald's.
    async fn attempt(&self, sub: &Subscription, delivery: &ClaimedDelivery) -> Attempt {
        let now = self.clock.now();
        match prepare(sub, delivery, chrono::Utc::now().timestamp()) {
            Ok(request) => self.client.send(request, sub.timeout, now).await,
            Err(reason) => Attempt::unsendable(now, reason),
        }
    }

    fn decide(&self, sub: &Subscription, number: u32, attempt: &Attempt) -> DeliveryUpdate {
        match sub
            .retry
            .verdict(number, attempt.result, rand::random::<f64>())
        {
            Verdict::Delivered => DeliveryUpdate::Delivered,
            Verdict::Failed => DeliveryUpdate::Failed,
            Verdict::Dead => DeliveryUpdate::Dead,
            Verdict::Disable => DeliveryUpdate::DisableSubscription {
                reason: "receiver answered 410 Gone".to_owned(),
            },
            Verdict::RetryIn(wait) => {
                let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1));
                DeliveryUpdate::RetryAt(self.clock.now() + wait)
            }
        }
    }
}

fn log_attempt(
    subscription: &str,
    d: &ClaimedDelivery,
    number: u32,
    update: &DeliveryUpdate,
    a: &Attempt,
) {
    let error = a.error.as_deref().unwrap_or("");
    match update {
        DeliveryUpdate::Delivered => {
            tracing::debug!(subscription, delivery = %d.id, event_type = %d.event_type, attempt = number, "delivered")
        }
        DeliveryUpdate::RetryAt(at) => {
            tracing::info!(subscription, delivery = %d.id, attempt = number, error, retry_at = %at, "delivery failed; will retry")
        }
        DeliveryUpdate::Failed => {
            tracing::warn!(subscription, delivery = %d.id, attempt = number, error, "delivery refused by receiver; not retried")
        }
        DeliveryUpdate::Dead => {
            tracing::error!(subscription, delivery = %d.id, attempt = number, error, "delivery dead: retries exhausted")
        }
        DeliveryUpdate::DisableSubscription { reason } => {
            tracing::error!(subscription, delivery = %d.id, reason = %reason, "subscription disabled")
        }
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
