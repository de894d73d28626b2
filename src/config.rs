//! Settings and their layering: built-in defaults, then the TOML file, then
//! environment variables, then command-line flags.
//!
//! The file is parsed into raw structs that refuse unknown keys, then
//! converted into typed [`Settings`]; every error names the key at fault,
//! e.g. `webhooks[1].url: must be an absolute http or https URL`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::filter::{EventFilter, Pattern};
use crate::core::retry::RetryPolicy;
use crate::core::signature::SigningSecret;
use crate::core::subscription::WebhookSubscription;
use crate::core::validate::parse_id;

pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_STORE_URL: &str = "sqlite://herald.db";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub delivery: DeliverySettings,
    pub webhooks: Vec<WebhookSubscription>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub grpc_listen: SocketAddr,
    /// How long in-flight deliveries may finish after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH` (relative to the working directory) or
    /// `sqlite::memory:`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Upper bound on how long a due delivery waits when no wake-up comes
    /// (e.g. a retry whose time has arrived).
    pub poll_interval: Duration,
    /// Added to a subscription's timeout to make its claim lease: a claim
    /// outlives the attempt, and a crashed worker's claims expire after it.
    pub lease_margin: Duration,
    /// How much of a receiver's response body each attempt records.
    pub response_excerpt_bytes: usize,
}

/// Values given by environment variable or flag; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub grpc_listen: Option<String>,
    pub store_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Loads the file (if any) and applies the overrides. With no file at
    /// all Herald runs on the defaults: SQLite `./herald.db`, gRPC on
    /// 127.0.0.1:50051, no subscriptions.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let raw = match path {
            Some(path) => read_file(path)?,
            None => RawConfig::default(),
        };
        Settings::from_raw(raw, overrides, &|name| std::env::var(name).ok())
    }

    /// Parses TOML text; `env` resolves `secret_env` names.
    pub fn from_toml(
        text: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let raw = parse_toml(text, Path::new("<inline>"))?;
        Settings::from_raw(raw, overrides, env)
    }

    fn from_raw(
        raw: RawConfig,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let server = raw.server.unwrap_or_default();
        let grpc_listen = overrides
            .grpc_listen
            .clone()
            .or(server.grpc_listen)
            .unwrap_or_else(|| DEFAULT_GRPC_LISTEN.to_owned());
        let store_url = overrides
            .store_url
            .clone()
            .or(raw.store.unwrap_or_default().url)
            .unwrap_or_else(|| DEFAULT_STORE_URL.to_owned());
        let delivery = raw.delivery.unwrap_or_default();
        Ok(Settings {
            server: ServerSettings {
                grpc_listen: grpc_listen.parse().map_err(|_| {
                    invalid(
                        "server.grpc_listen",
                        format!("`{grpc_listen}` is not an address like 127.0.0.1:50051"),
                    )
                })?,
                shutdown_grace: duration_or("server.shutdown_grace", server.shutdown_grace, "10s")?,
            },
            store: StoreSettings {
                url: parse_store_url(&store_url)?,
            },
            delivery: DeliverySettings {
                poll_interval: duration_or("delivery.poll_interval", delivery.poll_interval, "1s")?,
                lease_margin: duration_or("delivery.lease_margin", delivery.lease_margin, "30s")?,
                response_excerpt_bytes: delivery.response_excerpt_bytes.unwrap_or(2048),
            },
            webhooks: parse_webhooks(raw.webhooks, env)?,
        })
    }
}

fn read_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    parse_toml(&text, path)
}

fn parse_toml(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_store_url(url: &str) -> Result<String, ConfigError> {
    if url.starts_with("sqlite:") {
        Ok(url.to_owned())
    } else {
        Err(invalid(
            "store.url",
            format!("`{url}` is not supported; use sqlite://PATH"),
        ))
    }
}

fn parse_webhooks(
    raw: Vec<RawWebhook>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<WebhookSubscription>, ConfigError> {
    let mut subscriptions: Vec<WebhookSubscription> = Vec::with_capacity(raw.len());
    for (i, hook) in raw.into_iter().enumerate() {
        let key = format!("webhooks[{i}]");
        let sub = parse_webhook(&key, hook, env)?;
        if subscriptions.iter().any(|s| s.name == sub.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{}` is used by another subscription", sub.name),
            ));
        }
        subscriptions.push(sub);
    }
    Ok(subscriptions)
}

fn parse_webhook(
    key: &str,
    raw: RawWebhook,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebhookSubscription, ConfigError> {
    let name = parse_id("name", &raw.name).map_err(|e| invalid(format!("{key}.name"), e.reason))?;
    let filter = EventFilter {
        events: parse_patterns(&format!("{key}.events"), raw.events)?,
        environments: parse_patterns(&format!("{key}.environments"), raw.environments)?,
        projects: parse_patterns(&format!("{key}.projects"), raw.projects)?,
        cubes: parse_patterns(&format!("{key}.cubes"), raw.cubes)?,
    };
    if filter.events.is_empty() {
        return Err(invalid(
            format!("{key}.events"),
            "must list at least one event name or glob, e.g. [\"aggregate.batch.*\"]",
        ));
    }
    if let Some(typo) = filter.unmatched_event_patterns().first() {
        return Err(invalid(
            format!("{key}.events"),
            format!("`{}` matches no known event name", typo.as_str()),
        ));
    }
    let retry = RetryPolicy {
        schedule: match raw.retry_schedule {
            Some(list) => parse_schedule(&format!("{key}.retry_schedule"), &list)?,
            None => RetryPolicy::default().schedule,
        },
        ..RetryPolicy::default()
    };
    Ok(WebhookSubscription {
        url: parse_url(&format!("{key}.url"), &raw.url)?,
        secret: parse_secret(key, raw.secret, raw.secret_env, env)?,
        headers: parse_headers(&format!("{key}.headers"), raw.headers)?,
        timeout: duration_or(&format!("{key}.timeout"), raw.timeout, "10s")?,
        max_in_flight: match raw.max_in_flight {
            Some(0) => {
                return Err(invalid(
                    format!("{key}.max_in_flight"),
                    "must be at least 1",
                ))
            }
            Some(n) => n,
            None => 8,
        },
        name,
        filter,
        retry,
    })
}

fn parse_patterns(key: &str, list: Vec<String>) -> Result<Vec<Pattern>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(i, p)| {
            if p.trim().is_empty() {
                Err(invalid(format!("{key}[{i}]"), "must not be empty"))
            } else {
                Ok(Pattern::new(p))
            }
        })
        .collect()
}

fn parse_url(key: &str, url: &str) -> Result<String, ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url.to_owned()),
        _ => Err(invalid(
            key,
            format!("`{url}` is not an absolute http or https URL"),
        )),
    }
}

fn parse_secret(
    key: &str,
    inline: Option<String>,
    from_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SigningSecret, ConfigError> {
    let (field, text) =
        match (inline, from_env) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{key}.secret"),
                    "give `secret` or `secret_env`, not both",
                ))
            }
            (Some(secret), None) => (format!("{key}.secret"), secret),
            (None, Some(var)) => {
                let field = format!("{key}.secret_env");
                let value = env(&var).ok_or_else(|| {
                    invalid(&field, format!("environment variable `{var}` is not set"))
                })?;
                (field, value)
            }
            (None, None) => return Err(invalid(
                format!("{key}.secret"),
                "a signing secret is required: `secret = \"whsec_…\"` or `secret_env = \"VAR\"` \
                 (`herald secret` prints a new one)",
            )),
        };
    // The reason never echoes the secret itself.
    SigningSecret::parse(text.trim()).map_err(|e| invalid(field, e.to_string()))
}

const RESERVED_HEADERS: [&str; 4] = ["content-type", "content-length", "host", "user-agent"];

fn parse_headers(
    key: &str,
    headers: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let field = format!("{key}.{name}");
            if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(field, "is set by Herald and cannot be overridden"));
            }
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(&field, "is not a valid header name"))?;
            reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| invalid(&field, "is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

fn parse_schedule(key: &str, list: &[String]) -> Result<Vec<Duration>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            parse_duration(text).map_err(|reason| invalid(format!("{key}[{i}]"), reason))
        })
        .collect()
}

fn duration_or(key: &str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let text = value.as_deref().unwrap_or(default);
    parse_duration(text).map_err(|reason| invalid(key, reason))
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like \"30s\", \"5m\" or \"2h\""))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}` has no unit; use ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    store: Option<RawStore>,
    delivery: Option<RawDelivery>,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    grpc_listen: Option<String>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    poll_interval: Option<String>,
    lease_margin: Option<String>,
    response_excerpt_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    cubes: Vec<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    max_in_flight: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, &Overrides::default(), &|name| {
            (name == "ETL_SECRET").then(|| SECRET.to_owned())
        })
    }

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn no_file_means_the_documented_defaults() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.server.grpc_listen.to_string(), DEFAULT_GRPC_LISTEN);
        assert_eq!(s.store.url, DEFAULT_STORE_URL);
        assert!(s.webhooks.is_empty());
    }

    #[test]
    fn a_full_webhook_parses() {
        let s = load(
            r#"
            [server]
            grpc_listen = "127.0.0.1:6000"
            [[webhooks]]
            name = "etl"
            url = "https://etl.example/hooks"
            events = ["aggregate.batch.*"]
            environments = ["prod"]
            secret_env = "ETL_SECRET"
            headers = { "X-Team" = "data" }
            timeout = "3s"
            retry_schedule = ["1s", "1m"]
            "#,
        )
        .unwrap();
        let hook = &s.webhooks[0];
        assert_eq!(hook.name, "etl");
        assert_eq!(hook.timeout, Duration::from_secs(3));
        assert_eq!(
            hook.retry.schedule,
            vec![Duration::from_secs(1), Duration::from_secs(60)]
        );
        assert_eq!(hook.headers, vec![("X-Team".to_owned(), "data".to_owned())]);
        assert_eq!(hook.secret, SigningSecret::parse(SECRET).unwrap());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            grpc_listen: Some("127.0.0.1:7000".into()),
            store_url: Some("sqlite://other.db".into()),
        };
        let s = Settings::from_toml(
            "[server]\ngrpc_listen = \"127.0.0.1:6000\"",
            &overrides,
            &|_| None,
        )
        .unwrap();
        assert_eq!(s.server.grpc_listen.port(), 7000);
        assert_eq!(s.store.url, "sqlite://other.db");
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let hook = |extra: &str| {
            format!("[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n{extra}")
        };
        assert_eq!(
            key_of(load(&hook("timeout = \"soon\"")).unwrap_err()),
            "webhooks[0].timeout"
        );
        assert_eq!(
            key_of(load(&hook("max_in_flight = 0")).unwrap_err()),
            "webhooks[0].max_in_flight"
        );
        assert_eq!(
            key_of(load(&hook("headers = { \"webhook-id\" = \"x\" }")).unwrap_err()),
            "webhooks[0].headers.webhook-id"
        );
        let bad_url = format!("[[webhooks]]\nname = \"a\"\nurl = \"ftp://x\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"");
        assert_eq!(key_of(load(&bad_url).unwrap_err()), "webhooks[0].url");
        let typo = format!("[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"aggregate.batch.faild\"]\nsecret = \"{SECRET}\"");
        assert_eq!(key_of(load(&typo).unwrap_err()), "webhooks[0].events");
        let no_secret = "[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]";
        assert_eq!(key_of(load(no_secret).unwrap_err()), "webhooks[0].secret");
        let missing_env = "[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]\nsecret_env = \"NOPE\"";
        assert_eq!(
            key_of(load(missing_env).unwrap_err()),
            "webhooks[0].secret_env"
        );
        let twice = format!("{}\n{}", hook(""), hook(""));
        assert_eq!(key_of(load(&twice).unwrap_err()), "webhooks[1].name");
        assert_eq!(
            key_of(load("[store]\nurl = \"mysql://x\"").unwrap_err()),
            "store.url"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = load("[server]\ngrpc_listne = \"x\"").unwrap_err();
        assert!(err.to_string().contains("grpc_listne"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let text = "[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]\nsecret = \"whsec_c2hvcnQ=\"";
        let err = load(text).unwrap_err().to_string();
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
    }
}
