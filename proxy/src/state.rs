//! The snapshot the request path reads, and the [`Publisher`] that builds it.
//!
//! Routes come from N keyed sources ([`SourceId`]: the configuration file,
//! the Ingresses, Gateway API), each already in the route model
//! (`crate::route`). A snapshot is built whole from the file's settings and
//! every source's routes: conflicts between routes are decided here, in one
//! place (the file wins; otherwise the oldest object), each route's policies
//! are compiled (`policy.rs`), and the result is published with one atomic
//! swap. Requests keep the snapshot they started with. Upstreams, and the
//! state policies keep, carry over from the previous snapshot.

use crate::client_limits::ClientLimits;
use crate::config::{Config, IpNet, Limits, Timeouts};
use crate::discovery::Source;
use crate::metrics::METRICS;
use crate::policy::{self, CompiledRoute};
use crate::problems::{self, Problem, ProblemKind};
use crate::route::router::Insert;
use crate::route::{Origin, Route, Router, UpstreamKey};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// Where routes come from, in the order /readyz lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceId {
    File,
    Ingress,
    Gateway,
}

impl SourceId {
    /// How /readyz names a source it still waits for.
    pub fn describe(self) -> &'static str {
        match self {
            SourceId::File => "the configuration file",
            SourceId::Ingress => "the Ingresses",
            SourceId::Gateway => "the Gateway API routes",
        }
    }
}

/// One source's routes as it last published them.
#[derive(Debug, Clone, Default)]
pub struct SourceRoutes {
    pub routes: Vec<Route>,
    /// The source has its first complete view (until then /readyz waits).
    pub synced: bool,
}

pub struct Snapshot {
    pub router: Router<Arc<CompiledRoute>>,
    pub upstreams: BTreeMap<UpstreamKey, (Source, Arc<Upstream>)>,
    pub timeouts: Timeouts,
    pub retries: usize,
    pub limits: Limits,
    /// `limits.per_client`, compiled.
    pub per_client: Option<Arc<ClientLimits>>,
    pub trusted_proxies: Arc<[IpNet]>,
    /// The HTTPS listener's port, for redirects.
    pub https_port: Option<u16>,
    /// Sources without their first complete view yet (`/readyz`).
    pub waiting_for: Vec<SourceId>,
    /// State that policies keep across snapshots, by route name.
    kept: HashMap<String, Arc<AtomicU32>, foldhash::fast::RandomState>,
}

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// The sources' routes, by source.
pub type Sources = BTreeMap<SourceId, Arc<SourceRoutes>>;

/// The routes of every source in the order they claim matches: the file's
/// first, in file order; then objects oldest first (see `route::Origin`).
fn by_precedence(sources: &Sources) -> Vec<(SourceId, &Route)> {
    let mut all: Vec<(SourceId, &Route)> = sources
        .iter()
        .flat_map(|(id, s)| s.routes.iter().map(move |r| (*id, r)))
        .collect();
    all.sort_by(|a, b| a.1.origin.cmp(&b.1.origin));
    all
}

impl Snapshot {
    /// Build a snapshot from the file's settings and every source's routes,
    /// keeping the upstreams of `previous` whose discovery source is unchanged.
    /// New upstreams start concurrently and without waiting for their first
    /// endpoint lists (discovery/mod.rs).
    pub async fn build(
        config: &Config,
        sources: &Sources,
        previous: Option<&Snapshot>,
    ) -> anyhow::Result<Snapshot> {
        let routes = by_precedence(sources);
        let upstreams = start_upstreams(config, &routes, previous).await?;
        let mut kept = HashMap::default();
        let mut router = Router::default();
        let mut shadowed = 0;
        let mut conflicts = Vec::new();
        let mut ingress_routes = 0;
        for (source, route) in routes {
            let turn = previous
                .and_then(|p| p.kept.get(&route.name).cloned())
                .unwrap_or_default();
            kept.insert(route.name.clone(), turn.clone());
            let entry = Arc::new(policy::compile(
                route,
                config,
                |key| upstreams[key].1.clone(),
                turn,
            ));
            let lost_to = match router.insert(&route.matches, entry) {
                Ok(()) => None,
                Err(Insert::Taken(winner)) => Some(winner.origin.clone()),
                Err(Insert::Invalid(e)) => {
                    conflicts.push(Problem::new(
                        route.origin.object(),
                        ProblemKind::InvalidRule,
                        format!("{}: {e}", route.name),
                    ));
                    continue;
                }
            };
            let m = &route.matches;
            // The same match twice in one object: the first stands, silently.
            if lost_to.as_ref() == Some(&route.origin) {
                continue;
            }
            match lost_to {
                None => ingress_routes += i64::from(source == SourceId::Ingress),
                Some(Origin::File) => {
                    ingress_routes += i64::from(source == SourceId::Ingress);
                    shadowed += 1;
                    tracing::warn!(
                        route = %route.name,
                        host = %m.host,
                        path = %m.path,
                        "an Ingress path is also a route of the configuration file, which wins"
                    );
                }
                Some(winner) => conflicts.push(conflict(route, &winner)),
            }
        }
        problems::report("conflicts", conflicts);
        METRICS.ingress_shadowed_routes.set(shadowed);
        METRICS.ingress_routes.set(ingress_routes);
        let services: Vec<String> = upstreams.keys().map(|k| k.to_string()).collect();
        crate::metrics::export_at_zero(&services);
        Ok(Snapshot {
            router,
            upstreams,
            timeouts: config.timeouts,
            retries: config.retries,
            limits: config.limits,
            per_client: config.per_client.as_ref().map(|p| {
                Arc::new(ClientLimits::node(
                    p.rate.iter().map(crate::policy::gcra_rate).collect(),
                    p.connections,
                    p.exempt.clone(),
                    config.limits.limited_status,
                ))
            }),
            trusted_proxies: config.trusted_proxies.clone().into(),
            https_port: config.listen.https.map(|a| a.port()),
            waiting_for: sources
                .iter()
                .filter(|(_, s)| !s.synced)
                .map(|(id, _)| *id)
                .collect(),
            kept,
        })
    }
}

/// `route` lost its match to an older object's route: the problem both the
/// snapshot builder and `ingress-check` report.
pub fn conflict(route: &Route, winner: &Origin) -> Problem {
    let m = &route.matches;
    Problem::new(
        route.origin.object(),
        ProblemKind::Conflict,
        format!(
            "{}: host {} path {} ({:?}) is already served by {} (older): not served from {}",
            route.name,
            m.host,
            m.path,
            m.path_type,
            winner.describe(),
            route.origin.describe(),
        ),
    )
}

/// The upstream of every backend: the previous snapshot's where its
/// discovery source is unchanged, else a new one.
async fn start_upstreams(
    config: &Config,
    routes: &[(SourceId, &Route)],
    previous: Option<&Snapshot>,
) -> anyhow::Result<BTreeMap<UpstreamKey, (Source, Arc<Upstream>)>> {
    let mut sources = BTreeMap::new();
    for (_, route) in routes {
        for key in route.upstreams() {
            if !sources.contains_key(key) {
                sources.insert(key.clone(), Source::for_upstream(config, key)?);
            }
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
                METRICS
                    .discovery_errors
                    .with_label_values(&[&key.to_string()])
                    .inc();
            })?,
        };
        anyhow::Ok((key, (source, upstream)))
    });
    Ok(futures::future::try_join_all(starts)
        .await?
        .into_iter()
        .collect())
}

/// Builds and publishes snapshots from the sources, one at a time (a reload
/// and an Ingress change never publish over each other).
pub struct Publisher {
    snapshot: SharedSnapshot,
    inputs: tokio::sync::Mutex<Inputs>,
}

struct Inputs {
    /// The configuration file: settings, and the routes of [`SourceId::File`].
    config: Arc<Config>,
    sources: Sources,
}

impl Publisher {
    /// The first snapshot, from `config`'s routes and, for each source in
    /// `waiting`, nothing yet and not synced; and the publisher of the next.
    pub async fn start(
        config: Config,
        waiting: &[SourceId],
    ) -> anyhow::Result<(SharedSnapshot, Publisher)> {
        let mut sources: Sources = waiting
            .iter()
            .map(|id| (*id, Arc::new(SourceRoutes::default())))
            .collect();
        sources.insert(SourceId::File, file_routes(&config));
        let first = Snapshot::build(&config, &sources, None).await?;
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(first));
        let publisher = Publisher {
            snapshot: snapshot.clone(),
            inputs: tokio::sync::Mutex::new(Inputs {
                config: Arc::new(config),
                sources,
            }),
        };
        Ok((snapshot, publisher))
    }

    /// A new configuration file; on error the running snapshot stays.
    pub async fn publish_config(&self, config: Config) -> anyhow::Result<()> {
        let mut inputs = self.inputs.lock().await;
        let mut sources = inputs.sources.clone();
        sources.insert(SourceId::File, file_routes(&config));
        self.build_and_swap(&config, &sources).await?;
        *inputs = Inputs {
            config: Arc::new(config),
            sources,
        };
        Ok(())
    }

    /// New routes from `source`; on error the running snapshot stays.
    pub async fn publish(
        &self,
        source: SourceId,
        routes: Vec<Route>,
        synced: bool,
    ) -> anyhow::Result<()> {
        let mut inputs = self.inputs.lock().await;
        let mut sources = inputs.sources.clone();
        sources.insert(source, Arc::new(SourceRoutes { routes, synced }));
        let config = inputs.config.clone();
        self.build_and_swap(&config, &sources).await?;
        inputs.sources = sources;
        Ok(())
    }

    async fn build_and_swap(&self, config: &Config, sources: &Sources) -> anyhow::Result<()> {
        let previous = self.snapshot.load_full();
        let next = Snapshot::build(config, sources, Some(&previous)).await?;
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

fn file_routes(config: &Config) -> Arc<SourceRoutes> {
    Arc::new(SourceRoutes {
        routes: config.routes.clone(),
        synced: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{HostMatch, Match, PathType, ServicePort};

    fn config() -> Config {
        crate::config::parse(
            "test",
            "listen:\n  http: \"127.0.0.1:1\"\ndiscovery: static\nroutes:\n  - host: a.test\n    path: /file\n    service: file\n    port: 80\nstatic:\n  file: [\"127.0.0.1:1\"]\n  old: [\"127.0.0.1:2\"]\n  new: [\"127.0.0.1:3\"]\n",
        )
        .unwrap()
    }

    fn object_route(service: &str, created: i64, path: &str) -> Route {
        Route::to(
            format!("ingress:default/{service}:rules[0].paths[0]"),
            Origin::Object {
                created,
                id: format!("default/{service}"),
                kind: "Ingress",
            },
            Match::path(HostMatch::Exact("a.test".into()), path, PathType::Prefix),
            UpstreamKey {
                namespace: "default".into(),
                service: service.into(),
                port: ServicePort::Number(80),
                cluster_ip: None,
            },
        )
    }

    #[tokio::test]
    async fn the_file_wins_then_the_oldest_object_whatever_the_order_published() {
        let config = config();
        // The newer object is listed first: precedence, not order, decides.
        let ingress = SourceRoutes {
            routes: vec![
                object_route("new", 2_000, "/"),
                object_route("old", 1_000, "/"),
                object_route("new", 2_000, "/file"),
            ],
            synced: false,
        };
        let sources = Sources::from([
            (SourceId::File, file_routes(&config)),
            (SourceId::Ingress, Arc::new(ingress)),
        ]);
        let snapshot = Snapshot::build(&config, &sources, None).await.unwrap();
        let name = |path: &str| snapshot.router.find("a.test", path).map(|r| r.name.clone());
        assert_eq!(
            name("/"),
            Some("ingress:default/old:rules[0].paths[0]".into())
        );
        assert_eq!(name("/file"), Some("routes[0]".into()));
        assert_eq!(snapshot.waiting_for, [SourceId::Ingress]);
        assert_eq!(METRICS.ingress_shadowed_routes.get(), 1);
    }
}
