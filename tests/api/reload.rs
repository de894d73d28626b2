//! Reloading the configuration (SIGHUP): subscriptions, email rules,
//! schedules and stall rules change without a restart; a bad file is
//! refused and the running configuration kept.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald::api::pb::{self, ingest_service_client::IngestServiceClient};
use herald::config::{Overrides, Settings};

use crate::helpers::{
    batch_ref, dead_address, eventually, herald_cli, on_postgres, webhook, Receiver, Spawn,
    TestApp, SECRET,
};

/// The app's own `[store]` and `[egress]`, with `extra`, as a reload reads it.
fn settings(app: &TestApp, extra: &str) -> Settings {
    let toml = format!(
        "[store]\nurl = \"{}\"\n[egress]\nallow = [\"127.0.0.0/8\"]\n{extra}",
        app.dir.store_url()
    );
    Settings::from_toml(&toml, &Overrides::default(), &|_| Some(SECRET.to_owned())).expect("valid")
}

const SCHEDULE: &str = "[[schedules]]\nname = \"sales-hourly\"\nenvironment = \"prod\"\ncube = \"sales\"\nevery = \"1h\"\ngrace = \"10m\"\n";

async fn schedule_names(app: &TestApp) -> Vec<String> {
    app.query
        .clone()
        .list_schedules(pb::ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules
        .into_iter()
        .map(|s| s.name)
        .collect()
}

#[tokio::test]
async fn a_reload_applies_new_stall_rules_and_schedules_and_a_refused_one_keeps_them() {
    let app = Spawn::default().start().await;
    app.start_batch("ev-1", "b-1", "sales").await;
    app.advance(Duration::from_secs(600));
    assert_eq!(app.check().await.stalled, 0, "the default allows 4 h");
    assert!(schedule_names(&app).await.is_empty());

    let tighter = format!("[stalls]\nmax_duration = \"5m\"\n{SCHEDULE}");
    app.reloader
        .apply(settings(&app, &tighter))
        .await
        .expect("reloads");
    assert_eq!(
        app.check().await.stalled,
        1,
        "the new 5 m allowance applies"
    );
    assert_eq!(schedule_names(&app).await, ["sales-hourly"]);

    let needs_restart = "[smtp]\nhost = \"127.0.0.1\"\nfrom = \"herald@example.com\"\n";
    let refused = app
        .reloader
        .apply(settings(&app, needs_restart))
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("[smtp]") && refused.to_string().contains("restart"),
        "{refused}"
    );
    assert_eq!(
        schedule_names(&app).await,
        ["sales-hourly"],
        "the running configuration is kept"
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hangup(server: &Server) {
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

async fn start_batch(port: u16, event_id: &str) {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let mut channel = None;
    for _ in 0..250 {
        if let Ok(c) = endpoint.connect().await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = IngestServiceClient::new(channel.expect("herald listens"));
    client
        .batch_started(pb::BatchStartedRequest {
            meta: Some(pb::EventMeta {
                event_id: event_id.into(),
                occurred_at: Some(herald::api::timestamp_to_proto(chrono::Utc::now())),
                source: "engine".into(),
            }),
            batch: Some(batch_ref(event_id, "prod", "sales")),
            build_kind: pb::BuildKind::Full as i32,
            aggregate_count: 1,
        })
        .await
        .unwrap();
}

async fn listed(port: u16) -> Vec<String> {
    let server = format!("127.0.0.1:{port}");
    let out = herald_cli(["subs", "list", "-o", "json", "--server", &server]).await;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

/// The real binary: a webhook added to its file receives events after
/// SIGHUP; a broken file sent with another SIGHUP is refused (logged), and
/// the webhooks keep receiving.
#[tokio::test]
async fn sighup_reloads_the_file_into_a_running_herald_and_a_bad_file_keeps_the_old() {
    if on_postgres() {
        return; // the binary runs on its own SQLite file either way
    }
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let head = "[server]\nhttp_listen = \"off\"\n[egress]\nallow = [\"127.0.0.0/8\"]\n[delivery]\npoll_interval = \"50ms\"\n";
    let file = dir.path().join("herald.toml");
    let one = webhook("first", &first.url(), "events = [\"*\"]");
    std::fs::write(&file, format!("{head}{one}")).unwrap();
    let port = dead_address().await.port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--config", "herald.toml"])
            .args(["--grpc-listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .env("HERALD_LOG", "info")
            .spawn()
            .expect("herald starts"),
    );
    start_batch(port, "ev-1").await;
    assert!(eventually(Duration::from_secs(10), || first.received().len() == 1).await);

    let two = webhook("second", &second.url(), "events = [\"*\"]");
    std::fs::write(&file, format!("{head}{one}{two}")).unwrap();
    hangup(&server);
    let mut names = Vec::new();
    for _ in 0..100 {
        names = listed(port).await;
        if names.iter().any(|n| n == "second") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(names, ["first", "second"]);
    start_batch(port, "ev-2").await;
    assert!(
        eventually(Duration::from_secs(10), || second.received().len() == 1).await,
        "the new webhook receives events"
    );
    assert_eq!(second.received()[0].json()["id"], "ev-2");

    std::fs::write(
        &file,
        format!("{head}{one}{two}[[webhooks]]\nname = \"broken\"\n"),
    )
    .unwrap();
    hangup(&server);
    let log = dir.path().join("log");
    let refused = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("configuration reload refused")
    };
    assert!(eventually(Duration::from_secs(10), refused).await);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("missing field `url`"),
        "the refusal says why: {text}"
    );
    assert_eq!(
        listed(port).await,
        ["first", "second"],
        "the old config is kept"
    );
    start_batch(port, "ev-3").await;
    assert!(eventually(Duration::from_secs(10), || second.received().len() == 2).await);
}
