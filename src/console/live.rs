//! Live updates: a page's `EventSource` on `/events` hears `change`
//! whenever a batch change commits (on any replica, through the change
//! feed), and fetches its content again.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::wrappers::ReceiverStream;

use super::access::viewer;
use super::{Console, ConsoleError};
use crate::feed::Interest;

/// Server-sent events: `change` whenever a batch change commits (on any
/// replica); pages reload their content when they hear one.
pub(super) async fn events(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let viewer = viewer(&console, &headers).await?;
    // An open page holds a stream slot, counted with watch and await
    // streams against `server.max_watch_streams` (per token, too).
    let feed = &console.parts().feed;
    let slot = feed
        .open_stream(viewer.token.as_deref().unwrap_or_default())
        .map_err(|refused| ConsoleError::Busy(refused.to_string()))?;
    let waiter = feed.subscribe(Interest::Everything);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(4);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            tokio::select! {
                _ = waiter.changed() => {
                    if tx.send(Ok(Event::default().event("change").data("batch"))).await.is_err() {
                        break;
                    }
                }
                _ = tx.closed() => break,
            }
        }
    });
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(keep_alive)
        .into_response())
}
