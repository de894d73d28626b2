//! How client commands reach Herald: the `--server` address (with or
//! without a scheme), TLS from the files given, the bearer token, and
//! errors that say why a connection failed and what to try.

use std::error::Error;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Where client commands find the server, and how they prove who they are.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Herald's gRPC address: http://HOST:PORT, https://HOST:PORT, or
    /// HOST:PORT (plaintext on loopback, TLS elsewhere).
    #[arg(long, env = "HERALD_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// server with.
    #[arg(long, env = "HERALD_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for servers that require one (mTLS).
    #[arg(long, env = "HERALD_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "HERALD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
}

impl ServerArg {
    /// The address as a URL. Without a scheme, a loopback host is spoken
    /// to in plaintext (like grpcurl's `-plaintext`) and any other host
    /// over TLS, so a token never crosses a network unencrypted by
    /// accident.
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            return self.server.clone();
        }
        let scheme = if is_loopback(&self.server) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.server)
    }

    /// TLS settings for an https:// server, from the files given.
    fn tls(&self, url: &str) -> anyhow::Result<Option<ClientTlsConfig>> {
        use tonic::transport::{Certificate, Identity};
        if !url.starts_with("https://") {
            return Ok(None);
        }
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
        };
        let mut config = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &self.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            config = config.identity(Identity::from_pem(
                read("--client-cert", cert)?,
                read("--client-key", key)?,
            ));
        }
        Ok(Some(config))
    }
}

/// Whether `host:port` (or `[v6]:port`) names this machine.
fn is_loopback(address: &str) -> bool {
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host,
        None => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Adds `authorization: Bearer <token>` to every call, when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to Herald that authenticates each call.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

pub(crate) async fn connect(arg: &ServerArg) -> anyhow::Result<Authed> {
    let bearer = match &arg.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| anyhow::anyhow!("--token: not a valid header value"))?,
        ),
        None => None,
    };
    let url = arg.url();
    let channel = open_channel(&url, arg.tls(&url)?).await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer(bearer),
    ))
}

async fn open_channel(url: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| {
        anyhow::anyhow!("--server `{url}` is not an address like {DEFAULT_SERVER}: {e}")
    })?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await.map_err(|e| {
        let causes = cause_chain(&e);
        let hint = hint(url, &causes)
            .map(|h| format!(" — {h}"))
            .unwrap_or_default();
        anyhow::anyhow!("cannot reach Herald at {url}: {causes}{hint}")
    })
}

/// An error and its causes on one line, `outer: inner: root`, leaving out
/// a cause whose text its parent already shows.
pub(crate) fn cause_chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// What to try, judged from the words of a failed connection or call.
fn hint(url: &str, causes: &str) -> Option<String> {
    let text = causes.to_ascii_lowercase();
    let tls = url.starts_with("https://");
    let address = url.split_once("://").map_or(url, |(_, rest)| rest);
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["connection refused"]) {
        Some(format!("is herald serve running on {address}?"))
    } else if has(&["failed to lookup", "name or service not known", "dns error"]) {
        Some("check the host name in --server".into())
    } else if tls
        && has(&[
            "invalidcontenttype",
            "corrupt message",
            "wrong version number",
        ])
    {
        Some("the server speaks plaintext: use http://".into())
    } else if tls && has(&["unknownissuer", "invalid peer certificate", "certificate"]) {
        Some("the server's certificate is not trusted: pass its CA with --ca-cert".into())
    } else if !tls
        && has(&[
            "h2 protocol error",
            "frame",
            "connection reset",
            "broken pipe",
        ])
    {
        Some("the server speaks TLS: use https:// and --ca-cert".into())
    } else if tls && has(&["transport error", "reset", "handshake", "alert"]) {
        Some("the server may require a client certificate: --client-cert and --client-key".into())
    } else if has(&["timed out", "deadline"]) {
        Some(format!(
            "no answer from {address}: a firewall, or the wrong port?"
        ))
    } else {
        None
    }
}

/// Turns a gRPC status into a one-line error: `InvalidArgument: batch.batch_id: ...`.
/// A status the transport made up (no server answered it) keeps its cause
/// and gets the same hints as a failed connection.
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    let mut line = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = status.source() {
        let causes = cause_chain(source);
        if causes.starts_with(status.message()) {
            line = format!("{:?}: {causes}", status.code());
        } else if !line.contains(&causes) {
            line = format!("{line}: {causes}");
        }
    }
    let transport = matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
    ) && (status.source().is_some() || status.message().contains("protocol error"));
    match transport.then(|| hint_for_status(&line)).flatten() {
        Some(hint) => anyhow::anyhow!("{line} — {hint}"),
        None => anyhow::anyhow!("{line}"),
    }
}

/// Hints for a call that failed in the transport. The address is not known
/// here, so the hints speak of the scheme only.
fn hint_for_status(line: &str) -> Option<String> {
    let text = line.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["certificaterequired", "certificate required"]) {
        Some("the server requires a client certificate: --client-cert and --client-key".into())
    } else if has(&["h2 protocol error", "frame"]) {
        Some("if the server speaks TLS: use https:// and --ca-cert".into())
    } else if has(&["certificate", "alert"]) {
        Some("the server refused the TLS session: check --client-cert and --client-key".into())
    } else if has(&[
        "connection closed",
        "canceled",
        "broken pipe",
        "connection reset",
    ]) {
        // Which it was depends on who closed first; name both.
        Some(
            "the server closed the connection: if it speaks TLS, use https:// and --ca-cert; \
             if it requires a client certificate, --client-cert and --client-key"
                .into(),
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(server: &str) -> ServerArg {
        ServerArg {
            server: server.into(),
            token: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
        }
    }

    #[test]
    fn an_address_without_scheme_is_plaintext_on_loopback_and_tls_elsewhere() {
        assert_eq!(arg("127.0.0.1:50051").url(), "http://127.0.0.1:50051");
        assert_eq!(arg("localhost:50051").url(), "http://localhost:50051");
        assert_eq!(arg("[::1]:50051").url(), "http://[::1]:50051");
        assert_eq!(
            arg("herald.internal:443").url(),
            "https://herald.internal:443"
        );
        assert_eq!(arg("https://127.0.0.1:1").url(), "https://127.0.0.1:1");
    }

    #[test]
    fn a_cause_already_in_its_parent_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let outer = anyhow::Error::new(io).context(format!(
            "cannot listen on 127.0.0.1:1: {}",
            std::io::Error::from(std::io::ErrorKind::AddrInUse)
        ));
        let line = cause_chain(outer.as_ref());
        assert_eq!(line.matches("in use").count(), 1, "{line}");
    }
}
