//! The admin console over plain HTTP: pages, escaping, security headers,
//! sign-in sessions, roles and CSRF, actions, live updates and badges.
//! (The same flows in a real browser are in `browser.rs`.)

use std::time::Duration;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use crate::helpers::{
    app_with_receiver, batch_ref, herald_cli, webhook, Receiver, Reply, Spawn, TestApp,
};

pub const TOKENS: &str = r#"
[[tokens]]
name = "ops"
role = "admin"
token = "admin-token-0123456789ab"
[[tokens]]
name = "airflow"
role = "reader"
token = "reader-token-0123456789"
[[tokens]]
name = "engine-prod"
role = "engine"
token = "engine-token-0123456789"
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("http://{}{path}", app.http));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn page(app: &TestApp, path: &str, cookie: Option<&str>) -> String {
    let response = get(app, path, cookie).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.text().await.unwrap()
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(format!("http://{}{path}", app.http))
        .form(form);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

/// Opens the sign-in form: the `name=value` of its login CSRF cookie and
/// the token its hidden field carries.
async fn signin_form(app: &TestApp) -> (String, String) {
    let response = get(app, "/signin", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/signin", "Max-Age="] {
        assert!(set.contains(attribute), "{attribute} missing in {set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = csrf_of(&response.text().await.unwrap());
    assert_eq!(cookie.split_once('=').unwrap().1, csrf);
    (cookie, csrf)
}

/// Posts the sign-in form as a browser would: opened first, then sent
/// with its CSRF cookie and field.
async fn submit_signin(app: &TestApp, token: &str) -> reqwest::Response {
    let (cookie, csrf) = signin_form(app).await;
    post(
        app,
        "/signin",
        Some(&cookie),
        &[("csrf", &csrf), ("token", token)],
    )
    .await
}

/// Signs in with `token`; returns the `name=value` of the session cookie.
pub async fn sign_in(app: &TestApp, token: &str) -> String {
    let response = submit_signin(app, token).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} missing in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP without a TLS proxy: {set}"
    );
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

fn assert_protected(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

/// A failed, a running and a succeeded cube.
async fn three_cubes(app: &TestApp) {
    app.start_batch("ev-1", "b-sales", "sales").await;
    app.fail_batch("ev-2", "b-stock", "stock").await;
    app.start_batch("ev-3", "b-hr-1", "hr").await;
    app.succeed_batch("ev-4", "b-hr-1", "hr").await;
}

#[tokio::test]
async fn the_overview_shows_each_cube_by_state_with_counts_and_strict_headers() {
    let (app, _receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    three_cubes(&app).await;
    let response = get(&app, "/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_protected(response.headers());
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<tr class=\"cube failed\" data-cube=\"stock\">"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"cube running\" data-cube=\"sales\">"),
        "{html}"
    );
    assert!(
        html.contains("<tr class=\"cube succeeded\" data-cube=\"hr\">"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"progress\">0/3</span>"),
        "{html}"
    );
    assert!(html.contains("<b id=\"count-failed\">1</b>"), "{html}");
    assert!(html.contains("<b id=\"count-running\">1</b>"), "{html}");
    assert!(
        html.contains("out of disk"),
        "the failure's message is shown"
    );
    let failed_only = page(&app, "/?state=failed", None).await;
    assert!(failed_only.contains("data-cube=\"stock\""));
    assert!(!failed_only.contains("data-cube=\"sales\""));
    let by_name = page(&app, "/?q=HR", None).await;
    assert!(by_name.contains("data-cube=\"hr\"") && !by_name.contains("data-cube=\"stock\""));
    let css = get(&app, "/static/console.css", None).await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css
        .text()
        .await
        .unwrap()
        .contains("prefers-color-scheme: dark"));
}

#[tokio::test]
async fn a_script_in_a_cube_name_or_error_renders_as_text() {
    let app = Spawn::default().start().await;
    let xss = "<script>alert(1)</script>";
    let mut batch = batch_ref("b-x", "prod", "xss");
    batch.cube_name = xss.to_owned();
    let mut failed = app.failed("ev-x", "b-x", "xss");
    failed.batch = Some(batch);
    failed.error_message = format!("boom {xss}");
    app.ingest.clone().batch_failed(failed).await.unwrap();
    for path in [
        "/",
        "/cubes/prod/xss",
        "/batches/b-x",
        "/badge/prod/xss.svg",
    ] {
        let body = page(&app, path, None).await;
        assert!(!body.contains(xss), "{path} shows the script unescaped");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn cube_batch_and_delivery_pages_show_the_timeline_and_every_attempt() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    receiver.script([Reply::Status(500)]);
    app.start_batch("ev-1", "b-1", "sales").await;
    app.succeed_batch("ev-2", "b-1", "sales").await;
    app.fail_batch("ev-3", "b-2", "sales").await;
    app.deliver().await;
    let cube = page(&app, "/cubes/prod/sales", None).await;
    assert!(cube.contains("<svg"), "a timeline is drawn");
    assert!(
        cube.contains("class=\"bar failed\"") && cube.contains("class=\"bar succeeded\""),
        "{cube}"
    );
    assert!(
        cube.contains("by_region") && cube.contains("write failed"),
        "the last failure's aggregates"
    );
    assert!(cube.contains("href=\"/batches/b-1\""));
    let batch = page(&app, "/batches/b-1", None).await;
    let started = batch.find("aggregate.batch.started").unwrap();
    let succeeded = batch.find("aggregate.batch.succeeded").unwrap();
    assert!(started < succeeded, "events in order");
    assert!(
        batch.contains("<td>500</td>"),
        "the failed attempt's status: {batch}"
    );
    let delivery = app.deliveries_of("ev-1").await.remove(0);
    let detail = page(&app, &format!("/deliveries/{}", delivery.id), None).await;
    assert!(
        detail.contains("id=\"redeliver\""),
        "the open console acts as admin"
    );
    assert!(detail.contains("<td>retry</td>"), "{detail}");
    let log = page(&app, "/deliveries?subscription=etl&state=delivered", None).await;
    assert!(log.contains("aggregate.batch.succeeded"), "{log}");
    assert!(!log.contains("class=\"badge pending\""), "{log}");
    assert_eq!(
        get(&app, "/batches/nope", None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/deliveries?since=yesterday", None)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn with_tokens_a_reader_reads_an_admin_acts_and_signing_out_ends_the_session() {
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
    let response = get(&app, "/", None).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/signin");
    let wrong = submit_signin(&app, "guess").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let engine = submit_signin(&app, "engine-token-0123456789").await;
    assert_eq!(engine.status(), StatusCode::FORBIDDEN);

    let reader = sign_in(&app, "reader-token-0123456789").await;
    assert_eq!(app.count_rows("console_sessions").await, 1);
    let session = reader.split_once('=').unwrap().1;
    assert_eq!(session.len(), 64, "a 256-bit random session token");
    let overview = page(&app, "/", Some(&reader)).await;
    assert!(overview.contains("airflow · reader"), "{overview}");
    let subs = page(&app, "/subscriptions", Some(&reader)).await;
    assert!(
        subs.contains(">etl<") && !subs.contains("Send test event"),
        "{subs}"
    );
    let csrf = csrf_of(&overview);
    let forged = post(
        &app,
        "/actions/test-event",
        Some(&reader),
        &[("csrf", &csrf), ("subscription", "etl")],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count_rows("deliveries").await, 0, "nothing was sent");

    let admin = sign_in(&app, "admin-token-0123456789ab").await;
    let subs = page(&app, "/subscriptions", Some(&admin)).await;
    assert!(subs.contains("Send test event"), "{subs}");
    let no_csrf = post(
        &app,
        "/actions/test-event",
        Some(&admin),
        &[("subscription", "etl")],
    )
    .await;
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let other_csrf = post(
        &app,
        "/actions/test-event",
        Some(&admin),
        &[("csrf", &csrf), ("subscription", "etl")],
    )
    .await;
    assert_eq!(
        other_csrf.status(),
        StatusCode::FORBIDDEN,
        "another session's CSRF token"
    );
    assert_eq!(app.count_rows("deliveries").await, 0);
    let sent = post(
        &app,
        "/actions/test-event",
        Some(&admin),
        &[("csrf", &csrf_of(&subs)), ("subscription", "etl")],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::OK);
    assert_eq!(app.count_rows("deliveries").await, 1);

    let out = post(&app, "/signout", Some(&reader), &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        get(&app, "/", Some(&reader)).await.status(),
        StatusCode::SEE_OTHER,
        "the session is gone"
    );
    assert!(
        page(&app, "/", Some(&admin)).await.contains("ops · admin"),
        "the other session goes on"
    );
    app.advance(Duration::from_secs(12 * 3600 + 1));
    assert_eq!(
        get(&app, "/", Some(&admin)).await.status(),
        StatusCode::SEE_OTHER,
        "sessions expire"
    );
}

/// The `digest` column of every stored session, read in the database.
async fn session_digests(app: &TestApp) -> Vec<String> {
    app.dir.texts("SELECT digest FROM console_sessions").await
}

#[tokio::test]
async fn sessions_keep_only_a_digest_of_their_token() {
    let app = Spawn {
        webhooks: TOKENS.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    let cookie = sign_in(&app, "admin-token-0123456789ab").await;
    let session = cookie.split_once('=').unwrap().1.to_owned();
    let digests = session_digests(&app).await;
    assert_eq!(digests.len(), 1);
    assert_ne!(digests[0], session, "the token itself is not stored");
    assert_eq!(digests[0].len(), 64);
}

#[tokio::test]
async fn an_admin_redelivers_retries_and_rotates_with_the_api_s_own_logic() {
    let (app, receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    receiver.always(Reply::Status(503));
    app.start_batch("ev-1", "b-1", "sales").await;
    app.start_batch("ev-2", "b-2", "sales").await;
    for _ in 0..5 {
        app.deliver().await;
        app.advance(Duration::from_secs(3600));
    }
    let overview = page(&app, "/", None).await;
    assert!(
        overview.contains("<b id=\"count-receivers\">1</b>"),
        "etl is in trouble: {overview}"
    );
    let csrf = csrf_of(&page(&app, "/subscriptions", None).await);
    receiver.always(Reply::Status(204));
    let dead = app.deliveries_of("ev-1").await.remove(0);
    let back = format!("/deliveries/{}", dead.id);
    let redelivered = post(
        &app,
        "/actions/redeliver",
        None,
        &[("csrf", &csrf), ("delivery_id", &dead.id), ("back", &back)],
    )
    .await;
    assert_eq!(redelivered.status(), StatusCode::SEE_OTHER);
    assert_eq!(redelivered.headers()[LOCATION], back.as_str());
    app.deliver().await;
    assert_eq!(
        app.deliveries_of("ev-1").await[0].state,
        herald::store::DeliveryState::Delivered
    );
    let retried = post(
        &app,
        "/actions/retry-dead",
        None,
        &[("csrf", &csrf), ("subscription", "etl")],
    )
    .await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert!(retried
        .text()
        .await
        .unwrap()
        .contains("1 dead deliveries of `etl` are due again"));
    let elsewhere = post(
        &app,
        "/actions/redeliver",
        None,
        &[
            ("csrf", &csrf),
            ("delivery_id", &dead.id),
            ("back", "//evil.example/"),
        ],
    )
    .await;
    assert_eq!(
        elsewhere.headers()[LOCATION],
        "/",
        "never a redirect to another site"
    );
    let tested = post(
        &app,
        "/actions/test-event",
        None,
        &[("csrf", &csrf), ("subscription", "etl")],
    )
    .await;
    assert_eq!(tested.status(), StatusCode::OK);
    let rotated = post(
        &app,
        "/actions/rotate-secret",
        None,
        &[("csrf", &csrf), ("subscription", "etl")],
    )
    .await;
    // `etl` comes from the configuration file: the API refuses, and so does the console.
    assert_eq!(rotated.status(), StatusCode::CONFLICT);
    assert!(rotated.text().await.unwrap().contains("configuration"));
    let unknown = post(
        &app,
        "/actions/redeliver",
        None,
        &[("csrf", &csrf), ("delivery_id", "nope")],
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_batch_change_reaches_the_event_stream_which_counts_as_a_watch_stream() {
    let app = Spawn {
        server: "max_watch_streams = 1".to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    let mut events = get(&app, "/events", None).await;
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let second = get(&app, "/events", None).await;
    assert_eq!(
        second.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "over max_watch_streams"
    );
    app.start_batch("ev-1", "b-1", "sales").await;
    let mut seen = String::new();
    while !seen.contains("event: change") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn badges_show_freshness_and_failure() {
    let app = Spawn::default().start().await;
    app.fail_batch("ev-1", "b-1", "stock").await;
    app.start_batch("ev-2", "b-2", "sales").await;
    app.succeed_batch("ev-3", "b-2", "sales").await;
    app.advance(Duration::from_secs(2 * 3600));
    let response = get(&app, "/badge/prod/sales.svg", None).await;
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    let svg = response.text().await.unwrap();
    assert!(
        svg.contains("SALES: fresh 2h") && svg.contains("#2e7d32"),
        "{svg}"
    );
    let svg = page(&app, "/badge/prod/stock.svg", None).await;
    assert!(
        svg.contains("STOCK: failed") && svg.contains("#c62828"),
        "{svg}"
    );
    assert!(page(&app, "/badge/prod/nothing.svg", None)
        .await
        .contains("unknown"));
}

#[tokio::test]
async fn with_tokens_badges_are_public_only_when_configured() {
    let closed = Spawn {
        webhooks: TOKENS.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    assert_eq!(
        get(&closed, "/badge/prod/sales.svg", None).await.status(),
        StatusCode::SEE_OTHER
    );
    let reader = sign_in(&closed, "reader-token-0123456789").await;
    assert!(page(&closed, "/badge/prod/sales.svg", Some(&reader))
        .await
        .contains("unknown"));
    let open = Spawn {
        webhooks: format!("{TOKENS}\n[console]\npublic_badges = true\n"),
        ..Spawn::default()
    }
    .start()
    .await;
    assert!(page(&open, "/badge/prod/sales.svg", None)
        .await
        .contains("sales: unknown"));
    assert_eq!(
        get(&open, "/", None).await.status(),
        StatusCode::SEE_OTHER,
        "only badges are public"
    );
}

#[tokio::test]
async fn the_overview_json_is_what_herald_status_reads() {
    let (app, _receiver) = app_with_receiver(r#"["aggregate.batch.*"]"#).await;
    three_cubes(&app).await;
    let json: serde_json::Value =
        serde_json::from_str(&page(&app, "/overview.json", None).await).unwrap();
    assert_eq!(json["counts"]["failed"], 1);
    let states: Vec<(&str, &str)> = json["cubes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["cube_id"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("hr", "succeeded"),
            ("sales", "running"),
            ("stock", "failed")
        ]
    );
}

#[tokio::test]
async fn a_scheduled_cube_without_a_success_turns_overdue() {
    let app = Spawn {
        webhooks: "[[schedules]]\nname = \"sales-daily\"\nenvironment = \"prod\"\ncube = \"sales\"\nevery = \"1h\"\ngrace = \"10m\"\n".to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    app.check().await;
    let waiting = page(&app, "/overview.json", None).await;
    assert!(waiting.contains("\"state\":\"waiting\""), "{waiting}");
    app.advance(Duration::from_secs(2 * 3600));
    let json: serde_json::Value =
        serde_json::from_str(&page(&app, "/overview.json", None).await).unwrap();
    assert_eq!(json["counts"]["overdue"], 1, "{json}");
    assert!(json["cubes"][0]["next_expected_at"].is_string());
}

#[tokio::test]
async fn herald_status_prints_the_overview_plain_when_piped_and_as_json() {
    let app = Spawn {
        webhooks: TOKENS.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    let console = format!("http://{}", app.http);
    let refused = herald_cli(["status", "--console", &console]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token"));
    let table = herald_cli([
        "status",
        "--console",
        &console,
        "--token",
        "reader-token-0123456789",
    ])
    .await;
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.starts_with("0 failing · 0 stalled · 0 overdue"),
        "{text}"
    );
    assert!(
        text.contains("ENVIRONMENT") && !text.contains('\x1b'),
        "plain when piped: {text}"
    );
    let json = herald_cli([
        "status",
        "--console",
        &console,
        "--token",
        "reader-token-0123456789",
        "-o",
        "json",
    ])
    .await;
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["counts"]["failed"], 0);
    assert!(document["cubes"].as_array().unwrap().is_empty());
}

/// Without tokens the console is open on loopback only: an operations
/// port on every address (allowed with `insecure`) serves metrics, but
/// refuses the console.
#[tokio::test]
async fn without_tokens_the_console_is_closed_beyond_loopback() {
    let dir = crate::helpers::TestDir::create().await;
    let toml = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"0.0.0.0:0\"\ninsecure = true\n\
         [store]\nurl = \"{}\"\n",
        dir.store_url()
    );
    let settings = herald::config::Settings::from_toml(
        &toml,
        &herald::config::Overrides::default(),
        &|_: &str| None,
    )
    .unwrap();
    let app = herald::app::Application::build(settings).await.unwrap();
    let port = app.http_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let running = tokio::spawn(app.run_until_stopped(async move { stopped.cancelled().await }));
    let base = format!("http://127.0.0.1:{port}");
    let console = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(console.status(), StatusCode::FORBIDDEN);
    assert!(console.text().await.unwrap().contains("loopback"));
    let metrics = client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn signing_in_without_the_forms_csrf_token_is_refused() {
    let app = Spawn {
        webhooks: TOKENS.to_owned(),
        ..Spawn::default()
    }
    .start()
    .await;
    let admin = "admin-token-0123456789ab";
    let (cookie, csrf) = signin_form(&app).await;
    let (_, other_csrf) = signin_form(&app).await;
    assert_ne!(csrf, other_csrf, "a fresh token per form");
    let forged = [
        (None, vec![("token", admin)]),
        (None, vec![("csrf", csrf.as_str()), ("token", admin)]),
        (Some(cookie.as_str()), vec![("token", admin)]),
        (
            Some(cookie.as_str()),
            vec![("csrf", other_csrf.as_str()), ("token", admin)],
        ),
    ];
    for (i, (cookie, form)) in forged.iter().enumerate() {
        let response = post(&app, "/signin", *cookie, form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "case {i}");
        assert!(
            response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("herald_session=")),
            "case {i}: no session"
        );
    }
    assert_eq!(app.count_rows("console_sessions").await, 0);
    let signed_in = post(
        &app,
        "/signin",
        Some(&cookie),
        &[("csrf", &csrf), ("token", admin)],
    )
    .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.count_rows("console_sessions").await, 1);
}

#[tokio::test]
async fn the_deliveries_page_filters_by_event_type_and_keeps_it_in_the_form() {
    let (app, _receiver) = app_with_receiver(r#"["*"]"#).await;
    three_cubes(&app).await;
    let failed = page(&app, "/deliveries?event_type=aggregate.batch.failed", None).await;
    assert!(failed.contains("<small>ev-2</small>"), "{failed}");
    for other in ["ev-1", "ev-3", "ev-4"] {
        assert!(
            !failed.contains(&format!("<small>{other}</small>")),
            "{failed}"
        );
    }
    let glob = page(&app, "/deliveries?event_type=aggregate.batch.s*", None).await;
    for id in ["ev-1", "ev-3", "ev-4"] {
        assert!(glob.contains(&format!("<small>{id}</small>")), "{glob}");
    }
    assert!(!glob.contains("<small>ev-2</small>"), "{glob}");
    assert!(
        glob.contains("name=\"event_type\"") && glob.contains("value=\"aggregate.batch.s*\""),
        "the filter stays in the form: {glob}"
    );
    assert_eq!(
        get(&app, "/deliveries?event_type=no.such.*", None)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}
