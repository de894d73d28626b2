//! Applying a batch of jobs inside the committer's transaction, set-wise:
//! one read per kind of row for the whole batch, then every job in order
//! against an in-memory overlay (so a job sees the jobs before it, exactly
//! as if each had its own transaction), then one write per kind of row.
//!
//! A job refused by the state machine writes nothing: every refusal happens
//! in the in-memory phase, before the first write. A store failure fails the
//! whole batch, and every caller in it is told.

mod gates;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::idempotency::{describe_use, same_content, FirstUse};
use super::{Done, Incoming, IngestError, Receipt, Work, RAISED_PREFIX};
use crate::clock::Clock;
use crate::core::batch::{self, BatchRecord, BatchState};
use crate::core::cloudevent::{self, Envelope, HERALD_SOURCE};
use crate::core::document::PreparedDocument;
use crate::core::event::{
    BatchOutcome, EnvironmentEvent, Event, EventType, Payload, SchemaEvent, Scope,
};
use crate::core::model::Model;
use crate::core::subscription::Subscription;
use crate::deliver::{Reservation, Wakeups};
use crate::feed::ChangeFeed;
use crate::store::{ClaimedDelivery, NewDelivery, NewEvent, PriorEvent, StoreError, Tx};

pub(super) struct Core {
    pub(super) metrics: crate::metrics::Metrics,
    pub(super) store: crate::store::Store,
    pub(super) registry: crate::registry::Registry,
    /// What rebuilding the registry needs (see `read`).
    pub(super) managed: crate::registry::ManagedContext,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) wakeups: Wakeups,
    pub(super) feed: ChangeFeed,
    /// The configured dependency gates (see `gates`).
    pub(super) gates: Arc<[crate::core::gate::Gate]>,
}

/// What a committed batch wrote: who to tell once it is durable.
#[derive(Default)]
pub(super) struct Written {
    /// The scope of each event that moved a batch: what watchers hear of.
    batch_changes: Vec<Scope>,
    woken: HashSet<String>,
    /// Deliveries committed already leased to their lane, to hand over.
    handed: Vec<Handed>,
    event_types: Vec<EventType>,
}

/// A delivery the commit claimed for its lane, and the lane's slot.
struct Handed {
    reserved: Reservation,
    delivery: ClaimedDelivery,
}

/// One event row to write and deliver: a caller's, or one Herald raises.
struct Outgoing {
    event_id: String,
    event_type: EventType,
    source: String,
    occurred_at: DateTime<Utc>,
    scope: Scope,
    payload: String,
    fingerprint: String,
    body: Vec<u8>,
    /// Subscriptions it goes to (none for a quiet repeat).
    targets: Vec<String>,
    /// The event moved a batch to a new state.
    changes_batch: bool,
    /// Index of the job it belongs to.
    job: usize,
}

/// How a job ends, before the writes give it sequence numbers.
enum Pending {
    /// A new event: its receipt, once its rows exist.
    New {
        event_id: String,
        batch: Option<BatchRecord>,
    },
    /// A stored event's first answer.
    Repeat(Receipt),
    /// The same event_id as an earlier job of this batch.
    SameAs(usize),
    /// A raised event's result.
    Done(Done),
}

/// Everything the batch will write.
#[derive(Default)]
struct Plan {
    outcomes: Vec<Result<Pending, IngestError>>,
    rows: Vec<Outgoing>,
    batches: HashMap<String, BatchRecord>,
    environments: Vec<(EnvironmentEvent, DateTime<Utc>)>,
    schema_logs: Vec<(String, SchemaEvent, DateTime<Utc>)>,
    overdue: Vec<String>,
    /// Gate records the batch changed.
    gates: HashMap<String, crate::core::gate::GateRecord>,
    /// Project documents, stored once per event.
    documents: Vec<(String, Arc<PreparedDocument>)>,
}

/// What the batch read, updated as jobs apply.
struct Overlay {
    priors: HashMap<String, PriorEvent>,
    batches: HashMap<String, BatchRecord>,
    /// Latest finished batch per (environment, cube): when, and how.
    cubes: HashMap<(String, String), (i64, BatchState)>,
    disabled: HashSet<String>,
    /// The event ids new in this batch, by their first use.
    seen: HashMap<String, FirstUse>,
    /// The subscriptions as this batch began.
    subscriptions: Arc<[Subscription]>,
    /// Each project's latest model (`None`: no document, or not XML).
    models: HashMap<String, Option<Arc<Model>>>,
    /// The records of the gates the batch may move.
    gates: HashMap<String, crate::core::gate::GateRecord>,
}

impl Core {
    /// Applies every job and writes the result; nothing is committed here.
    pub(super) async fn apply_all(
        &self,
        tx: &mut Tx,
        works: &[Work],
    ) -> Result<(Vec<Result<Done, IngestError>>, Written), StoreError> {
        let mut overlay = self.read(tx, works).await?;
        let now = self.clock.now();
        let mut plan = Plan::default();
        for (job, work) in works.iter().enumerate() {
            let outcome = self.plan_job(job, work, now, &mut overlay, &mut plan);
            plan.outcomes.push(outcome);
        }
        self.write(tx, plan, now).await
    }

    /// Tells the dispatcher lanes and the watchers about committed work.
    pub(super) fn announce(&self, written: Written) {
        for handed in written.handed {
            handed.reserved.hand_over(handed.delivery);
        }
        self.feed.publish(&written.batch_changes);
        for event_type in &written.event_types {
            self.metrics.event_committed(*event_type);
        }
        for name in &written.woken {
            self.wakeups.wake(name);
        }
    }

    /// One read per kind of row the jobs touch.
    async fn read(&self, tx: &mut Tx, works: &[Work]) -> Result<Overlay, StoreError> {
        let mut event_ids = Vec::new();
        let mut batch_ids = Vec::new();
        let mut cubes = Vec::new();
        for work in works {
            match work {
                Work::Event(event) => {
                    event_ids.push(event.event_id.as_str());
                    if let Payload::Batch(b) = &event.payload {
                        batch_ids.push(b.batch.batch_id.as_str());
                        cubes.push((b.batch.environment_id.as_str(), b.batch.cube_id.as_str()));
                    }
                }
                Work::Stall { batch_id, .. } => batch_ids.push(batch_id.as_str()),
                _ => {}
            }
        }
        cubes.sort();
        cubes.dedup();
        let gates = self.gates_touched(works);
        if self.store.is_shared() {
            // Other replicas ingest too: hold every key this group reads
            // until it commits (see `store::postgres`).
            let mut keys: Vec<String> = event_ids.iter().map(|id| format!("event:{id}")).collect();
            keys.extend(batch_ids.iter().map(|id| format!("batch:{id}")));
            // A cube's outcomes matter to completions only (a recovery is
            // the first success after a failure): starts do not wait on them.
            keys.extend(works.iter().filter_map(|work| match work {
                Work::Event(event) => match &event.payload {
                    Payload::Batch(b) if b.outcome != BatchOutcome::Started => Some(format!(
                        "cube:{}/{}",
                        b.batch.environment_id, b.batch.cube_id
                    )),
                    _ => None,
                },
                _ => None,
            }));
            keys.extend(works.iter().filter_map(|work| match work {
                Work::Event(event) => match &event.payload {
                    Payload::Project(p) => Some(format!("project:{}", p.project_id)),
                    _ => None,
                },
                _ => None,
            }));
            keys.extend(Self::gate_keys(&gates));
            tx.lock_keys(&keys).await?;
            // A subscription change that returned before this group began
            // applies to it, even where its notification is still on the
            // way: the set is rebuilt when the store has a newer one.
            let version = tx.registry_version().await?;
            self.registry
                .rebuild_if_older(version, &self.store, &self.managed)
                .await?;
        }
        Ok(Overlay {
            priors: tx.find_events(&event_ids).await?,
            batches: tx.load_batches(&batch_ids).await?,
            cubes: tx.cube_outcomes(&cubes).await?,
            disabled: tx.disabled_subscriptions().await?,
            seen: HashMap::new(),
            subscriptions: self.registry.current(),
            models: self.previous_models(tx, works).await?,
            gates: {
                let names: Vec<&str> = gates.iter().map(String::as_str).collect();
                tx.load_gates(&names).await?
            },
        })
    }

    /// The latest model of each project the batch's documents concern.
    /// Each document was prepared with its project's newest model as it
    /// was then; only when a newer document was committed since is that
    /// one read again, here.
    async fn previous_models(
        &self,
        tx: &mut Tx,
        works: &[Work],
    ) -> Result<HashMap<String, Option<Arc<Model>>>, StoreError> {
        let mut models = HashMap::new();
        for work in works {
            let Work::Event(event) = work else {
                continue;
            };
            let Payload::Project(p) = &event.payload else {
                continue;
            };
            let Some(document) = &p.document else {
                continue;
            };
            if models.contains_key(&p.project_id) {
                continue;
            }
            let latest = tx.latest_document_id(&p.project_id).await?;
            let model = match (&document.previous, latest) {
                (_, None) => None,
                (Some(seen), Some(latest)) if seen.event_id == latest => seen.model.clone(),
                (_, Some(newer)) => tx
                    .stored_document(&newer)
                    .await?
                    .and_then(|newer| super::document::stored_model(&newer)),
            };
            models.insert(p.project_id.clone(), model);
        }
        Ok(models)
    }

    fn plan_job(
        &self,
        job: usize,
        work: &Work,
        now: DateTime<Utc>,
        overlay: &mut Overlay,
        plan: &mut Plan,
    ) -> Result<Pending, IngestError> {
        let raised = |id: String, event_type, scope, subject, data| {
            raised(job, id, event_type, now, scope, subject, data)
        };
        match work {
            Work::Event(event) => self.plan_event(job, event, now, overlay, plan),
            Work::GateDeadline { gate, passed } => {
                let missed = self.plan_deadline(job, gate, *passed, now, overlay, plan);
                Ok(Pending::Done(Done::Changed(missed)))
            }
            Work::Stall {
                batch_id,
                allowance,
            } => {
                let stalled = overlay
                    .batches
                    .get(batch_id)
                    .and_then(|current| batch::stall(current, now));
                let Some(stalled) = stalled else {
                    return Ok(Pending::Done(Done::Changed(false)));
                };
                let mut data = cloudevent::batch_data(&stalled);
                data["allowed_duration_ms"] = serde_json::json!(allowance.as_millis() as u64);
                let id = format!("{RAISED_PREFIX}stalled:{batch_id}");
                let out = raised(
                    id,
                    EventType::BatchStalled,
                    stalled.scope(),
                    cloudevent::batch_subject(&stalled),
                    data,
                );
                self.add_row(
                    Outgoing {
                        changes_batch: true,
                        ..out
                    },
                    overlay,
                    plan,
                );
                overlay.batches.insert(batch_id.clone(), stalled.clone());
                plan.batches.insert(batch_id.clone(), stalled);
                Ok(Pending::Done(Done::Changed(true)))
            }
            Work::Overdue {
                schedule,
                last_success_at,
                expected_by,
            } => {
                let scope = Scope {
                    environment_id: Some(schedule.environment_id.clone()),
                    cube_id: Some(schedule.cube_id.clone()),
                    ..Scope::default()
                };
                let data = cloudevent::overdue_data(
                    &schedule.name,
                    &schedule.environment_id,
                    &schedule.cube_id,
                    *last_success_at,
                    *expected_by,
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
                self.add_row(
                    raised(id, EventType::RefreshOverdue, scope, subject, data),
                    overlay,
                    plan,
                );
                plan.overdue.push(schedule.name.clone());
                Ok(Pending::Done(Done::Changed(true)))
            }
            Work::DeadDelivery {
                subscription,
                delivery_id,
                event,
                attempts,
                last_error,
                released,
            } => {
                let mut data = cloudevent::dead_delivery_data(
                    subscription,
                    delivery_id,
                    event,
                    *attempts,
                    last_error.as_deref(),
                );
                if let Some(released) = released {
                    data["released"] = serde_json::json!(released);
                }
                let id = format!("{RAISED_PREFIX}dead:{delivery_id}");
                let subject = format!("subscriptions/{subscription}");
                self.add_row(
                    raised(id, EventType::DeliveryDead, Scope::default(), subject, data),
                    overlay,
                    plan,
                );
                Ok(Pending::Done(Done::Changed(true)))
            }
            Work::Test { subscription } => {
                let id = format!(
                    "{RAISED_PREFIX}test:{subscription}:{}",
                    now.timestamp_millis()
                );
                let data = serde_json::json!({
                    "subscription": subscription,
                    "message": "a test event sent from Herald's admin API",
                });
                let subject = format!("subscriptions/{subscription}");
                let mut out = raised(
                    id.clone(),
                    EventType::SubscriptionTest,
                    Scope::default(),
                    subject,
                    data,
                );
                // Only to this subscription, whatever its filter.
                out.targets = vec![subscription.clone()];
                plan.rows.push(out);
                Ok(Pending::Done(Done::Tested(id)))
            }
            Work::Disabled {
                subscription,
                reason,
            } => {
                let data = cloudevent::disabled_data(subscription, reason);
                let id = format!(
                    "{RAISED_PREFIX}disabled:{subscription}:{}",
                    now.timestamp_millis()
                );
                let subject = format!("subscriptions/{subscription}");
                self.add_row(
                    raised(
                        id,
                        EventType::SubscriptionDisabled,
                        Scope::default(),
                        subject,
                        data,
                    ),
                    overlay,
                    plan,
                );
                // The subscription takes no new deliveries from here on.
                overlay.disabled.insert(subscription.clone());
                Ok(Pending::Done(Done::Changed(true)))
            }
        }
    }

    fn plan_event(
        &self,
        job: usize,
        incoming: &Incoming,
        now: DateTime<Utc>,
        overlay: &mut Overlay,
        plan: &mut Plan,
    ) -> Result<Pending, IngestError> {
        let event = &incoming.event;
        let fingerprint = &incoming.fingerprint;
        if let Some(prior) = overlay.priors.get(&event.event_id) {
            same_content(event, fingerprint, &prior.fingerprint, || {
                describe_use(&prior.event_type, &prior.scope)
            })?;
            let mut receipt: Receipt = crate::store::decode_reply(&prior.reply)?;
            receipt.sequence = prior.seq;
            return Ok(Pending::Repeat(receipt));
        }
        if let Some(first) = overlay.seen.get(&event.event_id) {
            same_content(event, fingerprint, &first.fingerprint, || {
                first.described.clone()
            })?;
            return Ok(Pending::SameAs(first.job));
        }
        let annotated = annotate(event, overlay);
        let event = &*annotated;
        let own = |batch: Option<&BatchRecord>| Outgoing {
            event_id: event.event_id.clone(),
            event_type: event.event_type(),
            source: event.source.clone(),
            occurred_at: event.occurred_at,
            scope: event.scope(),
            // Serialized before the committer's turn, unless annotating
            // changed the payload since.
            payload: match &annotated {
                Cow::Borrowed(_) => incoming.payload_json.clone(),
                Cow::Owned(changed) => crate::store::to_json(&changed.payload),
            },
            fingerprint: fingerprint.clone(),
            body: cloudevent::render(event, &event.event_id, event.event_type(), batch),
            targets: Vec::new(),
            changes_batch: false,
            job,
        };
        let batch = match &event.payload {
            Payload::Batch(b) => {
                let applied =
                    batch::apply(overlay.batches.get(&b.batch.batch_id), b, event.occurred_at)?;
                let record = applied.record;
                let primary = Outgoing {
                    changes_batch: applied.changed,
                    ..own(Some(&record))
                };
                if applied.changed {
                    self.add_row(primary, overlay, plan);
                    self.plan_recovery(event, &record, overlay, plan, &own);
                    self.plan_gates(job, &event.event_id, &record, now, overlay, plan);
                } else {
                    // Recorded as received, delivered to nobody.
                    plan.rows.push(primary);
                }
                overlay
                    .batches
                    .insert(record.batch_id.clone(), record.clone());
                plan.batches.insert(record.batch_id.clone(), record.clone());
                Some(record)
            }
            Payload::Environment(e) => {
                plan.environments.push((e.clone(), event.occurred_at));
                self.add_row(own(None), overlay, plan);
                None
            }
            Payload::Project(p) => {
                if let Some(document) = &p.document {
                    plan.documents
                        .push((event.event_id.clone(), document.clone()));
                }
                self.add_row(own(None), overlay, plan);
                None
            }
            Payload::Schema(s) => {
                plan.schema_logs
                    .push((event.event_id.clone(), s.clone(), event.occurred_at));
                self.add_row(own(None), overlay, plan);
                None
            }
        };
        let first = FirstUse {
            job,
            fingerprint: fingerprint.clone(),
            described: describe_use(event.event_type().as_str(), &event.scope()),
        };
        overlay.seen.insert(event.event_id.clone(), first);
        Ok(Pending::New {
            event_id: event.event_id.clone(),
            batch,
        })
    }

    /// Raises `aggregate.batch.recovered` for a cube's first success after
    /// a failure, and keeps the cube's latest outcome current.
    fn plan_recovery(
        &self,
        event: &Event,
        record: &BatchRecord,
        overlay: &mut Overlay,
        plan: &mut Plan,
        own: &dyn Fn(Option<&BatchRecord>) -> Outgoing,
    ) {
        let Some(finished_at) = record.finished_at else {
            return;
        };
        let key = (record.environment_id.clone(), record.cube_id.clone());
        let previous = overlay.cubes.get(&key).map(|(_, state)| *state);
        if batch::is_recovery(previous, record) {
            let id = format!("{RAISED_PREFIX}recovered:{}", event.event_id);
            let out = Outgoing {
                fingerprint: "raised".to_owned(),
                body: cloudevent::render(event, &id, EventType::BatchRecovered, Some(record)),
                event_type: EventType::BatchRecovered,
                event_id: id,
                changes_batch: false,
                ..own(Some(record))
            };
            self.add_row(out, overlay, plan);
        }
        let at = finished_at.timestamp_millis();
        let newer = overlay
            .cubes
            .get(&key)
            .is_none_or(|(latest, _)| at >= *latest);
        if newer && record.state.is_terminal() {
            overlay.cubes.insert(key, (at, record.state));
        }
    }

    /// Adds a row with the subscriptions that want it (and are not disabled).
    fn add_row(&self, mut out: Outgoing, overlay: &Overlay, plan: &mut Plan) {
        out.targets = overlay
            .subscriptions
            .iter()
            .filter(|s| !overlay.disabled.contains(&s.name) && s.wants(out.event_type, &out.scope))
            .map(|s| s.name.clone())
            .collect();
        plan.rows.push(out);
    }

    /// One write per kind of row, then the answers.
    async fn write(
        &self,
        tx: &mut Tx,
        plan: Plan,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Result<Done, IngestError>>, Written), StoreError> {
        let records: Vec<&BatchRecord> = plan.batches.values().collect();
        tx.save_batches(&records).await?;
        let replies = replies(&plan);
        let rows: Vec<NewEvent> = plan
            .rows
            .iter()
            .map(|out| NewEvent {
                event_id: &out.event_id,
                event_type: out.event_type.as_str(),
                source: &out.source,
                occurred_at: out.occurred_at,
                received_at: now,
                scope: &out.scope,
                payload: out.payload.clone(),
                fingerprint: &out.fingerprint,
                body: &out.body,
                reply: replies.get(&out.job).cloned().unwrap_or_default(),
                changes_batch: out.changes_batch,
            })
            .collect();
        let seqs = tx.insert_events(&rows).await?;
        let seq_of = |id: &str| seqs.get(id).copied().unwrap_or_default();
        // A lane with a free slot is handed its delivery by this commit;
        // the rest wait, unleased, for their lane's claim.
        let handoff = self.wakeups.handoff();
        let made: Vec<(String, &Outgoing, &String, Option<Reservation>)> = plan
            .rows
            .iter()
            .flat_map(|out| out.targets.iter().map(move |target| (out, target)))
            .map(|(out, target)| (NewDelivery::new_id(), out, target, handoff.reserve(target)))
            .collect();
        let deliveries: Vec<NewDelivery> = made
            .iter()
            .map(|(id, out, target, reserved)| NewDelivery {
                id: id.clone(),
                event_seq: seq_of(&out.event_id),
                subscription: target,
                lease: reserved
                    .as_ref()
                    .map(|r| (r.owner(), crate::core::time::after(now, r.lease()))),
            })
            .collect();
        tx.insert_deliveries(&deliveries, now).await?;
        let mut handed = Vec::new();
        let mut woken = HashSet::new();
        for (id, out, target, reserved) in made {
            match reserved {
                Some(reserved) => handed.push(Handed {
                    reserved,
                    delivery: ClaimedDelivery {
                        id,
                        subscription: target.clone(),
                        event_type: out.event_type.as_str().to_owned(),
                        attempts: 0,
                        body: out.body.clone(),
                    },
                }),
                None => {
                    woken.insert(target.clone());
                }
            }
        }
        for (environment, at) in &plan.environments {
            tx.save_environment(environment, *at).await?;
        }
        for (event_id, schema, at) in &plan.schema_logs {
            tx.append_schema_log(seq_of(event_id), schema, *at).await?;
        }
        for name in &plan.overdue {
            tx.set_overdue(name, Some(now)).await?;
        }
        let gates: Vec<(&str, &crate::core::gate::GateRecord)> =
            plan.gates.iter().map(|(n, r)| (n.as_str(), r)).collect();
        tx.save_gates(&gates, now).await?;
        for (event_id, document) in &plan.documents {
            tx.insert_document(event_id, &document.stored).await?;
        }
        let written = Written {
            batch_changes: plan
                .rows
                .iter()
                .filter(|out| out.changes_batch)
                .map(|out| out.scope.clone())
                .collect(),
            woken,
            handed,
            event_types: plan.rows.iter().map(|out| out.event_type).collect(),
        };
        Ok((answers(plan, &seq_of), written))
    }
}

/// A project event with a document gets the summary of what changed in
/// the model since the project's previous document (or a malformed flag).
/// Both models were read before the job was queued; this only compares.
fn annotate<'a>(event: &'a Event, overlay: &mut Overlay) -> Cow<'a, Event> {
    let Payload::Project(p) = &event.payload else {
        return Cow::Borrowed(event);
    };
    let Some(document) = &p.document else {
        return Cow::Borrowed(event);
    };
    let mut project = p.clone();
    match &document.model {
        Some(model) => {
            let previous = overlay.models.get(&p.project_id).cloned().flatten();
            let empty = Model::default();
            let changes = crate::core::model::changes(previous.as_deref().unwrap_or(&empty), model);
            project.model_changes = Some(crate::core::model::summary(&changes, 10));
            overlay
                .models
                .insert(p.project_id.clone(), Some(model.clone()));
        }
        None => project.xml_malformed = true,
    }
    Cow::Owned(Event {
        payload: Payload::Project(project),
        ..event.clone()
    })
}

/// The stored first answer of each new event's job (its sequence number is
/// the row's own and is filled in when a repeat reads it back).
fn replies(plan: &Plan) -> HashMap<usize, String> {
    let mut replies = HashMap::new();
    for (job, outcome) in plan.outcomes.iter().enumerate() {
        if let Ok(Pending::New { batch, .. }) = outcome {
            let receipt = Receipt {
                new_event: true,
                sequence: 0,
                batch: batch.clone(),
                deliveries: deliveries_of(plan, job),
            };
            replies.insert(job, crate::store::encode_reply(&receipt));
        }
    }
    replies
}

fn deliveries_of(plan: &Plan, job: usize) -> u32 {
    plan.rows
        .iter()
        .filter(|r| r.job == job)
        .map(|r| r.targets.len() as u32)
        .sum()
}

fn answers(plan: Plan, seq_of: &dyn Fn(&str) -> i64) -> Vec<Result<Done, IngestError>> {
    let mut receipts: Vec<Option<Receipt>> = Vec::with_capacity(plan.outcomes.len());
    let mut answers = Vec::with_capacity(plan.outcomes.len());
    for (job, outcome) in plan.outcomes.iter().enumerate() {
        let answer = match outcome {
            Ok(Pending::New { event_id, batch }) => Ok(Done::Receipt(Box::new(Receipt {
                new_event: true,
                sequence: seq_of(event_id),
                batch: batch.clone(),
                deliveries: deliveries_of(&plan, job),
            }))),
            Ok(Pending::Repeat(receipt)) => Ok(Done::Receipt(Box::new(receipt.clone()))),
            Ok(Pending::SameAs(first)) => match receipts.get(*first).cloned().flatten() {
                Some(receipt) => Ok(Done::Receipt(Box::new(Receipt {
                    new_event: false,
                    ..receipt
                }))),
                None => Err(IngestError::Store(StoreError::Shared(
                    "a repeated event's first answer is missing".to_owned(),
                ))),
            },
            Ok(Pending::Done(Done::Changed(changed))) => Ok(Done::Changed(*changed)),
            Ok(Pending::Done(Done::Tested(id))) => Ok(Done::Tested(id.clone())),
            Ok(Pending::Done(Done::Receipt(receipt))) => Ok(Done::Receipt(receipt.clone())),
            Err(e) => Err(match e {
                IngestError::Transition(t) => IngestError::Transition(t.clone()),
                IngestError::Reused(r) => IngestError::Reused(r.clone()),
                IngestError::Store(s) => IngestError::Store(s.to_shared()),
            }),
        };
        receipts.push(match &answer {
            Ok(Done::Receipt(r)) => Some((**r).clone()),
            _ => None,
        });
        answers.push(answer);
    }
    answers
}

/// An event Herald raises, delivered like any other.
fn raised(
    job: usize,
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
        targets: Vec::new(),
        changes_batch: false,
        job,
    }
}
