//! Large documents a few at a time. A `ProjectEvent` call may carry tens
//! of megabytes, and gRPC holds a message whole while it decodes it; so a
//! call waits for its turn *before* its request is read, and at most
//! [`DOCUMENTS_AT_ONCE`] documents are in memory at once. A waiting call's
//! bytes stay with its sender (HTTP/2 flow control stops it after one
//! window). Every other call passes straight through.
//!
//! The price: on one HTTP/2 connection, a waiting publish can hold up the
//! calls behind it once the connection's window is full — the design
//! tool's connection, not the engine's, in any deployment that keeps them
//! apart.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;

/// Project documents decoded and prepared at the same time.
pub const DOCUMENTS_AT_ONCE: usize = 2;

const GATED: &str = "/herald.v1.IngestService/ProjectEvent";

/// Wraps the ingest service; see the module header.
#[derive(Clone)]
pub struct DocumentGate<S> {
    inner: S,
    turns: Arc<Semaphore>,
}

impl<S> DocumentGate<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            turns: Arc::new(Semaphore::new(DOCUMENTS_AT_ONCE)),
        }
    }
}

impl<S, B> Service<http::Request<B>> for DocumentGate<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != GATED {
            return Box::pin(self.inner.call(request));
        }
        // The service made ready is the one called (tower's contract); a
        // clone takes its place for the next call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let turns = self.turns.clone();
        Box::pin(async move {
            // The semaphore is never closed, so a turn always comes.
            let _turn = turns.acquire_owned().await;
            let mut ready = ready;
            ready.call(request).await
        })
    }
}

impl<S: NamedService> NamedService for DocumentGate<S> {
    const NAME: &'static str = S::NAME;
}
