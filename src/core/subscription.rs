//! A webhook subscription: where to send which events, signed how, retried
//! how often.

use std::time::Duration;

use super::event::{EventType, Scope};
use super::filter::EventFilter;
use super::retry::RetryPolicy;
use super::signature::SigningSecret;

#[derive(Debug, Clone)]
pub struct WebhookSubscription {
    /// Unique; deliveries and the delivery log refer to it.
    pub name: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    pub filter: EventFilter,
    pub secret: SigningSecret,
    /// Extra request headers (never `webhook-*` or `content-type`).
    pub headers: Vec<(String, String)>,
    /// Per-attempt timeout, connection included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Attempts in flight at once for this subscription; a dead receiver
    /// holds at most this many and nobody else's.
    pub max_in_flight: usize,
}

impl WebhookSubscription {
    pub fn wants(&self, event_type: EventType, scope: &Scope) -> bool {
        self.filter.matches(event_type, scope)
    }

    /// Identifies the target: when it changes (new URL), a subscription
    /// disabled by a 410 from the old target is enabled again.
    pub fn target_fingerprint(&self) -> String {
        self.url.clone()
    }
}
