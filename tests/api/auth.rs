//! Bearer tokens and roles, and the secure default.

use herald::api::pb;
use herald::app::{Application, BuildOptions, StartError};
use herald::config::{Overrides, Settings};
use tonic::{Code, Request};

use crate::helpers::{Spawn, TestApp};

const ENGINE: &str = "engine-token-0123456789";
const READER: &str = "reader-token-0123456789";
const ADMIN: &str = "admin-token-0123456789ab";

const TOKENS: &str = r#"
[[tokens]]
name = "engine-prod"
role = "engine"
token = "engine-token-0123456789"
[[tokens]]
name = "airflow"
role = "reader"
token_env = "READER_TOKEN"
[[tokens]]
name = "ops"
role = "admin"
token = "admin-token-0123456789ab"
"#;

async fn app() -> TestApp {
    // The test environment resolves every variable to the test secret, so
    // the reader's token is that.
    let config = TOKENS.replace(
        "token_env = \"READER_TOKEN\"",
        &format!("token = \"{READER}\""),
    );
    Spawn {
        webhooks: config,
        ..Spawn::default()
    }
    .start()
    .await
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn ingest_code(app: &TestApp, token: Option<&str>, n: u32) -> Code {
    let request = with_token(
        app.succeeded(&format!("ev-{n}"), &format!("b-{n}"), "sales"),
        token,
    );
    match app.ingest.clone().batch_succeeded(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn query_status(app: &TestApp, token: Option<&str>) -> Result<(), tonic::Status> {
    let request = with_token(pb::ListBatchesRequest::default(), token);
    app.query.clone().list_batches(request).await.map(|_| ())
}

#[tokio::test]
async fn each_role_can_do_what_it_should_and_nothing_else() {
    let app = app().await;
    assert_eq!(ingest_code(&app, Some(ENGINE), 1).await, Code::Ok);
    assert_eq!(ingest_code(&app, Some(ADMIN), 2).await, Code::Ok);
    assert_eq!(
        ingest_code(&app, Some(READER), 3).await,
        Code::PermissionDenied
    );
    assert!(query_status(&app, Some(READER)).await.is_ok());
    assert!(query_status(&app, Some(ADMIN)).await.is_ok());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = herald::api::pb::admin_service_client::AdminServiceClient::new(channel);
    let as_reader = admin
        .retry_dead(with_token(pb::RetryDeadRequest::default(), Some(READER)))
        .await
        .unwrap_err();
    assert_eq!(as_reader.code(), Code::PermissionDenied);
    assert!(admin
        .retry_dead(with_token(pb::RetryDeadRequest::default(), Some(ADMIN)))
        .await
        .is_ok());
    let denied = query_status(&app, Some(ENGINE)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "token `engine-prod` has role engine; QueryService needs reader or admin"
    );
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_unauthenticated_and_health_stays_open() {
    let app = app().await;
    let missing = query_status(&app, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("missing bearer token"));
    assert_eq!(
        ingest_code(&app, Some("not-a-real-token-at-all"), 1).await,
        Code::Unauthenticated
    );
    assert_eq!(
        app.store.count_events().await.unwrap(),
        0,
        "nothing refused was stored"
    );

    assert!(app.health().await.is_ok(), "health needs no token");
}

/// RFC 9110 §11.1: the scheme is case-insensitive, so every spelling of
/// `Bearer` is the same credential; another scheme is still refused.
#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let app = app().await;
    let list = |header: String| {
        let mut request = Request::new(pb::ListBatchesRequest::default());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let mut query = app.query.clone();
        async move { query.list_batches(request).await.map(|_| ()) }
    };
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let answer = list(format!("{scheme} {READER}")).await;
        assert!(answer.is_ok(), "{scheme}: {answer:?}");
    }
    let other = list(format!("Basic {READER}")).await.unwrap_err();
    assert_eq!(other.code(), Code::Unauthenticated);
    assert_eq!(
        other.message(),
        "the authorization header must be `Bearer <token>`"
    );
}

#[tokio::test]
async fn the_cli_sends_its_token() {
    let app = app().await;
    let server = format!("http://{}", app.addr);
    let run = move |token: Option<&'static str>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
            command.args([
                "emit",
                "batch-started",
                "--server",
                &server,
                "--batch-id",
                "b-1",
                "--environment-id",
                "prod",
                "--cube-id",
                "sales",
                "--occurred-at",
                "2026-03-01T12:00:00Z",
            ]);
            command.env_remove("HERALD_TOKEN");
            if let Some(token) = token {
                command.env("HERALD_TOKEN", token);
            }
            command.output().unwrap()
        })
    };
    let refused = run(None).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    let accepted = run(Some(ENGINE)).await.unwrap();
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

/// The address Herald refuses to open without tokens, given `config`.
/// Refused before anything binds: no non-loopback socket is opened.
async fn insecure_refusal(config: &str) -> std::net::SocketAddr {
    let settings = Settings::from_toml(config, &Overrides::default(), &|_| None).unwrap();
    let refused = Application::build_with(settings, BuildOptions::default()).await;
    let Err(StartError::Insecure(addr)) = refused else {
        panic!("expected the insecure refusal");
    };
    addr
}

#[tokio::test]
async fn herald_refuses_a_public_operations_port_without_tokens() {
    let open = "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"0.0.0.0:0\"\n[store]\nurl = \"sqlite::memory:\"";
    assert_eq!(insecure_refusal(open).await.to_string(), "0.0.0.0:0");
}

#[tokio::test]
async fn herald_refuses_a_public_address_without_tokens() {
    let open = "[server]\ngrpc_listen = \"0.0.0.0:0\"\n[store]\nurl = \"sqlite::memory:\"";
    assert_eq!(insecure_refusal(open).await.to_string(), "0.0.0.0:0");
    let insecure = Overrides {
        insecure: true,
        ..Overrides::default()
    };
    assert!(
        Settings::from_toml(open, &insecure, &|_| None)
            .unwrap()
            .server
            .insecure
    );
    let with_tokens = format!("{open}\n{TOKENS}");
    let settings = Settings::from_toml(&with_tokens, &Overrides::default(), &|_| {
        Some(READER.to_owned())
    })
    .unwrap();
    assert_eq!(settings.server.tokens.len(), 3);
    assert!(
        !format!("{settings:?}").contains(ADMIN),
        "tokens never print"
    );
}
