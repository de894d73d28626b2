//! Nothing lost: pending deliveries survive a stop and a crash.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald::api::pb::{self, ingest_service_client::IngestServiceClient};
use herald::store::{DeliveryFilter, DeliveryState};

use crate::helpers::{batch_ref, dead_address, eventually, webhook, Receiver, Spawn, SECRET};

#[tokio::test]
async fn deliveries_pending_at_shutdown_are_all_delivered_after_a_restart() {
    let addr = dead_address().await;
    let url = format!("http://{addr}/hook");
    let app = Spawn {
        webhooks: webhook("etl", &url, "events = [\"*\"]"),
        ..Spawn::default()
    }
    .start()
    .await;
    app.start_batches(0..5).await;
    assert_eq!(
        app.deliver().await,
        5,
        "every delivery was attempted and failed"
    );
    let (dir, clock) = app.stop().await;

    let receiver = Receiver::start_on(addr).await;
    let app = Spawn {
        webhooks: webhook("etl", &url, "events = [\"*\"]"),
        dir: Some(dir),
        clock: Some(clock),
        ..Spawn::default()
    }
    .start()
    .await;
    app.advance(Duration::from_secs(60));
    app.deliver().await;

    let mut ids: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4"]);
    let rows = app
        .store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert!(rows
        .iter()
        .all(|r| r.state == DeliveryState::Delivered && r.attempts == 2));
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--config",
            "herald.toml",
            "--grpc-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env("HERALD_LOG", "warn")
        .spawn()
        .expect("herald binary starts");
    Server(child)
}

async fn connect(port: u16) -> IngestServiceClient<tonic::transport::Channel> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..250 {
        if let Ok(channel) = endpoint.connect().await {
            return IngestServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("herald did not start listening on {port}");
}

/// Kills the real binary with SIGKILL after it acked events it could not
/// deliver; the restarted binary delivers every one of them.
#[tokio::test]
async fn acked_events_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_addr = dead_address().await;
    let hook = webhook(
        "etl",
        &format!("http://{receiver_addr}/hook"),
        "events = [\"*\"]\ntimeout = \"1s\"",
    )
    .replace(
        "[\"10s\", \"1m\", \"5m\"]",
        "[\"200ms\", \"200ms\", \"1s\", \"1s\", \"1s\"]",
    );
    // Short leases, so a send the kill interrupted is claimable again soon.
    let config = format!(
        "[server]\nhttp_listen = \"off\"\n[delivery]\nlease_margin = \"1s\"\n\
         [egress]\nallow = [\"127.0.0.0/8\"]\n{hook}"
    );
    std::fs::write(dir.path().join("herald.toml"), config).unwrap();
    let port = dead_address().await.port();

    let mut server = start_server(dir.path(), port);
    let mut client = connect(port).await;
    for i in 0..10 {
        let request = pb::BatchSucceededRequest {
            meta: Some(pb::EventMeta {
                event_id: format!("ev-{i}"),
                occurred_at: Some(herald::api::timestamp_to_proto(chrono::Utc::now())),
                source: "engine".into(),
            }),
            batch: Some(batch_ref(&format!("b-{i}"), "prod", "sales")),
            build_kind: pb::BuildKind::Full as i32,
            ..Default::default()
        };
        let reply = client
            .batch_succeeded(request)
            .await
            .expect("acked")
            .into_inner();
        assert_eq!(reply.deliveries, 1);
    }
    server.0.kill().expect("SIGKILL");
    server.0.wait().unwrap();

    let receiver = Receiver::start_on(receiver_addr).await;
    let _server = start_server(dir.path(), port);
    let all = eventually(Duration::from_secs(30), || {
        let mut ids: Vec<_> = receiver
            .received()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len() == 10
    })
    .await;
    assert!(all, "received {} of 10", receiver.received().len());
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.signature_is_valid(SECRET)));
}

/// SIGTERM while a webhook is in flight: Herald stops taking calls, lets the
/// send finish and records it, then exits 0.
#[tokio::test]
async fn sigterm_lets_an_in_flight_delivery_finish_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.always(crate::helpers::Reply::Slow(Duration::from_millis(500)));
    let hook = webhook("etl", &receiver.url(), "events = [\"*\"]");
    let config =
        format!("[server]\nhttp_listen = \"off\"\n[egress]\nallow = [\"127.0.0.0/8\"]\n{hook}");
    std::fs::write(dir.path().join("herald.toml"), config).unwrap();
    let port = dead_address().await.port();
    let mut server = start_server(dir.path(), port);
    let mut client = connect(port).await;
    let request = pb::BatchStartedRequest {
        meta: Some(pb::EventMeta {
            event_id: "ev-1".into(),
            occurred_at: Some(herald::api::timestamp_to_proto(chrono::Utc::now())),
            source: "engine".into(),
        }),
        batch: Some(batch_ref("b-1", "prod", "sales")),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 1,
    };
    client.batch_started(request).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !receiver.received().is_empty()).await,
        "the send started"
    );

    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exited = tokio::task::spawn_blocking(move || {
        let status = server.0.wait().unwrap();
        std::mem::forget(server);
        status
    });
    let status = tokio::time::timeout(Duration::from_secs(20), exited)
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let store = herald::store::Store::open(&format!("sqlite://{}/herald.db", dir.path().display()))
        .await
        .unwrap();
    let rows = store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(
        rows[0].state,
        DeliveryState::Delivered,
        "the in-flight send was let finish and recorded"
    );
}

/// SQLite takes one Herald: a second one on the same file is refused at
/// start with a message that says why, and the file is free again once
/// the first has stopped.
#[tokio::test]
async fn a_second_herald_on_the_same_sqlite_file_is_refused() {
    let file = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", file.path().display());
    let app = crate::helpers::Spawn {
        store_url: Some(url.clone()),
        ..Default::default()
    }
    .start()
    .await;
    let refused = herald::store::Store::open(&url)
        .await
        .expect_err("the file is taken");
    let message = refused.to_string();
    assert!(
        message.contains("another Herald process") && message.contains("PostgreSQL"),
        "{message}"
    );
    let (dir, _) = app.stop().await;
    // The stopped server's last store handle is dropped by its background
    // tasks as they wind down: the lock goes with it, within a bounded wait.
    let mut reopened = herald::store::Store::open(&url).await;
    for _ in 0..50 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        reopened = herald::store::Store::open(&url).await;
    }
    assert!(reopened.is_ok(), "{:?}", reopened.err());
    drop(dir);
}
