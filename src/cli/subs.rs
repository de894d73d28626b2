//! `herald subs …`: subscriptions managed over the admin API.

use serde_json::{json, Value};

use super::output::{cell, enum_text, items, print_fields, print_table, OutputArg};
use super::{connect, status_error, ServerArg};
use crate::api::pb::{self, subscription_service_client::SubscriptionServiceClient};

#[derive(Debug, clap::Subcommand)]
pub enum SubsCommand {
    /// List every subscription (configured ones are read-only).
    List(Common),
    /// Show one subscription.
    Get(Named),
    /// Create a subscription; a webhook's secret is printed this once.
    Create(SpecArgs),
    /// Change a managed subscription: only the flags given (its secrets
    /// stay).
    Update(SpecArgs),
    /// Delete a managed subscription; its pending deliveries are failed.
    Delete(Named),
    /// Resume deliveries to a managed subscription.
    Enable(Named),
    /// Pause deliveries to a managed subscription; they wait until it is
    /// enabled again.
    Disable(Named),
    /// Rotate a webhook's signing secret; the old one signs beside the new
    /// one for the grace period.
    Rotate(RotateArgs),
    /// Send a herald.subscription.test event to it.
    Test(Named),
}

#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Args)]
pub struct Named {
    /// The subscription's name.
    name: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The webhook subscription's name.
    name: String,
    /// How long the old secret keeps signing.
    #[arg(long, default_value = "24h")]
    grace: String,
    #[command(flatten)]
    common: Common,
}

/// The keys of a configuration entry, as flags.
#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// The subscription's name.
    #[arg(long)]
    name: String,
    /// webhook, healthcheck or email (create: webhook when omitted).
    #[arg(long)]
    kind: Option<String>,
    /// Where to send (webhooks and healthchecks).
    #[arg(long)]
    url: Option<String>,
    /// Event name or glob; repeat for several.
    #[arg(long = "event")]
    events: Vec<String>,
    /// Only events of this environment (name or glob); repeat for several.
    #[arg(long = "environment")]
    environments: Vec<String>,
    /// Only events of this project (name or glob); repeat for several.
    #[arg(long = "project")]
    projects: Vec<String>,
    /// Only events of this cube (name or glob); repeat for several.
    #[arg(long = "cube")]
    cubes: Vec<String>,
    /// Email recipient; repeat for several.
    #[arg(long = "to")]
    to: Vec<String>,
    /// Per-attempt timeout, e.g. 10s.
    #[arg(long)]
    timeout: Option<String>,
    /// Use this whsec_ secret (create only).
    #[arg(long)]
    secret: Option<String>,
    /// true: deliveries a silence matches are suppressed (webhooks and
    /// healthchecks; email rules always are).
    #[arg(long)]
    respect_silences: Option<bool>,
    /// none, cube or batch: deliveries one at a time per cube or batch, in
    /// event order (webhooks and healthchecks).
    #[arg(long)]
    ordering: Option<String>,
    /// Most attempts per second or minute, e.g. 20/s or 600/m.
    #[arg(long)]
    rate_limit: Option<String>,
    #[command(flatten)]
    common: Common,
}

impl SpecArgs {
    fn spec(&self, default_kind: Option<&str>) -> anyhow::Result<pb::SubscriptionSpec> {
        let kind = match self.kind.as_deref().or(default_kind) {
            None => pb::SubscriptionKind::Unspecified,
            Some("webhook") => pb::SubscriptionKind::Webhook,
            Some("healthcheck") => pb::SubscriptionKind::Healthcheck,
            Some("email") => pb::SubscriptionKind::Email,
            Some(other) => anyhow::bail!("--kind `{other}`: use webhook, healthcheck or email"),
        };
        Ok(pb::SubscriptionSpec {
            name: self.name.clone(),
            kind: kind as i32,
            url: self.url.clone().unwrap_or_default(),
            events: self.events.clone(),
            environments: self.environments.clone(),
            projects: self.projects.clone(),
            cubes: self.cubes.clone(),
            to: self.to.clone(),
            timeout: self.timeout.clone().unwrap_or_default(),
            secret: self.secret.clone().unwrap_or_default(),
            respect_silences: self.respect_silences.unwrap_or(false),
            ordering: self.ordering.clone().unwrap_or_default(),
            rate_limit: self.rate_limit.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    /// The spec fields the flags given name, for an update's field mask.
    fn mask(&self) -> Vec<String> {
        let given = [
            ("url", self.url.is_some()),
            ("events", !self.events.is_empty()),
            ("environments", !self.environments.is_empty()),
            ("projects", !self.projects.is_empty()),
            ("cubes", !self.cubes.is_empty()),
            ("to", !self.to.is_empty()),
            ("timeout", self.timeout.is_some()),
            ("respect_silences", self.respect_silences.is_some()),
            ("ordering", self.ordering.is_some()),
            ("rate_limit", self.rate_limit.is_some()),
        ];
        given
            .iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| field.to_string())
            .collect()
    }
}

pub async fn run(command: SubsCommand) -> anyhow::Result<()> {
    match command {
        SubsCommand::List(c) => {
            let mut client = SubscriptionServiceClient::new(connect(&c.server).await?);
            let list = client
                .list_subscriptions(pb::ListSubscriptionsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let all = Value::Array(list.subscriptions.iter().map(info_json).collect());
            c.output.print(&all, print_subscriptions)
        }
        SubsCommand::Get(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let info = client
                .get_subscription(pb::SubscriptionName { name: n.name })
                .await
                .map_err(status_error)?
                .into_inner();
            n.common.output.print(&info_json(&info), print_fields)
        }
        SubsCommand::Create(a) => create(a).await,
        SubsCommand::Update(a) => update(a).await,
        SubsCommand::Delete(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let r = client
                .delete_subscription(pb::SubscriptionName {
                    name: n.name.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let document =
                json!({"name": n.name, "deleted": true, "pending_failed": r.pending_failed});
            n.common.output.print(&document, |_| {
                println!(
                    "ok: deleted {} ({} pending deliveries failed)",
                    n.name, r.pending_failed
                )
            })
        }
        SubsCommand::Enable(n) => switch(n, true).await,
        SubsCommand::Disable(n) => switch(n, false).await,
        SubsCommand::Rotate(r) => {
            let mut client = SubscriptionServiceClient::new(connect(&r.common.server).await?);
            let rotated = client
                .rotate_secret(pb::RotateSecretRequest {
                    name: r.name.clone(),
                    grace: r.grace.clone(),
                    secret: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let document =
                json!({"name": r.name, "secret": rotated.secret, "old_secret_signs_for": r.grace});
            r.common.output.print(&document, |_| {
                println!(
                    "ok: new signing secret for {} (the old one signs for {} more): {}",
                    r.name, r.grace, rotated.secret
                )
            })
        }
        SubsCommand::Test(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let sent = client
                .send_test_event(pb::SubscriptionName {
                    name: n.name.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let document = json!({"name": n.name, "event_id": sent.event_id});
            n.common.output.print(&document, |_| {
                println!("ok: test event {} enqueued", sent.event_id)
            })
        }
    }
}

async fn create(a: SpecArgs) -> anyhow::Result<()> {
    let mut client = SubscriptionServiceClient::new(connect(&a.common.server).await?);
    let created = client
        .create_subscription(pb::CreateSubscriptionRequest {
            spec: Some(a.spec(Some("webhook"))?),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut document = created
        .subscription
        .as_ref()
        .map(info_json)
        .unwrap_or_default();
    if !created.secret.is_empty() {
        document["secret"] = json!(created.secret);
    }
    a.common.output.print(&document, |_| {
        println!("ok: created {}", a.name);
        if !created.secret.is_empty() {
            println!(
                "signing secret (shown once, store it now): {}",
                created.secret
            );
        }
    })
}

async fn update(a: SpecArgs) -> anyhow::Result<()> {
    let paths = a.mask();
    if paths.is_empty() {
        anyhow::bail!("nothing to change: give --url, --event, --environment, --project, --cube, --to, --timeout or --respect-silences");
    }
    let mut client = SubscriptionServiceClient::new(connect(&a.common.server).await?);
    let info = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            spec: Some(a.spec(None)?),
            update_mask: Some(prost_types::FieldMask { paths }),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    a.common
        .output
        .print(&info_json(&info), |_| println!("ok: updated {}", a.name))
}

async fn switch(n: Named, enable: bool) -> anyhow::Result<()> {
    let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
    let name = pb::SubscriptionName {
        name: n.name.clone(),
    };
    let info = if enable {
        client.enable_subscription(name).await
    } else {
        client.disable_subscription(name).await
    }
    .map_err(status_error)?
    .into_inner();
    n.common.output.print(&info_json(&info), |_| {
        let state = if enable { "enabled" } else { "disabled" };
        println!("ok: {} {state}", n.name)
    })
}

fn print_subscriptions(list: &Value) {
    let rows: Vec<Vec<String>> = items(list)
        .map(|s| {
            let target = match &s["url"] {
                Value::String(url) => url.clone(),
                _ => cell(&json!(items(&s["to"])
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))),
            };
            vec![
                cell(&s["name"]),
                cell(&s["kind"]),
                cell(&s["managed_by"]),
                cell(&s["enabled"]),
                target,
            ]
        })
        .collect();
    print_table(&["NAME", "KIND", "BY", "ENABLED", "TARGET"], &rows);
}

fn info_json(info: &pb::SubscriptionInfo) -> Value {
    let spec = info.spec.clone().unwrap_or_default();
    let kind = enum_text(
        pb::SubscriptionKind::try_from(spec.kind)
            .ok()
            .map(|k| k.as_str_name()),
        "SUBSCRIPTION_KIND_",
    );
    let mut v = json!({
        "name": spec.name, "kind": kind, "events": spec.events, "environments": spec.environments,
        "projects": spec.projects, "cubes": spec.cubes, "timeout": spec.timeout,
        "retry_schedule": spec.retry_schedule, "managed_by": info.managed_by, "enabled": info.enabled,
        "disabled_reason": info.disabled_reason, "signing_secrets": info.signing_secrets,
    });
    if spec.kind == pb::SubscriptionKind::Email as i32 {
        v["to"] = json!(spec.to);
    } else {
        v["url"] = json!(spec.url);
        v["respect_silences"] = json!(spec.respect_silences);
        v["ordering"] = json!(if spec.ordering.is_empty() {
            "none"
        } else {
            &spec.ordering
        });
        if !spec.rate_limit.is_empty() {
            v["rate_limit"] = json!(spec.rate_limit);
            v["rate_limit_waited"] = json!(info.rate_limit_waited);
        }
    }
    v
}
