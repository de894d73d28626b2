//! Values with bounds: random durations and counts, absurd ones included,
//! go through configuration parsing and through one real dispatch. Parsing
//! gives settings within the documented bounds or an error naming the key;
//! a delivery with any accepted timeout and retry schedule is attempted
//! and its retry scheduled; nothing panics.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use herald::clock::Clock;
use herald::config::{ConfigError, Overrides, Settings};
use herald::core::time::checked_after;
use herald::store::DeliveryState;
use proptest::prelude::*;

use crate::helpers::{Receiver, Reply, Spawn, SECRET};

fn unit() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["ms", "s", "m", "h", "d"])
}

/// A number of any magnitude, as likely 7 as 7,000,000,000.
fn magnitude() -> impl Strategy<Value = u64> {
    (1u64..10, 0u32..20).prop_map(|(m, e)| m.saturating_mul(10u64.saturating_pow(e)))
}

/// A duration far outside any bound: around the edge of what date
/// arithmetic can represent (`100000000d` and up), of any magnitude, or as
/// large as the digits go.
fn absurd_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..10, 8u32..12).prop_map(|(m, e)| format!("{}d", m * 10u64.pow(e))),
        (magnitude(), unit()).prop_map(|(n, u)| format!("{n}{u}")),
        (any::<u64>(), unit()).prop_map(|(n, u)| format!("{n}{u}")),
    ]
}

/// A duration as a user might write it: mostly plausible, sometimes absurd,
/// sometimes not a duration at all.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..400, unit()).prop_map(|(n, u)| format!("{n}{u}")),
        2 => absurd_duration(),
        1 => "[0-9]{0,3}[a-z]{0,2}",
    ]
}

/// A count as TOML can carry it (a non-negative 64-bit integer).
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..2000,
        1 => magnitude().prop_map(|n| n.min(i64::MAX as u64)),
        1 => 0..=i64::MAX as u64,
    ]
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Duration,
    Count,
    Schedule,
}

/// Every duration and count a configuration file holds: section, key, kind.
const SLOTS: &[(&str, &str, Kind)] = &[
    ("server", "shutdown_grace", Kind::Duration),
    ("server", "max_request_bytes", Kind::Count),
    ("delivery", "poll_interval", Kind::Duration),
    ("delivery", "lease_margin", Kind::Duration),
    ("delivery", "response_excerpt_bytes", Kind::Count),
    ("stalls", "max_duration", Kind::Duration),
    ("stalls", "check_interval", Kind::Duration),
    ("stalls", "learn_floor", Kind::Duration),
    ("stalls", "learn_window", Kind::Count),
    ("stalls", "learn_min_samples", Kind::Count),
    ("stalls.rules", "max_duration", Kind::Duration),
    ("smtp", "timeout", Kind::Duration),
    ("webhooks", "timeout", Kind::Duration),
    ("webhooks", "retry_schedule", Kind::Schedule),
    ("webhooks", "max_in_flight", Kind::Count),
    ("healthchecks", "timeout", Kind::Duration),
    ("healthchecks", "retry_schedule", Kind::Schedule),
    ("healthchecks", "max_in_flight", Kind::Count),
    ("email", "group_wait", Kind::Duration),
    ("email", "group_interval", Kind::Duration),
    ("email", "repeat_interval", Kind::Duration),
    ("email", "timeout", Kind::Duration),
    ("email", "retry_schedule", Kind::Schedule),
    ("schedules", "every", Kind::Duration),
    ("schedules", "grace", Kind::Duration),
];

/// The sections in file order, each with the lines that make it valid.
const SECTIONS: &[(&str, &str)] = &[
    ("[server]", "grpc_listen = \"127.0.0.1:0\""),
    ("[delivery]", ""),
    ("[stalls]", ""),
    ("[[stalls.rules]]", "cubes = [\"sales\"]"),
    (
        "[smtp]",
        "host = \"127.0.0.1\"\nfrom = \"herald@example.com\"\ntls = \"none\"",
    ),
    (
        "[[webhooks]]",
        "name = \"hook\"\nurl = \"http://10.0.0.1/hook\"\nevents = [\"*\"]",
    ),
    (
        "[[healthchecks]]",
        "name = \"hc\"\nurl = \"http://10.0.0.2/ping\"",
    ),
    ("[[email]]", "name = \"admins\"\nto = [\"ops@example.com\"]"),
    (
        "[[schedules]]",
        "name = \"daily\"\nenvironment = \"prod\"\ncube = \"sales\"",
    ),
];

/// One slot set to a value, as a TOML line.
#[derive(Debug, Clone)]
struct Setting {
    slot: usize,
    line: String,
}

fn setting() -> impl Strategy<Value = Setting> {
    (0..SLOTS.len()).prop_flat_map(|slot| {
        let key = SLOTS[slot].1;
        let line = match SLOTS[slot].2 {
            Kind::Duration => duration_text()
                .prop_map(move |d| format!("{key} = \"{d}\""))
                .boxed(),
            Kind::Count => count().prop_map(move |n| format!("{key} = {n}")).boxed(),
            Kind::Schedule => prop_oneof![
                4 => prop::collection::vec(duration_text(), 0..8),
                1 => prop::collection::vec(duration_text(), 45..56),
            ]
            .prop_map(move |waits| format!("{key} = {waits:?}"))
            .boxed(),
        };
        line.prop_map(move |line| Setting { slot, line })
    })
}

/// The configuration key a slot's errors name.
fn key_of(slot: usize) -> String {
    let (section, key, _) = SLOTS[slot];
    match section {
        "server" | "delivery" | "stalls" | "smtp" => format!("{section}.{key}"),
        array => format!("{array}[0].{key}"),
    }
}

fn config_text(settings: &[Setting]) -> String {
    let mut text = String::new();
    for (header, base) in SECTIONS {
        let name = header.trim_matches(|c| c == '[' || c == ']');
        text.push_str(&format!("{header}\n{base}\n"));
        let chosen = settings.iter().filter(|s| SLOTS[s.slot].0 == name);
        let lines: Vec<&str> = chosen.map(|s| s.line.as_str()).collect();
        // A required key gets its default when the case does not set it.
        let required = match name {
            "stalls.rules" => Some(("max_duration", "max_duration = \"1h\"")),
            "schedules" => Some(("every", "every = \"1d\"")),
            _ => None,
        };
        if let Some((key, default)) = required {
            if !lines.iter().any(|l| l.starts_with(key)) {
                text.push_str(default);
                text.push('\n');
            }
        }
        if name == "webhooks" {
            text.push_str(&format!("secret = \"{SECRET}\"\n"));
        }
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Whether an error key is one the chosen settings could cause.
fn caused_by(key: &str, settings: &[Setting]) -> bool {
    settings.iter().any(|s| {
        let own = key_of(s.slot);
        // A learning window smaller than the (default) minimum of samples
        // is refused on the minimum.
        let via_window = own == "stalls.learn_window" && key == "stalls.learn_min_samples";
        key == own || key.starts_with(&format!("{own}[")) || via_window
    })
}

/// Every duration the settings hold stays within reach of the calendar,
/// and the bounds the README promises hold.
fn check_bounds(s: &Settings) -> Result<(), TestCaseError> {
    let far = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).unwrap();
    let mut durations = vec![
        s.server.shutdown_grace,
        s.delivery.poll_interval,
        s.delivery.lease_margin,
        s.monitor.check_interval,
    ];
    durations.extend(s.stalls.default);
    durations.extend(s.stalls.rules.iter().map(|r| r.max_duration));
    durations.extend(s.stalls.learning.iter().map(|l| l.floor));
    durations.extend(s.schedules.iter().map(|x| x.grace));
    for sub in &s.subscriptions {
        prop_assert!(sub.timeout > Duration::ZERO && sub.timeout <= Duration::from_secs(300));
        prop_assert!(sub.retry.schedule.len() <= 50);
        prop_assert!((1..=1024).contains(&sub.max_in_flight));
        for wait in &sub.retry.schedule {
            prop_assert!(*wait <= Duration::from_secs(7 * 86_400));
        }
        durations.push(sub.timeout);
        durations.extend(sub.retry.schedule.iter().copied());
    }
    for d in durations {
        prop_assert!(checked_after(far, d).is_some(), "{d:?}");
    }
    Ok(())
}

fn parse(mut settings: Vec<Setting>) -> Result<(), TestCaseError> {
    // A key appears once in a table.
    let mut seen = std::collections::HashSet::new();
    settings.retain(|s| seen.insert(s.slot));
    let settings = &settings[..];
    let text = config_text(settings);
    match Settings::from_toml(&text, &Overrides::default(), &|_| None) {
        Ok(parsed) => check_bounds(&parsed),
        Err(ConfigError::Invalid { key, reason }) => {
            prop_assert!(caused_by(&key, settings), "`{key}`: {reason}\n{text}");
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("{other}\n{text}"))),
    }
}

/// A timeout within the bounds, in a random unit, or at a bound.
fn timeout_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["1ms".to_owned(), "5m".to_owned()]),
        (1u64..=300_000).prop_map(|n| format!("{n}ms")),
        (1u64..=300).prop_map(|n| format!("{n}s")),
        (1u64..=5).prop_map(|n| format!("{n}m")),
    ]
}

/// A retry wait within the bounds, in a random unit, or at a bound.
fn wait_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["0s".to_owned(), "7d".to_owned()]),
        (0u64..=604_800).prop_map(|n| format!("{n}s")),
        (0u64..=168).prop_map(|n| format!("{n}h")),
        (0u64..=7).prop_map(|n| format!("{n}d")),
    ]
}

#[derive(Debug, Clone)]
struct Dispatch {
    timeout: String,
    schedule: Vec<String>,
    max_in_flight: u64,
    stall_after: String,
}

/// Sends one event to a receiver that always fails: the attempt is
/// recorded and its retry scheduled within the bounds (or, with only
/// zero waits, retried until dead), and a monitor pass over the running
/// batch completes.
async fn dispatch(d: Dispatch) -> Result<(), TestCaseError> {
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(500));
    let config = format!(
        "[stalls]\nmax_duration = \"{}\"\n\
         [[webhooks]]\nname = \"hook\"\nurl = \"{}\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n\
         timeout = \"{}\"\nretry_schedule = {:?}\nmax_in_flight = {}\n",
        d.stall_after,
        receiver.url(),
        d.timeout,
        d.schedule,
        d.max_in_flight
    );
    let probe = format!("[egress]\nallow = [\"127.0.0.0/8\"]\n{config}");
    match Settings::from_toml(&probe, &Overrides::default(), &|_| None) {
        Ok(_) => {}
        Err(ConfigError::Invalid { key, .. })
            if key.starts_with("webhooks[0].") || key == "stalls.max_duration" =>
        {
            return Ok(())
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other}\n{config}"))),
    }
    let app = Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await;
    let now = app.clock.now();
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;
    app.check().await;
    let rows = app.deliveries_of("ev-1").await;
    prop_assert_eq!(rows.len(), 1);
    let row = &rows[0];
    prop_assert!(row.attempts >= 1, "no attempt recorded: {row:?}");
    match row.state {
        DeliveryState::Pending => {
            prop_assert!(row.next_attempt_at > now, "{row:?}");
            let latest = checked_after(now, Duration::from_secs(7 * 86_400 * 6 / 5)).unwrap();
            prop_assert!(row.next_attempt_at <= latest, "{row:?}");
        }
        DeliveryState::Dead => prop_assert_eq!(row.attempts as usize, d.schedule.len() + 1),
        other => prop_assert!(false, "a failing receiver left the delivery {other:?}"),
    }
    app.stop().await;
    Ok(())
}

/// Values within the bounds (the dispatch must cope with any of them), or
/// those with one made absurd (the configuration must refuse it, or the
/// dispatch cope with it).
fn dispatch_case() -> impl Strategy<Value = Dispatch> {
    let accepted = (
        timeout_text(),
        prop_oneof![
            4 => prop::collection::vec(wait_text(), 1..6),
            1 => prop::collection::vec(wait_text(), 50..=50),
        ],
        1u64..=1024,
        (1u64..=720).prop_map(|h| format!("{h}h")),
    )
        .prop_map(|(timeout, schedule, max_in_flight, stall_after)| Dispatch {
            timeout,
            schedule,
            max_in_flight,
            stall_after,
        });
    let absurd = (0..5usize, absurd_duration(), count(), 51..60usize);
    (accepted, prop::option::of(absurd)).prop_map(|(mut case, absurd)| {
        match absurd {
            Some((0, text, ..)) => case.timeout = text,
            Some((1, text, ..)) => case.schedule[0] = text,
            Some((2, text, ..)) => case.stall_after = text,
            Some((3, _, n, _)) => case.max_in_flight = n,
            Some((_, _, _, len)) => case.schedule.resize(len, "1s".to_owned()),
            None => {}
        }
        case
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_durations_and_counts_parse_within_bounds_or_name_their_key(
        settings in prop::collection::vec(setting(), 0..8)
    ) {
        parse(settings)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_dispatch_with_any_accepted_timeout_and_schedule_retries_without_panicking(
        case in dispatch_case()
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(dispatch(case))?;
    }
}
