//! Prometheus metrics: counters kept in atomics as work happens, gauges
//! read from the store at scrape time, rendered in the text exposition
//! format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::core::event::EventType;
use crate::store::ScrapeGauges;

/// Upper bounds (seconds) of the attempt-latency histogram buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (jobs) of the ingest group-size histogram: the committer
/// takes at most 512 jobs at once.
const GROUP_SIZES: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Upper bounds (seconds) of the group-commit duration histogram: from the
/// transaction's start to its durable COMMIT.
const COMMIT_SECONDS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

/// Outcomes a delivery attempt (or suppression) can have: `suppressed`
/// is an email alert that needed no mail, `silenced` a delivery a silence
/// held back.
pub const OUTCOMES: [&str; 7] = [
    "delivered",
    "retry",
    "failed",
    "dead",
    "disabled",
    "suppressed",
    "silenced",
];

#[derive(Debug, Default)]
struct Counters {
    events: [AtomicU64; EventType::ALL.len()],
    outcomes: [AtomicU64; OUTCOMES.len()],
    attempt_durations: Histogram<{ BUCKETS.len() }>,
    /// Jobs per ingest group commit, and how long each commit took.
    group_sizes: Histogram<{ GROUP_SIZES.len() }>,
    commit_durations: Histogram<{ COMMIT_SECONDS.len() }>,
    /// Rows removed by retention, by kind (see [`PRUNED_KINDS`]).
    pruned: [AtomicU64; PRUNED_KINDS.len()],
    /// Outcomes by (subscription, outcome); a subscription's first outcome
    /// takes the lock to add its entry, later ones only count.
    by_subscription: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Microseconds due deliveries waited for their rate limits, by
    /// subscription (absent: never waited).
    rate_limit_waits: Mutex<BTreeMap<String, u64>>,
}

/// The kinds of rows retention removes.
pub const PRUNED_KINDS: [&str; 5] = ["deliveries", "attempts", "events", "documents", "batches"];

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    counters: Arc<Counters>,
}

/// What the store says at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxGauges {
    pub pending: i64,
    pub oldest_pending_age: Option<Duration>,
}

impl Metrics {
    /// Counts rows removed by retention.
    pub fn pruned(&self, pruned: &crate::store::Pruned) {
        let counts = [
            pruned.deliveries,
            pruned.attempts,
            pruned.events,
            pruned.documents,
            pruned.batches,
        ];
        for (counter, n) in self.counters.pruned.iter().zip(counts) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds a wait for `subscription`'s rate limit that just ended.
    pub fn rate_limit_waited(&self, subscription: &str, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        let micros = waited.as_micros() as u64;
        add(
            &self.counters.rate_limit_waits,
            subscription.to_owned(),
            micros,
        );
    }

    pub fn event_committed(&self, event_type: EventType) {
        if let Some(i) = EventType::ALL.iter().position(|t| *t == event_type) {
            self.counters.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one attempt's outcome; `duration` is `None` for deliveries
    /// settled without sending (suppressed email alerts).
    pub fn attempt(&self, outcome: &str, duration: Option<Duration>) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counters.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(duration) = duration {
            self.counters
                .attempt_durations
                .observe(&BUCKETS, duration.as_secs_f64());
        }
    }

    /// Counts one group commit of the ingest committer: `jobs` applied in
    /// one transaction, durable after `took`.
    pub fn group_committed(&self, jobs: usize, took: Duration) {
        let c = &self.counters;
        c.group_sizes.observe(&GROUP_SIZES, jobs as f64);
        c.commit_durations
            .observe(&COMMIT_SECONDS, took.as_secs_f64());
    }

    /// Group commits so far: how many, the jobs in them, and the time they
    /// took in all (what the bench prints beside the ingest rate).
    pub fn group_commits(&self) -> GroupCommits {
        let c = &self.counters;
        GroupCommits {
            groups: c.group_sizes.count.load(Ordering::Relaxed),
            jobs: c.group_sizes.sum(),
            seconds: c.commit_durations.sum(),
        }
    }

    /// Counts one outcome of a subscription's delivery (beside
    /// [`Metrics::attempt`], which counts it fleet-wide with its duration).
    pub fn subscription_outcome(&self, subscription: &str, outcome: &str) {
        let Some(outcome) = OUTCOMES.iter().find(|o| **o == outcome) else {
            return;
        };
        let key = (subscription.to_owned(), *outcome);
        add(&self.counters.by_subscription, key, 1);
    }

    /// The per-subscription counters and the store's gauges at `now`.
    pub fn render_scrape(&self, gauges: &ScrapeGauges, now: DateTime<Utc>) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "herald_subscription_deliveries_total",
            "counter",
            "Delivery outcomes by subscription (since this process started).",
        );
        let counts = self
            .counters
            .by_subscription
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((subscription, outcome), n) in counts {
            let s = escape(&subscription);
            let _ = writeln!(
                out,
                "herald_subscription_deliveries_total{{subscription=\"{s}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let age = |at: DateTime<Utc>| (now - at).num_milliseconds().max(0) as f64 / 1000.0;
        header(
            &mut out,
            "herald_subscription_backlog",
            "gauge",
            "Pending deliveries by subscription (absent: none).",
        );
        for (subscription, n, _) in &gauges.backlog {
            let s = escape(subscription);
            let _ = writeln!(
                out,
                "herald_subscription_backlog{{subscription=\"{s}\"}} {n}"
            );
        }
        header(
            &mut out,
            "herald_subscription_oldest_pending_age_seconds",
            "gauge",
            "Age of each subscription's oldest pending delivery.",
        );
        for (subscription, _, oldest) in &gauges.backlog {
            let (s, a) = (escape(subscription), age(*oldest));
            let _ = writeln!(
                out,
                "herald_subscription_oldest_pending_age_seconds{{subscription=\"{s}\"}} {a}"
            );
        }
        header(
            &mut out,
            "herald_batches_running",
            "gauge",
            "Batches running now.",
        );
        let _ = writeln!(out, "herald_batches_running {}", gauges.running_batches);
        header(
            &mut out,
            "herald_batches_stalled",
            "gauge",
            "Batches stalled (outlived their allowance, not finished).",
        );
        let _ = writeln!(out, "herald_batches_stalled {}", gauges.stalled_batches);
        header(
            &mut out,
            "herald_cube_seconds_since_last_success",
            "gauge",
            "Seconds since each cube's latest successful refresh (cubes that never succeeded are absent).",
        );
        for (environment, cube, at) in &gauges.last_success {
            let (e, c, a) = (escape(environment), escape(cube), age(*at));
            let _ = writeln!(
                out,
                "herald_cube_seconds_since_last_success{{environment=\"{e}\",cube=\"{c}\"}} {a}"
            );
        }
        out
    }

    /// The text exposition format.
    pub fn render(&self, gauges: OutboxGauges) -> String {
        let c = &self.counters;
        let mut out = String::new();
        header(
            &mut out,
            "herald_events_ingested_total",
            "counter",
            "Events committed, by type (callers' and Herald's own).",
        );
        for (i, t) in EventType::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_events_ingested_total{{type=\"{t}\"}} {}",
                c.events[i].load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "herald_deliveries_total",
            "counter",
            "Delivery attempts, by outcome.",
        );
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_deliveries_total{{outcome=\"{o}\"}} {}",
                c.outcomes[i].load(Ordering::Relaxed)
            );
        }
        c.attempt_durations.render(
            &mut out,
            &BUCKETS,
            "herald_attempt_duration_seconds",
            "Duration of delivery attempts.",
        );
        c.group_sizes.render(
            &mut out,
            &GROUP_SIZES,
            "herald_ingest_group_jobs",
            "Jobs (events, and Herald's own stall and gate events) per group commit of the ingest committer.",
        );
        c.commit_durations.render(
            &mut out,
            &COMMIT_SECONDS,
            "herald_ingest_commit_duration_seconds",
            "Duration of each group commit, from its transaction's start to the durable COMMIT.",
        );
        header(
            &mut out,
            "herald_outbox_pending",
            "gauge",
            "Deliveries waiting to be sent.",
        );
        let _ = writeln!(out, "herald_outbox_pending {}", gauges.pending);
        header(
            &mut out,
            "herald_outbox_oldest_pending_age_seconds",
            "gauge",
            "Age of the oldest pending delivery (0 when none).",
        );
        let age = gauges.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(out, "herald_outbox_oldest_pending_age_seconds {age}");
        header(
            &mut out,
            "herald_pruned_rows_total",
            "counter",
            "Rows removed by retention, by kind.",
        );
        for (i, kind) in PRUNED_KINDS.iter().enumerate() {
            let n = c.pruned[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "herald_pruned_rows_total{{kind=\"{kind}\"}} {n}");
        }
        header(
            &mut out,
            "herald_rate_limit_wait_seconds_total",
            "counter",
            "Time due deliveries waited for their subscription's rate_limit, by subscription (absent: never waited).",
        );
        let waits = c
            .rate_limit_waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (subscription, micros) in waits {
            let s = escape(&subscription);
            let waited = micros as f64 / 1e6;
            let _ = writeln!(
                out,
                "herald_rate_limit_wait_seconds_total{{subscription=\"{s}\"}} {waited}"
            );
        }
        out
    }
}

/// What [`Metrics::group_commits`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCommits {
    pub groups: u64,
    pub jobs: f64,
    pub seconds: f64,
}

/// A Prometheus histogram over `N` upper bounds (given to each call), in
/// atomics: a count per bucket (not cumulative), the count, and the sum in
/// millionths.
#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).round() as u64, Ordering::Relaxed);
        if let Some(i) = bounds.iter().position(|le| value <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn render(&self, out: &mut String, bounds: &[f64; N], name: &str, help: &str) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bucket, le) in self.buckets.iter().zip(bounds) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum());
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Adds `n` to the counter of `key` (a new key starts at 0).
fn add<K: Ord>(counters: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) {
    let mut counters = counters.lock().unwrap_or_else(|p| p.into_inner());
    *counters.entry(key).or_default() += n;
}

/// A label value with `\\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.attempt("delivered", Some(Duration::from_millis(3)));
        m.attempt("retry", Some(Duration::from_millis(300)));
        m.attempt("suppressed", None);
        let text = m.render(OutboxGauges::default());
        assert!(text.contains("herald_attempt_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("herald_attempt_duration_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("herald_attempt_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("herald_deliveries_total{outcome=\"suppressed\"} 1\n"));
        assert!(text.contains("herald_attempt_duration_seconds_sum 0.303\n"));
        assert!(text.contains("herald_attempt_duration_seconds_count 2\n"));
    }

    #[test]
    fn group_commits_are_counted_by_size_and_duration() {
        let m = Metrics::default();
        m.group_committed(1, Duration::from_micros(400));
        m.group_committed(30, Duration::from_micros(1_600));
        m.group_committed(64, Duration::from_millis(3));
        assert_eq!(
            m.group_commits(),
            GroupCommits {
                groups: 3,
                jobs: 95.0,
                seconds: 0.005,
            }
        );
        let text = m.render(OutboxGauges::default());
        for line in [
            "herald_ingest_group_jobs_bucket{le=\"1\"} 1\n",
            "herald_ingest_group_jobs_bucket{le=\"16\"} 1\n",
            "herald_ingest_group_jobs_bucket{le=\"32\"} 2\n",
            "herald_ingest_group_jobs_bucket{le=\"64\"} 3\n",
            "herald_ingest_group_jobs_bucket{le=\"+Inf\"} 3\n",
            "herald_ingest_group_jobs_sum 95\n",
            "herald_ingest_commit_duration_seconds_bucket{le=\"0.0005\"} 1\n",
            "herald_ingest_commit_duration_seconds_bucket{le=\"0.001\"} 1\n",
            "herald_ingest_commit_duration_seconds_bucket{le=\"0.0025\"} 2\n",
            "herald_ingest_commit_duration_seconds_bucket{le=\"0.005\"} 3\n",
            "herald_ingest_commit_duration_seconds_count 3\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn rate_limit_waits_are_summed_per_subscription() {
        let m = Metrics::default();
        m.rate_limit_waited("etl", Duration::from_millis(400));
        m.rate_limit_waited("etl", Duration::from_millis(1000));
        m.rate_limit_waited("a\"b", Duration::from_millis(250));
        m.rate_limit_waited("never", Duration::ZERO);
        let text = m.render(OutboxGauges::default());
        let waits: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("herald_rate_limit_wait_seconds_total"))
            .collect();
        assert_eq!(
            waits,
            [
                "herald_rate_limit_wait_seconds_total{subscription=\"a\\\"b\"} 0.25",
                "herald_rate_limit_wait_seconds_total{subscription=\"etl\"} 1.4",
            ]
        );
    }
}

/// Adds `name="value"` to every sample of a rendered exposition, so the
/// series of several replicas scraped into one Prometheus stay apart.
pub fn label_every_sample(text: &str, name: &str, value: &str) -> String {
    let value = escape(value);
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some((series, rest)) = line.split_once('{') {
            let _ = write!(out, "{series}{{{name}=\"{value}\",{rest}");
        } else if let Some((series, rest)) = line.split_once(' ') {
            let _ = write!(out, "{series}{{{name}=\"{value}\"}} {rest}");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod label_tests {
    use super::label_every_sample;

    #[test]
    fn every_sample_gets_the_label_and_comments_stay() {
        let text = "# TYPE a counter\na 1\nb{x=\"y\"} 2\n";
        assert_eq!(
            label_every_sample(text, "replica", "r\"1"),
            "# TYPE a counter\na{replica=\"r\\\"1\"} 1\nb{replica=\"r\\\"1\",x=\"y\"} 2\n"
        );
    }
}
