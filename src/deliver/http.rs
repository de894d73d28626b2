//! Sending one prepared request and reporting what came back.
//!
//! One pooled client serves every subscription: hyper's, over rustls for
//! `https`, with HTTP/2 where the receiver offers it. It never follows
//! redirects (a redirect could point a signed payload anywhere), every
//! request is bounded by the subscription's timeout, and names resolve to
//! the addresses the egress policy allows only.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http_body::Body as _;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::SendBody;
use super::request::PreparedRequest;
use crate::core::egress::{Blocked, EgressPolicy};
use crate::core::retry::{parse_retry_after, AttemptResult};

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub result: AttemptResult,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

impl Attempt {
    /// An attempt that never left Herald: the request could not be built.
    pub fn unsendable(started_at: DateTime<Utc>, reason: String) -> Self {
        Attempt {
            started_at,
            duration: Duration::ZERO,
            result: AttemptResult::Unsendable,
            response_excerpt: None,
            error: Some(reason),
        }
    }

    /// An attempt the egress policy stopped before anything was sent.
    pub fn blocked(started_at: DateTime<Utc>, blocked: &Blocked) -> Self {
        Attempt {
            result: AttemptResult::Blocked,
            ..Attempt::unsendable(started_at, blocked.to_string())
        }
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;

#[derive(Clone)]
pub struct HttpSender {
    http: Client<Connector, SendBody>,
    excerpt_bytes: usize,
    egress: Arc<EgressPolicy>,
}

impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender")
            .field("excerpt_bytes", &self.excerpt_bytes)
            .finish_non_exhaustive()
    }
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP client's TLS setup failed: {0}")]
pub struct ClientError(#[from] rustls::Error);

impl HttpSender {
    pub fn new(excerpt_bytes: usize, egress: EgressPolicy) -> Result<Self, ClientError> {
        let egress = Arc::new(egress);
        let mut tcp = HttpConnector::new_with_resolver(PolicyResolver(egress.clone()));
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            http,
            excerpt_bytes,
            egress,
        })
    }

    /// Sends `request`; `now` (the injected clock) stamps the attempt.
    /// Never fails: every outcome, errors included, is an [`Attempt`].
    pub async fn send(
        &self,
        request: PreparedRequest,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> Attempt {
        let uri = match parse_uri(&request.url) {
            Ok(uri) => uri,
            Err(reason) => return Attempt::unsendable(now, reason),
        };
        // Names are checked by the resolver; an address written in the URL
        // never reaches it, so it is checked here.
        if let Some(blocked) = uri
            .host()
            .and_then(literal_ip)
            .and_then(|ip| self.egress.check(ip).err())
        {
            return Attempt::blocked(now, &blocked);
        }
        let method = Method::from_bytes(request.method.as_bytes()).unwrap_or(Method::POST);
        let mut built = Request::new(request.body.into_body());
        *built.method_mut() = method;
        *built.uri_mut() = uri;
        *built.headers_mut() = header_map(&request.headers);
        let started = Instant::now();
        // The timeout bounds the whole exchange. A response whose body
        // stalls keeps its status, with what of the body came in time.
        let deadline = tokio::time::Instant::now() + timeout;
        let (result, response_excerpt, error) =
            match tokio::time::timeout_at(deadline, self.http.request(built)).await {
                Ok(Ok(response)) => {
                    let (code, retry_after, excerpt) = self.read(response, deadline).await;
                    let error = (!(200..300).contains(&code)).then(|| format!("HTTP {code}"));
                    (AttemptResult::Status { code, retry_after }, excerpt, error)
                }
                Ok(Err(e)) => {
                    if let Some(blocked) = blocked_cause(&e) {
                        return Attempt::blocked(now, blocked);
                    }
                    (AttemptResult::NoResponse, None, Some(describe(&e)))
                }
                Err(_) => (
                    AttemptResult::NoResponse,
                    None,
                    Some(format!("timed out after {timeout:?}")),
                ),
            };
        Attempt {
            started_at: now,
            duration: started.elapsed(),
            result,
            response_excerpt,
            error,
        }
    }

    /// The status, the `Retry-After` delay, and at most `excerpt_bytes` of
    /// the body that arrive before `deadline`; the rest is dropped unread.
    async fn read(
        &self,
        response: Response<hyper::body::Incoming>,
        deadline: tokio::time::Instant,
    ) -> (u16, Option<Duration>, Option<String>) {
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now().timestamp()));
        let mut body = response.into_body();
        let mut buf = Vec::new();
        while buf.len() < self.excerpt_bytes {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            match tokio::time::timeout_at(deadline, frame).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        buf.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        buf.truncate(self.excerpt_bytes);
        let excerpt = (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned());
        (code, retry_after, excerpt)
    }
}

/// The request's URI. A URL a template rendered may hold what a URI may
/// not (a space in a cube name): the URL parser then writes it out with
/// those characters escaped, as a browser would.
fn parse_uri(url: &str) -> Result<Uri, String> {
    let uri = match url.parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => {
            let parsed = url::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
            String::from(parsed)
                .parse::<Uri>()
                .map_err(|e| format!("url {url:?}: {e}"))?
        }
    };
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!(
            "url {url:?}: only absolute http and https URLs are sent"
        )),
    }
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    // Names and values were validated when the configuration loaded;
    // generated ones (ids, digits, base64) are always valid.
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    map
}

/// Resolves names and keeps only the addresses the egress policy allows;
/// when none is left, the connection fails with the rule that blocked it.
#[derive(Clone)]
struct PolicyResolver(Arc<EgressPolicy>);

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let mut blocked = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(b) => {
                        blocked.get_or_insert(b);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), blocked) {
                (true, Some(b)) => Err(Box::new(b) as BoxError),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The address in a URL's host, when it is one rather than a name. The
/// URL parser reads the forms a URI keeps as names (`0x7f.1`, `2130706433`)
/// as the addresses they are; at send time the resolver sees those.
pub fn literal_host(url: &str) -> Option<IpAddr> {
    literal_ip(url::Url::parse(url).ok()?.host_str()?)
}

/// `host` as an address, when it is one (an IPv6 one in brackets or not).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The egress policy's refusal, when that is what stopped the request:
/// retrying would not help.
fn blocked_cause(error: &hyper_util::client::legacy::Error) -> Option<&Blocked> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        source = cause.source();
    }
    None
}

/// A one-line description of a transport error, with its cause chain.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_is_a_uri_is_sent_as_written() {
        let uri = parse_uri("http://127.0.0.1:8080/hooks/a?x=1&y=%20").unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8080/hooks/a?x=1&y=%20");
        assert_eq!(uri.host().and_then(literal_ip), "127.0.0.1".parse().ok());
    }

    #[test]
    fn what_a_uri_cannot_hold_is_escaped_as_a_browser_would() {
        let uri = parse_uri("https://example.com/cubes/sales eu?name=Q1 plan").unwrap();
        assert_eq!(
            uri.to_string(),
            "https://example.com/cubes/sales%20eu?name=Q1%20plan"
        );
    }

    #[test]
    fn only_absolute_http_urls_are_sent() {
        for url in [
            "ftp://example.com/x",
            "/hooks/a",
            "example.com/hooks",
            "http://",
        ] {
            let error = parse_uri(url).unwrap_err();
            assert!(error.contains(url), "{url}: {error}");
        }
    }

    #[test]
    fn a_numeric_host_a_uri_keeps_as_a_name_is_still_an_address() {
        assert_eq!(
            literal_host("http://2130706433/x"),
            "127.0.0.1".parse().ok()
        );
        assert_eq!(literal_host("http://0x7f.1/x"), "127.0.0.1".parse().ok());
        let uri = parse_uri("http://2130706433/x").unwrap();
        assert_eq!(
            uri.host().and_then(literal_ip),
            None,
            "left to the resolver"
        );
    }

    #[test]
    fn an_ipv6_host_is_an_address() {
        let uri = parse_uri("http://[::1]:9/x").unwrap();
        assert_eq!(uri.host().and_then(literal_ip), "::1".parse().ok());
        assert_eq!(literal_ip("example.com"), None);
    }
}
