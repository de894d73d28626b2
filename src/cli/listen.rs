//! `herald listen`: a local webhook receiver for trying Herald out and for
//! checking what a receiver will get. It verifies Standard Webhooks
//! signatures (when given the secret) and prints each event.

use std::io::Write;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;

use crate::core::signature::SigningSecret;

/// How far `webhook-timestamp` may be from this machine's clock.
const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// The subscription's signing secret; without it signatures are not checked.
    #[arg(long, env = "HERALD_LISTEN_SECRET")]
    secret: Option<String>,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(SigningSecret::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let requested = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {requested}: {e}"))?;
    let addr = listener.local_addr()?;
    println!(
        "listening on http://{addr}/ ({})",
        if secret.is_some() {
            "verifying signatures"
        } else {
            "signatures not checked: no --secret"
        }
    );
    std::io::stdout().flush()?;
    let app = Router::new()
        .fallback(any(move |headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            async move { receive(secret.as_ref(), &headers, &body) }
        }))
        // Project documents can be tens of megabytes.
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn receive(secret: Option<&SigningSecret>, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let id = header("webhook-id");
    let verdict = match secret {
        None => "unverified".to_owned(),
        Some(secret) => match header("webhook-timestamp").parse::<i64>() {
            Ok(ts) => match secret.verify(
                id,
                ts,
                body,
                header("webhook-signature"),
                chrono::Utc::now().timestamp(),
                TOLERANCE_SECS,
            ) {
                Ok(()) => "signature ok".to_owned(),
                Err(e) => format!("REJECTED: {e}"),
            },
            Err(_) => "REJECTED: missing or malformed webhook-timestamp".to_owned(),
        },
    };
    let event: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    println!(
        "{} {} {} ({verdict})",
        event["type"].as_str().unwrap_or("?"),
        event["subject"].as_str().unwrap_or("?"),
        id
    );
    if let Ok(pretty) = serde_json::to_string_pretty(&event["data"]) {
        println!("{pretty}");
    }
    let _ = std::io::stdout().flush();
    if verdict.starts_with("REJECTED") {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::NO_CONTENT
    }
}
