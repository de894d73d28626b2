//! Sending one webhook: a signed POST of the stored CloudEvents body.
//!
//! One pooled client serves every subscription. It never follows redirects
//! (a redirect could point a signed payload anywhere) and each request is
//! bounded by the subscription's timeout.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::core::cloudevent::CONTENT_TYPE as CLOUDEVENTS_JSON;
use crate::core::retry::{parse_retry_after, AttemptResult};
use crate::core::subscription::WebhookSubscription;
use crate::store::ClaimedDelivery;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub result: AttemptResult,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    excerpt_bytes: usize,
}

impl WebhookClient {
    pub fn new(excerpt_bytes: usize) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            excerpt_bytes,
        })
    }

    /// Sends `delivery` to `sub`; `now` (the injected clock) stamps the
    /// attempt record. Never fails: every outcome, errors included, is an
    /// [`Attempt`] to record.
    ///
    /// The `webhook-timestamp` header alone reads the wall clock: receivers
    /// compare it with their own clocks to refuse replays, so it must be
    /// the real time of sending even when tests drive Herald's clock.
    pub async fn send(
        &self,
        sub: &WebhookSubscription,
        delivery: &ClaimedDelivery,
        now: DateTime<Utc>,
    ) -> Attempt {
        let started = Instant::now();
        let request = self
            .http
            .post(&sub.url)
            .headers(headers(sub, delivery, Utc::now().timestamp()))
            .timeout(sub.timeout)
            .body(delivery.body.clone());
        let (result, response_excerpt, error) = match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, now.timestamp()));
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

fn headers(sub: &WebhookSubscription, delivery: &ClaimedDelivery, timestamp: i64) -> HeaderMap {
    let mut map = HeaderMap::new();
    // Extra headers were validated when the configuration loaded.
    for (name, value) in &sub.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    let signature = sub.secret.sign(&delivery.id, timestamp, &delivery.body);
    let fixed = [
        (CONTENT_TYPE, CLOUDEVENTS_JSON.to_owned()),
        (
            USER_AGENT,
            concat!("Herald/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        (HeaderName::from_static("webhook-id"), delivery.id.clone()),
        (
            HeaderName::from_static("webhook-timestamp"),
            timestamp.to_string(),
        ),
        (HeaderName::from_static("webhook-signature"), signature),
    ];
    for (name, value) in fixed {
        // Ids, digits and base64 are always valid header values.
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(name, value);
        }
    }
    map
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
