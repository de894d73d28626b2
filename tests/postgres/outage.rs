//! PostgreSQL going away and coming back, made real with a TCP proxy in
//! front of the database that the test cuts (every connection dropped,
//! nothing listening) and restores on the same port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{dead_address, eventually, postgres_admin_url, Spawn, TestDir};

/// Forwards a loopback port to PostgreSQL until cut.
struct Proxy {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(addr: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(addr).await.expect("the port is free");
        let addr = listener.local_addr().unwrap();
        let upstream = postgres_address();
        let task = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            task: Some(task),
        }
    }

    /// Drops every connection and stops listening: the database is gone.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// `url`'s database reached through this proxy.
    fn url_for(&self, url: &str) -> String {
        let upstream = postgres_address();
        url.replace(
            &format!("{}:{}", upstream.ip(), upstream.port()),
            &self.addr.to_string(),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn postgres_address() -> SocketAddr {
    let url = postgres_admin_url();
    let host = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the admin URL names host:port");
    host.parse()
        .expect("the admin URL's host is an IP and port")
}

async fn ready(http: SocketAddr) -> (u16, String) {
    match reqwest::get(format!("http://{http}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// While the database is unreachable, readiness is 503 and ingest answers
/// UNAVAILABLE (retry later); when it returns, both recover by themselves.
#[tokio::test]
async fn readiness_and_ingest_follow_a_database_that_goes_away_and_returns() {
    let dir = TestDir::create().await;
    let mut proxy = Proxy::start("127.0.0.1:0".parse().unwrap()).await;
    let app = Spawn {
        dir: Some(dir.clone()),
        store_url: Some(proxy.url_for(&dir.store_url())),
        store: "acquire_timeout = \"500ms\"".into(),
        ..Spawn::default()
    }
    .start()
    .await;
    assert_eq!(ready(app.http).await.0, 200);
    app.start_batch("before", "b-1", "sales").await;

    proxy.cut().await;
    let mut status = (0, String::new());
    for _ in 0..100 {
        status = ready(app.http).await;
        if status.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status.0, 503,
        "readiness while the database is gone: {status:?}"
    );
    let refused = app
        .ingest
        .clone()
        .batch_started(herald::api::pb::BatchStartedRequest {
            meta: app.meta("during"),
            batch: Some(crate::helpers::batch_ref("b-2", "prod", "sales")),
            build_kind: herald::api::pb::BuildKind::Full as i32,
            aggregate_count: 1,
        })
        .await
        .expect_err("no database, no ack");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let _proxy = Proxy::start(proxy.addr).await;
    let mut status = (0, String::new());
    for _ in 0..100 {
        status = ready(app.http).await;
        if status.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status.0, 200,
        "readiness after the database returned: {status:?}"
    );
    app.start_batch("after", "b-2", "sales").await;
    assert_eq!(app.store.count_events().await.unwrap(), 2);
}

/// A database that is down when Herald starts: a clear error naming the
/// URL with its password masked, retries with backoff, and Herald starts
/// serving once the database is there.
#[tokio::test]
async fn herald_waits_for_a_database_that_is_down_at_start() {
    let dir = TestDir::create().await;
    let closed = dead_address().await;
    let database = dir.store_url();
    let name = database.rsplit('/').next().unwrap();
    let url = format!("postgres://postgres:hunter2@{closed}/{name}");
    let grpc = dead_address().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--store-url",
            &url,
            "--grpc-listen",
            &grpc.to_string(),
        ])
        .current_dir(dir.path())
        .env("HERALD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald starts");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let retries = |log: &str| log.matches("cannot reach PostgreSQL").count();
    assert!(
        eventually(Duration::from_secs(20), || retries(&log.lock().unwrap())
            >= 3)
        .await,
        "retries are logged: {}",
        log.lock().unwrap()
    );
    {
        let text = log.lock().unwrap();
        assert!(text.contains("postgres:***@"), "the URL is named: {text}");
        assert!(!text.contains("hunter2"), "never the password: {text}");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running, not crash-looping"
    );

    let _proxy = Proxy::start(closed).await;
    assert!(
        eventually(Duration::from_secs(30), || log
            .lock()
            .unwrap()
            .contains("Herald is serving"))
        .await,
        "serves once the database is there: {}",
        log.lock().unwrap()
    );
    let _ = child.kill();
    let _ = child.wait();
}
