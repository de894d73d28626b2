//! Wiring: [`Application::build`] opens the store, binds the gRPC port and
//! assembles services and dispatcher; `main` and the tests both start Herald
//! through it, so the tests exercise the production path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use tonic::service::interceptor::InterceptedService;

use crate::api::pb::admin_service_server::AdminServiceServer;
use crate::api::pb::ingest_service_server::IngestServiceServer;
use crate::api::pb::query_service_server::QueryServiceServer;
use crate::api::pb::subscription_service_server::SubscriptionServiceServer;
use crate::api::{
    AdminApi, Auth, DocumentGate, IngestApi, QueryApi, ReaderMethods, Service, SubscriptionApi,
    SubscriptionParts,
};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::deliver::{Dispatcher, DispatcherParts, HttpSender, Mailer, Wakeups};
use crate::feed::ChangeFeed;
use crate::fleet::{Leadership, Listening};
use crate::ingest::{IngestError, IngestParts, Ingestor};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::ops;
use crate::registry::{ManagedContext, Registry};
use crate::reload::{Live, Reloader};
use crate::retention::Pruner;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Monitor(#[from] IngestError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] crate::deliver::ClientError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("smtp: {0}")]
    Smtp(String),
    #[error(
        "refusing to listen on {0} without authentication: add [[tokens]] to the \
         configuration, or pass --insecure (server.insecure = true) if the network is trusted"
    )]
    Insecure(SocketAddr),
    /// A subscription's host resolves only to blocked addresses; `key` is
    /// its URL's configuration key, e.g. `webhooks[0].url`.
    #[error("config key `{key}`: {reason}")]
    Egress { key: String, reason: String },
}

/// What start-up refuses before it touches the store or a port (also
/// `herald check-config`).
pub async fn check_settings(settings: &Settings) -> Result<(), StartError> {
    refuse_open_ports(&settings.server)?;
    check_target_names(settings).await
}

/// Refuses subscriptions whose host name resolves only to addresses the
/// egress policy blocks. A name that does not resolve now is only a
/// warning: DNS may be back before the first delivery, which is checked
/// again anyway.
async fn check_target_names(settings: &Settings) -> Result<(), StartError> {
    for sub in &settings.subscriptions {
        check_target_name(sub, &settings.egress)
            .await
            .map_err(|reason| StartError::Egress {
                key: format!("{}.url", sub.config_key),
                reason,
            })?;
    }
    Ok(())
}

/// Refuses a subscription whose host name resolves only to addresses the
/// egress policy blocks (an address literal was checked with the
/// configuration; a templated host is only known when sending).
pub async fn check_target_name(
    sub: &crate::core::subscription::Subscription,
    egress: &crate::core::egress::EgressPolicy,
) -> Result<(), String> {
    let Some(url) = sub.target_url() else {
        return Ok(());
    };
    let templated_host = url
        .split("://")
        .nth(1)
        .is_some_and(|rest| rest.starts_with("{{"));
    if crate::deliver::literal_host(url).is_some() || templated_host {
        return Ok(());
    }
    let Some(host) = url::Url::parse(url.split("{{").next().unwrap_or_default())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return Ok(());
    };
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), 0)),
    )
    .await;
    let Ok(Ok(addrs)) = lookup else {
        tracing::warn!(subscription = %sub.name, host, "cannot resolve the subscription's host now");
        return Ok(());
    };
    let verdicts: Vec<_> = addrs.map(|a| egress.check(a.ip())).collect();
    match verdicts.iter().find_map(|v| v.as_ref().err()) {
        Some(blocked) if verdicts.iter().all(Result::is_err) => Err(format!("{host}: {blocked}")),
        _ => Ok(()),
    }
}

/// Without tokens, nothing may listen beyond loopback (the gRPC port nor
/// the operations port with its metrics) unless the operator said the
/// network is trusted.
fn refuse_open_ports(server: &crate::config::ServerSettings) -> Result<(), StartError> {
    if !server.tokens.is_empty() || server.insecure {
        return Ok(());
    }
    let open = std::iter::once(server.grpc_listen)
        .chain(server.http_listen)
        .find(|addr| !addr.ip().is_loopback());
    match open {
        Some(addr) => Err(StartError::Insecure(addr)),
        None => Ok(()),
    }
}

/// Binds the gRPC port and, when enabled, the operations port.
async fn bind_ports(
    server: &crate::config::ServerSettings,
) -> Result<(TcpListener, SocketAddr, Option<TcpListener>), StartError> {
    let bind = |requested: SocketAddr| async move {
        TcpListener::bind(requested)
            .await
            .map_err(|source| StartError::Bind {
                addr: requested,
                source,
            })
    };
    let listener = bind(server.grpc_listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: server.grpc_listen,
        source,
    })?;
    let http = match server.http_listen {
        Some(requested) => Some(bind(requested).await?),
        None => None,
    };
    Ok((listener, addr, http))
}

/// TLS for gRPC from the configured PEM files; with a client CA, clients
/// must present a certificate that chains to it (mTLS).
fn server_tls(tls: &crate::config::TlsSettings) -> tonic::transport::ServerTlsConfig {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let config = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    match &tls.client_ca_pem {
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
        None => config,
    }
}

/// The SMTP client, when `[smtp]` is configured. Whether the server answers
/// is checked in the background: an unreachable server is a warning, and
/// mail waits in the outbox until it is back.
fn mailer(settings: &Settings) -> Result<Option<Mailer>, StartError> {
    let Some(smtp) = &settings.smtp else {
        return Ok(None);
    };
    let mailer = Mailer::new(smtp).map_err(StartError::Smtp)?;
    let has_rules = settings
        .subscriptions
        .iter()
        .any(|s| matches!(s.target, crate::core::subscription::Target::Email(_)));
    if !has_rules {
        tracing::warn!(
            "[smtp] is set but no [[email]] rule and no smtp.admins: nobody will be mailed"
        );
    }
    let check = mailer.clone();
    tokio::spawn(async move { check.check().await });
    Ok(Some(mailer))
}

/// How the application runs besides its settings; tests change these.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub clock: Arc<dyn Clock>,
    /// When false, nothing is delivered and nothing monitored until someone
    /// calls [`Dispatcher::run_until_idle`] or [`Monitor::run_once`].
    pub background_workers: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            background_workers: true,
        }
    }
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    settings: Settings,
    options: BuildOptions,
    store: Store,
    dispatcher: Dispatcher,
    ingestor: Ingestor,
    feed: ChangeFeed,
    monitor: Monitor,
    pruner: Pruner,
    /// The operations port (`/metrics`, `/healthz`, `/readyz`), if enabled.
    http: Option<TcpListener>,
    metrics: Metrics,
    admin: Arc<AdminApi>,
    subscriptions_api: Arc<SubscriptionApi>,
    leadership: Leadership,
    /// What the notification listener updates (several replicas).
    listening: Listening,
    /// What a configuration reload replaces.
    reloader: Reloader,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::build_with(settings, BuildOptions::default()).await
    }

    pub async fn build_with(settings: Settings, options: BuildOptions) -> Result<Self, StartError> {
        check_settings(&settings).await?;
        // Ports first: a busy port leaves no database file behind.
        let (listener, addr, http) = bind_ports(&settings.server).await?;
        let store = Store::connect(&settings.store).await?;
        let context = ManagedContext {
            egress: settings.egress.clone(),
            smtp_configured: settings.smtp.is_some(),
        };
        let registry = Registry::new(Vec::new());
        registry.set_configured(settings.subscriptions.clone());
        registry.rebuild(&store, &context).await?;
        let managed_context = context.clone();
        let leadership = Leadership::for_store(&store, &settings.store.replica);
        let wakeups = Wakeups::default();
        let feed = ChangeFeed::new(settings.server.watch_streams);
        let metrics = Metrics::default();
        let ingestor = Ingestor::new(IngestParts {
            store: store.clone(),
            registry: registry.clone(),
            managed: context.clone(),
            clock: options.clock.clone(),
            wakeups: wakeups.clone(),
            feed: feed.clone(),
            metrics: metrics.clone(),
            gates: settings.gates.clone(),
        });
        let parts = DispatcherParts {
            store: store.clone(),
            http: HttpSender::new(
                settings.delivery.response_excerpt_bytes,
                settings.egress.clone(),
            )?,
            mailer: mailer(&settings)?,
            clock: options.clock.clone(),
            settings: settings.delivery.clone(),
            wakeups: wakeups.clone(),
            ingestor: ingestor.clone(),
            metrics: metrics.clone(),
            leadership: leadership.clone(),
            replica: settings.store.replica.clone(),
        };
        let dispatcher = Dispatcher::new(parts, registry.clone()).await?;
        let subscriptions_api = Arc::new(SubscriptionApi::new(SubscriptionParts {
            store: store.clone(),
            registry: registry.clone(),
            context: managed_context.clone(),
            ingestor: ingestor.clone(),
            clock: options.clock.clone(),
        }));
        let admin = Arc::new(AdminApi::new(
            store.clone(),
            registry.clone(),
            wakeups.clone(),
            options.clock.clone(),
        ));
        let monitor = Monitor::new(
            store.clone(),
            ingestor.clone(),
            options.clock.clone(),
            settings.stalls.clone(),
            settings.schedules.clone(),
            settings.gates.clone(),
        )
        .await?;
        let pruner = Pruner::new(
            store.clone(),
            options.clock.clone(),
            settings.retention.clone(),
            metrics.clone(),
        );
        let reloader = Reloader {
            store: store.clone(),
            registry: registry.clone(),
            context: managed_context.clone(),
            monitor: monitor.clone(),
            schedules: Live::new(settings.schedules.clone()),
            stalls: Live::new(settings.stalls.clone()),
        };
        let listening = Listening {
            store: store.clone(),
            wakeups: wakeups.clone(),
            feed: feed.clone(),
            registry: registry.clone(),
            context: managed_context.clone(),
        };
        Ok(Self {
            reloader,
            leadership,
            listening,
            listener,
            addr,
            settings,
            options,
            store,
            dispatcher,
            ingestor,
            feed,
            monitor,
            pruner,
            http,
            metrics,
            admin,
            subscriptions_api,
        })
    }

    /// The address gRPC listens on (the real port when configured with 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the operations HTTP port, when it is enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher.clone()
    }

    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// The counters `/metrics` renders (the bench reads the group commits).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    pub fn pruner(&self) -> Pruner {
        self.pruner.clone()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Who waits for changes, and the streams open per caller.
    pub fn feed(&self) -> ChangeFeed {
        self.feed.clone()
    }

    /// What replaces subscriptions, schedules and stall rules when the
    /// configuration file is reloaded (see [`Reloader::on_hangup`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The admin console, served on the operations port.
    fn console(&self) -> crate::console::Console {
        let settings = &self.settings;
        crate::console::Console::new(crate::console::ConsoleParts {
            store: self.store.clone(),
            clock: self.options.clock.clone(),
            feed: self.feed.clone(),
            registry: self.listening.registry.clone(),
            admin: self.admin.clone(),
            subscriptions: self.subscriptions_api.clone(),
            tokens: settings.server.tokens.clone(),
            settings: settings.console.clone(),
            schedules: self.reloader.schedules.clone(),
            stalls: self.reloader.stalls.clone(),
            loopback: settings
                .server
                .http_listen
                .is_some_and(|addr| addr.ip().is_loopback()),
        })
    }

    /// Serves until `stop` completes, then shuts down in order: stop
    /// accepting calls, let in-flight deliveries finish within the grace
    /// period (leases cover the rest), close the database.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let console = self.console();
        let shutdown = CancellationToken::new();
        let mut lanes = JoinSet::new();
        let mut monitor = None;
        let mut pruner = None;
        let mut shared = Vec::new();
        if self.options.background_workers {
            shared.extend(self.leadership.spawn(shutdown.clone()));
            shared.extend(crate::fleet::listen(self.listening, shutdown.clone()));
            pruner = Some(
                self.pruner
                    .clone()
                    .spawn(shutdown.clone(), self.leadership.clone()),
            );
            lanes = self
                .dispatcher
                .spawn(shutdown.clone(), self.settings.server.shutdown_grace);
            monitor = Some(self.monitor.spawn(
                shutdown.clone(),
                self.settings.monitor.check_interval,
                self.leadership.clone(),
            ));
        }
        let ops = self.http.map(|listener| {
            let routes = ops::routes(
                self.store.clone(),
                self.metrics.clone(),
                self.options.clock.clone(),
                &self.settings.store.replica,
                console,
            );
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, routes)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "operations HTTP port failed");
                }
            })
        });
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<IngestServiceServer<IngestApi>>()
            .await;
        health_reporter
            .set_serving::<QueryServiceServer<QueryApi>>()
            .await;
        health_reporter
            .set_serving::<AdminServiceServer<AdminApi>>()
            .await;
        health_reporter
            .set_serving::<SubscriptionServiceServer<SubscriptionApi>>()
            .await;
        let reflection = crate::api::reflection().build_v1()?;
        let reflection_v1alpha = crate::api::reflection().build_v1alpha()?;
        tracing::info!(grpc = %self.addr, store = %crate::store::masked_url(&self.settings.store.url), replica = %self.settings.store.replica, subscriptions = self.settings.subscriptions.len(), "Herald is serving");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.settings.server.tls {
            builder = builder.tls_config(server_tls(tls))?;
        }
        let served = builder
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                DocumentGate::new(
                    IngestServiceServer::new(IngestApi::new(self.ingestor))
                        .max_decoding_message_size(self.settings.server.max_request_bytes),
                ),
                Auth::new(&self.settings.server.tokens, Service::Ingest),
            ))
            .add_service(ReaderMethods::new(InterceptedService::new(
                AdminServiceServer::from_arc(self.admin),
                Auth::new(&self.settings.server.tokens, Service::Admin),
            )))
            .add_service(InterceptedService::new(
                SubscriptionServiceServer::from_arc(self.subscriptions_api),
                Auth::new(&self.settings.server.tokens, Service::Admin),
            ))
            .add_service(QueryServiceServer::with_interceptor(
                QueryApi::new(
                    self.store.clone(),
                    self.feed.clone(),
                    self.options.clock.clone(),
                    self.settings.server.watch_send_timeout,
                )
                .with_schedules(self.reloader.schedules.clone())
                .with_gates(self.settings.gates.clone()),
                Auth::new(&self.settings.server.tokens, Service::Query),
            ))
            .serve_with_incoming_shutdown(crate::api::incoming(self.listener), stop)
            .await;
        tracing::info!("gRPC stopped; finishing in-flight deliveries");
        shutdown.cancel();
        while lanes.join_next().await.is_some() {}
        if let Some(monitor) = monitor {
            let _ = monitor.await;
        }
        if let Some(pruner) = pruner {
            let _ = pruner.await;
        }
        for task in shared {
            let _ = task.await;
        }
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        self.store.close().await;
        tracing::info!("Herald stopped");
        Ok(served?)
    }
}
