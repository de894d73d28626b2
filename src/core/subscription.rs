//! Subscriptions: which events go where, and how.
//!
//! Every subscription shares a filter, a timeout, a retry policy and a bound
//! on attempts in flight; its [`Target`] says what an attempt is — a signed
//! webhook (optionally with a templated body) or a healthcheck ping.

use std::time::Duration;

use serde_json::Value;

use super::email::EmailRule;
use super::event::{EventType, Scope};
use super::filter::EventFilter;
use super::retry::RetryPolicy;
use super::signature::SigningSecret;
use super::template::{Template, TemplateError};

/// Longest per-attempt timeout: a receiver that needs more than five
/// minutes to answer is down, and a longer lease only delays the retry.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Most attempts in flight for one subscription: each holds a socket, and
/// no receiver needs more concurrency than this from one sender.
pub const MAX_IN_FLIGHT: usize = 1024;

#[derive(Debug, Clone)]
pub struct Subscription {
    /// Unique; deliveries and the delivery log refer to it.
    pub name: String,
    /// Where it was declared, as errors name its fields: `webhooks[0]` in
    /// the configuration file, `spec` over the API.
    pub config_key: String,
    pub filter: EventFilter,
    /// Per-attempt timeout, connection included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Attempts in flight at once for this subscription; a dead receiver
    /// holds at most this many and nobody else's.
    pub max_in_flight: usize,
    pub target: Target,
    /// Deliveries a silence matches are suppressed instead of sent (always
    /// so for email rules; webhooks and healthchecks opt in).
    pub respect_silences: bool,
    /// Which deliveries must go out one at a time, in event order.
    pub ordering: DeliveryOrder,
    /// At most this many attempts per period, fleet-wide; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

/// Which deliveries of a subscription form an ordered lane: within one,
/// a delivery is attempted only once every earlier one (by event order)
/// is finished — delivered, failed for good or dead — so a retried
/// `started` is never overtaken by its `succeeded`. Lanes are independent
/// of each other. An event without the lane's scope (no cube, no batch)
/// belongs to no lane and goes out in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// Today's parallel lanes, up to `max_in_flight` at once.
    #[default]
    None,
    /// One lane per (environment, cube).
    Cube,
    /// One lane per batch.
    Batch,
    /// The whole subscription is one lane (Git archives; not configurable).
    Subscription,
}

impl DeliveryOrder {
    /// Parses the `ordering` key.
    pub fn parse(text: &str) -> Option<DeliveryOrder> {
        match text {
            "none" => Some(DeliveryOrder::None),
            "cube" => Some(DeliveryOrder::Cube),
            "batch" => Some(DeliveryOrder::Batch),
            _ => None,
        }
    }

    /// As the `ordering` key writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOrder::None => "none",
            DeliveryOrder::Cube => "cube",
            DeliveryOrder::Batch => "batch",
            DeliveryOrder::Subscription => "subscription",
        }
    }
}

/// A token bucket: `per` attempts per `period`, with a burst of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per: u32,
    pub period: Duration,
}

/// Most attempts a rate limit may allow per period.
pub const MAX_RATE: u32 = 1_000_000;

/// A bucket's state as stored: tokens in thousandths (whole numbers keep
/// both stores exact), when it was last refilled, since when due work has
/// waited for a token, and how long work has waited in all (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub milli_tokens: i64,
    pub refilled_at: i64,
    pub waiting_since: Option<i64>,
    pub waited_ms: i64,
}

impl Bucket {
    /// How long work has waited for the limit in all, by `now_ms`.
    pub fn waited(&self, now_ms: i64) -> std::time::Duration {
        let ongoing = self
            .waiting_since
            .map_or(0, |since| (now_ms - since).max(0));
        Duration::from_millis((self.waited_ms + ongoing).max(0) as u64)
    }

    /// Closes a claim: tokens taken but not used go back, and a wait for
    /// the limit starts (`throttled`: due work was left for want of a
    /// token) or ends. Returns the wait that ended now (ms), if any.
    pub fn settle(&mut self, unused: usize, throttled: bool, now_ms: i64) -> i64 {
        self.milli_tokens += unused as i64 * 1000;
        match (throttled, self.waiting_since) {
            (true, None) => {
                self.waiting_since = Some(now_ms);
                0
            }
            (false, Some(since)) => {
                self.waiting_since = None;
                let waited = (now_ms - since).max(0);
                self.waited_ms += waited;
                waited
            }
            _ => 0,
        }
    }
}

impl RateLimit {
    /// Parses `"20/s"` or `"600/m"`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let wrong = || {
            format!("`{text}` is not a rate: write attempts per second or minute, e.g. \"20/s\" or \"600/m\"")
        };
        let (count, unit) = text.trim().split_once('/').ok_or_else(wrong)?;
        let period = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(wrong()),
        };
        let per: u32 = count.parse().map_err(|_| wrong())?;
        if per == 0 || per > MAX_RATE {
            return Err(format!(
                "`{text}` must allow between 1 and {MAX_RATE} attempts per period"
            ));
        }
        Ok(RateLimit { per, period })
    }

    /// As the `rate_limit` key writes it.
    pub fn format(&self) -> String {
        let unit = if self.period.as_secs() == 60 {
            "m"
        } else {
            "s"
        };
        format!("{}/{unit}", self.per)
    }

    fn capacity(&self) -> i64 {
        i64::from(self.per) * 1000
    }

    /// Refills `bucket` (a new one starts full) up to `now_ms`, then takes
    /// up to `want` whole tokens. Returns how many were taken, the bucket
    /// after, and — when fewer than `want` were available — the time (unix
    /// ms) the next token arrives.
    pub fn take(&self, bucket: Option<Bucket>, now_ms: i64, want: usize) -> Taken {
        let period_ms = self.period.as_millis() as i64;
        let previous = bucket.unwrap_or_default();
        let tokens = match bucket {
            None => self.capacity(),
            Some(b) => {
                let elapsed = (now_ms - b.refilled_at).max(0);
                // Thousandths of a token gained: per tokens each period.
                let gained = elapsed.saturating_mul(self.capacity()) / period_ms;
                b.milli_tokens.saturating_add(gained).min(self.capacity())
            }
        };
        let granted = ((tokens / 1000) as usize).min(want);
        let left = tokens - granted as i64 * 1000;
        let next_token_at = (granted < want).then(|| {
            let missing = 1000 - left % 1000;
            let capacity = self.capacity();
            now_ms + ((missing * period_ms + capacity - 1) / capacity).max(1)
        });
        Taken {
            granted,
            bucket: Bucket {
                milli_tokens: left,
                refilled_at: now_ms,
                ..previous
            },
            next_token_at,
        }
    }
}

/// What [`RateLimit::take`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub granted: usize,
    pub bucket: Bucket,
    pub next_token_at: Option<i64>,
}

impl Taken {
    /// Whether the bucket ran short: fewer tokens than wanted, all used
    /// (`leased` of them). Only then can due work be waiting for a token.
    pub fn ran_short(&self, leased: usize) -> bool {
        self.next_token_at.is_some() && leased == self.granted
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    Webhook(Webhook),
    Healthcheck(Healthcheck),
    /// Grouped email alerts through the configured SMTP server.
    Email(EmailRule),
    /// Project documents committed to a Git repository.
    GitArchive(GitArchive),
    /// OpenLineage run events for batches (`core::openlineage`).
    OpenLineage(super::openlineage::OpenLineage),
}

/// Writes each project event's XML into a Git repository, one commit per
/// event, in event order.
#[derive(Debug, Clone)]
pub struct GitArchive {
    /// The repository (created if missing).
    pub path: std::path::PathBuf,
    pub branch: String,
    /// Where a project's file goes, rendered over the event.
    pub layout: Template,
    /// Pushed to after each commit, if set.
    pub remote: Option<String>,
}

/// The events a Git archive takes when none are configured.
pub const GIT_ARCHIVE_EVENTS: [EventType; 6] = [
    EventType::ProjectPublished,
    EventType::ProjectSnapshotCreated,
    EventType::ProjectPromoted,
    EventType::ProjectImported,
    EventType::ProjectDeleted,
    EventType::ProjectDeletedUnpublished,
];

/// A signed HTTP request per event. Without a body template the body is
/// the CloudEvents envelope; with one, whatever the template renders.
#[derive(Clone)]
pub struct Webhook {
    pub url: Template,
    /// `None` only for templated webhooks to APIs that verify nothing.
    pub secret: Option<SigningSecret>,
    /// Secrets replaced by a rotation, still signing until their expiry
    /// (unix seconds) so receivers can switch over.
    pub previous_secrets: Vec<(SigningSecret, i64)>,
    pub method: String,
    /// Extra request headers (never `webhook-*`).
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Option<Template>,
    /// How project events carry their XML.
    pub project_xml: ProjectXml,
}

/// How a webhook sends a project event's XML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectXml {
    /// In the CloudEvents envelope, as `data.project_xml`.
    #[default]
    Inline,
    /// As the whole body (`application/xml`), the event's metadata in
    /// `herald-*` headers and query parameters — what legacy receivers of
    /// project webhooks expect.
    Raw,
    /// Not at all (the envelope still has its digest and size).
    Omit,
}

/// Header values may hold tokens: they are never printed.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &self.secret)
            .field("previous_secrets", &self.previous_secrets.len())
            .field("method", &self.method)
            .field("headers", &header_names)
            .field("content_type", &self.content_type)
            .field("body", &self.body)
            .field("project_xml", &self.project_xml)
            .finish()
    }
}

/// A healthchecks.io-style monitor: started → `<url>/start`, succeeded →
/// `<url>`, failed or stalled → `<url>/fail`, each with `rid=<run id>` so
/// the monitor pairs a start with its finish.
#[derive(Debug, Clone)]
pub struct Healthcheck {
    pub url: Template,
}

/// Which healthcheck endpoint an event pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

impl Ping {
    pub fn for_event(event_type: &str) -> Option<Ping> {
        match EventType::parse(event_type)? {
            EventType::BatchStarted => Some(Ping::Start),
            EventType::BatchSucceeded => Some(Ping::Success),
            EventType::BatchFailed | EventType::BatchStalled => Some(Ping::Fail),
            // A gate's check: fine when it opens, failing when it is
            // blocked or misses its deadline.
            EventType::GateOpened => Some(Ping::Success),
            EventType::GateBlocked | EventType::GateMissed => Some(Ping::Fail),
            _ => None,
        }
    }

    /// Appends the endpoint suffix and the run id to the monitor's URL.
    pub fn url(self, base: &str, run_id: &str) -> String {
        let suffix = match self {
            Ping::Start => "/start",
            Ping::Success => "",
            Ping::Fail => "/fail",
        };
        let (path, query) = match base.split_once('?') {
            Some((path, query)) => (path, format!("{query}&")),
            None => (base, String::new()),
        };
        format!("{}{suffix}?{query}rid={run_id}", path.trim_end_matches('/'))
    }
}

/// The events a healthcheck subscription takes when none are configured.
pub const HEALTHCHECK_EVENTS: [EventType; 4] = [
    EventType::BatchStarted,
    EventType::BatchSucceeded,
    EventType::BatchFailed,
    EventType::BatchStalled,
];

/// healthchecks.io wants run ids to be UUIDs. A batch id that is one is used
/// as it is; any other maps to a name-based UUID (v5), the same every time.
pub fn run_id(batch_id: &str) -> String {
    match uuid::Uuid::parse_str(batch_id) {
        Ok(id) => id.to_string(),
        Err(_) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, batch_id.as_bytes()).to_string(),
    }
}

impl Subscription {
    pub fn wants(&self, event_type: EventType, scope: &Scope) -> bool {
        if self.filter.matches(event_type, scope) || self.takes_gate_openings(event_type, scope) {
            return true;
        }
        // An email rule that sends resolved notices also takes the successes
        // that can resolve what it alerts on: the cube's failures, stalls or
        // overdue refreshes.
        matches!(&self.target, Target::Email(rule) if rule.send_resolved)
            && matches!(
                event_type,
                EventType::BatchSucceeded | EventType::BatchRecovered
            )
            && [EventType::BatchFailed, EventType::BatchStalled]
                .iter()
                .any(|t| self.filter.matches(*t, scope))
    }

    /// An email rule that sends resolved notices and takes missed gates
    /// also takes their openings, which resolve them.
    fn takes_gate_openings(&self, event_type: EventType, scope: &Scope) -> bool {
        matches!(&self.target, Target::Email(rule) if rule.send_resolved)
            && event_type == EventType::GateOpened
            && self.filter.matches(EventType::GateMissed, scope)
    }

    /// Identifies the target: when it changes (new URL), a subscription
    /// disabled by a 410 from the old target is enabled again.
    pub fn target_fingerprint(&self) -> String {
        match &self.target {
            Target::Webhook(w) => w.url.source().to_owned(),
            Target::Healthcheck(h) => h.url.source().to_owned(),
            Target::Email(rule) => rule.to.join(","),
            Target::GitArchive(g) => g.path.display().to_string(),
            Target::OpenLineage(o) => o.url.clone(),
        }
    }

    /// The URL it sends to, as configured (it may hold placeholders).
    pub fn target_url(&self) -> Option<&str> {
        match &self.target {
            Target::Webhook(w) => Some(w.url.source()),
            Target::Healthcheck(h) => Some(h.url.source()),
            Target::OpenLineage(o) => Some(&o.url),
            Target::Email(_) | Target::GitArchive(_) => None,
        }
    }

    /// The templates of this subscription, each with its configuration key.
    pub fn templates(&self) -> Vec<(&'static str, &Template)> {
        match &self.target {
            Target::Webhook(w) => {
                let mut list = vec![("url", &w.url)];
                list.extend(w.body.as_ref().map(|b| ("body_template", b)));
                list
            }
            Target::Healthcheck(h) => vec![("url", &h.url)],
            Target::Email(rule) => rule.link.iter().map(|l| ("link_template", l)).collect(),
            Target::GitArchive(g) => vec![("layout", &g.layout)],
            Target::OpenLineage(o) => vec![("job_name", &o.job_name)],
        }
    }

    /// Renders every template against a sample of each event type the
    /// filter can match. Returns the first failure with the key and type.
    pub fn check_templates(
        &self,
        samples: &[(EventType, Value)],
    ) -> Result<(), (String, TemplateError)> {
        for (event_type, sample) in samples {
            if !self.filter.could_match(*event_type) {
                continue;
            }
            for (key, template) in self.templates() {
                // A mail's link belongs to a cube; events about no cube
                // (Herald's own trouble reports) are mailed without one.
                if key == "link_template" && sample["data"].get("cube_id").is_none() {
                    continue;
                }
                template.check(sample).map_err(|e| {
                    let message = format!("{} (rendering a sample {event_type} event)", e.message);
                    (key.to_owned(), TemplateError { message })
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_go_to_the_healthchecks_endpoints_with_a_run_id() {
        let base = "https://hc.example/ping/abc";
        assert_eq!(
            Ping::Start.url(base, "r1"),
            "https://hc.example/ping/abc/start?rid=r1"
        );
        assert_eq!(
            Ping::Success.url(base, "r1"),
            "https://hc.example/ping/abc?rid=r1"
        );
        assert_eq!(
            Ping::Fail.url(&format!("{base}/"), "r1"),
            "https://hc.example/ping/abc/fail?rid=r1"
        );
        assert_eq!(
            Ping::Fail.url("http://h/p?x=1", "r1"),
            "http://h/p/fail?x=1&rid=r1"
        );
        assert_eq!(Ping::for_event("aggregate.batch.stalled"), Some(Ping::Fail));
        assert_eq!(Ping::for_event("environment.created"), None);
    }

    #[test]
    fn rates_parse_per_second_or_minute_and_refuse_the_rest() {
        let r = RateLimit::parse("20/s").unwrap();
        assert_eq!((r.per, r.period), (20, Duration::from_secs(1)));
        assert_eq!(RateLimit::parse("600/m").unwrap().format(), "600/m");
        for bad in ["0/s", "fast", "20", "20/h", "-1/s", "2000000/s", ""] {
            assert!(RateLimit::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(DeliveryOrder::parse("cube"), Some(DeliveryOrder::Cube));
        assert_eq!(DeliveryOrder::parse("x"), None);
    }

    #[test]
    fn a_bucket_starts_full_and_refills_at_the_rate() {
        let r = RateLimit::parse("10/s").unwrap();
        let t = r.take(None, 0, 25);
        assert_eq!(t.granted, 10);
        // Empty: the next token comes a tenth of a second later.
        assert_eq!(t.next_token_at, Some(100));
        let t2 = r.take(Some(t.bucket), 250, 25);
        assert_eq!(t2.granted, 2);
        assert_eq!(t2.next_token_at, Some(300));
        // Never more than the burst, however long it rested.
        let t3 = r.take(Some(t2.bucket), 1_000_000, 100);
        assert_eq!(t3.granted, 10);
        let mut b = t3.bucket;
        assert_eq!(b.settle(0, true, 1_000_000), 0);
        assert_eq!(b.settle(2, false, 1_000_400), 400);
        assert_eq!((b.waited_ms, b.milli_tokens), (400, 2000));
        let enough = r.take(None, 0, 3);
        assert_eq!((enough.granted, enough.next_token_at), (3, None));
    }

    #[test]
    fn run_ids_are_uuids_and_stable() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(run_id(id), id);
        assert_eq!(run_id("b-1"), run_id("b-1"));
        assert_ne!(run_id("b-1"), run_id("b-2"));
        assert!(uuid::Uuid::parse_str(&run_id("b-1")).is_ok());
    }
}
