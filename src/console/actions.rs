//! The console's actions (POST): each checks the viewer's role and CSRF
//! token, then calls the admin API's own handler — the same validation,
//! the same store calls, the same wake-ups as `herald deliveries` and
//! `herald subs`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::json;
use tonic::Request;

use super::access::{viewer, Viewer};
use super::pages::page;
use super::{Console, ConsoleError};
use crate::api::pb::subscription_service_server::SubscriptionService;
use crate::api::pb::{self, admin_service_server::AdminService};
use crate::api::timestamp_to_proto;

#[derive(Debug, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// Where to go afterwards: a path on this console.
    #[serde(default)]
    back: String,
    #[serde(default)]
    delivery_id: String,
    #[serde(default)]
    subscription: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

impl ActionForm {
    /// `back` when it is a path of this site, else the overview (never
    /// another site: an open redirect would lend the console's name).
    fn back(&self) -> String {
        let local =
            self.back.starts_with('/') && !self.back.starts_with("//") && !self.back.contains('\\');
        if local {
            self.back.clone()
        } else {
            "/".to_owned()
        }
    }
}

/// The viewer, when allowed to change things with this form.
async fn admin(
    console: &Console,
    headers: &HeaderMap,
    form: &ActionForm,
) -> Result<Viewer, ConsoleError> {
    let viewer = viewer(console, headers).await?;
    viewer.may_change(&form.csrf)?;
    Ok(viewer)
}

/// A page saying what an action did.
fn done(
    console: &Console,
    viewer: &Viewer,
    title: &str,
    message: String,
    extra: serde_json::Value,
) -> Result<Response, ConsoleError> {
    let mut context = json!({ "message": message });
    if let (Some(base), serde_json::Value::Object(extra)) = (context.as_object_mut(), extra) {
        base.extend(extra);
    }
    let page: Html<String> = console.render("message.html", page(viewer, title, "", context))?;
    Ok(page.into_response())
}

pub(super) async fn redeliver(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    admin(&console, &headers, &form).await?;
    let request = pb::RedeliverRequest {
        delivery_id: form.delivery_id.clone(),
    };
    console
        .parts()
        .admin
        .redeliver(Request::new(request))
        .await?;
    Ok(Redirect::to(&form.back()).into_response())
}

pub(super) async fn retry_dead(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    let viewer = admin(&console, &headers, &form).await?;
    let request = pb::RetryDeadRequest {
        subscription: form.subscription.clone(),
    };
    let retried = console
        .parts()
        .admin
        .retry_dead(Request::new(request))
        .await?
        .into_inner()
        .retried;
    let message = format!(
        "{retried} dead deliveries of `{}` are due again.",
        form.subscription
    );
    done(
        &console,
        &viewer,
        "Retried",
        message,
        json!({ "back": form.back() }),
    )
}

pub(super) async fn replay(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    let viewer = admin(&console, &headers, &form).await?;
    let since = super::pages::parse_time("since", &form.since)?
        .ok_or_else(|| ConsoleError::BadRequest("since: is required".into()))?;
    let until = super::pages::parse_time("until", &form.until)?;
    let request = pb::ReplayRequest {
        subscription: form.subscription.clone(),
        since: Some(timestamp_to_proto(since)),
        until: until.map(timestamp_to_proto),
    };
    let enqueued = console
        .parts()
        .admin
        .replay(Request::new(request))
        .await?
        .into_inner()
        .enqueued;
    let message = format!(
        "{enqueued} events are being delivered again to `{}`.",
        form.subscription
    );
    done(
        &console,
        &viewer,
        "Replayed",
        message,
        json!({ "back": form.back() }),
    )
}

fn name(form: &ActionForm) -> pb::SubscriptionName {
    pb::SubscriptionName {
        name: form.subscription.clone(),
    }
}

pub(super) async fn enable(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    set_enabled(&console, &headers, &form, true).await
}

pub(super) async fn disable(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    set_enabled(&console, &headers, &form, false).await
}

async fn set_enabled(
    console: &Console,
    headers: &HeaderMap,
    form: &ActionForm,
    enabled: bool,
) -> Result<Response, ConsoleError> {
    admin(console, headers, form).await?;
    let api = &console.parts().subscriptions;
    let request = Request::new(name(form));
    match enabled {
        true => api.enable_subscription(request).await?,
        false => api.disable_subscription(request).await?,
    };
    Ok(Redirect::to(&form.back()).into_response())
}

pub(super) async fn test_event(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    let viewer = admin(&console, &headers, &form).await?;
    let sent = console
        .parts()
        .subscriptions
        .send_test_event(Request::new(name(&form)))
        .await?
        .into_inner();
    let message = format!("A test event was sent to `{}`.", form.subscription);
    let link = format!("/deliveries?subscription={}", urlencode(&form.subscription));
    done(
        &console,
        &viewer,
        "Test event",
        message,
        json!({ "event_id": sent.event_id, "back": link }),
    )
}

pub(super) async fn rotate_secret(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    let viewer = admin(&console, &headers, &form).await?;
    let request = pb::RotateSecretRequest {
        name: form.subscription.clone(),
        grace: String::new(),
        secret: String::new(),
    };
    let rotated = console
        .parts()
        .subscriptions
        .rotate_secret(Request::new(request))
        .await?
        .into_inner();
    let message = format!(
        "`{}` now signs with a new secret (the old one keeps signing during the grace period). \
         Copy it now: Herald will not show it again.",
        form.subscription
    );
    done(
        &console,
        &viewer,
        "New signing secret",
        message,
        json!({ "secret": rotated.secret, "back": "/subscriptions" }),
    )
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
