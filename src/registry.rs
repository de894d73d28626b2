//! The live set of subscriptions: those the configuration file declares and
//! those created over the admin API. Readers take a snapshot (an `Arc` of
//! the whole set, cheap to clone); a change replaces the snapshot and bumps
//! a version that the dispatcher watches to start, stop or restart lanes.
//!
//! On a shared store the set also remembers which version of the stored
//! subscriptions it was built from (`Store::registry_version`), so the
//! committer can tell a set older than what its transaction sees and
//! rebuild it first (see `ingest::apply`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::core::subscription::Subscription;

#[derive(Clone, Debug)]
pub struct Registry {
    current: Arc<RwLock<Arc<[Subscription]>>>,
    version: Arc<watch::Sender<u64>>,
    /// The configuration file's part of the set (replaced by a reload).
    configured: Arc<RwLock<Arc<[Subscription]>>>,
    /// One rebuild at a time, so a reload and an API change cannot undo
    /// each other.
    rebuilding: Arc<tokio::sync::Mutex<()>>,
    /// The store's subscription version the set was last built from.
    built_from: Arc<AtomicI64>,
}

impl Registry {
    pub fn new(subscriptions: Vec<Subscription>) -> Self {
        Self {
            current: Arc::new(RwLock::new(subscriptions.into())),
            version: Arc::new(watch::channel(0).0),
            configured: Arc::new(RwLock::new(Arc::from([]))),
            rebuilding: Arc::default(),
            built_from: Arc::default(),
        }
    }

    /// The subscriptions of the configuration file (read-only over the API).
    pub fn configured(&self) -> Arc<[Subscription]> {
        // Replaced whole, like `current`.
        self.configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_configured(&self, configured: Vec<Subscription>) {
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = configured.into();
    }

    /// Rebuilds the set from the configured subscriptions and the managed
    /// ones the store holds.
    pub async fn rebuild(
        &self,
        store: &crate::store::Store,
        context: &ManagedContext,
    ) -> Result<(), crate::store::StoreError> {
        self.reload(store, context, true).await
    }

    /// As [`Registry::rebuild`], replacing the set (which restarts every
    /// lane) only when `always` or when what was loaded differs from it.
    pub async fn reload(
        &self,
        store: &crate::store::Store,
        context: &ManagedContext,
        always: bool,
    ) -> Result<(), crate::store::StoreError> {
        let _one_at_a_time = self.rebuilding.lock().await;
        // Read before the subscriptions: the set is at least this new.
        let version = store.registry_version().await?;
        let all = load(&self.configured(), store, context).await?;
        if always || format!("{:?}", &*self.current()) != format!("{all:?}") {
            self.replace(all);
        }
        self.built_from.fetch_max(version, Ordering::AcqRel);
        Ok(())
    }

    /// Rebuilds the set unless it was built from `version` of the stored
    /// subscriptions or a newer one.
    pub async fn rebuild_if_older(
        &self,
        version: i64,
        store: &crate::store::Store,
        context: &ManagedContext,
    ) -> Result<(), crate::store::StoreError> {
        if self.built_from.load(Ordering::Acquire) >= version {
            return Ok(());
        }
        tracing::debug!(
            version,
            "the stored subscriptions are newer than this replica's set; rebuilding it"
        );
        self.rebuild(store, context).await
    }

    pub fn current(&self) -> Arc<[Subscription]> {
        // The guarded value is replaced whole, never left half-written, so
        // a poisoned lock still holds a consistent snapshot.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, subscriptions: Vec<Subscription>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = subscriptions.into();
        self.version.send_modify(|v| *v += 1);
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// What a managed subscription needs to be built: the egress policy its
/// target must pass, and whether SMTP is configured (for email rules).
#[derive(Clone, Debug)]
pub struct ManagedContext {
    pub egress: crate::core::egress::EgressPolicy,
    pub smtp_configured: bool,
}

/// Builds a subscription from its stored form: the spec, with the current
/// secret put back, parsed like a configuration entry; rotated-out secrets
/// that still sign are attached.
pub fn build_managed(
    managed: &crate::store::ManagedSubscription,
    context: &ManagedContext,
) -> Result<Subscription, crate::config::ConfigError> {
    use crate::core::signature::SigningSecret;
    use crate::core::subscription::Target;
    let mut spec = managed.spec.clone();
    let current = managed.secrets.iter().find(|s| s.expires_at.is_none());
    if let (Some(current), Some(object)) = (current, spec.as_object_mut()) {
        object.insert(
            "secret".to_owned(),
            serde_json::Value::String(current.secret.clone()),
        );
    }
    let mut sub = crate::config::parse_managed(
        &managed.kind,
        spec,
        &context.egress,
        context.smtp_configured,
    )?;
    if let Target::Webhook(webhook) = &mut sub.target {
        webhook.previous_secrets = managed
            .secrets
            .iter()
            .filter_map(|s| Some((SigningSecret::parse(&s.secret).ok()?, s.expires_at?)))
            .collect();
    }
    Ok(sub)
}

/// The configuration's subscriptions followed by the managed ones that the
/// store holds. A stored one that no longer builds is skipped and logged.
async fn load(
    config: &[Subscription],
    store: &crate::store::Store,
    context: &ManagedContext,
) -> Result<Vec<Subscription>, crate::store::StoreError> {
    let mut all = config.to_vec();
    for managed in store.managed_subscriptions().await? {
        match build_managed(&managed, context) {
            Ok(sub) if !all.iter().any(|s| s.name == sub.name) => all.push(sub),
            Ok(sub) => {
                tracing::warn!(subscription = %sub.name, "a managed subscription has the name of a configured one; the configured one wins")
            }
            Err(e) => {
                tracing::error!(subscription = %managed.name, error = %e, "a stored subscription no longer builds; skipped")
            }
        }
    }
    Ok(all)
}
