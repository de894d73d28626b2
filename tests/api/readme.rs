//! The README matches the code: every TOML block passes `herald
//! check-config`, every flag of the CLI synopsis exists, and the CLI
//! section's example session runs against a real server.

use std::path::Path;
use std::process::{Command, Output};

use herald::clock::ManualClock;
use herald::store::DeliveryFilter;

use crate::helpers::{Spawn, SECRET};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The fenced blocks of one language, each with the line before its fence.
fn blocks(text: &str, language: &str) -> Vec<(String, String)> {
    let fence = format!("```{language}");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == fence {
            let before = if i > 0 { lines[i - 1] } else { "" };
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_end() == "```")
                .expect("every fence is closed");
            found.push((before.to_owned(), lines[i + 1..end].join("\n") + "\n"));
            i = end;
        }
        i += 1;
    }
    found
}

/// The names a block reads secrets from (`secret_env = "X"`, `{ env = "X" }`).
fn env_names(block: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in block.split("env = \"").skip(1) {
        if let Some(name) = part.split('"').next() {
            names.push(name.to_owned());
        }
    }
    names
}

fn check_config(dir: &Path, block: &str) -> Output {
    std::fs::write(dir.join("herald.toml"), block).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["check-config", "--config", "herald.toml"])
        .current_dir(dir);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("HERALD_")) {
        command.env_remove(name);
    }
    for name in env_names(block) {
        command.env(name, SECRET);
    }
    command.output().expect("herald runs")
}

/// Every ```toml block is a configuration `check-config` accepts, except
/// those marked as fragments (an HTML comment on the line before).
#[tokio::test]
async fn every_toml_block_of_the_readme_passes_check_config() {
    let toml = blocks(&readme(), "toml");
    assert!(toml.len() >= 10, "found {} TOML blocks", toml.len());
    let mut checked = 0;
    for (before, block) in toml {
        if before.starts_with("<!-- toml fragment") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            let block = block.clone();
            move || check_config(&dir, &block)
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "README block refused: {}\n{block}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
        assert!(
            !dir.path().join("herald.db").exists(),
            "check-config creates no database"
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} blocks checked");
}

/// The CLI section: the synopsis block (the first block after the heading)
/// and the example session.
fn cli_section() -> (String, String) {
    let text = readme();
    let start = text.find("\n## CLI\n").expect("a CLI section");
    let end = text[start + 1..]
        .find("\n## ")
        .map_or(text.len(), |e| start + 1 + e);
    let section = &text[start..end];
    let plain = section.find("```\n").expect("the synopsis block") + 4;
    let synopsis_end = plain + section[plain..].find("```").unwrap();
    let synopsis = section[plain..synopsis_end].to_owned();
    let examples = blocks(section, "sh")
        .into_iter()
        .find(|(before, _)| before.starts_with("<!-- cli examples"))
        .expect("the example session")
        .1;
    (synopsis, examples)
}

/// Each synopsis entry: its command path(s) and every flag it names.
fn synopsis_entries(synopsis: &str) -> Vec<(Vec<Vec<String>>, Vec<String>)> {
    let mut entries: Vec<String> = Vec::new();
    for line in synopsis.lines() {
        match line.strip_prefix("herald ") {
            Some(rest) => entries.push(rest.to_owned()),
            None => {
                if let Some(last) = entries.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
            }
        }
    }
    entries
        .iter()
        .map(|entry| {
            let words: Vec<&str> = entry
                .split_whitespace()
                .take_while(|w| {
                    w.starts_with(|c: char| c.is_ascii_lowercase())
                        && w.chars()
                            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
                })
                .collect();
            // `subs delete|enable|disable|test` names four commands;
            // `completions bash|zsh|fish` one command and its argument.
            let mut paths = vec![Vec::new()];
            for (i, word) in words.iter().enumerate() {
                if word.contains('|') && i == 0 || (word.contains('|') && words[0] != "subs") {
                    break;
                }
                paths = paths
                    .into_iter()
                    .flat_map(|p| {
                        word.split('|').map(move |alt| {
                            let mut p = p.clone();
                            p.push(alt.to_owned());
                            p
                        })
                    })
                    .collect();
            }
            let flags = entry
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(str::to_owned)
                .collect();
            (paths, flags)
        })
        .collect()
}

/// Every command of the synopsis exists and takes every flag it shows.
#[test]
fn every_flag_of_the_cli_synopsis_exists() {
    let (synopsis, _) = cli_section();
    let entries = synopsis_entries(&synopsis);
    assert!(entries.len() >= 20, "{} entries", entries.len());
    for (paths, flags) in entries {
        for path in paths {
            let out = Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(&path)
                .arg("--help")
                .output()
                .unwrap();
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "herald {path:?} --help failed");
            for flag in &flags {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "README shows `herald {} {flag}`, which --help does not list:\n{help}",
                    path.join(" ")
                );
            }
        }
    }
}

/// The synopsis commands the example session leaves out: `serve`,
/// `listen`, `bench` and `batches watch` run until stopped, `migrate` needs
/// a PostgreSQL (tests/postgres/migrate.rs runs it).
fn not_in_session(path: &[String]) -> bool {
    matches!(
        path.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["serve"] | ["listen"] | ["bench"] | ["batches", "watch"] | ["migrate"]
    )
}

/// The example session, line by line through `sh`, against a real server:
/// every line exits 0.
#[tokio::test]
async fn the_cli_examples_of_the_readme_run_against_a_real_server() {
    let (synopsis, examples) = cli_section();
    let app = Spawn {
        clock: Some(ManualClock::new(chrono::Utc::now())),
        ..Spawn::default()
    }
    .start()
    .await;
    let bin = Path::new(env!("CARGO_BIN_EXE_herald")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lines: Vec<&str> = examples
        .lines()
        .filter(|l| l.starts_with("herald "))
        .collect();
    for (paths, _) in synopsis_entries(&synopsis) {
        for command in paths.iter().filter(|p| !not_in_session(p)) {
            let prefix = format!("herald {}", command.join(" "));
            assert!(
                lines.iter().any(|l| l.starts_with(&prefix)),
                "no example of `{prefix}`"
            );
        }
    }
    for line in lines {
        let mut line = line.to_owned();
        if line.contains("DELIVERY_ID") {
            let newest = app
                .store
                .list_deliveries(&DeliveryFilter {
                    newest_first: true,
                    limit: Some(1),
                    ..Default::default()
                })
                .await
                .unwrap();
            let id = &newest.first().expect("a delivery to show").id;
            line = line.replace("DELIVERY_ID", id);
        }
        if line.contains("SILENCE_ID") {
            let silences = app
                .store
                .list_silences(false, chrono::Utc::now())
                .await
                .unwrap();
            let id = &silences.first().expect("a silence to expire").id;
            line = line.replace("SILENCE_ID", id);
        }
        let server = app.addr.to_string();
        let console = format!("http://{}", app.http);
        let path = path.clone();
        let shown = line.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .args(["-c", &line])
                .env("PATH", path)
                .env("HERALD_SERVER", server)
                .env("HERALD_CONSOLE", console)
                .env_remove("HERALD_TOKEN")
                .env_remove("HERALD_CA_CERT")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "`{shown}` exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
