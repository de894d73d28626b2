//! The console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, found on PATH and started by each test on a free
//! loopback port) against a real Herald with real events.
//!
//! Without chromedriver a developer's run prints one line and passes; on
//! CI (`CI` set) that is a failure. With `HERALD_SCREENSHOTS=1` the tests
//! also write the README's screenshots under `docs/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::console::TOKENS;
use crate::helpers::{app_with_receiver, batch_ref, webhook, Receiver, Reply, Spawn, TestApp};

/// A chromedriver this test started; killed when dropped. It and the
/// Chromium it starts keep their temporary files (profiles, scoped
/// directories) in `scratch`, removed after the kill, so runs leave nothing
/// in the machine's temporary directory.
struct Driver {
    child: Child,
    port: u16,
    scratch: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Starts chromedriver, or says why not (`None`: skip, outside CI).
async fn driver() -> Option<Driver> {
    let Some(binary) = on_path("chromedriver") else {
        if std::env::var_os("CI").is_some() {
            panic!("chromedriver is not on PATH, and CI never skips the browser tests");
        }
        println!("chromedriver is not on PATH: skipping the browser tests (CI never skips them)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = tempfile::tempdir().expect("a temporary directory for Chromium");
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        port,
        scratch,
    };
    let status = format!("http://127.0.0.1:{port}/status");
    for _ in 0..300 {
        if reqwest::get(&status)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on port {port} within 30 s");
}

async fn browser(driver: &Driver) -> Client {
    let profile = driver.scratch.path().join("profile");
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,860", "--force-prefers-reduced-motion",
                 format!("--user-data-dir={}", profile.display())]
    });
    if let Some(chromium) = on_path("chromium") {
        options["binary"] = json!(chromium);
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    // chromedriver is on loopback: plain HTTP, no TLS stack to pick.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Waits (bounded: CI runs the whole suite on two cores beside Chromium)
/// until `css` matches an element.
async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` within 30 s: {e}"))
}

async fn text(client: &Client, css: &str) -> String {
    wait_for(client, css).await.text().await.unwrap()
}

async fn screenshot(client: &Client, name: &str) {
    if std::env::var_os("HERALD_SCREENSHOTS").is_none() {
        return;
    }
    let png = client.screenshot().await.unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap();
}

/// A failed cube with dead deliveries, a running one, an XSS name, and a
/// night's worth of successful batches of another.
async fn night_of_refreshes(app: &TestApp, receiver: &Receiver) {
    receiver.always(Reply::Status(503));
    for i in 0..6u64 {
        let (start, done, batch) = (
            format!("ev-h{i}s"),
            format!("ev-h{i}d"),
            format!("b-hr-{i}"),
        );
        app.start_batch(&start, &batch, "hr").await;
        app.advance(Duration::from_secs(600 + 120 * i));
        app.succeed_batch(&done, &batch, "hr").await;
        app.advance(Duration::from_secs(3600));
    }
    app.start_batch("ev-s1", "b-stock", "stock").await;
    app.advance(Duration::from_secs(900));
    app.fail_batch("ev-s2", "b-stock", "stock").await;
    let mut xss = app.failed("ev-x", "b-x", "xss");
    let mut scope = batch_ref("b-x", "prod", "xss");
    scope.cube_name = "<script>alert(1)</script>".into();
    xss.batch = Some(scope);
    app.ingest.clone().batch_failed(xss).await.unwrap();
    for _ in 0..5 {
        app.deliver().await;
        app.advance(Duration::from_secs(3600));
    }
    app.start_batch("ev-r1", "b-sales", "sales").await;
}

#[tokio::test]
async fn an_admin_sees_what_broke_follows_it_live_and_fixes_a_dead_delivery() {
    let Some(driver) = driver().await else { return };
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    night_of_refreshes(&app, &receiver).await;
    let client = browser(&driver).await;
    let base = format!("http://{}", app.http);
    client.goto(&format!("{base}/")).await.unwrap();

    // The failed cube is red, the running one shows its progress.
    let failed = wait_for(&client, "tr[data-cube=stock] .badge").await;
    assert_eq!(failed.text().await.unwrap(), "failed");
    let colour = client
        .execute(
            "return getComputedStyle(arguments[0]).backgroundColor",
            vec![serde_json::to_value(&failed).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(colour, "rgb(198, 40, 40)");
    assert_eq!(text(&client, "tr[data-cube=sales] .progress").await, "0/3");
    // The XSS cube's name is text, not a script.
    assert_eq!(
        text(&client, "tr[data-cube=xss] td:nth-child(2) a").await,
        "<script>alert(1)</script>"
    );
    screenshot(&client, "console-overview.png").await;

    // A new event changes the page without a reload.
    client
        .execute("window.heraldMark = 7", vec![])
        .await
        .unwrap();
    wait_for(&client, "#live:not([hidden])").await;
    app.succeed_batch("ev-r2", "b-sales", "sales").await;
    wait_for(&client, "tr.cube.succeeded[data-cube=sales]").await;
    let mark = client
        .execute("return window.heraldMark", vec![])
        .await
        .unwrap();
    assert_eq!(mark, 7, "the page was updated in place, not reloaded");

    // Cube → batch → delivery shows the attempt.
    wait_for(&client, "tr[data-cube=hr] td:nth-child(2) a")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&client, "svg.timeline rect.bar.succeeded").await;
    wait_for(&client, "svg.timeline line.allowance").await;
    screenshot(&client, "console-cube.png").await;
    client
        .goto(&format!("{base}/cubes/prod/stock"))
        .await
        .unwrap();
    wait_for(&client, "a[href='/batches/b-stock']")
        .await
        .click()
        .await
        .unwrap();
    // The batch's last event is its failure.
    wait_for(&client, "section.delivery:last-of-type h3 a")
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(text(&client, "#delivery-state").await, "dead");
    assert!(text(&client, "#attempts").await.contains("503"));

    // One click (and a confirmation) redelivers it; the receiver gets it.
    receiver.always(Reply::Status(204));
    let failures_before = receiver
        .types()
        .iter()
        .filter(|t| *t == "aggregate.batch.failed")
        .count();
    wait_for(&client, "#redeliver").await.click().await.unwrap();
    client.accept_alert().await.unwrap();
    wait_for(&client, "#delivery-state.pending").await;
    app.deliver().await;
    let failures_after = receiver
        .types()
        .iter()
        .filter(|t| *t == "aggregate.batch.failed")
        .count();
    assert_eq!(failures_after, failures_before + 1);
    client.refresh().await.unwrap();
    assert_eq!(text(&client, "#delivery-state").await, "delivered");
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_reader_sees_no_actions_cannot_forge_one_and_signs_out() {
    let Some(driver) = driver().await else { return };
    let receiver = Receiver::start().await;
    let app = Spawn {
        webhooks: format!(
            "{TOKENS}\n{}",
            webhook("etl", &receiver.url(), "events = [\"aggregate.batch.*\"]")
        ),
        ..Spawn::default()
    }
    .start()
    .await;
    let client = browser(&driver).await;
    let base = format!("http://{}", app.http);
    client.goto(&format!("{base}/subscriptions")).await.unwrap();
    wait_for(&client, "#token")
        .await
        .send_keys("reader-token-0123456789")
        .await
        .unwrap();
    wait_for(&client, "#signin").await.click().await.unwrap();
    assert!(text(&client, "form.who span")
        .await
        .contains("airflow · reader"));
    client.goto(&format!("{base}/subscriptions")).await.unwrap();
    wait_for(&client, "#subscriptions").await;
    let buttons = client.find_all(Locator::Css("main button")).await.unwrap();
    assert!(buttons.is_empty(), "a reader sees no action buttons");
    let forged = client
        .execute(
            "const csrf = document.querySelector('input[name=csrf]').value;
             return fetch('/actions/test-event', {method: 'POST',
               headers: {'content-type': 'application/x-www-form-urlencoded'},
               body: 'csrf=' + csrf + '&subscription=etl'}).then(r => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forged, 403);
    assert_eq!(app.count_rows("deliveries").await, 0);
    wait_for(&client, "#signout").await.click().await.unwrap();
    wait_for(&client, "#token").await;
    client.goto(&format!("{base}/")).await.unwrap();
    wait_for(&client, "#token").await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/signin"),
        "signed out"
    );
    client.close().await.unwrap();
}
