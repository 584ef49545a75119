//! The snapshot the request path reads: routes, their upstreams, the settings.
//!
//! A snapshot is built whole from a validated configuration and the routes of
//! Ingresses, and published with one atomic swap by the [`Publisher`];
//! requests keep the snapshot they started with.

use crate::config::{Affinity, Config, IpNet, Limits, Route, Timeouts, UpstreamKey};
use crate::discovery::Source;
use crate::ingress::IngressRoute;
use crate::metrics::RouteMetrics;
use crate::routing::Router;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A route as the request path needs it.
pub struct RouteEntry {
    /// A short stable name for logs and metrics: `routes[i]`.
    pub name: String,
    /// The configured host pattern, for metrics: `www.example.com`, `*.example.com`, `*`.
    pub host: String,
    /// The upstream as `namespace/service:port`, for metrics and logs.
    pub service: String,
    pub affinity: Option<Affinity>,
    pub redirect_https: bool,
    /// The request body limit here (`limits.max_body_bytes` or an annotation's).
    pub max_body_bytes: u64,
    /// Towards this route's endpoints (`timeouts` or an annotation's).
    pub timeouts: Timeouts,
    /// Only clients in these ranges (an allowlist annotation); others get 403.
    pub allow: Option<Vec<IpNet>>,
    pub upstream: Arc<Upstream>,
    /// Its series, resolved once here rather than by label on every request.
    pub metrics: RouteMetrics,
}

pub struct Snapshot {
    pub router: Router<Arc<RouteEntry>>,
    pub upstreams: BTreeMap<UpstreamKey, (Source, Arc<Upstream>)>,
    pub timeouts: Timeouts,
    pub retries: usize,
    pub limits: Limits,
    pub trusted_proxies: Arc<[IpNet]>,
    /// The HTTPS listener's port, for redirects.
    pub https_port: Option<u16>,
    /// `false` while Ingresses are served but not listed yet (`/readyz`).
    pub ingress_synced: bool,
}

/// The routes Ingresses contribute, as the ingress controller last computed them.
#[derive(Debug, Clone, Default)]
pub struct IngressRoutes {
    pub routes: Vec<IngressRoute>,
    /// The Ingresses have been listed (always true without `ingress:`).
    pub synced: bool,
}

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Build a snapshot for `config`, keeping the upstreams of `previous` whose
    /// discovery source is unchanged. New upstreams start concurrently and
    /// without waiting for their first endpoint lists (discovery/mod.rs).
    pub async fn build(
        config: &Config,
        ingress: &IngressRoutes,
        previous: Option<&Snapshot>,
    ) -> anyhow::Result<Snapshot> {
        // ConfigMap routes first: they win a (host, path, type) over Ingresses.
        let routes: Vec<(String, &Route)> = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("routes[{i}]"), r))
            .chain(ingress.routes.iter().map(|r| (r.name.clone(), &r.route)))
            .collect();
        let mut sources = BTreeMap::new();
        for (_, route) in &routes {
            let key = &route.upstream;
            if !sources.contains_key(key) {
                sources.insert(key.clone(), Source::for_upstream(config, key)?);
            }
        }
        let starts = sources.into_iter().map(|(key, source)| async move {
            let kept = previous
                .and_then(|p| p.upstreams.get(&key))
                .filter(|(old, _)| *old == source)
                .map(|(_, u)| u.clone());
            let upstream = match kept {
                Some(u) => u,
                None => source.start(&key).await.inspect_err(|_| {
                    crate::metrics::METRICS
                        .discovery_errors
                        .with_label_values(&[&key.to_string()])
                        .inc();
                })?,
            };
            anyhow::Ok((key, (source, upstream)))
        });
        let upstreams: BTreeMap<_, _> = futures::future::try_join_all(starts)
            .await?
            .into_iter()
            .collect();
        let mut router = Router::default();
        let mut shadowed = 0;
        for (name, route) in routes {
            let Route {
                host,
                path,
                path_type,
                upstream,
                affinity,
                redirect_https,
                overrides,
            } = route;
            let host_label = host.to_string();
            let service = upstream.to_string();
            let metrics = RouteMetrics::new(&name, &host_label, &service, affinity.is_some());
            let entry = RouteEntry {
                host: host_label,
                service,
                affinity: affinity.clone(),
                redirect_https: *redirect_https,
                max_body_bytes: overrides
                    .max_body_bytes
                    .unwrap_or(config.limits.max_body_bytes),
                timeouts: Timeouts {
                    connect: overrides.connect_timeout.unwrap_or(config.timeouts.connect),
                    read: overrides.read_timeout.unwrap_or(config.timeouts.read),
                    write: overrides.write_timeout.unwrap_or(config.timeouts.write),
                    idle: config.timeouts.idle,
                },
                allow: overrides.allow.clone(),
                upstream: upstreams[upstream].1.clone(),
                metrics,
                name,
            };
            let entry = Arc::new(entry);
            if !router.insert(host, path, *path_type, entry.clone()) {
                // Only an Ingress route can lose here (the file has no duplicates).
                shadowed += 1;
                tracing::warn!(
                    route = %entry.name,
                    host = %entry.host,
                    path = %path,
                    "an Ingress path is also a route of the configuration file, which wins"
                );
            }
        }
        crate::metrics::METRICS
            .ingress_shadowed_routes
            .set(shadowed);
        let services: Vec<String> = upstreams.keys().map(|k| k.to_string()).collect();
        crate::metrics::export_at_zero(&services);
        Ok(Snapshot {
            router,
            upstreams,
            timeouts: config.timeouts,
            retries: config.retries,
            limits: config.limits,
            trusted_proxies: config.trusted_proxies.clone().into(),
            https_port: config.listen.https.map(|a| a.port()),
            ingress_synced: ingress.synced,
        })
    }
}

/// Builds and publishes snapshots from the two inputs, the configuration file
/// and the Ingresses, one at a time (a reload and an Ingress change never
/// publish over each other).
pub struct Publisher {
    snapshot: SharedSnapshot,
    inputs: tokio::sync::Mutex<(Arc<Config>, Arc<IngressRoutes>)>,
}

impl Publisher {
    pub fn new(snapshot: SharedSnapshot, config: Config, ingress: IngressRoutes) -> Self {
        Publisher {
            snapshot,
            inputs: tokio::sync::Mutex::new((Arc::new(config), Arc::new(ingress))),
        }
    }

    /// A new configuration file; on error the running snapshot stays.
    pub async fn publish_config(&self, config: Config) -> anyhow::Result<()> {
        let mut inputs = self.inputs.lock().await;
        self.publish(&config, &inputs.1).await?;
        inputs.0 = Arc::new(config);
        Ok(())
    }

    /// New Ingress routes; on error the running snapshot stays.
    pub async fn publish_ingress(&self, ingress: IngressRoutes) -> anyhow::Result<()> {
        let mut inputs = self.inputs.lock().await;
        let config = inputs.0.clone();
        self.publish(&config, &ingress).await?;
        inputs.1 = Arc::new(ingress);
        Ok(())
    }

    async fn publish(&self, config: &Config, ingress: &IngressRoutes) -> anyhow::Result<()> {
        let previous = self.snapshot.load_full();
        let next = Snapshot::build(config, ingress, Some(&previous)).await?;
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}
