//! Status badges: `/badge/{environment}/{cube}.svg`, a shields-style SVG
//! of a cube's state for wikis and dashboards (`draw::badge`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::access::viewer;
use super::draw::{self, age_text};
use super::overview::{self, CubeState};
use super::{Console, ConsoleError};

/// `/badge/{environment}/{cube}.svg`: public when `console.public_badges`.
pub(super) async fn badge(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((environment, file)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    if !console.parts().settings.public_badges {
        viewer(&console, &headers).await?;
    }
    let cube = file
        .strip_suffix(".svg")
        .ok_or_else(|| ConsoleError::NotFound("badges end in .svg".into()))?;
    let overview = overview::read(console.parts()).await?;
    let row = overview
        .cubes
        .iter()
        .find(|c| c.environment_id == environment && c.cube_id == cube);
    let label = row.map_or(cube, |r| r.cube_name.as_str());
    let (message, tone) = match row {
        None => ("unknown".to_owned(), "info"),
        Some(r) => badge_message(r, overview.generated_at),
    };
    let svg = draw::badge(label, &message, tone);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        svg,
    )
        .into_response())
}

fn badge_message(r: &overview::CubeRow, now: DateTime<Utc>) -> (String, &'static str) {
    match r.state {
        CubeState::Succeeded => match r
            .last_success_at
            .map(|at| age_text((now - at).num_seconds()))
        {
            Some(age) => (format!("fresh {age}"), "ok"),
            None => ("fresh".to_owned(), "ok"),
        },
        CubeState::Failed => ("failed".to_owned(), "bad"),
        CubeState::Stalled => ("stalled".to_owned(), "warn"),
        CubeState::Overdue => ("overdue".to_owned(), "warn"),
        CubeState::Running => (
            format!("running {}/{}", r.aggregates_built, r.aggregate_count),
            "info",
        ),
        CubeState::Waiting => ("waiting".to_owned(), "info"),
    }
}
