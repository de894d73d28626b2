//! The Git archive: project events become commits, checked with real Git.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herald::api::pb;

use crate::helpers::{Spawn, TestApp};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn event(
    app: &TestApp,
    id: &str,
    kind: pb::ProjectEventKind,
    user: &str,
    xml: &str,
) -> pb::ProjectEventRequest {
    pb::ProjectEventRequest {
        meta: app.meta(id),
        kind: kind as i32,
        organization_id: "acme".into(),
        project_id: "finance".into(),
        project_name: "Finance".into(),
        user: user.into(),
        snapshot_id: "snap-1".into(),
        snapshot_tag: "v1".into(),
        target_environment: if kind == pb::ProjectEventKind::Promoted {
            "prod".into()
        } else {
            String::new()
        },
        project_xml: xml.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

async fn archive_app(repo: &Path, remote: Option<&Path>) -> TestApp {
    let mut config = format!("[[git_archives]]\nname = \"archive\"\npath = \"{}\"\nretry_schedule = [\"10s\", \"10s\"]\n", repo.display());
    if let Some(remote) = remote {
        config.push_str(&format!("remote = \"{}\"\n", remote.display()));
    }
    Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await
}

#[tokio::test]
async fn snapshot_publish_promote_delete_make_that_history_and_reach_the_remote() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, remote) = (dir.path().join("archive"), dir.path().join("remote.git"));
    git(
        dir.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    let app = archive_app(&repo, Some(&remote)).await;
    use pb::ProjectEventKind::*;
    let steps = [
        (
            "e1",
            SnapshotCreated,
            "ada@example.com",
            "<project v=\"1\"/>",
        ),
        ("e2", Published, "ada@example.com", "<project v=\"2\"/>"),
        ("e3", Promoted, "grace@example.com", "<project v=\"3\"/>"),
        ("e4", Deleted, "grace@example.com", ""),
    ];
    for (id, kind, user, xml) in steps {
        app.ingest
            .clone()
            .project_event(event(&app, id, kind, user, xml))
            .await
            .unwrap();
    }
    app.deliver().await;

    let log = git(&repo, &["log", "--reverse", "--format=%an <%ae>|%s"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "ada <ada@example.com>|project.snapshot_created: Finance (finance), snapshot v1 [snap-1]",
            "ada <ada@example.com>|project.published: Finance (finance), snapshot v1 [snap-1]",
            "grace <grace@example.com>|project.promoted: Finance (finance), snapshot v1 [snap-1], to prod",
            "grace <grace@example.com>|project.deleted: Finance (finance), snapshot v1 [snap-1]",
        ]
    );
    assert_eq!(
        git(&repo, &["show", "HEAD~3:acme/finance.xml"]),
        "<project v=\"1\"/>"
    );
    assert_eq!(
        git(&repo, &["show", "HEAD~1:acme/finance.xml"]),
        "<project v=\"3\"/>"
    );
    assert!(
        !git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]).contains("finance.xml"),
        "deleted at the end"
    );
    assert_eq!(
        git(&remote, &["log", "--format=%s", "main"]),
        git(&repo, &["log", "--format=%s"]),
        "the remote has the same history"
    );
}

#[tokio::test]
async fn a_locked_repository_is_retried_and_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("archive");
    git(
        dir.path(),
        &["init", "-q", "-b", "main", repo.to_str().unwrap()],
    );
    let lock = repo.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    let app = archive_app(&repo, None).await;
    app.ingest
        .clone()
        .project_event(event(
            &app,
            "e1",
            pb::ProjectEventKind::Published,
            "ada@example.com",
            "<project/>",
        ))
        .await
        .unwrap();
    app.deliver().await;
    let rows = app.deliveries_of("e1").await;
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("index.lock"),
        "{attempts:?}"
    );

    std::fs::remove_file(&lock).unwrap();
    app.advance(Duration::from_secs(15));
    app.deliver().await;
    app.advance(Duration::from_secs(15));
    app.deliver().await;
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(
        app.deliveries_of("e1").await[0].state,
        herald::store::DeliveryState::Delivered
    );
}

#[tokio::test]
async fn a_publish_carries_what_changed_in_the_model_and_malformed_xml_is_archived_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("archive");
    let receiver = crate::helpers::Receiver::start().await;
    let config = format!(
        "[[git_archives]]\nname = \"archive\"\npath = \"{}\"\n{}",
        repo.display(),
        crate::helpers::webhook(
            "hook",
            &receiver.url(),
            "events = [\"project.*\"]\nproject_xml = \"none\""
        )
    );
    let app = Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await;
    let v1 = r#"<project><cube name="Sales"><dimension name="Region"/><measure name="Revenue"/></cube></project>"#;
    let v2 = r#"<project><cube name="Sales"><measure name="Revenue"/><measure name="Margin"/></cube></project>"#;
    use pb::ProjectEventKind::Published;
    for (id, xml) in [
        ("e1", v1),
        ("e2", v2),
        ("e3", "<project><cube name='x'></project"),
    ] {
        app.ingest
            .clone()
            .project_event(event(&app, id, Published, "ada@example.com", xml))
            .await
            .unwrap();
    }
    app.deliver().await;

    let bodies: Vec<serde_json::Value> = receiver.received().iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies[1]["data"]["model_changes"],
        "added measure Sales.Margin; removed dimension Sales.Region"
    );
    assert_eq!(bodies[2]["data"]["project_xml_malformed"], true);
    // The stored payload is the annotated one, too.
    let payloads = app
        .dir
        .texts("SELECT payload FROM events WHERE event_type = 'project.published' ORDER BY seq")
        .await;
    assert!(
        payloads[1].contains("added measure Sales.Margin; removed dimension Sales.Region"),
        "{payloads:?}"
    );
    let second = git(&repo, &["log", "-1", "--skip=1", "--format=%B"]);
    assert!(
        second.contains("Model: added measure Sales.Margin; removed dimension Sales.Region"),
        "{second}"
    );
    assert_eq!(
        git(&repo, &["show", "HEAD:acme/finance.xml"]),
        "<project><cube name='x'></project",
        "archived as received"
    );
    assert!(git(&repo, &["log", "-1", "--format=%B"]).contains("not well-formed"));
}

/// Project events can be tried from the shell: `herald emit
/// project-published --project-xml FILE` lands in the Git archive.
#[tokio::test]
async fn the_cli_emits_a_project_event_that_reaches_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("archive");
    let app = archive_app(&repo, None).await;
    let xml = dir.path().join("finance.xml");
    std::fs::write(&xml, "<project><cube name=\"Sales\"/></project>").unwrap();
    let server = app.addr.to_string();
    let args = [
        "emit",
        "project-published",
        "--organization-id",
        "acme",
        "--project-id",
        "finance",
        "--user",
        "ada",
        "--project-xml",
        xml.to_str().unwrap(),
        "--occurred-at",
        "2026-03-01T12:00:00Z",
        "--server",
        &server,
    ];
    let out = crate::helpers::herald_cli(args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.deliver().await;
    assert_eq!(
        git(&repo, &["show", "HEAD:acme/finance.xml"]),
        "<project><cube name=\"Sales\"/></project>"
    );
}

/// A user sent as `Name <email>` keeps both parts; a snapshot without a tag
/// leaves no double space; `subs list` calls the archive `git`.
#[tokio::test]
async fn a_mailbox_user_and_an_untagged_snapshot_make_a_clean_commit_and_the_archive_lists_as_git()
{
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("archive");
    let app = archive_app(&repo, None).await;
    let mut request = event(
        &app,
        "e1",
        pb::ProjectEventKind::SnapshotCreated,
        "Ada Lovelace <ada@example.com>",
        "<project/>",
    );
    request.snapshot_tag = String::new();
    app.ingest.clone().project_event(request).await.unwrap();
    app.deliver().await;
    assert_eq!(
        git(&repo, &["log", "--format=%an <%ae>|%s"]).trim_end(),
        "Ada Lovelace <ada@example.com>|project.snapshot_created: Finance (finance), snapshot [snap-1]"
    );

    let server = app.addr.to_string();
    let out = crate::helpers::herald_cli(["subs", "list", "-o", "json", "--server", &server]).await;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let archive = list
        .iter()
        .find(|s| s["name"] == "archive")
        .expect("listed");
    assert_eq!(archive["kind"], "git");
    let table = crate::helpers::herald_cli(["subs", "list", "--server", &server]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("archive"))
        .unwrap_or_default();
    assert!(row.split_whitespace().nth(1) == Some("git"), "{text}");
}
