//! The egress policy: where webhooks may not go.

use herald::app::{Application, BuildOptions, StartError};
use herald::config::{ConfigError, Overrides, Settings};
use herald::store::DeliveryState;

use crate::helpers::{capture_logs, webhook, Receiver, Spawn};

fn load(url: &str, egress: &str) -> Result<Settings, String> {
    let config = format!("{egress}\n{}", webhook("etl", url, "events = [\"*\"]"));
    Settings::from_toml(&config, &Overrides::default(), &|_| None).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_subscription_to_the_metadata_address_is_refused_with_the_rule_named() {
    let err = load("http://169.254.169.254/latest/meta-data", "").unwrap_err();
    assert!(
        err.starts_with("config key `webhooks[0].url`: blocked by the egress policy"),
        "{err}"
    );
    assert!(
        err.contains("169.254.169.254 is in 169.254.0.0/16 (link-local, cloud metadata)"),
        "{err}"
    );
    let v6 = load("http://[fd00:ec2::254]/", "").unwrap_err();
    assert!(v6.contains("cloud metadata"), "{v6}");
    assert!(
        load("http://10.20.30.40:8080/hook", "").is_ok(),
        "private ranges are allowed"
    );
}

/// The key names the section the file has, and the entry's place in it.
#[tokio::test]
async fn egress_refusals_name_the_key_as_the_file_writes_it() {
    let config = format!(
        "{}[[healthchecks]]\nname = \"hc\"\nurl = \"http://169.254.169.254/ping\"\n",
        webhook("etl", "http://10.0.0.1/hook", "events = [\"*\"]"),
    );
    let refused = Settings::from_toml(&config, &Overrides::default(), &|_| None).unwrap_err();
    let ConfigError::Invalid { key, reason } = refused else {
        panic!("expected an invalid key, got {refused}");
    };
    assert_eq!(key, "healthchecks[0].url");
    assert!(
        reason.starts_with("blocked by the egress policy"),
        "{reason}"
    );
}

#[tokio::test]
async fn loopback_needs_an_allow_rule() {
    let err = load("http://127.0.0.1:9/hook", "").unwrap_err();
    assert!(err.contains("loopback"), "{err}");
    assert!(load(
        "http://127.0.0.1:9/hook",
        "[egress]\nallow = [\"127.0.0.1\"]"
    )
    .is_ok());
    let denied = load(
        "http://10.99.0.5/hook",
        "[egress]\ndeny = [\"10.99.0.0/16\"]",
    )
    .unwrap_err();
    assert!(denied.contains("10.99.0.0/16 (egress.deny)"), "{denied}");
}

#[tokio::test]
async fn a_name_that_resolves_to_a_blocked_address_is_refused_at_start_and_on_every_attempt() {
    let receiver = Receiver::start().await;
    let by_name = receiver.url().replace("127.0.0.1", "localhost");
    // At start: `localhost` resolves to loopback only. Refused before
    // anything binds.
    let config = format!(
        "[store]\nurl = \"sqlite::memory:\"\n{}",
        webhook("etl", &by_name, "events = [\"*\"]")
    );
    let settings = Settings::from_toml(&config, &Overrides::default(), &|_| None).unwrap();
    let refused = Application::build_with(settings, BuildOptions::default()).await;
    let Err(StartError::Egress { key, reason }) = refused else {
        panic!("expected the egress refusal");
    };
    assert_eq!(key, "webhooks[0].url");
    assert!(
        reason.starts_with("localhost: blocked by the egress policy")
            && reason.contains("loopback"),
        "{reason}"
    );

    // On every attempt: a host only known when sending (here from a URL
    // template, the cube id `localhost`) is resolved and checked then. The
    // attempt and the log say the policy stopped it, not the receiver.
    let (logs, _guard) = capture_logs();
    let templated = format!(
        "http://{{{{ data.cube_id }}}}:{}/hook",
        receiver.addr.port()
    );
    let hook = webhook("etl", &templated, "events = [\"aggregate.batch.*\"]");
    let app = Spawn {
        webhooks: hook,
        egress: Some(String::new()),
        ..Spawn::default()
    }
    .start()
    .await;
    app.start_batch("ev-1", "b-1", "localhost").await;
    app.deliver().await;
    let rows = app.deliveries_of("ev-1").await;
    let attempts = app.store.list_attempts(&rows[0].id).await.unwrap();
    let error = attempts[0].error.clone().unwrap_or_default();
    assert_eq!(rows[0].state, DeliveryState::Failed, "not retried: {error}");
    assert!(
        error.starts_with("blocked by the egress policy: 127.0.0.1 is in 127.0.0.0/8"),
        "{error}"
    );
    assert!(receiver.received().is_empty());
    let logs = logs.text();
    assert!(
        logs.contains("delivery blocked by the egress policy; not retried"),
        "{logs}"
    );
    assert!(!logs.contains("refused by receiver"), "{logs}");
}
