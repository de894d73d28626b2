//! A store that cannot write. Engines keep sending while the database is
//! full, and every OK must name an event that is really there — now and
//! after a restart — while refused calls are `UNAVAILABLE` and leave nothing
//! behind. Two ways to fill it: SQLite's `max_page_count` (what
//! `Store::limit_size` sets) inside the test process, and a real process
//! whose file writes fail past a size limit, as on a full disk.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Range;

use chrono::{TimeZone, Utc};
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{app_with_receiver, batch_ref, Spawn};
use herald::api::pb::query_service_client::QueryServiceClient;
use herald::api::pb::{self, ingest_service_client::IngestServiceClient};

/// A started event for batch `b-{n}`, large enough that a few of them need
/// a new page of the database.
fn started(n: usize) -> pb::BatchStartedRequest {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap();
    pb::BatchStartedRequest {
        meta: Some(pb::EventMeta {
            event_id: format!("e-{n}"),
            occurred_at: Some(herald::api::timestamp_to_proto(at)),
            source: "engine".into(),
        }),
        batch: Some(batch_ref(
            &format!("b-{n}"),
            "prod",
            &format!("cube-{n}-{}", "x".repeat(200)),
        )),
        build_kind: pb::BuildKind::Full as i32,
        aggregate_count: 3,
    }
}

/// Sends `range` in waves of 25 concurrent calls (so group commits fail
/// one after another); returns the numbers acked and the refusals.
async fn send(channel: &Channel, range: Range<usize>) -> (Vec<usize>, Vec<tonic::Status>) {
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let numbers: Vec<_> = range.collect();
    for wave in numbers.chunks(25) {
        let calls: Vec<_> = wave
            .iter()
            .map(|&n| {
                let mut client = IngestServiceClient::new(channel.clone());
                tokio::spawn(async move { (n, client.batch_started(started(n)).await) })
            })
            .collect();
        for call in calls {
            match call.await.expect("call task") {
                (n, Ok(_)) => acked.push(n),
                (_, Err(status)) => refused.push(status),
            }
        }
    }
    (acked, refused)
}

/// Sends several rounds while the store is full; returns what was acked
/// and every refusal.
async fn send_while_full(
    channel: &Channel,
    rounds: Range<usize>,
) -> (Vec<usize>, Vec<tonic::Status>) {
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for round in rounds {
        let (ok, no) = send(channel, round * 1000..round * 1000 + 100).await;
        acked.extend(ok);
        refused.extend(no);
    }
    (acked, refused)
}

async fn stored(channel: &Channel, n: usize) -> bool {
    let request = pb::GetBatchRequest {
        batch_id: format!("b-{n}"),
    };
    match QueryServiceClient::new(channel.clone())
        .get_batch(request)
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("GetBatch b-{n}: {status:?}"),
    }
}

/// Every number sent is stored exactly when it was acked.
async fn assert_stored_iff_acked(channel: &Channel, sent: &[usize], acked: &BTreeSet<usize>) {
    for &n in sent {
        assert_eq!(stored(channel, n).await, acked.contains(&n), "batch b-{n}");
    }
}

fn assert_unavailable(refused: &[tonic::Status]) {
    assert!(
        refused.len() > 100,
        "a full store refused {} calls",
        refused.len()
    );
    for status in refused {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let why = "the store is full or read-only; retry later";
        assert!(status.message().contains(why), "{}", status.message());
    }
}

async fn readyz(http: SocketAddr) -> (u16, String) {
    let response = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn sent(rounds: Range<usize>) -> Vec<usize> {
    let full = rounds.flat_map(|r| r * 1000..r * 1000 + 100);
    (0..50).chain(full).chain(20_000..20_050).collect()
}

#[tokio::test]
async fn a_full_database_refuses_events_as_unavailable_and_every_ok_is_durable() {
    let (app, _receiver) = app_with_receiver("[\"aggregate.batch.started\"]").await;
    let channel = app.channel().await;
    let (warm, refused) = send(&channel, 0..50).await;
    assert!(refused.is_empty(), "before the store fills: {refused:?}");
    let mut acked: BTreeSet<usize> = warm.into_iter().collect();

    app.store.limit_size(Some(0)).await.unwrap();
    let (ok, refused) = send_while_full(&channel, 1..7).await;
    acked.extend(ok);
    assert_unavailable(&refused);
    let (status, body) = readyz(app.http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the database or its disk is full"), "{body}");

    // Space returns: Herald takes events again by itself, no restart.
    app.store.limit_size(None).await.unwrap();
    assert_eq!(readyz(app.http).await, (200, "ready\n".to_owned()));
    let (ok, refused) = send(&channel, 20_000..20_050).await;
    assert!(refused.is_empty(), "{refused:?}");
    acked.extend(ok);

    let sent = sent(1..7);
    assert_stored_iff_acked(&channel, &sent, &acked).await;
    for &n in &sent {
        let deliveries = app.deliveries_of(&format!("e-{n}")).await.len();
        assert_eq!(deliveries, usize::from(acked.contains(&n)), "e-{n}");
    }
    let (dir, clock) = app.stop().await;
    let again = Spawn {
        dir: Some(dir),
        clock: Some(clock),
        ..Spawn::default()
    }
    .start()
    .await;
    assert_stored_iff_acked(&again.channel().await, &sent, &acked).await;
}

/// The real binary on a disk that fills: its file writes are limited in
/// size from outside (`RLIMIT_FSIZE` through `prlimit`, no root needed),
/// so SQLite's writes and COMMITs fail as on a full disk; then the limit is
/// lifted, as when space is freed.
mod real_disk {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::*;
    use crate::helpers::dead_address;

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts `herald serve` with SIGXFSZ ignored, so a write past the
    /// size limit fails with an error instead of killing the process.
    fn start(dir: &std::path::Path, grpc: u16, http: u16) -> Server {
        let config = format!("[server]\nhttp_listen = \"127.0.0.1:{http}\"\n");
        std::fs::write(dir.join("herald.toml"), config).unwrap();
        let child = Command::new("bash")
            .args([
                "-c",
                "trap '' XFSZ; exec \"$0\" serve --config herald.toml --grpc-listen \"$1\"",
                env!("CARGO_BIN_EXE_herald"),
                &format!("127.0.0.1:{grpc}"),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald binary starts");
        Server(child)
    }

    fn limit_file_size(server: &Server, limit: &str) {
        let pid = server.0.id().to_string();
        let status = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={limit}")])
            .status()
            .expect("prlimit runs");
        assert!(status.success(), "prlimit --fsize={limit}");
    }

    async fn connect(port: u16) -> Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        for _ in 0..250 {
            if let Ok(channel) = endpoint.connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("herald did not start listening on {port}");
    }

    fn size_of(dir: &std::path::Path, name: &str) -> u64 {
        std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
    }

    #[tokio::test]
    async fn acks_only_what_a_filling_disk_committed_and_recovers_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, http) = (dead_address().await.port(), dead_address().await);
        let server = start(dir.path(), grpc, http.port());
        let channel = connect(grpc).await;
        let (warm, refused) = send(&channel, 0..50).await;
        assert!(refused.is_empty(), "{refused:?}");
        let mut acked: BTreeSet<usize> = warm.into_iter().collect();

        // No file may grow more than 16 KiB past its size now.
        let largest = size_of(dir.path(), "herald.db").max(size_of(dir.path(), "herald.db-wal"));
        limit_file_size(&server, &format!("{}:unlimited", largest + 16 * 1024));
        let (ok, refused) = send_while_full(&channel, 1..9).await;
        acked.extend(ok);
        assert_unavailable(&refused);
        assert_eq!(readyz(http).await.0, 503);

        limit_file_size(&server, "unlimited");
        assert_eq!(readyz(http).await.0, 200);
        let (ok, refused) = send(&channel, 20_000..20_050).await;
        assert!(refused.is_empty(), "after space returns: {refused:?}");
        acked.extend(ok);

        let sent = sent(1..9);
        assert_stored_iff_acked(&channel, &sent, &acked).await;
        drop(server);
        let _again = start(dir.path(), grpc, http.port());
        assert_stored_iff_acked(&connect(grpc).await, &sent, &acked).await;
    }
}
