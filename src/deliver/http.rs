//! Sending one prepared request and reporting what came back.
//!
//! One pooled client serves every subscription. It never follows redirects
//! (a redirect could point a signed payload anywhere) and each request is
//! bounded by the subscription's timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

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

#[derive(Debug, Clone)]
pub struct HttpSender {
    http: reqwest::Client,
    excerpt_bytes: usize,
    egress: Arc<EgressPolicy>,
}

impl HttpSender {
    pub fn new(excerpt_bytes: usize, egress: EgressPolicy) -> Result<Self, reqwest::Error> {
        let egress = Arc::new(egress);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .dns_resolver(Arc::new(PolicyResolver(egress.clone())))
            .build()?;
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
        // Parsed once, here: for the check below and for reqwest, which
        // takes a parsed URL as it is.
        let url = reqwest::Url::parse(&request.url);
        // Names are checked by the resolver; an address written in the URL
        // never reaches it, so it is checked here.
        if let Some(blocked) = url
            .as_ref()
            .ok()
            .and_then(literal_ip)
            .and_then(|ip| self.egress.check(ip).err())
        {
            return Attempt::blocked(now, &blocked);
        }
        let started = Instant::now();
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let builder = match url {
            Ok(url) => self.http.request(method, url),
            // reqwest reports the same error as a failed send.
            Err(_) => self.http.request(method, &request.url),
        };
        let built = builder
            .timeout(timeout)
            .body(request.body.into_reqwest())
            .build()
            .map(|mut built| {
                // The request has no header yet: the map goes in whole,
                // without the merge `RequestBuilder::headers` does.
                *built.headers_mut() = header_map(&request.headers);
                built
            });
        let outcome = match built {
            Ok(built) => self.http.execute(built).await,
            Err(e) => Err(e),
        };
        if let Some(blocked) = outcome.as_ref().err().and_then(blocked_cause) {
            return Attempt::blocked(now, blocked);
        }
        let (result, response_excerpt, error) = match outcome {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now().timestamp()));
                let excerpt = self.read_excerpt(response).await;
                let error = (!(200..300).contains(&code)).then(|| format!("HTTP {code}"));
                (AttemptResult::Status { code, retry_after }, excerpt, error)
            }
            Err(e) => (AttemptResult::NoResponse, None, Some(describe(&e))),
        };
        Attempt {
            started_at: now,
            duration: started.elapsed(),
            result,
            response_excerpt,
            error,
        }
    }

    /// Reads at most `excerpt_bytes` of the response body, then drops the
    /// rest unread.
    async fn read_excerpt(&self, mut response: reqwest::Response) -> Option<String> {
        let mut buf = Vec::new();
        while buf.len() < self.excerpt_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                _ => break,
            }
        }
        buf.truncate(self.excerpt_bytes);
        (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
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
struct PolicyResolver(Arc<EgressPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
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
                (true, Some(b)) => Err(Box::new(b) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The address in a URL's host, when it is one rather than a name.
pub fn literal_host(url: &str) -> Option<IpAddr> {
    literal_ip(&reqwest::Url::parse(url).ok()?)
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The egress policy's refusal, when that is what stopped the request:
/// retrying would not help.
fn blocked_cause(error: &reqwest::Error) -> Option<&Blocked> {
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
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
