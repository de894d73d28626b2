//! The `herald` binary's client commands, run as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{spawn_app, webhook, SECRET};

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_SERVER")
        .output()
        .expect("herald runs")
}

#[tokio::test]
async fn emit_then_batches_get_shows_the_batch() {
    let app = spawn_app("").await;
    let server = format!("http://{}", app.addr);
    let emit = tokio::task::spawn_blocking({
        let server = server.clone();
        move || {
            herald(&[
                "emit",
                "batch-failed",
                "--server",
                &server,
                "--event-id",
                "cli-1",
                "--batch-id",
                "b-7",
                "--occurred-at",
                "2026-03-01T11:59:00Z",
                "--environment-id",
                "prod",
                "--cube-id",
                "sales",
                "--error-message",
                "disk full",
                "--failed-aggregate",
                "agg-1=boom",
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        emit.status.success(),
        "{}",
        String::from_utf8_lossy(&emit.stderr)
    );
    let out = String::from_utf8_lossy(&emit.stdout);
    assert!(
        out.contains("new event") && out.contains("b-7 failed"),
        "{out}"
    );

    let get = tokio::task::spawn_blocking(move || {
        herald(&["batches", "get", "b-7", "--server", &server, "--json"])
    })
    .await
    .unwrap();
    assert!(get.status.success());
    let json: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["build_kind"], "full");
    assert_eq!(json["finished_at"], "2026-03-01T11:59:00.000Z");
    assert_eq!(json["failed_aggregates"][0]["error"], "boom");
    assert_eq!(json["start_seen"], false);
}

#[tokio::test]
async fn emit_reports_a_refused_event_and_exits_non_zero() {
    let app = spawn_app("").await;
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        herald(&[
            "emit",
            "batch-started",
            "--server",
            &server,
            "--environment-id",
            "prod",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("batch.batch_id"),
        "{err}"
    );
}

/// A retry may spell the same instant another way; other content under
/// the same `--event-id` is refused, and the message says what the id was
/// first used for (and, when no time was given, why a retry differed).
#[tokio::test]
async fn emit_reports_a_reused_event_id_and_what_it_was_first_used_for() {
    // The CLI's default time is the real now.
    let app = crate::helpers::Spawn {
        clock: Some(herald::clock::ManualClock::new(chrono::Utc::now())),
        ..Default::default()
    }
    .start()
    .await;
    let server = format!("http://{}", app.addr);
    let emit = |kind: &'static str, at: Option<&'static str>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "emit",
                kind,
                "--server",
                &server,
                "--event-id",
                "e1",
                "--batch-id",
                "b-7",
                "--environment-id",
                "prod",
                "--cube-id",
                "sales",
                "--error-message",
                "disk full",
            ];
            if let Some(at) = at {
                args.extend(["--occurred-at", at]);
            }
            herald(&args)
        })
    };
    let first = emit("batch-started", Some("2026-03-01T11:59:00Z"))
        .await
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let retry = emit("batch-started", Some("2026-03-01T12:59:00+01:00"))
        .await
        .unwrap();
    assert!(retry.status.success(), "{retry:?}");
    let out = String::from_utf8_lossy(&retry.stdout);
    assert!(out.contains("repeat, first answer"), "{out}");

    let reused = emit("batch-failed", None).await.unwrap();
    assert_eq!(reused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&reused.stderr).trim_end(),
        "error: AlreadyExists: event_id `e1` was first used for aggregate.batch.started \
         of batch b-7 with other content (a retry must send the same event, time included: \
         pass the first call's --occurred-at)"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 1);
}

use crate::helpers::herald_cli as herald_beside;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim_end().to_owned()
}

#[test]
fn emit_without_a_server_says_why_and_what_to_check() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = herald(&["emit", "batch-started", "--server", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: cannot reach Herald at http://{addr}: "))
            && err.contains("Connection refused")
            && err.ends_with(&format!("is herald serve running on {addr}?")),
        "{err}"
    );
}

#[tokio::test]
async fn a_loopback_address_without_scheme_is_plaintext_and_https_against_it_is_explained() {
    let app = spawn_app("").await;
    let plain = herald_beside(vec![
        "batches".into(),
        "list".into(),
        "--server".into(),
        app.addr.to_string(),
    ])
    .await;
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(String::from_utf8_lossy(&plain.stdout).starts_with("BATCH"));

    let tls = herald_beside(vec![
        "batches".into(),
        "list".into(),
        "--server".into(),
        format!("https://{}", app.addr),
    ])
    .await;
    assert_eq!(tls.status.code(), Some(1));
    assert!(
        stderr(&tls).ends_with("the server speaks plaintext: use http://"),
        "{}",
        stderr(&tls)
    );
}

#[test]
fn serve_names_a_busy_address_once_and_leaves_no_database_behind() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--grpc-listen", &addr])
        .current_dir(dir.path())
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_STORE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: cannot listen on {addr}: ")),
        "{err}"
    );
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn listen_names_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = herald(&["listen", "--port", &port]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: cannot listen on 127.0.0.1:{port}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn listen_verifies_and_prints_what_herald_sends() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["listen", "--port", "0", "--secret", SECRET])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .nth(2)
        .expect("listening on URL")
        .to_owned();

    let app = spawn_app(&webhook("listen", &url, "events = [\"*\"]")).await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.deliver().await;

    let line = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap());
    let line = tokio::time::timeout(Duration::from_secs(10), line)
        .await
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.starts_with("aggregate.batch.started environments/prod/cubes/sales/batches/b-1"),
        "{line}"
    );
    assert!(line.ends_with("(signature ok)"), "{line}");
    let rows = app
        .store
        .list_deliveries(&Default::default())
        .await
        .unwrap();
    assert_eq!(rows[0].last_status, Some(204));
}

#[test]
fn secret_prints_a_usable_signing_secret() {
    let out = herald(&["secret"]);
    let secret = String::from_utf8(out.stdout).unwrap();
    assert!(
        herald::core::signature::SigningSecret::parse(secret.trim()).is_ok(),
        "{secret}"
    );
}

#[test]
fn serve_refuses_an_invalid_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[webhooks]]\nname = \"a\"\nurl = \"not a url\"\nevents = [\"*\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n").unwrap();
    let out = herald(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webhooks[0].url"), "{err}");
}

#[tokio::test]
async fn serve_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"off\"\n";
    std::fs::write(dir.path().join("herald.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--log-format", "json", "serve", "--config", "herald.toml"])
        .current_dir(dir.path())
        .env("HERALD_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap());
    let first = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "Herald is serving");
}

/// `-o yaml` and `-o json` print the same document; `--json` is `-o json`.
#[tokio::test]
async fn every_format_prints_the_same_batch() {
    let app = spawn_app("").await;
    app.fail_batch("ev-1", "b-1", "sales").await;
    let get = |format: &[&str]| {
        let mut args = vec!["batches".to_owned(), "get".into(), "b-1".into()];
        args.extend(["--server".into(), app.addr.to_string()]);
        args.extend(format.iter().map(|s| s.to_string()));
        herald_beside(args)
    };
    let json = get(&["--json"]).await;
    let long = get(&["--output", "json"]).await;
    assert_eq!(json.stdout, long.stdout);
    let batch: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(batch["state"], "failed");

    let yaml = String::from_utf8(get(&["-o", "yaml"]).await.stdout).unwrap();
    assert!(yaml.contains("state: \"failed\"\n"), "{yaml}");
    assert!(yaml.contains("failed_aggregates:\n  - "), "{yaml}");

    let table = String::from_utf8(get(&[]).await.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["state", "failed"])),
        "{table}"
    );
}

#[test]
fn completions_and_the_man_page_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = herald(&["completions", shell]);
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("deliveries"), "{shell}: {script}");
    }
    let man = String::from_utf8(herald(&["man"]).stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH herald"),
        "{man}"
    );
}

#[test]
fn check_config_says_ok_or_what_serve_would_refuse_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\ngrpc_listen = \"localhost:50051\"\n").unwrap();
    let run = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .current_dir(dir.path())
            .env_remove("HERALD_STORE_URL")
            .output()
            .unwrap()
    };
    let ok = run(&good);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ok: 0 subscriptions"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[webhooks]]\nname = \"a\"\nurl = \"not a url\"\nevents = [\"*\"]\n",
    )
    .unwrap();
    let refused = run(&bad);
    assert_eq!(refused.status.code(), Some(1));
    let serve = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config", bad.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(stderr(&refused), stderr(&serve));
    assert!(
        stderr(&refused).starts_with("error: config key `webhooks[0]"),
        "{}",
        stderr(&refused)
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".toml"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}
