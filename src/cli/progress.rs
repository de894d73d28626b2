//! The live line `herald wait` draws on a terminal while it waits: how long
//! it has waited, the batch's state and how many of its aggregates are
//! built. Only when both stdout and stderr are a terminal and the output is
//! for people: piped, or with `-o json|yaml`, nothing is drawn and the
//! output is exactly what it is without a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::output::{duration_text, enum_text};
use super::Authed;
use crate::api::pb::{self, query_service_client::QueryServiceClient};
use crate::api::timestamp_to_proto;

/// How often the line is redrawn (and the batch read again).
const EVERY: Duration = Duration::from_secs(1);

/// What is being waited for.
pub struct Watched {
    pub batch_id: Option<String>,
    pub cube_id: String,
    pub environment_id: Option<String>,
    pub after: DateTime<Utc>,
}

/// Whether a live line fits: people reading a terminal.
pub fn wanted(for_people: bool) -> bool {
    for_people && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// Draws the line on stderr every second until dropped (aborted); the
/// caller then calls [`clear`].
pub async fn draw(mut client: QueryServiceClient<Authed>, watched: Watched) {
    let started = Instant::now();
    loop {
        let batch = latest(&mut client, &watched).await;
        let elapsed = duration_text(Duration::from_secs(started.elapsed().as_secs()));
        show(&line(&elapsed, batch.as_ref(), &watched));
        tokio::time::sleep(EVERY).await;
    }
}

/// Erases the live line, so the outcome line stands alone.
pub fn clear() {
    show("");
}

/// Replaces the terminal's current line with `line`.
fn show(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

/// The batch waited for, or the newest of the cube begun since `after`;
/// `None` when there is none yet (or the server does not answer now: the
/// wait itself reports that).
async fn latest(client: &mut QueryServiceClient<Authed>, w: &Watched) -> Option<pb::Batch> {
    match &w.batch_id {
        Some(id) => client
            .get_batch(pb::GetBatchRequest {
                batch_id: id.clone(),
            })
            .await
            .ok()
            .map(|r| r.into_inner()),
        None => client
            .list_batches(pb::ListBatchesRequest {
                environment_id: w.environment_id.clone().unwrap_or_default(),
                cube_id: w.cube_id.clone(),
                since: Some(timestamp_to_proto(w.after)),
                page_size: 1,
                ..Default::default()
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().batches.into_iter().next()),
    }
}

/// `waiting 12s: batch b-1 running, 3 of 10 aggregates built`.
fn line(elapsed: &str, batch: Option<&pb::Batch>, w: &Watched) -> String {
    let Some(b) = batch else {
        return match &w.batch_id {
            Some(id) => format!("waiting {elapsed}: batch {id} not seen yet"),
            None => format!(
                "waiting {elapsed}: no batch of cube {} begun yet",
                w.cube_id
            ),
        };
    };
    let state = enum_text(
        pb::BatchState::try_from(b.state)
            .ok()
            .map(|s| s.as_str_name()),
        "BATCH_STATE_",
    );
    let built = match b.aggregate_count {
        0 => format!("{} aggregates built", b.aggregates_built),
        total => format!("{} of {total} aggregates built", b.aggregates_built),
    };
    format!("waiting {elapsed}: batch {} {state}, {built}", b.batch_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(batch_id: Option<&str>) -> Watched {
        Watched {
            batch_id: batch_id.map(str::to_owned),
            cube_id: "sales".into(),
            environment_id: None,
            after: Utc::now(),
        }
    }

    #[test]
    fn the_line_says_elapsed_state_and_aggregates_built() {
        let batch = pb::Batch {
            batch_id: "b-1".into(),
            state: pb::BatchState::Running as i32,
            aggregate_count: 10,
            aggregates_built: 3,
            ..Default::default()
        };
        assert_eq!(
            line("12s", Some(&batch), &watched(None)),
            "waiting 12s: batch b-1 running, 3 of 10 aggregates built"
        );
        assert_eq!(
            line("0ms", None, &watched(None)),
            "waiting 0ms: no batch of cube sales begun yet"
        );
        assert_eq!(
            line("1s", None, &watched(Some("b-9"))),
            "waiting 1s: batch b-9 not seen yet"
        );
    }
}
