//! The admin console: server-rendered pages on the operations port that
//! answer "what is broken, since when, who was told, and can I fix
//! delivery from here?" — overview, cube, batch, subscriptions, deliveries
//! and projects, status badges, and live updates over server-sent events.
//!
//! Invariants this module keeps:
//! - **Reading needs no JavaScript**; the script only follows the change
//!   feed (`/events`) and asks for confirmation before actions. Templates,
//!   CSS and script are compiled into the binary.
//! - **Nothing user-supplied reaches a page unescaped**: templates are
//!   `.html`, which minijinja escapes automatically; the SVGs Herald draws
//!   escape their text themselves (`draw`).
//! - **Every change is a POST with the session's CSRF token**, and is made
//!   by the same code the admin API runs (`AdminApi`, `SubscriptionApi`),
//!   so the console can do nothing the API would refuse.
//! - **Access** follows the gRPC port's rules (`access`): no tokens, open
//!   on loopback only; with tokens, a signed-in session whose token's role
//!   decides — a reader reads, an admin acts.

mod access;
mod actions;
mod badges;
mod draw;
mod live;
pub mod overview;
mod pages;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;

use crate::api::{AdminApi, SubscriptionApi};
use crate::clock::Clock;
use crate::config::{ApiToken, ConsoleSettings};
use crate::core::schedule::Schedule;
use crate::core::stall::StallPolicy;
use crate::feed::ChangeFeed;
use crate::registry::Registry;
use crate::reload::Live;
use crate::store::{Store, StoreError};

/// What the console is built from.
pub struct ConsoleParts {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub feed: ChangeFeed,
    pub registry: Registry,
    pub admin: Arc<AdminApi>,
    pub subscriptions: Arc<SubscriptionApi>,
    pub tokens: Vec<ApiToken>,
    pub settings: ConsoleSettings,
    pub schedules: Live<Vec<Schedule>>,
    pub stalls: Live<StallPolicy>,
    /// Whether the operations port listens on loopback only: without
    /// tokens, the console is open there and closed anywhere else.
    pub loopback: bool,
}

/// The console's shared state (cheap to clone).
#[derive(Clone)]
pub struct Console(Arc<Inner>);

struct Inner {
    parts: ConsoleParts,
    templates: Environment<'static>,
    /// Random per process: the CSRF token of an open (tokenless) console.
    open_secret: String,
}

impl Console {
    pub fn new(parts: ConsoleParts) -> Console {
        Console(Arc::new(Inner {
            parts,
            templates: templates(),
            open_secret: access::random_token(),
        }))
    }

    fn parts(&self) -> &ConsoleParts {
        &self.0.parts
    }

    /// Renders a template; a template error is Herald's bug, shown as 500.
    fn render(&self, name: &str, context: minijinja::Value) -> Result<Html<String>, ConsoleError> {
        let template = self.0.templates.get_template(name)?;
        Ok(Html(template.render(context)?))
    }
}

/// Every template, compiled in; `.html` names turn on auto-escaping.
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    let sources = [
        ("layout.html", include_str!("assets/layout.html")),
        ("overview.html", include_str!("assets/overview.html")),
        ("cube.html", include_str!("assets/cube.html")),
        ("batch.html", include_str!("assets/batch.html")),
        ("delivery.html", include_str!("assets/delivery.html")),
        (
            "subscriptions.html",
            include_str!("assets/subscriptions.html"),
        ),
        ("deliveries.html", include_str!("assets/deliveries.html")),
        ("projects.html", include_str!("assets/projects.html")),
        ("signin.html", include_str!("assets/signin.html")),
        ("message.html", include_str!("assets/message.html")),
    ];
    for (name, source) in sources {
        // The templates are part of the binary; one that does not parse
        // fails every test that renders a page, never a user's request.
        env.add_template(name, source)
            .expect("console templates parse");
    }
    env
}

/// The console's routes, for the operations port.
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/overview.json", get(pages::overview_json))
        .route("/cubes/{environment}/{cube}", get(pages::cube))
        .route("/batches/{batch}", get(pages::batch))
        .route("/deliveries", get(pages::deliveries))
        .route("/deliveries/{delivery}", get(pages::delivery))
        .route("/subscriptions", get(pages::subscriptions))
        .route("/projects", get(pages::projects))
        .route("/documents/{event}", get(pages::document))
        .route("/badge/{environment}/{cube}", get(badges::badge))
        .route("/events", get(live::events))
        .route("/signin", get(access::signin_form).post(access::sign_in))
        .route("/signout", post(access::sign_out))
        .route("/actions/redeliver", post(actions::redeliver))
        .route("/actions/retry-dead", post(actions::retry_dead))
        .route("/actions/replay", post(actions::replay))
        .route("/actions/enable", post(actions::enable))
        .route("/actions/disable", post(actions::disable))
        .route("/actions/test-event", post(actions::test_event))
        .route("/actions/rotate-secret", post(actions::rotate_secret))
        .route("/static/console.css", get(stylesheet))
        .route("/static/console.js", get(script))
        .layer(axum::middleware::map_response(protect))
        .with_state(console)
}

/// Scripts and styles only from Herald itself, no framing, no sniffing, no
/// caching of pages that may show what only a signed-in admin may see.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("assets/console.js"),
    )
}

/// Why a console request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("sign in first")]
    SignIn,
    /// Too many live pages or streams are open.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", .0.message())]
    Api(#[from] tonic::Status),
    #[error("rendering the page failed: {0}")]
    Template(#[from] minijinja::Error),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::SignIn => {
                return (StatusCode::SEE_OTHER, [(header::LOCATION, "/signin")]).into_response()
            }
            ConsoleError::Api(s) => match s.code() {
                tonic::Code::NotFound => StatusCode::NOT_FOUND,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                    StatusCode::CONFLICT
                }
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ConsoleError::Store(_) | ConsoleError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "console request failed");
            "Herald could not answer this request; the server log says why.".to_owned()
        } else {
            self.to_string()
        };
        (status, Html(error_page(status, &message))).into_response()
    }
}

/// A bare page for errors (no template: it must render even when the
/// templates are what failed).
fn error_page(status: StatusCode, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Herald · {}</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css\"></head><body><main>\
         <h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">Overview</a></p></main></body></html>",
        status.as_u16(),
        status,
        draw::escape(message)
    )
}
