//! `ingress:`: serve Ingress objects (networking.k8s.io/v1) beside the
//! configuration file's routes.
//!
//! Three kube-rs watches (Ingresses, IngressClasses and, with an https
//! listener, Secrets of type `kubernetes.io/tls`) fill reflector stores. Any
//! change recomputes everything from the stores ([`translate`]: a pure
//! function, the same on every node), then publishes the routes with one
//! snapshot swap (the upstreams that stay keep their state and connections)
//! and the Secrets' certificates with one resolver swap. Problems are logged
//! when they first appear, not at every recompute, and counted in
//! `edge_proxy_ingress_problems`. Until the first complete lists, `/readyz`
//! says so.

pub mod annotations;
pub mod check;
pub mod named;
pub mod status;
pub mod translate;

use crate::config::IngressSettings;
use crate::drain::ShutdownHooks;
use crate::kube::follow;
use crate::metrics::METRICS;
use crate::state::{Publisher, SourceId};
use crate::tls::SniResolver;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::Api;
use named::NamedObjects;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Changes arriving together (a `kubectl apply` of several objects) are
/// recomputed once.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long a recompute waits for the first list of a newly named Secret or
/// ConfigMap (their watches are quick; an API server that is not answers later).
const NAMED_LIST_WAIT: Duration = Duration::from_secs(5);

/// Start following Ingresses (on the control-plane runtime); returns at once.
pub async fn start(
    settings: IngressSettings,
    publisher: Arc<Publisher>,
    certs: Option<Arc<SniResolver>>,
    hooks: Arc<ShutdownHooks>,
) -> anyhow::Result<()> {
    let client = crate::kube::client().await?;
    let changed = Arc::new(Notify::new());
    let ingresses = follow(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
        &changed,
    );
    let classes = follow(
        Api::<IngressClass>::all(client.clone()),
        watcher::Config::default(),
        &changed,
    );
    // Only TLS Secrets, and only with an https listener to serve them on.
    let secrets = certs.as_ref().map(|_| {
        follow(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().fields(&format!("type={}", translate::TLS_SECRET_TYPE)),
            &changed,
        )
    });
    let (served_tx, served_rx) = watch::channel(Vec::new());
    let client_for_named = client.clone();
    if settings.publish_status {
        tokio::spawn(status::run(
            client,
            settings.clone(),
            served_rx,
            ingresses.clone(),
            hooks,
        ));
    }
    tokio::spawn(async move {
        let lists = async {
            ingresses.wait_until_ready().await?;
            classes.wait_until_ready().await?;
            if let Some(s) = &secrets {
                s.wait_until_ready().await?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = lists.await {
            tracing::error!("Ingress watches ended before their first list: {e}");
            return;
        }
        tracing::info!("Ingresses listed: serving their routes");
        METRICS.ingress_synced.set(1);
        let mut controller = Controller {
            settings,
            publisher,
            certs,
            loaded: HashMap::new(),
            served: served_tx,
            named: named::Watches::new(client_for_named, &changed),
        };
        loop {
            controller
                .recompute(&ingresses, &classes, secrets.as_ref())
                .await;
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
        }
    });
    Ok(())
}

struct Controller {
    settings: IngressSettings,
    publisher: Arc<Publisher>,
    certs: Option<Arc<SniResolver>>,
    /// The certificates of the last translation.
    loaded: translate::LoadedSecrets,
    served: watch::Sender<Vec<(String, String)>>,
    /// The Secrets and ConfigMaps annotations name, followed by name.
    named: named::Watches,
}

impl Controller {
    async fn recompute(
        &mut self,
        ingresses: &Store<Ingress>,
        classes: &Store<IngressClass>,
        secrets: Option<&Store<Secret>>,
    ) {
        let secrets: HashMap<(String, String), Arc<Secret>> = secrets
            .map(|s| s.state())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let m = &s.metadata;
                (
                    (
                        m.namespace.clone().unwrap_or_default(),
                        m.name.clone().unwrap_or_default(),
                    ),
                    s,
                )
            })
            .collect();
        let certs = self.certs.clone();
        let covers = move |host: &str| certs.as_ref().is_some_and(|c| c.file_covers(host));
        let classes = classes.state();
        let ingresses = ingresses.state();
        let translate_with = |named: &NamedObjects| {
            translate::translate(
                &ingresses,
                &translate::Cluster {
                    class: &self.settings.class,
                    classes: &classes,
                    secrets: &secrets,
                    file_cert_covers: &covers,
                    last_loaded: &self.loaded,
                    named: Some(named),
                    allowed_response_headers: &self.settings.allowed_response_headers,
                },
            )
        };
        let mut t = translate_with(&self.named.objects());
        // A newly named object: list it, then translate again before
        // publishing, so that an Ingress is not refused for an object that
        // is there.
        if self.named.follow_only(&t.wanted) {
            if !self.named.wait_listed(NAMED_LIST_WAIT).await {
                tracing::warn!(
                    "objects named by annotations not listed within {NAMED_LIST_WAIT:?}: the Ingresses naming them wait"
                );
            }
            t = translate_with(&self.named.objects());
            self.named.follow_only(&t.wanted);
        }
        self.loaded = std::mem::take(&mut t.loaded);
        crate::problems::report("ingress", t.problems);
        if let Some(resolver) = &self.certs {
            resolver.replace_ingress(t.certs);
        }
        let count = t.routes.len();
        match self
            .publisher
            .publish(SourceId::Ingress, t.routes, true)
            .await
        {
            Ok(()) => tracing::debug!(routes = count, "Ingress routes published"),
            Err(e) => tracing::error!("Ingress routes not published, the running ones stay: {e:#}"),
        }
        self.served.send_replace(t.served);
    }
}
