//! `herald subs …`: subscriptions managed over the admin API.

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
    /// Replace a managed subscription's spec (its secrets stay).
    Update(SpecArgs),
    /// Delete a managed subscription.
    Delete(Named),
    Enable(Named),
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
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct Named {
    name: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    name: String,
    /// How long the old secret keeps signing.
    #[arg(long, default_value = "24h")]
    grace: String,
    #[command(flatten)]
    server: ServerArg,
}

/// The keys of a configuration entry, as flags.
#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    #[arg(long)]
    name: String,
    /// webhook, healthcheck or email.
    #[arg(long, default_value = "webhook")]
    kind: String,
    #[arg(long)]
    url: Option<String>,
    /// Event name or glob; repeat for several.
    #[arg(long = "event")]
    events: Vec<String>,
    #[arg(long = "environment")]
    environments: Vec<String>,
    #[arg(long = "project")]
    projects: Vec<String>,
    #[arg(long = "cube")]
    cubes: Vec<String>,
    /// Email recipient; repeat for several.
    #[arg(long = "to")]
    to: Vec<String>,
    #[arg(long)]
    timeout: Option<String>,
    /// Use this whsec_ secret (create only).
    #[arg(long)]
    secret: Option<String>,
    #[command(flatten)]
    common: Common,
}

impl SpecArgs {
    fn spec(&self) -> anyhow::Result<pb::SubscriptionSpec> {
        let kind = match self.kind.as_str() {
            "webhook" => pb::SubscriptionKind::Webhook,
            "healthcheck" => pb::SubscriptionKind::Healthcheck,
            "email" => pb::SubscriptionKind::Email,
            other => anyhow::bail!("--kind `{other}`: use webhook, healthcheck or email"),
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
            ..Default::default()
        })
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
            if c.json {
                let all: Vec<_> = list.subscriptions.iter().map(info_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<24} {:<12} {:<8} {:<8} TARGET",
                    "NAME", "KIND", "BY", "ENABLED"
                );
                for s in &list.subscriptions {
                    let j = info_json(s);
                    let target = j["url"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| j["to"].to_string());
                    println!(
                        "{:<24} {:<12} {:<8} {:<8} {target}",
                        j["name"].as_str().unwrap_or(""),
                        j["kind"].as_str().unwrap_or(""),
                        s.managed_by,
                        s.enabled
                    );
                }
            }
        }
        SubsCommand::Get(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let info = client
                .get_subscription(pb::SubscriptionName { name: n.name })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", serde_json::to_string_pretty(&info_json(&info))?);
        }
        SubsCommand::Create(a) => {
            let mut client = SubscriptionServiceClient::new(connect(&a.common.server).await?);
            let created = client
                .create_subscription(pb::CreateSubscriptionRequest {
                    spec: Some(a.spec()?),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("ok: created {}", a.name);
            if !created.secret.is_empty() {
                println!(
                    "signing secret (shown once, store it now): {}",
                    created.secret
                );
            }
        }
        SubsCommand::Update(a) => {
            let mut client = SubscriptionServiceClient::new(connect(&a.common.server).await?);
            client
                .update_subscription(pb::UpdateSubscriptionRequest {
                    spec: Some(a.spec()?),
                })
                .await
                .map_err(status_error)?;
            println!("ok: updated {}", a.name);
        }
        SubsCommand::Delete(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let r = client
                .delete_subscription(pb::SubscriptionName {
                    name: n.name.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "ok: deleted {} ({} pending deliveries failed)",
                n.name, r.pending_failed
            );
        }
        SubsCommand::Enable(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            client
                .enable_subscription(pb::SubscriptionName {
                    name: n.name.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("ok: {} enabled", n.name);
        }
        SubsCommand::Disable(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            client
                .disable_subscription(pb::SubscriptionName {
                    name: n.name.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("ok: {} disabled", n.name);
        }
        SubsCommand::Rotate(r) => {
            let mut client = SubscriptionServiceClient::new(connect(&r.server).await?);
            let rotated = client
                .rotate_secret(pb::RotateSecretRequest {
                    name: r.name.clone(),
                    grace: r.grace.clone(),
                    secret: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "ok: new signing secret for {} (the old one signs for {} more): {}",
                r.name, r.grace, rotated.secret
            );
        }
        SubsCommand::Test(n) => {
            let mut client = SubscriptionServiceClient::new(connect(&n.common.server).await?);
            let sent = client
                .send_test_event(pb::SubscriptionName { name: n.name })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("ok: test event {} enqueued", sent.event_id);
        }
    }
    Ok(())
}

fn info_json(info: &pb::SubscriptionInfo) -> serde_json::Value {
    let spec = info.spec.clone().unwrap_or_default();
    let kind = pb::SubscriptionKind::try_from(spec.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("SUBSCRIPTION_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let mut v = serde_json::json!({
        "name": spec.name, "kind": kind, "events": spec.events, "environments": spec.environments,
        "projects": spec.projects, "cubes": spec.cubes, "timeout": spec.timeout,
        "retry_schedule": spec.retry_schedule, "managed_by": info.managed_by, "enabled": info.enabled,
        "disabled_reason": info.disabled_reason, "signing_secrets": info.signing_secrets,
    });
    if spec.kind == pb::SubscriptionKind::Email as i32 {
        v["to"] = serde_json::json!(spec.to);
    } else {
        v["url"] = serde_json::json!(spec.url);
    }
    v
}
