//! `herald status`: the console's overview in the terminal — one row per
//! cube and the receivers in trouble — read from the same query
//! (`/overview.json` on the operations port). Coloured on a terminal,
//! plain when piped, `-o json` for scripts.

use std::io::IsTerminal;

use serde_json::Value;

use super::output::{duration_text, instant_text, table_text, OutputArg};
use crate::console::overview::{CubeState, Overview};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Herald's operations HTTP address (`server.http_listen`), where the
    /// console serves.
    #[arg(long, env = "HERALD_CONSOLE", default_value = "http://127.0.0.1:9090")]
    console: String,
    /// A reader or admin token, when the server has `[[tokens]]`.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    output: OutputArg,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let base = match args.console.contains("://") {
        true => args.console.trim_end_matches('/').to_owned(),
        false => format!("http://{}", args.console),
    };
    // A console that wants a sign-in answers with a redirect: not followed.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut request = client.get(format!("{base}/overview.json"));
    if let Some(token) = &args.token {
        request = request.bearer_auth(token.trim());
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Herald's console at {base}: {e}"))?;
    let status = response.status();
    if status.is_redirection() || status == reqwest::StatusCode::FORBIDDEN {
        anyhow::bail!("{base} refused the request ({status}): pass a reader or admin --token");
    }
    if !status.is_success() {
        anyhow::bail!("{base}/overview.json answered {status}");
    }
    let document: Value = serde_json::from_str(&response.text().await?)?;
    let overview: Overview = serde_json::from_value(document.clone())
        .map_err(|e| anyhow::anyhow!("{base}/overview.json is not an overview: {e}"))?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    args.output.print(&document, |_| {
        print!("{}", overview_text(&overview, colour))
    })
}

/// The overview as people read it: the counts, the cubes, the receivers.
pub fn overview_text(overview: &Overview, colour: bool) -> String {
    let c = &overview.counts;
    let mut out = format!(
        "{} failing · {} stalled · {} overdue · {} running · {} receivers in trouble\n\n",
        c.failed, c.stalled, c.overdue, c.running, c.receivers_in_trouble
    );
    let rows: Vec<Vec<String>> = overview.cubes.iter().map(cube_cells).collect();
    let headers = [
        "ENVIRONMENT",
        "CUBE",
        "STATE",
        "PROGRESS",
        "LAST SUCCESS",
        "NEXT EXPECTED",
        "ALLOWANCE",
    ];
    let table = table_text(&headers, &rows);
    let mut lines = table.lines();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (line, cube) in lines.zip(&overview.cubes) {
        out.push_str(&paint(line, cube.state, colour));
        out.push('\n');
    }
    if !overview.receivers.is_empty() {
        let rows: Vec<Vec<String>> = overview
            .receivers
            .iter()
            .map(|r| {
                vec![
                    r.subscription.clone(),
                    r.disabled_reason
                        .clone()
                        .map_or("enabled".into(), |why| format!("disabled: {why}")),
                    r.dead.to_string(),
                    r.pending.to_string(),
                    r.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table_text(
            &["RECEIVER", "STATUS", "DEAD", "BACKLOG", "LAST ERROR"],
            &rows,
        ));
    }
    out
}

fn cube_cells(cube: &crate::console::overview::CubeRow) -> Vec<String> {
    let progress = match (cube.state, cube.aggregate_count) {
        (CubeState::Running, n) if n > 0 => format!("{}/{n}", cube.aggregates_built),
        _ => String::new(),
    };
    vec![
        cube.environment_id.clone(),
        cube.cube_id.clone(),
        cube.state.as_str().to_owned(),
        progress,
        cube.last_success_at
            .map(instant_text)
            .unwrap_or_else(|| "never".into()),
        cube.next_expected_at.map(instant_text).unwrap_or_default(),
        cube.stall_allowance_seconds
            .map(|s| duration_text(std::time::Duration::from_secs(s)))
            .unwrap_or_default(),
    ]
}

/// A row in its state's colour (ANSI), or as it is.
fn paint(line: &str, state: CubeState, colour: bool) -> String {
    let code = match state {
        CubeState::Failed => "31",
        CubeState::Stalled | CubeState::Overdue => "33",
        CubeState::Running => "34",
        CubeState::Succeeded => "32",
        CubeState::Waiting => return line.to_owned(),
    };
    if colour {
        format!("\x1b[{code}m{line}\x1b[0m")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::overview::{Counts, CubeRow};

    fn cube(id: &str, state: CubeState) -> CubeRow {
        CubeRow {
            environment_id: "prod".into(),
            cube_id: id.into(),
            cube_name: id.into(),
            state,
            batch_id: None,
            started_at: None,
            finished_at: None,
            elapsed_seconds: None,
            aggregates_built: 1,
            aggregate_count: 3,
            last_success_at: None,
            next_expected_at: None,
            stall_allowance_seconds: Some(3600),
            allowance_source: None,
            error_message: None,
        }
    }

    #[test]
    fn rows_are_coloured_by_state_only_for_a_terminal() {
        let overview = Overview {
            generated_at: chrono::Utc::now(),
            counts: Counts {
                failed: 1,
                running: 1,
                ..Counts::default()
            },
            cubes: vec![
                cube("sales", CubeState::Running),
                cube("stock", CubeState::Failed),
            ],
            receivers: Vec::new(),
        };
        let plain = overview_text(&overview, false);
        assert!(plain.starts_with("1 failing · 0 stalled"), "{plain}");
        assert!(plain.contains("1/3") && !plain.contains('\x1b'), "{plain}");
        let coloured = overview_text(&overview, true);
        assert!(
            coloured.contains("\x1b[31m") && coloured.contains("\x1b[34m"),
            "{coloured}"
        );
    }
}
