//! Settings and their layering: built-in defaults, then the TOML file, then
//! environment variables, then command-line flags.
//!
//! The file is parsed into raw structs that refuse unknown keys, then
//! converted into typed [`Settings`]; every error names the key at fault,
//! e.g. `webhooks[1].url: must be an absolute http or https URL`.

mod console;
mod gates;
mod openlineage;
mod retention;
mod store;

pub use console::ConsoleSettings;
pub use retention::RetentionSettings;
pub use store::{default_replica_name, StoreSettings, DEFAULT_STORE_URL};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::cloudevent;
use crate::core::egress::EgressPolicy;
use crate::core::email::{self, EmailRule, GroupLabel};
use crate::core::filter::{EventFilter, Pattern};
use crate::core::retry::{RetryPolicy, MAX_RETRIES};
use crate::core::schedule::{parse_cron, Cadence, Schedule};
use crate::core::signature::SigningSecret;
use crate::core::stall::{Learning, StallPolicy, StallRule};
use crate::core::subscription::{DeliveryOrder, RateLimit};
use crate::core::subscription::{
    GitArchive, Healthcheck, ProjectXml, Subscription, Target, Webhook, GIT_ARCHIVE_EVENTS,
    HEALTHCHECK_EVENTS,
};
use crate::core::template::Template;
use crate::core::validate::parse_id;

pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9090";

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long finished work is kept (`[retention]`).
    pub retention: RetentionSettings,
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub delivery: DeliverySettings,
    /// Webhooks and healthchecks, in configuration order.
    pub subscriptions: Vec<Subscription>,
    pub monitor: MonitorSettings,
    pub stalls: StallPolicy,
    pub schedules: Vec<Schedule>,
    /// Dependency gates (`[[gates]]`), in configuration order.
    pub gates: Vec<crate::core::gate::Gate>,
    /// Where email rules send their mail; `None` when no `[smtp]` is set.
    pub smtp: Option<SmtpSettings>,
    /// Which addresses webhooks and pings may go to.
    pub egress: EgressPolicy,
    /// The web console (`[console]`).
    pub console: ConsoleSettings,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password.
    pub credentials: Option<(String, Password)>,
    pub from: String,
    pub timeout: Duration,
}

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    /// Implicit TLS, usually on port 465.
    Tls,
}

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// How often running batches and schedules are checked.
    pub check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub grpc_listen: SocketAddr,
    /// How long in-flight deliveries may finish after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Bearer tokens callers must present; none: no authentication.
    pub tokens: Vec<ApiToken>,
    /// Allow listening on a non-loopback address without tokens.
    pub insecure: bool,
    /// The operations port (`/metrics`, `/healthz`, `/readyz`); `None`
    /// when set to "off".
    pub http_listen: Option<SocketAddr>,
    /// TLS for gRPC; `None`: plaintext.
    pub tls: Option<TlsSettings>,
    /// Largest gRPC request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Watch and await streams open at once, in total and per token.
    pub watch_streams: crate::feed::StreamLimits,
    /// How long a watch stream may leave its buffer full (the client takes
    /// nothing) before it is ended as fallen behind.
    pub watch_send_timeout: Duration,
}

/// The server's certificate and key, and the CA that client certificates
/// must chain to (mTLS), all PEM, read when the configuration loads.
#[derive(Clone)]
pub struct TlsSettings {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("key_pem", &"<redacted>")
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish()
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest only: what the engine and the design tool need.
    Engine,
    /// Queries, watch and await.
    Reader,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Engine => "engine",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// A configured bearer token. Only its SHA-256 digest is kept: the token
/// itself is never stored, printed or compared directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub digest: [u8; 32],
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
    /// `--http-listen` / `HERALD_HTTP_LISTEN`: an address, or "off".
    pub http_listen: Option<String>,
    pub store_url: Option<String>,
    /// `--insecure`: allow a non-loopback address without tokens.
    pub insecure: bool,
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
        mut raw: RawConfig,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut server = raw.server.take().unwrap_or_default();
        let grpc_listen = overrides
            .grpc_listen
            .clone()
            .or(server.grpc_listen)
            .unwrap_or_else(|| DEFAULT_GRPC_LISTEN.to_owned());
        let mut raw_store = raw.store.take().unwrap_or_default();
        let store_url = overrides
            .store_url
            .clone()
            .or(raw_store.url.take())
            .unwrap_or_else(|| DEFAULT_STORE_URL.to_owned());
        let replica = match server.replica_name.take() {
            Some(name) if name.trim().is_empty() => {
                return Err(invalid("server.replica_name", "must not be empty"))
            }
            Some(name) => name,
            None => default_replica_name(),
        };
        let delivery = raw.delivery.take().unwrap_or_default();
        let egress = parse_egress(raw.egress.take().unwrap_or_default())?;
        let smtp = raw
            .smtp
            .take()
            .map(|smtp| parse_smtp(smtp, env))
            .transpose()?;
        let mut subscriptions = parse_subscriptions(&mut raw, env, &egress)?;
        subscriptions.extend(parse_email_rules(&mut raw, smtp.as_ref())?);
        let stalls = raw.stalls.take().unwrap_or_default();
        Ok(Settings {
            server: ServerSettings {
                grpc_listen: parse_listen_address("server.grpc_listen", &grpc_listen, "")?,
                shutdown_grace: duration_in(
                    "server.shutdown_grace",
                    server.shutdown_grace,
                    "10s",
                    limits::SHUTDOWN_GRACE,
                )?,
                tokens: parse_tokens(std::mem::take(&mut raw.tokens), env)?,
                insecure: overrides.insecure || server.insecure.unwrap_or(false),
                tls: server.tls.take().map(parse_tls).transpose()?,
                max_request_bytes: count_in(
                    "server.max_request_bytes",
                    server.max_request_bytes,
                    64 * 1024 * 1024,
                    limits::REQUEST_BYTES,
                )?,
                watch_streams: parse_watch_streams(
                    server.max_watch_streams,
                    server.max_watch_streams_per_token,
                )?,
                watch_send_timeout: duration_in(
                    "server.watch_send_timeout",
                    server.watch_send_timeout.take(),
                    "10s",
                    limits::WATCH_SEND_TIMEOUT,
                )?,
                http_listen: match overrides
                    .http_listen
                    .as_deref()
                    .or(server.http_listen.as_deref())
                    .unwrap_or(DEFAULT_HTTP_LISTEN)
                {
                    "off" => None,
                    text => Some(parse_listen_address(
                        "server.http_listen",
                        text,
                        ", or \"off\"",
                    )?),
                },
            },
            store: store::parse_store(raw_store, store_url, replica)?,
            delivery: DeliverySettings {
                poll_interval: duration_in(
                    "delivery.poll_interval",
                    delivery.poll_interval,
                    "1s",
                    limits::POLL_INTERVAL,
                )?,
                lease_margin: duration_in(
                    "delivery.lease_margin",
                    delivery.lease_margin,
                    "30s",
                    limits::LEASE_MARGIN,
                )?,
                response_excerpt_bytes: count_in(
                    "delivery.response_excerpt_bytes",
                    delivery.response_excerpt_bytes,
                    2048,
                    limits::EXCERPT_BYTES,
                )?,
            },
            subscriptions,
            monitor: MonitorSettings {
                check_interval: duration_in(
                    "stalls.check_interval",
                    stalls.check_interval.clone(),
                    "15s",
                    limits::CHECK_INTERVAL,
                )?,
            },
            stalls: parse_stalls(stalls)?,
            schedules: parse_schedules(std::mem::take(&mut raw.schedules))?,
            gates: gates::parse_gates(std::mem::take(&mut raw.gates))?,
            smtp: smtp.map(|(settings, _)| settings),
            egress,
            retention: retention::parse_retention(raw.retention.take().unwrap_or_default())?,
            console: console::parse_console(raw.console.take().unwrap_or_default())?,
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

fn parse_subscriptions(
    raw: &mut RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    egress: &EgressPolicy,
) -> Result<Vec<Subscription>, ConfigError> {
    let mut subscriptions: Vec<Subscription> = Vec::new();
    let archives: Vec<_> = std::mem::take(&mut raw.git_archives)
        .into_iter()
        .enumerate()
        .collect();
    let webhooks = std::mem::take(&mut raw.webhooks).into_iter().enumerate();
    let lineage = std::mem::take(&mut raw.openlineage).into_iter().enumerate();
    let healthchecks = std::mem::take(&mut raw.healthchecks)
        .into_iter()
        .enumerate();
    let parsed = webhooks
        .map(|(i, hook)| parse_webhook(&format!("webhooks[{i}]"), hook, env))
        .chain(healthchecks.map(|(i, hc)| parse_healthcheck(&format!("healthchecks[{i}]"), hc)))
        .chain(
            archives
                .into_iter()
                .map(|(i, a)| parse_git_archive(&format!("git_archives[{i}]"), a)),
        )
        .chain(
            lineage
                .map(|(i, o)| openlineage::parse_openlineage(&format!("openlineage[{i}]"), o, env)),
        );
    let samples = cloudevent::samples();
    for result in parsed {
        let (key, sub) = result?;
        if subscriptions.iter().any(|s| s.name == sub.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{}` is used by another subscription", sub.name),
            ));
        }
        sub.check_templates(&samples)
            .map_err(|(field, e)| invalid(format!("{key}.{field}"), e.message))?;
        check_target(&sub, egress)?;
        subscriptions.push(sub);
    }
    Ok(subscriptions)
}

/// The configured event patterns, or the kind's defaults when none are.
fn events_or(events: Vec<String>, defaults: &[crate::core::event::EventType]) -> Vec<String> {
    if events.is_empty() {
        defaults.iter().map(|t| t.as_str().to_owned()).collect()
    } else {
        events
    }
}

/// The default file of a project in a Git archive.
const DEFAULT_LAYOUT: &str = "{{ data.organization_id }}/{{ data.project_id }}.xml";

fn parse_git_archive(key: &str, raw: RawGitArchive) -> Result<(String, Subscription), ConfigError> {
    let branch = raw.branch.unwrap_or_else(|| "main".to_owned());
    parse_id("branch", &branch).map_err(|e| invalid(format!("{key}.branch"), e.reason))?;
    let target = Target::GitArchive(GitArchive {
        path: raw.path,
        branch,
        layout: parse_template(
            &format!("{key}.layout"),
            raw.layout.as_deref().unwrap_or(DEFAULT_LAYOUT),
        )?,
        remote: raw.remote,
    });
    let events = events_or(raw.events, &GIT_ARCHIVE_EVENTS);
    let common = RawSubscription {
        name: raw.name,
        events,
        environments: raw.environments,
        projects: raw.projects,
        timeout: raw.timeout,
        retry_schedule: raw.retry_schedule,
        // One commit at a time, in event order.
        max_in_flight: Some(1),
        ..RawSubscription::default()
    };
    let (key, mut sub) = parse_common(key, common, target)?;
    // Commits go in event order: the whole archive is one ordered lane.
    sub.ordering = DeliveryOrder::Subscription;
    Ok((key, sub))
}

/// The parts every kind of subscription has.
fn parse_common(
    key: &str,
    raw: RawSubscription,
    target: Target,
) -> Result<(String, Subscription), ConfigError> {
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
            Some(list) => parse_retry_schedule(&format!("{key}.retry_schedule"), &list)?,
            None => RetryPolicy::default().schedule,
        },
        ..RetryPolicy::default()
    };
    let respect_silences = raw.respect_silences || matches!(target, Target::Email(_));
    let sub = Subscription {
        respect_silences,
        name,
        config_key: key.to_owned(),
        filter,
        timeout: duration_in(
            &format!("{key}.timeout"),
            raw.timeout,
            "10s",
            limits::TIMEOUT,
        )?,
        retry,
        max_in_flight: count_in(
            &format!("{key}.max_in_flight"),
            raw.max_in_flight,
            8,
            limits::IN_FLIGHT,
        )?,
        target,
        ordering: parse_ordering(key, raw.ordering.as_deref())?,
        rate_limit: raw
            .rate_limit
            .as_deref()
            .map(RateLimit::parse)
            .transpose()
            .map_err(|reason| invalid(format!("{key}.rate_limit"), reason))?,
    };
    Ok((key.to_owned(), sub))
}

fn parse_ordering(key: &str, raw: Option<&str>) -> Result<DeliveryOrder, ConfigError> {
    let text = raw.unwrap_or("none");
    DeliveryOrder::parse(text).ok_or_else(|| {
        invalid(
            format!("{key}.ordering"),
            format!("`{text}` is not an ordering: use \"none\", \"cube\" or \"batch\""),
        )
    })
}

fn parse_webhook(
    key: &str,
    mut raw: RawSubscription,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Subscription), ConfigError> {
    let method = raw
        .method
        .take()
        .unwrap_or_else(|| "POST".to_owned())
        .to_ascii_uppercase();
    if !["POST", "PUT", "PATCH", "GET"].contains(&method.as_str()) {
        return Err(invalid(
            format!("{key}.method"),
            format!("`{method}`: use POST, PUT, PATCH or GET"),
        ));
    }
    let templated = raw.body_template.is_some();
    let project_xml = match raw.project_xml.take().as_deref() {
        None | Some("inline") => ProjectXml::Inline,
        Some("raw") => ProjectXml::Raw,
        Some("none") => ProjectXml::Omit,
        Some(other) => {
            return Err(invalid(
                format!("{key}.project_xml"),
                format!("`{other}`: use inline, raw or none"),
            ))
        }
    };
    let webhook = Webhook {
        project_xml,
        previous_secrets: Vec::new(),
        url: parse_url_template(&format!("{key}.url"), &raw.url)?,
        secret: parse_secret(
            key,
            raw.secret.take(),
            raw.secret_env.take(),
            env,
            templated,
        )?,
        method,
        headers: parse_headers(
            &format!("{key}.headers"),
            std::mem::take(&mut raw.headers),
            env,
        )?,
        content_type: raw.content_type.take(),
        body: raw
            .body_template
            .take()
            .map(|source| parse_template(&format!("{key}.body_template"), &source))
            .transpose()?,
    };
    parse_common(key, raw, Target::Webhook(webhook))
}

fn parse_healthcheck(
    key: &str,
    mut raw: RawSubscription,
) -> Result<(String, Subscription), ConfigError> {
    let webhook_only = [
        ("secret", raw.secret.is_some()),
        ("secret_env", raw.secret_env.is_some()),
        ("headers", !raw.headers.is_empty()),
        ("method", raw.method.is_some()),
        ("content_type", raw.content_type.is_some()),
        ("body_template", raw.body_template.is_some()),
        ("project_xml", raw.project_xml.is_some()),
    ];
    if let Some((field, _)) = webhook_only.iter().find(|(_, set)| *set) {
        return Err(invalid(
            format!("{key}.{field}"),
            "applies to webhooks, not healthchecks",
        ));
    }
    raw.events = events_or(std::mem::take(&mut raw.events), &HEALTHCHECK_EVENTS);
    let target = Target::Healthcheck(Healthcheck {
        url: parse_url_template(&format!("{key}.url"), &raw.url)?,
    });
    parse_common(key, raw, target)
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

fn parse_template(key: &str, source: &str) -> Result<Template, ConfigError> {
    Template::parse(source).map_err(|e| invalid(key, e.message))
}

/// A URL, possibly with `{{ … }}` placeholders. A plain URL must parse now;
/// a templated one must start with its scheme and host literally.
fn parse_url_template(key: &str, url: &str) -> Result<Template, ConfigError> {
    let literal_prefix = url.split("{{").next().unwrap_or_default();
    let probe = if literal_prefix.len() < url.len() {
        format!("{literal_prefix}x")
    } else {
        url.to_owned()
    };
    match url::Url::parse(&probe) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(invalid(
            key,
            "a URL's user and password are not sent: put credentials in an \
             `Authorization` header (`headers`)",
        )),
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            parse_template(key, url)
        }
        _ => Err(invalid(
            key,
            format!("`{url}` is not an absolute http or https URL"),
        )),
    }
}

/// Parses a subscription managed over the admin API: `spec` has the keys a
/// `[[webhooks]]`, `[[healthchecks]]` or `[[email]]` entry has, and errors
/// name them as `spec.<key>`.
pub fn parse_managed(
    kind: &str,
    spec: serde_json::Value,
    egress: &EgressPolicy,
    smtp_configured: bool,
) -> Result<Subscription, ConfigError> {
    let shape = |e: serde_json::Error| invalid("spec", e.to_string());
    let (_, sub) = match kind {
        "webhook" => parse_webhook(
            "spec",
            serde_json::from_value(spec).map_err(shape)?,
            &|_| None,
        )?,
        "healthcheck" => parse_healthcheck("spec", serde_json::from_value(spec).map_err(shape)?)?,
        "email" if smtp_configured => {
            parse_email_rule("spec", serde_json::from_value(spec).map_err(shape)?)?
        }
        "email" => {
            return Err(invalid(
                "kind",
                "email subscriptions need an [smtp] section",
            ))
        }
        other => {
            return Err(invalid(
                "kind",
                format!("`{other}`: use webhook, healthcheck or email"),
            ))
        }
    };
    sub.check_templates(&cloudevent::samples())
        .map_err(|(field, e)| invalid(format!("spec.{field}"), e.message))?;
    check_target(&sub, egress)?;
    Ok(sub)
}

/// The signing secret. Only a templated webhook (a third-party API that
/// verifies nothing) may go without one; it is then sent unsigned.
fn parse_secret(
    key: &str,
    inline: Option<String>,
    from_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    templated: bool,
) -> Result<Option<SigningSecret>, ConfigError> {
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
            (None, None) if templated => return Ok(None),
            (None, None) => return Err(invalid(
                format!("{key}.secret"),
                "a signing secret is required: `secret = \"whsec_…\"` or `secret_env = \"VAR\"` \
                 (`herald secret` prints a new one); only a webhook with a body_template may omit it",
            )),
        };
    // The reason never echoes the secret itself.
    SigningSecret::parse(text.trim())
        .map(Some)
        .map_err(|e| invalid(field, e.to_string()))
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now (`localhost`
/// binds its IPv4 address when it has one, which is what most clients try
/// first). `or_else` completes the "an address like …" message.
fn parse_listen_address(key: &str, text: &str, or_else: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let example = format!("`{text}` is not an address like 127.0.0.1:50051{or_else}");
    if text
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(invalid(key, example));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| invalid(key, format!("cannot resolve `{text}`: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| invalid(key, format!("`{text}` resolves to no address")))
}

/// Refuses a TLS key that does not belong to its certificate now, rather
/// than after Herald has said it is serving.
fn check_tls_identity(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), ConfigError> {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    match Server::builder().tls_config(config) {
        Ok(_) => Ok(()),
        Err(e) => Err(invalid(
            "server.tls.key",
            format!(
                "does not fit the certificate of server.tls.cert: {}",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
            ),
        )),
    }
}

fn parse_tls(raw: RawTls) -> Result<TlsSettings, ConfigError> {
    let read = |key: &str, path: &Path| {
        let pem = std::fs::read(path)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN") {
            return Err(invalid(key, format!("{} is not PEM", path.display())));
        }
        Ok(pem)
    };
    let cert_pem = read("server.tls.cert", &raw.cert)?;
    let key_pem = read("server.tls.key", &raw.key)?;
    check_tls_identity(&cert_pem, &key_pem)?;
    Ok(TlsSettings {
        cert_pem,
        key_pem,
        client_ca_pem: raw
            .client_ca
            .as_deref()
            .map(|p| read("server.tls.client_ca", p))
            .transpose()?,
    })
}

fn parse_egress(raw: RawEgress) -> Result<EgressPolicy, ConfigError> {
    let mut policy = EgressPolicy::default();
    for (i, text) in raw.allow.iter().enumerate() {
        policy.allow.push(
            text.parse()
                .map_err(|e: String| invalid(format!("egress.allow[{i}]"), e))?,
        );
    }
    for (i, text) in raw.deny.iter().enumerate() {
        let cidr = text
            .parse()
            .map_err(|e: String| invalid(format!("egress.deny[{i}]"), e))?;
        policy.deny.push((cidr, "egress.deny".to_owned()));
    }
    Ok(policy)
}

/// Refuses a subscription whose URL is an address the egress policy blocks.
/// (Names are checked after resolution when Herald starts, and on every
/// connection.)
fn check_target(sub: &Subscription, egress: &EgressPolicy) -> Result<(), ConfigError> {
    let Some(ip) = sub.target_url().and_then(crate::deliver::literal_host) else {
        return Ok(());
    };
    egress
        .check(ip)
        .map_err(|blocked| invalid(format!("{}.url", sub.config_key), blocked.to_string()))
}

/// `server.max_watch_streams` and `server.max_watch_streams_per_token`.
fn parse_watch_streams(
    total: Option<usize>,
    per_token: Option<usize>,
) -> Result<crate::feed::StreamLimits, ConfigError> {
    let defaults = crate::feed::StreamLimits::default();
    Ok(crate::feed::StreamLimits {
        total: count_in(
            "server.max_watch_streams",
            total,
            defaults.total,
            limits::WATCH_STREAMS,
        )?,
        per_caller: count_in(
            "server.max_watch_streams_per_token",
            per_token,
            defaults.per_caller,
            limits::WATCH_STREAMS,
        )?,
    })
}

/// Shortest token accepted: anything shorter is guessable.
const MIN_TOKEN_LEN: usize = 16;

fn parse_tokens(
    raw: Vec<RawToken>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ApiToken>, ConfigError> {
    use sha2::{Digest, Sha256};
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = format!("tokens[{i}]");
        let name =
            parse_id("name", &t.name).map_err(|e| invalid(format!("{key}.name"), e.reason))?;
        let role = match t.role.as_str() {
            "engine" => Role::Engine,
            "reader" => Role::Reader,
            "admin" => Role::Admin,
            other => {
                return Err(invalid(
                    format!("{key}.role"),
                    format!("`{other}`: use engine, reader or admin"),
                ))
            }
        };
        let (field, value) = match (t.token, t.token_env) {
            (Some(v), None) => (format!("{key}.token"), v),
            (None, Some(var)) => {
                let field = format!("{key}.token_env");
                let v = env(&var).ok_or_else(|| {
                    invalid(&field, format!("environment variable `{var}` is not set"))
                })?;
                (field, v)
            }
            _ => {
                return Err(invalid(
                    format!("{key}.token"),
                    "give `token` or `token_env`, exactly one",
                ))
            }
        };
        if value.trim().len() < MIN_TOKEN_LEN {
            return Err(invalid(
                field,
                format!("must be at least {MIN_TOKEN_LEN} characters"),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(value.trim().as_bytes()).into();
        if tokens
            .iter()
            .any(|other| other.name == name || other.digest == digest)
        {
            return Err(invalid(
                format!("{key}.name"),
                "another token has this name or value",
            ));
        }
        tokens.push(ApiToken { name, role, digest });
    }
    Ok(tokens)
}

/// The SMTP settings, and the recipients of the default rule.
fn parse_smtp(
    raw: RawSmtp,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SmtpSettings, Vec<String>), ConfigError> {
    let tls = match raw.tls.as_deref().unwrap_or("starttls") {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        other => {
            return Err(invalid(
                "smtp.tls",
                format!("`{other}`: use none, starttls or tls"),
            ))
        }
    };
    let default_port = match tls {
        SmtpTls::None => 25,
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    };
    let password = match (raw.password, raw.password_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "smtp.password",
                "give `password` or `password_env`, not both",
            ))
        }
        (Some(p), None) => Some(p),
        (None, Some(var)) => Some(env(&var).ok_or_else(|| {
            invalid(
                "smtp.password_env",
                format!("environment variable `{var}` is not set"),
            )
        })?),
        (None, None) => None,
    };
    if raw.port == Some(0) {
        return Err(invalid("smtp.port", "must be a port number, 1 to 65535"));
    }
    let credentials = match (raw.username, password) {
        (Some(user), Some(password)) => Some((user, Password(password))),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("smtp.password_env", "a username needs a password")),
        (None, Some(_)) => return Err(invalid("smtp.username", "a password needs a username")),
    };
    if raw.host.trim().is_empty() {
        return Err(invalid("smtp.host", "must not be empty"));
    }
    parse_mailbox("smtp.from", &raw.from)?;
    for (i, admin) in raw.admins.iter().enumerate() {
        parse_mailbox(&format!("smtp.admins[{i}]"), admin)?;
    }
    let settings = SmtpSettings {
        host: raw.host,
        port: raw.port.unwrap_or(default_port),
        tls,
        credentials,
        from: raw.from,
        timeout: duration_in("smtp.timeout", raw.timeout, "30s", limits::TIMEOUT)?,
    };
    Ok((settings, raw.admins))
}

fn parse_mailbox(key: &str, address: &str) -> Result<(), ConfigError> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| invalid(key, format!("`{address}` is not an email address: {e}")))
}

/// The `[[email]]` rules, or the default `admins` rule when SMTP is set,
/// no rule is, and `smtp.admins` lists someone.
fn parse_email_rules(
    raw: &mut RawConfig,
    smtp: Option<&(SmtpSettings, Vec<String>)>,
) -> Result<Vec<Subscription>, ConfigError> {
    let mut rules = std::mem::take(&mut raw.email);
    match smtp {
        None if !rules.is_empty() => {
            return Err(invalid("email", "email rules need an [smtp] section"))
        }
        None => return Ok(Vec::new()),
        Some((_, admins)) if rules.is_empty() && !admins.is_empty() => rules.push(RawEmail {
            name: "admins".to_owned(),
            to: admins.clone(),
            ..RawEmail::default()
        }),
        Some(_) => {}
    }
    let samples = cloudevent::samples();
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let key = format!("email[{i}]");
            let (_, sub) = parse_email_rule(&key, rule)?;
            sub.check_templates(&samples)
                .map_err(|(field, e)| invalid(format!("{key}.{field}"), e.message))?;
            Ok(sub)
        })
        .collect()
}

fn parse_email_rule(key: &str, raw: RawEmail) -> Result<(String, Subscription), ConfigError> {
    if raw.to.is_empty() {
        return Err(invalid(
            format!("{key}.to"),
            "must list at least one recipient",
        ));
    }
    for (i, address) in raw.to.iter().enumerate() {
        parse_mailbox(&format!("{key}.to[{i}]"), address)?;
    }
    let group_by = match raw.group_by {
        None => vec![GroupLabel::Environment, GroupLabel::Cube],
        Some(labels) => labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                GroupLabel::parse(l).ok_or_else(|| {
                    invalid(
                        format!("{key}.group_by[{i}]"),
                        format!("`{l}`: use environment, project or cube"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let rule = EmailRule {
        to: raw.to,
        group_by,
        group_wait: duration_in(
            &format!("{key}.group_wait"),
            raw.group_wait,
            "30s",
            limits::GROUP_WAIT,
        )?,
        group_interval: duration_in(
            &format!("{key}.group_interval"),
            raw.group_interval,
            "5m",
            limits::GROUP_WAIT,
        )?,
        repeat_interval: duration_in(
            &format!("{key}.repeat_interval"),
            raw.repeat_interval,
            "4h",
            limits::REPEAT_INTERVAL,
        )?,
        send_resolved: raw.send_resolved.unwrap_or(true),
        link: raw
            .link_template
            .map(|source| parse_template(&format!("{key}.link_template"), &source))
            .transpose()?,
    };
    let events = events_or(raw.events, &email::DEFAULT_EVENTS);
    let common = RawSubscription {
        name: raw.name,
        events,
        environments: raw.environments,
        projects: raw.projects,
        cubes: raw.cubes,
        timeout: raw.timeout,
        retry_schedule: raw.retry_schedule,
        max_in_flight: Some(1),
        ..RawSubscription::default()
    };
    parse_common(key, common, Target::Email(rule))
}

fn parse_stalls(raw: RawStalls) -> Result<StallPolicy, ConfigError> {
    let defaults = Learning::default();
    let default = match raw.max_duration.as_deref() {
        Some("off") => None,
        other => Some(duration_in(
            "stalls.max_duration",
            other.map(str::to_owned),
            "4h",
            limits::STALL_ALLOWANCE,
        )?),
    };
    let learning = match raw.learn {
        Some(false) => None,
        _ => Some(Learning {
            factor: learn_factor(raw.learn_factor, defaults.factor)?,
            percentile: match raw.learn_percentile {
                Some(p) if !(1.0..=100.0).contains(&p) => {
                    return Err(invalid(
                        "stalls.learn_percentile",
                        "must be between 1 and 100",
                    ))
                }
                Some(p) => p,
                None => defaults.percentile,
            },
            floor: duration_in(
                "stalls.learn_floor",
                raw.learn_floor,
                "10m",
                limits::LEARN_FLOOR,
            )?,
            min_samples: raw.learn_min_samples.unwrap_or(defaults.min_samples).max(1),
            window: count_in(
                "stalls.learn_window",
                raw.learn_window.map(|w| w.max(1)),
                defaults.window,
                limits::LEARN_WINDOW,
            )?,
        }),
    };
    if let Some(l) = &learning {
        if l.min_samples > l.window {
            return Err(invalid(
                "stalls.learn_min_samples",
                format!(
                    "{} samples can never be found in a window of {}",
                    l.min_samples, l.window
                ),
            ));
        }
    }
    let rules = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let key = format!("stalls.rules[{i}]");
            Ok(StallRule {
                environments: parse_patterns(&format!("{key}.environments"), r.environments)?,
                cubes: parse_patterns(&format!("{key}.cubes"), r.cubes)?,
                max_duration: parse_within(
                    &format!("{key}.max_duration"),
                    &r.max_duration,
                    limits::STALL_ALLOWANCE,
                )?,
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(StallPolicy {
        default,
        rules,
        learning,
    })
}

fn learn_factor(value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        Some(v) if v > 0.0 && v <= limits::LEARN_FACTOR => Ok(v),
        Some(_) => Err(invalid(
            "stalls.learn_factor",
            format!(
                "must be a number above 0 and at most {}",
                limits::LEARN_FACTOR
            ),
        )),
        None => Ok(default),
    }
}

fn parse_schedules(raw: Vec<RawSchedule>) -> Result<Vec<Schedule>, ConfigError> {
    let mut schedules: Vec<Schedule> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("schedules[{i}]");
        let id = |field: &str, value: &str| {
            parse_id(field, value).map_err(|e| invalid(format!("{key}.{field}"), e.reason))
        };
        let name = id("name", &r.name)?;
        if schedules.iter().any(|s| s.name == name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("`{name}` is used by another schedule"),
            ));
        }
        let cadence = match (r.every, r.cron) {
            (Some(every), None) => Cadence::Every(parse_within(
                &format!("{key}.every"),
                &every,
                limits::SCHEDULE_PERIOD,
            )?),
            (None, Some(cron)) => Cadence::Cron(Box::new(
                parse_cron(&cron).map_err(|reason| invalid(format!("{key}.cron"), reason))?,
            )),
            _ => {
                return Err(invalid(
                    format!("{key}.every"),
                    "give `every` or `cron`, exactly one",
                ))
            }
        };
        schedules.push(Schedule {
            environment_id: id("environment", &r.environment)?,
            cube_id: id("cube", &r.cube)?,
            grace: duration_in(
                &format!("{key}.grace"),
                r.grace,
                "1h",
                limits::SCHEDULE_GRACE,
            )?,
            name,
            cadence,
        });
    }
    Ok(schedules)
}

const RESERVED_HEADERS: [&str; 3] = ["content-length", "host", "user-agent"];

fn parse_headers(
    key: &str,
    headers: BTreeMap<String, RawHeaderValue>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let field = format!("{key}.{name}");
            if lower == "content-type" {
                return Err(invalid(field, "set it with the `content_type` key"));
            }
            if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(field, "is set by Herald and cannot be overridden"));
            }
            let value = match value {
                RawHeaderValue::Plain(value) => value,
                RawHeaderValue::Env { env: var } => env(&var).ok_or_else(|| {
                    invalid(&field, format!("environment variable `{var}` is not set"))
                })?,
            };
            hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(&field, "is not a valid header name"))?;
            hyper::header::HeaderValue::from_str(&value)
                .map_err(|_| invalid(&field, "is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

fn parse_retry_schedule(key: &str, list: &[String]) -> Result<Vec<Duration>, ConfigError> {
    if list.len() > MAX_RETRIES {
        return Err(invalid(
            key,
            format!(
                "lists {} waits; at most {MAX_RETRIES} are allowed",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, text)| parse_within(&format!("{key}[{i}]"), text, limits::RETRY_WAIT))
        .collect()
}

/// The range each configurable value accepts; the README's configuration
/// reference lists them. Anything outside cannot make sense, and keeping
/// every duration within years of now keeps date arithmetic from
/// overflowing.
mod limits {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    use crate::core::retry::MAX_RETRY_WAIT;
    use crate::core::subscription::{MAX_IN_FLIGHT, MAX_TIMEOUT};

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    const MINUTE: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    pub const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(1)..=MAX_TIMEOUT;
    pub const RETRY_WAIT: RangeInclusive<Duration> = Duration::ZERO..=MAX_RETRY_WAIT;
    pub const IN_FLIGHT: RangeInclusive<usize> = 1..=MAX_IN_FLIGHT;
    pub const SHUTDOWN_GRACE: RangeInclusive<Duration> = Duration::ZERO..=secs(10 * MINUTE);
    pub const REQUEST_BYTES: RangeInclusive<usize> = 1..=1024 * 1024 * 1024;
    pub const POLL_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(10)..=secs(HOUR);
    pub const LEASE_MARGIN: RangeInclusive<Duration> = secs(1)..=secs(HOUR);
    pub const EXCERPT_BYTES: RangeInclusive<usize> = 0..=1024 * 1024;
    pub const CHECK_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(100)..=secs(HOUR);
    pub const STALL_ALLOWANCE: RangeInclusive<Duration> = secs(1)..=secs(30 * DAY);
    pub const LEARN_FLOOR: RangeInclusive<Duration> = Duration::ZERO..=secs(30 * DAY);
    pub const LEARN_FACTOR: f64 = 100.0;
    pub const LEARN_WINDOW: RangeInclusive<usize> = 1..=1000;
    pub const SCHEDULE_PERIOD: RangeInclusive<Duration> = secs(1)..=secs(366 * DAY);
    pub const SCHEDULE_GRACE: RangeInclusive<Duration> = Duration::ZERO..=secs(30 * DAY);
    pub const GROUP_WAIT: RangeInclusive<Duration> = Duration::ZERO..=secs(DAY);
    pub const REPEAT_INTERVAL: RangeInclusive<Duration> = Duration::ZERO..=secs(30 * DAY);
    /// How long a rotated-out secret may keep signing.
    pub const SECRET_GRACE: RangeInclusive<Duration> = Duration::ZERO..=secs(30 * DAY);
    /// Watch and await streams: each holds a task, a small buffer and a
    /// connection's stream.
    pub const WATCH_STREAMS: RangeInclusive<usize> = 1..=100_000;
    /// Retention ages: pruning younger data would race the work that still
    /// needs it (retries, replays); older would leave the calendar.
    pub const RETENTION_AGE: RangeInclusive<Duration> = secs(HOUR)..=secs(100 * 365 * DAY);
    pub const RETENTION_INTERVAL: RangeInclusive<Duration> = secs(1)..=secs(DAY);
    pub const DOCUMENTS_KEPT: RangeInclusive<usize> = 1..=100_000;
    /// How long a watch stream may leave its buffer full.
    pub const WATCH_SEND_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(1)..=secs(5 * MINUTE);
}

/// A duration key, or its default, within `range`.
fn duration_in(
    key: &str,
    value: Option<String>,
    default: &str,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    parse_within(key, value.as_deref().unwrap_or(default), range)
}

/// Parses a duration and refuses one outside `range`, quoting it as written.
fn parse_within(
    key: &str,
    text: &str,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let duration = parse_duration(text).map_err(|reason| invalid(key, reason))?;
    let quoted = format!("`{}`", text.trim());
    within(key, duration, &quoted, range, |d| format_duration(*d))
}

/// A count key, or its default, within `range`.
fn count_in(
    key: &str,
    value: Option<usize>,
    default: usize,
    range: RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let n = value.unwrap_or(default);
    within(key, n, &n.to_string(), range, usize::to_string)
}

/// `value` when `range` holds it; otherwise an error showing it as `shown`
/// and the range with `show`.
fn within<T: PartialOrd>(
    key: &str,
    value: T,
    shown: &str,
    range: RangeInclusive<T>,
    show: impl Fn(&T) -> String,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        return Ok(value);
    }
    let (low, high) = (show(range.start()), show(range.end()));
    Err(invalid(
        key,
        format!("{shown} is out of range: use {low} to {high}"),
    ))
}

/// The RotateSecret `grace` over the API: how long the old secret signs on.
pub fn parse_secret_grace(text: &str) -> Result<Duration, ConfigError> {
    parse_within("grace", text, limits::SECRET_GRACE)
}

/// Writes a duration in the largest unit that shows it exactly: `500ms`,
/// `30s`, `5m`, `7d`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(size, _)| secs.is_multiple_of(*size))
        .map_or((secs, "s"), |(size, unit)| (secs / size, unit));
    format!("{n}{unit}")
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
    store: Option<store::RawStore>,
    delivery: Option<RawDelivery>,
    #[serde(default)]
    webhooks: Vec<RawSubscription>,
    #[serde(default)]
    healthchecks: Vec<RawSubscription>,
    stalls: Option<RawStalls>,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
    #[serde(default)]
    gates: Vec<gates::RawGate>,
    #[serde(default)]
    openlineage: Vec<openlineage::RawOpenLineage>,
    smtp: Option<RawSmtp>,
    #[serde(default)]
    email: Vec<RawEmail>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    egress: Option<RawEgress>,
    #[serde(default)]
    git_archives: Vec<RawGitArchive>,
    retention: Option<retention::RawRetention>,
    console: Option<console::RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitArchive {
    name: String,
    path: PathBuf,
    branch: Option<String>,
    layout: Option<String>,
    remote: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    projects: Vec<String>,
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    from: String,
    timeout: Option<String>,
    /// Recipients of the default rule when no `[[email]]` is given.
    #[serde(default)]
    admins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    name: String,
    to: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    cubes: Vec<String>,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    send_resolved: Option<bool>,
    link_template: Option<String>,
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    tls: Option<RawTls>,
    max_request_bytes: Option<usize>,
    grpc_listen: Option<String>,
    http_listen: Option<String>,
    shutdown_grace: Option<String>,
    insecure: Option<bool>,
    max_watch_streams: Option<usize>,
    max_watch_streams_per_token: Option<usize>,
    watch_send_timeout: Option<String>,
    replica_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    role: String,
    token: Option<String>,
    token_env: Option<String>,
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
/// A `[[webhooks]]` or `[[healthchecks]]` entry; the webhook-only keys are
/// refused on a healthcheck.
#[derive(Default)]
struct RawSubscription {
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
    headers: BTreeMap<String, RawHeaderValue>,
    timeout: Option<String>,
    retry_schedule: Option<Vec<String>>,
    max_in_flight: Option<usize>,
    method: Option<String>,
    content_type: Option<String>,
    body_template: Option<String>,
    project_xml: Option<String>,
    /// Suppress deliveries a silence matches (see `herald silence`).
    #[serde(default)]
    respect_silences: bool,
    /// "none" (default), "cube" or "batch": ordered delivery lanes.
    ordering: Option<String>,
    /// "20/s" or "600/m": a token bucket over attempts.
    rate_limit: Option<String>,
}

/// A header value inline, or `{ env = "VAR" }` to keep a token out of the
/// file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawHeaderValue {
    Plain(String),
    Env { env: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStalls {
    max_duration: Option<String>,
    learn: Option<bool>,
    learn_factor: Option<f64>,
    learn_percentile: Option<f64>,
    learn_floor: Option<String>,
    learn_min_samples: Option<usize>,
    learn_window: Option<usize>,
    check_interval: Option<String>,
    #[serde(default)]
    rules: Vec<RawStallRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStallRule {
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    cubes: Vec<String>,
    max_duration: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    environment: String,
    cube: String,
    every: Option<String>,
    cron: Option<String>,
    grace: Option<String>,
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

    /// A webhook entry with `extra` lines.
    fn hook(extra: &str) -> String {
        format!("[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\n{extra}")
    }

    const SMTP: &str = "[smtp]\nhost = \"h\"\nfrom = \"herald@example.com\"\n";

    /// An SMTP section and an email rule with `extra` lines.
    fn rule(extra: &str) -> String {
        format!("{SMTP}[[email]]\nname = \"r\"\nto = [\"a@example.com\"]\n{extra}")
    }

    /// Loading `text` fails on exactly `key`.
    fn assert_key(text: &str, key: &str) {
        assert_eq!(key_of(load(text).unwrap_err()), key, "{text}");
    }

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn credentials_in_a_url_are_refused_with_where_they_belong() {
        for url in [
            "https://etl:secret@x.example/hook",
            "https://etl@x.example/{{ data.cube_id }}",
        ] {
            let text = hook("").replace("http://x.example", url);
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.contains("webhooks[0].url") && err.contains("Authorization"),
                "{err}"
            );
        }
    }

    #[test]
    fn no_file_means_the_documented_defaults() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(s.server.grpc_listen.to_string(), DEFAULT_GRPC_LISTEN);
        assert_eq!(s.store.url, DEFAULT_STORE_URL);
        assert!(s.subscriptions.is_empty());
        assert!(s.schedules.is_empty());
        assert_eq!(s.stalls, StallPolicy::default());
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
        let sub = &s.subscriptions[0];
        assert_eq!(sub.name, "etl");
        assert_eq!(sub.timeout, Duration::from_secs(3));
        assert_eq!(
            sub.retry.schedule,
            vec![Duration::from_secs(1), Duration::from_secs(60)]
        );
        let Target::Webhook(hook) = &sub.target else {
            panic!("a webhook")
        };
        assert_eq!(hook.headers, vec![("X-Team".to_owned(), "data".to_owned())]);
        assert_eq!(hook.secret, Some(SigningSecret::parse(SECRET).unwrap()));
        assert_eq!(hook.method, "POST");
    }

    #[test]
    fn healthchecks_stalls_and_schedules_parse() {
        let s = load(
            r#"
            [stalls]
            max_duration = "off"
            learn_factor = 2.5
            [[stalls.rules]]
            environments = ["prod"]
            cubes = ["sales*"]
            max_duration = "45m"
            [[healthchecks]]
            name = "hc"
            url = "https://hc.example/ping/{{ data.cube_id }}"
            [[schedules]]
            name = "sales-daily"
            environment = "prod"
            cube = "sales"
            cron = "0 6 * * *"
            grace = "30m"
            "#,
        )
        .unwrap();
        assert_eq!(s.stalls.default, None);
        assert_eq!(s.stalls.rules[0].max_duration, Duration::from_secs(2700));
        assert_eq!(s.stalls.learning.as_ref().unwrap().factor, 2.5);
        assert_eq!(
            s.subscriptions[0].filter.events.len(),
            4,
            "healthchecks default to batch events"
        );
        assert_eq!(s.schedules[0].grace, Duration::from_secs(1800));
    }

    #[test]
    fn templates_are_checked_against_sample_events_at_load() {
        let hook = |events: &str, body: &str| {
            format!("[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = {events}\nsecret = \"{SECRET}\"\nbody_template = '{body}'")
        };
        assert!(load(&hook("[\"aggregate.batch.*\"]", "{{ data.cube_name }}")).is_ok());
        let typo = load(&hook("[\"aggregate.batch.*\"]", "{{ data.cube_nmae }}")).unwrap_err();
        assert_eq!(key_of(typo.clone()), "webhooks[0].body_template");
        assert!(
            typo.to_string().contains("line 1: undefined value"),
            "{typo}"
        );
        // Environment events have no cube: a template that needs one cannot
        // serve a subscription that receives them.
        let wrong_kind = load(&hook("[\"environment.*\"]", "{{ data.cube_name }}")).unwrap_err();
        assert!(
            wrong_kind.to_string().contains("environment."),
            "{wrong_kind}"
        );
        let syntax = load(&hook("[\"*\"]", "{% if %}")).unwrap_err();
        assert_eq!(key_of(syntax), "webhooks[0].body_template");
        let bad_schedule = "[[schedules]]\nname = \"s\"\nenvironment = \"prod\"\ncube = \"c\"";
        assert_key(bad_schedule, "schedules[0].every");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let overrides = Overrides {
            grpc_listen: Some("127.0.0.1:7000".into()),
            http_listen: Some("off".into()),
            store_url: Some("sqlite://other.db".into()),
            insecure: false,
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
    fn a_listen_address_may_name_a_host() {
        let s = load("[server]\ngrpc_listen = \"localhost:50051\"\nhttp_listen = \"localhost:0\"")
            .unwrap();
        assert_eq!(s.server.grpc_listen.to_string(), "127.0.0.1:50051");
        assert_eq!(s.server.http_listen.unwrap().to_string(), "127.0.0.1:0");
        assert_key(
            "[server]\ngrpc_listen = \"localhost\"",
            "server.grpc_listen",
        );
        assert_key("[server]\ngrpc_listen = \":50051\"", "server.grpc_listen");
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        assert_key(&hook("timeout = \"soon\""), "webhooks[0].timeout");
        assert_key(&hook("max_in_flight = 0"), "webhooks[0].max_in_flight");
        assert_key(
            &hook("headers = { \"webhook-id\" = \"x\" }"),
            "webhooks[0].headers.webhook-id",
        );
        let bad_url = format!("[[webhooks]]\nname = \"a\"\nurl = \"ftp://x\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"");
        assert_key(&bad_url, "webhooks[0].url");
        let typo = format!("[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"aggregate.batch.faild\"]\nsecret = \"{SECRET}\"");
        assert_key(&typo, "webhooks[0].events");
        let no_secret = "[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]";
        assert_key(no_secret, "webhooks[0].secret");
        let missing_env = "[[webhooks]]\nname = \"a\"\nurl = \"http://x.example\"\nevents = [\"*\"]\nsecret_env = \"NOPE\"";
        assert_key(missing_env, "webhooks[0].secret_env");
        let twice = format!("{}\n{}", hook(""), hook(""));
        assert_key(&twice, "webhooks[1].name");
        assert_key("[store]\nurl = \"mysql://x\"", "store.url");
    }

    #[test]
    fn values_that_cannot_make_sense_are_refused_with_their_key() {
        assert_key(&hook("timeout = \"100000000d\""), "webhooks[0].timeout");
        assert_key(&hook("timeout = \"301s\""), "webhooks[0].timeout");
        assert_key(&hook("timeout = \"0s\""), "webhooks[0].timeout");
        assert!(load(&hook("timeout = \"5m\"")).is_ok());
        assert_key(
            &hook("retry_schedule = [\"1s\", \"8d\"]"),
            "webhooks[0].retry_schedule[1]",
        );
        assert_key(
            &hook("retry_schedule = [\"1s\", \"100000000000d\"]"),
            "webhooks[0].retry_schedule[1]",
        );
        assert!(load(&hook("retry_schedule = [\"0s\", \"7d\"]")).is_ok());
        let fifty_one = vec!["\"1s\""; 51].join(", ");
        assert_key(
            &hook(&format!("retry_schedule = [{fifty_one}]")),
            "webhooks[0].retry_schedule",
        );
        assert_key(&hook("max_in_flight = 1025"), "webhooks[0].max_in_flight");
        assert_key(
            &hook("max_in_flight = 4000000000"),
            "webhooks[0].max_in_flight",
        );
        assert!(load(&hook("max_in_flight = 1024")).is_ok());
        assert_key(&hook("rate_limit = \"0/s\""), "webhooks[0].rate_limit");
        assert_key(&hook("rate_limit = \"fast\""), "webhooks[0].rate_limit");
        assert_key(&hook("ordering = \"x\""), "webhooks[0].ordering");
        let ordered = load(&hook("ordering = \"cube\"\nrate_limit = \"20/s\"")).unwrap();
        assert_eq!(ordered.subscriptions[0].ordering, DeliveryOrder::Cube);
        let healthcheck =
            "[[healthchecks]]\nname = \"hc\"\nurl = \"http://hc.example\"\ntimeout = \"1h\"";
        assert_key(healthcheck, "healthchecks[0].timeout");

        assert_key(&rule("group_wait = \"2d\""), "email[0].group_wait");
        assert_key(&rule("group_interval = \"2d\""), "email[0].group_interval");
        assert_key(
            &rule("repeat_interval = \"400d\""),
            "email[0].repeat_interval",
        );
        assert_key(&format!("{SMTP}timeout = \"0s\""), "smtp.timeout");
        assert_key(&format!("{SMTP}port = 0"), "smtp.port");

        for (text, key) in [
            ("[server]\nshutdown_grace = \"1d\"", "server.shutdown_grace"),
            ("[server]\nmax_request_bytes = 2000000000", "server.max_request_bytes"),
            ("[delivery]\npoll_interval = \"0s\"", "delivery.poll_interval"),
            ("[delivery]\npoll_interval = \"2h\"", "delivery.poll_interval"),
            ("[delivery]\nlease_margin = \"100000000d\"", "delivery.lease_margin"),
            ("[delivery]\nresponse_excerpt_bytes = 4000000000", "delivery.response_excerpt_bytes"),
            ("[stalls]\ncheck_interval = \"0s\"", "stalls.check_interval"),
            ("[stalls]\nmax_duration = \"100000000d\"", "stalls.max_duration"),
            ("[stalls]\nmax_duration = \"0s\"", "stalls.max_duration"),
            ("[stalls]\nlearn_floor = \"1000d\"", "stalls.learn_floor"),
            ("[stalls]\nlearn_factor = 1e300", "stalls.learn_factor"),
            ("[stalls]\nlearn_window = 100000000", "stalls.learn_window"),
            ("[stalls]\nlearn_window = 10\nlearn_min_samples = 11", "stalls.learn_min_samples"),
            ("[[stalls.rules]]\nmax_duration = \"100000000d\"", "stalls.rules[0].max_duration"),
            (
                "[[schedules]]\nname = \"s\"\nenvironment = \"e\"\ncube = \"c\"\nevery = \"100000000d\"",
                "schedules[0].every",
            ),
            (
                "[[schedules]]\nname = \"s\"\nenvironment = \"e\"\ncube = \"c\"\nevery = \"0s\"",
                "schedules[0].every",
            ),
            (
                "[[schedules]]\nname = \"s\"\nenvironment = \"e\"\ncube = \"c\"\nevery = \"1d\"\ngrace = \"100000000d\"",
                "schedules[0].grace",
            ),
        ] {
            assert_key(text, key);
        }
        let err = load(&hook("timeout = \"6m\"")).unwrap_err().to_string();
        assert!(err.contains("`6m`") && err.contains("5m"), "{err}");
    }

    #[test]
    fn smtp_and_email_rules_parse_with_their_defaults() {
        let s = load(
            r#"
            [smtp]
            host = "smtp.example"
            tls = "tls"
            username = "herald"
            password_env = "ETL_SECRET"
            from = "Herald <herald@example.com>"
            admins = ["ops@example.com"]
            "#,
        )
        .unwrap();
        let smtp = s.smtp.unwrap();
        assert_eq!((smtp.port, smtp.tls), (465, SmtpTls::Tls));
        assert!(
            !format!("{smtp:?}").contains(SECRET),
            "the password never prints"
        );
        let Target::Email(rule) = &s.subscriptions[0].target else {
            panic!("the default admins rule")
        };
        assert_eq!(s.subscriptions[0].name, "admins");
        assert_eq!(rule.to, ["ops@example.com"]);
        assert_eq!(rule.group_wait, Duration::from_secs(30));
        assert_eq!(rule.repeat_interval, Duration::from_secs(4 * 3600));
        assert!(rule.send_resolved);
    }

    #[test]
    fn smtp_and_email_errors_name_the_key() {
        let smtp = SMTP;
        assert_key(&format!("{smtp}tls = \"ssl\""), "smtp.tls");
        assert_key(
            "[smtp]\nhost = \"h\"\nfrom = \"not an address\"",
            "smtp.from",
        );
        assert_key(&rule("group_by = [\"region\"]"), "email[0].group_by[0]");
        assert_key(&rule("group_wait = \"soon\""), "email[0].group_wait");
        let bad_to = format!("{smtp}[[email]]\nname = \"r\"\nto = [\"a@example.com\", \"nobody\"]");
        assert_key(&bad_to, "email[0].to[1]");
        let no_smtp = "[[email]]\nname = \"r\"\nto = [\"a@example.com\"]";
        assert_key(no_smtp, "email");
    }

    #[test]
    fn token_errors_name_the_key() {
        let token = |extra: &str| format!("[[tokens]]\nname = \"t\"\n{extra}");
        assert_key(
            &token("role = \"root\"\ntoken = \"0123456789abcdefgh\""),
            "tokens[0].role",
        );
        assert_key(
            &token("role = \"admin\"\ntoken = \"short\""),
            "tokens[0].token",
        );
        assert_key(&token("role = \"admin\""), "tokens[0].token");
        let twice = format!(
            "{}\n{}",
            token("role = \"admin\"\ntoken = \"0123456789abcdefgh\""),
            token("role = \"reader\"\ntoken = \"0123456789abcdefgh\"")
        );
        assert_key(&twice, "tokens[1].name");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = load("[server]\ngrpc_listne = \"x\"").unwrap_err();
        assert!(err.to_string().contains("grpc_listne"), "{err}");
    }

    #[test]
    fn watch_stream_limits_default_to_1000_and_are_bounded() {
        let s = load("").unwrap();
        assert_eq!(
            (
                s.server.watch_streams.total,
                s.server.watch_streams.per_caller
            ),
            (1000, 1000)
        );
        assert_eq!(s.server.watch_send_timeout, Duration::from_secs(10));
        let s = load("[server]\nmax_watch_streams = 5\nmax_watch_streams_per_token = 2").unwrap();
        assert_eq!(
            (
                s.server.watch_streams.total,
                s.server.watch_streams.per_caller
            ),
            (5, 2)
        );
        assert_key(
            "[server]\nmax_watch_streams = 0",
            "server.max_watch_streams",
        );
        assert_key(
            "[server]\nmax_watch_streams_per_token = 1000000",
            "server.max_watch_streams_per_token",
        );
        assert_key(
            "[server]\nwatch_send_timeout = \"1h\"",
            "server.watch_send_timeout",
        );
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
        for (d, text) in [
            (0, "0s"),
            (90, "90s"),
            (300, "5m"),
            (7200, "2h"),
            (604_800, "7d"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(d)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
