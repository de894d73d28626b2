//! Reloading the configuration file on SIGHUP: subscriptions (webhooks,
//! healthchecks, email rules, Git archives), schedules and stall rules take
//! effect without a restart. Everything else (ports, store, TLS, tokens,
//! `[smtp]`, `[delivery]`, `[retention]`, `[monitor]`, egress) is read at
//! start only.
//!
//! A reload is all or nothing: the new file is parsed and checked exactly as
//! `serve` checks it at start, and only when it passes are the parts
//! swapped; a bad file is refused with its message logged and the running
//! configuration kept.

use std::sync::{Arc, RwLock};

use crate::config::Settings;
use crate::core::schedule::Schedule;
use crate::core::stall::StallPolicy;
use crate::monitor::Monitor;
use crate::registry::{ManagedContext, Registry};
use crate::store::Store;

/// A value several parts read and a reload replaces whole: readers take a
/// cheap snapshot (an `Arc`), never a half-replaced value.
#[derive(Debug)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    pub fn get(&self) -> Arc<T> {
        // Replaced whole, never left half-written: a poisoned lock still
        // holds a consistent value.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] anyhow::Error),
    #[error("[smtp] was {was} and is now {now}: a restart is needed for that")]
    SmtpChanged {
        was: &'static str,
        now: &'static str,
    },
}

/// What a reload replaces.
#[derive(Clone)]
pub struct Reloader {
    pub store: Store,
    pub registry: Registry,
    pub context: ManagedContext,
    pub monitor: Monitor,
    pub schedules: Live<Vec<Schedule>>,
    /// The stall rules the console shows (the monitor keeps its own copy).
    pub stalls: Live<StallPolicy>,
}

impl Reloader {
    /// Checks `settings` as start-up does, then swaps in its subscriptions,
    /// schedules and stall rules.
    pub async fn apply(&self, settings: Settings) -> Result<(), ReloadError> {
        let presence = |on: bool| if on { "set" } else { "not set" };
        if settings.smtp.is_some() != self.context.smtp_configured {
            return Err(ReloadError::SmtpChanged {
                was: presence(self.context.smtp_configured),
                now: presence(settings.smtp.is_some()),
            });
        }
        crate::app::check_settings(&settings)
            .await
            .map_err(anyhow::Error::from)?;
        self.stalls.set(settings.stalls.clone());
        self.monitor
            .reload(settings.stalls, settings.schedules.clone())
            .await
            .map_err(anyhow::Error::from)?;
        self.schedules.set(settings.schedules);
        self.registry.set_configured(settings.subscriptions);
        self.registry
            .rebuild(&self.store, &self.context)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// Reloads with `load` (the file, environment and flags, as at start)
    /// on every SIGHUP, logging what happened; returns when the signal
    /// cannot be listened for.
    pub async fn on_hangup(self, load: impl Fn() -> anyhow::Result<Settings>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                tracing::warn!(
                    "cannot listen for SIGHUP; the configuration reloads only at restart"
                );
                return;
            };
            while hangups.recv().await.is_some() {
                let result = match load() {
                    Ok(settings) => self.apply(settings).await,
                    Err(e) => Err(ReloadError::Invalid(e)),
                };
                match result {
                    Ok(()) => tracing::info!(
                        subscriptions = self.registry.configured().len(),
                        schedules = self.schedules.get().len(),
                        "configuration reloaded (subscriptions, email rules, schedules, stall rules)"
                    ),
                    Err(e) => tracing::error!(
                        error = %format!("{:#}", anyhow::Error::from(e)),
                        "configuration reload refused; the running configuration is kept"
                    ),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = load;
        }
    }
}
