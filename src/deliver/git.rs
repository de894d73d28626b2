//! The Git archive sink: each project event becomes one commit in a
//! repository — the project's XML written (or, for a delete, removed) at
//! the layout's path, authored by the event's user — then, if configured,
//! pushed. It uses the `git` program.
//!
//! A retry must not commit twice: every commit carries a `Herald-Event:`
//! trailer, and an event whose commit is already at HEAD is only pushed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::core::archive::{author, summary};
use crate::core::document::StoredDocument;
use crate::core::event::EventType;
use crate::core::subscription::GitArchive;

/// Writes one event into the archive. An `Err` is worth retrying (a locked
/// repository, a failed push).
pub fn archive(
    archive: &GitArchive,
    event: &Value,
    document: Option<&StoredDocument>,
) -> Result<(), String> {
    let repo = &archive.path;
    if !repo.join(".git").exists() {
        std::fs::create_dir_all(repo).map_err(|e| format!("creating {}: {e}", repo.display()))?;
        git(repo, &["init", "-q", "-b", &archive.branch])?;
    }
    let event_id = event["id"].as_str().unwrap_or_default();
    let trailer = format!("Herald-Event: {event_id}");
    let head = git(repo, &["log", "-1", "--format=%B"]).unwrap_or_default();
    if !head.contains(&trailer) {
        commit(archive, event, document, &trailer)?;
    }
    if let Some(remote) = &archive.remote {
        git(
            repo,
            &[
                "push",
                "-q",
                remote,
                &format!("HEAD:refs/heads/{}", archive.branch),
            ],
        )?;
    }
    Ok(())
}

fn commit(
    archive: &GitArchive,
    event: &Value,
    document: Option<&StoredDocument>,
    trailer: &str,
) -> Result<(), String> {
    let repo = &archive.path;
    let relative = archive
        .layout
        .render(event)
        .map_err(|e| format!("layout: {}", e.message))?;
    let relative = relative.trim();
    if relative.is_empty()
        || relative.starts_with('/')
        || relative.split('/').any(|part| part == "..")
    {
        return Err(format!(
            "layout gave `{relative}`, which is not a path inside the repository"
        ));
    }
    let file = repo.join(relative);
    let deleting = matches!(
        event["type"].as_str().and_then(EventType::parse),
        Some(EventType::ProjectDeleted | EventType::ProjectDeletedUnpublished)
    );
    if deleting {
        if file.exists() {
            git(repo, &["rm", "-q", "--", relative])?;
        }
    } else {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        write_document(&file, document)?;
        git(repo, &["add", "--", relative])?;
    }
    let mut message = format!("{}\n\n", summary(event));
    if let Some(changes) = event["data"]["model_changes"].as_str() {
        message.push_str(&format!("Model: {changes}\n\n"));
    }
    if event["data"]["project_xml_malformed"].as_bool() == Some(true) {
        message.push_str("The document is not well-formed XML; archived as received.\n\n");
    }
    message.push_str(&format!("{trailer}\n"));
    git(
        repo,
        &[
            "-c",
            "user.name=Herald",
            "-c",
            "user.email=herald@localhost",
            "commit",
            "-q",
            "--allow-empty",
            "--author",
            &author(event["data"]["user"].as_str()),
            "-m",
            &message,
        ],
    )?;
    Ok(())
}

/// Writes the document to `file`, inflating it as it goes.
fn write_document(file: &Path, document: Option<&StoredDocument>) -> Result<(), String> {
    let mut out = std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if let Some(document) = document {
        std::io::copy(&mut document.reader(), &mut out)
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
