//! The snapshot the request path reads: routes, their upstreams, the settings.
//!
//! A snapshot is built whole from a validated configuration and published with
//! one atomic swap; requests keep the snapshot they started with.

use crate::config::{Affinity, Config, HostMatch, IpNet, Limits, Route, Timeouts, UpstreamKey};
use crate::discovery::Source;
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
}

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Build a snapshot for `config`, keeping the upstreams of `previous` whose
    /// discovery source is unchanged. New upstreams start concurrently and
    /// without waiting for their first endpoint lists (discovery/mod.rs).
    pub async fn build(config: Config, previous: Option<&Snapshot>) -> anyhow::Result<Snapshot> {
        let mut sources = BTreeMap::new();
        for route in &config.routes {
            let key = &route.upstream;
            if !sources.contains_key(key) {
                sources.insert(key.clone(), Source::for_upstream(&config, key)?);
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
        for (i, route) in config.routes.iter().enumerate() {
            let Route {
                host,
                path,
                path_type,
                upstream,
                affinity,
                redirect_https,
            } = route;
            let name = format!("routes[{i}]");
            let host_label = match host {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Wildcard(suffix) => format!("*.{suffix}"),
                HostMatch::Any => "*".to_string(),
            };
            let service = upstream.to_string();
            let metrics = RouteMetrics::new(&name, &host_label, &service, affinity.is_some());
            let entry = RouteEntry {
                name,
                host: host_label,
                service,
                affinity: affinity.clone(),
                redirect_https: *redirect_https,
                upstream: upstreams[upstream].1.clone(),
                metrics,
            };
            router.insert(host, path, *path_type, Arc::new(entry));
        }
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
        })
    }
}
