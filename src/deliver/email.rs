//! Email lanes: instead of one message per delivery, an email rule's
//! pending deliveries are grouped (see `core::email`) and each group that
//! is ready goes out as one mail. Every delivery in the group then records
//! the same attempt; deliveries that need no mail (an alert already mailed
//! within `repeat_interval`, a resolution nobody heard the alert of, a
//! duplicate folded into a newer event) are settled as suppressed.
//!
//! Silences are checked here, when a group is flushed: a delivery a
//! silence matches is settled as suppressed with the silence's id. A
//! firing alert mailed (or held back) is reminded of: the monitor makes
//! its delivery due again after `repeat_interval` (see `fire_reminders`),
//! and the mail then says how long the alert has been failing.
//!
//! A mail the server refuses for now (any 4xx, or no answer) is retried on
//! the rule's schedule; only a 5xx is permanent (RFC 5321 §4.2.1). A group
//! is retried whole: its deliveries share one retry time, and while they
//! wait, new alerts of the group wait with them, so that the group goes
//! out again as one mail.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::dispatcher::{Inner, Lane, Outcome};
use super::http::Attempt;
use super::mail::{MailError, Threading};
use crate::core::email::{
    alert_of, compose, group_key, ready_at, reminder_subject, unsent_verdicts, worth_mailing,
    AlertState, EmailRule,
};
use crate::core::retry::AttemptResult;
use crate::core::silence::silencing;
use crate::core::subscription::Subscription;
use crate::core::time::after;
use crate::store::{DeliveryUpdate, PendingDelivery, Reminder, StoreError};

/// A pending delivery with its parsed event.
struct Item {
    delivery: PendingDelivery,
    event: Value,
}

impl Inner {
    /// Mails every group of this rule that is ready; returns how many
    /// deliveries were settled or attempted.
    pub(super) async fn run_email_once(
        &self,
        lane: &Lane,
        rule: &EmailRule,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let pending = self.store.pending_deliveries(&lane.sub.name, now).await?;
        let mut groups: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for delivery in pending {
            let event = serde_json::from_slice(&delivery.body).unwrap_or(Value::Null);
            groups
                .entry(group_key(rule, &event))
                .or_default()
                .push(Item { delivery, event });
        }
        let mut settled = 0;
        for (group, items) in groups {
            // A group waiting for its retry goes out again whole when the
            // retry is due: a new alert of the group joins it, never goes
            // alone.
            if items.iter().any(|i| i.delivery.next_attempt_at > now) {
                continue;
            }
            let oldest = items
                .iter()
                .map(|i| i.delivery.created_at)
                .min()
                .unwrap_or(now);
            let last_sent = self.store.email_group_sent(&lane.sub.name, &group).await?;
            if now >= ready_at(rule, oldest, last_sent) {
                settled += self.flush_group(lane, rule, &group, items, now).await?;
            }
        }
        Ok(settled)
    }

    async fn flush_group(
        &self,
        lane: &Lane,
        rule: &EmailRule,
        group: &str,
        items: Vec<Item>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let ids: Vec<String> = items.iter().map(|i| i.delivery.id.clone()).collect();
        let claimed = self
            .store
            .claim_ids(&ids, &self.owner, now, self.lease_until(&lane.sub))
            .await?;
        let items: Vec<Item> = items
            .into_iter()
            .filter(|i| claimed.contains(&i.delivery.id))
            .collect();
        let mut plan = ReminderPlan::default();
        let (items, silenced) = self.hold_back(lane, rule, items, now, &mut plan).await?;
        let (mail_items, suppressed) = self.choose(lane, rule, items, now).await?;
        let count = mail_items.len() + suppressed.len() + silenced;
        let quiet = Attempt::unsendable(now, String::new());
        let states = match suppressed.is_empty() {
            true => Default::default(),
            false => self.store.email_alert_states(&lane.sub.name).await?,
        };
        for item in &suppressed {
            let quiet = Attempt {
                error: None,
                ..quiet.clone()
            };
            self.record(lane, outcome(item, &quiet, DeliveryUpdate::Suppressed))
                .await?;
            plan.settled(rule, item, states.get(&alert_key(item)).copied(), now);
        }
        if mail_items.is_empty() {
            self.apply(lane, plan).await?;
            return Ok(count);
        }
        let events: Vec<Value> = mail_items.iter().map(|i| i.event.clone()).collect();
        let mut mail = compose(rule, &events);
        if let Some(firing_for) = self.reminding(lane, &mail_items, now).await? {
            mail.subject = reminder_subject(&mail.subject, firing_for);
        }
        let started = std::time::Instant::now();
        let thread = match &self.mailer {
            Some(mailer) => Some(Threading {
                message_id: mailer.new_message_id(),
                answers: self.store.email_group_thread(&lane.sub.name, group).await?,
            }),
            None => None,
        };
        let sent = match (&self.mailer, &thread) {
            (Some(mailer), Some(thread)) => {
                mailer.send(&rule.to, &mail, thread, lane.sub.timeout).await
            }
            _ => Err(MailError {
                transient: true,
                code: None,
                message: "no [smtp] server is configured".to_owned(),
            }),
        };
        let attempt = mail_attempt(&sent, now, started.elapsed());
        let updates = self.mail_updates(&lane.sub, &mail_items, &sent);
        for (item, update) in mail_items.iter().zip(updates) {
            self.record(lane, outcome(item, &attempt, update)).await?;
        }
        match sent {
            Ok(()) => {
                let alerts: Vec<(String, bool)> = events
                    .iter()
                    .filter_map(alert_of)
                    .map(|a| (a.key, a.firing))
                    .collect();
                self.store
                    .record_mailed(&lane.sub.name, group, &alerts, now)
                    .await?;
                if let Some(thread) = thread.filter(|t| t.answers.is_none()) {
                    self.store
                        .start_email_thread(&lane.sub.name, group, &thread.message_id)
                        .await?;
                }
                for item in &mail_items {
                    plan.mailed(rule, item, now);
                }
                self.apply(lane, plan).await?;
                tracing::info!(rule = %lane.sub.name, group, alerts = events.len(), subject = %mail.subject, "mail sent");
            }
            Err(e) => {
                self.apply(lane, plan).await?;
                tracing::warn!(rule = %lane.sub.name, group, error = %e.message, transient = e.transient, "mail not sent")
            }
        }
        Ok(count)
    }

    /// What each delivery of a mail becomes: delivered, or retried as a
    /// group or dead (see `unsent_verdicts`).
    fn mail_updates(
        &self,
        sub: &Subscription,
        items: &[Item],
        sent: &Result<(), MailError>,
    ) -> Vec<DeliveryUpdate> {
        let error = match sent {
            Ok(()) => return vec![DeliveryUpdate::Delivered; items.len()],
            Err(error) => error,
        };
        let numbers: Vec<u32> = items.iter().map(|i| i.delivery.attempts + 1).collect();
        let now = self.clock.now();
        unsent_verdicts(&sub.retry, &numbers, error.transient, rand::random::<f64>())
            .into_iter()
            .map(|verdict| self.update_for(verdict, now))
            .collect()
    }

    /// Splits a group's deliveries into those worth a mail and those to
    /// settle quietly. Per alert only the newest event counts.
    async fn choose(
        &self,
        lane: &Lane,
        rule: &EmailRule,
        items: Vec<Item>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Item>, Vec<Item>), StoreError> {
        let states = self.store.email_alert_states(&lane.sub.name).await?;
        let newest: BTreeMap<String, String> = items
            .iter()
            .filter_map(|i| alert_of(&i.event).map(|a| (a.key, i.delivery.id.clone())))
            .collect();
        let (mut mail, mut quiet) = (Vec::new(), Vec::new());
        for item in items {
            let keep = match alert_of(&item.event) {
                None => true,
                Some(alert) => {
                    newest.get(&alert.key) == Some(&item.delivery.id)
                        && worth_mailing(rule, &alert, states.get(&alert.key).copied(), now)
                }
            };
            if keep {
                mail.push(item);
            } else {
                quiet.push(item);
            }
        }
        Ok((mail, quiet))
    }
}

/// What a flush changes in the rule's reminders: alerts that (still)
/// fire and when to remind of them, and alerts that resolved.
#[derive(Default)]
struct ReminderPlan {
    set: BTreeMap<String, Reminder>,
    clear: BTreeSet<String>,
}

impl ReminderPlan {
    fn fire(&mut self, reminder: Reminder) {
        self.clear.remove(&reminder.alert_key);
        self.set.insert(reminder.alert_key.clone(), reminder);
    }

    fn resolve(&mut self, key: String) {
        self.set.remove(&key);
        self.clear.insert(key);
    }

    /// An event settled without a mail. A resolution ends the reminders;
    /// a newer failure of an alert mailed within `repeat_interval` becomes
    /// what its reminder mails, when that interval is over.
    fn settled(
        &mut self,
        rule: &EmailRule,
        item: &Item,
        state: Option<AlertState>,
        now: DateTime<Utc>,
    ) {
        match (alert_of(&item.event), state) {
            (Some(alert), _) if !alert.firing => self.resolve(alert.key),
            (Some(alert), Some(state)) if state.firing => self.fire(Reminder {
                alert_key: alert.key,
                delivery_id: item.delivery.id.clone(),
                firing_since: fired_at(&item.event, now),
                remind_at: after(state.last_notified_at, rule.repeat_interval),
            }),
            _ => {}
        }
    }

    /// A mailed event: a firing alert is reminded of after
    /// `repeat_interval`; a resolved one no more.
    fn mailed(&mut self, rule: &EmailRule, item: &Item, now: DateTime<Utc>) {
        match alert_of(&item.event) {
            Some(alert) if alert.firing => self.fire(Reminder {
                alert_key: alert.key,
                delivery_id: item.delivery.id.clone(),
                firing_since: fired_at(&item.event, now),
                remind_at: after(now, rule.repeat_interval),
            }),
            Some(alert) => self.resolve(alert.key),
            None => {}
        }
    }
}

impl Inner {
    /// Settles the deliveries a silence holds back as suppressed (with the
    /// silence's id) and returns the others. A firing alert held back is
    /// reminded of when the silence ends (or after `repeat_interval`, if
    /// sooner): if it still fires then, its mail goes out as usual.
    async fn hold_back(
        &self,
        lane: &Lane,
        rule: &EmailRule,
        items: Vec<Item>,
        now: DateTime<Utc>,
        plan: &mut ReminderPlan,
    ) -> Result<(Vec<Item>, usize), StoreError> {
        let silences = self.store.active_silences(now).await?;
        let (mut rest, mut held) = (Vec::new(), 0);
        for item in items {
            let Some(silence) = silencing(&silences, &item.event, now) else {
                rest.push(item);
                continue;
            };
            let update = DeliveryUpdate::Silenced {
                silence_id: silence.id.clone(),
            };
            self.record(lane, outcome(&item, &Attempt::silenced(now), update))
                .await?;
            held += 1;
            match alert_of(&item.event) {
                Some(alert) if alert.firing => plan.fire(Reminder {
                    alert_key: alert.key,
                    delivery_id: item.delivery.id.clone(),
                    firing_since: fired_at(&item.event, now),
                    remind_at: silence.ends_at.min(after(now, rule.repeat_interval)),
                }),
                Some(alert) => plan.resolve(alert.key),
                None => {}
            }
        }
        Ok((rest, held))
    }

    /// How long the longest-firing alert of a mail has fired, when the
    /// mail reminds of alerts already told (or held back) before.
    async fn reminding(
        &self,
        lane: &Lane,
        items: &[Item],
        now: DateTime<Utc>,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let reminders = self.store.email_reminders(&lane.sub.name).await?;
        Ok(items
            .iter()
            .filter(|i| i.delivery.attempts > 0)
            .filter_map(|i| {
                let alert = alert_of(&i.event).filter(|a| a.firing)?;
                let (delivery_id, since) = reminders.get(&alert.key)?;
                (delivery_id == &i.delivery.id).then(|| (now - *since).to_std().unwrap_or_default())
            })
            .max())
    }

    async fn apply(&self, lane: &Lane, plan: ReminderPlan) -> Result<(), StoreError> {
        let set: Vec<Reminder> = plan.set.into_values().collect();
        if !set.is_empty() {
            self.store.set_reminders(&lane.sub.name, &set).await?;
        }
        let clear: Vec<String> = plan.clear.into_iter().collect();
        if !clear.is_empty() {
            self.store.clear_reminders(&lane.sub.name, &clear).await?;
        }
        Ok(())
    }
}

/// The key of the item's alert (empty for an event that is none).
fn alert_key(item: &Item) -> String {
    alert_of(&item.event).map(|a| a.key).unwrap_or_default()
}

/// When the event's alert fired: the envelope's `time`, else `now`.
fn fired_at(event: &Value, now: DateTime<Utc>) -> DateTime<Utc> {
    event["time"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(now, |t| t.with_timezone(&Utc))
}

fn outcome<'a>(item: &'a Item, attempt: &'a Attempt, update: DeliveryUpdate) -> Outcome<'a> {
    Outcome {
        delivery_id: &item.delivery.id,
        event: &item.delivery.body,
        number: item.delivery.attempts + 1,
        attempt,
        update,
    }
}

/// The attempt every delivery in a mailed group records.
fn mail_attempt(
    sent: &Result<(), MailError>,
    now: DateTime<Utc>,
    duration: std::time::Duration,
) -> Attempt {
    let (result, error) = match sent {
        Ok(()) => (
            AttemptResult::Status {
                code: 250,
                retry_after: None,
            },
            None,
        ),
        Err(e) => {
            let result = match e.code {
                Some(code) => AttemptResult::Status {
                    code,
                    retry_after: None,
                },
                None => AttemptResult::NoResponse,
            };
            (result, Some(e.message.clone()))
        }
    };
    Attempt {
        started_at: now,
        duration,
        result,
        response_excerpt: None,
        error,
    }
}
