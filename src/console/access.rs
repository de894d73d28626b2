//! Who may use the console, and how they sign in and out.
//!
//! - No `[[tokens]]`: the console is open (as admin) only when the
//!   operations port listens on loopback, like the gRPC port; elsewhere it
//!   refuses every request.
//! - With tokens: a sign-in form takes a token; Herald keeps only the
//!   SHA-256 digest of a random session token, sent back as an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` behind TLS) that expires after
//!   `console.session_ttl`. The session names the token it signed in with,
//!   whose role is read from the configuration on every request: removing
//!   a token from the configuration ends its sessions. Scripts may send
//!   `Authorization: Bearer <token>` instead.
//! - A reader reads; every action needs an admin. Every POST from a
//!   session carries a CSRF token derived from the session's own token, so
//!   a page on another site cannot forge one. The sign-in form has its
//!   own (login CSRF): a random value GET /signin sets in a short-lived
//!   `SameSite=Strict` cookie and echoes in the form; a POST /signin
//!   without the matching pair is refused with 403, so another site cannot
//!   sign a browser in under the attacker's token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Duration as ChronoDuration;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Console, ConsoleError};
use crate::api::{bearer_token, find_token};
use crate::config::Role;
use crate::core::hex::hex;

const COOKIE: &str = "herald_session";
/// The sign-in form's CSRF cookie, and how long a form stays usable.
const SIGNIN_COOKIE: &str = "herald_signin";
const SIGNIN_TTL_SECS: u64 = 600;

/// Who is looking, and what they may do.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    /// The token's name; `None` on an open (tokenless) console.
    pub token: Option<String>,
    pub admin: bool,
    /// What each form must send back; empty for bearer-token callers,
    /// whose credentials a browser never sends by itself.
    pub csrf: String,
}

impl Viewer {
    /// Refuses a change unless the viewer is an admin and, for a browser
    /// session, the form carries the session's CSRF token.
    pub fn may_change(&self, csrf: &str) -> Result<(), ConsoleError> {
        if !self.csrf.is_empty() && !same(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Err(ConsoleError::Forbidden(
                "the form's CSRF token does not match this session; reload the page".into(),
            ));
        }
        if !self.admin {
            return Err(ConsoleError::Forbidden(format!(
                "token `{}` has role reader; changes need an admin token",
                self.token.as_deref().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

/// Who the request comes from, or why it may not see the console.
pub(super) async fn viewer(console: &Console, headers: &HeaderMap) -> Result<Viewer, ConsoleError> {
    let parts = console.parts();
    if parts.tokens.is_empty() {
        if !parts.loopback {
            return Err(ConsoleError::Forbidden(
                "the console is open only on a loopback server.http_listen while no \
                 [[tokens]] are configured"
                    .into(),
            ));
        }
        return Ok(Viewer {
            token: None,
            admin: true,
            csrf: csrf_of(&console.0.open_secret),
        });
    }
    if let Some(presented) = header_text(headers, header::AUTHORIZATION).and_then(bearer_token) {
        let token = find_token(&parts.tokens, presented)
            .ok_or_else(|| ConsoleError::Forbidden("unknown bearer token".into()))?;
        return with_role(token.name.clone(), token.role, String::new());
    }
    let Some(session) = session_cookie(headers) else {
        return Err(ConsoleError::SignIn);
    };
    let name = parts
        .store
        .session_token(&digest_of(&session), parts.clock.now())
        .await?
        .ok_or(ConsoleError::SignIn)?;
    let token = parts
        .tokens
        .iter()
        .find(|t| t.name == name)
        .ok_or(ConsoleError::SignIn)?;
    with_role(token.name.clone(), token.role, csrf_of(&session))
}

fn with_role(token: String, role: Role, csrf: String) -> Result<Viewer, ConsoleError> {
    match role {
        Role::Engine => Err(ConsoleError::Forbidden(format!(
            "token `{token}` has role engine; the console needs a reader or admin token"
        ))),
        role => Ok(Viewer {
            token: Some(token),
            admin: role == Role::Admin,
            csrf,
        }),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// A fresh random token (256 bits, hex).
pub(super) fn random_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// What the store keeps of a session token.
fn digest_of(session: &str) -> String {
    hex(&Sha256::digest(session.as_bytes()))
}

fn csrf_of(secret: &str) -> String {
    hex(&Sha256::digest(
        format!("herald-console-csrf:{secret}").as_bytes(),
    ))
}

/// Compares in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request reached Herald over TLS (through a proxy that says
/// so): the session cookie is then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    header_text(
        headers,
        header::HeaderName::from_static("x-forwarded-proto"),
    )
    .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

pub(super) async fn signin_form(State(console): State<Console>, headers: HeaderMap) -> Response {
    if console.parts().tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    signin_page(&console, &headers, StatusCode::OK, None)
}

/// The sign-in form with a fresh login CSRF token, in its hidden field and
/// in the cookie a POST must bring back.
fn signin_page(
    console: &Console,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let csrf = random_token();
    let context =
        minijinja::context! { title => "Sign in", error => error, signin => true, csrf => csrf };
    let mut response = match console.render("signin.html", context) {
        Ok(page) => (status, page).into_response(),
        Err(e) => return e.into_response(),
    };
    let cookie = format!(
        "{SIGNIN_COOKIE}={csrf}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age={SIGNIN_TTL_SECS}{}",
        if over_tls(headers) { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
    #[serde(default)]
    csrf: String,
}

pub(super) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let parts = console.parts();
    if parts.tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(form.csrf.as_bytes(), expected.as_bytes()) {
        let message = "The sign-in form expired or did not come from this console; try again.";
        return signin_page(&console, &headers, StatusCode::FORBIDDEN, Some(message));
    }
    let Some(token) = find_token(&parts.tokens, form.token.trim()) else {
        return signin_page(
            &console,
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("Unknown token."),
        );
    };
    if token.role == Role::Engine {
        let message =
            "An engine token cannot use the console; sign in with a reader or admin token.";
        return signin_page(&console, &headers, StatusCode::FORBIDDEN, Some(message));
    }
    let session = random_token();
    let now = parts.clock.now();
    let ttl = parts.settings.session_ttl;
    let expires = now + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::hours(12));
    if let Err(e) = parts
        .store
        .create_session(&digest_of(&session), &token.name, now, expires)
        .await
    {
        return ConsoleError::from(e).into_response();
    }
    let cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if over_tls(&headers) { "; Secure" } else { "" }
    );
    redirect_with_cookie("/", &cookie)
}

#[derive(Deserialize)]
pub(super) struct SignOut {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Result<Response, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    if !viewer.csrf.is_empty() && !same(form.csrf.as_bytes(), viewer.csrf.as_bytes()) {
        return Err(ConsoleError::Forbidden(
            "the form's CSRF token does not match this session; reload the page".into(),
        ));
    }
    if let Some(session) = session_cookie(&headers) {
        console
            .parts()
            .store
            .delete_session(&digest_of(&session))
            .await?;
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(redirect_with_cookie("/signin", &cookie))
}

fn redirect_with_cookie(to: &'static str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("herald_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_whole() {
        assert_ne!(csrf_of("one"), csrf_of("two"));
        assert!(same(csrf_of("one").as_bytes(), csrf_of("one").as_bytes()));
        assert!(!same(b"abc", b"abcd"));
    }
}
