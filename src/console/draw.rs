//! The SVGs Herald draws — a cube's batch timeline and the status badge —
//! and the small text helpers they share. Pure: no I/O, no clock.
//!
//! Everything that came from outside (cube names) goes through [`escape`];
//! nothing here uses `style` attributes, which the console's
//! Content-Security-Policy would block: colours are presentation
//! attributes or classes from the stylesheet.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::core::batch::{BatchRecord, BatchState};

/// Escapes text for HTML and XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration as people write it: `45s`, `12m`, `2h 5m`, `3d 4h`.
pub fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h {m}m", s / 3600),
        },
        _ => match (s % 86_400) / 3600 {
            0 => format!("{}d", s / 86_400),
            h => format!("{}d {h}h", s / 86_400),
        },
    }
}

const WIDTH: f64 = 720.0;
const ROW: f64 = 14.0;
const LEFT: f64 = 4.0;

/// The batches as a timeline, oldest at the top: one bar per batch from
/// its start to its end (or `now`), classed by outcome, and the stall
/// allowance as a dashed line at that distance from the start.
pub fn timeline(
    batches: &[BatchRecord],
    allowance_seconds: Option<u64>,
    now: DateTime<Utc>,
) -> String {
    let spans: Vec<(&BatchRecord, DateTime<Utc>, DateTime<Utc>)> = batches
        .iter()
        .rev()
        .map(|b| (b, b.begun_at(), b.finished_at.unwrap_or(now)))
        .collect();
    let longest = spans
        .iter()
        .map(|(_, start, end)| (*end - *start).num_milliseconds().max(1) as f64)
        .fold(1.0_f64, f64::max)
        .max(allowance_seconds.unwrap_or(0) as f64 * 1000.0);
    let scale = (WIDTH - 2.0 * LEFT) / longest;
    let height = ROW * spans.len().max(1) as f64 + 8.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {WIDTH} {height}\" \
         role=\"img\" aria-label=\"batch durations, oldest first\">"
    );
    for (i, (batch, start, end)) in spans.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let w = ((*end - *start).num_milliseconds().max(0) as f64 * scale).max(2.0);
        let _ = write!(
            svg,
            "<rect class=\"bar {}\" x=\"{LEFT}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" rx=\"2\">\
             <title>{} · {} · {}</title></rect>",
            batch.state.as_str().to_lowercase(),
            ROW - 4.0,
            escape(&batch.batch_id),
            batch.state,
            age_text((*end - *start).num_seconds())
        );
    }
    if let Some(allowance) = allowance_seconds {
        let x = LEFT + allowance as f64 * 1000.0 * scale;
        let _ = write!(
            svg,
            "<line class=\"allowance\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{height}\">\
             <title>stall allowance {}</title></line>",
            age_text(allowance as i64)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Durations of the finished batches, oldest first, as a small line chart.
pub fn trend(batches: &[BatchRecord]) -> String {
    let points: Vec<f64> = batches
        .iter()
        .rev()
        .filter(|b| b.state == BatchState::Succeeded && b.start_seen)
        .filter_map(|b| Some((b.finished_at? - b.started_at?).num_milliseconds() as f64))
        .collect();
    let (w, h) = (240.0, 40.0);
    let top = points.iter().cloned().fold(1.0_f64, f64::max);
    let step = if points.len() > 1 {
        w / (points.len() - 1) as f64
    } else {
        0.0
    };
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 2.0 - p / top * (h - 4.0)
            )
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"trend\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"duration trend of successful batches\"><polyline points=\"{}\"/></svg>",
        path.join(" ")
    )
}

/// A shields-style badge: `label · message`, coloured by `tone`
/// (`ok`, `bad`, `warn`, `info`).
pub fn badge(label: &str, message: &str, tone: &str) -> String {
    let colour = match tone {
        "ok" => "#2e7d32",
        "bad" => "#c62828",
        "warn" => "#b26a00",
        _ => "#546e7a",
    };
    // Verdana-ish 11px: about 6.5px a character, plus padding.
    let width_of = |text: &str| 10.0 + 6.5 * text.chars().count() as f64;
    let (lw, mw) = (width_of(label), width_of(message));
    let total = lw + mw;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total:.0}\" height=\"20\" role=\"img\" \
         aria-label=\"{l}: {m}\"><title>{l}: {m}</title>\
         <rect width=\"{lw:.0}\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"{lw:.0}\" width=\"{mw:.0}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"5\" y=\"14\">{l}</text><text x=\"{mx:.0}\" y=\"14\">{m}</text></g></svg>",
        l = escape(label),
        m = escape(message),
        mx = lw + 5.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_escape_their_text() {
        let svg = badge("<script>", "fresh 2h", "ok");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("#2e7d32"));
    }

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(age_text(42), "42s");
        assert_eq!(age_text(7200), "2h");
        assert_eq!(age_text(7500), "2h 5m");
        assert_eq!(age_text(90_000), "1d 1h");
        assert_eq!(age_text(-5), "0s");
    }
}
