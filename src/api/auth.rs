//! Bearer-token authentication with roles, as a tonic interceptor per
//! service. `engine` tokens may ingest, `reader` tokens may query, watch
//! and await, `admin` tokens may do everything. Health and reflection stay
//! open. With no token configured, nothing is checked (and Herald refuses to
//! listen beyond loopback unless told `--insecure`).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::codegen::{http, Context, Poll, Service as TowerService};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::{ApiToken, Role};

/// Which service a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingest,
    Query,
    Admin,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Ingest => "IngestService",
            Service::Query => "QueryService",
            Service::Admin => "AdminService",
        }
    }

    fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin) | (Service::Ingest, Role::Engine) | (Service::Query, Role::Reader)
        )
    }
}

/// The token a call was authenticated with, in the request's extensions
/// (absent when no token is configured).
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
}

/// Checks the `authorization: Bearer <token>` of every call to one service.
#[derive(Clone)]
pub struct Auth {
    tokens: Arc<[ApiToken]>,
    service: Service,
}

impl Auth {
    pub fn new(tokens: &[ApiToken], service: Service) -> Self {
        Self {
            tokens: tokens.to_vec().into(),
            service,
        }
    }

    fn check(&self, request: &Request<()>) -> Result<Option<Caller>, Status> {
        if self.tokens.is_empty() {
            return Ok(None);
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "missing bearer token: send `authorization: Bearer <token>`",
                )
            })?;
        let presented = bearer_token(header).ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?;
        let token = self
            .find(presented)
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        let reader_may =
            token.role == Role::Reader && request.extensions().get::<ReaderMay>().is_some();
        if self.service.allows(token.role) || reader_may {
            Ok(Some(Caller {
                token: token.name.clone(),
            }))
        } else {
            Err(Status::permission_denied(format!(
                "token `{}` has role {}; {} needs {}",
                token.name,
                token.role.as_str(),
                self.service.name(),
                match self.service {
                    Service::Ingest => "engine or admin",
                    Service::Query => "reader or admin",
                    Service::Admin => "admin",
                }
            )))
        }
    }

    fn find(&self, presented: &str) -> Option<&ApiToken> {
        find_token(&self.tokens, presented)
    }
}

/// The configured token `presented` is, if any (the gRPC interceptor and
/// the console's sign-in both ask this). Compares digests, every one of
/// them, in constant time: neither the time taken nor the order of tokens
/// says anything about a match.
pub fn find_token<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in tokens {
        let diff = token
            .digest
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(token);
        }
    }
    found
}

/// The token of a `Bearer <token>` credential. The scheme is matched
/// without regard to case and may be followed by several spaces (RFC 9110
/// §11.1: `bearer`, `BEARER` and `Bearer` are one scheme).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The admin RPCs a reader may call too: reading silences.
const READER_METHODS: [&str; 1] = ["/herald.v1.AdminService/ListSilences"];

/// Set on a call (by [`ReaderMethods`]) that a reader token may make.
#[derive(Debug, Clone, Copy)]
struct ReaderMay;

/// Wraps an admin service (outside its [`Auth`] interceptor, which sees no
/// path): marks the calls of [`READER_METHODS`] so that a reader token
/// passes for them, and only for them.
#[derive(Clone)]
pub struct ReaderMethods<S> {
    inner: S,
}

impl<S> ReaderMethods<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> TowerService<http::Request<B>> for ReaderMethods<S>
where
    S: TowerService<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if READER_METHODS.contains(&request.uri().path()) {
            request.extensions_mut().insert(ReaderMay);
        }
        self.inner.call(request)
    }
}

impl<S: NamedService> NamedService for ReaderMethods<S> {
    const NAME: &'static str = S::NAME;
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(caller) = self.check(&request)? {
            request.extensions_mut().insert(caller);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for header in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k "] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header}");
        }
        for header in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer   ",
            "Bearert0k",
            "t0k",
        ] {
            assert_eq!(bearer_token(header), None, "{header}");
        }
    }
}
