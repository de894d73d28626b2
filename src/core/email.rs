//! Email alerts, the pure part: what an event means as an alert, how alerts
//! group, when a group is ready to mail, and what the mail says.
//!
//! The model follows Prometheus Alertmanager:
//! - an *alert* is a cube failing (or stalling, or being overdue), or a
//!   subscription in trouble; a success of that cube *resolves* it;
//! - alerts group by rule and by labels (default environment + cube);
//! - a new group waits `group_wait` to collect a burst into one mail; a
//!   group that was mailed waits `group_interval` before its next mail;
//! - an alert already mailed and still firing is mailed again only after
//!   `repeat_interval`; a resolved alert gets a "recovered" mail when the
//!   rule sends resolved notices.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::event::EventType;
use super::retry::{AttemptResult, RetryPolicy, Verdict};
use super::template::Template;
use super::time::{after, duration_words, to_the_second};

/// What an email subscription adds to the common subscription fields.
#[derive(Debug, Clone)]
pub struct EmailRule {
    pub to: Vec<String>,
    pub group_by: Vec<GroupLabel>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Mail "recovered" when a mailed alert resolves.
    pub send_resolved: bool,
    /// A link per batch, rendered over the event (e.g. to the cube's page).
    pub link: Option<Template>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLabel {
    Environment,
    Project,
    Cube,
}

impl GroupLabel {
    pub fn parse(text: &str) -> Option<GroupLabel> {
        match text {
            "environment" => Some(GroupLabel::Environment),
            "project" => Some(GroupLabel::Project),
            "cube" => Some(GroupLabel::Cube),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            GroupLabel::Environment => "environment_id",
            GroupLabel::Project => "project_id",
            GroupLabel::Cube => "cube_id",
        }
    }
}

/// The events an email rule takes when none are configured.
pub const DEFAULT_EVENTS: [EventType; 6] = [
    EventType::BatchFailed,
    EventType::BatchStalled,
    EventType::RefreshOverdue,
    EventType::GateMissed,
    EventType::DeliveryDead,
    EventType::SubscriptionDisabled,
];

/// How an event bears on an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What the alert is about: `cube:prod/sales`, `subscription:etl`.
    pub key: String,
    pub firing: bool,
}

/// The alert an event fires or resolves; `None` for events that are
/// neither (a start, an environment change).
pub fn alert_of(event: &Value) -> Option<Alert> {
    let event_type = EventType::parse(event["type"].as_str()?)?;
    let data = &event["data"];
    let cube = || {
        format!(
            "cube:{}/{}",
            text(&data["environment_id"]),
            text(&data["cube_id"])
        )
    };
    let (key, firing) = match event_type {
        EventType::BatchFailed | EventType::BatchStalled | EventType::RefreshOverdue => {
            (cube(), true)
        }
        EventType::BatchSucceeded | EventType::BatchRecovered => (cube(), false),
        EventType::DeliveryDead | EventType::SubscriptionDisabled => (
            format!("subscription:{}", text(&data["subscription"])),
            true,
        ),
        // A missed deadline fires until the gate opens.
        EventType::GateMissed | EventType::GateOpened => (
            format!(
                "gate:{}/{}",
                text(&data["environment_id"]),
                text(&data["gate"])
            ),
            event_type == EventType::GateMissed,
        ),
        _ => return None,
    };
    Some(Alert { key, firing })
}

/// The group an event falls in, within its rule.
pub fn group_key(rule: &EmailRule, event: &Value) -> String {
    let data = &event["data"];
    let labels: Vec<String> = rule
        .group_by
        .iter()
        .filter_map(|label| {
            data[label.field()]
                .as_str()
                .map(|v| format!("{}={v}", label.field()))
        })
        .collect();
    if labels.is_empty() {
        "all".to_owned()
    } else {
        labels.join(",")
    }
}

/// When a group with pending alerts may be mailed: `group_wait` after its
/// oldest pending alert, and not before `group_interval` after its last
/// mail.
pub fn ready_at(
    rule: &EmailRule,
    oldest_pending: DateTime<Utc>,
    last_sent: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let wait = after(oldest_pending, rule.group_wait);
    match last_sent {
        Some(sent) => wait.max(after(sent, rule.group_interval)),
        None => wait,
    }
}

/// What becomes of each delivery of a group whose mail did not go out,
/// given each one's attempt number (1-based) and whether the server's
/// refusal was temporary.
///
/// RFC 5321 §4.2.1: a 4xx reply (like no answer at all) means "try
/// again", only a 5xx is permanent. SMTP codes are not HTTP statuses, so a
/// temporary refusal is put to the retry policy as `NoResponse`. A
/// delivery whose schedule is used up is dead; all the others retry after
/// one wait, the longest any of them has reached, with one jitter draw
/// (`unit`), so that the group goes out again as one mail rather than
/// scattered over the jitter band.
pub fn unsent_verdicts(
    policy: &RetryPolicy,
    numbers: &[u32],
    temporary: bool,
    unit: f64,
) -> Vec<Verdict> {
    if !temporary {
        return vec![Verdict::Dead; numbers.len()];
    }
    let verdicts: Vec<Verdict> = numbers
        .iter()
        .map(|&n| policy.verdict(n, AttemptResult::NoResponse, unit))
        .collect();
    let wait = verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::RetryIn(wait) => Some(*wait),
            _ => None,
        })
        .max();
    verdicts
        .into_iter()
        .map(|v| match (v, wait) {
            (Verdict::RetryIn(_), Some(wait)) => Verdict::RetryIn(wait),
            (v, _) => v,
        })
        .collect()
}

/// What Herald last told this rule's recipients about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertState {
    pub firing: bool,
    pub last_notified_at: DateTime<Utc>,
}

/// Whether an event belongs in the next mail, given what was mailed before.
pub fn worth_mailing(
    rule: &EmailRule,
    alert: &Alert,
    state: Option<AlertState>,
    now: DateTime<Utc>,
) -> bool {
    match (alert.firing, state) {
        // Already mailed and still firing: only once repeat_interval passed.
        (true, Some(s)) if s.firing => now >= after(s.last_notified_at, rule.repeat_interval),
        (true, _) => true,
        // A resolution matters only for an alert the recipients heard of.
        (false, Some(s)) => s.firing && rule.send_resolved,
        (false, None) => false,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// How many failed aggregates a mail lists per batch.
const MAX_AGGREGATES: usize = 10;

/// Composes one mail about `events` (envelopes, oldest first), all in one
/// group of one rule.
pub fn compose(rule: &EmailRule, events: &[Value]) -> Mail {
    let subject = subject(events);
    let mut text = String::new();
    let mut html = String::from("<html><body style=\"font-family: sans-serif\">\n");
    for event in events {
        let section = Section::of(rule, event);
        text.push_str(&section.text());
        html.push_str(&section.html());
    }
    text.push_str("-- \nSent by Herald. Alerts are grouped by rule");
    if !rule.group_by.is_empty() {
        let labels: Vec<&str> = rule.group_by.iter().map(|l| l.field()).collect();
        text.push_str(&format!(" and {}", labels.join(", ")));
    }
    text.push_str(".\n");
    html.push_str("<p style=\"color:#777\">Sent by Herald.</p>\n</body></html>\n");
    Mail {
        subject,
        text,
        html,
    }
}

/// `FAILED: refresh of Sales (prod) — 3 of 120 aggregates failed`, or a
/// summary when the mail covers several alerts.
fn subject(events: &[Value]) -> String {
    match events {
        [one] => headline(one),
        many => {
            let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
            for e in many {
                *counts.entry(severity(e)).or_default() += 1;
            }
            let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            let names: Vec<String> = many.iter().map(subject_name).collect();
            let mut subject = format!("{}: {}", parts.join(", "), names.join(", "));
            if subject.chars().count() > 150 {
                subject = subject.chars().take(147).collect::<String>() + "...";
            }
            subject
        }
    }
}

fn severity(event: &Value) -> &'static str {
    match event["type"].as_str().and_then(EventType::parse) {
        Some(EventType::BatchFailed) => "FAILED",
        Some(EventType::BatchStalled) => "STALLED",
        Some(EventType::RefreshOverdue) => "OVERDUE",
        Some(EventType::BatchSucceeded | EventType::BatchRecovered) => "RECOVERED",
        Some(EventType::DeliveryDead) => "DELIVERY DEAD",
        Some(EventType::SubscriptionDisabled) => "SUBSCRIPTION DISABLED",
        Some(EventType::GateMissed) => "GATE MISSED",
        Some(EventType::GateOpened) => "GATE OPEN",
        _ => "EVENT",
    }
}

fn subject_name(event: &Value) -> String {
    let data = &event["data"];
    if let Some(gate) = data["gate"].as_str() {
        return format!("gate {gate} ({})", text(&data["environment_id"]));
    }
    match data["subscription"].as_str() {
        Some(sub) => sub.to_owned(),
        None => format!(
            "{} ({})",
            data["cube_name"]
                .as_str()
                .or(data["cube_id"].as_str())
                .unwrap_or("?"),
            text(&data["environment_id"])
        ),
    }
}

fn headline(event: &Value) -> String {
    let data = &event["data"];
    let cube = subject_name(event);
    match event["type"].as_str().and_then(EventType::parse) {
        Some(EventType::BatchFailed) => {
            let failed = data["failed_aggregates"].as_array().map_or(0, Vec::len);
            let total = data["aggregate_count"].as_u64().unwrap_or(0);
            let how_bad = match (failed, total) {
                (0, _) => text(&data["error_message"]),
                (f, 0) => format!("{f} aggregates failed"),
                (f, t) => format!("{f} of {t} aggregates failed"),
            };
            format!("FAILED: refresh of {cube} — {how_bad}")
        }
        Some(EventType::BatchStalled) => format!("STALLED: refresh of {cube} {}", overrun(event)),
        Some(EventType::RefreshOverdue) => match moment(&data["last_success_at"]) {
            Some(last) => format!("OVERDUE: no successful refresh of {cube} since {last}"),
            None => format!("OVERDUE: refresh of {cube} never succeeded"),
        },
        Some(EventType::BatchSucceeded | EventType::BatchRecovered) => {
            format!("RECOVERED: refresh of {cube} succeeded")
        }
        Some(EventType::DeliveryDead) => format!(
            "DELIVERY DEAD: {} gave up on {} after {} attempts",
            text(&data["subscription"]),
            text(&data["event_type"]),
            text(&data["attempts"])
        ),
        Some(EventType::SubscriptionDisabled) => format!(
            "SUBSCRIPTION DISABLED: {} — {}",
            text(&data["subscription"]),
            text(&data["reason"])
        ),
        Some(EventType::GateMissed) => format!(
            "GATE MISSED: {cube} did not open by {}; waiting for {}",
            text(&data["deadline"]),
            list_text(&data["waiting_for"])
        ),
        Some(EventType::GateOpened) => format!("GATE OPEN: {cube} opened"),
        _ => format!("{}: {}", text(&event["type"]), text(&event["subject"])),
    }
}

/// The subject of a mail that reminds of alerts still firing:
/// `[still failing for 6h] FAILED: refresh of …`.
pub fn reminder_subject(subject: &str, firing_for: Duration) -> String {
    let mins = firing_for.as_secs() / 60;
    let since = match (mins / 60, mins % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    };
    format!("[still failing for {since}] {subject}")
}

/// The strings of a JSON list, comma-separated.
fn list_text(list: &Value) -> String {
    let items: Vec<&str> = list
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    items.join(", ")
}

fn words(ms: &Value) -> String {
    duration_words(Duration::from_millis(ms.as_u64().unwrap_or(0)))
}

/// A timestamp field to the second; `None` when absent or not a time.
fn moment(v: &Value) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
    Some(to_the_second(t.with_timezone(&Utc)))
}

/// `ran 3 s longer than its 3 s allowance`: how far past its allowance a
/// stalled batch was when Herald noticed (the event's time less its start).
fn overrun(event: &Value) -> String {
    let data = &event["data"];
    let allowance = words(&data["allowed_duration_ms"]);
    let time = |v: &Value| DateTime::parse_from_rfc3339(v.as_str()?).ok();
    let ran = time(&event["time"])
        .zip(time(&data["started_at"]))
        .and_then(|(now, start)| (now - start).to_std().ok());
    let allowed = Duration::from_millis(data["allowed_duration_ms"].as_u64().unwrap_or(0));
    match ran {
        Some(ran) => format!(
            "ran {} longer than its {allowance} allowance",
            duration_words(ran.saturating_sub(allowed))
        ),
        None => format!("has run longer than its {allowance} allowance"),
    }
}

/// One event's part of a mail: a headline and labelled facts.
struct Section {
    headline: String,
    facts: Vec<(&'static str, String)>,
    aggregates: Vec<String>,
    more_aggregates: usize,
    link: Option<String>,
}

impl Section {
    fn of(rule: &EmailRule, event: &Value) -> Section {
        let data = &event["data"];
        let mut facts = Vec::new();
        let fields: [(&str, &str); 14] = [
            ("Batch", "batch_id"),
            ("Cube", "cube_name"),
            ("Environment", "environment_id"),
            ("Project", "project_id"),
            ("Started", "started_at"),
            ("Finished", "finished_at"),
            ("Duration", "duration_ms"),
            ("Error", "error_message"),
            ("Expected by", "expected_by"),
            ("Last success", "last_success_at"),
            ("Subscription", "subscription"),
            ("Reason", "reason"),
            ("Event", "event_id"),
            ("Last error", "last_error"),
        ];
        for (label, field) in fields {
            let value = data.get(field).filter(|v| !v.is_null());
            match (field, value) {
                // Present but empty: the cube has no success to show.
                ("last_success_at", None) if data.get(field).is_some() => {
                    facts.push((label, "never succeeded".to_owned()))
                }
                ("duration_ms", Some(ms)) => facts.push((label, words(ms))),
                (_, Some(value)) => {
                    facts.push((label, moment(value).unwrap_or_else(|| text(value))))
                }
                (_, None) => {}
            }
        }
        let all: Vec<String> = data["failed_aggregates"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|a| format!("{}: {}", text(&a["aggregate_id"]), text(&a["error"])))
                    .collect()
            })
            .unwrap_or_default();
        let more_aggregates = all.len().saturating_sub(MAX_AGGREGATES);
        Section {
            headline: headline(event),
            facts,
            aggregates: all.into_iter().take(MAX_AGGREGATES).collect(),
            more_aggregates,
            link: rule.link.as_ref().and_then(|t| t.render(event).ok()),
        }
    }

    fn text(&self) -> String {
        let mut out = format!("{}\n\n", self.headline);
        for (label, value) in &self.facts {
            out.push_str(&format!("  {label:<13} {value}\n"));
        }
        if !self.aggregates.is_empty() {
            out.push_str("  Failed aggregates:\n");
            for a in &self.aggregates {
                out.push_str(&format!("    - {a}\n"));
            }
            if self.more_aggregates > 0 {
                out.push_str(&format!("    ... and {} more\n", self.more_aggregates));
            }
        }
        if let Some(link) = &self.link {
            out.push_str(&format!("  Link          {link}\n"));
        }
        out.push('\n');
        out
    }

    fn html(&self) -> String {
        let mut out = format!("<h3>{}</h3>\n<table>\n", escape(&self.headline));
        for (label, value) in &self.facts {
            out.push_str(&format!(
                "<tr><th align=\"left\">{label}</th><td>{}</td></tr>\n",
                escape(value)
            ));
        }
        out.push_str("</table>\n");
        if !self.aggregates.is_empty() {
            out.push_str("<p>Failed aggregates:</p>\n<ul>\n");
            for a in &self.aggregates {
                out.push_str(&format!("<li>{}</li>\n", escape(a)));
            }
            if self.more_aggregates > 0 {
                out.push_str(&format!("<li>... and {} more</li>\n", self.more_aggregates));
            }
            out.push_str("</ul>\n");
        }
        if let Some(link) = &self.link {
            out.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>\n", escape(link)));
        }
        out
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn rule() -> EmailRule {
        EmailRule {
            to: vec!["ops@example.com".into()],
            group_by: vec![GroupLabel::Environment, GroupLabel::Cube],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
            link: None,
        }
    }

    fn failed(cube: &str, failed: usize) -> Value {
        let aggregates: Vec<Value> = (0..failed)
            .map(|i| json!({"aggregate_id": format!("agg-{i}"), "error": "boom"}))
            .collect();
        json!({"type": "aggregate.batch.failed", "subject": "s", "data": {
            "batch_id": "b-1", "cube_id": cube, "cube_name": cube.to_uppercase(), "environment_id": "prod",
            "aggregate_count": 120, "failed_aggregates": aggregates, "error_message": "disk <full>",
            "started_at": "2026-01-01T06:00:00Z", "finished_at": "2026-01-01T06:10:00Z", "duration_ms": 600000}})
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_failure_subject_says_what_where_and_how_bad() {
        let mail = compose(&rule(), &[failed("sales", 3)]);
        assert_eq!(
            mail.subject,
            "FAILED: refresh of SALES (prod) — 3 of 120 aggregates failed"
        );
        assert!(mail.text.contains("  Batch         b-1\n"), "{}", mail.text);
        assert!(
            mail.text.contains("  Duration      10 min\n"),
            "{}",
            mail.text
        );
        assert!(mail.html.contains("disk &lt;full&gt;"), "HTML is escaped");
    }

    #[test]
    fn a_stall_says_how_far_past_its_allowance_in_words_at_any_scale() {
        let stalled = |ran_ms: i64, allowed_ms: u64| {
            let start = at(0);
            let time = start + chrono::TimeDelta::milliseconds(ran_ms);
            json!({"type": "aggregate.batch.stalled", "time": time.to_rfc3339(), "data": {
                "cube_id": "sales", "environment_id": "prod", "allowed_duration_ms": allowed_ms,
                "started_at": start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}})
        };
        let subject = |e| compose(&rule(), &[e]).subject;
        assert_eq!(
            subject(stalled(6_000, 3_000)),
            "STALLED: refresh of sales (prod) ran 3 s longer than its 3 s allowance"
        );
        assert_eq!(
            subject(stalled(2 * 3_600_000 + 61_000, 7_200_000)),
            "STALLED: refresh of sales (prod) ran 1 min 1 s longer than its 2 h allowance"
        );
        let mail = compose(&rule(), &[stalled(6_250, 3_000)]);
        assert!(
            mail.text.contains("  Started       2023-11-14T22:13:20Z\n"),
            "times to the second: {}",
            mail.text
        );
    }

    #[test]
    fn an_overdue_cube_that_never_succeeded_says_so() {
        let overdue = |last: Value| {
            json!({"type": "aggregate.refresh.overdue", "data": {
                "cube_id": "sales", "environment_id": "prod", "last_success_at": last,
                "expected_by": "2026-03-01T12:00:00.250Z"}})
        };
        let never = compose(&rule(), &[overdue(Value::Null)]);
        assert_eq!(
            never.subject,
            "OVERDUE: refresh of sales (prod) never succeeded"
        );
        assert!(
            never.text.contains("  Last success  never succeeded\n"),
            "{}",
            never.text
        );
        assert!(
            never
                .text
                .contains("  Expected by   2026-03-01T12:00:00Z\n"),
            "{}",
            never.text
        );
        assert!(!never.text.contains(" -\n"), "{}", never.text);
        let once = compose(&rule(), &[overdue(json!("2026-03-01T06:00:00.999Z"))]);
        assert_eq!(
            once.subject,
            "OVERDUE: no successful refresh of sales (prod) since 2026-03-01T06:00:00Z"
        );
    }

    #[test]
    fn the_aggregate_list_is_bounded_with_a_count_of_the_rest() {
        let mail = compose(&rule(), &[failed("sales", 25)]);
        assert!(mail.text.contains("agg-9: boom"));
        assert!(!mail.text.contains("agg-10: boom"));
        assert!(mail.text.contains("... and 15 more"));
    }

    #[test]
    fn a_group_mail_summarises_every_alert_in_its_subject() {
        let mail = compose(&rule(), &[failed("sales", 1), failed("stock", 1)]);
        assert_eq!(mail.subject, "2 FAILED: SALES (prod), STOCK (prod)");
    }

    #[test]
    fn groups_wait_then_respect_their_interval() {
        let r = rule();
        assert_eq!(ready_at(&r, at(0), None), at(30));
        assert_eq!(ready_at(&r, at(100), Some(at(0))), at(300));
        assert_eq!(ready_at(&r, at(1000), Some(at(0))), at(1030));
        assert_eq!(
            group_key(&r, &failed("sales", 0)),
            "environment_id=prod,cube_id=sales"
        );
    }

    #[test]
    fn repeats_wait_for_the_repeat_interval_and_resolutions_need_a_mailed_alert() {
        let r = rule();
        let fire = alert_of(&failed("sales", 1)).unwrap();
        let firing = AlertState {
            firing: true,
            last_notified_at: at(0),
        };
        assert!(worth_mailing(&r, &fire, None, at(0)));
        assert!(!worth_mailing(&r, &fire, Some(firing), at(3600)));
        assert!(worth_mailing(&r, &fire, Some(firing), at(4 * 3600)));
        let resolve = Alert {
            key: fire.key.clone(),
            firing: false,
        };
        assert!(worth_mailing(&r, &resolve, Some(firing), at(10)));
        assert!(!worth_mailing(&r, &resolve, None, at(10)));
        let quiet = EmailRule {
            send_resolved: false,
            ..rule()
        };
        assert!(!worth_mailing(&quiet, &resolve, Some(firing), at(10)));
    }

    #[test]
    fn a_reminder_subject_says_how_long_the_alert_has_fired() {
        let subject = "FAILED: refresh of SALES (prod)";
        assert_eq!(
            reminder_subject(subject, Duration::from_secs(6 * 3600)),
            "[still failing for 6h] FAILED: refresh of SALES (prod)"
        );
        assert_eq!(
            reminder_subject(subject, Duration::from_secs(90 * 60)),
            "[still failing for 1h 30m] FAILED: refresh of SALES (prod)"
        );
        assert!(reminder_subject(subject, Duration::from_secs(300))
            .starts_with("[still failing for 5m]"));
    }

    #[test]
    fn a_temporary_refusal_retries_the_whole_group_after_one_wait() {
        let policy = RetryPolicy {
            schedule: vec![Duration::from_secs(10), Duration::from_secs(300)],
            jitter: 0.2,
        };
        let retry = |secs| Verdict::RetryIn(Duration::from_secs(secs));
        // Deliveries at their 1st, 2nd and 3rd attempt: the last one's
        // schedule is used up; the others wait the longest wait reached.
        assert_eq!(
            unsent_verdicts(&policy, &[1, 2, 3], true, 0.5),
            [retry(300), retry(300), Verdict::Dead]
        );
        assert_eq!(
            unsent_verdicts(&policy, &[1, 1], true, 0.0),
            [retry(8), retry(8)],
            "one jitter draw for the group"
        );
        assert_eq!(
            unsent_verdicts(&policy, &[1, 1], false, 0.5),
            [Verdict::Dead, Verdict::Dead],
            "a permanent refusal is not retried"
        );
    }

    #[test]
    fn intervals_beyond_the_calendar_saturate_instead_of_panicking() {
        let now = Utc::now();
        let forever = EmailRule {
            group_wait: Duration::MAX,
            group_interval: Duration::MAX,
            repeat_interval: Duration::MAX,
            ..rule()
        };
        assert_eq!(ready_at(&forever, now, Some(now)), DateTime::<Utc>::MAX_UTC);
        let state = AlertState {
            firing: true,
            last_notified_at: now,
        };
        let alert = Alert {
            key: "cube:prod/sales".into(),
            firing: true,
        };
        assert!(!worth_mailing(&forever, &alert, Some(state), now));
    }
}
