//! `herald.v1.SubscriptionService`: subscriptions managed over the API.
//! A spec has the keys of the matching configuration entry and goes
//! through the same parser, so both accept and refuse exactly the same
//! things. Subscriptions of the configuration file are listed, read-only.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::pb::{self, subscription_service_server::SubscriptionService};
use crate::clock::Clock;
use crate::config::{format_duration, parse_secret_grace, ConfigError};
use crate::core::email::GroupLabel;
use crate::core::signature::SigningSecret;
use crate::core::subscription::{DeliveryOrder, Subscription, Target};
use crate::core::validate::{parse_id, FieldError};
use crate::ingest::Ingestor;
use crate::registry::{build_managed, ManagedContext, Registry};
use crate::store::{ManagedSubscription, Store, StoredSecret};

pub struct SubscriptionApi {
    store: Store,
    registry: Registry,
    context: ManagedContext,
    ingestor: Ingestor,
    clock: Arc<dyn Clock>,
}

/// The parts the service is built from.
pub struct SubscriptionParts {
    pub store: Store,
    pub registry: Registry,
    pub context: ManagedContext,
    pub ingestor: Ingestor,
    pub clock: Arc<dyn Clock>,
}

impl SubscriptionApi {
    pub fn new(p: SubscriptionParts) -> Self {
        Self {
            store: p.store,
            registry: p.registry,
            context: p.context,
            ingestor: p.ingestor,
            clock: p.clock,
        }
    }

    /// Reloads the registry from the configuration and the store.
    async fn reload(&self) -> Result<(), ApiError> {
        self.registry.rebuild(&self.store, &self.context).await?;
        Ok(())
    }

    fn is_config(&self, name: &str) -> bool {
        self.registry.configured().iter().any(|s| s.name == name)
    }

    async fn managed(&self, name: &str) -> Result<ManagedSubscription, ApiError> {
        let name = parse_id("name", name)?;
        if self.is_config(&name) {
            return Err(ApiError::Precondition(format!(
                "name: subscription `{name}` is managed by the configuration file and read-only here"
            )));
        }
        self.store
            .managed_subscriptions()
            .await?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("name: no subscription `{name}`")))
    }

    async fn info(&self, name: &str) -> Result<pb::SubscriptionInfo, ApiError> {
        let name = parse_id("name", name)?;
        let sub = self
            .registry
            .current()
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("name: no subscription `{name}`")))?;
        let disabled = self.store.subscription_disabled(&name).await?;
        Ok(pb::SubscriptionInfo {
            spec: Some(spec_of(&sub)),
            enabled: disabled.is_none(),
            disabled_reason: disabled.unwrap_or_default(),
            managed_by: if self.is_config(&name) {
                "config"
            } else {
                "api"
            }
            .to_owned(),
            signing_secrets: signing_secrets(&sub, self.clock.now().timestamp()),
            rate_limit_waited: match sub.rate_limit {
                Some(_) => format_duration(
                    self.store
                        .rate_limit_waited(&name, self.clock.now())
                        .await?,
                ),
                None => String::new(),
            },
        })
    }

    /// Checks a spec by building it, then stores it and reloads.
    async fn save(&self, managed: &ManagedSubscription) -> Result<(), ApiError> {
        let sub = build_managed(managed, &self.context).map_err(spec_error)?;
        crate::app::check_target_name(&sub, &self.context.egress)
            .await
            .map_err(|reason| ApiError::InvalidArgument(FieldError::new("spec.url", reason)))?;
        self.store.save_managed(managed, self.clock.now()).await?;
        self.reload().await
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| ApiError::from(FieldError::new("spec", "is required")))?;
        let name = parse_id("spec.name", &spec.name).map_err(ApiError::from)?;
        if self.registry.current().iter().any(|s| s.name == name) {
            return Err(ApiError::AlreadyExists(format!(
                "spec.name: a subscription `{name}` exists"
            ))
            .into());
        }
        let (kind, json) = spec_json(&spec).map_err(ApiError::from)?;
        let secret = match (kind, spec.secret.as_str()) {
            ("webhook", "") => SigningSecret::generate().expose(),
            ("webhook", given) => SigningSecret::parse(given)
                .map_err(|e| ApiError::from(FieldError::new("spec.secret", e.to_string())))?
                .expose(),
            _ => String::new(),
        };
        let secrets = if secret.is_empty() {
            Vec::new()
        } else {
            vec![StoredSecret {
                secret: secret.clone(),
                expires_at: None,
            }]
        };
        let managed = ManagedSubscription {
            name: name.clone(),
            kind: kind.to_owned(),
            spec: json,
            secrets,
        };
        self.save(&managed).await?;
        tracing::info!(subscription = %name, kind, "subscription created over the API");
        Ok(Response::new(pb::CreateSubscriptionResponse {
            subscription: Some(self.info(&name).await?),
            secret,
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        Ok(Response::new(self.info(&request.into_inner().name).await?))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let mut subscriptions = Vec::new();
        for sub in self.registry.current().iter() {
            subscriptions.push(self.info(&sub.name).await?);
        }
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let request = request.into_inner();
        let mut spec = request
            .spec
            .ok_or_else(|| ApiError::from(FieldError::new("spec", "is required")))?;
        let mut managed = self.managed(&spec.name).await?;
        if !spec.secret.is_empty() {
            return Err(ApiError::from(FieldError::new(
                "spec.secret",
                "rotate secrets with RotateSecret",
            ))
            .into());
        }
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        if !paths.is_empty() && spec.kind == pb::SubscriptionKind::Unspecified as i32 {
            spec.kind = kind_of(&managed.kind) as i32;
        }
        let (kind, json) = spec_json(&spec).map_err(ApiError::from)?;
        if kind != managed.kind {
            return Err(ApiError::from(FieldError::new(
                "spec.kind",
                format!("a {} stays a {}", managed.kind, managed.kind),
            ))
            .into());
        }
        managed.spec = if paths.is_empty() {
            json
        } else {
            patch_spec(&managed.spec, &json, &paths).map_err(ApiError::from)?
        };
        self.save(&managed).await?;
        Ok(Response::new(self.info(&managed.name).await?))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let managed = self.managed(&request.into_inner().name).await?;
        let failed = self
            .store
            .delete_managed(&managed.name, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(pb::DeleteSubscriptionResponse {
            pending_failed: failed as u32,
        }))
    }

    async fn enable_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let managed = self.managed(&request.into_inner().name).await?;
        self.store
            .set_disabled(&managed.name, None, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(self.info(&managed.name).await?))
    }

    async fn disable_subscription(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let managed = self.managed(&request.into_inner().name).await?;
        self.store
            .set_disabled(
                &managed.name,
                Some("disabled over the admin API"),
                self.clock.now(),
            )
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(self.info(&managed.name).await?))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let r = request.into_inner();
        let mut managed = self.managed(&r.name).await?;
        if managed.kind != "webhook" {
            return Err(ApiError::Precondition(format!(
                "name: `{}` is a {}, which has no secret",
                managed.name, managed.kind
            ))
            .into());
        }
        let grace = match r.grace.as_str() {
            "" => std::time::Duration::from_secs(24 * 3600),
            text => parse_secret_grace(text).map_err(spec_error)?,
        };
        let secret = match r.secret.as_str() {
            "" => SigningSecret::generate().expose(),
            given => SigningSecret::parse(given)
                .map_err(|e| ApiError::from(FieldError::new("secret", e.to_string())))?
                .expose(),
        };
        let now = self.clock.now().timestamp();
        // The grace is at most 30 days: this cannot overflow.
        let until = now.saturating_add(grace.as_secs() as i64);
        let mut secrets = vec![StoredSecret {
            secret: secret.clone(),
            expires_at: None,
        }];
        for old in managed.secrets {
            let expires_at = old.expires_at.unwrap_or(until);
            if expires_at > now {
                secrets.push(StoredSecret {
                    secret: old.secret,
                    expires_at: Some(expires_at),
                });
            }
        }
        managed.secrets = secrets;
        self.save(&managed).await?;
        Ok(Response::new(pb::RotateSecretResponse { secret }))
    }

    async fn send_test_event(
        &self,
        request: Request<pb::SubscriptionName>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let name = request.into_inner().name;
        let info = self.info(&name).await?;
        let event_id = self
            .ingestor
            .raise_test(&info.spec.map(|s| s.name).unwrap_or(name))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SendTestEventResponse { event_id }))
    }
}

fn spec_error(e: ConfigError) -> ApiError {
    match e {
        ConfigError::Invalid { key, reason } => {
            ApiError::InvalidArgument(FieldError::new(key, reason))
        }
        other => ApiError::InvalidArgument(FieldError::new("spec", other.to_string())),
    }
}

/// The SubscriptionSpec fields an update mask may name: those that are
/// configuration keys (`name`, `kind` and `secret` are not changed by an
/// update).
const PATCHABLE: [&str; 22] = [
    "url",
    "events",
    "environments",
    "projects",
    "cubes",
    "headers",
    "timeout",
    "retry_schedule",
    "max_in_flight",
    "method",
    "content_type",
    "body_template",
    "to",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "send_resolved",
    "link_template",
    "respect_silences",
    "ordering",
    "rate_limit",
];

/// The stored spec with the masked keys taken from `new`: a key `new`
/// leaves out (an empty field) is removed, i.e. back to its default. Keys
/// not named keep their stored values, header values included (the API
/// never shows those, so a read-modify-write could not keep them).
fn patch_spec(stored: &Value, new: &Value, paths: &[String]) -> Result<Value, FieldError> {
    let mut patched = stored.as_object().cloned().unwrap_or_default();
    for (i, path) in paths.iter().enumerate() {
        if !PATCHABLE.contains(&path.as_str()) {
            return Err(FieldError::new(
                format!("update_mask.paths[{i}]"),
                format!("`{path}` is not a SubscriptionSpec field an update can change"),
            ));
        }
        match new.get(path) {
            Some(value) => patched.insert(path.clone(), value.clone()),
            None => patched.remove(path),
        };
    }
    Ok(Value::Object(patched))
}

fn kind_of(stored: &str) -> pb::SubscriptionKind {
    match stored {
        "webhook" => pb::SubscriptionKind::Webhook,
        "healthcheck" => pb::SubscriptionKind::Healthcheck,
        "email" => pb::SubscriptionKind::Email,
        _ => pb::SubscriptionKind::Unspecified,
    }
}

/// The configuration-entry keys a spec sets, by kind.
fn spec_json(s: &pb::SubscriptionSpec) -> Result<(&'static str, Value), FieldError> {
    let kind = match pb::SubscriptionKind::try_from(s.kind) {
        Ok(pb::SubscriptionKind::Webhook) => "webhook",
        Ok(pb::SubscriptionKind::Healthcheck) => "healthcheck",
        Ok(pb::SubscriptionKind::Email) => "email",
        _ => {
            return Err(FieldError::new(
                "spec.kind",
                "use WEBHOOK, HEALTHCHECK or EMAIL",
            ))
        }
    };
    let mut m = Map::new();
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            m.insert(key.to_owned(), json!(value));
        }
    };
    text("name", &s.name);
    text("timeout", &s.timeout);
    if kind == "email" {
        text("group_wait", &s.group_wait);
        text("group_interval", &s.group_interval);
        text("repeat_interval", &s.repeat_interval);
        text("link_template", &s.link_template);
    } else {
        text("url", &s.url);
        text("method", &s.method);
        text("content_type", &s.content_type);
        text("body_template", &s.body_template);
        text("ordering", &s.ordering);
        text("rate_limit", &s.rate_limit);
    }
    let lists = [
        ("events", &s.events),
        ("environments", &s.environments),
        ("projects", &s.projects),
        ("cubes", &s.cubes),
        ("retry_schedule", &s.retry_schedule),
        ("to", &s.to),
        ("group_by", &s.group_by),
    ];
    for (key, list) in lists {
        if !list.is_empty() {
            m.insert(key.to_owned(), json!(list));
        }
    }
    if !s.headers.is_empty() {
        m.insert("headers".to_owned(), json!(s.headers));
    }
    if s.max_in_flight > 0 {
        m.insert("max_in_flight".to_owned(), json!(s.max_in_flight));
    }
    if let Some(send) = s.send_resolved {
        m.insert("send_resolved".to_owned(), json!(send));
    }
    if s.respect_silences && kind != "email" {
        m.insert("respect_silences".to_owned(), json!(true));
    }
    Ok((kind, Value::Object(m)))
}

/// A spec describing a built subscription (without secrets).
fn spec_of(sub: &Subscription) -> pb::SubscriptionSpec {
    let patterns = |list: &[crate::core::filter::Pattern]| {
        list.iter().map(|p| p.as_str().to_owned()).collect()
    };
    let mut spec = pb::SubscriptionSpec {
        name: sub.name.clone(),
        events: patterns(&sub.filter.events),
        environments: patterns(&sub.filter.environments),
        projects: patterns(&sub.filter.projects),
        cubes: patterns(&sub.filter.cubes),
        // Durations as a spec writes them, exactly (`250ms`, `5m`), so a
        // spec read back is accepted again.
        timeout: format_duration(sub.timeout),
        retry_schedule: sub
            .retry
            .schedule
            .iter()
            .map(|d| format_duration(*d))
            .collect(),
        max_in_flight: sub.max_in_flight as u32,
        respect_silences: sub.respect_silences,
        ordering: match sub.ordering {
            DeliveryOrder::Cube | DeliveryOrder::Batch => sub.ordering.as_str().to_owned(),
            DeliveryOrder::None | DeliveryOrder::Subscription => String::new(),
        },
        rate_limit: sub.rate_limit.map(|r| r.format()).unwrap_or_default(),
        ..Default::default()
    };
    match &sub.target {
        Target::Webhook(w) => {
            spec.kind = pb::SubscriptionKind::Webhook as i32;
            spec.url = w.url.source().to_owned();
            spec.method = w.method.clone();
            spec.content_type = w.content_type.clone().unwrap_or_default();
            spec.body_template = w
                .body
                .as_ref()
                .map(|b| b.source().to_owned())
                .unwrap_or_default();
            // Header names only: values may be tokens.
            spec.headers = w
                .headers
                .iter()
                .map(|(n, _)| (n.clone(), "<hidden>".to_owned()))
                .collect();
        }
        Target::Healthcheck(h) => {
            spec.kind = pb::SubscriptionKind::Healthcheck as i32;
            spec.url = h.url.source().to_owned();
        }
        Target::GitArchive(g) => {
            // Configured only; shown as its repository path.
            spec.kind = pb::SubscriptionKind::Git as i32;
            spec.url = g.path.display().to_string();
        }
        Target::OpenLineage(o) => {
            // Configured only; shown as its endpoint.
            spec.url = o.url.clone();
        }
        Target::Email(rule) => {
            spec.kind = pb::SubscriptionKind::Email as i32;
            spec.to = rule.to.clone();
            spec.group_by = rule
                .group_by
                .iter()
                .map(|g| match g {
                    GroupLabel::Environment => "environment",
                    GroupLabel::Project => "project",
                    GroupLabel::Cube => "cube",
                })
                .map(str::to_owned)
                .collect();
            spec.group_wait = format_duration(rule.group_wait);
            spec.group_interval = format_duration(rule.group_interval);
            spec.repeat_interval = format_duration(rule.repeat_interval);
            spec.send_resolved = Some(rule.send_resolved);
            spec.link_template = rule
                .link
                .as_ref()
                .map(|l| l.source().to_owned())
                .unwrap_or_default();
        }
    }
    spec
}

fn signing_secrets(sub: &Subscription, now: i64) -> u32 {
    match &sub.target {
        Target::Webhook(w) => {
            w.secret.iter().count() as u32
                + w.previous_secrets
                    .iter()
                    .filter(|(_, until)| now < *until)
                    .count() as u32
        }
        _ => 0,
    }
}
