//! TLS and mutual TLS on the gRPC port, with certificates made here.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::helpers::{Spawn, TestApp};

/// A CA and what it signs, as PEM.
struct Pki {
    ca_cert: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca_cert: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// (certificate, key) for these names, signed by the CA.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.display().to_string()
}

/// Starts Herald with TLS (and mTLS when `client_ca` is set); the test
/// app's own clients use `client`.
async fn app(pki: &Pki, dir: &Path, client_ca: bool, client: ClientTlsConfig) -> TestApp {
    let (cert, key) = pki.issue(&["localhost"]);
    let mut tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        write(dir, "server.pem", &cert),
        write(dir, "server-key.pem", &key)
    );
    if client_ca {
        tls.push_str(&format!(
            "client_ca = \"{}\"\n",
            write(dir, "ca.pem", &pki.ca_cert)
        ));
    }
    Spawn {
        webhooks: tls,
        client_tls: Some(client),
        ..Spawn::default()
    }
    .start()
    .await
}

async fn health_over(app: &TestApp, tls: Option<ClientTlsConfig>) -> bool {
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://localhost:{}", app.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{}", app.addr)).unwrap(),
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

#[tokio::test]
async fn tls_connections_succeed_with_the_ca_and_fail_without() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost");
    let app = app(&pki, dir.path(), false, trusting.clone()).await;
    assert!(health_over(&app, Some(trusting)).await);
    assert!(!health_over(&app, None).await, "plaintext is refused");
    let other = Pki::new();
    let stranger = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&other.ca_cert))
        .domain_name("localhost");
    assert!(
        !health_over(&app, Some(stranger)).await,
        "a server certificate from an unknown CA is refused"
    );
    app.start_batch("ev-1", "b-1", "sales").await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["engine-1"]);
    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost")
        .identity(Identity::from_pem(&cert, &key));
    let app = app(&pki, dir.path(), true, trusted.clone()).await;
    assert!(health_over(&app, Some(trusted)).await);

    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost");
    assert!(
        !health_over(&app, Some(anonymous)).await,
        "no client certificate"
    );
    let other = Pki::new();
    let (foreign_cert, foreign_key) = other.issue(&["intruder"]);
    let foreign = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost")
        .identity(Identity::from_pem(&foreign_cert, &foreign_key));
    assert!(
        !health_over(&app, Some(foreign)).await,
        "a client certificate from another CA"
    );

    // The CLI presents its certificate too.
    let files = [
        write(dir.path(), "client.pem", &cert),
        write(dir.path(), "client-key.pem", &key),
        write(dir.path(), "ca-for-cli.pem", &pki.ca_cert),
    ];
    let server = format!("https://localhost:{}", app.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "emit",
                "batch-started",
                "--server",
                &server,
                "--batch-id",
                "b-9",
                "--environment-id",
                "prod",
                "--cube-id",
                "sales",
            ])
            .args([
                "--occurred-at",
                "2026-03-01T12:00:00Z",
                "--client-cert",
                &files[0],
                "--client-key",
                &files[1],
                "--ca-cert",
                &files[2],
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn unreadable_certificate_files_name_the_key() {
    let config = "[server.tls]\ncert = \"/nonexistent/server.pem\"\nkey = \"/nonexistent/key.pem\"";
    let err =
        herald::config::Settings::from_toml(config, &Default::default(), &|_| None).unwrap_err();
    assert!(err.to_string().contains("server.tls.cert"), "{err}");
}

/// Herald requiring client certificates from `pki`; the test app's own
/// clients present one.
async fn mtls_app(pki: &Pki, dir: &Path) -> TestApp {
    let (cert, key) = pki.issue(&["engine-1"]);
    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert))
        .domain_name("localhost")
        .identity(Identity::from_pem(&cert, &key));
    app(pki, dir, true, trusted).await
}

/// Each way a TLS connection goes wrong gets its cause and what to try.
#[tokio::test]
async fn cli_errors_say_why_a_tls_connection_failed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let app = mtls_app(&pki, dir.path()).await;
    let ca = write(dir.path(), "ca-for-cli.pem", &pki.ca_cert);
    let port = app.addr.port();
    // When the server closes a refused connection before the client reads
    // why, the hint names both likely causes; each case accepts that too.
    let cases = [
        (
            vec![format!("http://localhost:{port}")],
            "use https:// and --ca-cert",
        ),
        (
            vec![format!("https://localhost:{port}")],
            "UnknownIssuer — the server's certificate is not trusted: pass its CA with --ca-cert",
        ),
        (
            vec![format!("https://localhost:{port}"), "--ca-cert".into(), ca],
            "the server requires a client certificate: --client-cert and --client-key",
        ),
    ];
    for (args, hint) in cases {
        let out = crate::helpers::herald_cli(
            ["batches".to_owned(), "list".into(), "--server".into()]
                .into_iter()
                .chain(args),
        )
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        let closed = err.contains("the server closed the connection")
            && err.contains(hint.split(": ").last().unwrap());
        assert!(err.trim_end().ends_with(hint) || closed, "{err}");
    }
}

#[test]
fn a_key_that_does_not_fit_its_certificate_is_refused_at_load() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = pki.issue(&["localhost"]);
    let (_, other_key) = pki.issue(&["localhost"]);
    let config = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        write(dir.path(), "server.pem", &cert),
        write(dir.path(), "other-key.pem", &other_key)
    );
    let err = herald::config::Settings::from_toml(&config, &Default::default(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config key `server.tls.key`: does not fit the certificate"),
        "{err}"
    );
}
