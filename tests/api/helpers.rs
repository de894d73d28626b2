//! Test harness: a real Herald (built through `Application::build_with`,
//! the production path) on 127.0.0.1:0 with a temporary store, a manual
//! clock, and real HTTP receivers on loopback.
//!
//! The same tests run twice: the `api` target on a SQLite file in a
//! temporary directory, the `postgres` target (which includes these files)
//! on a database of its own per test on the machine's PostgreSQL, created
//! when the test starts and dropped when it ends.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use herald::api::pb::{
    self, ingest_service_client::IngestServiceClient, query_service_client::QueryServiceClient,
};
use herald::app::{Application, BuildOptions};
use herald::clock::ManualClock;
use herald::config::{Overrides, Settings};
use herald::deliver::Dispatcher;
use herald::monitor::{Findings, Monitor};
use herald::store::Store;

/// Whether this test binary runs the suite on PostgreSQL.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "postgres"
}

/// The PostgreSQL database tests create theirs from (trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A test's own place for its data: a temporary directory, and on the
/// PostgreSQL target a database of its own, dropped with it.
pub struct TestDir {
    dir: TempDir,
    database: Option<String>,
}

impl Deref for TestDir {
    type Target = TempDir;
    fn deref(&self) -> &TempDir {
        &self.dir
    }
}

impl TestDir {
    pub async fn create() -> Arc<TestDir> {
        if !on_postgres() {
            return TestDir::sqlite();
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let database = Some(create_database().await);
        Arc::new(TestDir { dir, database })
    }

    /// A SQLite store in a temporary directory, on either target (what
    /// `herald migrate` copies from).
    pub fn sqlite() -> Arc<TestDir> {
        let dir = tempfile::tempdir().expect("temp dir");
        Arc::new(TestDir {
            dir,
            database: None,
        })
    }

    /// Rows in one of the store's tables, counted in the database itself.
    pub async fn count_rows(&self, table: &str) -> i64 {
        self.column::<i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .await[0]
    }

    /// The text column each row of `sql` selects, read in the database.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        self.column(sql).await
    }

    /// The one column each row of `sql` selects, read in the database
    /// (SQLite read-only).
    async fn column<T>(&self, sql: &str) -> Vec<T>
    where
        T: Send + Unpin,
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        let url = self.store_url();
        if self.database.is_some() {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let found = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            return found;
        }
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=ro"))
            .await
            .unwrap();
        let found = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        found
    }

    /// The store URL Herald is given.
    pub fn store_url(&self) -> String {
        match &self.database {
            Some(name) => database_url(name),
            None => format!("sqlite://{}/herald.db", self.dir.path().display()),
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(name) = self.database.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
            })
        });
        if let Ok(Err(e)) = dropped.join() {
            eprintln!("dropping the test database failed: {e}");
        }
    }
}

fn database_url(name: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// Creates an empty database for one test. Without a reachable
/// PostgreSQL, a developer's run skips the whole PostgreSQL half with one
/// line; on CI (`CI` set) that is a failure.
async fn create_database() -> String {
    use sqlx::Connection;
    let admin_url = postgres_admin_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(admin) => admin,
        Err(e) if std::env::var_os("CI").is_none() => {
            let _ = writeln!(
                std::io::stderr(),
                "PostgreSQL is not reachable at {admin_url} ({e}): skipping the PostgreSQL half of the suite (set HERALD_TEST_POSTGRES; CI never skips it)"
            );
            std::process::exit(0);
        }
        Err(e) => panic!("PostgreSQL is not reachable at {admin_url} and CI never skips it: {e}"),
    };
    let name = format!("herald_t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("creates the test database");
    name
}

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const AIRFLOW_AUTH: &str = "Basic aGVyYWxkOmhlcmFsZA==";
pub const AIRFLOW_BEARER: &str = "Bearer eyJzdWIiOiJoZXJhbGQifQ";

/// The environment the test configurations see: `AIRFLOW_BASIC_AUTH` holds
/// a basic-auth header value, `AIRFLOW_API_AUTH` a bearer token's, every
/// other variable the test secret.
fn test_env(name: &str) -> Option<String> {
    match name {
        "AIRFLOW_BASIC_AUTH" => Some(AIRFLOW_AUTH.to_owned()),
        "AIRFLOW_API_AUTH" => Some(AIRFLOW_BEARER.to_owned()),
        _ => Some(SECRET.to_owned()),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The operations HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub http: SocketAddr,
    pub ingest: IngestServiceClient<Channel>,
    pub query: QueryServiceClient<Channel>,
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub monitor: Monitor,
    /// What a configuration reload (SIGHUP) replaces.
    pub reloader: herald::reload::Reloader,
    pub pruner: herald::retention::Pruner,
    /// Who waits for changes, and the streams open per caller.
    pub feed: herald::feed::ChangeFeed,
    pub clock: ManualClock,
    pub dir: Arc<TestDir>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// How to start a test app.
#[derive(Default)]
pub struct Spawn {
    /// Configuration (TOML: `[[webhooks]]`, `[stalls]`, ...) appended to
    /// the generated `[server]`, `[store]` and `[delivery]` sections.
    pub webhooks: String,
    /// Let the real background dispatcher run instead of driving it by hand.
    pub background: bool,
    /// Reuse a database directory (to restart on the same data).
    pub dir: Option<Arc<TestDir>>,
    pub clock: Option<ManualClock>,
    /// Replaces the `[egress]` section, which by default allows loopback.
    pub egress: Option<String>,
    /// Extra lines for the `[server]` section.
    pub server: String,
    /// Connect the test's clients over TLS (as `localhost`) with this.
    pub client_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Another store URL than the test directory's (a proxy in front of it).
    pub store_url: Option<String>,
    /// Extra lines for the `[store]` section.
    pub store: String,
}

pub async fn spawn_app(webhooks: &str) -> TestApp {
    Spawn {
        webhooks: webhooks.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await
}

impl Spawn {
    pub async fn start(self) -> TestApp {
        let dir = match self.dir {
            Some(dir) => dir,
            None => TestDir::create().await,
        };
        let clock = self.clock.unwrap_or_else(|| {
            ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap())
        });
        let toml = format!(
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nshutdown_grace = \"200ms\"\n{}\n\
             [store]\nurl = \"{}\"\n{}\n\
             [delivery]\npoll_interval = \"50ms\"\n{}\n{}",
            self.server,
            self.store_url.unwrap_or_else(|| dir.store_url()),
            self.store,
            self.egress.as_deref().unwrap_or("[egress]\nallow = [\"127.0.0.0/8\"]"),
            self.webhooks
        );
        let settings =
            Settings::from_toml(&toml, &Overrides::default(), &test_env).expect("test config");
        let options = BuildOptions {
            clock: Arc::new(clock.clone()),
            background_workers: self.background,
        };
        let app = Application::build_with(settings, options)
            .await
            .expect("app builds");
        let addr = app.grpc_addr();
        let http = app.http_addr().expect("the operations port is on");
        let (store, dispatcher, monitor) = (app.store(), app.dispatcher(), app.monitor());
        let pruner = app.pruner();
        let reloader = app.reloader();
        let feed = app.feed();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(async move { stopped.cancelled().await })
                .await
                .expect("app runs");
        });
        let endpoint = match self.client_tls {
            Some(tls) => tonic::transport::Endpoint::from_shared(format!(
                "https://localhost:{}",
                addr.port()
            ))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        };
        let channel = endpoint.connect().await.expect("connects to Herald");
        TestApp {
            addr,
            http,
            ingest: IngestServiceClient::new(channel.clone()),
            query: QueryServiceClient::new(channel),
            store,
            dispatcher,
            monitor,
            reloader,
            pruner,
            feed,
            clock,
            dir,
            stop,
            handle,
        }
    }
}

impl TestApp {
    /// Stops the server the way SIGTERM does and waits until it is down.
    pub async fn stop(self) -> (Arc<TestDir>, ManualClock) {
        self.stop.cancel();
        self.handle.await.expect("app task ends cleanly");
        (self.dir, self.clock)
    }

    pub async fn deliver(&self) -> usize {
        self.dispatcher
            .run_until_idle()
            .await
            .expect("dispatcher runs")
    }

    /// The `/metrics` page, as Prometheus would read it.
    pub async fn metrics(&self) -> String {
        let page = reqwest::get(format!("http://{}/metrics", self.http));
        page.await.unwrap().text().await.unwrap()
    }

    /// A new plaintext channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Asks the standard gRPC health service (no token) how Herald is.
    pub async fn health(&self) -> Result<i32, tonic::Status> {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let request = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        Ok(health.check(request).await?.into_inner().status)
    }

    /// Rows in one of the store's tables, counted in the database itself.
    pub async fn count_rows(&self, table: &str) -> i64 {
        self.dir.count_rows(table).await
    }

    /// The deliveries of one event, in subscription order.
    pub async fn deliveries_of(&self, event_id: &str) -> Vec<herald::store::DeliveryRow> {
        let filter = herald::store::DeliveryFilter {
            event_id: Some(event_id.to_owned()),
            ..Default::default()
        };
        self.store
            .list_deliveries(&filter)
            .await
            .expect("deliveries load")
    }

    /// Runs the stall and overdue checks once at the clock's time.
    pub async fn check(&self) -> Findings {
        self.monitor.run_once().await.expect("monitor runs")
    }

    /// Runs retention once at the clock's time.
    pub async fn prune(&self) -> herald::store::Pruned {
        self.pruner.run_once().await.expect("pruning runs")
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(chrono::Duration::from_std(by).unwrap());
    }

    pub fn meta(&self, event_id: &str) -> Option<pb::EventMeta> {
        Some(pb::EventMeta {
            event_id: event_id.to_owned(),
            occurred_at: Some(herald::api::timestamp_to_proto(herald::clock::Clock::now(
                &self.clock,
            ))),
            source: "engine-test".to_owned(),
        })
    }

    /// An `environment.created` of `prod`, with one attribute.
    pub fn environment_created(&self, event_id: &str) -> pb::EnvironmentRequest {
        pb::EnvironmentRequest {
            meta: self.meta(event_id),
            environment_id: "prod".into(),
            name: "Production".into(),
            attributes: [("region".to_owned(), "eu-west".to_owned())].into(),
        }
    }

    /// A `schema.published` of project `finance`'s cube Sales in `prod`.
    pub fn schema_published(&self, event_id: &str) -> pb::SchemaRequest {
        pb::SchemaRequest {
            meta: self.meta(event_id),
            environment_id: "prod".into(),
            project_id: "finance".into(),
            catalogs: vec!["Finance".into()],
            cubes: vec!["Sales".into()],
            version: "42".into(),
        }
    }

    /// A `project.published` of project `finance` carrying `xml`.
    pub fn published(&self, event_id: &str, xml: Vec<u8>) -> pb::ProjectEventRequest {
        pb::ProjectEventRequest {
            meta: self.meta(event_id),
            kind: pb::ProjectEventKind::Published as i32,
            organization_id: "acme".into(),
            organization_name: "Acme".into(),
            project_id: "finance".into(),
            project_name: "Finance".into(),
            user: "ada@example.com".into(),
            snapshot_id: "snap-7".into(),
            snapshot_tag: "v7".into(),
            target_environment: String::new(),
            project_xml: xml.into(),
        }
    }

    /// Starts batch `b-{n}` of cube `sales` (event `ev-{n}`) for each `n`.
    pub async fn start_batches(&self, numbers: impl IntoIterator<Item = usize>) {
        for n in numbers {
            self.start_batch(&format!("ev-{n}"), &format!("b-{n}"), "sales")
                .await;
        }
    }

    pub async fn start_batch(&self, event_id: &str, batch_id: &str, cube: &str) -> pb::IngestReply {
        let request = pb::BatchStartedRequest {
            meta: self.meta(event_id),
            batch: Some(batch_ref(batch_id, "prod", cube)),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 3,
        };
        self.ingest
            .clone()
            .batch_started(request)
            .await
            .expect("start accepted")
            .into_inner()
    }

    pub async fn succeed_batch(
        &self,
        event_id: &str,
        batch_id: &str,
        cube: &str,
    ) -> pb::IngestReply {
        let request = self.succeeded(event_id, batch_id, cube);
        self.ingest
            .clone()
            .batch_succeeded(request)
            .await
            .expect("success accepted")
            .into_inner()
    }

    pub fn succeeded(
        &self,
        event_id: &str,
        batch_id: &str,
        cube: &str,
    ) -> pb::BatchSucceededRequest {
        pb::BatchSucceededRequest {
            meta: self.meta(event_id),
            batch: Some(batch_ref(batch_id, "prod", cube)),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 3,
            aggregates_built: 3,
            rows_written: 1200,
        }
    }

    pub fn failed(&self, event_id: &str, batch_id: &str, cube: &str) -> pb::BatchFailedRequest {
        pb::BatchFailedRequest {
            meta: self.meta(event_id),
            batch: Some(batch_ref(batch_id, "prod", cube)),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 3,
            error_message: "out of disk".to_owned(),
            failed_aggregates: vec![pb::FailedAggregate {
                aggregate_id: "agg-7".to_owned(),
                aggregate_name: "by_region".to_owned(),
                error: "write failed".to_owned(),
            }],
        }
    }

    pub async fn fail_batch(&self, event_id: &str, batch_id: &str, cube: &str) -> pb::IngestReply {
        let request = self.failed(event_id, batch_id, cube);
        self.ingest
            .clone()
            .batch_failed(request)
            .await
            .expect("failure accepted")
            .into_inner()
    }
}

pub fn batch_ref(batch_id: &str, environment: &str, cube: &str) -> pb::BatchRef {
    pb::BatchRef {
        batch_id: batch_id.to_owned(),
        environment_id: environment.to_owned(),
        project_id: "finance".to_owned(),
        cube_id: cube.to_owned(),
        cube_name: cube.to_uppercase(),
    }
}

/// A Herald with one subscription, `etl`, for `events` (a TOML list),
/// pointing at a fresh receiver.
pub async fn app_with_receiver(events: &str) -> (TestApp, Receiver) {
    let receiver = Receiver::start().await;
    let app = spawn_app(&webhook(
        "etl",
        &receiver.url(),
        &format!("events = {events}"),
    ))
    .await;
    (app, receiver)
}

/// A `[[webhooks]]` table for `url`, with the test secret.
pub fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         retry_schedule = [\"10s\", \"1m\", \"5m\"]\n{extra}\n"
    )
}

/// What a receiver answers, in order; after the script runs out, 204.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    StatusRetryAfter(u16, &'static str),
    /// Never answer.
    Hang,
    /// Answer 204 after this long.
    Slow(Duration),
    /// Send this status and the start of a body, then never the rest.
    StallBody(u16, &'static str),
}

#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query, e.g. `/hook?rid=…`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }

    /// Checks the Standard Webhooks signature from first principles (not
    /// with Herald's own verifier): HMAC-SHA256 over "id.timestamp.body"
    /// keyed by the base64-decoded secret, any of the space-separated
    /// `v1,` entries.
    pub fn signature_is_valid(&self, secret: &str) -> bool {
        let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(
            format!(
                "{}.{}.",
                self.header("webhook-id"),
                self.header("webhook-timestamp")
            )
            .as_bytes(),
        );
        mac.update(&self.body);
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        self.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default_reply: Arc<Mutex<Reply>>,
    /// Requests being answered now, and the most there ever were at once.
    concurrent: Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Starts on a given port (to come back where a stopped one was).
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("port is free again");
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            script: Arc::default(),
            default_reply: Arc::new(Mutex::new(Reply::Status(204))),
            concurrent: Arc::default(),
        };
        let state = receiver.clone();
        let app = Router::new()
            .fallback(any(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                let path = uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                async move {
                    state
                        .answer(Received {
                            path,
                            headers,
                            body,
                        })
                        .await
                }
            }))
            // Project documents are tens of megabytes.
            .layer(axum::extract::DefaultBodyLimit::disable());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    async fn answer(&self, request: Received) -> Response {
        use std::sync::atomic::Ordering::SeqCst;
        /// Counts a request out when it ends, answered or abandoned.
        struct Leaving<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Leaving<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let (now, most) = &*self.concurrent;
        most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
        let _leaving = Leaving(now);
        self.reply(request).await
    }

    /// The most requests this receiver was answering at one time.
    pub fn most_concurrent(&self) -> usize {
        self.concurrent.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn reply(&self, request: Received) -> Response {
        self.received.lock().unwrap().push(request);
        let next = self.script.lock().unwrap().pop_front();
        let reply = next.unwrap_or_else(|| self.default_reply.lock().unwrap().clone());
        match reply {
            Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
            Reply::StatusRetryAfter(code, after) => (
                StatusCode::from_u16(code).unwrap(),
                [("retry-after", after)],
            )
                .into_response(),
            Reply::Hang => std::future::pending().await,
            Reply::Slow(after) => {
                tokio::time::sleep(after).await;
                StatusCode::NO_CONTENT.into_response()
            }
            Reply::StallBody(code, start) => {
                use tokio_stream::StreamExt;
                let chunks = tokio_stream::iter([Ok::<_, std::io::Error>(Bytes::from(start))])
                    .chain(tokio_stream::pending());
                let mut response = axum::body::Body::from_stream(chunks).into_response();
                *response.status_mut() = StatusCode::from_u16(code).unwrap();
                response
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn always(&self, reply: Reply) {
        *self.default_reply.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

/// A loopback address where nothing listens (connection refused).
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Polls `check` every 20 ms until it holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Log lines written on this thread while the returned guard lives. The
/// tests run on a current-thread runtime, so Herald's tasks log here too.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the `herald` binary off the test's runtime (the server under test
/// runs on it), with `HERALD_SERVER` and `HERALD_CA_CERT` of the
/// environment left out so only the arguments speak.
pub async fn herald_cli<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .env_remove("HERALD_SERVER")
            .env_remove("HERALD_CA_CERT")
            .output()
            .expect("herald runs")
    })
    .await
    .unwrap()
}
