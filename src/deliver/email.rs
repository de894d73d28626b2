//! Email lanes: instead of one message per delivery, an email rule's
//! pending deliveries are grouped (see `core::email`) and each group that
//! is ready goes out as one mail. Every delivery in the group then records
//! the same attempt; deliveries that need no mail (an alert already mailed
//! within `repeat_interval`, a resolution nobody heard the alert of, a
//! duplicate folded into a newer event) are settled as suppressed.
//!
//! A mail the server refuses for now (any 4xx, or no answer) is retried on
//! the rule's schedule; only a 5xx is permanent (RFC 5321 §4.2.1). A group
//! is retried whole: its deliveries share one retry time, and while they
//! wait, new alerts of the group wait with them, so that the group goes
//! out again as one mail.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::dispatcher::{Inner, Lane, Outcome};
use super::http::Attempt;
use super::mail::{MailError, Threading};
use crate::core::email::{
    alert_of, compose, group_key, ready_at, unsent_verdicts, worth_mailing, EmailRule,
};
use crate::core::retry::AttemptResult;
use crate::core::subscription::Subscription;
use crate::store::{DeliveryUpdate, PendingDelivery, StoreError};

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
        let (mail_items, suppressed) = self.choose(lane, rule, items, now).await?;
        let count = mail_items.len() + suppressed.len();
        let quiet = Attempt::unsendable(now, String::new());
        for item in &suppressed {
            let quiet = Attempt {
                error: None,
                ..quiet.clone()
            };
            self.record(lane, outcome(item, &quiet, DeliveryUpdate::Suppressed))
                .await?;
        }
        if mail_items.is_empty() {
            return Ok(count);
        }
        let events: Vec<Value> = mail_items.iter().map(|i| i.event.clone()).collect();
        let mail = compose(rule, &events);
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
                tracing::info!(rule = %lane.sub.name, group, alerts = events.len(), subject = %mail.subject, "mail sent");
            }
            Err(e) => {
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
